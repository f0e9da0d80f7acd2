//! A shard's thread: owns one `ShardState`, applies what arrives in its channel in batches,
//! frames the log records and hands them, with the acknowledgements they unlock, to the log writer.
//!
//! Architecture invariant: the shard thread takes no lock on its path. Its only shared state is
//! the engine-wide sequence counter, from which it claims one range per batch.

use super::batch::{BatchState, MovementResult};
use super::log_writer::ShardOutput;
use crate::core::*;
use crate::wal::format::{begin_record, finish_record, push_nop, RECORD_TYPE_MOVEMENT, RECORD_TYPE_MOVEMENT_ALERTS};
use crate::wal::record::encode_into;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One movement routed to a shard.
pub struct Item {
    pub part: u32,
    pub now: Millis,
    /// `body_hash` of the whole movement as submitted; 0 without a key.
    pub body_hash: u64,
    pub movement: Movement,
}

/// Questions answered from a shard's state, in order with its movements.
pub enum Query {
    Level {
        sku: String,
        location: String,
    },
    /// Every level, optionally of one location only.
    Levels {
        location: Option<String>,
    },
    Settings {
        sku: String,
        location: String,
    },
    Holds,
    Stats,
    /// When the oldest idempotency key this shard remembers was first seen.
    OldestKey,
    /// A level with its lots and allocations.
    LevelDetail {
        sku: String,
        location: String,
    },
    /// `available` of a level for one channel.
    AvailableFor {
        sku: String,
        location: String,
        channel: String,
    },
    Serial {
        sku: String,
        serial: String,
    },
    SkuSettings {
        sku: String,
    },
    /// Every SKU whose settings differ from the default.
    AllSkuSettings,
    /// Holds split over shards whose part this shard committed.
    CommittedSplitHolds,
}

/// Answers to [`Query`].
#[derive(Debug)]
pub enum Answer {
    Level(Option<LevelView>),
    Levels(Vec<LevelView>),
    Settings(Option<Settings>),
    Holds(Vec<HoldView>),
    Stats { levels: usize, keys: usize, overhead_bytes: usize },
    OldestKey(Option<Millis>),
    LevelDetail(Option<LevelDetail>),
    AvailableFor(Option<Qty>),
    Serial(Option<SerialView>),
    SkuSettings(SkuSettings),
    AllSkuSettings(Vec<(String, SkuSettings)>),
    CommittedSplitHolds(Vec<HoldId>),
}

/// What to copy at a barrier.
#[derive(Clone, Copy)]
pub enum CopyKind {
    Levels,
    Snapshot,
}

pub enum Copied {
    Levels(Vec<LevelView>),
    /// Finished into a snapshot off the shard's thread.
    Snapshot(Box<ShardCopy>),
}

pub enum ShardMsg {
    Movements {
        items: Vec<Item>,
        batch: Option<Arc<BatchState>>,
    },
    /// Drop holds expired by and keys seen before these times, if any.
    /// `due` is set by the shard when it counts the message: only a due expiry is applied.
    Expire {
        now: Millis,
        holds_expired_by: Millis,
        keys_seen_before: Millis,
        keys_max: u64,
        due: bool,
    },
    Query(Query, tokio::sync::oneshot::Sender<Answer>),
    /// Copy the state, then wait at the barrier with the other shards, so that all copies are of
    /// one moment: together they reflect every record up to the highest sequence number any shard
    /// claimed, and none after. Replies with that number and the copy.
    AtBarrier(Arc<std::sync::Barrier>, CopyKind, tokio::sync::oneshot::Sender<(Seq, Copied)>),
    /// Finish what came before, hand it to the log, and end the thread.
    Stop,
}

pub struct ShardWorker {
    pub shard: u16,
    pub state: ShardState,
    pub rx: Receiver<ShardMsg>,
    pub log: Sender<ShardOutput>,
    pub next_seq: Arc<AtomicU64>,
    pub batch_max: usize,
}

/// Bytes to allocate per movement of a batch, from the recent average record size: 160 (the
/// fixed size this had before) while records are that small, as plain movements are; larger ones
/// (lots, serial numbers, long lines) get a quarter more than their average, so that a batch's
/// buffer rarely regrows.
fn buffer_bytes_per_record(average: usize) -> usize {
    if average <= 160 {
        160
    } else {
        average + average / 4
    }
}

impl ShardWorker {
    pub fn run(mut self) {
        let mut fx = Effects::default();
        let mut msgs = Vec::new();
        // Highest sequence number this shard claimed: acknowledgements of retries wait for it.
        let mut claimed = self.state.last_seq();
        // Bytes per log record in recent batches (records with lots or serials are larger), so
        // that a batch's buffer is allocated once at about its final size, not regrown.
        let mut record_bytes: usize = 160;
        while let Ok(first) = self.rx.recv() {
            let mut first = first;
            let mut movements = count_records(&mut first, &self.state);
            msgs.push(first);
            while movements < self.batch_max && !matches!(msgs.last(), Some(ShardMsg::AtBarrier(..))) {
                match self.rx.try_recv() {
                    Ok(mut m) => {
                        movements += count_records(&mut m, &self.state);
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
            let first_seq =
                if movements > 0 { self.next_seq.fetch_add(movements as u64, Ordering::Relaxed) } else { 0 };
            let mut out = ShardOutput {
                first_seq,
                count: movements as u64,
                requires_seq: 0,
                bytes: Vec::with_capacity(movements * buffer_bytes_per_record(record_bytes)),
                acks: Vec::with_capacity(msgs.len()),
            };
            let mut seq = first_seq;
            let mut stop = false;
            let batch_claimed = if movements > 0 { first_seq + movements as u64 - 1 } else { claimed };
            for msg in msgs.drain(..) {
                stop |= matches!(msg, ShardMsg::Stop);
                if let ShardMsg::AtBarrier(barrier, what, reply) = msg {
                    // Last message of its batch: everything this shard claimed is applied.
                    let copy = match what {
                        CopyKind::Levels => Copied::Levels(self.state.levels().collect()),
                        CopyKind::Snapshot => Copied::Snapshot(Box::new(self.state.copy())),
                    };
                    barrier.wait();
                    let _ = reply.send((batch_claimed, copy));
                    continue;
                }
                self.handle(msg, &mut seq, &mut out, &mut fx);
            }
            if movements > 0 {
                let end = first_seq + movements as u64;
                for unused in seq..end {
                    push_nop(&mut out.bytes, self.shard, unused);
                }
                claimed = end - 1;
                // A moving average, so one odd batch does not decide the next one's size.
                record_bytes = (record_bytes * 3 + out.bytes.len() / movements).div_ceil(4).clamp(64, 4096);
            }
            out.requires_seq = claimed;
            if (out.count > 0 || !out.acks.is_empty()) && self.log.send(out).is_err() {
                return; // the log writer stopped: the engine is going down
            }
            if stop {
                return;
            }
        }
    }

    fn handle(&mut self, msg: ShardMsg, seq: &mut Seq, out: &mut ShardOutput, fx: &mut Effects) {
        match msg {
            ShardMsg::Movements { items, batch } => {
                let mut results = Vec::with_capacity(if batch.is_some() { items.len() } else { 0 });
                for item in items {
                    let result = self.apply(item.now, item.body_hash, &item.movement, seq, out, fx);
                    if batch.is_some() {
                        results.push((item.part, result));
                    }
                }
                if let Some(batch) = batch {
                    out.acks.push((batch, results));
                }
            }
            ShardMsg::Expire { now, holds_expired_by, keys_seen_before, keys_max, due } => {
                if due {
                    let movement = Movement {
                        key: None,
                        channel: "engine".into(),
                        reference: None,
                        occurred_at: None,
                        kind: MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max },
                    };
                    self.apply(now, 0, &movement, seq, out, fx);
                }
            }
            ShardMsg::Query(q, reply) => {
                let _ = reply.send(self.answer(q));
            }
            ShardMsg::Stop | ShardMsg::AtBarrier(..) => {}
        }
    }

    /// Applies one movement and frames its record into `out` (nothing for a retry or mismatch).
    fn apply(
        &mut self,
        now: Millis,
        body_hash: u64,
        m: &Movement,
        seq: &mut Seq,
        out: &mut ShardOutput,
        fx: &mut Effects,
    ) -> MovementResult {
        let buf = &mut out.bytes;
        let at = begin_record(buf);
        encode_into(buf, &now);
        encode_into(buf, &body_hash);
        encode_into(buf, m);
        self.state.recycle(fx);
        match self.state.apply(now, *seq, m, body_hash, fx) {
            Applied::Recorded(outcome) => {
                encode_into(buf, &outcome);
                encode_into(buf, &*fx);
                let record_type = if fx.alerts.is_empty() { RECORD_TYPE_MOVEMENT } else { RECORD_TYPE_MOVEMENT_ALERTS };
                finish_record(buf, at, record_type, self.shard, *seq);
                *seq += 1;
                MovementResult { seq: Some(*seq - 1), outcome }
            }
            Applied::Retry { seq, outcome } => {
                buf.truncate(at);
                MovementResult { seq: Some(seq), outcome }
            }
            Applied::Mismatch => {
                buf.truncate(at);
                MovementResult { seq: None, outcome: Err(Reason::IdempotencyMismatch) }
            }
        }
    }

    fn answer(&self, q: Query) -> Answer {
        match q {
            Query::Level { sku, location } => Answer::Level(self.state.level(&sku, &location)),
            Query::Levels { location } => Answer::Levels(
                self.state.levels().filter(|l| location.as_ref().is_none_or(|loc| &l.location == loc)).collect(),
            ),
            Query::Settings { sku, location } => Answer::Settings(self.state.settings(&sku, &location)),
            Query::Holds => Answer::Holds(self.state.holds().collect()),
            Query::OldestKey => Answer::OldestKey(self.state.oldest_key_seen_at()),
            Query::LevelDetail { sku, location } => Answer::LevelDetail(self.state.level_detail(&sku, &location)),
            Query::AvailableFor { sku, location, channel } => {
                Answer::AvailableFor(self.state.available_for_channel(&sku, &location, &channel))
            }
            Query::Serial { sku, serial } => Answer::Serial(self.state.serial(&sku, &serial)),
            Query::SkuSettings { sku } => Answer::SkuSettings(self.state.sku_settings(&sku)),
            Query::AllSkuSettings => Answer::AllSkuSettings(
                self.state.all_sku_settings().map(|(sku, s)| (sku.to_owned(), s.clone())).collect(),
            ),
            Query::CommittedSplitHolds => Answer::CommittedSplitHolds(self.state.committed_split_holds().collect()),
            Query::Stats => Answer::Stats {
                levels: self.state.level_count(),
                keys: self.state.key_count(),
                overhead_bytes: self.state.level_overhead_bytes(),
            },
        }
    }
}

/// How many sequence numbers a message may take: one per movement, one for a due expiry.
fn count_records(msg: &mut ShardMsg, state: &ShardState) -> usize {
    match msg {
        ShardMsg::Movements { items, .. } => items.len(),
        ShardMsg::Expire { holds_expired_by, keys_seen_before, keys_max, due, .. } => {
            *due = state.expire_due(*holds_expired_by, *keys_seen_before, *keys_max);
            *due as usize
        }
        _ => 0,
    }
}
