//! Creating Kafka topics through the admin API, so that a fresh cluster works out of the box.
//! Existing topics are left as they are. (The embedded Kafka has its own `create_topic`.)

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::NodeError;

/// Creates every `(name, partitions)` topic that does not exist yet (replication factor 1
/// unless the broker's default applies).
pub fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), NodeError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|source| NodeError::Kafka { what: "creating a Kafka admin client".into(), source })?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NodeError::Io { what: "building a runtime for the Kafka admin client", source })?;
    let results = runtime
        .block_on(admin.create_topics(&new, &options))
        .map_err(|source| NodeError::Kafka { what: format!("creating topics on {brokers}"), source })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(NodeError::Topic { topic, code }),
        }
    }
    Ok(())
}
