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
use tessera_tls::{ClientTls, TlsMaterial};
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
        let alice = pki::issue(&ca, &Subject::Operator { name: "alice".into() }, YEAR).expect("operator");
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
