//! Signed checkpoints of each chain's head.
//!
//! Per lane, after every `every_events` events or `every_ms` with unsigned events, the head
//! `(chain, seq, hash)` becomes due; it is signed once the producer has acknowledged the event
//! at that seq (a checkpoint never covers an event that might not exist). The runtime then
//! publishes it in the chain's processed partition (after the event it covers, so every sink
//! stores it) and hands it to the witnesses configured here: a JSONL file (appended and fsynced)
//! and an HTTP endpoint (POSTed in the background, with retries). A released lane (revoke,
//! shutdown) signs its head as final (`final: true`), even when that head is signed already: a
//! verifier then knows the chain ended there. Each checkpoint names the previous one of its chain
//! (`prev`, the digest of the lane's last checkpoint, or of the newest one its processed tail held
//! when the lane started), so a witness's entries of one chain link to each other. Checkpoints live
//! outside the chain, so replays stay byte-identical whatever the clock did.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audit_schema::chain::ChainHead;
use audit_schema::checkpoint::{Checkpoint, CheckpointLinks, SigningKey};
use prometheus::IntCounterVec;

use crate::config::CheckpointConfig;
use crate::settings::Settings;

/// One lane's head and what of it is signed.
#[derive(Debug)]
pub(crate) struct LaneMark {
    /// Newest head: seq, hash, and the raw offset of the event at that seq.
    latest: Option<(u64, String, i64)>,
    signed_seq: u64,
    signed_at: Instant,
    /// A head that is due, waiting for its event's delivery.
    pending: Option<(u64, String, i64)>,
    /// The digest of the chain's newest checkpoint known to the lane: the next one's `prev`.
    prev: Option<String>,
    /// The lane's final checkpoint is signed.
    released: bool,
}

/// Why [`Checkpointer::sign_due`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The lane's turn: sign when `every_events` or `every_ms` say so.
    Scheduled,
    /// The lane is released (shutdown, revoke): sign its head as final, signed before or not.
    Final,
}

impl LaneMark {
    /// A lane that starts at (recovered) `head`; `prev` is the digest of the newest checkpoint of
    /// the chain its processed tail held.
    pub(crate) fn new(head: &ChainHead, prev: Option<String>) -> LaneMark {
        // The recovered head was delivered by an earlier owner: an offset every acknowledgement covers.
        let latest = (head.seq > 0).then(|| (head.seq, head.hash.clone(), -1));
        LaneMark { latest, signed_seq: head.seq, signed_at: Instant::now(), pending: None, prev, released: false }
    }

    /// `c` was signed but could not be published: its head is due again, at once, naming the same
    /// predecessor (no witness holds `c`).
    pub(crate) fn retry(&mut self, c: &Checkpoint) {
        // The event at that seq was delivered already: an offset every acknowledgement covers.
        self.pending = Some((c.seq, c.hash.clone(), -1));
        self.prev.clone_from(&c.prev);
        self.released = false;
    }

    /// The lane published the event at `head` for raw offset `raw_offset`.
    pub(crate) fn advance(&mut self, head: &ChainHead, raw_offset: i64) {
        match &mut self.latest {
            Some((seq, hash, offset)) => {
                *seq = head.seq;
                hash.clone_from(&head.hash);
                *offset = raw_offset;
            }
            None => self.latest = Some((head.seq, head.hash.clone(), raw_offset)),
        }
    }
}

/// How many checkpoints may wait for the HTTP witness before new ones are counted as failed.
const HTTP_QUEUE: usize = 1024;
/// Attempts per checkpoint at the HTTP witness.
const HTTP_ATTEMPTS: u32 = 6;

/// The HTTP witness: a thread POSTing checkpoints in order.
#[derive(Debug)]
struct HttpWitness {
    tx: Mutex<Option<SyncSender<Box<Checkpoint>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    url: String,
}

impl HttpWitness {
    fn start(c: &CheckpointConfig, url: &str, failed: IntCounterVec) -> Result<HttpWitness, String> {
        let token = match (&c.witness_token_env, &c.witness_token_file) {
            (Some(var), _) => Some(
                std::env::var(var)
                    .map_err(|_| format!("checkpoint.witness_token_env: environment variable {var} is not set"))?,
            ),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("checkpoint.witness_token_file: cannot read {}: {e}", path.display()))?,
            ),
            (None, None) => None,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let token = token.trim();
            if token.is_empty() {
                return Err("checkpoint.witness_token: the token is empty".into());
            }
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "checkpoint.witness_token: not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // reqwest takes rustls without a built-in crypto provider: install ring first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("checkpoint.witness_url: HTTP client: {e}"))?;
        let (tx, rx) = sync_channel(HTTP_QUEUE);
        let target = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("checkpoint-witness".into())
            .spawn(move || post_loop(&client, &target, &rx, &failed))
            .map_err(|e| format!("cannot start the witness thread: {e}"))?;
        Ok(HttpWitness { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), url: url.to_owned() })
    }

    /// Queues `c`; false when the queue is full or closed.
    fn send(&self, c: &Checkpoint) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else { return false };
        match tx.try_send(Box::new(c.clone())) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Stops taking checkpoints and waits up to `deadline` for the queued ones.
    fn close(&self, deadline: Duration) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let until = Instant::now() + deadline;
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(witness = %self.url, "checkpoints still queued for the HTTP witness at shutdown");
        }
    }
}

fn post_loop(client: &reqwest::blocking::Client, url: &str, rx: &Receiver<Box<Checkpoint>>, failed: &IntCounterVec) {
    loop {
        let c = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut wait = Duration::from_millis(250);
        for attempt in 1..=HTTP_ATTEMPTS {
            let outcome = client.post(url).json(&c).send().map_err(|e| e.to_string()).and_then(|r| {
                let status = r.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            });
            match outcome {
                Ok(()) => {
                    tracing::debug!(chain = c.chain, seq = c.seq, witness = url, "checkpoint sent to the witness");
                    break;
                }
                Err(error) if attempt == HTTP_ATTEMPTS => {
                    failed.with_label_values(&["witness_failed"]).inc();
                    tracing::error!(%error, chain = c.chain, seq = c.seq, witness = url,
                        "the HTTP witness did not take a checkpoint; it is still in the processed partition and any witness file");
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, chain = c.chain, seq = c.seq, witness = url, "checkpoint witness failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
}

/// Signs due heads and hands them to the witnesses.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    key: SigningKey,
    every_events: u64,
    every: Duration,
    file: Option<(Mutex<File>, PathBuf)>,
    http: Option<HttpWitness>,
    counter: IntCounterVec,
}

impl Checkpointer {
    /// The checkpointer `settings` ask for (none when no signing key is set). `counter` is
    /// `audit_processor_checkpoints_total`.
    pub(crate) fn open(settings: &Settings, counter: IntCounterVec) -> Result<Option<Checkpointer>, String> {
        let Some(key) = settings.signing_key.clone() else { return Ok(None) };
        let c = &settings.config.checkpoint;
        let file = match &c.witness_file {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| format!("checkpoint witness {}: {e}", dir.display()))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("checkpoint witness {}: {e}", path.display()))?;
                Some((Mutex::new(file), path.clone()))
            }
            None => None,
        };
        let http = c.witness_url.as_deref().map(|url| HttpWitness::start(c, url, counter.clone())).transpose()?;
        tracing::info!(key_id = key.key_id(), every_events = c.every_events, every_ms = c.every_ms,
            witness_file = ?c.witness_file, witness_url = ?c.witness_url, "signed checkpoints on");
        Ok(Some(Checkpointer {
            key,
            every_events: c.every_events,
            every: Duration::from_millis(c.every_ms),
            file,
            http,
            counter,
        }))
    }

    /// Signs what is due and delivered (`acked`: the highest acknowledged raw offset);
    /// [`Due::Final`] makes the head due whatever is signed, marked final. Returns the new
    /// checkpoints, for the caller to publish and then [`Checkpointer::witness`].
    pub(crate) fn sign_due(
        &self,
        mark: &mut LaneMark,
        chain: &dyn Fn() -> String,
        acked: i64,
        due: Due,
    ) -> Vec<Checkpoint> {
        let release = due == Due::Final;
        let mut signed = Vec::new();
        for _ in 0..2 {
            if mark.pending.is_none() {
                if let Some((seq, _, _)) = &mark.latest {
                    let unsigned = *seq > mark.signed_seq;
                    let scheduled = seq.saturating_sub(mark.signed_seq) >= self.every_events
                        || mark.signed_at.elapsed() >= self.every;
                    let due = (release && !mark.released) || (unsigned && scheduled);
                    if due {
                        mark.pending = mark.latest.clone();
                    }
                }
            }
            let Some((seq, hash, offset)) = &mark.pending else { break };
            if acked < *offset {
                break;
            }
            // Final only when it names the newest head: an older pending head is not the end.
            let is_final = release && mark.latest.as_ref().is_some_and(|(latest, _, _)| latest == seq);
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let links = CheckpointLinks { prev: mark.prev.clone(), is_final };
            let c = self.key.sign_linked(&chain(), *seq, hash, &time, links);
            mark.prev = Some(c.digest());
            mark.released = is_final;
            signed.push(c);
            mark.signed_seq = *seq;
            mark.signed_at = Instant::now();
            mark.pending = None;
        }
        signed
    }

    /// Hands `c` to the witnesses: appended and fsynced to the witness file, queued for the HTTP
    /// witness. Failures are logged and counted (`result="witness_failed"`); the checkpoint is
    /// still in the processed partition.
    pub(crate) fn witness(&self, c: &Checkpoint) {
        if let Some((file, path)) = &self.file {
            let written = serde_json::to_vec(c).map_err(std::io::Error::other).and_then(|mut line| {
                line.push(b'\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                file.write_all(&line)?;
                file.sync_data()
            });
            if let Err(error) = written {
                self.counter.with_label_values(&["witness_failed"]).inc();
                tracing::error!(%error, chain = c.chain, seq = c.seq, witness = %path.display(), "cannot write a checkpoint to the witness file");
            }
        }
        if let Some(http) = &self.http {
            if !http.send(c) {
                self.counter.with_label_values(&["witness_failed"]).inc();
                tracing::error!(chain = c.chain, seq = c.seq, witness = %http.url, "the HTTP witness queue is full; checkpoint not sent there");
            }
        }
    }

    /// Lets the HTTP witness finish what is queued (bounded by `deadline`).
    pub(crate) fn close(&self, deadline: Duration) {
        if let Some(http) = &self.http {
            http.close(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpointer(every_events: u64) -> Checkpointer {
        let counter =
            IntCounterVec::new(prometheus::Opts::new("checkpoints_total", "test"), &["result"]).expect("a counter");
        Checkpointer {
            key: SigningKey::from_seed(&[3u8; 32]),
            every_events,
            every: Duration::from_secs(3600),
            file: None,
            http: None,
            counter,
        }
    }

    fn head(seq: u64) -> ChainHead {
        ChainHead { chain: "audit.raw/0".into(), seq, hash: format!("{seq:064x}") }
    }

    #[test]
    fn each_checkpoint_names_its_predecessor_and_the_release_is_final() {
        let signer = checkpointer(2);
        let public = signer.key.public();
        let chain = || "audit.raw/0".to_owned();
        let mut mark = LaneMark::new(&head(0), None);
        let mut signed = Vec::new();
        for seq in 1..=4 {
            mark.advance(&head(seq), seq as i64);
            signed.extend(signer.sign_due(&mut mark, &chain, seq as i64, Due::Scheduled));
        }
        mark.advance(&head(5), 5);
        signed.extend(signer.sign_due(&mut mark, &chain, 5, Due::Final));
        let seqs: Vec<(u64, bool)> = signed.iter().map(|c| (c.seq, c.is_final)).collect();
        assert_eq!(seqs, [(2, false), (4, false), (5, true)]);
        assert_eq!(signed[0].prev, None);
        for pair in signed.windows(2) {
            assert_eq!(pair[1].prev.as_deref(), Some(pair[0].digest().as_str()));
        }
        for c in &signed {
            assert_eq!(c.version, 2);
            public.verify(c).unwrap();
        }
        // Released again with nothing new: no second final checkpoint.
        assert!(signer.sign_due(&mut mark, &chain, 5, Due::Final).is_empty());
    }

    #[test]
    fn a_release_signs_an_already_signed_head_as_final_after_the_tails_checkpoint() {
        let signer = checkpointer(1000);
        let chain = || "audit.raw/0".to_owned();
        // The lane resumes at seq 7, whose checkpoint (digest "d7") its processed tail held.
        let mut mark = LaneMark::new(&head(7), Some("d7".into()));
        assert!(signer.sign_due(&mut mark, &chain, -1, Due::Scheduled).is_empty());
        let released = signer.sign_due(&mut mark, &chain, -1, Due::Final);
        assert_eq!(released.len(), 1);
        let c = &released[0];
        assert_eq!(
            (c.seq, c.hash.as_str(), c.is_final, c.prev.as_deref()),
            (7, head(7).hash.as_str(), true, Some("d7"))
        );
    }

    #[test]
    fn a_checkpoint_that_could_not_be_published_is_signed_again_naming_the_same_predecessor() {
        let signer = checkpointer(1);
        let chain = || "audit.raw/0".to_owned();
        let mut mark = LaneMark::new(&head(0), Some("d0".into()));
        mark.advance(&head(1), 1);
        let lost = signer.sign_due(&mut mark, &chain, 1, Due::Scheduled).remove(0);
        mark.retry(&lost);
        let again = signer.sign_due(&mut mark, &chain, 1, Due::Scheduled).remove(0);
        assert_eq!((again.seq, again.prev.as_deref()), (1, Some("d0")));
    }

    #[test]
    fn an_event_not_yet_delivered_is_not_signed_final() {
        let signer = checkpointer(1000);
        let chain = || "audit.raw/0".to_owned();
        let mut mark = LaneMark::new(&head(3), None);
        mark.advance(&head(4), 40);
        // The drain deadline passed with seq 4 undelivered: nothing is signed.
        assert!(signer.sign_due(&mut mark, &chain, 39, Due::Final).is_empty());
    }
}
