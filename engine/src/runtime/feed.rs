//! The change feed's source: durable records read back from the log files, from any sequence
//! number still kept, then live as the log writer makes new ones durable.
//!
//! Architecture invariant: a feed only reads files and the durable point; it never holds up the
//! shards or the log writer, however slowly its subscriber reads.

use super::log_writer::LogShared;
use crate::core::Seq;
use crate::wal::format::{
    decode_segment_header, RECORD_TYPE_MOVEMENT, RECORD_TYPE_MOVEMENT_ALERTS, RECORD_TYPE_NOP, SEGMENT_HEADER_LEN,
};
use crate::wal::record::{decode_movement_payload, MovementRecord};
use crate::wal::segment::{list_segments, RecordIter, ScanStop};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One durable record on the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    pub seq: Seq,
    pub shard: u16,
    pub record: MovementRecord,
}

/// Why a feed cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The records asked for were removed by log retention; restart from a levels snapshot.
    #[error("sequence {asked} is no longer in the log; the oldest kept is {oldest_available}")]
    Truncated { asked: Seq, oldest_available: Seq },
    #[error("reading the log: {0}")]
    Io(String),
    #[error("the log is damaged: {0}")]
    Corrupt(String),
}

/// A reader of durable records in sequence order, with no gap and no duplicate.
pub struct Feed {
    wal_dir: PathBuf,
    log: Arc<LogShared>,
    /// The next sequence number to deliver.
    next: Seq,
    /// The open segment: file, bytes read but not yet consumed, and the file offset of `buf[0]`.
    segment: Option<(File, PathBuf)>,
    buf: Vec<u8>,
    /// Deliver only movements that raise alerts; the others are passed over undecoded.
    alerts_only: bool,
}

impl Feed {
    pub(crate) fn new(wal_dir: PathBuf, log: Arc<LogShared>, from_seq: Seq) -> Result<Feed, FeedError> {
        let mut feed = Feed { wal_dir, log, next: from_seq.max(1), segment: None, buf: Vec::new(), alerts_only: false };
        feed.open_segment_with(feed.next)?;
        Ok(feed)
    }

    /// This feed, delivering only the movements that raise alerts. The others are not decoded
    /// (their records say so by their type), which makes an alert subscriber cheap.
    pub fn alerts_only(mut self) -> Feed {
        self.alerts_only = true;
        self
    }

    /// The sequence number of the next event this feed will deliver (or pass over).
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// Opens the segment holding `seq` and positions the reader at its first record; records
    /// before `seq` are skipped as they are read.
    fn open_segment_with(&mut self, seq: Seq) -> Result<(), FeedError> {
        let segments = list_segments(&self.wal_dir).map_err(|e| FeedError::Io(e.to_string()))?;
        let oldest = segments.first().map_or(seq, |s| s.0);
        let Some((_, path)) = segments.iter().rev().find(|(first, _)| *first <= seq) else {
            return Err(FeedError::Truncated { asked: seq, oldest_available: oldest });
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            // Pruned between the listing and the open: the records asked for are gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let segments = list_segments(&self.wal_dir).map_err(|e| FeedError::Io(e.to_string()))?;
                let oldest = segments.first().map_or(seq, |s| s.0);
                return Err(FeedError::Truncated { asked: seq, oldest_available: oldest });
            }
            Err(e) => return Err(FeedError::Io(format!("{}: {e}", path.display()))),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        file.read_exact(&mut header).map_err(|e| FeedError::Io(format!("{}: {e}", path.display())))?;
        decode_segment_header(&header).map_err(|why| FeedError::Corrupt(format!("{}: {why}", path.display())))?;
        file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64)).map_err(|e| FeedError::Io(e.to_string()))?;
        self.segment = Some((file, path.clone()));
        self.buf.clear();
        Ok(())
    }

    /// Up to `max` next durable events, waiting up to `timeout` for the first; empty on timeout.
    /// With [`Feed::alerts_only`] it can also be empty while [`Feed::next_seq`] moved on.
    pub fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<FeedEvent>, FeedError> {
        if !self.log.wait_durable_for(self.next, timeout) {
            return Ok(Vec::new());
        }
        let durable = self.log.durable_seq.load(Ordering::Acquire);
        let mut events = Vec::new();
        while events.len() < max && self.next <= durable {
            let progressed = self.read_available(durable, max, &mut events)?;
            if !progressed && self.next <= durable {
                // Everything in this segment is read and more is durable: it is in the next one.
                self.open_segment_with(self.next)?;
                let before = self.next;
                if !self.read_available(durable, max, &mut events)? && self.next == before {
                    // Records a checkpoint covers can be missing from the log after a power loss
                    // under `Fsync::Never`; the next segment then starts later. They are gone:
                    // the subscriber restarts from a levels snapshot.
                    let segments = list_segments(&self.wal_dir).map_err(|e| FeedError::Io(e.to_string()))?;
                    if let Some(&(first, _)) = segments.iter().find(|(first, _)| *first > before) {
                        return Err(FeedError::Truncated { asked: before, oldest_available: first });
                    }
                    let path = self.segment.as_ref().map(|s| s.1.display().to_string()).unwrap_or_default();
                    return Err(FeedError::Corrupt(format!("sequence {before} is durable but not found in {path}")));
                }
            }
        }
        Ok(events)
    }

    /// Reads what the current segment has up to `durable`; false if nothing could be read.
    fn read_available(&mut self, durable: Seq, max: usize, events: &mut Vec<FeedEvent>) -> Result<bool, FeedError> {
        let Some((file, path)) = self.segment.as_mut() else { return Ok(false) };
        file.read_to_end(&mut self.buf).map_err(|e| FeedError::Io(format!("{}: {e}", path.display())))?;
        let mut iter = RecordIter::from_offset(&self.buf, 0);
        let mut consumed = 0;
        let mut progressed = false;
        while events.len() < max && self.next <= durable {
            match iter.next() {
                None | Some(Err(ScanStop::Torn { .. })) => break, // the rest is not written yet
                Some(Err(ScanStop::Corrupt { offset, why })) => {
                    return Err(FeedError::Corrupt(format!("{} near offset {offset}: {why}", path.display())))
                }
                Some(Ok(r)) => {
                    consumed = iter.position();
                    let h = r.header;
                    if h.seq < self.next {
                        continue; // before the start asked for
                    }
                    if h.seq != self.next {
                        return Err(FeedError::Corrupt(format!(
                            "{}: sequence {} after {}",
                            path.display(),
                            h.seq,
                            self.next - 1
                        )));
                    }
                    self.next += 1;
                    progressed = true;
                    match h.record_type {
                        RECORD_TYPE_NOP => {}
                        RECORD_TYPE_MOVEMENT if self.alerts_only => {}
                        RECORD_TYPE_MOVEMENT | RECORD_TYPE_MOVEMENT_ALERTS => {
                            let record = decode_movement_payload(r.payload)
                                .map_err(|e| FeedError::Corrupt(format!("{} seq {}: {e}", path.display(), h.seq)))?;
                            events.push(FeedEvent { seq: h.seq, shard: h.shard, record });
                        }
                        t => return Err(FeedError::Corrupt(format!("{}: unknown record type {t}", path.display()))),
                    }
                }
            }
        }
        self.buf.drain(..consumed);
        Ok(progressed)
    }
}
