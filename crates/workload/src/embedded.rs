//! An embedded Kafka: librdkafka's mock cluster, real brokers speaking the real Kafka
//! protocol on loopback ports, inside this process. Used by `tessera demo` and the tests.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::error::{WorkloadError, kafka};

/// A running mock cluster; it stops when dropped. It must stay on the thread that made it.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts `brokers` mock brokers.
    pub fn start(brokers: i32) -> Result<Self, WorkloadError> {
        Ok(Self {
            cluster: MockCluster::new(brokers)
                .map_err(kafka("starting the embedded Kafka (librdkafka mock cluster)"))?,
        })
    }

    /// The `bootstrap.servers` list.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic with `partitions` partitions (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), WorkloadError> {
        self.cluster.create_topic(name, partitions, 1).map_err(kafka(format!("creating topic {name}")))
    }
}
