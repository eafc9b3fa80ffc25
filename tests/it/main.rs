//! Tessera's integration tests, in one binary to keep link time down. Kafka is real
//! protocol throughout: librdkafka's mock cluster (the embedded Kafka) or a Tansu broker
//! process. Shared fixtures and builders are in [`support`]; no test writes a node's config by
//! hand ([`support::TestNode`]).

mod bench_history;
mod chart_shape;
mod cli_process;
mod cli_sql;
mod console;
mod control_plane;
mod demo;
mod deploy_script;
mod detect_kafka;
mod eval_detection;
mod fault;
mod fleet_scale;
mod flight_sql;
mod golden;
mod helm_chart;
mod http_api;
mod ingest_bad_input;
mod ingest_count;
mod ingest_real_broker;
mod ingest_rebalance;
mod ingest_retention;
mod ingest_stop;
mod migration;
mod mtls;
mod notify;
mod observability_assets;
mod operator_tools;
mod replay_skab;
mod security;
mod site_nodes;
mod sql_limits;
mod sql_release;
mod support;
mod tidy;
mod topic_later;

pub use support::{embedded_kafka, ingest_config, init_logging, start_ingest};
