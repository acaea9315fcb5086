//! Three processor processes share one consumer group on the real broker under continuous load from
//! the producer library, while the test kills random instances with SIGKILL (each started again)
//! and freezes others with SIGSTOP for longer than the session timeout before SIGCONT (a paused
//! instance whose partitions moved to another one meanwhile).
//!
//! Afterwards every raw offset is in its partition's chain exactly once and in order, and every
//! chain verifies from genesis.
//!
//! * `exactly_once` (the default): each lane writes in transactions fenced for a stale owner, so a
//!   paused instance whose partitions moved can publish nothing visible after it wakes: zero
//!   events off the chain, and `auditctl verify` on the processed topic finds it intact.
//! * `idempotent`: a paused instance can still publish what it had in flight after its partitions
//!   moved: such events are off the chain that reaches the newest event. Processing is
//!   deterministic, so when both instances chained the same raw record from the same head the two
//!   events are byte-identical (a duplicate, which the sinks absorb); different content at one seq
//!   is a fork. The test counts both and requires that `auditctl verify`, on the processed topic
//!   itself, reports each duplicate as `duplicated` and each fork as `forked` at its seq, and
//!   nothing else.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use audit_producer::{Actor, AuditEventInput, Context, Outcome};
use audit_schema::chain::chain_name;
use audit_tests::kafka::read_topic;
use audit_tests::pipeline::{source_offsets, terminate, verify, ChainSplit, Topology};
use auditctl::{Source, VerifyRequest};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const INSTANCES: usize = 3;
const KILLS: usize = 30;
/// Longer than the session timeout the topology sets (6 s): the group moves the partitions away.
const PAUSE: Duration = Duration::from_secs(9);

/// A deterministic xorshift, so a failing schedule can be replayed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {}", child.id());
}

/// Logs events through the producer library until stopped: 16 tenants, about `rate` a second.
fn start_load(
    t: &Topology,
    spool: &std::path::Path,
    rate: u64,
) -> (tokio::task::JoinHandle<u64>, tokio::sync::watch::Sender<bool>) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (t, spool) = (t.clone(), spool.to_owned());
    let task = tokio::spawn(async move {
        let logger = t.logger("group-test", &spool).await;
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate.max(1)));
        let mut sent = 0u64;
        while !*stopped.borrow_and_update() {
            tick.tick().await;
            let tenant = Context { tenant_id: Some(format!("tenant-{:02}", sent % 16)), ..Context::default() };
            let actor = Actor::new("user", format!("u-{}", sent % 101));
            let event = AuditEventInput::new("document.update", Outcome::Success, actor);
            logger.child(tenant).log(event).await.expect("log accepts");
            sent += 1;
        }
        let report = logger.shutdown(Duration::from_secs(60)).await;
        assert_eq!(report.pending, 0, "every logged event reached the raw topic: {report:?}");
        sent
    });
    (task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_three_instances_through_kill_9_and_pauses_chain_every_raw_offset_once_without_any_fork() {
    let off = three_instances_through_kill_9_and_pauses("exactly_once", 10).await;
    assert_eq!(off, 0, "exactly_once: no event off the chain (no fork, no duplicate)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_three_instances_through_kill_9_and_pauses_chain_every_raw_offset_once_and_verify_reports_every_fork(
) {
    three_instances_through_kill_9_and_pauses("idempotent", 5).await;
}

/// Runs the schedule with `kafka.processing_guarantee = guarantee` and `pauses` pauses; returns
/// how many events were published off the chain (each reported by verify).
async fn three_instances_through_kill_9_and_pauses(guarantee: &str, pauses_planned: usize) -> usize {
    let t = Topology::create(6, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processors.log");
    let spool = tempfile::tempdir().unwrap();
    let spawn = || t.spawn_processor(PROCESSOR, &log, &[("AUDIT_KAFKA__PROCESSING_GUARANTEE", guarantee)]);
    let mut instances: Vec<Child> = (0..INSTANCES).map(|_| spawn()).collect();
    let (load, stop_load) = start_load(&t, spool.path(), 250);

    let mut dice = Dice(0x0dd_ba11_5eed);
    let (mut kills, mut pauses, mut exited) = (0, 0, 0);
    // A pause after every sixth kill.
    while kills < KILLS || pauses < pauses_planned {
        // An instance that stopped by itself (a fatal error; a pause that cost it its partitions
        // mid-write makes it start its clients again in-process, not exit) is started again, as its
        // orchestrator would; the count is printed.
        for (i, child) in instances.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().unwrap() {
                eprintln!("instance {i} exited by itself ({status}); started again");
                exited += 1;
                *child = spawn();
            }
        }
        let victim = dice.below(INSTANCES as u64) as usize;
        if pauses < pauses_planned && kills >= (pauses + 1) * KILLS / (pauses_planned + 1) {
            signal(&instances[victim], "-STOP");
            tokio::time::sleep(PAUSE).await;
            signal(&instances[victim], "-CONT");
            pauses += 1;
            eprintln!("pause {pauses} of {pauses_planned}: instance {victim} frozen for {PAUSE:?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        } else {
            instances[victim].kill().unwrap(); // SIGKILL
            instances[victim].wait().unwrap();
            instances[victim] = spawn();
            kills += 1;
            eprintln!("kill {kills} of {KILLS}: instance {victim}");
            tokio::time::sleep(Duration::from_millis(1_500 + dice.below(2_500))).await;
        }
    }
    stop_load.send(true).unwrap();
    let logged = load.await.unwrap();

    // Every raw record, per partition.
    let mut raw: BTreeMap<i32, i64> = BTreeMap::new();
    for r in read_topic(&t.bootstrap, &t.raw, logged as usize, Duration::from_secs(1)) {
        *raw.entry(r.partition).or_default() += 1;
    }
    assert_eq!(raw.values().sum::<i64>() as u64, logged, "the raw topic holds every logged event");

    // Until the surviving instances have chained the last raw record of every partition.
    let started = Instant::now();
    let processed = loop {
        let processed = t.read_processed(logged as usize);
        let done = raw.iter().all(|(p, n)| {
            processed.get(p).and_then(|e| source_offsets(e).into_iter().max()).is_some_and(|o| o + 1 >= *n)
        });
        if done || started.elapsed() > Duration::from_secs(240) {
            break processed;
        }
        for child in instances.iter_mut() {
            if child.try_wait().unwrap().is_some() {
                exited += 1;
                *child = spawn();
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for child in &instances {
        terminate(child);
    }
    for child in &mut instances {
        assert!(child.wait().unwrap().success(), "SIGTERM exits 0");
    }

    let (mut episodes, mut duplicates) = (0, 0);
    let mut forked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut duplicated: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..t.partitions {
        let events = processed.get(&p).map(Vec::as_slice).unwrap_or_default();
        let split = ChainSplit::of(events);
        let want: Vec<i64> = (0..raw.get(&p).copied().unwrap_or(0)).collect();
        let got = source_offsets(&split.main);
        assert_eq!(got.len(), want.len(), "partition {p}: {} chained for {} raw records", got.len(), want.len());
        assert_eq!(got, want, "partition {p}: raw offsets not each chained once and in order");
        let report = verify(&split.main);
        assert!(report.is_intact(), "partition {p}: {:?}", report.first_break());
        assert_eq!(report.head.map(|h| h.seq), Some(want.len() as u64), "partition {p}: the chain starts at genesis");
        let chain = chain_name(&t.raw, p);
        for e in &split.off {
            let (seq, hash) = (e["integrity"]["seq"].as_u64().unwrap(), &e["integrity"]["hash"]);
            let on_main = split.main.get(seq as usize - 1).map(|m| &m["integrity"]["hash"]);
            let kind = if Some(hash) == on_main { &mut duplicated } else { &mut forked };
            kind.entry(chain.clone()).or_default().push(seq);
        }
        episodes += split.forks();
        duplicates += duplicated.get(&chain).map_or(0, Vec::len);
    }

    // What an auditor runs on the processed topic names every fork, at its seq, and nothing else.
    let source: Source = format!("kafka://{}/{}", t.bootstrap, t.processed).parse().unwrap();
    let report = auditctl::verify(&source, &VerifyRequest::default(), &mut |_| {}).await.unwrap();
    let (mut reported_forks, mut reported_duplicates) = (BTreeMap::new(), BTreeMap::new());
    for f in report.findings() {
        match f.kind.as_str() {
            "forked" => reported_forks.entry(f.chain.clone()).or_insert_with(Vec::new).push(f.seq),
            "duplicated" => reported_duplicates.entry(f.chain.clone()).or_insert_with(Vec::new).push(f.seq),
            // The event after a fork's last seq links to the other branch's event.
            "modified" => {
                let off = forked.get(&f.chain).map(Vec::as_slice).unwrap_or_default();
                assert!(
                    off.contains(&(f.seq - 1)),
                    "{}: modified at seq {} is not next to a fork: {f:?}",
                    f.chain,
                    f.seq
                );
            }
            other => panic!("{}: unexpected finding {other} at seq {}: {f:?}", f.chain, f.seq),
        }
    }
    let sorted = |mut m: BTreeMap<String, Vec<u64>>| {
        m.values_mut().for_each(|v| v.sort_unstable());
        m.retain(|_, v| !v.is_empty());
        m
    };
    assert_eq!(sorted(reported_forks), sorted(forked.clone()), "verify names exactly the forked seqs");
    assert_eq!(sorted(reported_duplicates), sorted(duplicated), "verify names exactly the duplicated seqs");
    let forks: usize = forked.values().map(Vec::len).sum();
    let off = forks + duplicates;
    assert_eq!(
        report.verdict == auditctl::Verdict::Intact,
        off == 0,
        "the verdict says whether anything is off the chain"
    );
    let chained: usize = raw.values().sum::<i64>() as usize;
    // What the instances said about their transactions (exactly_once): the fenced zombies.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let fenced = text.lines().filter(|l| l.contains("is fenced") || l.contains("transaction not committed")).count();
    eprintln!("LOG ({guarantee}): {fenced} lines of fenced or aborted transactions");
    eprintln!(
        "COUNTS ({guarantee}): {logged} events logged, {chained} chained exactly once over {} partitions; {kills} kills, \
         {pauses} pauses of {PAUSE:?}, {exited} instances exited by themselves; {off} events published off the \
         chain by paused instances in {episodes} runs: {duplicates} byte-identical duplicates (verify: duplicated), \
         {forks} forks with other content (verify: forked)",
        t.partitions
    );
    off
}
