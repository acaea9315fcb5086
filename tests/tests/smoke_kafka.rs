//! The broker started by `scripts/services` is real: records produced idempotently are consumed by a
//! consumer group, the committed offset survives the member closing, and the next member resumes
//! exactly there.

use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::{close_consumer, ClientSettings, CloseOutcome, AT_LEAST_ONCE_CONSUMER};
use audit_tests::{kafka_bootstrap, unique_name, unreachable};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

fn settings() -> ClientSettings {
    ClientSettings::new(kafka_bootstrap(), "smoke-test")
}

fn consumer(group: &str, topic: &str) -> BaseConsumer {
    let mut config = settings().client_config(AT_LEAST_ONCE_CONSUMER).expect("consumer config");
    config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Polls until `n` messages arrived or 60 s passed; returns their (offset, payload).
fn receive(consumer: &BaseConsumer, n: usize) -> Vec<(i64, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                got.push((m.offset(), payload));
            }
            Some(Err(e)) => panic!("{}", unreachable("Kafka broker", &kafka_bootstrap(), e)),
            None => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_group_member_resumes_from_the_offset_the_first_committed() {
    let topic = unique_name("smoke-cg");
    let group = unique_name("smoke-group");
    create_topics(&settings(), &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("Kafka broker", &kafka_bootstrap(), e)));

    let mut config = settings().client_config(&[]).expect("producer config");
    config.set("enable.idempotence", "true").set("acks", "all");
    let producer: FutureProducer = config.create().expect("producer");
    for i in 0..10 {
        let payload = format!("m{i}");
        producer
            .send(FutureRecord::to(&topic).key("tenant-a").payload(&payload), Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce m{i}: {e}"));
    }

    let first = consumer(&group, &topic);
    let got = receive(&first, 5);
    assert_eq!(got.len(), 5, "first member received {got:?}");
    assert_eq!(got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3", "m4"]);
    // At-least-once: store the offset of the last processed record, then commit.
    first.store_offset(&topic, 0, got[4].0).expect("store offset");
    first.commit_consumer_state(CommitMode::Sync).expect("commit");
    let closed = tokio::task::spawn_blocking(move || close_consumer(first, Duration::from_secs(30))).await.unwrap();
    assert_eq!(closed, CloseOutcome::Closed, "the first member should leave the group cleanly");

    let second = consumer(&group, &topic);
    let got = receive(&second, 5);
    assert_eq!(got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["m5", "m6", "m7", "m8", "m9"]);
    assert_eq!(got[0].0, 5, "resumes right after the committed offset");
    let closed = tokio::task::spawn_blocking(move || close_consumer(second, Duration::from_secs(30))).await.unwrap();
    assert_eq!(closed, CloseOutcome::Closed);
}
