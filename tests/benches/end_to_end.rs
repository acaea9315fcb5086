//! The whole job on one machine with realistic events (issue 21; not a timed test: it prints figures).
//! (Over 500 lines: one program of consecutive phases with its CPU and latency accounting; the
//! event generator lives in `audit_tests::workload`.)
//!
//! ```sh
//! scripts/services up && eval "$(scripts/services env)"
//! cargo bench -p audit-tests --bench end_to_end                          # into PostgreSQL
//! AUDIT_BENCH_SINK=jsonl cargo bench -p audit-tests --bench end_to_end   # into JSONL files
//! ```
//!
//! The producer library (Queue mode, its spool on disk, `AUDIT_BENCH_CALLERS` concurrent callers as
//! tokio tasks in this process) → a fresh raw topic → `AUDIT_BENCH_PROCESSORS` processor processes
//! → a fresh processed topic → one sink process → a fresh PostgreSQL database (or a fresh JSONL
//! directory). The events are [`audit_tests::workload`]'s realistic mix (~1.3 KB of JSON each, 16
//! tenants, secrets to redact, a third with diffs).
//!
//! Phases, all on the same processes, topics and store:
//! 1. warm-up: 2,000 events, stored before anything is measured (group joins, connections);
//! 2. full load: `AUDIT_BENCH_EVENTS` events as fast as the callers can log them;
//! 3. half load: half of the full phase's steady stored rate, for `AUDIT_BENCH_SECONDS`;
//! 4. the seed: `scripts/bench-seed/seed.mjs` (its TypeScript library, installed from npm by
//!    `scripts/bench-seed/install`) writes the full phase's first `AUDIT_BENCH_SEED_EVENTS` events,
//!    from a file this bench writes, into its own table (schema `seed`) of the same database, with
//!    64 callers; then the ratio.
//!
//! Then the broker's pass-through on this machine, the yardstick of the JSONL target: one client
//! consuming the full phase's raw records and producing the same bytes to another topic (as the
//! processor does: idempotent, `acks=all`, lz4, linger 5 ms), with nothing else running.
//!
//! Printed per phase: events/s accepted (every `log` call returned), events/s stored (rows
//! committed; the full phase's steady rate is taken between 10 % and 90 % of its events stored),
//! the CPU of each process per stored event (utime + stime from `/proc/<pid>/stat`, before and
//! after: this process minus the latency poller's thread, the broker's JVM, the processors, the
//! sink, and PostgreSQL = the postmaster, its live children and its reaped children, minus the
//! poller's backend), and latency percentiles from `log` returning to the event being stored.
//!
//! Before each phase, 3 s with nothing sent: the same processes' idle CPU and the load average, to
//! show what else the machine (and the shared broker and database) was doing. After the CPU table,
//! the ceiling those costs set: cores / CPU per event.
//!
//! Latency: a thread polls the store every `AUDIT_BENCH_POLL_MS` (10) ms. PostgreSQL: one query per
//! poll reads the rows above each chain's contiguous high-water mark (`chain = $1 AND seq > $2`, on
//! the `(chain, seq)` index); a row first seen by poll k was committed after poll k-1's statement
//! began (else that snapshot had it) and before poll k's began, so the latency taken at poll k's
//! answer overstates the commit time by at most the gap from poll k-1's start to poll k's answer;
//! that bound is printed (mean and max). `stored_at DEFAULT now()` is not used: it is the
//! transaction's start, not its commit. JSONL: the files are tailed at the same interval; a line is
//! seen once `write` returned, before its `fdatasync` finished, so there the figure can understate the
//! durable time by one `fdatasync` (and overstate it by at most one poll gap).
//!
//! Knobs (environment):
//! * `AUDIT_BENCH_EVENTS` (300000): events of the full-load phase;
//! * `AUDIT_BENCH_SECONDS` (30): length of the half-load phase (`0` skips it);
//! * `AUDIT_BENCH_SINK` (`postgres`): `postgres` or `jsonl`;
//! * `AUDIT_BENCH_SKIP_SEED` (unset): `1` skips the seed;
//! * `AUDIT_BENCH_SKIP_PASS_THROUGH` (unset): `1` skips the broker's pass-through (below);
//! * `AUDIT_BENCH_SEED_EVENTS` (150000): events the seed writes (at most `AUDIT_BENCH_EVENTS`);
//! * `AUDIT_BENCH_SEED_INTEGRITY` (`none`, the library's default): or `hash-chain`;
//! * `AUDIT_BENCH_CALLERS` (64), `AUDIT_BENCH_PARTITIONS` (6), `AUDIT_BENCH_PROCESSORS` (1);
//! * `AUDIT_BENCH_WORKLOAD_SEED` (21): the event generator's seed;
//! * `AUDIT_BENCH_POLL_MS` (10): the latency poller's interval;
//! * `AUDIT_BENCH_PG_SQL` (unset): SQL run in the bench's database after the warm-up (the sink has
//!   made its tables by then), before the full phase: to measure a layout change without changing
//!   the sink, e.g. `ALTER TABLE audit_events ALTER COLUMN event SET COMPRESSION lz4`;
//! * `AUDIT_BENCH_PROCESSOR_BIN` / `AUDIT_BENCH_SINK_BIN`: the processor and sink executables
//!   (default: this package's `audit-test-processor` and `audit-test-sink`, the same entry points
//!   but built inside this package, so with the system allocator instead of mimalloc and, for the
//!   processor, serde_json's `preserve_order`, which the MongoDB driver turns on: `docs/PERFORMANCE.md`
//!   says how to build and pass the binaries as the `Dockerfile` ships them);
//! * `AUDIT_BENCH_PROCESSOR__<KEY>` / `AUDIT_BENCH_SINK__<KEY>`: passed to the processors / the sink
//!   as `AUDIT_<KEY>` (e.g. `AUDIT_BENCH_SINK__BATCH__MAX_EVENTS=5000`), to try settings.
//!
//! The processes' logs stay in the directory printed at the start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_producer::AuditLogger;
use audit_tests::kafka::free_port;
use audit_tests::pipeline::{terminate, Topology};
use audit_tests::sinks::{http_get, metric};
use audit_tests::stores::postgres::PostgresTarget;
use audit_tests::workload::Workload;
use sqlx::{Connection, PgConnection};

const TEST_PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const TEST_SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");
const WARM_UP: u64 = 2_000;
/// Where warm-up and half-load events start in the workload (the full phase uses 0..N).
const WARM_UP_BASE: u64 = 1 << 40;
const HALF_BASE: u64 = 1 << 41;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    optional_knob(name).unwrap_or(default)
}

/// A knob without a default: `None` when unset.
fn optional_knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not valid")))
}

/// `AUDIT_BENCH_<PREFIX>__KEY=value` → `AUDIT_KEY=value`.
fn passed_env(prefix: &str) -> Vec<(String, String)> {
    let head = format!("AUDIT_BENCH_{prefix}__");
    std::env::vars().filter_map(|(k, v)| k.strip_prefix(&head).map(|rest| (format!("AUDIT_{rest}"), v))).collect()
}

// ------------------------------------------------------------------------------------ CPU

/// utime + stime (and, with `children`, cutime + cstime) of `/proc/<path>/stat`, in clock ticks.
fn stat_ticks(path: &str, children: bool) -> Option<(u64, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    let own = n(11) + n(12);
    Some((if children { own + n(13) + n(14) } else { own }, n(1) as u32))
}

fn ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"), false).map_or(0, |(t, _)| t)
}

/// A process and all its descendants, live and reaped.
fn tree_ticks(root: u32) -> u64 {
    let mut parent_of: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Some((t, ppid)) = stat_ticks(&format!("/proc/{pid}/stat"), true) {
            parent_of.insert(pid, (ppid, t));
        }
    }
    let in_tree = |mut pid: u32| {
        for _ in 0..16 {
            if pid == root {
                return true;
            }
            match parent_of.get(&pid) {
                Some((ppid, _)) if *ppid != 0 => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    parent_of.iter().filter(|(pid, _)| in_tree(**pid)).map(|(_, (_, t))| *t).sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The processes whose CPU is accounted.
#[derive(Debug, Clone, Default)]
struct Pids {
    broker: Option<u32>,
    postgres: Option<u32>,
    processors: Vec<u32>,
    sink: u32,
    poller_thread: Option<u32>,
    poller_backend: Option<u32>,
}

/// One reading of every accounted process, in ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    bench: u64,
    poller_thread: u64,
    broker: u64,
    processors: u64,
    sink: u64,
    postgres: u64,
    poller_backend: u64,
    at: Option<Instant>,
}

impl Pids {
    fn read(&self) -> Reading {
        Reading {
            bench: stat_ticks("/proc/self/stat", false).map_or(0, |(t, _)| t),
            poller_thread: self
                .poller_thread
                .map_or(0, |tid| stat_ticks(&format!("/proc/self/task/{tid}/stat"), false).map_or(0, |(t, _)| t)),
            broker: self.broker.map_or(0, ticks),
            processors: self.processors.iter().map(|p| ticks(*p)).sum(),
            sink: ticks(self.sink),
            postgres: self.postgres.map_or(0, tree_ticks),
            poller_backend: self.poller_backend.map_or(0, ticks),
            at: Some(Instant::now()),
        }
    }
}

/// What the phases read besides CPU: the sink's batches (its `/metrics`) and PostgreSQL's WAL.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    batches: f64,
    batch_seconds: f64,
    written: f64,
    wal_lsn_bytes: Option<f64>,
}

async fn probe(sink_port: u16, database: Option<&str>) -> Probe {
    let body = tokio::task::spawn_blocking(move || http_get(sink_port, "/metrics").unwrap_or_default())
        .await
        .unwrap_or_default();
    let wal_lsn_bytes = match database {
        Some(url) => match PgConnection::connect(url).await {
            Ok(mut db) => sqlx::query_scalar::<_, f64>("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
                .fetch_one(&mut db)
                .await
                .ok(),
            Err(_) => None,
        },
        None => None,
    };
    Probe {
        batches: metric(&body, "audit_sink_batch_write_seconds_count"),
        batch_seconds: metric(&body, "audit_sink_batch_write_seconds_sum"),
        written: metric(&body, "audit_sink_events_written_total"),
        wal_lsn_bytes,
    }
}

fn probe_line(before: &Probe, after: &Probe, events: u64) -> String {
    let batches = after.batches - before.batches;
    let mut line = format!(
        "  sink: {batches:.0} batches, {:.0} events per batch, {:.1} ms per batch write",
        (after.written - before.written) / batches.max(1.0),
        (after.batch_seconds - before.batch_seconds) * 1000.0 / batches.max(1.0)
    );
    if let (Some(a), Some(b)) = (after.wal_lsn_bytes, before.wal_lsn_bytes) {
        line.push_str(&format!(
            "; PostgreSQL wrote {:.0} bytes of WAL per event (whole server)",
            (a - b) / events as f64
        ));
    }
    line
}

fn service_pid(name: &str) -> Option<u32> {
    let dir = std::env::var("AUDITSTREAM_SERVICES_DIR").unwrap_or_else(|_| "/tmp/auditstream-services".into());
    std::fs::read_to_string(Path::new(&dir).join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}

// ------------------------------------------------------------------------------------ latency

/// What the callers and the poller share: when each event's `log` returned, and what was seen stored.
#[derive(Debug, Default)]
struct Tracker {
    returned: Mutex<HashMap<String, (Instant, usize)>>,
    seen: Mutex<Seen>,
    stored: [AtomicU64; 3],
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct Seen {
    /// Per phase: latency of each event (µs), the poll-gap bound that came with it (µs), and when
    /// it was seen stored.
    latency: [Vec<(u64, u64, Instant)>; 3],
    /// Per phase: (when, how many stored so far), at each poll that found some.
    timeline: [Vec<(Instant, u64)>; 3],
    /// Seen stored before its `log` call was recorded (a race of microseconds): matched later.
    early: Vec<(String, Instant, u64)>,
    polls: u64,
    poller_thread: Option<u32>,
    poller_backend: Option<u32>,
}

impl Tracker {
    fn returned(&self, event_id: String, phase: usize) {
        self.returned.lock().expect("tracker").insert(event_id, (Instant::now(), phase));
    }

    fn stored(&self, phase: usize) -> u64 {
        self.stored[phase].load(Ordering::Relaxed)
    }

    /// Events first seen stored by a poll sent at `sent` and answered at `answered`; the previous
    /// poll was sent at `previous`.
    fn found(&self, ids: impl IntoIterator<Item = String>, answered: Instant, previous: Instant) {
        let bound = answered.duration_since(previous).as_micros() as u64;
        let mut returned = self.returned.lock().expect("tracker");
        let mut seen = self.seen.lock().expect("tracker");
        let mut counts = [0u64; 3];
        let early = std::mem::take(&mut seen.early);
        let fresh = ids.into_iter().map(|id| (id, answered, bound));
        for (id, at, bound) in early.into_iter().chain(fresh) {
            match returned.remove(&id) {
                Some((logged, phase)) => {
                    seen.latency[phase].push((at.saturating_duration_since(logged).as_micros() as u64, bound, at));
                    counts[phase] += 1;
                }
                None => seen.early.push((id, at, bound)),
            }
        }
        seen.polls += 1;
        for (phase, n) in counts.into_iter().enumerate() {
            if n > 0 {
                let total = self.stored[phase].fetch_add(n, Ordering::Relaxed) + n;
                seen.timeline[phase].push((answered, total));
            }
        }
    }
}

fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self").ok()?.file_name()?.to_str()?.parse().ok()
}

/// Polls PostgreSQL for newly committed rows, chain by chain above each contiguous high-water mark.
fn poll_postgres(url: String, chains: Vec<String>, every: Duration, tracker: Arc<Tracker>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut db = PgConnection::connect(&url).await.expect("poller connection");
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut db).await.expect("backend");
        // Always the (chain, seq) index: a plan made while the table was new and empty would scan it
        // whole at every poll, and the poll gap (the latency's error bound) would grow with the table.
        // With scans forbidden one generic plan serves every poll: planning 100 times a second cost
        // the poller's backend more than the sink's rows at half load.
        for setting in
            ["SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET plan_cache_mode = force_generic_plan"]
        {
            sqlx::raw_sql(setting).execute(&mut db).await.expect("poller session setting");
        }
        {
            let mut seen = tracker.seen.lock().expect("tracker");
            seen.poller_thread = thread_id();
            seen.poller_backend = Some(backend as u32);
        }
        let mut marks = vec![0i64; chains.len()];
        let mut above: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); chains.len()];
        let index: HashMap<&str, usize> = chains.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut previous = Instant::now();
        while !tracker.stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let rows: Result<Vec<(String, i64, String)>, _> = sqlx::query_as(
                "SELECT e.chain, e.seq, e.event_id FROM unnest($1::text[], $2::bigint[]) AS c(chain, after) \
                 CROSS JOIN LATERAL (SELECT chain, seq, event_id FROM audit_events \
                 WHERE chain = c.chain AND seq > c.after) e",
            )
            .bind(&chains)
            .bind(&marks)
            .fetch_all(&mut db)
            .await;
            let answered = Instant::now();
            // Before the sink's migration the table is missing: nothing stored yet.
            let rows = rows.unwrap_or_default();
            let mut fresh = Vec::new();
            for (chain, seq, id) in rows {
                let Some(&c) = index.get(chain.as_str()) else { continue };
                if above[c].insert(seq) {
                    fresh.push(id);
                }
                while above[c].remove(&(marks[c] + 1)) {
                    marks[c] += 1;
                }
            }
            tracker.found(fresh, answered, previous);
            previous = sent;
            tokio::time::sleep(every).await;
        }
    });
}

/// Tails the JSONL sink's files for new lines.
fn poll_jsonl(dir: PathBuf, every: Duration, tracker: Arc<Tracker>) {
    tracker.seen.lock().expect("tracker").poller_thread = thread_id();
    let mut read: HashMap<PathBuf, u64> = HashMap::new();
    let mut previous = Instant::now();
    let key = b"\"eventId\":\"";
    while !tracker.stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let mut fresh = Vec::new();
        for part in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(part.path()).into_iter().flatten().flatten() {
                let path = file.path();
                if path.extension().is_none_or(|x| x != "jsonl") {
                    continue;
                }
                let at = read.entry(path.clone()).or_insert(0);
                let Ok(mut f) = std::fs::File::open(&path) else { continue };
                use std::io::{Read, Seek};
                if f.seek(std::io::SeekFrom::Start(*at)).is_err() {
                    continue;
                }
                let mut bytes = Vec::new();
                if f.read_to_end(&mut bytes).is_err() {
                    continue;
                }
                // Only whole lines; a line being written is read at the next poll.
                let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { continue };
                *at += end as u64 + 1;
                for line in bytes[..end].split(|b| *b == b'\n') {
                    let Some(start) = line.windows(key.len()).position(|w| w == key) else { continue };
                    let id = &line[start + key.len()..];
                    if let Some(stop) = id.iter().position(|b| *b == b'"') {
                        fresh.push(String::from_utf8_lossy(&id[..stop]).into_owned());
                    }
                }
            }
        }
        tracker.found(fresh, Instant::now(), previous);
        previous = sent;
        std::thread::sleep(every);
    }
}

// ------------------------------------------------------------------------------------ load

/// Logs events `range` of the workload with `callers` concurrent tasks, at `rate` events/s when
/// given; returns when every `log` call has returned (first call, last return).
async fn drive(
    logger: &AuditLogger,
    workload: Workload,
    range: std::ops::Range<u64>,
    callers: usize,
    rate: Option<f64>,
    tracker: &Arc<Tracker>,
    phase: usize,
) -> (Instant, Instant) {
    let next = Arc::new(AtomicU64::new(0));
    let len = range.end - range.start;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (logger, next, tracker) = (logger.clone(), next.clone(), tracker.clone());
        let base = range.start;
        tasks.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= len {
                    break;
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let receipt = logger.log(workload.event(base + k)).await.expect("log");
                tracker.returned(receipt.event_id, phase);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("caller");
    }
    (started, Instant::now())
}

async fn wait_stored(tracker: &Tracker, phase: usize, n: u64, limit: Duration, name: &str) -> Instant {
    let started = Instant::now();
    let mut said = Instant::now();
    while tracker.stored(phase) < n {
        assert!(
            started.elapsed() < limit,
            "{name}: {} of {n} events stored after {limit:?}; see the logs",
            tracker.stored(phase)
        );
        if said.elapsed() > Duration::from_secs(15) {
            eprintln!("  {name}: {} of {n} stored", tracker.stored(phase));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = tracker.seen.lock().expect("tracker");
    seen.timeline[phase].last().map_or_else(Instant::now, |(at, _)| *at)
}

// ------------------------------------------------------------------------------------ report

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The latencies of `samples`, sorted.
fn sorted_latencies(samples: &[(u64, u64, Instant)]) -> Vec<u64> {
    let mut lat: Vec<u64> = samples.iter().map(|(l, _, _)| *l).collect();
    lat.sort_unstable();
    lat
}

/// `lat`: the latencies of `samples`, sorted.
fn latency_line(samples: &[(u64, u64, Instant)], lat: &[u64]) -> String {
    let bound_mean = samples.iter().map(|(_, b, _)| *b).sum::<u64>() as f64 / samples.len().max(1) as f64;
    let bound_max = samples.iter().map(|(_, b, _)| *b).max().unwrap_or(0);
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "latency log → stored: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events; each at most \
         one poll gap late: mean {:.1} ms, max {:.1} ms)",
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.90)),
        ms(percentile(lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0)),
        lat.len(),
        bound_mean / 1000.0,
        bound_max as f64 / 1000.0,
    )
}

/// When the slowest 1 % of the events were stored: the seconds of the phase (from its first `log`
/// call) holding most of them, with how many each holds and their worst latency. A tail from one
/// stall sits in one or two seconds; a tail spread over the phase is steady queueing.
fn tail_line(samples: &[(u64, u64, Instant)], lat: &[u64], first: Instant) -> String {
    let p99 = percentile(lat, 0.99);
    let mut by_second: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    for (l, _, at) in samples.iter().filter(|(l, _, _)| *l >= p99) {
        let e = by_second.entry(at.saturating_duration_since(first).as_secs()).or_default();
        e.0 += 1;
        e.1 = e.1.max(*l);
    }
    let mut seconds: Vec<(u64, (usize, u64))> = by_second.into_iter().collect();
    seconds.sort_by_key(|s| std::cmp::Reverse(s.1 .0));
    let shown: Vec<String> = seconds
        .iter()
        .take(5)
        .map(|(s, (n, worst))| format!("{s} s: {n} (worst {:.0} ms)", *worst as f64 / 1000.0))
        .collect();
    format!("slowest 1 % stored in {} distinct seconds; most in: {}", seconds.len(), shown.join(", "))
}

fn cpu_table(before: &Reading, after: &Reading, events: u64, tck: f64, processors: usize) -> String {
    let wall = after.at.zip(before.at).map_or(1.0, |(a, b)| a.duration_since(b).as_secs_f64());
    let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / tck;
    let poller = d(after.poller_thread, before.poller_thread);
    let rows = [
        ("producer side (this process: library, 64 callers, event generator)", d(after.bench, before.bench) - poller),
        ("broker (Kafka JVM)", d(after.broker, before.broker)),
        (if processors == 1 { "processor" } else { "processors" }, d(after.processors, before.processors)),
        ("sink", d(after.sink, before.sink)),
        (
            "PostgreSQL (postmaster and children)",
            d(after.postgres, before.postgres) - d(after.poller_backend, before.poller_backend),
        ),
    ];
    let mut out = format!("  CPU over {wall:.1} s, per stored event:\n");
    let mut total = 0.0;
    for (name, secs) in rows {
        total += secs;
        out.push_str(&format!(
            "    {name:<70} {:>7.1} µs/event  {:>5.0} % of a core\n",
            secs * 1e6 / events as f64,
            secs / wall * 100.0
        ));
    }
    out.push_str(&format!(
        "    {:<70} {:>7.1} µs/event  {:>5.0} % of a core\n",
        "all of the above",
        total * 1e6 / events as f64,
        total / wall * 100.0
    ));
    let cores = std::thread::available_parallelism().map_or(2, usize::from) as f64;
    out.push_str(&format!(
        "    at these costs {cores:.0} cores could store at most {:.0} events/s (cores / CPU per event)\n",
        cores * events as f64 / total.max(1e-9)
    ));
    out.push_str(&format!(
        "    (not counted: the latency poller, {:.1} µs/event in this process and {:.1} µs/event in its backend)",
        poller * 1e6 / events as f64,
        d(after.poller_backend, before.poller_backend) * 1e6 / events as f64
    ));
    out
}

/// `Dirty` of `/proc/meminfo`, MB.
fn dirty_mb() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb =
        meminfo.lines().find_map(|l| l.strip_prefix("Dirty:")).and_then(|v| v.trim().split(' ').next()?.parse().ok());
    kb.unwrap_or(0.0) / 1000.0
}

fn idle_line(before: &Reading, after: &Reading, tck: f64) -> String {
    let wall = after.at.zip(before.at).map_or(1.0, |(a, b)| a.duration_since(b).as_secs_f64());
    let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / tck / wall * 100.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "idle for {wall:.1} s before the phase (% of a core): this process {:.0}, broker {:.0}, processor {:.0}, \
         sink {:.0}, PostgreSQL {:.0}; load average {}",
        share(after.bench, before.bench) - share(after.poller_thread, before.poller_thread),
        share(after.broker, before.broker),
        share(after.processors, before.processors),
        share(after.sink, before.sink),
        share(after.postgres, before.postgres) - share(after.poller_backend, before.poller_backend),
        load.split(' ').take(3).collect::<Vec<_>>().join(" "),
    )
}

/// Runs the seed's script on `events` (a JSONL file); its events/s and the CPU it and PostgreSQL used.
fn run_seed(repo: &Path, events: &Path, url: &str, callers: usize, postgres: Option<u32>, tck: f64) -> f64 {
    let install = Command::new(repo.join("scripts/bench-seed/install")).stderr(Stdio::inherit()).output();
    let dir = match install {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        other => panic!("scripts/bench-seed/install failed: {other:?}"),
    };
    let mut child = Command::new("node")
        .arg(repo.join("scripts/bench-seed/seed.mjs"))
        .arg(events)
        .env("AUDIT_BENCH_SEED_DIR", &dir)
        .env("DATABASE_URL", url)
        .env("AUDIT_BENCH_CALLERS", callers.to_string())
        .env("AUDIT_BENCH_SEED_INTEGRITY", knob("AUDIT_BENCH_SEED_INTEGRITY", "none".to_owned()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Node.js 18 or later) runs scripts/bench-seed/seed.mjs");
    let stdout = child.stdout.take().expect("stdout");
    let mut pg_before = (0, Instant::now());
    let mut result = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("seed output");
        if line == "START" {
            pg_before = (postgres.map_or(0, tree_ticks), Instant::now());
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            let pg = postgres.map_or(0, tree_ticks).saturating_sub(pg_before.0) as f64 / tck;
            result = Some((serde_json::from_str::<serde_json::Value>(json).expect("seed result"), pg));
        }
    }
    assert!(child.wait().expect("seed").success(), "the seed's script failed");
    let (r, pg) = result.expect("the seed printed its result");
    let stored = r["stored"].as_f64().unwrap_or(0.0);
    let seconds = r["seconds"].as_f64().unwrap_or(1.0);
    println!(
        "seed (@hexmon_tech/audit-core + audit-sink-postgres 2.0.0, Node {}, integrity {}, {} callers): {} of {} \
         events stored, {:.0} events/s stored (accepted in {:.1} s, stored in {:.1} s)",
        Command::new("node")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        r["integrityMode"].as_str().unwrap_or("?"),
        r["callers"],
        stored,
        r["events"],
        r["eventsPerSecond"].as_f64().unwrap_or(0.0),
        r["acceptedSeconds"].as_f64().unwrap_or(0.0),
        seconds
    );
    println!(
        "  CPU per stored event: Node {:.1} µs, PostgreSQL {:.1} µs ({:.0} % and {:.0} % of a core)",
        r["cpuMicros"].as_f64().unwrap_or(0.0) / stored.max(1.0),
        pg * 1e6 / stored.max(1.0),
        r["cpuMicros"].as_f64().unwrap_or(0.0) / 1e6 / seconds * 100.0,
        pg / seconds * 100.0
    );
    stored / seconds
}

// ------------------------------------------------------------------------------------ pass-through

/// Consumes the first `n` records of `from` and produces the same bytes to `to`, as the processor's
/// clients are set up; returns records/s (from the first record consumed to the last acknowledged).
fn pass_through(bootstrap: &str, from: &str, to: &str, partitions: i32, n: u64) -> f64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let settings = audit_kafka::ClientSettings::new(bootstrap, "bench-pass-through");
    let mut c = settings.client_config(&[]).expect("config");
    c.set("group.id", format!("{to}.group")).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(from, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut p = settings.client_config(&[]).expect("config");
    p.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    let producer: ThreadedProducer<DefaultProducerContext> = p.create().expect("producer");
    let mut seen = 0u64;
    let mut first = None;
    while seen < n {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
        first.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::<[u8], [u8]>::to(to).partition(m.partition());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        seen += 1;
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let secs = first.map_or(f64::INFINITY, |f: Instant| f.elapsed().as_secs_f64());
    audit_kafka::close_consumer(consumer, Duration::from_secs(10));
    n as f64 / secs
}

// ------------------------------------------------------------------------------------ main

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Postgres,
    Jsonl,
}

struct PhaseFigures {
    stored_rate: f64,
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    name: &str,
    index: usize,
    logger: &AuditLogger,
    workload: Workload,
    range: std::ops::Range<u64>,
    rate: Option<f64>,
    knobs: &Knobs,
    pids: &Pids,
    tracker: &Arc<Tracker>,
    probes: (u16, Option<&str>),
) -> PhaseFigures {
    let n = range.end - range.start;
    // The page cache the previous phase dirtied (the broker's logs, the spool, PostgreSQL's files:
    // a gigabyte after a full phase) is written back by the kernel ~30 s later, all at once, and
    // every fsync of this phase (PostgreSQL's commits, the spool) would wait behind it: a stall
    // belonging to the previous phase. Written back now, each phase starts from a clean cache.
    let dirty = dirty_mb();
    let t = Instant::now();
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    println!(
        "  before the phase: {dirty:.0} MB of dirty page cache written back in {:.1} s{}",
        t.elapsed().as_secs_f64(),
        if synced { "" } else { " (sync failed)" }
    );
    // What the processes and the shared services use while this bench sends nothing: the idle cost
    // of the clients, and whatever else runs on the machine (other tests on the shared broker).
    let idle_before = pids.read();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = idle_line(&idle_before, &pids.read(), knobs.tck);
    let probed = probe(probes.0, probes.1).await;
    let before = pids.read();
    let (first, last) = drive(logger, workload, range, knobs.callers, rate, tracker, index).await;
    let limit = Duration::from_secs(300 + n / 500);
    let done = wait_stored(tracker, index, n, limit, name).await;
    let after = pids.read();
    let probed_after = probe(probes.0, probes.1).await;
    let accepted = n as f64 / last.duration_since(first).as_secs_f64();
    let overall = n as f64 / done.duration_since(first).as_secs_f64();
    let seen = tracker.seen.lock().expect("tracker");
    // Steady state: between 10 % and 90 % of the phase's events stored.
    let crossing =
        |share: f64| seen.timeline[index].iter().find(|(_, c)| *c as f64 >= share * n as f64).map(|(at, c)| (*at, *c));
    let steady = match (crossing(0.1), crossing(0.9)) {
        (Some((a, ca)), Some((b, cb))) if b > a => (cb - ca) as f64 / b.duration_since(a).as_secs_f64(),
        _ => overall,
    };
    println!("{name}: {n} events");
    println!("  {idle}");
    match rate {
        Some(r) => println!("  offered {r:.0} events/s; accepted {accepted:.0} events/s"),
        None => println!(
            "  accepted {accepted:.0} events/s (every log call returned after {:.1} s)",
            (last - first).as_secs_f64()
        ),
    }
    println!(
        "  stored {steady:.0} events/s steady (10 % → 90 % of the events), {overall:.0} events/s from the first log call \
         to the last row ({:.1} s)",
        done.duration_since(first).as_secs_f64()
    );
    let lat = sorted_latencies(&seen.latency[index]);
    println!("  {}", latency_line(&seen.latency[index], &lat));
    println!("  {}", tail_line(&seen.latency[index], &lat, first));
    println!("{}", probe_line(&probed, &probed_after, n));
    println!("{}", cpu_table(&before, &after, n, knobs.tck, knobs.processors));
    PhaseFigures { stored_rate: if rate.is_some() { overall } else { steady } }
}

#[derive(Debug)]
struct Knobs {
    events: u64,
    seconds: u64,
    half_rate: Option<f64>,
    producer_linger_ms: Option<u64>,
    store: StoreKind,
    skip_seed: bool,
    seed_events: u64,
    callers: usize,
    partitions: i32,
    processors: usize,
    workload_seed: u64,
    poll: Duration,
    tck: f64,
    processor_bin: String,
    sink_bin: String,
}

impl Knobs {
    fn from_env() -> Knobs {
        let events = knob("AUDIT_BENCH_EVENTS", 300_000u64);
        Knobs {
            events,
            seconds: knob("AUDIT_BENCH_SECONDS", 30),
            half_rate: optional_knob("AUDIT_BENCH_HALF_RATE"),
            producer_linger_ms: optional_knob("AUDIT_BENCH_PRODUCER_LINGER_MS"),
            store: match knob("AUDIT_BENCH_SINK", "postgres".to_owned()).as_str() {
                "postgres" => StoreKind::Postgres,
                "jsonl" => StoreKind::Jsonl,
                other => panic!("AUDIT_BENCH_SINK={other:?}: postgres or jsonl"),
            },
            skip_seed: std::env::var("AUDIT_BENCH_SKIP_SEED").is_ok_and(|v| !v.is_empty() && v != "0"),
            seed_events: knob("AUDIT_BENCH_SEED_EVENTS", 150_000u64).min(events),
            callers: knob("AUDIT_BENCH_CALLERS", 64),
            partitions: knob("AUDIT_BENCH_PARTITIONS", 6),
            processors: knob("AUDIT_BENCH_PROCESSORS", 1),
            workload_seed: knob("AUDIT_BENCH_WORKLOAD_SEED", 21),
            poll: Duration::from_millis(knob("AUDIT_BENCH_POLL_MS", 10)),
            tck: clock_ticks_per_second(),
            processor_bin: knob("AUDIT_BENCH_PROCESSOR_BIN", TEST_PROCESSOR.to_owned()),
            sink_bin: knob("AUDIT_BENCH_SINK_BIN", TEST_SINK.to_owned()),
        }
    }
}

fn spawn(bin: &str, env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(bin);
    // The bench's own knobs are not the services' settings: `AUDIT_BENCH_PROCESSOR__KAFKA__…`
    // would read as an unknown `bench_processor` section and stop the process.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("AUDIT_BENCH_")) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap_or_else(|e| panic!("start {bin}: {e}"))
}

fn stop(mut child: Child, name: &str) {
    terminate(&child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{name} did not stop within 30 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    let knobs = Knobs::from_env();
    let workload = Workload::new(knobs.workload_seed);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository").to_owned();
    let logs = std::env::temp_dir().join(format!("auditstream-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("log dir");

    // The generator's own cost, counted in the producer side's CPU below.
    let sample = 20_000u64;
    let bytes: usize = (0..sample).map(|i| serde_json::to_vec(&workload.event(i)).expect("json").len()).sum();
    let build_us = {
        let t = Instant::now();
        for i in 0..sample {
            std::hint::black_box(workload.event(i));
        }
        t.elapsed().as_secs_f64() * 1e6 / sample as f64
    };

    let topology = Topology::create(knobs.partitions, None).await;
    let database = PostgresTarget::new(None).await;
    let jsonl_dir = logs.join("jsonl");
    let store_env: Vec<(String, String)> = match knobs.store {
        StoreKind::Postgres => vec![
            ("AUDIT_STORE__KIND".into(), "postgres".into()),
            ("AUDIT_STORE__URL".into(), database.url().to_owned()),
        ],
        StoreKind::Jsonl => vec![
            ("AUDIT_STORE__KIND".into(), "jsonl".into()),
            ("AUDIT_STORE__DIR".into(), jsonl_dir.display().to_string()),
        ],
    };
    println!(
        "end-to-end bench: {} events of ~{} bytes as logged (~{} with the producer's id, time and sequence; \
         building one takes {build_us:.1} µs), {} tenants, seed {}",
        knobs.events,
        bytes / sample as usize,
        bytes / sample as usize + 190,
        Workload::TENANTS,
        knobs.workload_seed
    );
    println!(
        "  {} callers → producer library (Queue mode, spool) → {} ({} partitions) → {} processor process(es) → {} → \
         {} sink → {}; logs in {}",
        knobs.callers,
        topology.raw,
        knobs.partitions,
        knobs.processors,
        topology.processed,
        if knobs.store == StoreKind::Postgres { "PostgreSQL" } else { "JSONL" },
        if knobs.store == StoreKind::Postgres { database.url().to_owned() } else { jsonl_dir.display().to_string() },
        logs.display()
    );

    println!("  processor: {}\n  sink: {}", knobs.processor_bin, knobs.sink_bin);

    // The processes.
    let mut processor_env = topology.env();
    processor_env.extend(passed_env("PROCESSOR"));
    let processors: Vec<Child> = (0..knobs.processors)
        .map(|i| spawn(&knobs.processor_bin, &processor_env, &logs.join(format!("processor-{i}.log"))))
        .collect();
    let sink_port = free_port();
    let mut sink_env: Vec<(String, String)> = vec![
        ("AUDIT_KAFKA__BROKERS".into(), topology.bootstrap.clone()),
        ("AUDIT_KAFKA__PROCESSED_TOPIC".into(), topology.processed.clone()),
        ("AUDIT_KAFKA__GROUP_ID".into(), format!("{}.sink", topology.group)),
        ("AUDIT_KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
        ("AUDIT_HTTP__LISTEN".into(), format!("127.0.0.1:{sink_port}")),
        ("AUDIT_LOG_FILTER".into(), "warn,audit_sink=info".into()),
    ];
    sink_env.extend(store_env);
    sink_env.extend(passed_env("SINK"));
    let sink = spawn(&knobs.sink_bin, &sink_env, &logs.join("sink.log"));

    // The latency poller.
    let tracker = Arc::new(Tracker::default());
    let poller = {
        let tracker = tracker.clone();
        let every = knobs.poll;
        match knobs.store {
            StoreKind::Postgres => {
                let chains: Vec<String> =
                    (0..knobs.partitions).map(|p| audit_schema::chain::chain_name(&topology.raw, p)).collect();
                let url = database.url().to_owned();
                std::thread::spawn(move || poll_postgres(url, chains, every, tracker))
            }
            StoreKind::Jsonl => {
                let dir = jsonl_dir.clone();
                std::thread::spawn(move || poll_jsonl(dir, every, tracker))
            }
        }
    };

    let spool = tempfile::tempdir().expect("spool dir");
    let mut builder = AuditLogger::builder("bench-e2e")
        .brokers(&topology.bootstrap)
        .topic(&topology.raw)
        .environment("production")
        .spool_dir(spool.path());
    if let Some(ms) = knobs.producer_linger_ms {
        builder = builder.linger_ms(ms);
    }
    let logger = builder.build().await.expect("the producer library starts");

    // Warm-up: group joins, connections, the table's first pages.
    let t = Instant::now();
    drive(&logger, workload, WARM_UP_BASE..WARM_UP_BASE + WARM_UP, knobs.callers, None, &tracker, 0).await;
    wait_stored(&tracker, 0, WARM_UP, Duration::from_secs(180), "warm-up").await;
    println!("warm-up: {WARM_UP} events stored {:.1} s after the first log call", t.elapsed().as_secs_f64());

    if let (StoreKind::Postgres, Ok(sql)) = (knobs.store, std::env::var("AUDIT_BENCH_PG_SQL")) {
        let mut db = PgConnection::connect(database.url()).await.expect("database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut db).await.expect("AUDIT_BENCH_PG_SQL");
        println!("ran AUDIT_BENCH_PG_SQL: {sql}");
    }

    let pids = {
        let seen = tracker.seen.lock().expect("tracker");
        Pids {
            broker: service_pid("kafka"),
            postgres: service_pid("postgres"),
            processors: processors.iter().map(Child::id).collect(),
            sink: sink.id(),
            poller_thread: seen.poller_thread,
            poller_backend: seen.poller_backend,
        }
    };
    if pids.broker.is_none() || pids.postgres.is_none() {
        eprintln!(
            "note: the broker's or PostgreSQL's pid file is missing (AUDITSTREAM_SERVICES_DIR); their CPU reads 0"
        );
    }

    let probes = (sink_port, (knobs.store == StoreKind::Postgres).then_some(database.url()));
    let full = phase("full load", 1, &logger, workload, 0..knobs.events, None, &knobs, &pids, &tracker, probes).await;

    if knobs.seconds > 0 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rate = knobs.half_rate.unwrap_or(full.stored_rate / 2.0);
        let n = (rate * knobs.seconds as f64) as u64;
        phase(
            &format!(
                "half load ({rate:.0} events/s, {}, for {} s)",
                if knobs.half_rate.is_some() {
                    "AUDIT_BENCH_HALF_RATE"
                } else {
                    "half of the full phase's steady stored rate"
                },
                knobs.seconds
            ),
            2,
            &logger,
            workload,
            HALF_BASE..HALF_BASE + n,
            Some(rate),
            &knobs,
            &pids,
            &tracker,
            probes,
        )
        .await;
    }

    if knobs.store == StoreKind::Postgres {
        let mut db = PgConnection::connect(database.url()).await.expect("database");
        let sizes: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM audit_events), pg_relation_size(c.oid), \
             pg_relation_size(c.reltoastrelid), pg_indexes_size(c.oid) FROM pg_class c WHERE c.relname = 'audit_events'",
        )
        .fetch_one(&mut db)
        .await
        .expect("table sizes");
        let mb = |b: i64| b as f64 / 1e6;
        println!(
            "audit_events: {} rows; heap {:.0} MB, TOAST {:.0} MB, indexes {:.0} MB ({:.0} bytes per row in all)",
            sizes.0,
            mb(sizes.1),
            mb(sizes.2),
            mb(sizes.3),
            (sizes.1 + sizes.2 + sizes.3) as f64 / sizes.0.max(1) as f64
        );
    }

    let report = logger.shutdown(Duration::from_secs(60)).await;
    assert_eq!(report.pending, 0, "the producer delivered everything: {report:?}");
    tracker.stop.store(true, Ordering::Relaxed);
    poller.join().expect("poller");
    for (i, p) in processors.into_iter().enumerate() {
        stop(p, &format!("processor {i}"));
    }
    stop(sink, "sink");

    if !std::env::var("AUDIT_BENCH_SKIP_PASS_THROUGH").is_ok_and(|v| !v.is_empty() && v != "0") {
        let to = format!("{}.pass-through", topology.raw);
        audit_kafka::topics::create_topics(
            &audit_kafka::ClientSettings::new(&topology.bootstrap, "bench"),
            &[audit_kafka::topics::TopicSpec::new(&to, knobs.partitions)],
        )
        .await
        .expect("pass-through topic");
        let (bootstrap, from, partitions, n) =
            (topology.bootstrap.clone(), topology.raw.clone(), knobs.partitions, knobs.events);
        let rate = tokio::task::spawn_blocking(move || pass_through(&bootstrap, &from, &to, partitions, n))
            .await
            .expect("pass-through");
        println!(
            "broker pass-through (consume + produce the same {n} raw records, nothing else running): {rate:.0} records/s; \
             the full phase stored {:.0} % of that",
            full.stored_rate / rate * 100.0
        );
    }

    if !knobs.skip_seed {
        let file = logs.join("seed-events.jsonl");
        workload
            .write_jsonl(0..knobs.seed_events, std::fs::File::create(&file).expect("events file"))
            .expect("write events");
        let seed = run_seed(&repo, &file, database.url(), knobs.callers, pids.postgres, knobs.tck);
        let _ = std::fs::remove_file(&file);
        println!(
            "ratio: auditstream {:.0} events/s stored (full load, steady) / seed {seed:.0} events/s = {:.2}x",
            full.stored_rate,
            full.stored_rate / seed.max(1.0)
        );
    }

    // Nothing left behind: PostgreSQL's autovacuum of this run's table, or a gigabyte of topics,
    // would share the machine with the next run (a one-second stall in its half phase was one).
    database.drop_database().await;
    let admin: rdkafka::admin::AdminClient<_> = audit_kafka::ClientSettings::new(&topology.bootstrap, "bench-cleanup")
        .client_config(&[])
        .expect("config")
        .create()
        .expect("admin client");
    let pass_through = format!("{}.pass-through", topology.raw);
    let topics = [topology.raw.as_str(), &topology.processed, &topology.dead_letter, &pass_through];
    if let Err(e) = admin.delete_topics(&topics, &rdkafka::admin::AdminOptions::new()).await {
        eprintln!("deleting the bench's topics: {e}");
    }
}
