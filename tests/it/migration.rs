//! Migration with k-of-n key custody, released through the control plane: site-1 exports
//! segments for site-2 with the key split among three custodian sites (k = 2); site-2 cannot
//! import until two custodians have approved in the Raft log, a share of a site that did not
//! approve does not count, and the imported rows equal the exported ones, now under site-2's
//! keys.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tessera_cli::migration;
use tessera_consensus::{ConsensusNode, RaftSettings};
use tessera_core::GradeMap;
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_store::{Kek, SegmentStore};

fn readings(ts0: i64, rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("motor_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("current_a", DataType::Float64, true),
        Field::new("vibration_x_rms", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("site-1-m{}", i % 4)))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..rows).map(|i| ts0 + i as i64 * 1000))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| 10.0 + i as f64))),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| 0.5 + i as f64 / 100.0))),
        ],
    )
    .expect("batch")
}

#[test]
fn an_export_is_imported_only_after_k_custodian_sites_approve_through_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut source =
        SegmentStore::open(dir.path().join("site-1"), Kek::generate(1).expect("kek")).expect("source store");
    let sent = readings(1_700_000_000_000, 50);
    let meta = source
        .write("telemetry", std::slice::from_ref(&sent), &GradeMap::builtin(), 1)
        .expect("write")
        .expect("a segment");
    let custodians: Vec<String> = ["site-1", "site-2", "site-3"].map(String::from).to_vec();
    let out = dir.path().join("export");
    let exported = migration::export(
        &source,
        "site-1",
        std::slice::from_ref(&meta.id),
        "site-2",
        "export-7",
        &custodians,
        2,
        &out,
        2,
    )
    .expect("export");
    assert_eq!(exported.shares.len(), 3);
    assert!(
        migration::export(
            &source,
            "site-1",
            std::slice::from_ref(&meta.id),
            "site-2",
            "x",
            &custodians,
            1,
            &dir.path().join("x"),
            2
        )
        .is_err(),
        "k = 1"
    );
    let shares = migration::read_shares(&exported.shares).expect("shares");
    let share_of = |site: &str| shares.iter().find(|s| s.custodian == site).expect("share").clone();
    let mut target =
        SegmentStore::open(dir.path().join("site-2"), Kek::generate(1).expect("kek")).expect("target store");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let settings = RaftSettings::new(
                id,
                format!("site-{id}"),
                "127.0.0.1:0".parse().expect("addr"),
                dir.path().join(format!("raft-{id}")),
            );
            nodes.push(ConsensusNode::start(settings).await.expect("node"));
        }
        let admin_addr = nodes[0].addr().to_string();
        let mut admin = ClusterAdminClient::connect(format!("http://{admin_addr}")).await.expect("admin");
        let specs = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| pb::NodeSpec {
                id: i as u64 + 1,
                site: format!("site-{}", i + 1),
                addr: n.addr().to_string(),
            })
            .collect();
        admin.init(pb::InitRequest { nodes: specs, actor: "ops".into() }).await.expect("init");
        let release =
            || migration::release_of(&admin_addr, &tessera_tls::ClientTls::Plain, Duration::from_secs(10), "export-7");
        assert!(release().await.is_err(), "no release asked for yet");
        let ask = pb::RequestReleaseRequest {
            bundle: "export-7".into(),
            source: "site-1".into(),
            target: "site-2".into(),
            k: 2,
            custodians: custodians.clone(),
            actor: "ops".into(),
        };
        assert!(admin.request_release(ask).await.expect("request").get_ref().rejected.is_empty());

        let all: Vec<_> = shares.clone();
        let refused =
            migration::import(&mut target, "site-2", &exported.bundle, &all, &release().await.expect("release"), 3)
                .expect_err("nobody approved");
        assert!(format!("{refused:#}").contains("not released: 0 of k = 2"), "{refused:#}");
        let approve = |site: &str| pb::ApproveReleaseRequest {
            bundle: "export-7".into(),
            site: site.into(),
            actor: "ops".into(),
        };
        assert!(admin.approve_release(approve("site-1")).await.expect("approve").get_ref().rejected.is_empty());
        let refused =
            migration::import(&mut target, "site-2", &exported.bundle, &all, &release().await.expect("release"), 3)
                .expect_err("one approval");
        assert!(format!("{refused:#}").contains("not released: 1 of k = 2"), "{refused:#}");
        assert!(admin.approve_release(approve("site-3")).await.expect("approve").get_ref().rejected.is_empty());
        let released = release().await.expect("release");
        assert!(released.released);
        // Released to site-2 only, and only approving custodians' shares count.
        let wrong_site =
            migration::import(&mut target, "site-3", &exported.bundle, &all, &released, 3).expect_err("another target");
        assert!(format!("{wrong_site:#}").contains("released to site site-2, not site-3"), "{wrong_site:#}");
        let unapproved = migration::import(
            &mut target,
            "site-2",
            &exported.bundle,
            &[share_of("site-2"), share_of("site-3")],
            &released,
            3,
        )
        .expect_err("site-2 did not approve");
        assert!(format!("{unapproved:#}").contains("1 distinct share(s) given, 2 needed"), "{unapproved:#}");
        let imported = migration::import(
            &mut target,
            "site-2",
            &exported.bundle,
            &[share_of("site-1"), share_of("site-3")],
            &released,
            3,
        )
        .expect("import");
        assert_eq!(imported.len(), 1);
        let got = target.read(&imported[0].id, None).expect("read at site-2");
        let got = datafusion::arrow::compute::concat_batches(&got[0].schema(), &got).expect("concat");
        for column in ["motor_id", "ts", "current_a", "vibration_x_rms"] {
            assert_eq!(
                got.column_by_name(column).expect(column).as_ref(),
                sent.column_by_name(column).expect(column).as_ref(),
                "{column}"
            );
        }
        let audit = admin
            .list_audit(pb::ListAuditRequest { from_index: 0, limit: 100 })
            .await
            .expect("audit")
            .into_inner()
            .entries;
        let steps: Vec<&str> =
            audit.iter().filter(|e| e.action.contains("export-7")).map(|e| e.action.as_str()).collect();
        assert_eq!(steps.len(), 3, "request and two approvals are in the Raft audit log: {steps:?}");
        for node in nodes {
            node.shutdown().await.expect("shutdown");
        }
    });
}
