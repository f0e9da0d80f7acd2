//! Helpers shared by the tests: reading the snapshot files back with the `parquet` crate's own
//! reader (no DataFusion), and the rows a log should give.

use analytics::rows::{Converter, MovementBuilder, RecordIn};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt16Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// The identity and content of a row that a test compares: (seq, line, kind, sku, location, qty,
/// lot changes, kit, channel). Lot changes are `lot:on_hand_change:reserved_change` joined by `;`.
pub type RowKey =
    (u64, u16, String, Option<String>, Option<String>, Option<i64>, Option<String>, Option<String>, String);

/// The `lots` column of row `i` as text.
fn lot_changes(lots: &arrow::array::ListArray, i: usize) -> Option<String> {
    if lots.is_null(i) {
        return None;
    }
    let items = lots.value(i);
    let items = items.as_struct();
    let lot = items.column_by_name("lot").unwrap().as_string::<i32>();
    let on_hand = items.column_by_name("on_hand_change").unwrap().as_primitive::<Int64Type>();
    let reserved = items.column_by_name("reserved_change").unwrap().as_primitive::<Int64Type>();
    let text = (0..items.len())
        .map(|j| {
            let n = |a: &arrow::array::Int64Array| if a.is_null(j) { "?".to_string() } else { a.value(j).to_string() };
            format!("{}:{}:{}", lot.value(j), n(on_hand), n(reserved))
        })
        .collect::<Vec<_>>();
    Some(text.join(";"))
}

pub fn keys_of(batch: &RecordBatch) -> Vec<RowKey> {
    let seq = batch.column_by_name("seq").unwrap().as_primitive::<UInt64Type>().clone();
    let line = batch.column_by_name("line").unwrap().as_primitive::<UInt16Type>().clone();
    let kind = batch.column_by_name("kind").unwrap().as_string::<i32>().clone();
    let sku = batch.column_by_name("sku").unwrap().as_string::<i32>().clone();
    let loc = batch.column_by_name("location").unwrap().as_string::<i32>().clone();
    let qty = batch.column_by_name("qty").unwrap().as_primitive::<Int64Type>().clone();
    let lots = batch.column_by_name("lots").unwrap().as_list::<i32>().clone();
    let kit = batch.column_by_name("kit").unwrap().as_string::<i32>().clone();
    let channel = batch.column_by_name("channel").unwrap().as_string::<i32>().clone();
    (0..batch.num_rows())
        .map(|i| {
            let s = |a: &arrow::array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            (
                seq.value(i),
                line.value(i),
                kind.value(i).to_string(),
                s(&sku),
                s(&loc),
                (!qty.is_null(i)).then(|| qty.value(i)),
                lot_changes(&lots, i),
                s(&kit),
                channel.value(i).to_string(),
            )
        })
        .collect()
}

/// Every movement row under `dir/movements`, read with the parquet crate, sorted by (seq, line).
pub fn read_movement_rows(dir: &Path) -> Vec<RowKey> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.join("movements")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).unwrap();
                let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
                for b in reader {
                    rows.extend(keys_of(&b.unwrap()));
                }
            }
        }
    }
    rows.sort();
    rows
}

/// The rows the engine's log should give: every durable record read back through the engine's
/// own change feed, converted in one uninterrupted pass.
pub fn expected_rows(engine: &engine::runtime::Engine) -> Vec<RowKey> {
    let durable = engine.stats().durable_seq;
    let mut feed = engine.feed(1).unwrap();
    let mut conv = Converter::default();
    let mut b = MovementBuilder::new();
    let mut seen = 0;
    while seen < durable {
        let events = feed.next_batch(10_000, std::time::Duration::from_secs(5)).unwrap();
        if events.is_empty() {
            if feed.next_seq() > durable {
                break;
            }
            continue;
        }
        for e in &events {
            let r = &e.record;
            let input = RecordIn {
                seq: e.seq,
                shard: e.shard,
                recorded_at: r.recorded_at,
                movement: &r.movement,
                outcome: &r.outcome,
                effects: &r.effects,
            };
            conv.convert(&input, &mut b);
            seen = e.seq;
        }
    }
    let mut rows = keys_of(&b.finish());
    rows.sort();
    rows
}

pub fn slow_tests() -> bool {
    std::env::var("PERPETUA_SLOW_TESTS").is_ok_and(|v| v == "1")
}
