//! mTLS on the control plane: three Raft nodes with certificates from one CA form a cluster and
//! replicate; the admin API records the operator its certificate proves; and every rogue
//! attempt is refused, counted and audited: no certificate, a certificate from another CA, a
//! valid certificate used to speak for another node (as sender or in the vote it carries), and
//! a server at a member's address holding another node's certificate. An export's key release
//! needs k = 2 of 3 custodian sites' approvals, each given by a node of that site.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use tessera_consensus::{ConsensusNode, RaftSettings, TypeConfig};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_proto::raft::raft_transport_client::RaftTransportClient;
use tessera_tls::pki::{self, Issued, Subject};
use tessera_tls::{ClientTls, OperatorRole, TlsMaterial};
use tonic::Code;
use tonic::transport::Channel;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn node_cert(ca: &Issued, id: u64) -> Issued {
    pki::issue(ca, &Subject::Node { id, site: format!("site-{id}"), hosts: vec!["127.0.0.1".into()] }, YEAR)
        .expect("node certificate")
}

fn material(ca: &Issued, cert: &Issued) -> Arc<TlsMaterial> {
    Arc::new(TlsMaterial::from_pem(&ca.cert_pem, &cert.cert_pem, &cert.key_pem).expect("material"))
}

async fn channel(tls: &ClientTls, addr: &str) -> Result<Channel, String> {
    let endpoint =
        tls.endpoint(addr, Duration::from_secs(3)).map_err(|e| e.to_string())?.timeout(Duration::from_secs(10));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// A Raft vote request for `term` by `candidate`, as the transport carries it.
fn vote_json(term: u64, candidate: u64) -> Vec<u8> {
    let vote = openraft::alias::VoteOf::<TypeConfig>::new(term, candidate);
    serde_json::to_vec(&VoteRequest::<TypeConfig>::new(vote, None)).expect("json")
}

/// The refusal a `Status` call over `channel` meets (at connection or at the call), if any.
async fn status_refused(channel: Result<Channel, String>) -> Option<String> {
    match channel {
        Ok(ch) => ClusterAdminClient::new(ch).status(pb::StatusRequest {}).await.err().map(|s| s.to_string()),
        Err(e) => Some(e),
    }
}

/// Waits until `f` holds (events on other tasks), failing after 20 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_control_plane_speaks_mtls_and_refuses_rogue_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pki::new_ca("test cluster CA", YEAR).expect("CA");
    let rogue_ca = pki::new_ca("rogue CA", YEAR).expect("rogue CA");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let settings = RaftSettings::new(
                id,
                format!("site-{id}"),
                "127.0.0.1:0".parse().expect("addr"),
                dir.path().join(format!("node-{id}")),
            );
            let node = ConsensusNode::start_with_tls(settings, Some(material(&ca, &node_cert(&ca, id))))
                .await
                .expect("node starts");
            nodes.push(node);
        }
        // A node refuses a certificate for another id at start.
        let settings = RaftSettings::new(9, "site-9", "127.0.0.1:0".parse().expect("addr"), dir.path().join("node-9"));
        let wrong = ConsensusNode::start_with_tls(settings, Some(material(&ca, &node_cert(&ca, 8))))
            .await
            .err()
            .expect("refused");
        assert!(wrong.to_string().contains("tls.cert"), "{wrong}");

        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let alice = pki::issue(&ca, &Subject::Operator { name: "alice".into(), role: OperatorRole::Admin }, YEAR)
            .expect("operator");
        let operator = ClientTls::from_material(Some(&material(&ca, &alice)));
        let mut admin = ClusterAdminClient::new(channel(&operator, &addrs[0]).await.expect("operator connects"));
        let specs = (0..3)
            .map(|i| pb::NodeSpec { id: i as u64 + 1, site: format!("site-{}", i + 1), addr: addrs[i].clone() })
            .collect();
        admin.init(pb::InitRequest { nodes: specs, actor: "mallory".into() }).await.expect("init over mTLS");
        // Writes commit and replicate over mTLS; the audit log names the proven operator.
        let reply = admin
            .add_site(pb::AddSiteRequest { site: "site-x".into(), name: "Plant X".into(), actor: "mallory".into() })
            .await
            .expect("write");
        assert!(reply.get_ref().rejected.is_empty(), "{:?}", reply.get_ref());
        for node in &nodes {
            eventually("every node applies the write", || {
                node.registry().applied().registry.sites.keys().any(|s| s.as_str() == "site-x")
            })
            .await;
        }
        let audit = admin
            .list_audit(pb::ListAuditRequest { from_index: 0, limit: 100 })
            .await
            .expect("audit")
            .into_inner()
            .entries;
        let actors: Vec<&str> = audit.iter().map(|e| e.actor.as_str()).collect();
        assert!(actors.contains(&"alice") && !actors.contains(&"mallory"), "recorded actors: {actors:?}");

        // An export's key is released to site-2 only once 2 of its 3 custodian sites approve,
        // each approval given by a node of that site.
        let ask = pb::RequestReleaseRequest {
            bundle: "export-1".into(),
            source: "site-1".into(),
            target: "site-2".into(),
            k: 2,
            custodians: vec!["site-1".into(), "site-2".into(), "site-3".into()],
            actor: String::new(),
        };
        assert!(admin.request_release(ask).await.expect("request").get_ref().rejected.is_empty());
        let node_admin = |id: u64| {
            let tls = ClientTls::from_material(Some(&material(&ca, &node_cert(&ca, id))));
            let addr = addrs[0].clone();
            async move { ClusterAdminClient::new(channel(&tls, &addr).await.expect("node connects")) }
        };
        let approve = |site: &str| pb::ApproveReleaseRequest {
            bundle: "export-1".into(),
            site: site.into(),
            actor: String::new(),
        };
        let forged = node_admin(1)
            .await
            .approve_release(approve("site-3"))
            .await
            .expect_err("site-1's node approving for site-3");
        assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
        let by_operator = admin.approve_release(approve("site-1")).await.expect_err("an operator approving for a site");
        assert_eq!(by_operator.code(), Code::PermissionDenied, "{by_operator:?}");
        assert!(
            node_admin(1)
                .await
                .approve_release(approve("site-1"))
                .await
                .expect("site-1 approves")
                .get_ref()
                .rejected
                .is_empty()
        );
        let again = node_admin(1).await.approve_release(approve("site-1")).await.expect("answered");
        assert!(again.get_ref().rejected.contains("already approved"), "{:?}", again.get_ref());
        let releases = |mut c: ClusterAdminClient<Channel>| async move {
            c.list_releases(pb::ListReleasesRequest {}).await.expect("list").into_inner().releases
        };
        assert!(!releases(admin.clone()).await[0].released, "one site alone releases nothing");
        assert!(
            node_admin(3)
                .await
                .approve_release(approve("site-3"))
                .await
                .expect("site-3 approves")
                .get_ref()
                .rejected
                .is_empty()
        );
        let release = releases(admin.clone()).await.remove(0);
        assert!(release.released && release.approvals == ["site-1", "site-3"], "{release:?}");

        // 1. No TLS at all.
        assert!(
            status_refused(channel(&ClientTls::Plain, &addrs[0]).await).await.is_some(),
            "a client in the clear was served"
        );
        // 2. TLS, trusting the CA, but no client certificate.
        let anonymous = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", addrs[0]))
            .expect("uri")
            .tls_config(anonymous)
            .expect("tls");
        assert!(
            status_refused(endpoint.connect().await.map_err(|e| format!("{e:?}"))).await.is_some(),
            "a client without a certificate was served"
        );
        // 3. A certificate from another CA, claiming to be node 2.
        let rogue = ClientTls::from_material(Some(&material(&ca, &node_cert(&rogue_ca, 2))))
            .expecting(pki::node_server_name(1));
        let refused = match channel(&rogue, &addrs[0]).await {
            Ok(ch) => RaftTransportClient::new(ch)
                .vote(pb::RaftMessage { from: 2, json: vote_json(1000, 2) })
                .await
                .err()
                .map(|s| s.to_string()),
            Err(e) => Some(e),
        };
        assert!(refused.is_some(), "a certificate from another CA was accepted");
        let first = &nodes[0];
        eventually("three handshakes refused and counted", || first.refusals().handshakes() >= 3).await;

        // 4. Node 3's valid certificate, speaking as node 1 (sender), then voting for node 1.
        let node3 =
            ClientTls::from_material(Some(&material(&ca, &node_cert(&ca, 3)))).expecting(pki::node_server_name(1));
        let mut transport = RaftTransportClient::new(channel(&node3, &addrs[0]).await.expect("node 3 connects"));
        let impersonation =
            transport.vote(pb::RaftMessage { from: 1, json: vote_json(1000, 1) }).await.expect_err("impersonation");
        assert_eq!(impersonation.code(), Code::PermissionDenied, "{impersonation:?}");
        assert!(impersonation.message().contains("node 3's, the message claims node 1"), "{impersonation:?}");
        let forged_vote = transport
            .vote(pb::RaftMessage { from: 3, json: vote_json(1000, 2) })
            .await
            .expect_err("a vote for another");
        assert_eq!(forged_vote.code(), Code::PermissionDenied, "{forged_vote:?}");
        let forged_write = transport
            .forward_write(pb::RaftMessage { from: 2, json: b"{}".to_vec() })
            .await
            .expect_err("forwarded as another");
        assert_eq!(forged_write.code(), Code::PermissionDenied, "{forged_write:?}");
        assert_eq!(first.refusals().identities(), 3 + 2, "three impersonations, two forged approvals");
        // The same on the pipelined replication stream: each message is checked, and the first
        // refusal ends the stream with its status.
        for (from, json, why) in [
            (1, vote_json(1000, 1), "node 3's, the message claims node 1"),
            (3, vote_json(1000, 2), "node 3 sent a vote of node 2"),
        ] {
            let mut answers = transport
                .stream_append(futures::stream::iter([pb::RaftMessage { from, json }]))
                .await
                .expect("the stream opens")
                .into_inner();
            let refused = answers.message().await.expect_err("a forged append on the stream");
            assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
            assert!(refused.message().contains(why), "{refused:?}");
        }
        eventually("two forged stream appends counted", || first.refusals().identities() >= 3 + 2 + 2).await;

        // 5. The client verifies the server: node 2's address does not prove node 1.
        let leader_check =
            ClientTls::from_material(Some(&material(&ca, &node_cert(&ca, 3)))).expecting(pki::node_server_name(1));
        let wrong_server = status_refused(channel(&leader_check, &addrs[1]).await).await;
        assert!(wrong_server.is_some(), "node 2's server passed for node 1");

        // The cluster is unharmed: no forged term took hold and writes still commit.
        let status = admin.status(pb::StatusRequest {}).await.expect("status").into_inner();
        assert!(status.term < 1000, "a forged vote changed the term: {status:?}");
        let reply = admin
            .add_site(pb::AddSiteRequest { site: "site-y".into(), name: "Plant Y".into(), actor: String::new() })
            .await
            .expect("write");
        assert!(reply.get_ref().rejected.is_empty());
        println!(
            "mtls: node 1 refused {} handshakes and {} impersonations; cluster term {}",
            first.refusals().handshakes(),
            first.refusals().identities(),
            status.term
        );
        for node in nodes {
            node.shutdown().await.expect("shutdown");
        }
    });
}

/// Kafka's TLS and SASL settings (`[ingest.kafka]`) reach librdkafka, which is built with
/// OpenSSL: a SASL_SSL configuration with a CA file is accepted, and a CA file that is not
/// there fails the start with librdkafka's words naming the setting.
#[test]
fn kafka_tls_and_sasl_settings_pass_through_to_librdkafka() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pki::new_ca("kafka CA", YEAR).expect("CA");
    let ca_file = dir.path().join("kafka-ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write");
    let with = |settings: &[(&str, &str)]| {
        let mut config = crate::ingest_config(&brokers, "tls-passthrough", "telemetry", "dead-letters");
        config.kafka.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (tx, _rx) = std::sync::mpsc::sync_channel(4);
        tessera_ingest::Ingest::start(config, tx)
    };
    let ca_path = ca_file.display().to_string();
    let secure = [
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", "tessera"),
        ("sasl.password", "secret"),
        ("ssl.ca.location", ca_path.as_str()),
    ];
    let ingest = with(&secure).expect("librdkafka takes TLS and SASL settings");
    ingest.stop().expect("stop");
    let missing = dir.path().join("no-such-ca.crt").display().to_string();
    let err = with(&[("security.protocol", "ssl"), ("ssl.ca.location", missing.as_str())])
        .err()
        .expect("a CA file that is not there");
    let text = format!("{err:#}");
    assert!(text.contains("ssl.ca.location"), "{text}");
}

/// Three mTLS nodes of sites 1–3, started and initialised by an admin operator; returns them
/// with their addresses, the CA and the operator's admin client.
async fn mtls_cluster(
    dir: &std::path::Path,
    ca: &Issued,
    change: impl Fn(&mut RaftSettings),
) -> (Vec<ConsensusNode>, Vec<String>, ClusterAdminClient<Channel>) {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut settings = RaftSettings::new(
            id,
            format!("site-{id}"),
            "127.0.0.1:0".parse().expect("addr"),
            dir.join(format!("n{id}")),
        );
        change(&mut settings);
        let node =
            ConsensusNode::start_with_tls(settings, Some(material(ca, &node_cert(ca, id)))).await.expect("starts");
        nodes.push(node);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    let admin = operator_client(ca, &addrs[0], OperatorRole::Admin).await;
    let specs = (0..3)
        .map(|i| pb::NodeSpec { id: i as u64 + 1, site: format!("site-{}", i + 1), addr: addrs[i].clone() })
        .collect();
    admin.clone().init(pb::InitRequest { nodes: specs, actor: String::new() }).await.expect("init");
    (nodes, addrs, admin)
}

/// An admin client at `addr` holding an operator certificate with `role`.
async fn operator_client(ca: &Issued, addr: &str, role: OperatorRole) -> ClusterAdminClient<Channel> {
    let cert = pki::issue(ca, &Subject::Operator { name: format!("op-{role}"), role }, YEAR).expect("operator");
    ClusterAdminClient::new(
        channel(&ClientTls::from_material(Some(&material(ca, &cert))), addr).await.expect("connects"),
    )
}

/// A transport client at `addr` (node `server`) holding node `id`'s certificate.
async fn node_transport(ca: &Issued, id: u64, addr: &str, server: u64) -> RaftTransportClient<Channel> {
    let tls =
        ClientTls::from_material(Some(&material(ca, &node_cert(ca, id)))).expecting(pki::node_server_name(server));
    RaftTransportClient::new(channel(&tls, addr).await.expect("node connects"))
}

/// Who may do what is decided by one rule on both paths: a node's certificate forwarding a
/// write to the leader (as followers do) gets no more than it would calling the admin API, a
/// node acts only for its own site, and operators act by the role their certificate carries.
#[test]
fn forwarded_writes_and_roles_are_authorized_by_one_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pki::new_ca("authz CA", YEAR).expect("CA");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let (nodes, addrs, mut admin) = mtls_cluster(dir.path(), &ca, |_| {}).await;
        let ask = pb::RequestReleaseRequest {
            bundle: "export-9".into(),
            source: "site-1".into(),
            target: "site-2".into(),
            k: 2,
            custodians: vec!["site-1".into(), "site-2".into(), "site-3".into()],
            actor: String::new(),
        };
        assert!(admin.request_release(ask).await.expect("request").get_ref().rejected.is_empty());
        let leader = admin.status(pb::StatusRequest {}).await.expect("status").into_inner().leader_id.expect("leader");
        let leader_addr = &addrs[leader as usize - 1];
        let approve = |site: &str| tessera_consensus::Request {
            actor: "forged".into(),
            at_ms: 0,
            command: tessera_consensus::Command::ApproveRelease {
                bundle: "export-9".into(),
                site: tessera_core::SiteId::new(site).expect("site"),
            },
        };
        let forward = |from: u64, request: tessera_consensus::Request, on_behalf_of: Option<&str>| {
            let mut call =
                tonic::Request::new(pb::RaftMessage { from, json: serde_json::to_vec(&request).expect("json") });
            if let Some(claim) = on_behalf_of {
                call.metadata_mut().insert("tessera-on-behalf-of", claim.parse().expect("header"));
            }
            call
        };
        // Site 1's node forwards site 2's approval: as itself, as site 2's node, as an admin.
        let mut node1 = node_transport(&ca, 1, leader_addr, leader).await;
        for (claim, why) in [
            (None, "only a node of site site-2 approves for it"),
            (Some("node/2/site-2"), "may not act on behalf of node 2 of site site-2"),
            (Some("operator/admin/chief"), "only a node of site site-2 approves for it"),
            (Some("plaintext"), "may not act on behalf of an unauthenticated client"),
        ] {
            let refused =
                node1.forward_write(forward(1, approve("site-2"), claim)).await.expect_err("a forged approval");
            assert_eq!(refused.code(), Code::PermissionDenied, "{claim:?}: {refused:?}");
            assert!(refused.message().contains(why), "{claim:?}: {}", refused.message());
        }
        // ... and registers a node that is not a member, or sets a policy.
        let register = tessera_consensus::Request {
            actor: "forged".into(),
            at_ms: 0,
            command: tessera_consensus::Command::RegisterNode {
                node: 9,
                site: tessera_core::SiteId::new("site-1").expect("site"),
                addr: "10.9.9.9:7070".into(),
            },
        };
        let refused = node1.forward_write(forward(1, register, None)).await.expect_err("a registration");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let policy = tessera_consensus::Request {
            actor: "forged".into(),
            at_ms: 0,
            command: tessera_consensus::Command::DropQuery { name: "any".into() },
        };
        let refused = node1.forward_write(forward(1, policy, None)).await.expect_err("a registry change");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let releases = || async {
            admin.clone().list_releases(pb::ListReleasesRequest {}).await.expect("list").into_inner().releases
        };
        assert!(releases().await[0].approvals.is_empty(), "a forged approval counted");
        // Site 2's own node approves through the forwarding path: that one counts.
        let mut node2 = node_transport(&ca, 2, leader_addr, leader).await;
        let approved = node2.forward_write(forward(2, approve("site-2"), None)).await.expect("site 2 approves");
        assert!(approved.get_ref().rejected.is_empty(), "{:?}", approved.get_ref());
        assert_eq!(releases().await[0].approvals, ["site-2"]);

        // Roles: a viewer reads and changes nothing; a node's certificate changes no registry
        // entry through the admin API either; an admin does, through any node.
        let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
        let follower_addr = &addrs[follower as usize - 1];
        let mut viewer = operator_client(&ca, follower_addr, OperatorRole::Viewer).await;
        viewer.list_sites(pb::ListSitesRequest {}).await.expect("a viewer reads");
        let site = || pb::AddSiteRequest { site: "site-v".into(), name: "V".into(), actor: String::new() };
        let refused = viewer.add_site(site()).await.expect_err("a viewer writes");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("a viewer's certificate reads only"), "{}", refused.message());
        let refused = viewer.remove_node(pb::RemoveNodeRequest { id: 3, actor: String::new() }).await.expect_err("");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let node3 = ClientTls::from_material(Some(&material(&ca, &node_cert(&ca, 3))));
        let mut as_node = ClusterAdminClient::new(channel(&node3, follower_addr).await.expect("connects"));
        let refused = as_node.add_site(site()).await.expect_err("a node edits the registry");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let mut admin_at_follower = operator_client(&ca, follower_addr, OperatorRole::Admin).await;
        let added = admin_at_follower.add_site(site()).await.expect("an admin writes through a follower");
        assert!(added.get_ref().rejected.is_empty(), "{:?}", added.get_ref());
        let audit = admin.list_audit(pb::ListAuditRequest { from_index: 0, limit: 100 }).await.expect("audit");
        let actors: Vec<String> = audit.into_inner().entries.into_iter().map(|e| e.actor).collect();
        assert!(actors.iter().any(|a| a == "op-admin") && !actors.iter().any(|a| a == "forged"), "{actors:?}");
        let refused: u64 = nodes.iter().map(|n| n.refusals().identities()).sum();
        assert!(refused >= 9, "refusals are counted and audited: {refused}");
        for node in nodes {
            node.shutdown().await.expect("shutdown");
        }
    });
}

/// A snapshot must come under its sender's own vote, and no larger than the receiver's
/// `max_snapshot_bytes`: a larger one is refused before it is buffered whole.
#[test]
fn a_snapshot_carries_its_senders_vote_and_fits_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pki::new_ca("snapshot CA", YEAR).expect("CA");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let (nodes, addrs, mut admin) = mtls_cluster(dir.path(), &ca, |s| s.max_snapshot_bytes = 64 << 10).await;
        let term_before = admin.status(pb::StatusRequest {}).await.expect("status").into_inner().term;
        let header = |leader: u64| {
            let vote = openraft::alias::VoteOf::<TypeConfig>::new_committed(term_before + 5, leader);
            let meta = openraft::alias::SnapshotMetaOf::<TypeConfig> {
                last_log_id: None,
                last_membership: Default::default(),
            };
            serde_json::to_vec(&(vote, meta)).expect("json")
        };
        let chunks = |from: u64, leader: u64, bytes: usize| {
            let mut chunks = vec![pb::SnapshotChunk { from, header: header(leader), data: vec![0; 32 << 10] }];
            chunks.extend((1..bytes / (32 << 10)).map(|_| pb::SnapshotChunk {
                from,
                header: Vec::new(),
                data: vec![0; 32 << 10],
            }));
            futures::stream::iter(chunks)
        };
        let mut node2 = node_transport(&ca, 2, &addrs[0], 1).await;
        let under_another_vote =
            node2.install_snapshot(chunks(2, 3, 32 << 10)).await.expect_err("a snapshot under node 3's vote");
        assert_eq!(under_another_vote.code(), Code::PermissionDenied, "{under_another_vote:?}");
        assert!(under_another_vote.message().contains("under node 3's vote"), "{}", under_another_vote.message());
        let too_large = node2.install_snapshot(chunks(2, 2, 1 << 20)).await.expect_err("a 1 MiB snapshot");
        assert_eq!(too_large.code(), Code::ResourceExhausted, "{too_large:?}");
        assert!(too_large.message().contains("max_snapshot_bytes (65536)"), "{}", too_large.message());
        let status = admin.status(pb::StatusRequest {}).await.expect("status").into_inner();
        assert!(status.term < term_before + 5, "a refused snapshot moved the term: {status:?}");
        for node in nodes {
            node.shutdown().await.expect("shutdown");
        }
    });
}

/// Without TLS a control-plane member listens on loopback only; on any other address only when
/// the config says `insecure_plaintext`, and then it says so. With TLS on any address, a client
/// in the clear is refused.
#[test]
fn a_control_plane_without_tls_listens_on_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let everywhere = || RaftSettings::new(1, "site-1", "0.0.0.0:0".parse().expect("addr"), dir.path().join("p"));
        let refused = ConsensusNode::start(everywhere()).await.err().expect("plaintext on 0.0.0.0");
        let text = refused.to_string();
        assert!(text.contains("raft.listen") && text.contains("insecure_plaintext"), "{text}");
        let node = ConsensusNode::start(RaftSettings { insecure_plaintext: true, ..everywhere() })
            .await
            .expect("allowed in plaintext when the config says so");
        assert!(node.plaintext_exposed());
        node.shutdown().await.expect("shutdown");
        let loopback = ConsensusNode::start(RaftSettings::new(
            1,
            "site-1",
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("l"),
        ))
        .await
        .expect("plaintext on loopback");
        assert!(!loopback.plaintext_exposed());
        loopback.shutdown().await.expect("shutdown");

        let ca = pki::new_ca("listen CA", YEAR).expect("CA");
        let node = ConsensusNode::start_with_tls(
            RaftSettings::new(1, "site-1", "0.0.0.0:0".parse().expect("addr"), dir.path().join("t")),
            Some(material(&ca, &node_cert(&ca, 1))),
        )
        .await
        .expect("TLS on every address");
        let at = format!("127.0.0.1:{}", node.addr().port());
        assert!(status_refused(channel(&ClientTls::Plain, &at).await).await.is_some(), "a client in the clear");
        node.shutdown().await.expect("shutdown");
    });
}

/// A node whose `[raft]` member would listen in plaintext on every address refuses to start,
/// naming the field; allowed by `insecure_plaintext`, it starts, and `/readyz` says so.
#[test]
fn a_node_in_plaintext_on_every_address_says_so_in_readyz() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::cluster::free_port();
    let node = |insecure_plaintext: bool| {
        crate::support::TestNode::new("site-1", &brokers, "plaintext-readyz", "telemetry").with(|c| {
            c.raft = Some(tessera_node::control::member::RaftConfig {
                node_id: Some(1),
                listen: format!("0.0.0.0:{port}").parse().expect("addr"),
                data_dir: dir.path().join("raft"),
                initial_members: vec![format!("1=site-1@127.0.0.1:{port}")],
                insecure_plaintext,
                ..Default::default()
            });
            c.http.listen = Some("127.0.0.1:0".parse().expect("addr"));
        })
    };
    let refused = tessera_node::node::Node::start(&node(false).config()).err().expect("plaintext on 0.0.0.0");
    let text = tessera_core::error_chain(&refused);
    assert!(text.contains("raft.listen") && text.contains("insecure_plaintext"), "{text}");
    let running = node(true).start();
    let http = running.http_addr().expect("http").to_string();
    let until = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let answer = crate::support::http_get(&http, "/readyz");
        if answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        assert!(Instant::now() < until, "never ready: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ready.contains("warning: the control plane listens in plaintext on 0.0.0.0"), "{ready}");
    running.stop().expect("stops");
}
