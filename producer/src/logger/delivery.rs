//! The Kafka side of the logger: the delivery reports (acknowledging spool segments, parking what
//! the broker refuses for good, answering `log_confirmed`), sending, the replay thread that feeds
//! the spool's backlog to librdkafka, and the maintenance thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;

use crate::config::Mode;
use crate::spool::{FsyncPolicy, Position, SpoolRecord};
use crate::trace;

use super::{Core, Delivered, DeliveryToken, FlushReport, LogError, Shared, State};

#[derive(Debug)]
pub(super) struct DeliveryContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

fn is_purge(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight))
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<DeliveryToken>) {
        let DeliveryToken { segment, confirm, enqueued } = *token;
        let m = &self.shared.metrics;
        let outcome = match result {
            Ok(message) => {
                m.delivered.inc();
                m.delivery_latency.observe(enqueued.elapsed().as_secs_f64());
                Ok(Delivered { partition: message.partition(), offset: message.offset() })
            }
            Err((error, _)) if is_purge(error) && self.shared.shutting_down.load(Ordering::Relaxed) => {
                // Shutdown purged it: it stays in the spool (Queue mode) for the next start.
                if let Some(c) = confirm {
                    let _ = c.send(Err(LogError::ShuttingDown));
                }
                return;
            }
            Err((error, message)) => {
                m.failed.inc();
                let key = message.key().unwrap_or_default();
                tracing::error!(%error, key = %String::from_utf8_lossy(key), "broker refused an audit event for good");
                let mut st = self.shared.lock();
                if let Some(failed) = st.failed.as_mut() {
                    let traceparent = message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == trace::TRACEPARENT))
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()));
                    let record = SpoolRecord {
                        key: key.to_vec(),
                        traceparent,
                        value: message.payload().unwrap_or_default().to_vec(),
                    };
                    if let Err(e) = failed.append(&record) {
                        tracing::error!(error = %e, "could not park a refused audit event in failed.spool");
                    }
                }
                Err(LogError::Delivery(error.clone()))
            }
        };
        if let Some(segment) = segment {
            if let Some(spool) = self.shared.lock().spool.as_mut() {
                spool.ack(segment);
            }
        }
        if let Some(c) = confirm {
            let _ = c.send(outcome);
        }
    }
}

impl Core {
    pub(super) fn start_threads(self: &Arc<Self>) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if self.settings.config.mode == Mode::Queue {
            let core = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("audit-spool-replay".into())
                    .spawn(move || core.replay_loop())
                    .expect("spawn"),
            );
        }
        let core = self.clone();
        threads.push(
            std::thread::Builder::new()
                .name("audit-spool-sync".into())
                .spawn(move || core.maintenance_loop())
                .expect("spawn"),
        );
    }

    fn record_headers(traceparent: Option<&str>) -> Option<OwnedHeaders> {
        traceparent.map(|tp| OwnedHeaders::new().insert(Header { key: trace::TRACEPARENT, value: Some(tp) }))
    }

    /// Hands one record to librdkafka. On failure the token comes back.
    pub(super) fn send(
        &self,
        record: &SpoolRecord,
        token: Box<DeliveryToken>,
    ) -> Result<(), (KafkaError, Box<DeliveryToken>)> {
        let mut base = BaseRecord::with_opaque_to(&self.settings.config.topic, token)
            .key(&record.key[..])
            .payload(&record.value[..]);
        if let Some(h) = Self::record_headers(record.traceparent.as_deref()) {
            base = base.headers(h);
        }
        self.producer.send(base).map_err(|(e, r)| (e, r.delivery_opaque))
    }

    /// Parks a record that librdkafka refuses outright, so it is not replayed forever.
    pub(super) fn park_failed(&self, st: &mut State, record: &SpoolRecord, segment: Option<u64>, error: &KafkaError) {
        self.shared.metrics.failed.inc();
        tracing::error!(%error, "librdkafka refused an audit event; parked in failed.spool");
        if let Some(f) = st.failed.as_mut() {
            let _ = f.append(record);
        }
        if let (Some(seg), Some(spool)) = (segment, st.spool.as_mut()) {
            spool.ack(seg);
        }
    }

    /// Sends spooled records that have not reached librdkafka yet, in order.
    fn replay_loop(self: Arc<Self>) {
        loop {
            let (batch, next) = {
                let mut st = self.shared.lock();
                loop {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if st.backlog.is_some() {
                        break;
                    }
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, Duration::from_millis(200))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                let from = st.backlog.unwrap_or(Position { segment: 0, offset: 0 });
                let Some(spool) = st.spool.as_ref() else { return };
                match spool.read_from(from, 512) {
                    Ok((records, _)) if records.is_empty() => {
                        st.backlog = None;
                        continue;
                    }
                    Ok((records, next)) => {
                        let batch: Vec<_> =
                            records.into_iter().map(|(pos, r)| (pos, r, st.confirms.remove(&pos))).collect();
                        (batch, next)
                    }
                    Err(error) => {
                        drop(st);
                        tracing::error!(%error, "cannot read the spool; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            };
            for (pos, record, confirm) in batch {
                let mut token =
                    Box::new(DeliveryToken { segment: Some(pos.segment), confirm, enqueued: Instant::now() });
                loop {
                    match self.send(&record, token) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            token = back;
                            if self.shared.stop.load(Ordering::Relaxed) {
                                // Still in the spool: replayed at the next start.
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err((error, back)) => {
                            let mut st = self.shared.lock();
                            self.park_failed(&mut st, &record, back.segment, &error);
                            if let Some(c) = back.confirm {
                                let _ = c.send(Err(LogError::Delivery(error)));
                            }
                            break;
                        }
                    }
                }
            }
            self.shared.lock().backlog = Some(next);
        }
    }

    /// Background fsync (interval policy) and gauges.
    fn maintenance_loop(self: Arc<Self>) {
        let tick = match self.settings.fsync {
            FsyncPolicy::IntervalMs(ms) => Duration::from_millis(ms).min(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        let mut last_gauges = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            let (handle, unacked, bytes) = {
                let mut st = self.shared.lock();
                match st.spool.as_mut() {
                    Some(s) => {
                        // Bounds what a crash could replay twice to about one tick of events.
                        if let Err(error) = s.release_acknowledged() {
                            tracing::error!(%error, "cannot rotate the spool");
                        }
                        (s.active_handle().ok(), s.unacked(), s.bytes())
                    }
                    None => (None, 0, 0),
                }
            };
            if matches!(self.settings.fsync, FsyncPolicy::IntervalMs(_)) {
                if let Some(h) = handle {
                    if let Err(error) = h.sync_data() {
                        tracing::error!(%error, "spool fsync failed");
                    }
                }
            }
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                let depth = if self.settings.config.mode == Mode::Queue {
                    unacked
                } else {
                    self.producer.in_flight_count().max(0) as u64
                };
                self.shared.metrics.queue_depth.set(depth as i64);
                self.shared.metrics.spool_bytes.set(bytes as i64);
                last_gauges = Instant::now();
            }
        }
    }

    pub(super) fn pending(&self) -> u64 {
        let st = self.shared.lock();
        match st.spool.as_ref() {
            Some(s) => s.unacked(),
            None => self.producer.in_flight_count().max(0) as u64,
        }
    }

    pub(super) fn report(&self, pending: u64) -> FlushReport {
        let m = &self.shared.metrics;
        FlushReport {
            accepted: m.accepted.get(),
            delivered: m.delivered.get(),
            failed: m.failed.get(),
            dropped: m.dropped.get(),
            pending,
            pending_in_spool: self.settings.config.mode == Mode::Queue,
        }
    }
}
