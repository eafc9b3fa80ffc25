//! Detection quality on real labelled data: the full SKAB valve1 + anomaly-free replay and the
//! NAB file (read from ../shared/data, never copied into the repo), through the embedded Kafka
//! into the pipeline with the default rule set, scored from the alerts topic.

use std::path::PathBuf;

use tessera_node::detect::DetectConfig;
use tessera_workload::eval::{self, EvalOptions};

#[test]
fn default_rules_meet_the_detection_target_on_skab() {
    crate::init_logging();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    assert!(data.join("skab/valve1/0.csv").exists(), "the shared data sets live beside the checkout");
    let opts = EvalOptions {
        skab_dir: data.join("skab"),
        nab_dir: Some(data.join("nab")),
        skab_files: 0,
        anomaly_free: true,
        seed: 7,
        detect: DetectConfig::default(),
    };
    let report = eval::run(&opts, false).expect("the evaluation runs");
    println!("{}", report.table());
    let skab = &report.scores["skab"];
    assert_eq!((skab.motors, skab.events), (17, 16), "16 valve1 runs with one anomaly each, plus anomaly-free");
    assert!(skab.event_f1 >= 0.8, "event-level F1 {:.3} below the 0.8 target", skab.event_f1);
    assert!(skab.false_alarm_rate <= 0.10, "false-alarm rate {:.3} above 10 %", skab.false_alarm_rate);
    let nab = &report.scores["nab"];
    assert_eq!(nab.events, 2);
    assert!(nab.nab_score.is_finite());
}
