//! The Parquet layout of a snapshot directory: table schemas, file names and partitions.
//!
//! ```text
//! SNAPSHOTS/
//!   movements/date=YYYY-MM-DD/part-{first_seq:020}-{last_seq:020}.parquet   one row per movement line
//!   levels/levels-{seq:020}.parquet                                         every level at one seq
//!   settings/settings-{seq:020}.parquet                                     settings known at one seq
//!   settings/changes-{first_seq:020}-{last_seq:020}.parquet                 set_settings of one chunk
//!   lots/changes-{first_seq:020}-{last_seq:020}.parquet                     lot changes of one chunk
//!   lots/lots-{seq:020}.parquet                                             every lot at one seq (import)
//!   _ingest/state-{last_seq:020}.json                                       commit marker, resume point
//! ```
//!
//! Every file is written whole and atomically (a temporary object renamed into place, or one
//! object-store PUT), so a reader never sees a half file. `docs/analytics.md` documents every
//! column; changing one here is a format change and must be reflected there.

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// Folder of the movements table (Hive-style `date=` partitions below it).
pub const MOVEMENTS_DIR: &str = "movements";
/// Folder of level snapshots.
pub const LEVELS_DIR: &str = "levels";
/// Folder of settings snapshots (settings known before the first ingested record).
pub const SETTINGS_DIR: &str = "settings";
/// Folder of lot changes (per chunk) and lot snapshots (`lot_history`).
pub const LOTS_DIR: &str = "lots";
/// Folder of commit markers written by `ingest` and `import`.
pub const STATE_DIR: &str = "_ingest";

/// Key of the Parquet key-value metadata holding the first sequence number a file covers.
pub const META_FIRST_SEQ: &str = "perpetua.first_seq";
/// Key of the Parquet key-value metadata holding the last sequence number a file covers.
pub const META_LAST_SEQ: &str = "perpetua.last_seq";
/// Version of this layout, in every file's metadata (`perpetua.format`).
pub const META_FORMAT: &str = "perpetua.format";
/// 2: `movements` gained `lot`, `serials`, `lots`, `kit`, `kit_qty`, `kit_unit_price`,
/// `allocation_channel`, `serial_tracked`, `expiry_warning_days`, `components`, and the `lots/`
/// files appeared. Files of version 1 read as version 2 with those columns null.
pub const FORMAT_VERSION: &str = "2";

/// Rows per Parquet row group: large enough for good compression and fast scans, small enough
/// that a writer's buffer stays bounded (~30 MB of Arrow arrays at most).
pub const ROW_GROUP_ROWS_MAX: usize = 256 * 1024;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `movements`: one row per line of a logged movement, in sequence order.
pub static MOVEMENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("seq", DataType::UInt64, false),
        f("line", DataType::UInt16, false),
        f("shard", DataType::UInt16, false),
        f("recorded_at", ts(), false),
        f("occurred_at", ts(), true),
        f("kind", DataType::Utf8, false),
        f("channel", DataType::Utf8, false),
        f("reference", DataType::Utf8, true),
        f("idempotency_key", DataType::Utf8, true),
        f("accepted", DataType::Boolean, false),
        f("rejected_reason", DataType::Utf8, true),
        f("sku", DataType::Utf8, true),
        f("location", DataType::Utf8, true),
        f("other_location", DataType::Utf8, true),
        f("qty", DataType::Int64, true),
        f("on_hand_change", DataType::Int64, true),
        f("unit_price", DataType::Int64, true),
        f("unit_cost", DataType::Int64, true),
        f("hold", DataType::UInt64, true),
        f("return_condition", DataType::Utf8, true),
        f("adjust_reason", DataType::Utf8, true),
        f("allow_negative", DataType::Boolean, true),
        f("variance", DataType::Int64, true),
        f("reorder_point", DataType::Int64, true),
        f("reorder_qty", DataType::Int64, true),
        f("max_qty", DataType::Int64, true),
        f("safety_stock_setting", DataType::Int64, true),
        f("lead_time_days", DataType::Int32, true),
        f("on_hand_after", DataType::Int64, true),
        f("reserved_after", DataType::Int64, true),
        f("unsellable_after", DataType::Int64, true),
        f("incoming_after", DataType::Int64, true),
        f("safety_stock_after", DataType::Int64, true),
        f("available_after", DataType::Int64, true),
        f("alerts", DataType::Utf8, true),
        f("lot", DataType::Utf8, true),
        f("serials", serials_type(), true),
        f("lots", lots_type(), true),
        f("kit", DataType::Utf8, true),
        f("kit_qty", DataType::Int64, true),
        f("kit_unit_price", DataType::Int64, true),
        f("allocation_channel", DataType::Utf8, true),
        f("serial_tracked", DataType::Boolean, true),
        f("expiry_warning_days", DataType::Int32, true),
        f("components", components_type(), true),
    ]))
});

/// `movements.serials`: the serial numbers a row names, as a list of strings.
pub fn serials_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

/// The fields of one element of `movements.lots`: a lot whose quantities the row changed.
pub fn lot_change_fields() -> Fields {
    Fields::from(vec![
        Field::new("lot", DataType::Utf8, false),
        Field::new("expires_at", ts(), false),
        Field::new("on_hand_change", DataType::Int64, true),
        Field::new("reserved_change", DataType::Int64, true),
    ])
}

/// `movements.lots`: list of { lot, expires_at, on_hand_change, reserved_change }.
pub fn lots_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(lot_change_fields()), false)))
}

/// The fields of one element of `movements.components`: { sku, qty } per kit.
pub fn component_fields() -> Fields {
    Fields::from(vec![Field::new("sku", DataType::Utf8, false), Field::new("qty", DataType::Int64, false)])
}

/// `movements.components`: a `set_sku_settings` row's kit definition.
pub fn components_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(component_fields()), false)))
}

/// `lot_history`: one row per lot a movement changed (its state after the change, and the change),
/// plus the lots of a snapshot (`kind = 'snapshot'`, written by `import`).
pub static LOT_HISTORY: LazyLock<SchemaRef> = LazyLock::new(|| {
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("seq", DataType::UInt64, false),
        f("recorded_at", ts(), false),
        f("kind", DataType::Utf8, false),
        f("sku", DataType::Utf8, false),
        f("location", DataType::Utf8, false),
        f("lot", DataType::Utf8, false),
        f("expires_at", ts(), false),
        f("on_hand", DataType::Int64, false),
        f("reserved", DataType::Int64, false),
        f("expired", DataType::Boolean, false),
        f("on_hand_change", DataType::Int64, true),
        f("reserved_change", DataType::Int64, true),
    ]))
});

/// `levels` / `level_history`: every level at one sequence number.
pub static LEVELS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("snapshot_seq", DataType::UInt64, false),
        f("snapshot_at", ts(), false),
        f("sku", DataType::Utf8, false),
        f("location", DataType::Utf8, false),
        f("on_hand", DataType::Int64, false),
        f("reserved", DataType::Int64, false),
        f("unsellable", DataType::Int64, false),
        f("incoming", DataType::Int64, false),
        f("safety_stock", DataType::Int64, false),
        f("available", DataType::Int64, false),
    ]))
});

/// `settings` files: replenishment settings known at one sequence number (from a checkpoint or
/// from the engine), before the movements that follow.
pub static SETTINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f("seq", DataType::UInt64, false),
        f("sku", DataType::Utf8, false),
        f("location", DataType::Utf8, false),
        f("reorder_point", DataType::Int64, true),
        f("reorder_qty", DataType::Int64, true),
        f("max_qty", DataType::Int64, true),
        f("safety_stock", DataType::Int64, false),
        f("lead_time_days", DataType::Int32, false),
    ]))
});

/// `movements/date=YYYY-MM-DD/part-{first}-{last}.parquet`.
pub fn movement_file(date: chrono::NaiveDate, first_seq: u64, last_seq: u64) -> String {
    format!("{MOVEMENTS_DIR}/date={}/part-{first_seq:020}-{last_seq:020}.parquet", date.format("%Y-%m-%d"))
}

/// The (first, last) sequence numbers in a movement file's name.
pub fn parse_movement_file(name: &str) -> Option<(u64, u64)> {
    let base = name.rsplit('/').next()?;
    let rest = base.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `levels/levels-{seq}.parquet`.
pub fn levels_file(seq: u64) -> String {
    format!("{LEVELS_DIR}/levels-{seq:020}.parquet")
}

/// `settings/changes-{first}-{last}.parquet`: the accepted `set_settings` of a chunk, written
/// beside its movements so that the `settings` table never scans `movements`.
pub fn settings_changes_file(first_seq: u64, last_seq: u64) -> String {
    format!("{SETTINGS_DIR}/changes-{first_seq:020}-{last_seq:020}.parquet")
}

/// The (first, last) sequence numbers of a chunk's file (`part-` or `changes-`).
pub fn parse_chunk_file(name: &str) -> Option<(u64, u64)> {
    let base = name.rsplit('/').next()?;
    let rest = base.strip_prefix("part-").or_else(|| base.strip_prefix("changes-"))?.strip_suffix(".parquet")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `lots/changes-{first}-{last}.parquet`: the lot changes of a chunk, written beside its movements.
pub fn lot_changes_file(first_seq: u64, last_seq: u64) -> String {
    format!("{LOTS_DIR}/changes-{first_seq:020}-{last_seq:020}.parquet")
}

/// `lots/lots-{seq}.parquet`: every lot at one sequence number.
pub fn lots_file(seq: u64) -> String {
    format!("{LOTS_DIR}/lots-{seq:020}.parquet")
}

/// `settings/settings-{seq}.parquet`.
pub fn settings_file(seq: u64) -> String {
    format!("{SETTINGS_DIR}/settings-{seq:020}.parquet")
}

/// `_ingest/state-{last_seq}.json`.
pub fn state_file(last_seq: u64) -> String {
    format!("{STATE_DIR}/state-{last_seq:020}.json")
}

/// The sequence number in a state file's name.
pub fn parse_state_file(name: &str) -> Option<u64> {
    let base = name.rsplit('/').next()?;
    base.strip_prefix("state-")?.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        let name = movement_file(d, 17, 4242);
        assert_eq!(name, "movements/date=2026-03-09/part-00000000000000000017-00000000000000004242.parquet");
        assert_eq!(parse_movement_file(&name), Some((17, 4242)));
        assert_eq!(parse_state_file(&state_file(99)), Some(99));
        assert_eq!(parse_movement_file("movements/date=2026-03-09/other.parquet"), None);
        assert_eq!(parse_chunk_file(&lot_changes_file(3, 9)), Some((3, 9)));
        assert_eq!(parse_chunk_file(&lots_file(9)), None, "a snapshot is not part of a chunk");
    }
}
