//! Kafka helpers for tests: topics, reading a whole topic back, and private brokers that a test may
//! stop, pause or restart without disturbing the shared one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{kafka_bootstrap, unique_name, unreachable};

/// Creates a topic with `partitions` partitions and optional configs on `bootstrap`.
pub async fn create_topic(bootstrap: &str, partitions: i32, config: &[(&str, &str)]) -> String {
    let name = unique_name("t");
    let mut spec = TopicSpec::new(&name, partitions);
    for (k, v) in config {
        spec = spec.with_config(*k, *v);
    }
    create_topics(&ClientSettings::new(bootstrap, "test-admin"), &[spec])
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("Kafka broker", bootstrap, e)));
    name
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// The `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl From<OwnedMessage> for Record {
    fn from(m: OwnedMessage) -> Self {
        let traceparent = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let headers = auditctl::kafka::header_texts(m.headers());
        Record {
            headers,
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            payload: m.payload().unwrap_or_default().to_vec(),
            traceparent,
        }
    }
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived or nothing
/// new came for `quiet` (after at least `expected` or the overall 120 s limit).
pub fn read_topic(bootstrap: &str, topic: &str, expected: usize, quiet: Duration) -> Vec<Record> {
    read_topic_isolated(bootstrap, topic, expected, quiet, "read_committed")
}

/// [`read_topic`] with `isolation.level = isolation`: `read_uncommitted` also returns the records
/// of open and aborted transactions (what reached the log, visible or not).
pub fn read_topic_isolated(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
    isolation: &str,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientSettings::new(bootstrap, "test-reader")
        .client_config(&[])
        .unwrap()
        .set("isolation.level", isolation)
        // assign() needs a group id; nothing is ever committed, so the group is never joined.
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let partitions = audit_kafka::topics::partition_count(consumer.client(), topic, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{}", unreachable("Kafka broker", bootstrap, e)));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(Record::from(m.detach()));
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
        let done_waiting = out.len() >= expected && last.elapsed() >= quiet;
        if done_waiting || started.elapsed() > Duration::from_secs(120) {
            audit_kafka::close_consumer(consumer, Duration::from_secs(10));
            return out;
        }
    }
}

/// Reads `topic` on the shared broker.
pub fn read_shared_topic(topic: &str, expected: usize) -> Vec<Record> {
    read_topic(&kafka_bootstrap(), topic, expected, Duration::from_millis(500))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// An Apache Kafka broker owned by one test (one KRaft node, the same `scripts/kafka/server.properties`
/// as the shared broker), with its log directory in a temporary directory: a test may kill it with
/// SIGKILL, pause it or restart it, and a restart recovers its data as a real broker does.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn kafka_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka").join(name)
}

/// Kafka's jars, resolved by `scripts/services up`: `AUDIT_KAFKA_LIBS` (which `scripts/services env`
/// prints), else the newest complete `kafka-*/libs` in the services' cache.
fn kafka_libs() -> PathBuf {
    let cached = || {
        let cache = std::env::var_os("AUDITSTREAM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/auditstream"));
        let dirs = std::fs::read_dir(&cache).ok()?.flatten().map(|e| e.path().join("libs"));
        let complete = dirs.filter(|libs| libs.join(".complete").exists());
        complete.max_by_key(|libs| libs.join(".complete").metadata().and_then(|m| m.modified()).ok())
    };
    let libs = std::env::var_os("AUDIT_KAFKA_LIBS").map(PathBuf::from).or_else(cached).unwrap_or_else(|| {
        panic!("no resolved Kafka jars (AUDIT_KAFKA_LIBS unset, none in the cache): run `scripts/services up`")
    });
    assert!(
        libs.join(".complete").exists(),
        "{} holds no resolved Kafka jars: run `scripts/services up`",
        libs.display()
    );
    libs
}

/// Two distinct loopback ports nothing listens on right now.
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("a free port");
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

impl PrivateBroker {
    /// Formats a new log directory, starts the broker on free ports and waits until it is ready.
    pub fn start() -> PrivateBroker {
        let (port, controller_port) = two_free_ports();
        let mut broker = PrivateBroker::format(port, controller_port, "");
        broker.restart();
        broker
    }

    /// Writes a node's config (the shared template, then `overrides`, which win) into a new
    /// temporary directory and formats its log directory; the node is not started.
    fn format(port: u16, controller_port: u16, overrides: &str) -> PrivateBroker {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let template = std::fs::read_to_string(kafka_file("server.properties")).unwrap();
        let config = template
            .replace("@PORT@", &port.to_string())
            .replace("@CONTROLLER_PORT@", &controller_port.to_string())
            .replace("@LOG_DIR@", &data.to_string_lossy());
        // A later line of a Java properties file replaces an earlier one with the same key.
        std::fs::write(
            dir.path().join("server.properties"),
            format!(
                "{config}
{overrides}"
            ),
        )
        .unwrap();
        let broker = PrivateBroker { port, child: None, dir };
        let status = broker
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", "auditstream-private-01", "-c"])
            .arg(broker.dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .status()
            .expect("java runs");
        assert!(status.success(), "formatting the private broker's storage failed");
        broker
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.args(["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg(format!("-Dlog4j2.configurationFile={}", kafka_file("log4j2.xml").display()))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.path().display()))
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()));
        java
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's own log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the broker process again (after [`PrivateBroker::kill`]) on its log directory, which it
    /// recovers, and waits until a metadata request names it with an active controller.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready(1);
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java ({e}); run `scripts/services up` to install it"));
        self.child = Some(child);
    }

    /// Waits (180 s at most: a restarted cluster node first catches up on the metadata log, and a
    /// loaded 2-core machine runs several JVMs) until a metadata request to this node names at least
    /// `brokers` brokers and an active controller.
    fn wait_ready(&mut self, brokers: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ready = Command::new("python3")
                .arg(kafka_file("ready.py"))
                .args(["127.0.0.1", &self.port.to_string(), "1", &brokers.to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("private broker exited during start-up ({status}); log: {}", self.log_file().display());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "private broker on port {} not ready (naming {brokers} brokers) within 180 s; its log ends:\n{}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the broker process with SIGKILL, as a crash would: its log directory stays, and
    /// [`PrivateBroker::restart`] recovers it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, like a
    /// network partition. Its data is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sets (`Some`) or removes (`None`) a produce quota, in bytes per second, for the clients
    /// named `client_id` (Kafka's own `ConfigCommand`, as `kafka-configs.sh` runs it): the broker
    /// then delays its answers to their produce requests while everything else is served.
    pub fn set_producer_quota(&self, client_id: &str, bytes_per_second: Option<u64>) {
        let mut command = self.java();
        command.args(["kafka.admin.ConfigCommand", "--bootstrap-server", &self.bootstrap(), "--alter"]);
        command.args(["--entity-type", "clients", "--entity-name", client_id]);
        match bytes_per_second {
            Some(rate) => command.args(["--add-config", &format!("producer_byte_rate={rate}")]),
            None => command.args(["--delete-config", "producer_byte_rate"]),
        };
        let out = command.output().expect("java runs");
        assert!(out.status.success(), "ConfigCommand failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_quiet("-CONT");
        }
        self.kill();
    }
}

impl PrivateBroker {
    fn signal_quiet(&self, signal: &str) -> std::io::Result<()> {
        if let Some(child) = &self.child {
            Command::new("kill").args([signal, &child.id().to_string()]).stderr(Stdio::null()).status()?;
        }
        Ok(())
    }
}

/// A private cluster of three Apache Kafka nodes, each a combined broker and controller (so the
/// KRaft quorum has three voters), from the same template as [`PrivateBroker`] with what a cluster
/// changes: internal topics and new topics replicated three times, `min.insync.replicas=2`. One
/// node may be killed at a time: the others elect new leaders and keep serving.
#[derive(Debug)]
pub struct PrivateCluster {
    nodes: Vec<PrivateBroker>,
}

impl PrivateCluster {
    /// Formats three nodes, starts them and waits until each names all three brokers.
    pub fn start() -> PrivateCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| two_free_ports()).collect();
        let voters: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1)).collect();
        let mut nodes: Vec<PrivateBroker> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, controller))| {
                let overrides = format!(
                    "node.id={}\ncontroller.quorum.voters={}\n\
                     offsets.topic.replication.factor=3\ntransaction.state.log.replication.factor=3\n\
                     transaction.state.log.min.isr=2\nshare.coordinator.state.topic.replication.factor=3\n\
                     share.coordinator.state.topic.min.isr=2\ndefault.replication.factor=3\nmin.insync.replicas=2\n",
                    i + 1,
                    voters.join(",")
                );
                PrivateBroker::format(*port, *controller, &overrides)
            })
            .collect();
        // A quorum needs a majority of its voters: start them all before waiting for any.
        nodes.iter_mut().for_each(PrivateBroker::spawn);
        nodes.iter_mut().for_each(|n| n.wait_ready(3));
        PrivateCluster { nodes }
    }

    /// Every node's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(PrivateBroker::bootstrap).collect::<Vec<_>>().join(",")
    }

    /// Kills node `i` (0-based) with SIGKILL; its log directory stays.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its log directory and waits until it names all three brokers.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.nodes[i].wait_ready(3);
    }

    /// Node `i`'s own log file.
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.nodes[i].log_file()
    }

    /// Waits (`limit` at most) until every partition of every topic, internal ones included, has
    /// all its replicas in sync again; returns how long that took, or panics naming a partition.
    pub fn wait_fully_replicated(&self, limit: Duration) -> Duration {
        let consumer: BaseConsumer =
            ClientSettings::new(self.bootstrap(), "test-isr").client_config(&[]).unwrap().create().unwrap();
        let started = Instant::now();
        loop {
            let lagging = match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(metadata) => metadata
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p)))
                    .find(|(_, p)| p.isr().len() < p.replicas().len() || p.replicas().len() < 3)
                    .map(|(t, p)| format!("{t}/{}: isr {:?} of replicas {:?}", p.id(), p.isr(), p.replicas())),
                Err(e) => Some(e.to_string()),
            };
            match lagging {
                None => return started.elapsed(),
                Some(what) => {
                    assert!(started.elapsed() < limit, "not fully replicated within {limit:?}: {what}");
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A topic name that will not collide, for tests that create topics on private brokers.
pub fn topic_name() -> String {
    unique_name("t")
}

fn admin(bootstrap: &str) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientSettings::new(bootstrap, "test-admin").client_config(&[]).expect("config").create().expect("admin client")
}

/// Deletes the records of `topic`'s partition `partition` before `offset` (Kafka's DeleteRecords,
/// what retention does to old segments); returns the partition's new low watermark.
pub async fn delete_records(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
    let result = admin(bootstrap)
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("DeleteRecords on {topic}/{partition}: {e}"));
    let element = result.find_partition(topic, partition).expect("the partition in the result");
    element.error().unwrap_or_else(|e| panic!("DeleteRecords on {topic}/{partition}: {e}"));
    match element.offset() {
        Offset::Offset(low) => low,
        other => panic!("DeleteRecords on {topic}/{partition} answered {other:?}"),
    }
}
