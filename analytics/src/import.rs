//! `import --wal DIR`: the movements of a stopped engine's data directory, read straight from its
//! log segments, written with the same commit protocol as `ingest` (so an import can be resumed,
//! and `ingest` can carry on where it stopped); plus, at the end, a levels snapshot, a lot snapshot
//! and the settings, from the newest checkpoint and the records after it.
//!
//! Architecture invariant: the data directory is only read, never written (the engine's own
//! listing helpers clean up files, so they are not used here).

use crate::rows::{Converter, DayRows, RecordIn};
use crate::sink::{encode_chunk, write_levels, write_lots, write_settings, Chunk, Sink};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use engine::core::{LevelView, LotView, ShardState};
use engine::wal::checkpoint::{read_checkpoint, CheckpointBody};
use engine::wal::format::{decode_segment_header, RECORD_TYPE_MOVEMENT, RECORD_TYPE_MOVEMENT_ALERTS, RECORD_TYPE_NOP};
use engine::wal::record::decode_movement_payload;
use engine::wal::segment::{list_segments, RecordIter, ScanStop};
use std::collections::HashMap;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Settings of one import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The engine's data directory (holding `wal/` and `checkpoints/`), or its `wal/` folder.
    pub data_dir: PathBuf,
    /// Rows per chunk (each chunk is one file per day and one commit).
    pub chunk_rows: usize,
    /// When the log no longer starts where the store stops, start after the gap instead of failing.
    pub allow_gap: bool,
    /// Write a levels snapshot and the settings at the end.
    pub levels: bool,
    /// Print a progress line to stderr.
    pub progress: bool,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub rows: u64,
    pub levels_file: Option<String>,
    pub lots_file: Option<String>,
    pub elapsed: Duration,
}

fn wal_dir_of(dir: &Path) -> PathBuf {
    if dir.join("wal").is_dir() {
        dir.join("wal")
    } else {
        dir.to_path_buf()
    }
}

/// The newest readable checkpoint of a data directory.
fn newest_checkpoint(data_dir: &Path) -> Option<CheckpointBody> {
    let dir = data_dir.join("checkpoints");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let name = p.file_name()?.to_str()?.to_string();
            let seq = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?.parse().ok()?;
            Some((seq, p))
        })
        .collect();
    found.sort();
    for (_, path) in found.iter().rev() {
        match read_checkpoint(path) {
            Ok(body) => return Some(body),
            Err(why) => tracing::warn!(checkpoint = %path.display(), %why, "skipping a damaged checkpoint"),
        }
    }
    None
}

/// Levels and lots as of the end of the log: a checkpoint's, then each record's effects after it.
struct LevelTracker {
    /// Per shard, the last record the checkpoint covers.
    covered: Vec<u64>,
    /// By SKU, then location: looked up with `&str`, updated in place (no allocation per record).
    levels: FastMap<String, FastMap<String, LevelView>>,
    /// Live lots by (SKU, location, lot).
    lots: FastMap<(String, String, String), LotView>,
    settings: Vec<(String, String, engine::core::Settings)>,
    checkpoint_seq: u64,
}

impl LevelTracker {
    fn from_checkpoint(body: Option<CheckpointBody>) -> LevelTracker {
        let Some(body) = body else {
            return LevelTracker {
                covered: Vec::new(),
                levels: FastMap::default(),
                lots: FastMap::default(),
                settings: Vec::new(),
                checkpoint_seq: 0,
            };
        };
        let checkpoint_seq = body.covered_seq();
        let mut covered = Vec::new();
        let mut levels = FastMap::default();
        let mut lots = FastMap::default();
        let mut settings = Vec::new();
        for snap in body.shards {
            covered.push(snap.last_seq);
            let state = ShardState::from_snapshot(snap);
            for l in state.levels() {
                if let Some(s) = state.settings(&l.sku, &l.location) {
                    if s != engine::core::Settings::default() {
                        settings.push((l.sku.clone(), l.location.clone(), s));
                    }
                }
                for lot in state.level_detail(&l.sku, &l.location).map(|d| d.lots).unwrap_or_default() {
                    lots.insert((lot.sku.clone(), lot.location.clone(), lot.lot.clone()), lot);
                }
                levels.entry(l.sku.clone()).or_insert_with(FastMap::default).insert(l.location.clone(), l);
            }
        }
        LevelTracker { covered, levels, lots, settings, checkpoint_seq }
    }

    /// The first record whose effects are not in the checkpoint.
    fn needed_from(&self) -> u64 {
        self.covered.iter().min().map_or(1, |c| c + 1)
    }

    fn apply(&mut self, seq: u64, shard: u16, effects: &engine::core::Effects) {
        if self.covered.get(shard as usize).is_some_and(|&c| seq <= c) {
            return;
        }
        for l in &effects.levels {
            let by_location = match self.levels.get_mut(&l.sku) {
                Some(m) => m,
                None => self.levels.entry(l.sku.clone()).or_default(),
            };
            match by_location.get_mut(&l.location) {
                Some(v) => {
                    (v.on_hand, v.reserved, v.unsellable) = (l.on_hand, l.reserved, l.unsellable);
                    (v.incoming, v.safety_stock, v.available) = (l.incoming, l.safety_stock, l.available);
                }
                None => {
                    by_location.insert(l.location.clone(), l.clone());
                }
            }
        }
        for lot in &effects.lots {
            let key = (lot.sku.clone(), lot.location.clone(), lot.lot.clone());
            if lot.on_hand == 0 && lot.reserved == 0 {
                self.lots.remove(&key);
            } else {
                self.lots.insert(key, lot.clone());
            }
        }
    }
}

/// Runs an import into `store`.
pub async fn import(store: Store, opts: ImportOptions) -> Result<ImportReport> {
    let started = Instant::now();
    let wal_dir = wal_dir_of(&opts.data_dir);
    let segments = list_segments(&wal_dir).with_context(|| {
        format!("cannot list log segments in {}; pass the engine's data directory (it holds wal/)", wal_dir.display())
    })?;
    let Some(&(oldest, _)) = segments.first() else {
        bail!("no log segment (*.wal) in {}; pass the engine's data directory", wal_dir.display());
    };
    let mut sink = Sink::open(store.clone(), format!("import {}", opts.data_dir.display())).await?;
    let mut resume = sink.resume_seq();
    if resume < oldest {
        if !(opts.allow_gap && sink.state.last_seq == 0) {
            bail!(
                "the log in {} starts at sequence number {oldest}, but the snapshots need {resume} next: records \
                 {resume}..{} were removed by log retention. Pass --allow-gap to start this (empty) store at {oldest}",
                wal_dir.display(),
                oldest - 1
            );
        }
        tracing::warn!(oldest, "the log no longer starts at 1: history starts at {oldest}");
        sink.start_after_gap(oldest)?;
        resume = oldest;
    }
    let tracker = if opts.levels {
        let t = LevelTracker::from_checkpoint(newest_checkpoint(&opts.data_dir));
        if t.needed_from() < oldest {
            tracing::warn!("no checkpoint covers the start of the log: no levels snapshot will be written");
            None
        } else {
            Some(t)
        }
    } else {
        None
    };
    let scan_from = tracker.as_ref().map_or(resume, |t| t.needed_from().min(resume));
    let (holds, lots) = (sink.state.holds.clone(), sink.state.lots.clone());
    let chunk_rows = opts.chunk_rows.max(1);
    let progress = opts.progress;
    let committed_from = resume;

    // Decoding runs on its own thread, encoding on the blocking pool, commits here: the three
    // overlap, and at most two chunks wait between them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Chunk>>(2);
    let decoder = std::thread::spawn(move || -> Result<(LevelTrackerOut, u64)> {
        let mut conv = Converter::new(holds, lots);
        let mut rows = DayRows::with_capacity(chunk_rows);
        let mut tracker = tracker;
        let mut next = scan_from;
        let mut chunk_first = committed_from;
        let mut records = 0u64;
        let mut last_recorded_at = 0;
        let send = |c: Result<Chunk>| tx.blocking_send(c).map_err(|_| anyhow::anyhow!("the writer stopped"));
        let start_index = segments.iter().rposition(|(first, _)| *first <= scan_from).unwrap_or(0);
        // One buffer for every segment: fresh pages for each would cost more than reading them.
        let mut data = Vec::new();
        for (_, path) in &segments[start_index..] {
            data.clear();
            std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
                .with_context(|| format!("cannot read {}", path.display()))?;
            decode_segment_header(&data).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
            for rec in RecordIter::new(&data) {
                let r = match rec {
                    Ok(r) => r,
                    Err(ScanStop::Torn { offset, why }) => {
                        tracing::info!(segment = %path.display(), offset, %why, "the log ends with a torn record");
                        break;
                    }
                    Err(ScanStop::Corrupt { offset, why }) => {
                        bail!("the log is damaged: {} near byte {offset}: {why}", path.display())
                    }
                };
                let h = r.header;
                if h.seq < next {
                    continue;
                }
                if h.seq != next {
                    bail!("{}: sequence number {} follows {} (a segment is missing?)", path.display(), h.seq, next - 1);
                }
                next += 1;
                match h.record_type {
                    RECORD_TYPE_NOP => continue,
                    RECORD_TYPE_MOVEMENT | RECORD_TYPE_MOVEMENT_ALERTS => {}
                    t => bail!("{}: unknown record type {t} at sequence number {}", path.display(), h.seq),
                }
                let rec = decode_movement_payload(r.payload)
                    .map_err(|e| anyhow::anyhow!("{}: sequence number {}: {e}", path.display(), h.seq))?;
                if let Some(t) = tracker.as_mut() {
                    t.apply(h.seq, h.shard, &rec.effects);
                }
                last_recorded_at = rec.recorded_at;
                if h.seq < committed_from {
                    continue;
                }
                records += 1;
                let input = RecordIn {
                    seq: h.seq,
                    shard: h.shard,
                    recorded_at: rec.recorded_at,
                    movement: &rec.movement,
                    outcome: &rec.outcome,
                    effects: &rec.effects,
                };
                conv.convert(&input, rows.builder_for(rec.recorded_at));
                if rows.rows() >= chunk_rows {
                    let full = std::mem::replace(&mut rows, DayRows::with_capacity(chunk_rows));
                    send(Ok(Chunk::new(chunk_first, h.seq, full, &mut conv)))?;
                    chunk_first = h.seq + 1;
                }
            }
        }
        let last = next - 1;
        if last >= chunk_first {
            send(Ok(Chunk::new(chunk_first, last, rows, &mut conv)))?;
        }
        Ok((
            tracker.map(|t| TrackerOut {
                levels: t.levels.into_values().flat_map(|m| m.into_values()).collect(),
                lots: t.lots.into_values().collect(),
                settings: t.settings,
                checkpoint_seq: t.checkpoint_seq,
                last_recorded_at,
            }),
            records,
        ))
    });

    let mut report = ImportReport { first_seq: resume, ..ImportReport::default() };
    let mut last_print = Instant::now();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        let encoded = tokio::task::spawn_blocking(move || encode_chunk(chunk)).await??;
        sink.commit(encoded).await?;
        if progress && last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let done = sink.state.last_seq.saturating_sub(resume) + 1;
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\rimport: through sequence number {} ({} rows, {:.0} records/s)   ",
                sink.state.last_seq,
                sink.state.rows_total,
                done as f64 / secs.max(1e-9)
            );
        }
    }
    let (levels, records) = decoder.join().map_err(|_| anyhow::anyhow!("the log reader panicked"))??;
    report.records = records;
    report.last_seq = sink.state.last_seq;
    report.rows = sink.state.rows_total;
    if progress {
        eprintln!();
    }
    if let Some(TrackerOut { mut levels, mut lots, settings, checkpoint_seq, last_recorded_at }) = levels {
        levels.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        lots.sort_by(|a, b| {
            (&a.sku, &a.location, a.expires_at, &a.lot).cmp(&(&b.sku, &b.location, b.expires_at, &b.lot))
        });
        let at = sink.state.written_at_ms;
        let at_seq = sink.state.last_seq.max(checkpoint_seq);
        report.levels_file = Some(write_levels(&store, at_seq, at, &levels).await?);
        // The lots as of the last record, stamped with its time (the reports' as-of filters use it).
        let lots_at = if last_recorded_at > 0 { last_recorded_at } else { at };
        report.lots_file = write_lots(&store, at_seq, lots_at, &lots).await?;
        if checkpoint_seq > 0 && !settings.is_empty() {
            write_settings(&store, checkpoint_seq, &settings).await?;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What the log reader hands back: the end-of-log levels, lots and settings, if tracked.
struct TrackerOut {
    levels: Vec<LevelView>,
    lots: Vec<LotView>,
    settings: Vec<(String, String, engine::core::Settings)>,
    checkpoint_seq: u64,
    /// Engine time of the last record read (0 if none).
    last_recorded_at: u64,
}

type LevelTrackerOut = Option<TrackerOut>;
