//! The node's own Kafka clients besides the ingest's: how they connect ([`KafkaClient`]: the
//! ingest's brokers, TLS and SASL settings), and creating topics through the admin API, so
//! that a fresh cluster works out of the box. Existing topics are left as they are. (The
//! embedded Kafka has its own `create_topic`.)

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tessera_ingest::IngestConfig;

use crate::config::NodeConfig;
use crate::error::NodeError;

/// Creates every `(name, partitions)` topic that does not exist yet (replication factor 1
/// unless the broker's default applies).
pub fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), NodeError> {
    let client = KafkaClient { brokers: brokers.to_string(), settings: Default::default() };
    let topics: Vec<(&str, i32, i32)> = topics.iter().map(|(name, p)| (*name, *p, 1)).collect();
    create(&client.client_config(), &topics)
}

/// With `[ingest.create_topics]`, creates the ingest's input and dead-letter topics that do
/// not exist yet, with its partitions and replication factor, through a client with the
/// ingest's `kafka` settings (TLS, SASL). Without it, does nothing: the ingest waits for them.
pub fn create_ingest_topics(ingest: &IngestConfig) -> Result<(), NodeError> {
    let Some(create_topics) = &ingest.create_topics else { return Ok(()) };
    let names = ingest.topics.iter().map(|t| t.name.as_str()).chain([ingest.dead_letter_topic.as_str()]);
    let topics: Vec<(&str, i32, i32)> =
        names.map(|name| (name, create_topics.partitions, create_topics.replication_factor)).collect();
    create(&KafkaClient::of(ingest).client_config(), &topics)
}

/// Creates the topics a node writes to (the ingest's dead letters, alerts, late readings, the
/// detection stage's dead letters) that do not exist yet: 3 partitions each, 1 for the
/// detection stage's dead letters, replicated as
/// `[ingest.create_topics]` says (else once), through a client with the ingest's `kafka`
/// settings.
pub fn create_output_topics(config: &NodeConfig) -> Result<(), NodeError> {
    let replication = config.ingest.create_topics.as_ref().map_or(1, |c| c.replication_factor);
    let detect = &config.detect;
    let topics = [
        (config.ingest.dead_letter_topic.as_str(), 3, replication),
        (detect.alerts_topic.as_str(), 3, replication),
        (detect.late_topic.as_str(), 3, replication),
        (detect.dead_letter_topic.as_str(), 1, replication),
    ];
    create(&KafkaClient::of(&config.ingest).client_config(), &topics)
}

/// How the node's own Kafka clients (the alerts producer, admin clients) connect: the
/// ingest's brokers and those of its `kafka` settings that are about the connection and its
/// security (TLS, SASL), not about consuming.
#[derive(Debug, Clone, Default)]
pub struct KafkaClient {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Connection and security settings.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl KafkaClient {
    /// The ingest's brokers and connection settings.
    pub fn of(ingest: &IngestConfig) -> Self {
        let settings = ingest.kafka.iter().filter(|(key, _)| is_client_setting(key));
        Self { brokers: ingest.brokers.clone(), settings: settings.map(|(k, v)| (k.clone(), v.clone())).collect() }
    }

    /// A librdkafka client config with these settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.settings {
            client.set(key, value);
        }
        client
    }
}

/// Whether a librdkafka setting applies to an admin client too (connection and security),
/// not only to the consumer it was given for.
fn is_client_setting(key: &str) -> bool {
    ["security.", "sasl.", "ssl.", "ssl_", "client.", "socket.", "broker.", "reconnect.", "metadata."]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Creates every `(name, partitions, replication factor)` topic that does not exist yet.
fn create(client: &ClientConfig, topics: &[(&str, i32, i32)]) -> Result<(), NodeError> {
    let brokers = client.get("bootstrap.servers").unwrap_or_default().to_string();
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|source| NodeError::Kafka { what: "creating a Kafka admin client".into(), source })?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(name, p, r)| NewTopic::new(name, *p, TopicReplication::Fixed(*r))).collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_and_security_settings_reach_the_admin_client() {
        for key in ["security.protocol", "sasl.mechanism", "ssl.ca.location", "client.id", "socket.timeout.ms"] {
            assert!(is_client_setting(key), "{key}");
        }
        for key in ["auto.offset.reset", "session.timeout.ms", "fetch.min.bytes", "group.instance.id"] {
            assert!(!is_client_setting(key), "{key}");
        }
        let ingest = IngestConfig {
            kafka: [("security.protocol", "SASL_SSL"), ("sasl.password", "pw"), ("auto.offset.reset", "latest")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let client = KafkaClient::of(&ingest).client_config();
        assert_eq!(
            client.get("security.protocol"),
            Some("SASL_SSL"),
            "the alerts producer and admin clients use TLS/SASL"
        );
        assert_eq!(client.get("sasl.password"), Some("pw"));
        assert_eq!(client.get("auto.offset.reset"), None, "a consumer setting stays the consumer's");
    }
}
