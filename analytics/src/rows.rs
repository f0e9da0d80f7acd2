//! Turning log records into `movements` rows: one row per line of a movement, with the level
//! after it. Pure: no I/O, no clock; the only state is the open holds, so that a `commit` can be
//! written as the lines (SKU, location, quantity, price) it sells.
//!
//! Architecture invariant: the rows of a record depend only on the record and on the holds
//! state before it, and that state is saved with every commit marker, so a restart produces the
//! same rows as an uninterrupted run.

use crate::schema::MOVEMENTS;
use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    UInt16Builder, UInt64Builder,
};
use engine::core::{AdjustReason, Detail, Effects, LevelView, Movement, MovementKind, Outcome, ReturnCondition};
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
}

/// Open holds by (hold id, shard): a multi-shard hold is logged as one part per shard, and each
/// shard's commit sells its own part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    pub open: BTreeMap<String, Vec<HeldLine>>,
}

fn hold_key(hold: u64, shard: u16) -> String {
    format!("{hold}/{shard}")
}

impl Holds {
    fn take(&mut self, hold: u64, shard: u16) -> Option<Vec<HeldLine>> {
        self.open.remove(&hold_key(hold, shard))
    }
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
    rows: usize,
}

impl Default for MovementBuilder {
    fn default() -> Self {
        Self::new()
    }
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
            rows: 0,
        }
    }

    /// Rows appended since the last [`MovementBuilder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn push(&mut self, r: &RecordIn<'_>, alerts: Option<&str>, row: Row<'_>) {
        let m = r.movement;
        self.seq.append_value(r.seq);
        self.line.append_value(row.line);
        self.shard.append_value(r.shard);
        self.recorded_at.append_value(r.recorded_at as i64);
        self.occurred_at.append_option(m.occurred_at.map(|t| t as i64));
        self.kind.append_value(m.kind.name());
        self.channel.append_value(&m.channel);
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
        self.rows = 0;
        RecordBatch::try_new(MOVEMENTS.clone(), columns).expect("columns match the movements schema")
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
            format!("{kind}:{}@{}", a.sku, a.location)
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

/// Converts records to rows, in sequence order, keeping the open holds.
#[derive(Default)]
pub struct Converter {
    pub holds: Holds,
    /// Accepted `set_settings` since the last [`Converter::take_settings`]: (seq, sku, location, settings).
    pub settings: Vec<(u64, String, String, engine::core::Settings)>,
}

impl Converter {
    pub fn new(holds: Holds) -> Converter {
        Converter { holds, settings: Vec::new() }
    }

    /// The settings changes collected since the last call.
    pub fn take_settings(&mut self) -> Vec<(u64, String, String, engine::core::Settings)> {
        std::mem::take(&mut self.settings)
    }

    /// Appends the rows of one record to `out` and updates the open holds.
    pub fn convert(&mut self, r: &RecordIn<'_>, out: &mut MovementBuilder) {
        let ok = r.outcome.is_ok();
        let alerts = alerts_text(r.effects);
        let alerts = alerts.as_deref();
        let mut push = |row: Row<'_>| out.push(r, alerts, row);
        match &r.movement.kind {
            MovementKind::Receive { sku, location, qty, unit_cost, units: _ } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*qty),
                on_hand_change: Some(*qty),
                unit_cost: *unit_cost,
                ..Row::default()
            }),
            MovementKind::Expect { sku, location, qty } => {
                push(Row { sku: Some(sku), location: Some(location), qty: Some(*qty), ..Row::default() })
            }
            MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units: _ } => {
                if ok {
                    if let Some(h) = hold {
                        self.consume(*h, r.shard, sku, location, *qty);
                    }
                }
                push(Row {
                    sku: Some(sku),
                    location: Some(location),
                    qty: Some(*qty),
                    on_hand_change: Some(-qty),
                    unit_price: *unit_price,
                    hold: *hold,
                    allow_negative: Some(*allow_negative),
                    ..Row::default()
                })
            }
            MovementKind::Return { sku, location, qty, condition, unit_price, units: _ } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*qty),
                on_hand_change: Some(*qty),
                unit_price: *unit_price,
                return_condition: Some(match condition {
                    ReturnCondition::Restock => "restock",
                    ReturnCondition::Damaged => "damaged",
                }),
                ..Row::default()
            }),
            MovementKind::Adjust { sku, location, delta, reason, allow_negative, units: _ } => push(Row {
                sku: Some(sku),
                location: Some(location),
                qty: Some(*delta),
                on_hand_change: Some(*delta),
                adjust_reason: Some(adjust_reason(*reason)),
                allow_negative: Some(*allow_negative),
                ..Row::default()
            }),
            MovementKind::Count { sku, location, counted, units: _ } => {
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
                    ..Row::default()
                })
            }
            MovementKind::Transfer { sku, from, to, qty, units: _ } => {
                push(Row {
                    line: 0,
                    sku: Some(sku),
                    location: Some(from),
                    other_location: Some(to),
                    qty: Some(*qty),
                    on_hand_change: Some(-qty),
                    ..Row::default()
                });
                push(Row {
                    line: 1,
                    sku: Some(sku),
                    location: Some(to),
                    other_location: Some(from),
                    qty: Some(*qty),
                    on_hand_change: Some(*qty),
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
                        })
                        .collect();
                    self.holds.open.insert(hold_key(id, r.shard), held);
                }
            }
            MovementKind::Commit { hold } | MovementKind::Release { hold } => {
                let is_commit = matches!(r.movement.kind, MovementKind::Commit { .. });
                let lines = if ok { self.holds.take(*hold, r.shard) } else { None };
                match lines {
                    Some(lines) if !lines.is_empty() => {
                        for (i, l) in lines.iter().enumerate() {
                            push(Row {
                                line: i as u16,
                                sku: Some(&l.sku),
                                location: Some(&l.location),
                                qty: Some(l.qty),
                                on_hand_change: Some(if is_commit { -l.qty } else { 0 }),
                                unit_price: l.unit_price,
                                hold: Some(*hold),
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
            MovementKind::Expire { .. }
            | MovementKind::Allocate { .. }
            | MovementKind::SetSkuSettings { .. }
            | MovementKind::CompleteCommit { .. } => push(Row::default()),
        }
        // Holds dropped by expiry (or closed by a sell that consumed their last line).
        if ok {
            for h in &r.effects.holds_closed {
                self.holds.take(*h, r.shard);
            }
        }
    }

    fn consume(&mut self, hold: u64, shard: u16, sku: &str, location: &str, qty: i64) {
        let key = hold_key(hold, shard);
        let Some(lines) = self.holds.open.get_mut(&key) else { return };
        if let Some(i) = lines.iter().position(|l| l.sku == sku && l.location == location) {
            lines[i].qty -= qty.min(lines[i].qty);
            if lines[i].qty == 0 {
                lines.remove(i);
            }
        }
        if lines.is_empty() {
            self.holds.open.remove(&key);
        }
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
}
