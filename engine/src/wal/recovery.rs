//! Recovery: the newest valid checkpoint, then every logged record after it, applied again.
//!
//! A torn tail (an incomplete last record of the last segment) is cut off and reported. Anything
//! else that is wrong (a damaged record with data after it, a missing segment, a gap in sequence
//! numbers, a replay that disagrees with the logged outcome) stops recovery with an error naming
//! the file and offset: the engine never starts with stock silently missing.

use super::checkpoint::{list_checkpoints, read_checkpoint};
use super::format::*;
use super::record::decode_movement_payload;
use super::segment::{list_segments, RecordIter, ScanStop};
use crate::core::{body_hash_of_encoded, Applied, Effects, MovementKind, Seq, ShardState, HOLD_SHARD_BITS};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

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
    // The first segment needed is the last one starting at or before covered + 1.
    let start = segments.iter().rposition(|(first, _)| *first <= covered + 1).unwrap_or(0);
    let mut expected = None::<Seq>;
    let mut fx = Effects::default();
    for (i, (first_seq, path)) in segments.iter().enumerate().skip(start) {
        let data = std::fs::read(path).map_err(io_err(path))?;
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
        let mut seq_expected = *first_seq;
        let is_last = i + 1 == segments.len();
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
            if h.shard as usize >= shard_count {
                return Err(corrupt(format!("record of shard {} but the engine has {shard_count}", h.shard)));
            }
            let shard = &mut shards[h.shard as usize];
            if h.seq <= shard.last_seq() || h.record_type == RECORD_TYPE_NOP {
                report.records_skipped += 1;
                continue;
            }
            if h.record_type != RECORD_TYPE_MOVEMENT {
                return Err(corrupt(format!("unknown record type {}", h.record_type)));
            }
            let (logged, movement_bytes) =
                decode_movement_payload(rec.payload).map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
            if let MovementKind::Reserve { hold, .. } = logged.movement.kind {
                hold_counter = hold_counter.max(hold >> HOLD_SHARD_BITS);
            }
            fx.clear();
            let body_hash = body_hash_of_encoded(movement_bytes, &logged.movement);
            let applied = shard.apply(logged.recorded_at, h.seq, &logged.movement, body_hash, &mut fx);
            if applied != Applied::Recorded(logged.outcome) || fx != logged.effects {
                return Err(RecoveryError::Mismatch(format!(
                    "{} at offset {}: replaying sequence {} gave {applied:?}, the log says {:?}; \
                     this build decides differently from the one that wrote the log",
                    path.display(),
                    rec.offset,
                    h.seq,
                    logged.outcome
                )));
            }
            report.records_replayed += 1;
        }
        expected = Some(seq_expected);
        next_seq = next_seq.max(seq_expected);
    }
    Ok(Recovered { shards, next_seq, hold_counter, last_segment: segments.last().map(|(_, p)| p.clone()), report })
}
