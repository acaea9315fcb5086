//! Hands records to the lanes in offset order.

use std::collections::{BTreeMap, VecDeque};

use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;

/// Hands records to the lanes in offset order: records that arrive while a lane is full wait here
/// (only records from the main queue can: a partition's own queue is read only when its lane has
/// room), and a record fetched again is skipped.
#[derive(Debug, Default)]
pub(crate) struct Feeder {
    /// Lane senders, refreshed at each assignment change.
    senders: BTreeMap<i32, mpsc::Sender<OwnedMessage>>,
    waiting: BTreeMap<i32, VecDeque<OwnedMessage>>,
    /// Per partition, the offset after the last record handed over in this assignment.
    next_offset: BTreeMap<i32, i64>,
    generation: u64,
}

impl Feeder {
    /// Follows assignment changes (`generation`, with the lanes' senders then): positions start
    /// over from the new assignment's offsets.
    pub(crate) fn sync(
        &mut self,
        generation: u64,
        senders: impl FnOnce() -> BTreeMap<i32, mpsc::Sender<OwnedMessage>>,
    ) {
        if generation != self.generation {
            self.generation = generation;
            self.senders = senders();
            self.next_offset.clear();
            self.waiting.retain(|p, _| self.senders.contains_key(p));
        }
    }

    /// How many records the lane of `p` can take now (0 while records wait for it).
    pub(crate) fn room(&self, p: i32) -> usize {
        if self.waiting.get(&p).is_some_and(|w| !w.is_empty()) {
            return 0;
        }
        self.senders.get(&p).map_or(0, mpsc::Sender::capacity)
    }

    /// Takes the record at `offset` of partition `p` (`main`: from the main queue). `Err` when
    /// order cannot be kept (the process then restarts from the committed offsets: nothing is
    /// lost).
    pub(crate) fn accept(
        &mut self,
        p: i32,
        offset: i64,
        detach: impl FnOnce() -> OwnedMessage,
        main: bool,
    ) -> Result<(), String> {
        let Some(tx) = self.senders.get(&p) else { return Ok(()) }; // revoked: redelivered to the new owner
        if let Some(next) = self.next_offset.get(&p) {
            if offset < *next {
                if main {
                    return Err(format!(
                        "partition {p}: offset {offset} arrived after offset {next} was handed over; restarting from the committed offsets"
                    ));
                }
                return Ok(()); // fetched again: already handed over
            }
        }
        self.next_offset.insert(p, offset + 1);
        let m = detach();
        let waiting = self.waiting.entry(p).or_default();
        if !waiting.is_empty() {
            waiting.push_back(m);
            return Ok(());
        }
        match tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => waiting.push_back(m),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(format!("the lane of partition {p} stopped")),
        }
        Ok(())
    }

    /// Moves waiting records into lanes that have room.
    pub(crate) fn flush_waiting(&mut self) {
        for (p, queue) in self.waiting.iter_mut() {
            let Some(tx) = self.senders.get(p) else { continue };
            while let Some(m) = queue.pop_front() {
                match tx.try_send(m) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(m)) => {
                        queue.push_front(m);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        queue.clear();
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Timestamp;
    use rdkafka::Message;

    use super::*;

    fn record(p: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, p, offset, None)
    }

    fn feeder(capacity: usize) -> (Feeder, mpsc::Receiver<OwnedMessage>) {
        let (tx, rx) = mpsc::channel(capacity);
        let mut f = Feeder::default();
        f.sync(1, || BTreeMap::from([(0, tx)]));
        (f, rx)
    }

    fn offsets(rx: &mut mpsc::Receiver<OwnedMessage>) -> Vec<i64> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|m| m.offset()).collect()
    }

    #[test]
    fn records_wait_in_order_while_the_lane_is_full() {
        let (mut f, mut rx) = feeder(2);
        for o in 0..5 {
            f.accept(0, o, || record(0, o), true).unwrap();
        }
        assert_eq!(f.room(0), 0, "records wait: the lane has no room for the queue");
        assert_eq!(offsets(&mut rx), [0, 1]);
        f.flush_waiting();
        assert_eq!(offsets(&mut rx), [2, 3]);
        f.flush_waiting();
        assert_eq!(offsets(&mut rx), [4]);
        assert_eq!(f.room(0), 2);
    }

    #[test]
    fn a_record_fetched_again_from_its_partition_queue_is_skipped() {
        let (mut f, mut rx) = feeder(8);
        f.accept(0, 5, || record(0, 5), true).unwrap();
        f.accept(0, 5, || record(0, 5), false).unwrap();
        f.accept(0, 6, || record(0, 6), false).unwrap();
        assert_eq!(offsets(&mut rx), [5, 6]);
    }

    #[test]
    fn an_older_record_from_the_main_queue_is_an_error() {
        let (mut f, _rx) = feeder(8);
        f.accept(0, 5, || record(0, 5), false).unwrap();
        let err = f.accept(0, 4, || record(0, 4), true).unwrap_err();
        assert!(err.contains("offset 4 arrived after offset 6"), "{err}");
    }

    #[test]
    fn records_of_a_partition_without_a_lane_are_dropped_and_positions_reset_on_reassignment() {
        let (mut f, mut rx) = feeder(8);
        f.accept(1, 0, || record(1, 0), true).unwrap();
        f.accept(0, 7, || record(0, 7), true).unwrap();
        let (tx, mut rx2) = mpsc::channel(8);
        f.sync(2, || BTreeMap::from([(0, tx)]));
        // The new assignment starts the partition earlier (its committed offset): taken.
        f.accept(0, 3, || record(0, 3), true).unwrap();
        assert_eq!(offsets(&mut rx), [7]);
        assert_eq!(offsets(&mut rx2), [3]);
    }
}
