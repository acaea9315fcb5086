//! Signed checkpoints of each chain's head, written to a witness file.
//!
//! Per lane, after every `every_events` events or `every_ms` with unsigned events, the head
//! `(chain, seq, hash)` becomes due; it is signed once the producer has acknowledged the event
//! at that seq (a checkpoint never covers an event that might not exist), then appended to the
//! witness file and fsynced. A released lane (revoke, shutdown) signs its final head. Checkpoints
//! live outside the chain, so replays stay byte-identical whatever the clock did.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use audit_schema::chain::ChainHead;
use audit_schema::checkpoint::SigningKey;

use crate::config::Settings;

/// One lane's head and what of it is signed.
#[derive(Debug)]
pub(crate) struct LaneMark {
    /// Newest head: seq, hash, and the raw offset of the event at that seq.
    latest: Option<(u64, String, i64)>,
    signed_seq: u64,
    signed_at: Instant,
    /// A head that is due, waiting for its event's delivery.
    pending: Option<(u64, String, i64)>,
}

impl LaneMark {
    /// A lane that starts at (recovered) `seq`.
    pub(crate) fn new(seq: u64) -> LaneMark {
        LaneMark { latest: None, signed_seq: seq, signed_at: Instant::now(), pending: None }
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

/// Signs due heads and appends them to the witness.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    key: SigningKey,
    every_events: u64,
    every: Duration,
    witness: Mutex<File>,
    path: PathBuf,
}

impl Checkpointer {
    /// The checkpointer `settings` ask for (none when no signing key is set).
    pub(crate) fn open(settings: &Settings) -> Result<Option<Checkpointer>, String> {
        let Some(key) = settings.signing_key.clone() else { return Ok(None) };
        let c = &settings.config.checkpoint;
        let path = c.witness_file.clone().ok_or("checkpoint.witness_file is required")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("checkpoint witness {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("checkpoint witness {}: {e}", path.display()))?;
        tracing::info!(witness = %path.display(), key_id = key.key_id(), every_events = c.every_events, every_ms = c.every_ms, "signed checkpoints on");
        Ok(Some(Checkpointer {
            key,
            every_events: c.every_events,
            every: Duration::from_millis(c.every_ms),
            witness: Mutex::new(file),
            path,
        }))
    }

    /// Signs what is due and delivered (`acked`: the highest acknowledged raw offset); `force`
    /// makes any unsigned head due. Returns how many checkpoints were written.
    pub(crate) fn sign_due(
        &self,
        mark: &mut LaneMark,
        chain: &dyn Fn() -> String,
        acked: i64,
        force: bool,
    ) -> std::io::Result<u64> {
        let mut written = 0;
        for _ in 0..2 {
            if mark.pending.is_none() {
                if let Some((seq, _, _)) = &mark.latest {
                    let due = *seq > mark.signed_seq
                        && (force
                            || *seq - mark.signed_seq >= self.every_events
                            || mark.signed_at.elapsed() >= self.every);
                    if due {
                        mark.pending = mark.latest.clone();
                    }
                }
            }
            let Some((seq, hash, offset)) = &mark.pending else { break };
            if acked < *offset {
                break;
            }
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let checkpoint = self.key.sign(&chain(), *seq, hash, &time);
            let mut line = serde_json::to_vec(&checkpoint).map_err(std::io::Error::other)?;
            line.push(b'\n');
            {
                let mut file = self.witness.lock().unwrap_or_else(|p| p.into_inner());
                file.write_all(&line)?;
                file.sync_data()?;
            }
            tracing::debug!(chain = checkpoint.chain, seq, witness = %self.path.display(), "checkpoint signed");
            mark.signed_seq = *seq;
            mark.signed_at = Instant::now();
            mark.pending = None;
            written += 1;
        }
        Ok(written)
    }
}
