//! A node started before its input topic exists, as in Kubernetes, where the pods usually
//! come up before whoever creates the topics: `/readyz` says which topic it waits for, and
//! once the topic exists every reading published to it arrives. Two nodes of one site (one
//! consumer group), so the group's assignment after the topic appears is tested too.

use std::time::{Duration, Instant};

use tessera_suite::{producer, publish, test_fleet};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::WireFormat;

use crate::support::{TestCluster, TestNode, http_get};

/// Polls `path` on `addr` until the answer starts with `status`; returns the answer.
fn wait_for_answer(addr: &str, path: &str, status: &str, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let answer = http_get(addr, path);
        if answer.starts_with(status) {
            return answer;
        }
        assert!(Instant::now() < until, "{path} never answered {status}: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_started_before_their_topic_wait_for_it_and_read_every_reading() {
    let kafka = EmbeddedKafka::start(3).expect("the embedded Kafka starts");
    kafka.create_topic("dead-letters", 1).expect("topic");
    let brokers = kafka.bootstrap_servers();
    start_before_the_topic(&brokers, || kafka.create_topic("telemetry-later", 6).expect("topic"));
}

#[test]
fn nodes_started_before_their_topic_on_a_broker_process() {
    let broker = tessera_suite::TansuBroker::start().expect("Tansu starts");
    let brokers = broker.bootstrap_servers();
    tessera_node::topics::ensure_topics(&brokers, &[("dead-letters", 1)]).expect("topic");
    start_before_the_topic(&brokers, || {
        tessera_node::topics::ensure_topics(&brokers, &[("telemetry-later", 6)]).expect("topic")
    });
}

fn start_before_the_topic(brokers: &str, create_topic: impl FnOnce()) {
    let node = || {
        TestNode::new("site-1", brokers, "topic-later", "telemetry-later")
            .with(|c| c.http.listen = Some("127.0.0.1:0".parse().expect("addr")))
    };
    let cluster = TestCluster::start([node(), node()]);
    let http: Vec<String> = cluster.nodes.iter().map(|n| n.http_addr().expect("http").to_string()).collect();

    for addr in &http {
        let waiting = wait_for_answer(addr, "/readyz", "HTTP/1.1 503", Duration::from_secs(30));
        assert!(waiting.contains("telemetry-later"), "/readyz names the missing topic: {waiting}");
    }
    // Longer than the consumer's first attempts, so that it has given up once.
    std::thread::sleep(Duration::from_secs(3));
    create_topic();
    let sent = publish(
        &mut test_fleet(20, 100, 7),
        &producer(brokers, "telemetry-later", WireFormat::Protobuf).expect("producer"),
        None,
    )
    .expect("published");
    assert_eq!(sent.readings, 2_000);

    // A bound well below librdkafka's 5-minute metadata refresh, which is all that found the
    // topic before.
    cluster.wait_until("every reading arrives", Duration::from_secs(90), |_, _| {
        cluster.nodes.iter().map(|n| n.ingest_stats().readings_accepted).sum::<u64>() >= sent.readings
    });
    for addr in &http {
        wait_for_answer(addr, "/readyz", "HTTP/1.1 200", Duration::from_secs(30));
    }
    cluster.stop();
}

/// With `[ingest.create_topics]`, two nodes of a site racing to start on a broker without
/// their topics create them (one wins, the other finds them there), are ready at once, and
/// read every reading.
#[test]
fn nodes_with_create_topics_create_their_input_and_dead_letter_topics() {
    let broker = tessera_suite::TansuBroker::start().expect("Tansu starts");
    let brokers = broker.bootstrap_servers();
    let node = || {
        TestNode::new("site-1", &brokers, "topic-created", "telemetry-created").with(|c| {
            c.http.listen = Some("127.0.0.1:0".parse().expect("addr"));
            c.ingest.create_topics = Some(tessera_ingest::TopicCreation { partitions: 4, replication_factor: -1 });
        })
    };
    let nodes: Vec<TestNode> = vec![node(), node()];
    let cluster = std::thread::scope(|scope| {
        let starting: Vec<_> = nodes.iter().map(|n| scope.spawn(|| n.start())).collect();
        TestCluster { nodes: starting.into_iter().map(|s| s.join().expect("started")).collect() }
    });
    for node in &cluster.nodes {
        wait_for_answer(
            &node.http_addr().expect("http").to_string(),
            "/readyz",
            "HTTP/1.1 200",
            Duration::from_secs(30),
        );
    }
    let metadata = tessera_suite::partitions_of(&brokers, "telemetry-created").expect("metadata");
    assert_eq!(metadata, 4, "created with [ingest.create_topics] partitions");
    assert_eq!(tessera_suite::partitions_of(&brokers, "dead-letters").expect("metadata"), 4);
    let sent = publish(
        &mut test_fleet(10, 100, 9),
        &producer(&brokers, "telemetry-created", WireFormat::Protobuf).expect("producer"),
        None,
    )
    .expect("published");
    cluster.wait_until("every reading arrives", Duration::from_secs(90), |_, _| {
        cluster.nodes.iter().map(|n| n.ingest_stats().readings_accepted).sum::<u64>() >= sent.readings
    });
    cluster.stop();
}

/// A broker that cannot create topics (librdkafka's mock cluster has no CreateTopics) stops
/// the node at start with an error that says what it was doing.
#[test]
fn a_node_that_cannot_create_its_topics_says_so() {
    let kafka = EmbeddedKafka::start(1).expect("the embedded Kafka starts");
    let brokers = kafka.bootstrap_servers();
    let config = TestNode::new("site-1", &brokers, "topic-refused", "telemetry-refused")
        .with(|c| c.ingest.create_topics = Some(tessera_ingest::TopicCreation::default()))
        .config();
    let refused = tessera_node::node::Node::start(&config).err().expect("no CreateTopics on the mock");
    let text = tessera_core::error_chain(&refused);
    println!("{text}");
    assert!(text.contains("creating topic"), "{text}");
}
