//! The log writer thread: puts the shards' framed records in sequence order, appends them to the
//! current segment, makes them durable with one `fdatasync` per group (group commit: a group is
//! whatever arrived while the last sync ran), and only then releases their acknowledgements.
//!
//! Architecture invariant: no acknowledgement leaves before the records it depends on are durable
//! (with `Fsync::Always`), and none ever leaves after a failed write or sync.

use super::batch::{BatchState, MovementResult};
use super::config::Fsync;
use crate::core::{Reason, Seq};
use crate::wal::segment::SegmentWriter;
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The results of some parts of one submission, to complete once durable.
pub type Acks = (Arc<BatchState>, Vec<(u32, MovementResult)>);

/// What a shard hands to the log writer after applying a batch.
pub struct ShardOutput {
    /// First sequence number of the range the shard claimed (records `first_seq..first_seq+count`).
    pub first_seq: Seq,
    pub count: u64,
    /// The acknowledgements may leave once everything up to here is durable.
    pub requires_seq: Seq,
    /// Framed records, in sequence order.
    pub bytes: Vec<u8>,
    /// Per submission: its parts' results.
    pub acks: Vec<Acks>,
}

impl ShardOutput {
    /// An empty output, to wake the log writer (after a failure).
    pub fn wake() -> ShardOutput {
        ShardOutput { first_seq: 0, count: 0, requires_seq: 0, bytes: Vec::new(), acks: Vec::new() }
    }
}

/// Counters and the durable point, shared with the rest of the engine.
#[derive(Default)]
pub struct LogShared {
    /// Every record up to here is durable (written, and synced under `Fsync::Always`).
    pub durable_seq: AtomicU64,
    pub failed: AtomicBool,
    pub bytes_written: AtomicU64,
    pub syncs: AtomicU64,
    /// Set by tests to stop the writer as a crash would: nothing more written or acknowledged.
    pub halt: AtomicBool,
    durable_lock: Mutex<()>,
    durable_changed: Condvar,
}

impl LogShared {
    /// Waits until every record up to `seq` is durable; false if the log failed or halted.
    pub fn wait_durable(&self, seq: Seq) -> bool {
        let mut guard = self.durable_lock.lock().unwrap();
        loop {
            if self.failed.load(Ordering::Acquire) || self.halt.load(Ordering::Acquire) {
                return false;
            }
            if self.durable_seq.load(Ordering::Acquire) >= seq {
                return true;
            }
            guard = self.durable_changed.wait_timeout(guard, std::time::Duration::from_millis(50)).unwrap().0;
        }
    }

    /// Waits up to `timeout` until `seq` is durable; true if it is.
    pub fn wait_durable_for(&self, seq: Seq, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut guard = self.durable_lock.lock().unwrap();
        loop {
            if self.durable_seq.load(Ordering::Acquire) >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.failed.load(Ordering::Acquire) || self.halt.load(Ordering::Acquire) {
                return false;
            }
            guard = self.durable_changed.wait_timeout(guard, left.min(std::time::Duration::from_millis(50))).unwrap().0;
        }
    }

    fn publish(&self, seq: Seq) {
        self.durable_seq.store(seq, Ordering::Release);
        let _guard = self.durable_lock.lock().unwrap();
        self.durable_changed.notify_all();
    }
}

pub struct LogWriter {
    pub rx: Receiver<ShardOutput>,
    pub wal_dir: PathBuf,
    pub segment: SegmentWriter,
    pub segment_bytes_max: u64,
    pub fsync: Fsync,
    /// The next sequence number to write.
    pub next_seq: Seq,
    pub shared: Arc<LogShared>,
}

impl LogWriter {
    pub fn run(mut self) {
        let mut waiting: BTreeMap<Seq, ShardOutput> = BTreeMap::new();
        let mut acks: BTreeMap<Seq, Vec<ShardOutput>> = BTreeMap::new();
        loop {
            let Ok(first) = self.rx.recv() else { break };
            self.take(first, &mut waiting, &mut acks);
            while let Ok(more) = self.rx.try_recv() {
                self.take(more, &mut waiting, &mut acks);
            }
            if self.shared.halt.load(Ordering::Acquire) {
                return; // as a crash: drop everything not yet acknowledged
            }
            if self.shared.failed.load(Ordering::Acquire) {
                fail_all(&mut waiting, &mut acks);
                continue;
            }
            let before = self.next_seq;
            if let Err(e) = self.write_ready(&mut waiting, &mut acks) {
                tracing::error!(error = %e, segment = %self.segment.path().display(),
                    "writing the log failed: no further movement will be acknowledged; stop the engine, fix the disk, restart to recover");
                self.shared.failed.store(true, Ordering::Release);
                self.shared.publish(before - 1);
                fail_all(&mut waiting, &mut acks);
                continue;
            }
            self.shared.publish(self.next_seq - 1);
            release_acks(&mut acks, self.next_seq - 1);
        }
        // All shards stopped: everything they sent is written; nothing may be left waiting.
        debug_assert!(waiting.is_empty(), "records left out of the log at shutdown");
    }

    fn take(
        &self,
        out: ShardOutput,
        waiting: &mut BTreeMap<Seq, ShardOutput>,
        acks: &mut BTreeMap<Seq, Vec<ShardOutput>>,
    ) {
        if out.count > 0 {
            waiting.insert(out.first_seq, out);
        } else {
            acks.entry(out.requires_seq).or_default().push(out);
        }
    }

    /// Writes every output whose turn it is, then syncs once.
    fn write_ready(
        &mut self,
        waiting: &mut BTreeMap<Seq, ShardOutput>,
        acks: &mut BTreeMap<Seq, Vec<ShardOutput>>,
    ) -> std::io::Result<()> {
        let mut wrote = false;
        while let Some(entry) = waiting.first_entry() {
            if *entry.key() != self.next_seq {
                debug_assert!(*entry.key() > self.next_seq, "sequence ranges overlap");
                break;
            }
            let mut out = entry.remove();
            if self.segment.bytes() >= self.segment_bytes_max {
                self.roll()?;
            }
            self.segment.append(&out.bytes)?;
            self.shared.bytes_written.fetch_add(out.bytes.len() as u64, Ordering::Relaxed);
            self.next_seq += out.count;
            out.bytes = Vec::new();
            acks.entry(out.requires_seq).or_default().push(out);
            wrote = true;
        }
        if wrote && self.fsync == Fsync::Always {
            self.segment.sync()?;
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn roll(&mut self) -> std::io::Result<()> {
        self.segment.sync()?;
        self.segment = SegmentWriter::create(&self.wal_dir, self.next_seq)?;
        Ok(())
    }
}

fn release_acks(acks: &mut BTreeMap<Seq, Vec<ShardOutput>>, durable: Seq) {
    while let Some(entry) = acks.first_entry() {
        if *entry.key() > durable {
            break;
        }
        for out in entry.remove() {
            for (batch, results) in out.acks {
                batch.complete_all(&results);
            }
        }
    }
}

fn fail_all(waiting: &mut BTreeMap<Seq, ShardOutput>, acks: &mut BTreeMap<Seq, Vec<ShardOutput>>) {
    let failure = MovementResult { seq: None, outcome: Err(Reason::StorageFailure) };
    let waiting = std::mem::take(waiting).into_values().map(|out| vec![out]);
    for outs in std::mem::take(acks).into_values().chain(waiting) {
        for out in outs {
            for (batch, results) in out.acks {
                let failed: Vec<_> = results.iter().map(|&(part, _)| (part, failure)).collect();
                batch.complete_all(&failed);
            }
        }
    }
}
