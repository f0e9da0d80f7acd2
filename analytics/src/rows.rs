//! Turning log records into `movements` rows: one row per line of a movement, with the level
//! after it, and into `lot_history` rows: one per lot a movement changed. Pure: no I/O, no clock;
//! the only state is the open holds (so that a `commit` can be written as the lines it sells: SKU,
//! location, quantity, price, lot, serial numbers, kit mark with the kit's price) and the
//! quantities of the live lots (so that a row can say how many units of each lot it took:
//! `Effects.lots` gives a lot's quantities after a movement, and the change is the difference with
//! the quantities before it).
//!
//! Architecture invariant: the rows of a record depend only on the record and on that state
//! before it, and the state is saved with every commit marker, so a restart produces the same rows
//! as an uninterrupted run.

use crate::schema::{component_fields, lot_change_fields, LOT_HISTORY, MOVEMENTS};
use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    StructBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field};
use engine::core::{
    AdjustReason, Detail, Effects, KitRef, LevelView, LotView, Movement, MovementKind, Outcome, ReturnCondition,
    SkuSettings,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One logged movement, as the feed or the log delivers it.
pub struct RecordIn<'a> {
    pub seq: u64,
    pub shard: u16,
    pub recorded_at: u64,
    pub movement: &'a Movement,
    pub outcome: &'a Outcome,
    pub effects: &'a Effects,
}

/// A line of an open hold, as far as the feed has shown it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLine {
    pub sku: String,
    pub location: String,
    pub qty: i64,
    pub unit_price: Option<i64>,
    /// The lot the reservation line named (`None`: first-expiry-first-out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// Serial numbers still held by the line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<String>,
    /// The kit the engine expanded the line from: (kit SKU, kits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kit: Option<(String, i64)>,
    /// The kit's price per kit (`KitRef.unit_price`), apart from `kit` so that markers written
    /// before it was carried still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kit_unit_price: Option<i64>,
}

impl HeldLine {
    fn kit_mark(&self) -> Option<KitMark<'_>> {
        self.kit.as_ref().map(|(sku, qty)| KitMark { sku, qty: *qty, unit_price: self.kit_unit_price })
    }
}

/// A row's kit mark: the kit, how many kits and the price per kit (`KitRef`, borrowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KitMark<'a> {
    sku: &'a str,
    qty: i64,
    unit_price: Option<i64>,
}

impl<'a> From<&'a KitRef> for KitMark<'a> {
    fn from(k: &'a KitRef) -> Self {
        KitMark { sku: &k.sku, qty: k.qty, unit_price: k.unit_price }
    }
}

/// Open holds by (hold id, shard): a multi-shard hold is logged as one part per shard, and each
/// shard's commit sells its own part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    pub open: BTreeMap<String, Vec<HeldLine>>,
    /// The channel that placed each open hold part (same keys as `open`): the channel its
    /// commit's rows are sold through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, String>,
}

fn hold_key(hold: u64, shard: u16) -> String {
    format!("{hold}/{shard}")
}

impl Holds {
    /// Removes a hold part: its lines and the channel that placed it.
    fn take(&mut self, hold: u64, shard: u16) -> Option<(Vec<HeldLine>, Option<String>)> {
        let key = hold_key(hold, shard);
        let channel = self.channels.remove(&key);
        self.open.remove(&key).map(|lines| (lines, channel))
    }
}

/// The quantities of the live lots (the last `Effects.lots` seen for each), from which a record's
/// lot changes are computed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lots {
    /// Every lot change of the history was seen, so a lot not in `live` has no units. False when
    /// the history starts after a gap (or the store was written before lots were tracked): the
    /// first change seen of a lot then has no known change (null), only its quantities after it.
    #[serde(default)]
    pub complete: bool,
    /// (SKU, location, lot) to (on_hand, reserved), for lots with units or reservations.
    #[serde(default, with = "lot_list")]
    pub live: BTreeMap<(String, String, String), (i64, i64)>,
}

impl Lots {
    /// The state at the start of a complete history: no lot yet.
    pub fn new_history() -> Lots {
        Lots { complete: true, live: BTreeMap::new() }
    }

    /// Records the lots a movement changed; returns each one's (on_hand, reserved) change.
    fn apply(&mut self, views: &[LotView]) -> Vec<Option<(i64, i64)>> {
        views
            .iter()
            .map(|v| {
                let key = (v.sku.clone(), v.location.clone(), v.lot.clone());
                let before = match self.live.get(&key) {
                    Some(&b) => Some(b),
                    None if self.complete => Some((0, 0)),
                    None => None,
                };
                if v.on_hand == 0 && v.reserved == 0 {
                    self.live.remove(&key); // the engine drops an empty lot
                } else {
                    self.live.insert(key, (v.on_hand, v.reserved));
                }
                before.map(|(on_hand, reserved)| (v.on_hand - on_hand, v.reserved - reserved))
            })
            .collect()
    }
}

/// `Lots::live` in a commit marker: a list of `[sku, location, lot, on_hand, reserved]` (JSON
/// object keys must be strings).
mod lot_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Live = BTreeMap<(String, String, String), (i64, i64)>;

    pub fn serialize<S: Serializer>(live: &Live, s: S) -> Result<S::Ok, S::Error> {
        let list: Vec<(&str, &str, &str, i64, i64)> =
            live.iter().map(|((sku, loc, lot), &(o, r))| (sku.as_str(), loc.as_str(), lot.as_str(), o, r)).collect();
        list.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Live, D::Error> {
        let list = Vec::<(String, String, String, i64, i64)>::deserialize(d)?;
        Ok(list.into_iter().map(|(sku, loc, lot, o, r)| ((sku, loc, lot), (o, r))).collect())
    }
}

/// A lot a record changed: its state after the record and the change, if known.
struct LotChange<'a> {
    view: &'a LotView,
    change: Option<(i64, i64)>,
}

/// Fields of one row; everything not set is null.
#[derive(Default)]
struct Row<'a> {
    line: u16,
    sku: Option<&'a str>,
    location: Option<&'a str>,
    other_location: Option<&'a str>,
    qty: Option<i64>,
    on_hand_change: Option<i64>,
    unit_price: Option<i64>,
    unit_cost: Option<i64>,
    hold: Option<u64>,
    return_condition: Option<&'static str>,
    adjust_reason: Option<&'static str>,
    allow_negative: Option<bool>,
    variance: Option<i64>,
    settings: Option<engine::core::Settings>,
    /// The channel the row is attributed to, when not the movement's own (a commit's rows: the
    /// channel that placed the hold).
    channel: Option<&'a str>,
    lot: Option<&'a str>,
    serials: &'a [String],
    kit: Option<KitMark<'a>>,
    allocation_channel: Option<&'a str>,
    sku_settings: Option<&'a SkuSettings>,
}

/// Column builders of the `movements` table.
pub struct MovementBuilder {
    seq: UInt64Builder,
    line: UInt16Builder,
    shard: UInt16Builder,
    recorded_at: TimestampMillisecondBuilder,
    occurred_at: TimestampMillisecondBuilder,
    kind: StringBuilder,
    channel: StringBuilder,
    reference: StringBuilder,
    key: StringBuilder,
    accepted: BooleanBuilder,
    rejected_reason: StringBuilder,
    sku: StringBuilder,
    location: StringBuilder,
    other_location: StringBuilder,
    qty: Int64Builder,
    on_hand_change: Int64Builder,
    unit_price: Int64Builder,
    unit_cost: Int64Builder,
    hold: UInt64Builder,
    return_condition: StringBuilder,
    adjust_reason: StringBuilder,
    allow_negative: BooleanBuilder,
    variance: Int64Builder,
    reorder_point: Int64Builder,
    reorder_qty: Int64Builder,
    max_qty: Int64Builder,
    safety_stock_setting: Int64Builder,
    lead_time_days: Int32Builder,
    after: [Int64Builder; 6],
    alerts: StringBuilder,
    lot: StringBuilder,
    serials: ListBuilder<StringBuilder>,
    lots: ListBuilder<StructBuilder>,
    kit: StringBuilder,
    kit_qty: Int64Builder,
    kit_unit_price: Int64Builder,
    allocation_channel: StringBuilder,
    serial_tracked: BooleanBuilder,
    expiry_warning_days: Int32Builder,
    components: ListBuilder<StructBuilder>,
    rows: usize,
}

impl Default for MovementBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A list builder whose items are not nullable (as the schema says).
fn list_of<T: ArrayBuilder>(values: T, item: DataType) -> ListBuilder<T> {
    ListBuilder::new(values).with_field(Arc::new(Field::new("item", item, false)))
}

impl MovementBuilder {
    pub fn new() -> MovementBuilder {
        MovementBuilder::with_capacity(0)
    }

    /// Room for `rows` rows without growing (strings grow as they must).
    pub fn with_capacity(rows: usize) -> MovementBuilder {
        let n = rows;
        let s = || StringBuilder::with_capacity(n, n * 8);
        let i = || Int64Builder::with_capacity(n);
        // Columns that are null on plain stock movements start small.
        let few = || StringBuilder::with_capacity(0, 0);
        let lot_changes = StructBuilder::from_fields(lot_change_fields(), 0);
        let components = StructBuilder::from_fields(component_fields(), 0);
        MovementBuilder {
            seq: UInt64Builder::with_capacity(n),
            line: UInt16Builder::with_capacity(n),
            shard: UInt16Builder::with_capacity(n),
            recorded_at: TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            occurred_at: TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            kind: s(),
            channel: s(),
            reference: s(),
            key: s(),
            accepted: BooleanBuilder::with_capacity(n),
            rejected_reason: s(),
            sku: s(),
            location: s(),
            other_location: s(),
            qty: i(),
            on_hand_change: i(),
            unit_price: i(),
            unit_cost: i(),
            hold: UInt64Builder::with_capacity(n),
            return_condition: s(),
            adjust_reason: s(),
            allow_negative: BooleanBuilder::with_capacity(n),
            variance: i(),
            reorder_point: i(),
            reorder_qty: i(),
            max_qty: i(),
            safety_stock_setting: i(),
            lead_time_days: Int32Builder::with_capacity(n),
            after: [i(), i(), i(), i(), i(), i()],
            alerts: s(),
            lot: few(),
            serials: list_of(few(), DataType::Utf8),
            lots: list_of(lot_changes, DataType::Struct(lot_change_fields())),
            kit: few(),
            kit_qty: Int64Builder::new(),
            kit_unit_price: Int64Builder::new(),
            allocation_channel: few(),
            serial_tracked: BooleanBuilder::new(),
            expiry_warning_days: Int32Builder::new(),
            components: list_of(components, DataType::Struct(component_fields())),
            rows: 0,
        }
    }

    /// Rows appended since the last [`MovementBuilder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn push(&mut self, r: &RecordIn<'_>, alerts: Option<&str>, lots: &[LotChange<'_>], row: Row<'_>) {
        let m = r.movement;
        self.seq.append_value(r.seq);
        self.line.append_value(row.line);
        self.shard.append_value(r.shard);
        self.recorded_at.append_value(r.recorded_at as i64);
        self.occurred_at.append_option(m.occurred_at.map(|t| t as i64));
        self.kind.append_value(m.kind.name());
        self.channel.append_value(row.channel.unwrap_or(&m.channel));
        self.reference.append_option(m.reference.as_deref());
        self.key.append_option(m.key.as_deref());
        self.accepted.append_value(r.outcome.is_ok());
        self.rejected_reason.append_option(r.outcome.err().map(|e| e.code()));
        self.sku.append_option(row.sku);
        self.location.append_option(row.location);
        self.other_location.append_option(row.other_location);
        self.qty.append_option(row.qty);
        self.on_hand_change.append_option(if r.outcome.is_ok() { row.on_hand_change.or(Some(0)) } else { Some(0) });
        self.unit_price.append_option(row.unit_price);
        self.unit_cost.append_option(row.unit_cost);
        self.hold.append_option(row.hold);
        self.return_condition.append_option(row.return_condition);
        self.adjust_reason.append_option(row.adjust_reason);
        self.allow_negative.append_option(row.allow_negative);
        self.variance.append_option(row.variance);
        let s = row.settings;
        self.reorder_point.append_option(s.and_then(|s| s.reorder_point));
        self.reorder_qty.append_option(s.and_then(|s| s.reorder_qty));
        self.max_qty.append_option(s.and_then(|s| s.max_qty));
        self.safety_stock_setting.append_option(s.map(|s| s.safety_stock));
        self.lead_time_days.append_option(s.map(|s| s.lead_time_days as i32));
        let after = match (row.sku, row.location) {
            (Some(sku), Some(loc)) => r.effects.levels.iter().rev().find(|l| l.sku == sku && l.location == loc),
            _ => None,
        };
        let values =
            after.map(|l: &LevelView| [l.on_hand, l.reserved, l.unsellable, l.incoming, l.safety_stock, l.available]);
        for (i, b) in self.after.iter_mut().enumerate() {
            b.append_option(values.map(|v| v[i]));
        }
        self.alerts.append_option(alerts);
        self.lot.append_option(row.lot);
        if row.serials.is_empty() {
            self.serials.append_null();
        } else {
            for serial in row.serials {
                self.serials.values().append_value(serial);
            }
            self.serials.append(true);
        }
        // The lots of the row's level that the record changed.
        let mut any_lot = false;
        if let (Some(sku), Some(loc)) = (row.sku, row.location) {
            for c in lots.iter().filter(|c| c.view.sku == sku && c.view.location == loc) {
                any_lot = true;
                let v = self.lots.values();
                append_lot_change(v, c);
            }
        }
        if any_lot {
            self.lots.append(true);
        } else {
            self.lots.append_null();
        }
        self.kit.append_option(row.kit.map(|k| k.sku));
        self.kit_qty.append_option(row.kit.map(|k| k.qty));
        self.kit_unit_price.append_option(row.kit.and_then(|k| k.unit_price));
        self.allocation_channel.append_option(row.allocation_channel);
        self.serial_tracked.append_option(row.sku_settings.map(|s| s.serial_tracked));
        self.expiry_warning_days.append_option(row.sku_settings.and_then(|s| s.expiry_warning_days.map(i32::from)));
        match row.sku_settings {
            Some(s) => {
                let v = self.components.values();
                for c in &s.components {
                    field::<StringBuilder>(v, 0).append_value(&c.sku);
                    field::<Int64Builder>(v, 1).append_value(c.qty);
                    v.append(true);
                }
                self.components.append(true);
            }
            None => self.components.append_null(),
        }
        self.rows += 1;
    }

    /// The rows so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.shard.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.reference.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.accepted.finish()),
            Arc::new(self.rejected_reason.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.location.finish()),
            Arc::new(self.other_location.finish()),
            Arc::new(self.qty.finish()),
            Arc::new(self.on_hand_change.finish()),
            Arc::new(self.unit_price.finish()),
            Arc::new(self.unit_cost.finish()),
            Arc::new(self.hold.finish()),
            Arc::new(self.return_condition.finish()),
            Arc::new(self.adjust_reason.finish()),
            Arc::new(self.allow_negative.finish()),
            Arc::new(self.variance.finish()),
            Arc::new(self.reorder_point.finish()),
            Arc::new(self.reorder_qty.finish()),
            Arc::new(self.max_qty.finish()),
            Arc::new(self.safety_stock_setting.finish()),
            Arc::new(self.lead_time_days.finish()),
        ];
        for b in &mut self.after {
            columns.push(Arc::new(b.finish()));
        }
        columns.push(Arc::new(self.alerts.finish()));
        columns.push(Arc::new(self.lot.finish()));
        columns.push(Arc::new(self.serials.finish()));
        columns.push(Arc::new(self.lots.finish()));
        columns.push(Arc::new(self.kit.finish()));
        columns.push(Arc::new(self.kit_qty.finish()));
        columns.push(Arc::new(self.kit_unit_price.finish()));
        columns.push(Arc::new(self.allocation_channel.finish()));
        columns.push(Arc::new(self.serial_tracked.finish()));
        columns.push(Arc::new(self.expiry_warning_days.finish()));
        columns.push(Arc::new(self.components.finish()));
        self.rows = 0;
        RecordBatch::try_new(MOVEMENTS.clone(), columns).expect("columns match the movements schema")
    }
}

/// Field `i` of a struct builder, of a type fixed by the schema.
fn field<T: ArrayBuilder>(b: &mut StructBuilder, i: usize) -> &mut T {
    b.field_builder::<T>(i).expect("the field's type is fixed by the schema")
}

fn append_lot_change(v: &mut StructBuilder, c: &LotChange<'_>) {
    field::<StringBuilder>(v, 0).append_value(&c.view.lot);
    field::<TimestampMillisecondBuilder>(v, 1).append_value(c.view.expires_at as i64);
    field::<Int64Builder>(v, 2).append_option(c.change.map(|c| c.0));
    field::<Int64Builder>(v, 3).append_option(c.change.map(|c| c.1));
    v.append(true);
}

/// Column builders of the `lot_history` table.
#[derive(Default)]
pub struct LotHistoryBuilder {
    seq: UInt64Builder,
    recorded_at: TimestampMillisecondBuilder,
    kind: StringBuilder,
    sku: StringBuilder,
    location: StringBuilder,
    lot: StringBuilder,
    expires_at: TimestampMillisecondBuilder,
    on_hand: Int64Builder,
    reserved: Int64Builder,
    expired: BooleanBuilder,
    on_hand_change: Int64Builder,
    reserved_change: Int64Builder,
    rows: usize,
}

impl LotHistoryBuilder {
    /// Appends a lot's state after record `seq` (of kind `kind`, or `snapshot`) and its change.
    pub fn push(&mut self, seq: u64, recorded_at: u64, kind: &str, lot: &LotView, change: Option<(i64, i64)>) {
        self.seq.append_value(seq);
        self.recorded_at.append_value(recorded_at as i64);
        self.kind.append_value(kind);
        self.sku.append_value(&lot.sku);
        self.location.append_value(&lot.location);
        self.lot.append_value(&lot.lot);
        self.expires_at.append_value(lot.expires_at as i64);
        self.on_hand.append_value(lot.on_hand);
        self.reserved.append_value(lot.reserved);
        self.expired.append_value(lot.expired);
        self.on_hand_change.append_option(change.map(|c| c.0));
        self.reserved_change.append_option(change.map(|c| c.1));
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let utc = |b: &mut TimestampMillisecondBuilder| Arc::new(b.finish().with_timezone("UTC")) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            utc(&mut self.recorded_at),
            Arc::new(self.kind.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.location.finish()),
            Arc::new(self.lot.finish()),
            utc(&mut self.expires_at),
            Arc::new(self.on_hand.finish()),
            Arc::new(self.reserved.finish()),
            Arc::new(self.expired.finish()),
            Arc::new(self.on_hand_change.finish()),
            Arc::new(self.reserved_change.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(LOT_HISTORY.clone(), columns).expect("columns match the lot_history schema")
    }
}

fn alerts_text(effects: &Effects) -> Option<String> {
    if effects.alerts.is_empty() {
        return None;
    }
    let parts: Vec<String> = effects
        .alerts
        .iter()
        .map(|a| {
            let kind = match a.kind {
                engine::core::AlertKind::Reorder => "reorder",
                engine::core::AlertKind::OutOfStock => "out_of_stock",
                engine::core::AlertKind::LotExpiring => "lot_expiring",
                engine::core::AlertKind::LotExpired => "lot_expired",
            };
            match &a.lot {
                Some((lot, _)) => format!("{kind}:{}@{}#{lot}", a.sku, a.location),
                None => format!("{kind}:{}@{}", a.sku, a.location),
            }
        })
        .collect();
    Some(parts.join(","))
}

fn adjust_reason(r: AdjustReason) -> &'static str {
    match r {
        AdjustReason::Correction => "correction",
        AdjustReason::Shrinkage => "shrinkage",
        AdjustReason::Damaged => "damaged",
        AdjustReason::Found => "found",
        AdjustReason::Promotion => "promotion",
    }
}

/// Converts records to rows, in sequence order, keeping the open holds and the live lots.
pub struct Converter {
    pub holds: Holds,
    pub lots: Lots,
    /// Accepted `set_settings` since the last [`Converter::take_settings`]: (seq, sku, location, settings).
    pub settings: Vec<(u64, String, String, engine::core::Settings)>,
    /// Lot changes since the last [`Converter::take_lot_changes`].
    lot_changes: LotHistoryBuilder,
}

impl Default for Converter {
    /// A converter for a history that starts at the first record.
    fn default() -> Self {
        Converter::new(Holds::default(), Lots::new_history())
    }
}

impl Converter {
    pub fn new(holds: Holds, lots: Lots) -> Converter {
        Converter { holds, lots, settings: Vec::new(), lot_changes: LotHistoryBuilder::default() }
    }

    /// The settings changes collected since the last call.
    pub fn take_settings(&mut self) -> Vec<(u64, String, String, engine::core::Settings)> {
        std::mem::take(&mut self.settings)
    }

    /// The `lot_history` rows collected since the last call (`None` if there are none).
    pub fn take_lot_changes(&mut self) -> Option<RecordBatch> {
        (self.lot_changes.rows() > 0).then(|| self.lot_changes.finish())
    }

    /// Appends the rows of one record to `out` (and its lot changes to the converter's own
    /// `lot_history` rows), and updates the open holds and the live lots.
    pub fn convert(&mut self, r: &RecordIn<'_>, out: &mut MovementBuilder) {
        let ok = r.outcome.is_ok();
        let alerts = alerts_text(r.effects);
        let alerts = alerts.as_deref();
        let lots: Vec<LotChange<'_>> = if r.effects.lots.is_empty() {
            Vec::new()
        } else {
            let changes = self.lots.apply(&r.effects.lots);
            let kind = r.movement.kind.name();
            for (view, change) in r.effects.lots.iter().zip(&changes) {
                self.lot_changes.push(r.seq, r.recorded_at, kind, view, *change);
            }
            r.effects.lots.iter().zip(changes).map(|(view, change)| LotChange { view, change }).collect()
        };
        let mut push = |row: Row<'_>| out.push(r, alerts, &lots, row);
        match &r.movement.kind {
            MovementKind::Receive { sku, location, qty, unit_cost, units } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*qty),
                on_hand_change: Some(*qty),
                unit_cost: *unit_cost,
                lot: units.lot.as_deref(),
                serials: &units.serials,
                ..Row::default()
            }),
            MovementKind::Expect { sku, location, qty } => {
                push(Row { sku: Some(sku), location: Some(location), qty: Some(*qty), ..Row::default() })
            }
            MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units } => {
                // A sell against a hold sells (part of) one of its lines, kit mark included.
                let kit = match (ok, hold) {
                    (true, Some(h)) => self.consume(*h, r.shard, sku, location, *qty, &units.serials),
                    _ => None,
                };
                push(Row {
                    sku: Some(sku),
                    location: Some(location),
                    qty: Some(*qty),
                    on_hand_change: Some(-qty),
                    unit_price: *unit_price,
                    hold: *hold,
                    allow_negative: Some(*allow_negative),
                    lot: units.lot.as_deref(),
                    serials: &units.serials,
                    kit: kit.as_ref().map(KitMark::from),
                    ..Row::default()
                })
            }
            MovementKind::Return { sku, location, qty, condition, unit_price, units } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*qty),
                on_hand_change: Some(*qty),
                unit_price: *unit_price,
                return_condition: Some(match condition {
                    ReturnCondition::Restock => "restock",
                    ReturnCondition::Damaged => "damaged",
                }),
                lot: units.lot.as_deref(),
                serials: &units.serials,
                ..Row::default()
            }),
            MovementKind::Adjust { sku, location, delta, reason, allow_negative, units } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*delta),
                on_hand_change: Some(*delta),
                adjust_reason: Some(adjust_reason(*reason)),
                allow_negative: Some(*allow_negative),
                lot: units.lot.as_deref(),
                serials: &units.serials,
                ..Row::default()
            }),
            MovementKind::Count { sku, location, counted, units } => {
                let variance = match r.outcome {
                    Ok(Detail::Variance(v)) => Some(*v),
                    _ => None,
                };
                push(Row {
                    sku: Some(sku),
                    location: Some(location),
                    qty: Some(*counted),
                    on_hand_change: variance,
                    variance,
                    lot: units.lot.as_deref(),
                    ..Row::default()
                })
            }
            MovementKind::Transfer { sku, from, to, qty, units } => {
                push(Row {
                    line: 0,
                    sku: Some(sku),
                    location: Some(from),
                    other_location: Some(to),
                    qty: Some(*qty),
                    on_hand_change: Some(-qty),
                    lot: units.lot.as_deref(),
                    serials: &units.serials,
                    ..Row::default()
                });
                push(Row {
                    line: 1,
                    sku: Some(sku),
                    location: Some(to),
                    other_location: Some(from),
                    qty: Some(*qty),
                    on_hand_change: Some(*qty),
                    lot: units.lot.as_deref(),
                    serials: &units.serials,
                    ..Row::default()
                });
            }
            MovementKind::Reserve { hold, lines, .. } => {
                let id = match r.outcome {
                    Ok(Detail::Hold(h)) => Some(*h),
                    _ if *hold != 0 => Some(*hold),
                    _ => None,
                };
                for (i, l) in lines.iter().enumerate() {
                    push(Row {
                        line: i as u16,
                        sku: Some(&l.sku),
                        location: Some(&l.location),
                        qty: Some(l.qty),
                        unit_price: l.unit_price,
                        hold: id,
                        lot: l.units.lot.as_deref(),
                        serials: &l.units.serials,
                        kit: l.kit.as_ref().map(KitMark::from),
                        ..Row::default()
                    });
                }
                if lines.is_empty() {
                    push(Row { hold: id, ..Row::default() });
                }
                if let (true, Some(id)) = (ok, id) {
                    let held = lines
                        .iter()
                        .map(|l| HeldLine {
                            sku: l.sku.clone(),
                            location: l.location.clone(),
                            qty: l.qty,
                            unit_price: l.unit_price,
                            lot: l.units.lot.clone(),
                            serials: l.units.serials.clone(),
                            kit: l.kit.as_ref().map(|k| (k.sku.clone(), k.qty)),
                            kit_unit_price: l.kit.as_ref().and_then(|k| k.unit_price),
                        })
                        .collect();
                    let key = hold_key(id, r.shard);
                    self.holds.channels.insert(key.clone(), r.movement.channel.clone());
                    self.holds.open.insert(key, held);
                }
            }
            MovementKind::Commit { hold } | MovementKind::CompleteCommit { hold } | MovementKind::Release { hold } => {
                // A `complete_commit` (the engine finishing a split commit after a crash) sells
                // exactly as a `commit` does.
                let is_commit = !matches!(r.movement.kind, MovementKind::Release { .. });
                let part = if ok { self.holds.take(*hold, r.shard) } else { None };
                match &part {
                    Some((lines, channel)) if !lines.is_empty() => {
                        for (i, l) in lines.iter().enumerate() {
                            push(Row {
                                line: i as u16,
                                sku: Some(&l.sku),
                                location: Some(&l.location),
                                qty: Some(l.qty),
                                on_hand_change: Some(if is_commit { -l.qty } else { 0 }),
                                unit_price: l.unit_price,
                                hold: Some(*hold),
                                channel: channel.as_deref(),
                                lot: l.lot.as_deref(),
                                serials: &l.serials,
                                kit: l.kit_mark(),
                                ..Row::default()
                            });
                        }
                    }
                    // A rejected commit, or a hold opened before the first ingested record.
                    _ => push(Row { hold: Some(*hold), ..Row::default() }),
                }
            }
            MovementKind::SetSettings { sku, location, settings } => {
                push(Row { sku: Some(sku), location: Some(location), settings: Some(*settings), ..Row::default() });
                if ok {
                    self.settings.push((r.seq, sku.clone(), location.clone(), *settings));
                }
            }
            MovementKind::Allocate { sku, location, channel, qty } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*qty),
                allocation_channel: Some(channel),
                ..Row::default()
            }),
            MovementKind::SetSkuSettings { sku, settings } => {
                push(Row { sku: Some(sku), sku_settings: Some(settings), ..Row::default() })
            }
            MovementKind::Expire { .. } => push(Row::default()),
        }
        // Holds dropped by expiry (or closed by a sell that consumed their last line).
        if ok {
            for h in &r.effects.holds_closed {
                self.holds.take(*h, r.shard);
            }
        }
    }

    /// A sell of `qty` against a hold: takes it off the hold's line for (sku, location), with
    /// the serial numbers it names (or the line's first ones), as the engine does. Returns the
    /// line's kit mark.
    fn consume(
        &mut self,
        hold: u64,
        shard: u16,
        sku: &str,
        location: &str,
        qty: i64,
        serials: &[String],
    ) -> Option<KitRef> {
        let key = hold_key(hold, shard);
        let lines = self.holds.open.get_mut(&key)?;
        let mut kit = None;
        if let Some(i) = lines.iter().position(|l| l.sku == sku && l.location == location) {
            let line = &mut lines[i];
            kit = line.kit.clone().map(|(sku, qty)| KitRef { sku, qty, unit_price: line.kit_unit_price });
            let consumed = qty.min(line.qty);
            line.qty -= consumed;
            if serials.is_empty() {
                line.serials.drain(..(consumed as usize).min(line.serials.len()));
            } else {
                line.serials.retain(|s| !serials.contains(s));
            }
            if line.qty == 0 {
                lines.remove(i);
            }
        }
        if lines.is_empty() {
            self.holds.take(hold, shard);
        }
        kit
    }
}

/// The UTC day of a time in milliseconds since the epoch, as days since 1970-01-01.
pub fn day_of(millis: u64) -> i64 {
    (millis / 86_400_000) as i64
}

/// A day number as a date.
pub fn date_of_day(day: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(day * 86_400, 0).expect("day in range").date_naive()
}

/// Rows of a chunk, kept apart per UTC day of `recorded_at` (the `date=` partition).
#[derive(Default)]
pub struct DayRows {
    pub days: HashMap<i64, MovementBuilder>,
    /// Rows the first day's builder is sized for (growing a builder copies its columns).
    capacity: usize,
}

impl DayRows {
    /// Sized for a chunk of `rows` rows, most of which fall on one day.
    pub fn with_capacity(rows: usize) -> DayRows {
        DayRows { days: HashMap::new(), capacity: rows }
    }

    pub fn builder_for(&mut self, recorded_at: u64) -> &mut MovementBuilder {
        let capacity = std::mem::take(&mut self.capacity);
        self.days.entry(day_of(recorded_at)).or_insert_with(|| MovementBuilder::with_capacity(capacity))
    }

    pub fn rows(&self) -> usize {
        self.days.values().map(|b| b.rows()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use engine::core::{Line, Reason};

    fn mv(kind: MovementKind) -> Movement {
        Movement { key: None, channel: "web".into(), reference: None, occurred_at: None, kind }
    }

    fn level(sku: &str, loc: &str, on_hand: i64, reserved: i64) -> LevelView {
        LevelView {
            sku: sku.into(),
            location: loc.into(),
            on_hand,
            reserved,
            unsellable: 0,
            incoming: 0,
            safety_stock: 0,
            available: on_hand - reserved,
        }
    }

    #[test]
    fn a_commit_sells_what_is_left_of_its_hold_on_its_shard() {
        let mut c = Converter::default();
        let mut b = MovementBuilder::new();
        let reserve = mv(MovementKind::Reserve {
            hold: 0,
            lines: vec![
                Line {
                    sku: "A".into(),
                    location: "s1".into(),
                    qty: 5,
                    unit_price: Some(300),
                    kit: None,
                    units: engine::core::Units::ANY,
                },
                Line {
                    sku: "B".into(),
                    location: "s1".into(),
                    qty: 2,
                    unit_price: None,
                    kit: None,
                    units: engine::core::Units::ANY,
                },
            ],
            expires_at: 10,
        });
        let fx = Effects { levels: vec![level("A", "s1", 10, 5), level("B", "s1", 4, 2)], ..Effects::default() };
        fn rec<'a>(seq: u64, m: &'a Movement, o: &'a Outcome, fx: &'a Effects) -> RecordIn<'a> {
            RecordIn { seq, shard: 1, recorded_at: 1000, movement: m, outcome: o, effects: fx }
        }
        let (ok, none) = (Ok(Detail::None), Effects::default());
        let held = Ok(Detail::Hold(77));
        c.convert(&rec(1, &reserve, &held, &fx), &mut b);
        // Sell 2 of A against the hold: 3 left.
        let sell = mv(MovementKind::Sell {
            sku: "A".into(),
            location: "s1".into(),
            qty: 2,
            unit_price: Some(300),
            hold: Some(77),
            allow_negative: false,
            units: engine::core::Units::ANY,
        });
        c.convert(&rec(2, &sell, &ok, &none), &mut b);
        // A commit on another shard knows nothing of this part.
        let commit = mv(MovementKind::Commit { hold: 77 });
        let other = RecordIn { shard: 0, ..rec(3, &commit, &ok, &none) };
        c.convert(&other, &mut b);
        c.convert(&rec(4, &commit, &ok, &none), &mut b);
        // A rejected commit changes nothing.
        let rejected = Err(Reason::UnknownHold);
        c.convert(&rec(5, &commit, &rejected, &none), &mut b);
        assert!(c.holds.open.is_empty());
        let batch = b.finish();
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let seqs: Vec<u64> = col("seq").as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
        assert_eq!(seqs, vec![1, 1, 2, 3, 4, 4, 5]);
        let qty = col("qty");
        let qty: &Int64Array = qty.as_primitive();
        assert_eq!(qty.iter().collect::<Vec<_>>(), vec![Some(5), Some(2), Some(2), None, Some(3), Some(2), None]);
        let change = col("on_hand_change");
        let change: &Int64Array = change.as_primitive();
        assert_eq!(
            change.iter().collect::<Vec<_>>(),
            vec![Some(0), Some(0), Some(-2), Some(0), Some(-3), Some(-2), Some(0)]
        );
        let after = col("reserved_after");
        let after: &Int64Array = after.as_primitive();
        assert_eq!(after.iter().take(2).collect::<Vec<_>>(), vec![Some(5), Some(2)]);
    }

    fn lot(sku: &str, code: &str, on_hand: i64, reserved: i64) -> LotView {
        LotView {
            sku: sku.into(),
            location: "dc".into(),
            lot: code.into(),
            expires_at: 5_000,
            on_hand,
            reserved,
            expired: false,
        }
    }

    #[test]
    fn lot_changes_are_differences_and_unknown_after_a_gap() {
        // (lots after the record, changes expected with a complete history, after a gap)
        type Case = (Vec<LotView>, Vec<Option<(i64, i64)>>, Vec<Option<(i64, i64)>>);
        let cases: Vec<Case> = vec![
            (vec![lot("A", "L1", 10, 0)], vec![Some((10, 0))], vec![None]),
            (vec![lot("A", "L1", 10, 4)], vec![Some((0, 4))], vec![Some((0, 4))]),
            (
                vec![lot("A", "L1", 6, 0), lot("A", "L2", 3, 0)],
                vec![Some((-4, -4)), Some((3, 0))],
                vec![Some((-4, -4)), None],
            ),
            // Emptied: dropped by the engine, and known to be empty only with a complete history.
            (vec![lot("A", "L1", 0, 0)], vec![Some((-6, 0))], vec![Some((-6, 0))]),
            (vec![lot("A", "L1", 2, 0)], vec![Some((2, 0))], vec![None]),
        ];
        let (mut complete, mut after_gap) = (Lots::new_history(), Lots::default());
        for (views, want_complete, want_after_gap) in cases {
            assert_eq!(complete.apply(&views), want_complete, "{views:?}");
            assert_eq!(after_gap.apply(&views), want_after_gap, "{views:?}");
        }
        assert_eq!(complete.live.len(), 2);
    }

    #[test]
    fn the_converter_state_survives_a_commit_marker_and_old_markers_read_as_unknown_lots() {
        let mut lots = Lots::new_history();
        lots.apply(&[lot("A", "L1", 7, 2), lot("B", "L9", 1, 0)]);
        let mut holds = Holds::default();
        let line = HeldLine {
            sku: "A".into(),
            location: "dc".into(),
            qty: 2,
            unit_price: None,
            lot: Some("L1".into()),
            serials: Vec::new(),
            kit: Some(("GIFT".into(), 1)),
            kit_unit_price: Some(1999),
        };
        holds.open.insert(hold_key(9, 1), vec![line]);
        holds.channels.insert(hold_key(9, 1), "pos".into());
        let state = crate::sink::CommitState { holds, lots, ..Default::default() };
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains(r#""live":[["A","dc","L1",7,2],["B","dc","L9",1,0]]"#), "{json}");
        assert!(json.contains(r#""kit":["GIFT",1],"kit_unit_price":1999"#), "{json}");
        assert_eq!(serde_json::from_str::<crate::sink::CommitState>(&json).unwrap(), state);
        // A marker written before lots and kits were tracked.
        let old = r#"{"format":1,"first_seq":1,"last_seq":5,"files":[],"rows":5,"rows_total":5,"history_starts_at":1,
            "written_at_ms":0,"source":"x","holds":{"open":{"3/0":[{"sku":"A","location":"dc","qty":1,"unit_price":null}]}}}"#;
        let old: crate::sink::CommitState = serde_json::from_str(old).unwrap();
        assert!(!old.lots.complete && old.lots.live.is_empty());
        assert_eq!(old.holds.open["3/0"][0].kit, None);
        // A marker written before the kit's price was carried: the mark, no price.
        let no_price = r#"{"sku":"A","location":"dc","qty":2,"unit_price":null,"kit":["GIFT",1]}"#;
        let line: HeldLine = serde_json::from_str(no_price).unwrap();
        assert_eq!((line.kit, line.kit_unit_price), (Some(("GIFT".into(), 1)), None));
    }

    #[test]
    fn a_sell_against_a_kit_hold_carries_the_kit_and_takes_its_serials() {
        let mut c = Converter::default();
        let mut b = MovementBuilder::new();
        let serials = |s: &[&str]| engine::core::Units::serials(s);
        let kit = Some(KitRef { sku: "GIFT".into(), qty: 3, unit_price: Some(1999) });
        let lines = vec![Line {
            sku: "A".into(),
            location: "dc".into(),
            qty: 3,
            unit_price: None,
            kit,
            units: serials(&["a", "b", "c"]),
        }];
        let held = Ok(Detail::Hold(40));
        let none = Effects::default();
        let reserve = mv(MovementKind::Reserve { hold: 40, lines, expires_at: 10 });
        fn rec<'a>(seq: u64, m: &'a Movement, o: &'a Outcome, fx: &'a Effects) -> RecordIn<'a> {
            RecordIn { seq, shard: 0, recorded_at: 1, movement: m, outcome: o, effects: fx }
        }
        c.convert(&rec(1, &reserve, &held, &none), &mut b);
        let ok = Ok(Detail::None);
        // Sells one without naming it (the first held: "a"), then "c".
        for (seq, named) in [(2, vec![]), (3, vec!["c"])] {
            let sell = MovementKind::Sell {
                sku: "A".into(),
                location: "dc".into(),
                qty: 1,
                unit_price: Some(10),
                hold: Some(40),
                allow_negative: false,
                units: serials(&named),
            };
            c.convert(&rec(seq, &mv(sell), &ok, &none), &mut b);
        }
        assert_eq!(c.holds.open[&hold_key(40, 0)][0].serials, ["b"]);
        let commit = Movement { channel: "erp".into(), ..mv(MovementKind::Commit { hold: 40 }) };
        c.convert(&rec(4, &commit, &ok, &none), &mut b);
        assert!(c.holds.open.is_empty() && c.holds.channels.is_empty());
        let batch = b.finish();
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let kits = col("kit");
        let kits: Vec<Option<&str>> = kits.as_string::<i32>().iter().collect();
        assert_eq!(kits, vec![Some("GIFT"); 4]);
        let prices = col("kit_unit_price");
        let prices: &Int64Array = prices.as_primitive();
        assert_eq!(prices.iter().collect::<Vec<_>>(), vec![Some(1999); 4], "the kit's price on every row");
        let channels = col("channel");
        let channels: Vec<Option<&str>> = channels.as_string::<i32>().iter().collect();
        assert_eq!(channels, vec![Some("web"); 4], "the commit sells through the hold's channel");
        let listed = col("serials");
        let listed = listed.as_list::<i32>();
        let commit_serials = listed.value(3);
        assert_eq!(commit_serials.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("b")]);
    }
}
