//! Writing chunks of records as Parquet, with a commit marker that makes a restart resume with
//! no gap and no duplicate row.
//!
//! The protocol (every object is written whole, see [`crate::store`]):
//! 1. A chunk covers the records `first_seq..=last_seq`, `first_seq` being one past the last
//!    committed record. Its rows go to one file per UTC day,
//!    `movements/date=D/part-{first_seq}-{last_seq}.parquet`.
//!    Its lot changes go to `lots/changes-{first_seq}-{last_seq}.parquet` and its accepted
//!    `set_settings` to `settings/changes-{first_seq}-{last_seq}.parquet`.
//! 2. Then the commit marker `_ingest/state-{last_seq}.json` is written: the range, the files,
//!    the row counts and the converter's state after `last_seq` (open holds, live lots). The
//!    chunk exists from that moment.
//! 3. On start, the newest marker gives the resume point (`last_seq + 1`) and the holds; any
//!    chunk file whose `first_seq` is past it belongs to a chunk that was never committed
//!    (the writer was killed between steps 1 and 2) and is deleted before anything is written.
//!
//! So the files themselves say where to resume: there is no other state, and a chunk is either
//! wholly there or, after the next start, wholly absent.

use crate::rows::{date_of_day, Converter, DayRows, Holds, LotHistoryBuilder, Lots};
use crate::schema::{self, FORMAT_VERSION, META_FIRST_SEQ, META_FORMAT, META_LAST_SEQ, ROW_GROUP_ROWS_MAX};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

/// Commit markers kept (older ones are removed once a newer one is written).
pub const STATE_FILES_KEPT: usize = 3;

/// A commit marker: what the last committed chunk covered and the state after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitState {
    pub format: u32,
    /// First record of the chunk this marker commits.
    pub first_seq: u64,
    /// Every record up to this one is in the movements files.
    pub last_seq: u64,
    /// The chunk's files.
    pub files: Vec<String>,
    /// Rows in the chunk's files.
    pub rows: u64,
    /// Rows in every committed chunk so far.
    pub rows_total: u64,
    /// Records before this one were never ingested (the log no longer had them when this
    /// store started); 1 for a complete history.
    pub history_starts_at: u64,
    /// Milliseconds since the epoch when the marker was written.
    pub written_at_ms: u64,
    /// Where the records came from ("ingest HOST:PORT" or "import DIR").
    pub source: String,
    /// Open holds after `last_seq`.
    pub holds: Holds,
    /// The live lots after `last_seq` (absent from markers written before lots were tracked).
    #[serde(default)]
    pub lots: Lots,
}

/// Parquet settings of every file: zstd, statistics per page for pruning, bounded row groups.
fn writer_properties(first_seq: u64, last_seq: u64) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS_MAX))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_FORMAT.into(), FORMAT_VERSION.to_string()),
            KeyValue::new(META_FIRST_SEQ.into(), first_seq.to_string()),
            KeyValue::new(META_LAST_SEQ.into(), last_seq.to_string()),
        ]))
        .set_created_by(format!("stock-analytics {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Encodes batches as one Parquet file in memory.
pub fn encode_parquet(batches: &[RecordBatch], first_seq: u64, last_seq: u64) -> Result<Bytes> {
    let schema = batches.first().context("no batch to write")?.schema();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(writer_properties(first_seq, last_seq)))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// A chunk ready to be committed.
pub struct Chunk {
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: DayRows,
    /// Open holds after `last_seq`.
    pub holds: Holds,
    /// Live lots after `last_seq`.
    pub lots: Lots,
    /// Accepted `set_settings` of the chunk: (seq, sku, location, settings).
    pub settings: Vec<(u64, String, String, engine::core::Settings)>,
    /// The chunk's `lot_history` rows, if any.
    pub lot_changes: Option<RecordBatch>,
}

impl Chunk {
    /// The chunk `first_seq..=last_seq` of `rows`, with what the converter collected for it
    /// (settings changes, lot changes) and its state after `last_seq`.
    pub fn new(first_seq: u64, last_seq: u64, rows: DayRows, conv: &mut Converter) -> Chunk {
        Chunk {
            first_seq,
            last_seq,
            rows,
            holds: conv.holds.clone(),
            lots: conv.lots.clone(),
            settings: conv.take_settings(),
            lot_changes: conv.take_lot_changes(),
        }
    }
}

/// A chunk's encoded files, ready to be committed.
pub struct EncodedChunk {
    pub first_seq: u64,
    pub last_seq: u64,
    /// (name, bytes, movement rows).
    pub files: Vec<(String, Bytes, u64)>,
    pub holds: Holds,
    pub lots: Lots,
}

/// Encodes a chunk's files (CPU only; run it off the async threads).
pub fn encode_chunk(mut chunk: Chunk) -> Result<EncodedChunk> {
    let mut files = Vec::new();
    let mut days: Vec<_> = chunk.rows.days.drain().collect();
    days.sort_by_key(|(d, _)| *d);
    for (day, mut builder) in days {
        let rows = builder.rows() as u64;
        if rows == 0 {
            continue;
        }
        let batch = builder.finish();
        let name = schema::movement_file(date_of_day(day), chunk.first_seq, chunk.last_seq);
        files.push((name, encode_parquet(&[batch], chunk.first_seq, chunk.last_seq)?, rows));
    }
    if !chunk.settings.is_empty() {
        let batch = settings_batch(&chunk.settings)?;
        let name = schema::settings_changes_file(chunk.first_seq, chunk.last_seq);
        // Not movement rows: counted as 0 rows in the marker.
        files.push((name, encode_parquet(&[batch], chunk.first_seq, chunk.last_seq)?, 0));
    }
    if let Some(batch) = &chunk.lot_changes {
        let name = schema::lot_changes_file(chunk.first_seq, chunk.last_seq);
        files.push((name, encode_parquet(std::slice::from_ref(batch), chunk.first_seq, chunk.last_seq)?, 0));
    }
    Ok(EncodedChunk {
        first_seq: chunk.first_seq,
        last_seq: chunk.last_seq,
        files,
        holds: chunk.holds,
        lots: chunk.lots,
    })
}

/// The writer side of a snapshot store: recovers the committed point, then commits chunks.
pub struct Sink {
    pub store: Store,
    pub state: CommitState,
    source: String,
    /// Held while the sink lives: one writer per local store.
    _lock: Option<std::fs::File>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Sink {
    /// Opens a store for writing: reads the newest commit marker and deletes what a killed
    /// writer left uncommitted. `source` is recorded in the markers.
    pub async fn open(store: Store, source: String) -> Result<Sink> {
        let lock = match &store.local {
            Some(dir) => {
                let path = dir.join(schema::STATE_DIR).join("writer.lock");
                std::fs::create_dir_all(dir.join(schema::STATE_DIR))
                    .with_context(|| format!("cannot create {}", dir.join(schema::STATE_DIR).display()))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if file.try_lock().is_err() {
                    bail!(
                        "another stock-analytics ingest or import is writing to {} (it holds {}); stop it first",
                        dir.display(),
                        path.display()
                    );
                }
                Some(file)
            }
            None => None,
        };
        store.remove_leftover_temporaries();
        let state = read_committed(&store).await?;
        let mut removed = 0;
        let mut names = store.list(schema::MOVEMENTS_DIR).await?;
        names.extend(store.list(schema::SETTINGS_DIR).await?);
        names.extend(store.list(schema::LOTS_DIR).await?);
        for name in names {
            if let Some((first, _)) = schema::parse_chunk_file(&name) {
                if first > state.last_seq {
                    store.delete(&name).await?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, last_seq = state.last_seq, "removed files of a chunk that was never committed");
        }
        Ok(Sink { store, state, source, _lock: lock })
    }

    /// The next sequence number to ingest.
    pub fn resume_seq(&self) -> u64 {
        self.state.last_seq + 1
    }

    /// Writes an encoded chunk's files, then its commit marker.
    pub async fn commit(&mut self, encoded: EncodedChunk) -> Result<()> {
        let EncodedChunk { first_seq, last_seq, files, holds, lots } = encoded;
        if first_seq != self.state.last_seq + 1 || last_seq < first_seq {
            bail!(
                "internal error: chunk {first_seq}..={last_seq} does not follow the committed sequence number {}",
                self.state.last_seq
            );
        }
        let mut names = Vec::new();
        let mut rows = 0;
        for (name, bytes, n) in files {
            self.store.put(&name, bytes).await?;
            names.push(name);
            rows += n;
        }
        let history_starts_at = if self.state.last_seq == 0 { first_seq } else { self.state.history_starts_at };
        let next = CommitState {
            format: 1,
            first_seq,
            last_seq,
            files: names,
            rows,
            rows_total: self.state.rows_total + rows,
            history_starts_at,
            written_at_ms: now_ms(),
            source: self.source.clone(),
            holds,
            lots,
        };
        let json = serde_json::to_vec_pretty(&next)?;
        self.store.put(&schema::state_file(last_seq), Bytes::from(json)).await?;
        self.state = next;
        let states = self.store.list(schema::STATE_DIR).await?;
        let markers: Vec<&String> = states.iter().filter(|n| schema::parse_state_file(n).is_some()).collect();
        if markers.len() > STATE_FILES_KEPT {
            for old in &markers[..markers.len() - STATE_FILES_KEPT] {
                self.store.delete(old).await?;
            }
        }
        Ok(())
    }

    /// Marks records up to `last_seq` as ingested when they gave no row (only no-op records).
    pub async fn skip_to(&mut self, last_seq: u64) -> Result<()> {
        if last_seq > self.state.last_seq {
            let (holds, lots) = (self.state.holds.clone(), self.state.lots.clone());
            let first_seq = self.state.last_seq + 1;
            self.commit(EncodedChunk { first_seq, last_seq, files: Vec::new(), holds, lots }).await?;
        }
        Ok(())
    }

    /// Starts a store's history after a gap (records before `first_seq` are gone from the log):
    /// only allowed before anything was committed.
    pub fn start_after_gap(&mut self, first_seq: u64) -> Result<()> {
        if self.state.last_seq != 0 {
            bail!("the store already holds records up to {}; a gap cannot be skipped", self.state.last_seq);
        }
        self.state.last_seq = first_seq - 1;
        self.state.history_starts_at = first_seq;
        // Lots changed before the gap are unknown: their first change seen has no known change.
        self.state.lots = Lots::default();
        Ok(())
    }
}

/// The newest commit marker of a store (a default state at 0 for an empty store).
pub async fn read_committed(store: &Store) -> Result<CommitState> {
    let names = store.list(schema::STATE_DIR).await?;
    for name in names.iter().rev() {
        if schema::parse_state_file(name).is_none() {
            continue;
        }
        let bytes = store.get(name).await?;
        match serde_json::from_slice::<CommitState>(&bytes) {
            Ok(s) => return Ok(s),
            Err(e) => tracing::warn!(file = %store.show(name), error = %e, "skipping an unreadable commit marker"),
        }
    }
    Ok(CommitState { format: 1, lots: Lots::new_history(), ..CommitState::default() })
}

/// Writes a level snapshot (`levels/levels-{seq}.parquet`).
pub async fn write_levels(store: &Store, seq: u64, at_ms: u64, levels: &[engine::core::LevelView]) -> Result<String> {
    use arrow::array::*;
    use std::sync::Arc;
    let n = levels.len();
    let ints = |f: fn(&engine::core::LevelView) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(levels.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        schema::LEVELS.clone(),
        vec![
            Arc::new(UInt64Array::from(vec![seq; n])),
            Arc::new(TimestampMillisecondArray::from(vec![at_ms as i64; n]).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(levels.iter().map(|l| &l.sku))),
            Arc::new(StringArray::from_iter_values(levels.iter().map(|l| &l.location))),
            ints(|l| l.on_hand),
            ints(|l| l.reserved),
            ints(|l| l.unsellable),
            ints(|l| l.incoming),
            ints(|l| l.safety_stock),
            ints(|l| l.available),
        ],
    )?;
    let name = schema::levels_file(seq);
    store.put(&name, encode_parquet(&[batch], seq, seq)?).await?;
    Ok(name)
}

/// Writes a lot snapshot (`lots/lots-{seq}.parquet`): every lot at `seq`, as `lot_history` rows of
/// kind `snapshot`. Nothing is written for no lot.
pub async fn write_lots(store: &Store, seq: u64, at_ms: u64, lots: &[engine::core::LotView]) -> Result<Option<String>> {
    if lots.is_empty() {
        return Ok(None);
    }
    let mut b = LotHistoryBuilder::default();
    for lot in lots {
        b.push(seq, at_ms, "snapshot", lot, None);
    }
    let name = schema::lots_file(seq);
    store.put(&name, encode_parquet(&[b.finish()], seq, seq)?).await?;
    Ok(Some(name))
}

/// Writes the settings known at `seq` (`settings/settings-{seq}.parquet`).
pub async fn write_settings(
    store: &Store,
    seq: u64,
    settings: &[(String, String, engine::core::Settings)],
) -> Result<String> {
    let rows: Vec<_> = settings.iter().map(|(sku, loc, s)| (seq, sku.clone(), loc.clone(), *s)).collect();
    let name = schema::settings_file(seq);
    store.put(&name, encode_parquet(&[settings_batch(&rows)?], seq, seq)?).await?;
    Ok(name)
}

/// Rows of the `settings` files: (seq, sku, location, settings).
fn settings_batch(settings: &[(u64, String, String, engine::core::Settings)]) -> Result<RecordBatch> {
    use arrow::array::*;
    use std::sync::Arc;
    Ok(RecordBatch::try_new(
        schema::SETTINGS.clone(),
        vec![
            Arc::new(UInt64Array::from_iter_values(settings.iter().map(|s| s.0))),
            Arc::new(StringArray::from_iter_values(settings.iter().map(|s| &s.1))),
            Arc::new(StringArray::from_iter_values(settings.iter().map(|s| &s.2))),
            Arc::new(Int64Array::from_iter(settings.iter().map(|s| s.3.reorder_point))),
            Arc::new(Int64Array::from_iter(settings.iter().map(|s| s.3.reorder_qty))),
            Arc::new(Int64Array::from_iter(settings.iter().map(|s| s.3.max_qty))),
            Arc::new(Int64Array::from_iter_values(settings.iter().map(|s| s.3.safety_stock))),
            Arc::new(Int32Array::from_iter_values(settings.iter().map(|s| s.3.lead_time_days as i32))),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{Converter, RecordIn};
    use engine::core::{Detail, Effects, Movement, MovementKind};

    fn chunk(first: u64, last: u64, day_ms: &[u64]) -> Chunk {
        let mut rows = DayRows::default();
        let mut conv = Converter::default();
        let m = Movement {
            key: None,
            channel: "web".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Expect { sku: "A".into(), location: "dc".into(), qty: 1 },
        };
        let ok = Ok(Detail::None);
        // Every record changes a lot, so that each chunk has a lot changes file too.
        let lot = engine::core::LotView {
            sku: "A".into(),
            location: "dc".into(),
            lot: "L1".into(),
            expires_at: 1,
            on_hand: 1,
            reserved: 0,
            expired: false,
        };
        let fx = Effects { lots: vec![lot], ..Effects::default() };
        for (i, seq) in (first..=last).enumerate() {
            let at = day_ms[i % day_ms.len()];
            let r = RecordIn { seq, shard: 0, recorded_at: at, movement: &m, outcome: &ok, effects: &fx };
            conv.convert(&r, rows.builder_for(at));
        }
        Chunk::new(first, last, rows, &mut conv)
    }

    #[tokio::test]
    async fn a_chunk_without_its_marker_is_removed_and_the_store_resumes_after_the_last_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let days = [86_400_000 * 20_000 + 5, 86_400_000 * 20_001 + 5];
        let mut sink = Sink::open(store.clone(), "test".into()).await.unwrap();
        assert_eq!(sink.resume_seq(), 1);
        sink.commit(encode_chunk(chunk(1, 10, &days)).unwrap()).await.unwrap();
        assert_eq!(sink.state.files.len(), 3, "one file per day, and the lot changes");
        // A second writer is refused while the first holds the store.
        assert!(Sink::open(store.clone(), "test".into()).await.is_err());
        // Killed after writing the files of 11..=20 and before their marker; plus a temporary.
        let encoded = encode_chunk(chunk(11, 20, &days)).unwrap();
        for (name, bytes, _) in encoded.files {
            store.put(&name, bytes).await.unwrap();
        }
        std::fs::write(dir.path().join("movements/date=2024-10-04/part-x.parquet#1"), b"half").unwrap();
        drop(sink);
        let sink = Sink::open(store.clone(), "test".into()).await.unwrap();
        assert_eq!(sink.resume_seq(), 11);
        assert_eq!(sink.state.rows_total, 10);
        let left: Vec<String> = store.list(schema::MOVEMENTS_DIR).await.unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|n| n.contains("part-00000000000000000001-00000000000000000010")), "{left:?}");
        assert!(!dir.path().join("movements/date=2024-10-04/part-x.parquet#1").exists());
        let lots: Vec<String> = store.list(schema::LOTS_DIR).await.unwrap();
        assert_eq!(lots, ["lots/changes-00000000000000000001-00000000000000000010.parquet"]);
        // A chunk that does not follow the committed point is refused.
        let mut sink = sink;
        assert!(sink.commit(encode_chunk(chunk(12, 20, &days)).unwrap()).await.is_err());
        sink.commit(encode_chunk(chunk(11, 20, &days)).unwrap()).await.unwrap();
        assert_eq!(sink.state.rows_total, 20);
    }
}
