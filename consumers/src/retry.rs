//! How a lane gets a batch into a store that fails: exponential backoff with jitter for
//! retriable failures, one circuit breaker per sink, and bisection to isolate a poison record.
//!
//! Plain types with no Kafka client or store in them, timed by tokio's clock so that their tests
//! run on paused time. The runtime's lanes drive them (`runtime.rs`, `write_all`).

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;

/// Exponential backoff: `base · 2^attempt`, capped, jittered over its upper half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// From `[retry]` (validated: `0 < base_backoff_ms <= max_backoff_ms`).
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff { base_ms: config.base_backoff_ms, max_ms: config.max_backoff_ms }
    }

    /// The wait before retry `attempt` (0 for the first): between half and all of
    /// `base · 2^attempt` (at most `max`), as `jitter` picks, and never shorter than the
    /// `retry_after` a store asked for.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: u32) -> Duration {
        let exp = self.base_ms.saturating_mul(1u64 << attempt.min(20)).min(self.max_ms);
        let jittered = exp / 2 + (u64::from(jitter) % (exp / 2 + 1));
        Duration::from_millis(jittered).max(retry_after.unwrap_or_default())
    }
}

/// A jitter source for [`Backoff::delay`]: the clock's nanoseconds (spreading retries of many
/// lanes needs no cryptographic randomness).
pub fn clock_jitter() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

/// What a call to the circuit breaker changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Nothing a metric or a log needs to show.
    Unchanged,
    /// The failure that reached the threshold: writes pause for the cool-down.
    Opened,
    /// A success after failures: writes go on without waiting.
    Closed,
}

/// After `failure_threshold` consecutive failures, every lane of the sink waits `cooldown`
/// before its next attempt (each further failure restarts the cool-down); one success closes it.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    /// From `[retry]`.
    pub fn new(config: &RetryConfig) -> CircuitBreaker {
        CircuitBreaker {
            threshold: config.failure_threshold,
            cooldown: Duration::from_millis(config.cooldown_ms),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failed write.
    pub fn failure(&self) -> Circuit {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        if state.failures < self.threshold {
            return Circuit::Unchanged;
        }
        let now = Instant::now();
        let was_closed = state.open_until.is_none_or(|t| t <= now);
        state.open_until = Some(now + self.cooldown);
        if was_closed {
            Circuit::Opened
        } else {
            Circuit::Unchanged
        }
    }

    /// Counts a successful write.
    pub fn success(&self) -> Circuit {
        let mut state = self.state();
        if std::mem::take(&mut state.failures) == 0 {
            return Circuit::Unchanged;
        }
        state.open_until = None;
        Circuit::Closed
    }

    /// Until when writes wait, while the circuit is open.
    pub fn open_until(&self) -> Option<Instant> {
        self.state().open_until.filter(|t| *t > Instant::now())
    }

    /// Waits while the circuit is open; false when `stop` came first.
    pub async fn wait(&self, stop: &CancellationToken) -> bool {
        let Some(until) = self.open_until() else { return true };
        tokio::select! {
            () = tokio::time::sleep_until(until) => true,
            () = stop.cancelled() => false,
        }
    }
}

/// The slices of a batch still to be written. The whole batch goes first; a slice refused as
/// poison is split in halves, each written (and split again) on its own, until the poison
/// record is alone: then it is the caller's to dead-letter. Slices come out in offset order.
#[derive(Debug)]
pub struct Bisection {
    pending: Vec<Range<usize>>,
}

impl Bisection {
    /// A batch of `len` records.
    pub fn new(len: usize) -> Bisection {
        // The whole batch is the one slice to write first.
        let mut pending = Vec::with_capacity(1);
        if len > 0 {
            pending.push(0..len);
        }
        Bisection { pending }
    }

    /// The next slice to write.
    pub fn next_slice(&mut self) -> Option<Range<usize>> {
        self.pending.pop()
    }

    /// `slice` was refused as poison: the index of its record when it is alone (to dead-letter),
    /// else `None` and its halves are written next.
    pub fn poisoned(&mut self, slice: Range<usize>) -> Option<usize> {
        if slice.len() <= 1 {
            return Some(slice.start);
        }
        let mid = slice.start + slice.len() / 2;
        self.pending.push(mid..slice.end);
        self.pending.push(slice.start..mid);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig { base_backoff_ms: 100, max_backoff_ms: 1_000, failure_threshold: 3, cooldown_ms: 5_000 }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_caps_at_the_maximum_and_honours_retry_after() {
        let b = Backoff::new(&config());
        let ms = |attempt, jitter| b.delay(attempt, None, jitter).as_millis();
        // Attempt n waits between half and all of 100 ms · 2^n.
        assert_eq!((ms(0, 0), ms(0, 50)), (50, 100));
        assert_eq!((ms(1, 0), ms(1, 100)), (100, 200));
        assert_eq!((ms(2, 0), ms(2, 200)), (200, 400));
        for jitter in [0, 1, 7, 999, u32::MAX] {
            for attempt in 0..64 {
                let d = ms(attempt, jitter);
                let exp = (100u128 << attempt.min(20)).min(1_000);
                assert!(d >= exp / 2 && d <= exp, "attempt {attempt}, jitter {jitter}: {d} ms");
            }
        }
        // Capped, also for absurd attempt counts.
        assert_eq!(ms(u32::MAX, 500), 1_000);
        // A store's Retry-After is a floor, not replaced by a shorter backoff.
        assert_eq!(b.delay(0, Some(Duration::from_secs(7)), 0), Duration::from_secs(7));
        assert_eq!(b.delay(3, Some(Duration::from_millis(1)), 0), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_at_the_threshold_for_the_cooldown_and_one_success_closes_it() {
        let breaker = CircuitBreaker::new(&config());
        let stop = CancellationToken::new();
        assert_eq!(breaker.failure(), Circuit::Unchanged);
        assert_eq!(breaker.failure(), Circuit::Unchanged);
        assert!(breaker.open_until().is_none(), "below the threshold writes do not wait");
        let started = Instant::now();
        assert!(breaker.wait(&stop).await);
        assert_eq!(started.elapsed(), Duration::ZERO);

        assert_eq!(breaker.failure(), Circuit::Opened);
        assert!(breaker.wait(&stop).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5), "waits exactly the cool-down");
        // After the cool-down a probe may go; its failure opens the circuit again.
        assert!(breaker.open_until().is_none());
        assert_eq!(breaker.failure(), Circuit::Opened);
        // A failure while open restarts the cool-down without reporting a new opening.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(breaker.failure(), Circuit::Unchanged);
        let waited = Instant::now();
        assert!(breaker.wait(&stop).await);
        assert_eq!(waited.elapsed(), Duration::from_secs(5));

        assert_eq!(breaker.success(), Circuit::Closed);
        assert_eq!(breaker.success(), Circuit::Unchanged);
        assert!(breaker.open_until().is_none());
        // The count starts again from zero.
        assert_eq!(breaker.failure(), Circuit::Unchanged);
        assert_eq!(breaker.failure(), Circuit::Unchanged);
        assert_eq!(breaker.failure(), Circuit::Opened);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_of_an_open_circuit_at_once() {
        let breaker = CircuitBreaker::new(&config());
        for _ in 0..3 {
            breaker.failure();
        }
        let stop = CancellationToken::new();
        let started = Instant::now();
        let waiting = breaker.wait(&stop);
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        };
        let (waited, ()) = tokio::join!(waiting, stopper);
        assert!(!waited);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    /// Writes `len` records with some of them poison, as a lane does: every good record is written
    /// once, in order, and each poison one is isolated.
    fn isolate(len: usize, poison: &[usize]) -> (Vec<usize>, Vec<usize>, usize) {
        let mut bisection = Bisection::new(len);
        let (mut written, mut dead, mut calls) = (Vec::new(), Vec::new(), 0);
        while let Some(slice) = bisection.next_slice() {
            calls += 1;
            if slice.clone().any(|i| poison.contains(&i)) {
                dead.extend(bisection.poisoned(slice));
            } else {
                written.extend(slice);
            }
        }
        (written, dead, calls)
    }

    #[test]
    fn bisection_isolates_each_poison_record_and_writes_every_other_once_in_order() {
        assert_eq!(isolate(0, &[]), (vec![], vec![], 0));
        assert_eq!(isolate(5, &[]), ((0..5).collect(), vec![], 1));
        assert_eq!(isolate(1, &[0]), (vec![], vec![0], 1));
        for (len, poison) in [(8, vec![3]), (8, vec![3, 6]), (1000, vec![0, 999]), (7, vec![0, 1, 2, 3, 4, 5, 6])] {
            let (written, dead, calls) = isolate(len, &poison);
            let good: Vec<usize> = (0..len).filter(|i| !poison.contains(i)).collect();
            assert_eq!(written, good, "{len} records, poison {poison:?}");
            assert_eq!(dead, poison);
            // Each poison record costs about 2·log2(len) writes, not one write per record.
            let bound = 1 + poison.len() * 2 * (usize::BITS - len.leading_zeros()) as usize;
            assert!(calls <= bound, "{calls} writes for {len} records with {} poison", poison.len());
        }
    }
}
