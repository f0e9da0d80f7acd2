//! Recovery: the newest valid checkpoint, then every logged record after it, applied again.
//!
//! A torn tail (an incomplete last record of the last segment) is cut off and reported. Anything
//! else that is wrong (a damaged record with data after it, a missing segment, a gap in sequence
//! numbers, a replay that disagrees with the logged outcome) stops recovery with an error naming
//! the file and offset: the engine never starts with stock silently missing.

use super::checkpoint::{list_checkpoints, read_checkpoint};
use super::format::*;
use super::record::decode_movement_head;
use super::segment::{list_segments, RecordIter, ScanStop};
use crate::core::{Applied, Effects, MovementKind, Seq, ShardState, HOLD_SHARD_BITS};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why recovery refused to start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} at offset {offset}: {why}. The log is damaged before its end; restore the data directory from a backup, or move this file away only if you accept losing the movements in it")]
    Corrupt { path: PathBuf, offset: usize, why: String },
    #[error("log segment missing: expected a segment starting at sequence {expected}, found {found}")]
    MissingSegment { expected: Seq, found: String },
    #[error("{0}")]
    Mismatch(String),
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub checkpoint: Option<PathBuf>,
    pub records_replayed: u64,
    pub records_skipped: u64,
    /// A torn tail that was cut off: file, offset, why.
    pub torn_tail: Option<(PathBuf, usize, String)>,
    pub segments: usize,
}

/// The state rebuilt from disk.
pub struct Recovered {
    pub shards: Vec<ShardState>,
    /// The sequence number the next record gets.
    pub next_seq: Seq,
    /// The highest hold counter ever handed out.
    pub hold_counter: u64,
    /// The last segment, to append to (None when there is none).
    pub last_segment: Option<PathBuf>,
    pub report: RecoveryReport,
}

/// Rebuilds the engine's state from `wal_dir` and `checkpoint_dir` for `shard_count` shards.
pub fn recover(wal_dir: &Path, checkpoint_dir: &Path, shard_count: usize) -> Result<Recovered, RecoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoveryError::Io { path, source }
    };
    let mut report = RecoveryReport::default();
    let mut shards: Vec<ShardState> = (0..shard_count).map(|_| ShardState::new()).collect();
    let mut hold_counter = 0;

    for (_, path) in list_checkpoints(checkpoint_dir).map_err(io_err(checkpoint_dir))?.into_iter().rev() {
        match read_checkpoint(&path) {
            Ok(body) if body.shards.len() == shard_count => {
                hold_counter = body.hold_counter;
                shards = body.shards.into_iter().map(ShardState::from_snapshot).collect();
                report.checkpoint = Some(path);
                break;
            }
            Ok(body) => {
                return Err(RecoveryError::Mismatch(format!(
                    "{} holds {} shards but the engine runs {shard_count}",
                    path.display(),
                    body.shards.len()
                )))
            }
            Err(why) => {
                tracing::warn!(checkpoint = %path.display(), %why, "skipping damaged checkpoint; trying an older one")
            }
        }
    }
    let covered = shards.iter().map(|s| s.last_seq()).min().unwrap_or(0);
    let mut next_seq = shards.iter().map(|s| s.last_seq()).max().unwrap_or(0) + 1;

    let segments = list_segments(wal_dir).map_err(io_err(wal_dir))?;
    report.segments = segments.len();
    let skip_up_to: Vec<Seq> = shards.iter().map(|s| s.last_seq()).collect();
    // One replay thread per shard: the shards' records are independent of each other.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shard_count).map(|_| crossbeam_channel::bounded(64)).unzip();
    let paths: Vec<PathBuf> = segments.iter().map(|(_, p)| p.clone()).collect();
    let replayed = std::thread::scope(|scope| {
        let workers: Vec<_> = shards
            .drain(..)
            .zip(receivers)
            .map(|(state, rx)| {
                let paths = &paths;
                scope.spawn(move || replay_shard(state, rx, paths))
            })
            .collect();
        let scanned = scan_segments(&segments, covered, shard_count, &skip_up_to, &senders, &mut report);
        drop(senders);
        let mut results = Vec::new();
        for w in workers {
            results.push(w.join().expect("replay thread panicked"));
        }
        scanned.map(|next| (next, results))
    });
    let ((scanned_next, append_to), results) = replayed?;
    next_seq = next_seq.max(scanned_next);
    // Append to the last segment only if it ends right before the next record (a checkpoint can be
    // ahead of a log that was not synced, under `Fsync::Never`).
    let last_segment = append_to.filter(|(_, log_end)| *log_end == next_seq).map(|(path, _)| path);
    for r in results {
        let (state, holds_max, count) = r?;
        hold_counter = hold_counter.max(holds_max);
        report.records_replayed += count;
        shards.push(state);
    }
    Ok(Recovered { shards, next_seq, hold_counter, last_segment, report })
}

/// Records of one segment for one shard: (seq, offset, payload range) into the segment's bytes.
struct ReplayBatch {
    segment: usize,
    data: Arc<Vec<u8>>,
    records: Vec<(Seq, usize, std::ops::Range<usize>)>,
}

const REPLAY_BATCH_RECORDS: usize = 4096;

/// Checks framing, checksums and sequence continuity of every segment from the one holding
/// `covered + 1`, cuts a torn tail off the last one, and hands the records to replay to the
/// shards' replay threads. Returns the next sequence number (past the checkpoint and the log),
/// and the last segment with the sequence number after its last record.
fn scan_segments(
    segments: &[(Seq, PathBuf)],
    covered: Seq,
    shard_count: usize,
    skip_up_to: &[Seq],
    senders: &[crossbeam_channel::Sender<ReplayBatch>],
    report: &mut RecoveryReport,
) -> Result<(Seq, Option<(PathBuf, Seq)>), RecoveryError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoveryError::Io { path, source }
    };
    let mut next_seq = covered + 1;
    // The first segment needed is the last one starting at or before covered + 1.
    let start = segments.iter().rposition(|(first, _)| *first <= covered + 1).unwrap_or(0);
    let mut expected = None::<Seq>;
    let mut append_to = None;
    for (i, (first_seq, path)) in segments.iter().enumerate().skip(start) {
        let data = Arc::new(std::fs::read(path).map_err(io_err(path))?);
        let is_last = i + 1 == segments.len();
        if is_last && data.len() <= SEGMENT_HEADER_LEN && decode_segment_header(&data).is_err() {
            // The engine stopped while creating this segment: it holds no record. Start it again.
            tracing::warn!(segment = %path.display(), "removing a log segment left incomplete by a crash");
            std::fs::remove_file(path).map_err(io_err(path))?;
            report.torn_tail = Some((path.clone(), 0, "incomplete segment header".into()));
            break;
        }
        let header_first = decode_segment_header(&data).map_err(|why| RecoveryError::Corrupt {
            path: path.clone(),
            offset: 0,
            why,
        })?;
        if header_first != *first_seq {
            let why = format!("segment header says it starts at {header_first}, its name says {first_seq}");
            return Err(RecoveryError::Corrupt { path: path.clone(), offset: 0, why });
        }
        match expected {
            None if *first_seq > covered + 1 => {
                return Err(RecoveryError::MissingSegment { expected: covered + 1, found: path.display().to_string() })
            }
            Some(e) if *first_seq != e => {
                return Err(RecoveryError::MissingSegment { expected: e, found: path.display().to_string() })
            }
            _ => {}
        }
        let mut batches: Vec<Vec<(Seq, usize, std::ops::Range<usize>)>> = vec![Vec::new(); shard_count];
        let send = |shard: usize, records: Vec<_>| {
            // A closed channel means that replay thread already failed; its error is reported.
            let _ = senders[shard].send(ReplayBatch { segment: i, data: data.clone(), records });
        };
        let mut seq_expected = *first_seq;
        for rec in RecordIter::new(&data) {
            let rec = match rec {
                Ok(r) => r,
                Err(ScanStop::Torn { offset, why }) if is_last => {
                    tracing::warn!(segment = %path.display(), offset, %why, "cutting off a torn tail left by a crash");
                    let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
                    f.set_len(offset as u64).map_err(io_err(path))?;
                    f.sync_all().map_err(io_err(path))?;
                    report.torn_tail = Some((path.clone(), offset, why));
                    break;
                }
                Err(ScanStop::Torn { offset, why } | ScanStop::Corrupt { offset, why }) => {
                    return Err(RecoveryError::Corrupt { path: path.clone(), offset, why });
                }
            };
            let corrupt = |why: String| RecoveryError::Corrupt { path: path.clone(), offset: rec.offset, why };
            let h = rec.header;
            if h.seq != seq_expected {
                return Err(corrupt(format!("sequence {} where {seq_expected} was expected", h.seq)));
            }
            seq_expected += 1;
            let shard = h.shard as usize;
            if shard >= shard_count {
                return Err(corrupt(format!("record of shard {} but the engine has {shard_count}", h.shard)));
            }
            if !is_movement_type(h.record_type) && h.record_type != RECORD_TYPE_NOP {
                return Err(corrupt(format!("unknown record type {}", h.record_type)));
            }
            if h.seq <= skip_up_to[shard] || h.record_type == RECORD_TYPE_NOP {
                report.records_skipped += 1;
                continue;
            }
            let payload_at = rec.offset + RECORD_HEADER_LEN;
            batches[shard].push((h.seq, rec.offset, payload_at..payload_at + rec.payload.len()));
            if batches[shard].len() == REPLAY_BATCH_RECORDS {
                send(shard, std::mem::take(&mut batches[shard]));
            }
        }
        for (shard, records) in batches.into_iter().enumerate() {
            if !records.is_empty() {
                send(shard, records);
            }
        }
        expected = Some(seq_expected);
        next_seq = next_seq.max(seq_expected);
        append_to = Some((path.clone(), seq_expected));
    }
    Ok((next_seq, append_to))
}

/// Applies one shard's records again, checking each outcome against the logged one. Returns the
/// state, the highest hold counter seen, and how many records were replayed.
fn replay_shard(
    mut state: ShardState,
    rx: crossbeam_channel::Receiver<ReplayBatch>,
    paths: &[PathBuf],
) -> Result<(ShardState, u64, u64), RecoveryError> {
    let mut fx = Effects::default();
    let (mut hold_counter, mut replayed) = (0, 0);
    for batch in rx {
        for (seq, offset, range) in batch.records {
            let corrupt = |why: String| RecoveryError::Corrupt { path: paths[batch.segment].clone(), offset, why };
            let (recorded_at, body_hash, movement, outcome) = decode_movement_head(&batch.data[range])
                .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
            if let MovementKind::Reserve { hold, .. } = movement.kind {
                hold_counter = hold_counter.max(hold >> HOLD_SHARD_BITS);
            }
            fx.clear();
            let applied = state.apply(recorded_at, seq, &movement, body_hash, &mut fx);
            if applied != Applied::Recorded(outcome) {
                return Err(RecoveryError::Mismatch(format!(
                    "{} at offset {offset}: replaying sequence {seq} gave {applied:?}, the log says {outcome:?}; \
                     this build decides differently from the one that wrote the log",
                    paths[batch.segment].display(),
                )));
            }
            replayed += 1;
        }
    }
    Ok((state, hold_counter, replayed))
}
