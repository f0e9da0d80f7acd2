//! Model test of the core state machine: random movement sequences go to `ShardState::apply` and
//! to a plain reference model written from `design/domain.md` and `docs/complex-inventory.md`;
//! after every step the outcome, the effects (level views, alerts, closed holds, lot views),
//! every level, the open holds and the remembered idempotency keys must agree, and the domain
//! invariants must hold.
//!
//! Complex inventory is generated and compared too: lots with expiries (FEFO, expired lots, the
//! expiry record's warnings and expiries), serial numbers (SKU C is often serial-tracked from the
//! start), channel allocations, SKU settings (tracking, warnings, kits), holds split over shards
//! and `complete_commit`. The comparison reads `level_detail`, `available_for_channel`, `serial`,
//! `sku_settings`, `all_sku_settings`, `committed_split_holds` and the holds of `snapshot()` (down
//! to their lots, serial numbers and allocated units). Not generated: kit expansion (the engine's,
//! not the core's), the per-level limits of 64 lots and 16 allocations, and `EXPIRE_HOLDS_MAX`.
//!
//! The reference model is deliberately naive: `BTreeMap`s of strings, a `Vec` of keys, and
//! all-or-none by working on a clone of the whole model and keeping it only when the movement
//! is accepted. It shares no code with `engine/src/core/shard.rs`.
//!
//! Assumption: the shard's `now` never goes backwards within a sequence (the tests advance it
//! by random non-negative steps).
//!
//! Runs 200 cases of up to 200 commands by default (a few seconds in a debug build);
//! `PERPETUA_SLOW_TESTS=1` runs 4000 cases of up to 400 commands (minutes). With `--nocapture`,
//! `the_generators_reach_every_rule` prints how often each outcome, alert and boundary was hit.

use engine::core::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

const T0: Millis = 1_700_000_000_000;
const SKUS: [&str; 3] = ["A", "B", "C"];
const LOCATIONS: [&str; 2] = ["dc", "store"];
/// Lot codes the generators use (each SKU's lot keeps the expiry it first had).
const LOTS: [&str; 6] = ["L1", "L2", "L3", "L4", "L5", "L6"];
/// Serial numbers the generators use (per SKU).
const SERIALS: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
/// Channels that allocations name and movements come from.
const CHANNELS: [&str; 3] = ["web", "pos", "amazon"];
/// A hold id that no reservation ever gets.
const UNKNOWN_HOLD: HoldId = (0xFFFF_FFFF << HOLD_SHARD_BITS) | 1;

type LevelKey = (String, String);
/// An open hold as `ShardState::holds` lists it: (id, expires_at, lines as (sku, location, qty)).
type OpenHold = (HoldId, Millis, Vec<(String, String, Qty)>);

fn slow() -> bool {
    std::env::var("PERPETUA_SLOW_TESTS").is_ok_and(|v| v == "1")
}

fn steps_max() -> usize {
    if slow() {
        400
    } else {
        200
    }
}

fn config() -> Config {
    // Explicit so the default run does not depend on PROPTEST_CASES.
    Config { cases: if slow() { 4000 } else { 200 }, ..Config::default() }
}

// ================================================================================================
// The reference model
// ================================================================================================

/// One lot of one level.
#[derive(Clone, Debug, PartialEq)]
struct MLot {
    expires_at: Millis,
    on_hand: Qty,
    reserved: Qty,
    /// The expiry record marked it expired: its units are `unsellable`.
    expired: bool,
    /// Its `lot_expiring` alert was raised.
    warned: bool,
}

impl MLot {
    fn free(&self) -> Qty {
        self.on_hand - self.reserved
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct MLevel {
    on_hand: Qty,
    reserved: Qty,
    unsellable: Qty,
    incoming: Qty,
    settings: Settings,
    /// A reorder alert was raised and `available` has not risen above the point since.
    reorder_alerted: bool,
    /// An out-of-stock alert was raised and `available` has not risen above zero since.
    out_of_stock_alerted: bool,
    /// Lots by code (a lot with no units and no reservation is dropped).
    lots: BTreeMap<String, MLot>,
    /// (channel, units still ring-fenced), in the order the channels were first allocated.
    allocations: Vec<(String, Qty)>,
}

impl MLevel {
    fn available(&self) -> Qty {
        self.on_hand - self.reserved - self.unsellable - self.settings.safety_stock
    }

    fn allocation(&self, channel: &str) -> Qty {
        self.allocations.iter().find(|a| a.0 == channel).map_or(0, |a| a.1)
    }

    /// `min(available, a_c + max(0, available - F))` (docs/complex-inventory.md).
    fn available_for(&self, channel: &str) -> Qty {
        if self.allocations.is_empty() {
            return self.available();
        }
        let fenced: Qty = self.allocations.iter().map(|a| a.1).sum();
        let available = self.available();
        available.min(self.allocation(channel) + (available - fenced).max(0))
    }

    /// Lots first to expire first: by (expiry, code).
    fn lots_fefo(&self) -> Vec<(String, MLot)> {
        let mut v: Vec<(String, MLot)> = self.lots.iter().map(|(c, l)| (c.clone(), l.clone())).collect();
        v.sort_by(|a, b| (a.1.expires_at, &a.0).cmp(&(b.1.expires_at, &b.0)));
        v
    }

    fn loose_on_hand(&self) -> Qty {
        self.on_hand - self.lots.values().map(|l| l.on_hand).sum::<Qty>()
    }

    fn loose_free(&self) -> Qty {
        self.loose_on_hand() - (self.reserved - self.lots.values().map(|l| l.reserved).sum::<Qty>())
    }
}

/// One line of an open hold.
#[derive(Clone, Debug, PartialEq)]
struct MLine {
    sku: String,
    location: String,
    /// Still held; > 0.
    qty: Qty,
    unit_price: Option<i64>,
    /// Lots held, in the order they are consumed.
    lots: Vec<(String, Qty)>,
    serials: Vec<String>,
    /// Units taken from the hold's channel's allocation.
    from_alloc: Qty,
    kit: Option<KitRef>,
}

#[derive(Clone, Debug, PartialEq)]
struct MHold {
    expires_at: Millis,
    /// The channel that placed it, if it took allocated units.
    channel: Option<String>,
    /// In the order of the reservation.
    lines: Vec<MLine>,
}

#[derive(Clone, Debug, PartialEq)]
struct MSerial {
    location: String,
    status: SerialStatus,
    history: Vec<SerialEvent>,
}

#[derive(Clone, Debug)]
struct MKey {
    key: String,
    /// The movement as the client sent it (a reservation's engine-assigned hold id zeroed).
    body: Movement,
    seen_at: Millis,
    seq: Seq,
    outcome: Outcome,
}

#[derive(Clone, Debug, Default)]
struct Model {
    last_seq: Seq,
    levels: BTreeMap<LevelKey, MLevel>,
    holds: BTreeMap<HoldId, MHold>,
    /// Remembered idempotency keys, oldest first.
    keys: Vec<MKey>,
    /// The expiry of every (SKU, lot code) ever received.
    lot_expiry: BTreeMap<(String, String), Millis>,
    /// SKU settings that differ from the default.
    sku_settings: BTreeMap<String, SkuSettings>,
    /// Every serial number ever seen, by (SKU, serial).
    serials: BTreeMap<(String, String), MSerial>,
    /// Split holds committed here: (when, hold), kept `SPLIT_COMMIT_KEEP_MS`.
    committed: BTreeSet<(Millis, HoldId)>,
}

/// A lot warning or expiry due: (when, level, lot code).
type LotDue = (Millis, LevelKey, String);

/// How long a shard remembers that it committed its part of a split hold (docs: 60 s).
const SPLIT_COMMIT_KEEP_MS: Millis = 60_000;

/// Which units a take uses.
#[derive(Debug, Default)]
struct MTake {
    lots: Vec<(String, Qty)>,
    from_alloc: Qty,
}

/// How units come in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Put {
    Receive,
    Return(ReturnCondition),
    Found,
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max
}

fn check_names(sku: &str, location: &str) -> Result<(), Reason> {
    if text_ok(sku, SKU_BYTES_MAX) && text_ok(location, LOCATION_BYTES_MAX) {
        Ok(())
    } else {
        Err(Reason::InvalidField)
    }
}

fn check_movement_qty(q: Qty) -> Result<(), Reason> {
    if (1..=MOVEMENT_QTY_MAX).contains(&q) {
        Ok(())
    } else {
        Err(Reason::InvalidQuantity)
    }
}

/// A level quantity, or `quantity_overflow` when its magnitude would pass `LEVEL_QTY_MAX`.
fn level_qty(v: i128) -> Result<Qty, Reason> {
    if v.abs() > LEVEL_QTY_MAX as i128 {
        Err(Reason::QuantityOverflow)
    } else {
        Ok(v as Qty)
    }
}

fn client_form(m: &Movement) -> Movement {
    let mut c = m.clone();
    if let MovementKind::Reserve { hold, .. } = &mut c.kind {
        *hold = 0;
    }
    c
}

fn key_of(sku: &str, location: &str) -> LevelKey {
    (sku.to_string(), location.to_string())
}

fn unit_sizes(u: &Units) -> Result<(), Reason> {
    if u.lot.as_ref().is_some_and(|l| !text_ok(l, LOT_BYTES_MAX)) {
        return Err(Reason::InvalidField);
    }
    if u.serials.len() > SERIALS_PER_LINE_MAX {
        return Err(Reason::InvalidSerials);
    }
    if u.serials.iter().any(|s| !text_ok(s, SERIAL_BYTES_MAX)) {
        return Err(Reason::InvalidField);
    }
    Ok(())
}

/// What every movement must satisfy before anything else is looked at (field lengths, numbers of
/// lines and serial numbers): a movement failing it is refused and its key not remembered.
fn sizes(m: &Movement) -> Result<(), Reason> {
    let envelope_ok = m.key.iter().all(|k| text_ok(k, IDEMPOTENCY_KEY_BYTES_MAX))
        && text_ok(&m.channel, CHANNEL_BYTES_MAX)
        && m.reference.iter().all(|r| text_ok(r, REFERENCE_BYTES_MAX));
    if !envelope_ok {
        return Err(Reason::InvalidField);
    }
    match &m.kind {
        MovementKind::Receive { sku, location, units, .. }
        | MovementKind::Sell { sku, location, units, .. }
        | MovementKind::Return { sku, location, units, .. }
        | MovementKind::Adjust { sku, location, units, .. }
        | MovementKind::Count { sku, location, units, .. } => {
            check_names(sku, location)?;
            unit_sizes(units)
        }
        MovementKind::Expect { sku, location, .. } | MovementKind::SetSettings { sku, location, .. } => {
            check_names(sku, location)
        }
        MovementKind::Transfer { sku, from, to, units, .. } => {
            check_names(sku, from)?;
            check_names(sku, to)?;
            unit_sizes(units)
        }
        MovementKind::Reserve { lines, .. } => {
            if lines.len() > HOLD_LINES_MAX {
                return Err(Reason::InvalidLines);
            }
            if lines.iter().map(|l| l.units.serials.len()).sum::<usize>() > SERIALS_PER_LINE_MAX {
                return Err(Reason::InvalidSerials);
            }
            for l in lines {
                check_names(&l.sku, &l.location)?;
                unit_sizes(&l.units)?;
                if l.kit.as_ref().is_some_and(|k| !text_ok(&k.sku, SKU_BYTES_MAX)) {
                    return Err(Reason::InvalidField);
                }
            }
            Ok(())
        }
        MovementKind::Allocate { sku, location, channel, .. } => {
            check_names(sku, location)?;
            if text_ok(channel, CHANNEL_BYTES_MAX) {
                Ok(())
            } else {
                Err(Reason::InvalidField)
            }
        }
        MovementKind::SetSkuSettings { sku, settings } => {
            if !text_ok(sku, SKU_BYTES_MAX) {
                return Err(Reason::InvalidField);
            }
            if settings.components.len() > KIT_COMPONENTS_MAX {
                return Err(Reason::InvalidKit);
            }
            if settings.components.iter().any(|c| !text_ok(&c.sku, SKU_BYTES_MAX)) {
                return Err(Reason::InvalidField);
            }
            Ok(())
        }
        MovementKind::Commit { .. }
        | MovementKind::Release { .. }
        | MovementKind::Expire { .. }
        | MovementKind::CompleteCommit { .. } => Ok(()),
    }
}

/// A hold id naming parts on more than one shard.
fn is_split(hold: HoldId) -> bool {
    hold_shard_mask(hold).count_ones() > 1
}

impl Model {
    /// The model's answer to one movement: what `ShardState::apply` must return and append.
    fn apply(&mut self, now: Millis, seq: Seq, m: &Movement) -> (Applied, Effects) {
        if let Err(reason) = sizes(m) {
            // Malformed movements are refused before keys are looked at: the key is not remembered.
            self.last_seq = seq;
            return (Applied::Recorded(Err(reason)), Effects::default());
        }
        if let Some(key) = &m.key {
            if let Some(k) = self.keys.iter().find(|k| &k.key == key) {
                let applied = if k.body == client_form(m) {
                    Applied::Retry { seq: k.seq, outcome: k.outcome }
                } else {
                    Applied::Mismatch
                };
                return (applied, Effects::default());
            }
        }
        let mut next = self.clone();
        let mut fx = Effects::default();
        let outcome = next.decide(now, seq, m, &mut fx);
        if outcome.is_ok() {
            *self = next;
        } else {
            fx = Effects::default();
        }
        if let Some(key) = &m.key {
            self.keys.push(MKey { key: key.clone(), body: client_form(m), seen_at: now, seq, outcome });
        }
        self.last_seq = seq;
        (Applied::Recorded(outcome), fx)
    }

    /// A level as it stands, or an all-zero one if it was never touched (nothing available).
    fn level(&self, sku: &str, location: &str) -> MLevel {
        self.levels.get(&key_of(sku, location)).cloned().unwrap_or_default()
    }

    fn has_level(&self, sku: &str, location: &str) -> bool {
        self.levels.contains_key(&key_of(sku, location))
    }

    fn level_mut(&mut self, sku: &str, location: &str) -> &mut MLevel {
        self.levels.entry(key_of(sku, location)).or_default()
    }

    fn settings_of(&self, sku: &str) -> SkuSettings {
        self.sku_settings.get(sku).cloned().unwrap_or_default()
    }

    fn tracked(&self, sku: &str) -> bool {
        self.settings_of(sku).serial_tracked
    }

    /// Kits have no stock of their own.
    fn stocked(&self, sku: &str) -> Result<(), Reason> {
        if self.settings_of(sku).is_kit() {
            Err(Reason::KitNotStocked)
        } else {
            Ok(())
        }
    }

    /// Serial numbers: exactly `qty` distinct ones for a serial-tracked SKU (which has no lots),
    /// none otherwise.
    fn check_units(&self, sku: &str, units: &Units, qty: Qty) -> Result<(), Reason> {
        if !self.tracked(sku) {
            return if units.serials.is_empty() { Ok(()) } else { Err(Reason::InvalidSerials) };
        }
        if units.lot.is_some() || units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        let distinct: BTreeSet<&String> = units.serials.iter().collect();
        if units.serials.len() as i128 != qty as i128 || distinct.len() != units.serials.len() {
            return Err(Reason::InvalidSerials);
        }
        Ok(())
    }

    fn serial_status(&self, sku: &str, serial: &str) -> Option<SerialStatus> {
        self.serials.get(&key_of(sku, serial)).map(|s| s.status)
    }

    /// Each serial must be in stock at this location.
    fn serials_here(&self, sku: &str, location: &str, serials: &[String]) -> Result<(), Reason> {
        for serial in serials {
            match self.serials.get(&key_of(sku, serial)) {
                Some(s) if s.status == SerialStatus::InStock && s.location == location => {}
                _ => return Err(Reason::SerialNotInStock),
            }
        }
        Ok(())
    }

    /// A serial number changes state (and, if given, location); the movement goes in its history.
    #[allow(clippy::too_many_arguments)]
    fn serial_moved(
        &mut self,
        sku: &str,
        serial: &str,
        status: SerialStatus,
        location: Option<&str>,
        seq: Seq,
        now: Millis,
        what: &str,
    ) {
        let s = self.serials.entry(key_of(sku, serial)).or_insert_with(|| MSerial {
            location: location.unwrap_or_default().to_string(),
            status,
            history: Vec::new(),
        });
        s.status = status;
        if let Some(location) = location {
            s.location = location.to_string();
        }
        s.history.push(SerialEvent { seq, at: now, what: what.to_string(), location: s.location.clone() });
    }

    /// A level changed: raise its alerts once per crossing and report its new quantities.
    fn touched(&mut self, sku: &str, location: &str, fx: &mut Effects) {
        let l = self.levels.get_mut(&key_of(sku, location)).expect("touched level exists");
        let available = l.available();
        let at_or_below_point = match l.settings.reorder_point {
            Some(point) => available <= point,
            None => false,
        };
        if at_or_below_point && !l.reorder_alerted {
            fx.alerts.push(Alert {
                kind: AlertKind::Reorder,
                sku: sku.to_string(),
                location: location.to_string(),
                available,
                reorder_point: l.settings.reorder_point,
                lot: None,
            });
        }
        l.reorder_alerted = at_or_below_point;
        let out_of_stock = available <= 0;
        if out_of_stock && !l.out_of_stock_alerted {
            fx.alerts.push(Alert {
                kind: AlertKind::OutOfStock,
                sku: sku.to_string(),
                location: location.to_string(),
                available,
                reorder_point: l.settings.reorder_point,
                lot: None,
            });
        }
        l.out_of_stock_alerted = out_of_stock;
        fx.levels.push(model_view(sku, location, l));
    }

    /// A lot changed: report it (once per movement, as it ends up) and drop it once it has no
    /// units and no reservation.
    fn lot_touched(&mut self, sku: &str, location: &str, code: &str, fx: &mut Effects) {
        let l = self.levels.get_mut(&key_of(sku, location)).expect("level exists");
        let lot = l.lots.get(code).expect("lot exists").clone();
        if lot.on_hand == 0 && lot.reserved == 0 {
            l.lots.remove(code);
        }
        let view = lot_view(sku, location, code, &lot);
        match fx.lots.iter_mut().find(|v| (&v.sku, &v.location, &v.lot) == (&view.sku, &view.location, &view.lot)) {
            Some(v) => *v = view,
            None => fx.lots.push(view),
        }
    }

    /// Which units a take of `qty` uses: the named lot, or FEFO over the lots still usable after
    /// `usable_after`, then loose units; the channel's allocation first.
    #[allow(clippy::too_many_arguments)]
    fn plan_take(
        &self,
        sku: &str,
        location: &str,
        qty: Qty,
        lot: Option<&str>,
        usable_after: Millis,
        channel: Option<&str>,
        allow_negative: bool,
        expired_ok: bool,
    ) -> Result<MTake, Reason> {
        let l = self.level(sku, location);
        let mut take = MTake::default();
        let mut named_expired = false;
        if let Some(code) = lot {
            let named = l.lots.get(code).ok_or(Reason::UnknownLot)?;
            if (named.expired || named.expires_at <= usable_after) && !expired_ok {
                return Err(Reason::LotExpired);
            }
            if named.free() < qty {
                return Err(Reason::InsufficientStock);
            }
            take.lots.push((code.to_string(), qty));
            named_expired = named.expired;
        }
        let available = match channel {
            Some(c) => l.available_for(c),
            None => l.available(),
        };
        // Units of an expired lot are unsellable already: writing them off needs no `available`.
        if !allow_negative && !named_expired && available < qty {
            return Err(Reason::InsufficientStock);
        }
        if lot.is_none() {
            let mut rest = qty;
            for (code, lot) in l.lots_fefo() {
                if rest == 0 {
                    break;
                }
                if lot.expired || lot.expires_at <= usable_after {
                    continue;
                }
                let n = rest.min(lot.free());
                if n > 0 {
                    take.lots.push((code, n));
                    rest -= n;
                }
            }
            if rest > 0 && !allow_negative && l.loose_free() < rest {
                return Err(Reason::InsufficientStock);
            }
        }
        if let Some(c) = channel {
            take.from_alloc = qty.min(l.allocation(c));
        }
        Ok(take)
    }

    /// Takes units out of lots (and their reservations, if `held`); units of an expired lot leave
    /// `unsellable` too.
    fn take_lots(&mut self, sku: &str, location: &str, lots: &[(String, Qty)], held: bool, fx: &mut Effects) {
        for (code, n) in lots {
            let l = self.level_mut(sku, location);
            let lot = l.lots.get_mut(code).expect("lot exists");
            lot.on_hand -= n;
            if held {
                lot.reserved -= n;
            }
            // Held units of an expired lot were never counted unsellable (only its free ones).
            if lot.expired && !held {
                l.unsellable = (l.unsellable - n).max(0);
            }
            self.lot_touched(sku, location, code, fx);
        }
    }

    fn use_allocation(&mut self, sku: &str, location: &str, channel: &str, n: Qty) {
        if let Some(a) = self.level_mut(sku, location).allocations.iter_mut().find(|a| a.0 == channel) {
            a.1 -= n;
        }
    }

    /// A sale without a hold (`status` Sold) or a write-off (negative adjustment, WrittenOff).
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        now: Millis,
        seq: Seq,
        what: &str,
        sku: &str,
        location: &str,
        qty: Qty,
        units: &Units,
        channel: Option<&str>,
        allow_negative: bool,
        status: SerialStatus,
        fx: &mut Effects,
    ) -> Outcome {
        if units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        if !self.has_level(sku, location) {
            if units.lot.is_some() {
                return Err(Reason::UnknownLot);
            }
            if !units.serials.is_empty() {
                return Err(Reason::SerialNotInStock);
            }
            if !allow_negative {
                return Err(Reason::InsufficientStock);
            }
        }
        self.serials_here(sku, location, &units.serials)?;
        let write_off = status == SerialStatus::WrittenOff;
        let take = self.plan_take(sku, location, qty, units.lot.as_deref(), now, channel, allow_negative, write_off)?;
        let l = self.level_mut(sku, location);
        l.on_hand = level_qty(l.on_hand as i128 - qty as i128)?;
        self.take_lots(sku, location, &take.lots, false, fx);
        if let Some(c) = channel {
            self.use_allocation(sku, location, c, take.from_alloc);
        }
        for serial in &units.serials {
            self.serial_moved(sku, serial, status, None, seq, now, what);
        }
        self.touched(sku, location, fx);
        Ok(Detail::None)
    }

    /// Units come in: receive, return, found (positive adjustment).
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        now: Millis,
        seq: Seq,
        what: &str,
        sku: &str,
        location: &str,
        qty: Qty,
        units: &Units,
        how: Put,
        from_purchase_order: bool,
        fx: &mut Effects,
    ) -> Outcome {
        check_names(sku, location)?;
        check_movement_qty(qty)?;
        self.stocked(sku)?;
        self.check_units(sku, units, qty)?;
        for serial in &units.serials {
            match (how, self.serial_status(sku, serial)) {
                (_, Some(SerialStatus::InStock | SerialStatus::Reserved(_))) => return Err(Reason::SerialInStock),
                (Put::Return(_), Some(SerialStatus::Sold)) => {}
                (Put::Return(_), _) => return Err(Reason::SerialNotSold),
                _ => {}
            }
        }
        let lot = match &units.lot {
            None if units.lot_expires_at.is_some() => return Err(Reason::InvalidLot),
            None => None,
            Some(code) => {
                let known = self.lot_expiry.get(&key_of(sku, code)).copied();
                let expires_at = match (known, units.lot_expires_at) {
                    (Some(k), Some(given)) if k != given => return Err(Reason::InvalidLot),
                    (Some(k), _) => k,
                    (None, Some(given)) => given,
                    (None, None) => return Err(Reason::InvalidLot),
                };
                if how == Put::Receive && expires_at <= now {
                    return Err(Reason::LotExpired);
                }
                Some((code.clone(), expires_at))
            }
        };
        let l = self.level_mut(sku, location);
        l.on_hand = level_qty(l.on_hand as i128 + qty as i128)?;
        if how == Put::Return(ReturnCondition::Damaged) {
            l.unsellable = level_qty(l.unsellable as i128 + qty as i128)?;
        }
        if from_purchase_order {
            l.incoming -= qty.min(l.incoming);
        }
        if let Some((code, expires_at)) = lot {
            let l = self.level_mut(sku, location);
            match l.lots.get(&code) {
                None if l.lots.len() >= LOTS_PER_LEVEL_MAX => return Err(Reason::InvalidLot),
                // Units put back into an expired lot are unsellable (damaged ones are already).
                Some(lot) if lot.expired && how != Put::Return(ReturnCondition::Damaged) => {
                    l.unsellable = level_qty(l.unsellable as i128 + qty as i128)?;
                }
                _ => {}
            }
            let lot = l.lots.entry(code.clone()).or_insert(MLot {
                expires_at,
                on_hand: 0,
                reserved: 0,
                expired: false,
                warned: false,
            });
            lot.on_hand += qty;
            self.lot_expiry.insert(key_of(sku, &code), expires_at);
            self.lot_touched(sku, location, &code, fx);
        }
        for serial in &units.serials {
            self.serial_moved(sku, serial, SerialStatus::InStock, Some(location), seq, now, what);
        }
        self.touched(sku, location, fx);
        Ok(Detail::None)
    }

    fn transfer(
        &mut self,
        now: Millis,
        seq: Seq,
        (sku, from, to): (&str, &str, &str),
        qty: Qty,
        units: &Units,
        fx: &mut Effects,
    ) -> Outcome {
        check_names(sku, from)?;
        check_names(sku, to)?;
        check_movement_qty(qty)?;
        if from == to {
            return Err(Reason::SameLocation);
        }
        self.stocked(sku)?;
        self.check_units(sku, units, qty)?;
        if units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        if !self.has_level(sku, from) {
            return Err(if units.lot.is_some() {
                Reason::UnknownLot
            } else if !units.serials.is_empty() {
                Reason::SerialNotInStock
            } else {
                Reason::InsufficientStock
            });
        }
        self.serials_here(sku, from, &units.serials)?;
        // Expired stock may be moved (to a disposal area) when its lot is named.
        let take = self.plan_take(sku, from, qty, units.lot.as_deref(), now, None, false, true)?;
        let dst = self.level_mut(sku, to);
        dst.on_hand = level_qty(dst.on_hand as i128 + qty as i128)?;
        let new_lots = take.lots.iter().filter(|(c, _)| !dst.lots.contains_key(c)).count();
        if dst.lots.len() + new_lots > LOTS_PER_LEVEL_MAX {
            return Err(Reason::InvalidLot);
        }
        let moved: Vec<(String, MLot, Qty)> = {
            let src = self.level(sku, from);
            take.lots.iter().map(|(c, n)| (c.clone(), src.lots[c].clone(), *n)).collect()
        };
        let src = self.level_mut(sku, from);
        src.on_hand -= qty;
        self.take_lots(sku, from, &take.lots, false, fx);
        for (code, src_lot, n) in moved {
            let dst = self.level_mut(sku, to);
            let lot = dst.lots.entry(code.clone()).or_insert(MLot {
                expires_at: src_lot.expires_at,
                on_hand: 0,
                reserved: 0,
                expired: false,
                warned: false,
            });
            let was_expired = lot.expired;
            lot.on_hand += n;
            if was_expired {
                // Units put into an expired lot are unsellable.
                dst.unsellable += n;
            } else if src_lot.expired {
                // Expired units stay expired: the lot at the destination expires with them.
                lot.expired = true;
                dst.unsellable += lot.free();
            }
            self.lot_touched(sku, to, &code, fx);
        }
        for serial in &units.serials {
            self.serial_moved(sku, serial, SerialStatus::InStock, Some(to), seq, now, "transfer");
        }
        self.touched(sku, from, fx);
        self.touched(sku, to, fx);
        Ok(Detail::None)
    }

    fn count(&mut self, sku: &str, location: &str, counted: Qty, units: &Units, fx: &mut Effects) -> Outcome {
        check_names(sku, location)?;
        if !(0..=MOVEMENT_QTY_MAX).contains(&counted) {
            return Err(Reason::InvalidQuantity);
        }
        self.stocked(sku)?;
        if self.tracked(sku) || !units.serials.is_empty() {
            return Err(Reason::InvalidSerials);
        }
        if units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        let Some(code) = &units.lot else {
            if !self.level(sku, location).lots.is_empty() {
                return Err(Reason::LotRequired);
            }
            let l = self.level_mut(sku, location);
            let variance = counted - l.on_hand;
            l.on_hand = counted;
            l.unsellable = l.unsellable.min(counted);
            self.touched(sku, location, fx);
            return Ok(Detail::Variance(variance));
        };
        let lot = self.level(sku, location).lots.get(code).cloned().ok_or(Reason::UnknownLot)?;
        let variance = counted - lot.on_hand;
        let l = self.level_mut(sku, location);
        l.on_hand = level_qty(l.on_hand as i128 + variance as i128)?;
        if lot.expired {
            l.unsellable = (l.unsellable + variance).max(0);
        }
        l.unsellable = l.unsellable.min(l.on_hand.max(0));
        l.lots.get_mut(code).expect("lot exists").on_hand = counted;
        self.lot_touched(sku, location, code, fx);
        self.touched(sku, location, fx);
        Ok(Detail::Variance(variance))
    }

    #[allow(clippy::too_many_arguments)]
    fn sell_from_hold(
        &mut self,
        now: Millis,
        seq: Seq,
        hold: HoldId,
        sku: &str,
        location: &str,
        qty: Qty,
        channel: &str,
        allow_negative: bool,
        units: &Units,
        fx: &mut Effects,
    ) -> Outcome {
        let h = self.holds.get(&hold).ok_or(Reason::UnknownHold)?;
        if now >= h.expires_at {
            return Err(Reason::HoldExpired);
        }
        if units.lot.is_some() || units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot); // the hold decides the lots
        }
        let i = h.lines.iter().position(|l| l.sku == sku && l.location == location).ok_or(Reason::HoldLineMissing)?;
        let line = h.lines[i].clone();
        let from_hold = qty.min(line.qty);
        let beyond_hold = qty - from_hold;
        if units.serials.iter().any(|s| !line.serials.contains(s)) {
            return Err(Reason::SerialNotInStock);
        }
        if !line.serials.is_empty() && beyond_hold > 0 {
            return Err(Reason::SerialNotInStock);
        }
        // The held lots, in order, for the units sold from the hold.
        let mut lots = Vec::new();
        let mut rest = from_hold;
        for (code, n) in &line.lots {
            if rest == 0 {
                break;
            }
            lots.push((code.clone(), rest.min(*n)));
            rest -= rest.min(*n);
        }
        // Units beyond the hold are a plain sale from the movement's channel.
        let beyond = if beyond_hold > 0 {
            self.plan_take(sku, location, beyond_hold, None, now, Some(channel), allow_negative, false)?
        } else {
            MTake::default()
        };
        let l = self.level_mut(sku, location);
        l.on_hand = level_qty(l.on_hand as i128 - qty as i128)?;
        l.reserved -= from_hold;
        self.take_lots(sku, location, &lots, true, fx);
        self.take_lots(sku, location, &beyond.lots, false, fx);
        self.use_allocation(sku, location, channel, beyond.from_alloc);
        let sold: Vec<String> = if units.serials.is_empty() {
            line.serials.iter().take(from_hold as usize).cloned().collect()
        } else {
            units.serials.clone()
        };
        let h = self.holds.get_mut(&hold).expect("hold exists");
        let line = &mut h.lines[i];
        line.qty -= from_hold;
        for (code, n) in &lots {
            line.lots.iter_mut().find(|l| &l.0 == code).expect("lot held").1 -= n;
        }
        line.lots.retain(|l| l.1 > 0);
        line.serials.retain(|s| !sold.contains(s));
        line.from_alloc = line.from_alloc.min(line.qty);
        if line.qty == 0 {
            h.lines.remove(i);
        }
        if h.lines.is_empty() {
            self.holds.remove(&hold);
            fx.holds_closed.push(hold);
        }
        for serial in &sold {
            self.serial_moved(sku, serial, SerialStatus::Sold, None, seq, now, "sell");
        }
        self.touched(sku, location, fx);
        Ok(Detail::None)
    }

    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &mut self,
        now: Millis,
        seq: Seq,
        hold: HoldId,
        channel: &str,
        lines: &[Line],
        expires_at: Millis,
        fx: &mut Effects,
    ) -> Outcome {
        if lines.is_empty() || lines.len() > HOLD_LINES_MAX {
            return Err(Reason::InvalidLines);
        }
        for line in lines {
            check_names(&line.sku, &line.location)?;
            check_movement_qty(line.qty)?;
        }
        let levels: BTreeSet<LevelKey> = lines.iter().map(|l| key_of(&l.sku, &l.location)).collect();
        if levels.len() != lines.len() {
            return Err(Reason::InvalidLines);
        }
        for line in lines {
            self.stocked(&line.sku)?;
            self.check_units(&line.sku, &line.units, line.qty)?;
            if line.units.lot_expires_at.is_some() {
                return Err(Reason::InvalidLot);
            }
        }
        if expires_at <= now {
            return Err(Reason::InvalidExpiry);
        }
        if self.holds.contains_key(&hold) {
            return Err(Reason::InvalidLines);
        }
        let mut takes = Vec::new();
        for line in lines {
            if !self.has_level(&line.sku, &line.location) {
                return Err(if line.units.lot.is_some() {
                    Reason::UnknownLot
                } else if !line.units.serials.is_empty() {
                    Reason::SerialNotInStock
                } else {
                    Reason::InsufficientStock
                });
            }
            self.serials_here(&line.sku, &line.location, &line.units.serials)?;
            // A hold never outlives what it holds: lots expiring by its expiry are not used.
            let lot = line.units.lot.as_deref();
            takes.push(self.plan_take(
                &line.sku,
                &line.location,
                line.qty,
                lot,
                expires_at,
                Some(channel),
                false,
                false,
            )?);
        }
        let took_allocated = takes.iter().any(|t| t.from_alloc > 0);
        let mut held = Vec::new();
        for (line, take) in lines.iter().zip(takes) {
            let (sku, location) = (&line.sku[..], &line.location[..]);
            self.level_mut(sku, location).reserved += line.qty;
            for (code, n) in &take.lots {
                self.level_mut(sku, location).lots.get_mut(code).expect("lot exists").reserved += n;
                self.lot_touched(sku, location, code, fx);
            }
            self.use_allocation(sku, location, channel, take.from_alloc);
            for serial in &line.units.serials {
                self.serial_moved(sku, serial, SerialStatus::Reserved(hold), None, seq, now, "reserve");
            }
            held.push(MLine {
                sku: line.sku.clone(),
                location: line.location.clone(),
                qty: line.qty,
                unit_price: line.unit_price,
                lots: take.lots,
                serials: line.units.serials.clone(),
                from_alloc: take.from_alloc,
                kit: line.kit.clone(),
            });
            self.touched(sku, location, fx);
        }
        let channel = took_allocated.then(|| channel.to_string());
        self.holds.insert(hold, MHold { expires_at, channel, lines: held });
        Ok(Detail::Hold(hold))
    }

    /// A commit (`sold`) or a release or expiry of a hold.
    fn drop_hold(&mut self, now: Millis, seq: Seq, hold: HoldId, sold: bool, fx: &mut Effects) {
        let h = self.holds.remove(&hold).expect("hold exists");
        if sold && is_split(hold) {
            self.committed.insert((now, hold));
        }
        for line in &h.lines {
            let (sku, location) = (&line.sku[..], &line.location[..]);
            let l = self.levels.get_mut(&key_of(sku, location)).expect("held level exists");
            l.reserved -= line.qty;
            if sold {
                l.on_hand -= line.qty;
                self.take_lots(sku, location, &line.lots, true, fx);
            } else {
                for (code, n) in &line.lots {
                    let l = self.level_mut(sku, location);
                    let lot = l.lots.get_mut(code).expect("held lot exists");
                    lot.reserved -= n;
                    // Released into a lot that expired meanwhile: the units are unsellable.
                    if lot.expired {
                        l.unsellable += n;
                    }
                    self.lot_touched(sku, location, code, fx);
                }
                // Allocated units go back to the allocation, if it still exists.
                if let Some(channel) = &h.channel {
                    if let Some(a) = self.level_mut(sku, location).allocations.iter_mut().find(|a| &a.0 == channel) {
                        a.1 += line.from_alloc;
                    }
                }
            }
            let (status, what) = if sold { (SerialStatus::Sold, "commit") } else { (SerialStatus::InStock, "release") };
            for serial in &line.serials {
                self.serial_moved(sku, serial, status, None, seq, now, what);
            }
            self.touched(sku, location, fx);
        }
        fx.holds_closed.push(hold);
    }

    fn allocate(&mut self, sku: &str, location: &str, channel: &str, qty: Qty, fx: &mut Effects) -> Outcome {
        check_names(sku, location)?;
        if !(0..=MOVEMENT_QTY_MAX).contains(&qty) {
            return Err(Reason::InvalidAllocation);
        }
        self.stocked(sku)?;
        let l = self.level_mut(sku, location);
        match l.allocations.iter().position(|a| a.0 == channel) {
            Some(i) if qty == 0 => {
                l.allocations.remove(i);
            }
            Some(i) => l.allocations[i].1 = qty,
            None if qty == 0 => {}
            None if l.allocations.len() >= ALLOCATIONS_PER_LEVEL_MAX => return Err(Reason::InvalidAllocation),
            None => l.allocations.push((channel.to_string(), qty)),
        }
        self.touched(sku, location, fx);
        Ok(Detail::None)
    }

    fn set_sku_settings(&mut self, sku: &str, new: &SkuSettings) -> Outcome {
        if new.is_kit() {
            if new.serial_tracked {
                return Err(Reason::InvalidKit);
            }
            for (i, c) in new.components.iter().enumerate() {
                let repeated = new.components[..i].iter().any(|d| d.sku == c.sku);
                if c.sku == sku || !(1..=KIT_COMPONENT_QTY_MAX).contains(&c.qty) || repeated {
                    return Err(Reason::InvalidKit);
                }
            }
        }
        let old = self.settings_of(sku);
        let has_stock = self.levels.iter().any(|((s, _), l)| {
            s == sku && (l.on_hand != 0 || l.reserved != 0 || l.incoming != 0 || !l.lots.is_empty())
        });
        let has_serials = self.serials.keys().any(|(s, _)| s == sku);
        if new.is_kit() && !old.is_kit() && (has_stock || has_serials) {
            return Err(Reason::InvalidKit);
        }
        if new.serial_tracked != old.serial_tracked && has_stock {
            return Err(Reason::InvalidSettings);
        }
        if *new == SkuSettings::default() {
            self.sku_settings.remove(sku);
        } else {
            self.sku_settings.insert(sku.to_string(), new.clone());
        }
        Ok(Detail::None)
    }

    /// When the `lot_expiring` alert of a lot is due, if ever.
    fn warning_due(&self, sku: &str, lot: &MLot) -> Option<Millis> {
        let days = self.settings_of(sku).expiry_warning_days?;
        (!lot.expired && !lot.warned).then(|| lot.expires_at.saturating_sub(days as Millis * DAY_MILLIS))
    }

    /// (due time, sku, location, lot) of the lot warnings and expiries due by `by`, in the order
    /// they are raised.
    fn lots_due(&self, by: Millis) -> (Vec<LotDue>, Vec<LotDue>) {
        let mut warnings = Vec::new();
        let mut expiries = Vec::new();
        for (k, l) in &self.levels {
            for (code, lot) in &l.lots {
                if let Some(at) = self.warning_due(&k.0, lot).filter(|&at| at <= by) {
                    warnings.push((at, k.clone(), code.clone()));
                }
                if !lot.expired && lot.expires_at <= by {
                    expiries.push((lot.expires_at, k.clone(), code.clone()));
                }
            }
        }
        warnings.sort();
        expiries.sort();
        (warnings, expiries)
    }

    fn lot_alert(kind: AlertKind, (sku, location): &LevelKey, code: &str, lot: &MLot) -> Alert {
        Alert {
            kind,
            sku: sku.clone(),
            location: location.clone(),
            available: lot.free(),
            reorder_point: None,
            lot: Some((code.to_string(), lot.expires_at)),
        }
    }

    fn expire(&mut self, now: Millis, seq: Seq, by: Millis, keys_seen_before: Millis, keys_max: u64, fx: &mut Effects) {
        let mut expired: Vec<(Millis, HoldId)> =
            self.holds.iter().filter(|(_, h)| h.expires_at <= by).map(|(&id, h)| (h.expires_at, id)).collect();
        expired.sort();
        for (_, id) in expired {
            self.drop_hold(now, seq, id, false, fx);
        }
        let (warnings, expiries) = self.lots_due(by);
        for (_, k, code) in warnings {
            let lot = self.levels.get_mut(&k).and_then(|l| l.lots.get_mut(&code)).expect("lot exists");
            lot.warned = true;
            fx.alerts.push(Model::lot_alert(AlertKind::LotExpiring, &k, &code, lot));
        }
        for (_, k, code) in expiries {
            let l = self.levels.get_mut(&k).expect("level exists");
            let lot = l.lots.get_mut(&code).expect("lot exists");
            lot.expired = true;
            let units = lot.free();
            fx.alerts.push(Model::lot_alert(AlertKind::LotExpired, &k, &code, lot));
            l.unsellable += units;
            self.lot_touched(&k.0, &k.1, &code, fx);
            self.touched(&k.0, &k.1, fx);
        }
        self.keys.retain(|k| k.seen_at >= keys_seen_before);
        while self.keys.len() as u64 > keys_max {
            self.keys.remove(0);
        }
        self.committed.retain(|&(at, _)| at + SPLIT_COMMIT_KEEP_MS > by);
    }

    fn decide(&mut self, now: Millis, seq: Seq, m: &Movement, fx: &mut Effects) -> Outcome {
        let what = m.kind.name();
        match &m.kind {
            MovementKind::Receive { sku, location, qty, units, .. } => {
                self.put(now, seq, what, sku, location, *qty, units, Put::Receive, m.reference.is_some(), fx)
            }
            MovementKind::Expect { sku, location, qty } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                self.stocked(sku)?;
                let l = self.level_mut(sku, location);
                l.incoming = level_qty(l.incoming as i128 + *qty as i128)?;
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Sell { sku, location, qty, hold, allow_negative, units, .. } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                self.stocked(sku)?;
                self.check_units(sku, units, *qty)?;
                match hold {
                    None => {
                        let channel = Some(&m.channel[..]);
                        let sold = SerialStatus::Sold;
                        self.take(now, seq, what, sku, location, *qty, units, channel, *allow_negative, sold, fx)
                    }
                    Some(h) => {
                        self.sell_from_hold(now, seq, *h, sku, location, *qty, &m.channel, *allow_negative, units, fx)
                    }
                }
            }
            MovementKind::Return { sku, location, qty, condition, units, .. } => {
                self.put(now, seq, what, sku, location, *qty, units, Put::Return(*condition), false, fx)
            }
            MovementKind::Adjust { sku, location, delta, allow_negative, units, .. } => {
                check_names(sku, location)?;
                let magnitude = (*delta as i128).abs();
                if magnitude < 1 || magnitude > MOVEMENT_QTY_MAX as i128 {
                    return Err(Reason::InvalidQuantity);
                }
                if *delta > 0 {
                    return self.put(now, seq, what, sku, location, *delta, units, Put::Found, false, fx);
                }
                self.stocked(sku)?;
                self.check_units(sku, units, -delta)?;
                let off = SerialStatus::WrittenOff;
                self.take(now, seq, what, sku, location, -delta, units, None, *allow_negative, off, fx)
            }
            MovementKind::Count { sku, location, counted, units } => self.count(sku, location, *counted, units, fx),
            MovementKind::Transfer { sku, from, to, qty, units } => {
                self.transfer(now, seq, (sku, from, to), *qty, units, fx)
            }
            MovementKind::Reserve { hold, lines, expires_at } => {
                self.reserve(now, seq, *hold, &m.channel, lines, *expires_at, fx)
            }
            MovementKind::Commit { hold } => {
                let h = self.holds.get(hold).ok_or(Reason::UnknownHold)?;
                if now >= h.expires_at {
                    return Err(Reason::HoldExpired);
                }
                self.drop_hold(now, seq, *hold, true, fx);
                Ok(Detail::None)
            }
            MovementKind::CompleteCommit { hold } => {
                // Finishes a commit another shard made: whatever the hold's expiry.
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.drop_hold(now, seq, *hold, true, fx);
                Ok(Detail::None)
            }
            MovementKind::Release { hold } => {
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.drop_hold(now, seq, *hold, false, fx);
                Ok(Detail::None)
            }
            MovementKind::SetSettings { sku, location, settings } => {
                check_names(sku, location)?;
                let quantities =
                    [settings.reorder_point, settings.reorder_qty, settings.max_qty, Some(settings.safety_stock)];
                let quantities_ok = quantities.iter().flatten().all(|q| (0..=MOVEMENT_QTY_MAX).contains(q));
                let one_policy = !(settings.reorder_qty.is_some() && settings.max_qty.is_some());
                let order_qty_ok =
                    [settings.reorder_qty, settings.max_qty].iter().flatten().all(|&q| q <= ORDER_QTY_MAX);
                if !quantities_ok || !one_policy || !order_qty_ok {
                    return Err(Reason::InvalidSettings);
                }
                self.stocked(sku)?;
                self.level_mut(sku, location).settings = *settings;
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Allocate { sku, location, channel, qty } => self.allocate(sku, location, channel, *qty, fx),
            MovementKind::SetSkuSettings { sku, settings } => self.set_sku_settings(sku, settings),
            MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max } => {
                self.expire(now, seq, *holds_expired_by, *keys_seen_before, *keys_max, fx);
                Ok(Detail::None)
            }
        }
    }

    fn expire_due(&self, holds_expired_by: Millis, keys_seen_before: Millis, keys_max: u64) -> bool {
        let (warnings, expiries) = self.lots_due(holds_expired_by);
        self.holds.values().any(|h| h.expires_at <= holds_expired_by)
            || !warnings.is_empty()
            || !expiries.is_empty()
            || self.committed.iter().any(|&(at, _)| at + SPLIT_COMMIT_KEEP_MS <= holds_expired_by)
            || self.keys.iter().any(|k| k.seen_at < keys_seen_before)
            || self.keys.len() as u64 > keys_max
    }

    fn views(&self) -> Vec<LevelView> {
        self.levels.iter().map(|((s, l), level)| model_view(s, l, level)).collect()
    }

    fn open_holds(&self) -> Vec<OpenHold> {
        self.holds
            .iter()
            .map(|(&id, h)| {
                let lines = h.lines.iter().map(|l| (l.sku.clone(), l.location.clone(), l.qty)).collect();
                (id, h.expires_at, lines)
            })
            .collect()
    }

    /// Open holds down to their lots, serial numbers and allocated units, as a checkpoint has them.
    fn hold_records(&self) -> Vec<HoldRecord> {
        self.holds
            .iter()
            .map(|(&id, h)| HoldRecord {
                id,
                expires_at: h.expires_at,
                channel: h.channel.clone().unwrap_or_default(),
                lines: h
                    .lines
                    .iter()
                    .map(|l| HoldLineRecord {
                        sku: l.sku.clone(),
                        location: l.location.clone(),
                        qty: l.qty,
                        unit_price: l.unit_price,
                        lots: l.lots.clone(),
                        serials: l.serials.clone(),
                        from_alloc: l.from_alloc,
                        kit: l.kit.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    fn detail(&self, sku: &str, location: &str) -> Option<LevelDetail> {
        let l = self.levels.get(&key_of(sku, location))?;
        Some(LevelDetail {
            level: model_view(sku, location, l),
            lots: l.lots_fefo().iter().map(|(code, lot)| lot_view(sku, location, code, lot)).collect(),
            allocations: l.allocations.clone(),
            loose_on_hand: l.loose_on_hand(),
        })
    }

    fn serial_view(&self, sku: &str, serial: &str) -> Option<SerialView> {
        let s = self.serials.get(&key_of(sku, serial))?;
        Some(SerialView {
            sku: sku.to_string(),
            serial: serial.to_string(),
            location: s.location.clone(),
            status: s.status,
            history: s.history.clone(),
        })
    }

    fn key_guards(&self) -> Vec<(u128, u64, Millis, Option<HoldId>)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .map(|k| {
                let hold = match k.outcome {
                    Ok(Detail::Hold(h)) => Some(h),
                    _ => None,
                };
                (key_hash(&k.key), body_hash(&k.body), k.seen_at, hold)
            })
            .collect();
        v.sort();
        v
    }
}

fn lot_view(sku: &str, location: &str, code: &str, lot: &MLot) -> LotView {
    LotView {
        sku: sku.to_string(),
        location: location.to_string(),
        lot: code.to_string(),
        expires_at: lot.expires_at,
        on_hand: lot.on_hand,
        reserved: lot.reserved,
        expired: lot.expired,
    }
}

fn model_view(sku: &str, location: &str, l: &MLevel) -> LevelView {
    LevelView {
        sku: sku.to_string(),
        location: location.to_string(),
        on_hand: l.on_hand,
        reserved: l.reserved,
        unsellable: l.unsellable,
        incoming: l.incoming,
        safety_stock: l.settings.safety_stock,
        available: l.available(),
    }
}

// ================================================================================================
// Commands: what the strategies generate, resolved against the running state
// ================================================================================================

/// Which hold a commit, release or sell names.
#[derive(Clone, Debug)]
enum HoldPick {
    /// One of the open holds (or, if none is open, any hold ever placed).
    Open(usize),
    /// The open hold that expires first (or, if none is open, the first hold ever placed).
    Soonest,
    /// Any hold id ever handed out, open, closed or never placed.
    Any(usize),
    Unknown,
}

/// Which units a movement line names, resolved against the model when the command runs.
#[derive(Clone, Debug)]
enum UnitsPick {
    /// Plain units; for a serial-tracked SKU, serial numbers in the state the movement needs
    /// (in stock here to take, sold to return, not in stock to receive), how many chosen by the
    /// number, and the quantity set to match.
    Auto(usize),
    /// A lot code of the pool, with an expiry.
    Lot(usize, ExpiryPick),
    /// Serial numbers of the pool whatever their state (quantity unchanged).
    Serials(Vec<usize>),
    /// Given as is (malformed ones).
    Raw(Units),
}

/// The `lot_expires_at` of a lot.
#[derive(Clone, Debug)]
enum ExpiryPick {
    Omit,
    /// The one the SKU's lot has (none if it never had it).
    Known,
    /// `now` plus this.
    InMs(i64),
    /// Another one than the SKU's lot has.
    Wrong,
}

#[derive(Clone, Debug)]
enum Op {
    /// A movement decided by the generator but for its units.
    Plain(MovementKind, UnitsPick),
    /// `held_line`: sell the SKU and location of that line of the hold, when it is open.
    SellFromHold {
        sku: String,
        location: String,
        qty: Qty,
        hold: HoldPick,
        allow_negative: bool,
        held_line: Option<usize>,
        units: UnitsPick,
    },
    /// `reuse_open_id`: give it the id of an open hold (the core must refuse it); `split`: an id
    /// of a hold split over two shards (this shard has one part).
    Reserve {
        lines: Vec<(Line, UnitsPick)>,
        expires_in_ms: i64,
        reuse_open_id: bool,
        split: bool,
    },
    Commit(HoldPick),
    /// Allocates `qty` (mostly 0: removes the allocation) for the channel of a hold that took
    /// allocated units, at the level of its first such line (else a plain allocation at A/dc).
    Reallocate(HoldPick, Qty),
    /// Engine-internal completion of a split commit (whatever the hold's expiry).
    CompleteCommit(HoldPick),
    Release(HoldPick),
    /// The housekeeping the engine runs periodically.
    Expire {
        holds: HoldsBy,
        keys: KeysBy,
        keys_max: u64,
    },
    /// Sends an earlier movement again, byte for byte (a client retry); a reservation gets a new
    /// engine-assigned hold id, as the engine would give it.
    Repeat(usize),
}

/// Which holds an `Expire` drops: those that expired by...
#[derive(Clone, Debug)]
enum HoldsBy {
    /// ...`now` minus a grace (negative: some that have not expired yet).
    GraceMs(i64),
    /// ...a hold's own expiry, off by -1, 0 or +1 ms (the boundary).
    ExpiryOf(HoldPick, i64),
}

/// What a movement does with the serial numbers it names (for picking them).
enum Role {
    /// Brings them in: not in stock, not held.
    In,
    /// Takes them: in stock at the level.
    Out,
    /// Returns them: sold.
    Back,
    /// Sells them from a hold line: these.
    Held(Vec<String>),
}

/// Which idempotency keys an `Expire` forgets: those first seen before...
#[derive(Clone, Debug)]
enum KeysBy {
    /// ...`now` minus a window.
    WindowMs(u64),
    /// ...the time a remembered key was seen, off by -1, 0 or +1 ms (the boundary).
    SeenAt(usize, i64),
}

/// Time passing before a command.
#[derive(Clone, Debug)]
enum Wait {
    Ms(Millis),
    /// Until the expiry of the hold the command names (or else of the open hold that expires
    /// first), off by -1, 0 or +1 ms (the boundary); never backwards.
    UntilExpiry(i64),
}

/// The idempotency key a command carries.
#[derive(Clone, Debug)]
enum KeyPick {
    None,
    /// A key never used before in the sequence.
    Fresh,
    /// One of a few keys used again and again: a reuse with another body is a mismatch.
    Pool(u8),
    /// A key given as is (an empty one, one at or past the length limit).
    Raw(String),
}

#[derive(Clone, Debug)]
struct Step {
    wait: Wait,
    key: KeyPick,
    channel: String,
    reference: Option<String>,
    occurred_at: Option<Millis>,
    op: Op,
}

/// The state seeded through a checkpoint before a sequence, for levels near the quantity limits
/// that no short sequence of movements can reach.
#[derive(Clone, Debug)]
struct SeedLevel {
    sku: usize,
    location: usize,
    on_hand: Qty,
    unsellable: Qty,
    incoming: Qty,
    reorder_point: Option<Qty>,
}

// ---- strategies ----

fn sku() -> impl Strategy<Value = String> {
    prop_oneof![
        150 => prop::sample::select(SKUS.to_vec()).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("S".repeat(SKU_BYTES_MAX)),
        1 => Just("S".repeat(SKU_BYTES_MAX + 1)),
    ]
}

fn location() -> impl Strategy<Value = String> {
    prop_oneof![
        150 => prop::sample::select(LOCATIONS.to_vec()).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("L".repeat(LOCATION_BYTES_MAX)),
        1 => Just("L".repeat(LOCATION_BYTES_MAX + 1)),
    ]
}

/// Mostly small, some near and past the movement limit, some invalid.
fn qty() -> impl Strategy<Value = Qty> {
    prop_oneof![
        60 => 1..=10i64,
        10 => 11..=500i64,
        3 => Just(0i64),
        2 => -3..=-1i64,
        2 => Just(MOVEMENT_QTY_MAX),
        2 => MOVEMENT_QTY_MAX - 5..MOVEMENT_QTY_MAX,
        2 => Just(MOVEMENT_QTY_MAX + 1),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
    ]
}

fn line_qty() -> impl Strategy<Value = Qty> {
    prop_oneof![12 => 1..=6i64, 1 => qty()]
}

fn delta() -> impl Strategy<Value = Qty> {
    prop_oneof![5 => qty(), 5 => qty().prop_map(|q| q.checked_neg().unwrap_or(i64::MIN))]
}

fn counted() -> impl Strategy<Value = Qty> {
    prop_oneof![
        20 => 0..=30i64,
        1 => Just(-1i64),
        1 => Just(MOVEMENT_QTY_MAX),
        1 => Just(MOVEMENT_QTY_MAX + 1),
    ]
}

fn setting_qty() -> impl Strategy<Value = Qty> {
    prop_oneof![
        12 => 0..=12i64,
        1 => Just(MOVEMENT_QTY_MAX),
        1 => Just(MOVEMENT_QTY_MAX + 1),
        1 => Just(-1i64),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop::option::weighted(0.7, setting_qty()),
        prop::option::weighted(0.4, setting_qty()),
        prop::option::weighted(0.2, setting_qty()),
        prop_oneof![8 => 0..=4i64, 1 => setting_qty()],
        any::<u16>(),
    )
        .prop_map(|(reorder_point, reorder_qty, max_qty, safety_stock, lead_time_days)| Settings {
            reorder_point,
            reorder_qty,
            max_qty,
            safety_stock,
            lead_time_days,
        })
}

fn hold_pick() -> impl Strategy<Value = HoldPick> {
    prop_oneof![
        9 => any::<usize>().prop_map(HoldPick::Open),
        4 => Just(HoldPick::Soonest),
        3 => any::<usize>().prop_map(HoldPick::Any),
        1 => Just(HoldPick::Unknown),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (sku(), location(), line_qty(), prop::option::of(0..10_000i64)).prop_map(|(sku, location, qty, unit_price)| Line {
        sku,
        location,
        qty,
        unit_price,
        kit: None,
        units: Units::ANY,
    })
}

fn reserve_lines() -> impl Strategy<Value = Vec<(Line, UnitsPick)>> {
    prop_oneof![
        40 => prop::collection::vec((line(), units_out()), 1..=2),
        10 => prop::collection::vec((line(), units_out()), 3..=4),
        1 => Just(Vec::new()),
        1 => Just(
            (0..=HOLD_LINES_MAX)
                .map(|_| (Line { sku: "A".into(), location: "dc".into(), qty: 1, unit_price: None, kit: None, units: Units::ANY  }, UnitsPick::Auto(0)))
                .collect()
        ),
    ]
}

/// Units that go out (sell, reserve, transfer, write-off): mostly any (FEFO) or a known lot.
fn units_out() -> impl Strategy<Value = UnitsPick> {
    prop_oneof![
        60 => any::<usize>().prop_map(UnitsPick::Auto),
        12 => (0..LOTS.len()).prop_map(|i| UnitsPick::Lot(i, ExpiryPick::Omit)),
        1 => (0..LOTS.len()).prop_map(|i| UnitsPick::Lot(i, ExpiryPick::Known)),
        2 => odd_units(),
    ]
}

/// Units that come in (receive, return, found): mostly a lot (new, known, or wrongly dated).
fn units_in() -> impl Strategy<Value = UnitsPick> {
    prop_oneof![
        40 => any::<usize>().prop_map(UnitsPick::Auto),
        25 => (0..LOTS.len()).prop_map(|i| UnitsPick::Lot(i, ExpiryPick::Known)),
        12 => (0..LOTS.len(), prop_oneof![8 => 200..=20_000i64, 1 => -100..=0i64])
            .prop_map(|(i, ms)| UnitsPick::Lot(i, ExpiryPick::InMs(ms))),
        3 => (0..LOTS.len()).prop_map(|i| UnitsPick::Lot(i, ExpiryPick::Omit)),
        2 => (0..LOTS.len()).prop_map(|i| UnitsPick::Lot(i, ExpiryPick::Wrong)),
        2 => odd_units(),
    ]
}

fn odd_units() -> impl Strategy<Value = UnitsPick> {
    prop_oneof![
        3 => prop::collection::vec(0..SERIALS.len(), 1..=3).prop_map(UnitsPick::Serials),
        1 => Just(UnitsPick::Raw(Units { lot: Some("x".repeat(LOT_BYTES_MAX + 1)), ..Units::ANY })),
        1 => Just(UnitsPick::Raw(Units { lot: Some("x".repeat(LOT_BYTES_MAX)), ..Units::ANY })),
        1 => Just(UnitsPick::Raw(Units { lot_expires_at: Some(T0 + 1_000_000), ..Units::ANY })),
        1 => Just(UnitsPick::Raw(Units::serials(&[""]))),
        1 => Just(UnitsPick::Raw(Units { lot: Some("L1".into()), lot_expires_at: Some(T0 + 1_000_000), serials: vec!["s0".into()] })),
    ]
}

fn allocation_qty() -> impl Strategy<Value = Qty> {
    prop_oneof![
        12 => 1..=8i64,
        4 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(MOVEMENT_QTY_MAX),
        1 => Just(MOVEMENT_QTY_MAX + 1),
    ]
}

fn sku_settings() -> impl Strategy<Value = SkuSettings> {
    let components = prop_oneof![
        20 => Just(Vec::new()),
        2 => (sku(), 1..=3i64).prop_map(|(sku, qty)| vec![Component { sku, qty }]),
        1 => (sku(), prop_oneof![Just(0i64), Just(KIT_COMPONENT_QTY_MAX + 1)]).prop_map(|(sku, qty)| vec![Component { sku, qty }]),
        1 => Just((0..=KIT_COMPONENTS_MAX).map(|i| Component { sku: format!("K{i}"), qty: 1 }).collect()),
        1 => Just(vec![Component { sku: "A".into(), qty: 1 }, Component { sku: "A".into(), qty: 1 }]),
    ];
    (prop::bool::weighted(0.4), prop::option::weighted(0.4, 0..=2u16), components).prop_map(
        |(serial_tracked, expiry_warning_days, components)| SkuSettings {
            serial_tracked,
            expiry_warning_days,
            components,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    let adjust_reason = prop::sample::select(vec![
        AdjustReason::Correction,
        AdjustReason::Shrinkage,
        AdjustReason::Damaged,
        AdjustReason::Found,
        AdjustReason::Promotion,
    ]);
    let condition = prop::sample::select(vec![ReturnCondition::Restock, ReturnCondition::Damaged]);
    prop_oneof![
        12 => (sku(), location(), prop_oneof![4 => 1..=30i64, 1 => qty()], prop::option::of(0..1000i64), units_in())
            .prop_map(|(sku, location, qty, unit_cost, u)| Op::Plain(MovementKind::Receive { sku, location, qty, unit_cost, units: Units::ANY  }, u)),
        4 => (sku(), location(), qty())
            .prop_map(|(sku, location, qty)| Op::Plain(MovementKind::Expect { sku, location, qty }, UnitsPick::Auto(0))),
        12 => (sku(), location(), qty(), prop::option::of(0..10_000i64), prop::bool::weighted(0.15), units_out())
            .prop_map(|(sku, location, qty, unit_price, allow_negative, u)| Op::Plain(MovementKind::Sell {
                sku, location, qty, unit_price, hold: None, allow_negative, units: Units::ANY
            }, u)),
        7 => (sku(), location(), qty(), hold_pick(), prop::bool::weighted(0.15), prop::option::weighted(0.8, any::<usize>()), units_out())
            .prop_map(|(sku, location, qty, hold, allow_negative, held_line, units)| Op::SellFromHold {
                sku, location, qty, hold, allow_negative, held_line, units,
            }),
        5 => (sku(), location(), qty(), condition, prop::option::of(0..10_000i64), units_in())
            .prop_map(|(sku, location, qty, condition, unit_price, u)| Op::Plain(MovementKind::Return {
                sku, location, qty, condition, unit_price, units: Units::ANY
            }, u)),
        6 => (sku(), location(), delta(), adjust_reason, prop::bool::weighted(0.2), units_in(), units_out())
            .prop_map(|(sku, location, delta, reason, allow_negative, u_in, u_out)| Op::Plain(MovementKind::Adjust {
                sku, location, delta, reason, allow_negative, units: Units::ANY
            }, if delta > 0 { u_in } else { u_out })),
        3 => (sku(), location(), counted(), units_out())
            .prop_map(|(sku, location, counted, u)| Op::Plain(MovementKind::Count { sku, location, counted, units: Units::ANY  }, u)),
        6 => (sku(), location(), prop::bool::weighted(0.85), location(), qty(), units_out())
            .prop_map(|(sku, from, to_other, any_to, qty, u)| {
                let to = match LOCATIONS.iter().position(|l| *l == from) {
                    Some(i) if to_other => LOCATIONS[1 - i].to_string(),
                    _ => any_to,
                };
                Op::Plain(MovementKind::Transfer { sku, from, to, qty, units: Units::ANY  }, u)
            }),
        14 => (
            reserve_lines(),
            prop_oneof![70 => 1..=10_000i64, 15 => 10_001..=120_000i64, 3 => Just(0i64), 2 => -2_000..=-1i64],
            prop::bool::weighted(0.03),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(lines, expires_in_ms, reuse_open_id, split)| Op::Reserve { lines, expires_in_ms, reuse_open_id, split }),
        6 => hold_pick().prop_map(Op::Commit),
        2 => hold_pick().prop_map(Op::CompleteCommit),
        4 => (hold_pick(), prop_oneof![3 => Just(0i64), 1 => 1..=4i64]).prop_map(|(h, qty)| Op::Reallocate(h, qty)),
        4 => hold_pick().prop_map(Op::Release),
        5 => (sku(), location(), settings())
            .prop_map(|(sku, location, settings)| Op::Plain(MovementKind::SetSettings { sku, location, settings }, UnitsPick::Auto(0))),
        5 => (sku(), location(), channel_name(), allocation_qty())
            .prop_map(|(sku, location, channel, qty)| Op::Plain(MovementKind::Allocate { sku, location, channel, qty }, UnitsPick::Auto(0))),
        2 => (sku(), sku_settings())
            .prop_map(|(sku, settings)| Op::Plain(MovementKind::SetSkuSettings { sku, settings }, UnitsPick::Auto(0))),
        6 => (
            prop_oneof![
                3 => Just(HoldsBy::GraceMs(0)),
                4 => (1..=3_000i64).prop_map(HoldsBy::GraceMs),
                1 => (-500..=-1i64).prop_map(HoldsBy::GraceMs),
                3 => (hold_pick(), -1..=1i64).prop_map(|(h, off)| HoldsBy::ExpiryOf(h, off)),
            ],
            prop_oneof![
                6 => (0..=60_000u64).prop_map(KeysBy::WindowMs),
                1 => Just(KeysBy::WindowMs(u64::MAX)),
                3 => (any::<usize>(), -1..=1i64).prop_map(|(k, off)| KeysBy::SeenAt(k, off)),
            ],
            prop_oneof![3 => 0..=6u64, 7 => Just(u64::MAX)],
        )
            .prop_map(|(holds, keys, keys_max)| Op::Expire { holds, keys, keys_max }),
        9 => any::<usize>().prop_map(Op::Repeat),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let wait = prop_oneof![
        55 => Just(Wait::Ms(0)),
        35 => (1..=300u64).prop_map(Wait::Ms),
        8 => (301..=3_000u64).prop_map(Wait::Ms),
        1 => (3_001..=60_000u64).prop_map(Wait::Ms),
        8 => prop_oneof![Just(-1i64), Just(0i64), Just(0i64), Just(1i64)].prop_map(Wait::UntilExpiry),
    ];
    let key = prop_oneof![
        120 => Just(KeyPick::None),
        100 => Just(KeyPick::Fresh),
        25 => (0..4u8).prop_map(KeyPick::Pool),
        1 => Just(KeyPick::Raw(String::new())),
        1 => Just(KeyPick::Raw("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX))),
        1 => Just(KeyPick::Raw("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1))),
    ];
    let channel = prop_oneof![
        200 => Just("web".to_string()),
        20 => Just("pos".to_string()),
        40 => Just("amazon".to_string()),
        1 => Just(String::new()),
        1 => Just("c".repeat(CHANNEL_BYTES_MAX + 1)),
    ];
    let reference = prop_oneof![
        120 => Just(None),
        100 => Just(Some("PO-1".to_string())),
        1 => Just(Some(String::new())),
        1 => Just(Some("r".repeat(REFERENCE_BYTES_MAX))),
        1 => Just(Some("r".repeat(REFERENCE_BYTES_MAX + 1))),
    ];
    let occurred_at = prop::option::weighted(0.2, 0..1_000u64);
    (wait, key, channel, reference, occurred_at, op()).prop_map(|(wait, key, channel, reference, occurred_at, op)| {
        Step { wait, key, channel, reference, occurred_at, op }
    })
}

/// A channel an allocation names (a few invalid).
fn channel_name() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => prop::sample::select(CHANNELS.to_vec()).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("c".repeat(CHANNEL_BYTES_MAX + 1)),
    ]
}

/// Before the random steps, often: C becomes serial-tracked and A warns of expiring lots (while
/// they have no stock, so that later steps move serial numbers and raise warnings); sometimes B
/// starts as a kit of A (until a later step redefines it).
fn prelude() -> impl Strategy<Value = Vec<Step>> {
    let set = |sku: &str, settings: SkuSettings| Step {
        wait: Wait::Ms(0),
        key: KeyPick::None,
        channel: "web".into(),
        reference: None,
        occurred_at: None,
        op: Op::Plain(MovementKind::SetSkuSettings { sku: sku.into(), settings }, UnitsPick::Auto(0)),
    };
    let args = (prop::bool::weighted(0.7), prop::option::weighted(0.6, 0..=2u16), prop::bool::weighted(0.15));
    args.prop_map(move |(track_c, warn_a, kit_b)| {
        let mut steps = Vec::new();
        if kit_b {
            let components = vec![Component { sku: "A".into(), qty: 2 }];
            steps.push(set("B", SkuSettings { components, ..SkuSettings::default() }));
        }
        if track_c {
            steps.push(set("C", SkuSettings { serial_tracked: true, ..SkuSettings::default() }));
        }
        if let Some(days) = warn_a {
            steps.push(set("A", SkuSettings { expiry_warning_days: Some(days), ..SkuSettings::default() }));
        }
        steps
    })
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    (prelude(), prop::collection::vec(step(), 1..=max)).prop_map(|(mut prelude, steps)| {
        prelude.extend(steps);
        prelude
    })
}

fn seed_level() -> impl Strategy<Value = SeedLevel> {
    let near = |base: Qty| (0..=20i64).prop_map(move |d| base - d);
    (
        0..SKUS.len(),
        0..LOCATIONS.len(),
        prop_oneof![
            3 => near(LEVEL_QTY_MAX),
            2 => near(-LEVEL_QTY_MAX + 20),
            2 => near(LEVEL_QTY_MAX - MOVEMENT_QTY_MAX + 10),
            2 => 0..=30i64,
        ],
        prop_oneof![3 => Just(0i64), 1 => near(LEVEL_QTY_MAX), 1 => 0..=10i64],
        prop_oneof![2 => Just(0i64), 1 => near(LEVEL_QTY_MAX), 1 => 0..=10i64],
        prop::option::weighted(0.3, 0..=10i64),
    )
        .prop_map(|(sku, location, on_hand, unsellable, incoming, reorder_point)| SeedLevel {
            sku,
            location,
            on_hand,
            unsellable,
            incoming,
            reorder_point,
        })
}

/// Mostly an empty shard; sometimes levels near the quantity limits.
fn seed() -> impl Strategy<Value = Vec<SeedLevel>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(seed_level(), 1..=4)]
}

// ================================================================================================
// Seeding a shard through a checkpoint
// ================================================================================================

// The serde shape of `ShardSnapshot` with its private parts spelled out (see `snapshot()` in
// `core/shard.rs`). If the checkpoint shape changes, decoding fails or the first comparison with
// the model does, loudly.
#[derive(Serialize)]
struct SeedSnapshot {
    last_seq: Seq,
    levels: Vec<SeedLevelRecord>,
    holds: Vec<HoldRecord>,
    keys: Vec<()>,
    sku_settings: Vec<()>,
    lot_expiry: Vec<()>,
    serials: Vec<()>,
    committed_split_holds: Vec<()>,
}

#[derive(Serialize)]
struct SeedLevelRecord {
    sku: String,
    location: String,
    level: SeedLevelFields,
    lots: Vec<()>,
    allocations: Vec<()>,
}

#[derive(Serialize)]
struct SeedLevelFields {
    on_hand: Qty,
    reserved: Qty,
    unsellable: Qty,
    incoming: Qty,
    safety_stock: Qty,
    reorder_point: Qty,
    order_qty: u32,
    lead_time_days: u16,
    flags: u8,
}

const SEED_LAST_SEQ: Seq = 1_000;

fn seeded(seed: &[SeedLevel]) -> (ShardState, Model) {
    if seed.is_empty() {
        return (ShardState::new(), Model::default());
    }
    let mut model = Model { last_seq: SEED_LAST_SEQ, ..Model::default() };
    for s in seed {
        let mut l = MLevel {
            on_hand: s.on_hand,
            unsellable: s.unsellable,
            incoming: s.incoming,
            settings: Settings { reorder_point: s.reorder_point, ..Settings::default() },
            ..MLevel::default()
        };
        l.reorder_alerted = s.reorder_point.is_some_and(|p| l.available() <= p);
        l.out_of_stock_alerted = l.available() <= 0;
        model.levels.insert(key_of(SKUS[s.sku], LOCATIONS[s.location]), l);
    }
    let snapshot = SeedSnapshot {
        last_seq: SEED_LAST_SEQ,
        levels: model
            .levels
            .iter()
            .map(|((sku, location), l)| SeedLevelRecord {
                sku: sku.clone(),
                location: location.clone(),
                level: SeedLevelFields {
                    on_hand: l.on_hand,
                    reserved: 0,
                    unsellable: l.unsellable,
                    incoming: l.incoming,
                    safety_stock: 0,
                    reorder_point: l.settings.reorder_point.unwrap_or(-1),
                    order_qty: u32::MAX,
                    lead_time_days: 0,
                    flags: if l.reorder_alerted { 2 } else { 0 } | if l.out_of_stock_alerted { 4 } else { 0 },
                },
                lots: Vec::new(),
                allocations: Vec::new(),
            })
            .collect(),
        holds: Vec::new(),
        keys: Vec::new(),
        sku_settings: Vec::new(),
        lot_expiry: Vec::new(),
        serials: Vec::new(),
        committed_split_holds: Vec::new(),
    };
    let bytes = postcard::to_stdvec(&snapshot).expect("seed encodes");
    let snapshot: ShardSnapshot = postcard::from_bytes(&bytes).expect("seed decodes as a ShardSnapshot");
    (ShardState::from_snapshot(snapshot), model)
}

// ================================================================================================
// The harness: one core, one model, the same commands
// ================================================================================================

/// Counts of what the commands did, to check the generators reach every rule.
#[derive(Debug, Default)]
struct Stats {
    counts: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, label: impl Into<String>) {
        *self.counts.entry(label.into()).or_default() += 1;
    }
}

struct Harness {
    core: ShardState,
    model: Model,
    now: Millis,
    holds_placed: u64,
    /// Every hold id handed to a reservation.
    hold_ids: Vec<HoldId>,
    /// Every movement sent, for retries.
    history: Vec<Movement>,
    step_index: usize,
}

fn level_key(v: &LevelView) -> LevelKey {
    (v.sku.clone(), v.location.clone())
}

/// Available >= 0 and unsellable <= on_hand: what only an allowed movement may break.
fn sound(v: &LevelView) -> bool {
    v.available >= 0 && v.unsellable <= v.on_hand
}

impl Harness {
    fn new(seed: &[SeedLevel]) -> Result<Harness, TestCaseError> {
        let (core, model) = seeded(seed);
        let h =
            Harness { core, model, now: T0, holds_placed: 0, hold_ids: Vec::new(), history: Vec::new(), step_index: 0 };
        h.compare_state()?;
        Ok(h)
    }

    /// A second harness that continues from `core` with this one's model and history.
    fn fork(&self, core: ShardState) -> Harness {
        Harness {
            core,
            model: self.model.clone(),
            now: self.now,
            holds_placed: self.holds_placed,
            hold_ids: self.hold_ids.clone(),
            history: self.history.clone(),
            step_index: self.step_index,
        }
    }

    fn pick_hold(&self, pick: &HoldPick) -> HoldId {
        let open: Vec<HoldId> = self.model.holds.keys().copied().collect();
        let soonest = self.model.holds.iter().map(|(&id, h)| (h.expires_at, id)).min();
        match pick {
            HoldPick::Soonest if soonest.is_some() => soonest.expect("an open hold").1,
            HoldPick::Open(i) if !open.is_empty() => open[i % open.len()],
            HoldPick::Soonest if !self.hold_ids.is_empty() => self.hold_ids[0],
            HoldPick::Open(i) | HoldPick::Any(i) if !self.hold_ids.is_empty() => self.hold_ids[i % self.hold_ids.len()],
            _ => UNKNOWN_HOLD,
        }
    }

    fn new_hold_id(&mut self, split: bool) -> HoldId {
        self.holds_placed += 1;
        let shards = if split { 0b11 } else { 0b01 };
        let id = (self.holds_placed << HOLD_SHARD_BITS) | shards;
        self.hold_ids.push(id);
        id
    }

    /// The units a pick names at a level, and the quantity the movement must then have (when
    /// serial numbers were chosen for it).
    fn units_for(&self, sku: &str, location: &str, pick: &UnitsPick, role: Role) -> (Units, Option<Qty>) {
        let model = &self.model;
        match pick {
            UnitsPick::Auto(_) if !model.tracked(sku) => (Units::ANY, None),
            UnitsPick::Auto(seed) => {
                let status =
                    |serial: &str| model.serials.get(&key_of(sku, serial)).map(|s| (s.status, &s.location[..]));
                let candidates: Vec<String> = match role {
                    Role::Held(held) => held,
                    role => SERIALS
                        .iter()
                        .filter(|serial| match (&role, status(serial)) {
                            (Role::In, Some((SerialStatus::InStock | SerialStatus::Reserved(_), _))) => false,
                            (Role::In, _) => true,
                            (Role::Out, Some((SerialStatus::InStock, here))) => here == location,
                            (Role::Back, Some((SerialStatus::Sold, _))) => true,
                            _ => false,
                        })
                        .map(|s| s.to_string())
                        .collect(),
                };
                let serials: Vec<String> = if candidates.is_empty() {
                    vec![SERIALS[seed % SERIALS.len()].to_string()]
                } else {
                    let n = (1 + seed % 3).min(candidates.len());
                    let start = (seed / 3) % candidates.len();
                    (0..n).map(|i| candidates[(start + i) % candidates.len()].clone()).collect()
                };
                let n = serials.len() as Qty;
                (Units { serials, ..Units::ANY }, Some(n))
            }
            UnitsPick::Lot(i, expiry) => {
                // Units going out name a lot the level has, when it has any.
                let here: Vec<String> = model.level(sku, location).lots_fefo().into_iter().map(|(c, _)| c).collect();
                let code = match (&role, expiry) {
                    (Role::Out, ExpiryPick::Omit) if !here.is_empty() => here[i % here.len()].clone(),
                    _ => LOTS[i % LOTS.len()].to_string(),
                };
                let known = model.lot_expiry.get(&key_of(sku, &code)).copied();
                let lot_expires_at = match expiry {
                    ExpiryPick::Omit => None,
                    ExpiryPick::Known => known.or(Some(self.now + 10_000)),
                    ExpiryPick::InMs(ms) => Some(self.now.saturating_add_signed(*ms)),
                    ExpiryPick::Wrong => known.map(|k| k + 1),
                };
                (Units { lot: Some(code), lot_expires_at, serials: Vec::new() }, None)
            }
            UnitsPick::Serials(picks) => (
                Units {
                    serials: picks.iter().map(|&i| SERIALS[i % SERIALS.len()].to_string()).collect(),
                    ..Units::ANY
                },
                None,
            ),
            UnitsPick::Raw(units) => (units.clone(), None),
        }
    }

    /// A movement with the units its pick resolves to.
    fn with_units(&self, mut kind: MovementKind, pick: &UnitsPick) -> MovementKind {
        let role_of = |kind: &MovementKind| match kind {
            MovementKind::Receive { .. } => Role::In,
            MovementKind::Return { .. } => Role::Back,
            MovementKind::Adjust { delta, .. } if *delta > 0 => Role::In,
            _ => Role::Out,
        };
        let role = role_of(&kind);
        match &mut kind {
            MovementKind::Receive { sku, location, qty, units, .. }
            | MovementKind::Return { sku, location, qty, units, .. }
            | MovementKind::Sell { sku, location, qty, units, .. }
            | MovementKind::Transfer { sku, from: location, qty, units, .. } => {
                let (u, n) = self.units_for(sku, location, pick, role);
                *units = u;
                *qty = n.unwrap_or(*qty);
            }
            MovementKind::Adjust { sku, location, delta, units, .. } => {
                let (u, n) = self.units_for(sku, location, pick, role);
                *units = u;
                if let Some(n) = n {
                    *delta = if *delta > 0 { n } else { -n };
                }
            }
            MovementKind::Count { sku, location, units, .. } => *units = self.units_for(sku, location, pick, role).0,
            _ => {}
        }
        kind
    }

    fn resolve(&mut self, s: &Step) -> Movement {
        let kind = match &s.op {
            Op::Repeat(i) if !self.history.is_empty() => {
                let mut m = self.history[i % self.history.len()].clone();
                if let MovementKind::Reserve { hold, .. } = &mut m.kind {
                    // The engine assigns a new id to every reservation it is sent.
                    *hold = self.new_hold_id(is_split(*hold));
                }
                return m;
            }
            Op::Repeat(_) => MovementKind::Release { hold: UNKNOWN_HOLD },
            Op::Plain(kind, units) => self.with_units(kind.clone(), units),
            Op::SellFromHold { sku, location, qty, hold, allow_negative, held_line, units } => {
                let hold = self.pick_hold(hold);
                let (sku, location) = match (self.model.holds.get(&hold), held_line) {
                    (Some(h), Some(i)) => {
                        let line = &h.lines[i % h.lines.len()];
                        (line.sku.clone(), line.location.clone())
                    }
                    _ => (sku.clone(), location.clone()),
                };
                let held = self.model.holds.get(&hold).and_then(|h| {
                    h.lines.iter().find(|l| l.sku == sku && l.location == location).map(|l| l.serials.clone())
                });
                let role = held.map_or(Role::Out, Role::Held);
                let (units, n) = self.units_for(&sku, &location, units, role);
                MovementKind::Sell {
                    sku,
                    location,
                    qty: n.unwrap_or(*qty),
                    unit_price: None,
                    hold: Some(hold),
                    allow_negative: *allow_negative,
                    units,
                }
            }
            Op::Reserve { lines, expires_in_ms, reuse_open_id, split } => {
                let hold = match self.model.holds.keys().next() {
                    Some(&open) if *reuse_open_id => open,
                    _ => self.new_hold_id(*split),
                };
                let expires_at = self.now.saturating_add_signed(*expires_in_ms);
                let lines = lines
                    .iter()
                    .map(|(line, pick)| {
                        let (units, n) = self.units_for(&line.sku, &line.location, pick, Role::Out);
                        Line { units, qty: n.unwrap_or(line.qty), ..line.clone() }
                    })
                    .collect();
                MovementKind::Reserve { hold, lines, expires_at }
            }
            Op::Commit(pick) => MovementKind::Commit { hold: self.pick_hold(pick) },
            Op::CompleteCommit(pick) => MovementKind::CompleteCommit { hold: self.pick_hold(pick) },
            Op::Reallocate(pick, qty) => {
                let taken = self.model.holds.get(&self.pick_hold(pick)).and_then(|h| {
                    let line = h.lines.iter().find(|l| l.from_alloc > 0)?;
                    Some((line.sku.clone(), line.location.clone(), h.channel.clone()?))
                });
                let (sku, location, channel) = taken.unwrap_or(("A".into(), "dc".into(), "web".into()));
                MovementKind::Allocate { sku, location, channel, qty: *qty }
            }
            Op::Release(pick) => MovementKind::Release { hold: self.pick_hold(pick) },
            Op::Expire { holds, keys, keys_max } => MovementKind::Expire {
                holds_expired_by: match holds {
                    HoldsBy::GraceMs(grace) => self.now.saturating_add_signed(-grace),
                    HoldsBy::ExpiryOf(pick, off) => match self.model.holds.get(&self.pick_hold(pick)) {
                        Some(h) => h.expires_at.saturating_add_signed(*off),
                        None => self.now,
                    },
                },
                keys_seen_before: match keys {
                    KeysBy::WindowMs(window) => self.now.saturating_sub(*window),
                    KeysBy::SeenAt(_, _) if self.model.keys.is_empty() => self.now,
                    KeysBy::SeenAt(i, off) => {
                        self.model.keys[i % self.model.keys.len()].seen_at.saturating_add_signed(*off)
                    }
                },
                keys_max: *keys_max,
            },
        };
        Movement {
            key: match &s.key {
                KeyPick::None => None,
                KeyPick::Fresh => Some(format!("fresh-{}", self.step_index)),
                KeyPick::Pool(i) => Some(format!("pool-{i}")),
                KeyPick::Raw(k) => Some(k.clone()),
            },
            channel: s.channel.clone(),
            reference: s.reference.clone(),
            occurred_at: s.occurred_at,
            kind,
        }
    }

    /// Runs one command on the core and the model and checks they agree.
    fn step(&mut self, s: &Step, stats: Option<&mut Stats>) -> Result<(Applied, Effects), TestCaseError> {
        self.now = match &s.wait {
            Wait::Ms(ms) => self.now + ms,
            Wait::UntilExpiry(off) => {
                let pick = match &s.op {
                    Op::Commit(pick)
                    | Op::CompleteCommit(pick)
                    | Op::Release(pick)
                    | Op::SellFromHold { hold: pick, .. } => pick,
                    _ => &HoldPick::Soonest,
                };
                match self.model.holds.get(&self.pick_hold(pick)) {
                    Some(h) => h.expires_at.saturating_add_signed(*off).max(self.now),
                    None => self.now,
                }
            }
        };
        self.step_index += 1;
        let m = self.resolve(s);
        self.history.push(m.clone());
        let (now, i) = (self.now, self.step_index);
        if let MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max } = m.kind {
            prop_assert_eq!(
                self.core.expire_due(holds_expired_by, keys_seen_before, keys_max),
                self.model.expire_due(holds_expired_by, keys_seen_before, keys_max),
                "step {}: expire_due before {:?}",
                i,
                m
            );
        }
        let before: BTreeMap<LevelKey, LevelView> = self.core.levels().map(|v| (level_key(&v), v)).collect();
        let before_model = stats.is_some().then(|| self.model.clone());
        let seq = self.model.last_seq + 1;
        let mut fx = Effects::default();
        let got = self.core.apply(now, seq, &m, body_hash(&m), &mut fx);
        let (want, want_fx) = self.model.apply(now, seq, &m);
        prop_assert_eq!(got, want, "step {} at {}: outcome of {:?}", i, now, m);
        prop_assert_eq!(&fx.alerts, &want_fx.alerts, "step {}: alerts of {:?}", i, m);
        prop_assert_eq!(&fx.levels, &want_fx.levels, "step {}: level changes of {:?}", i, m);
        prop_assert_eq!(&fx.holds_closed, &want_fx.holds_closed, "step {}: holds closed by {:?}", i, m);
        prop_assert_eq!(&fx.lots, &want_fx.lots, "step {}: lot changes of {:?}", i, m);
        self.compare_state().map_err(|e| TestCaseError::fail(format!("step {i} after {m:?}: {e}")))?;
        self.check_invariants(&before, &m, got, &fx)
            .map_err(|e| TestCaseError::fail(format!("step {i} after {m:?}: {e}")))?;
        if let (Some(stats), Some(before_model)) = (stats, before_model) {
            record_stats(stats, now, &m, got, &fx, &before_model, &self.model);
        }
        Ok((got, fx))
    }

    /// Every read of the core agrees with the model.
    fn compare_state(&self) -> Result<(), TestCaseError> {
        let (core, model) = (&self.core, &self.model);
        prop_assert_eq!(core.last_seq(), model.last_seq, "last_seq");
        let mut levels: Vec<LevelView> = core.levels().collect();
        levels.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        prop_assert_eq!(&levels, &model.views(), "levels()");
        prop_assert_eq!(core.level_count(), model.levels.len(), "level_count()");
        let skus = SKUS.iter().map(|s| s.to_string()).chain([String::new(), "S".repeat(SKU_BYTES_MAX)]);
        for sku in skus {
            let locations = LOCATIONS.iter().map(|l| l.to_string()).chain(["L".repeat(LOCATION_BYTES_MAX)]);
            for location in locations {
                let want = model.levels.get(&key_of(&sku, &location));
                prop_assert_eq!(
                    core.level(&sku, &location),
                    want.map(|l| model_view(&sku, &location, l)),
                    "level({}, {})",
                    sku,
                    location
                );
                prop_assert_eq!(
                    core.settings(&sku, &location),
                    want.map(|l| l.settings),
                    "settings({}, {})",
                    sku,
                    location
                );
            }
        }
        let mut holds: Vec<_> = core.holds().collect();
        holds.sort();
        prop_assert_eq!(&holds, &model.open_holds(), "holds()");
        prop_assert_eq!(core.max_hold_id(), model.holds.keys().copied().max().unwrap_or(0), "max_hold_id()");
        prop_assert_eq!(core.key_count(), model.keys.len(), "key_count()");
        let mut guards: Vec<_> = core.key_guards().collect();
        guards.sort();
        prop_assert_eq!(guards, model.key_guards(), "key_guards()");
        // Complex inventory: lots, allocations, serial numbers, SKU settings, what holds hold.
        for sku in SKUS {
            prop_assert_eq!(core.sku_settings(sku), model.settings_of(sku), "sku_settings({})", sku);
            for location in LOCATIONS {
                prop_assert_eq!(
                    core.level_detail(sku, location),
                    model.detail(sku, location),
                    "level_detail({}, {})",
                    sku,
                    location
                );
                for channel in CHANNELS {
                    let want = model.levels.get(&key_of(sku, location)).map(|l| l.available_for(channel));
                    prop_assert_eq!(
                        core.available_for_channel(sku, location, channel),
                        want,
                        "available_for_channel({}, {}, {})",
                        sku,
                        location,
                        channel
                    );
                }
            }
            for serial in SERIALS {
                prop_assert_eq!(
                    core.serial(sku, serial),
                    model.serial_view(sku, serial),
                    "serial({}, {})",
                    sku,
                    serial
                );
            }
        }
        let mut settings: Vec<(String, SkuSettings)> =
            core.all_sku_settings().map(|(sku, s)| (sku.to_string(), s.clone())).collect();
        settings.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, SkuSettings)> = model.sku_settings.clone().into_iter().collect();
        prop_assert_eq!(settings, want, "all_sku_settings()");
        prop_assert_eq!(core.snapshot().holds, model.hold_records(), "holds in the snapshot (lots, serials)");
        let committed: Vec<HoldId> = core.committed_split_holds().collect();
        let want: Vec<HoldId> = model.committed.iter().map(|&(_, h)| h).collect();
        prop_assert_eq!(committed, want, "committed_split_holds()");
        Ok(())
    }

    /// The domain's invariants, checked on the core.
    fn check_invariants(
        &self,
        before: &BTreeMap<LevelKey, LevelView>,
        m: &Movement,
        applied: Applied,
        fx: &Effects,
    ) -> Result<(), TestCaseError> {
        let mut held: BTreeMap<LevelKey, Qty> = BTreeMap::new();
        for (id, _, lines) in self.core.holds() {
            prop_assert!(!lines.is_empty(), "hold {} is open with no line", id);
            let mut seen = BTreeSet::new();
            for (sku, location, qty) in lines {
                prop_assert!(qty > 0, "hold {} holds {} of {}/{}", id, qty, sku, location);
                prop_assert!(
                    seen.insert((sku.clone(), location.clone())),
                    "hold {} names {}/{} twice",
                    id,
                    sku,
                    location
                );
                *held.entry((sku, location)).or_default() += qty;
            }
        }
        // Levels this movement was allowed to take below zero (or below what is unsellable).
        let mut excused: BTreeSet<LevelKey> = match (&m.kind, applied) {
            (_, Applied::Recorded(Err(_)) | Applied::Retry { .. } | Applied::Mismatch) => BTreeSet::new(),
            (MovementKind::Sell { sku, location, allow_negative: true, .. }, _)
            | (MovementKind::Adjust { sku, location, allow_negative: true, .. }, _)
            | (MovementKind::Count { sku, location, .. }, _)
            | (MovementKind::SetSettings { sku, location, .. }, _) => [key_of(sku, location)].into(),
            _ => BTreeSet::new(),
        };
        // Expiring lots (or moving expired units into a lot) make units unsellable whatever the
        // safety stock.
        excused.extend(fx.lots.iter().filter(|l| l.expired).map(|l| key_of(&l.sku, &l.location)));
        let empty = model_view("", "", &MLevel::default());
        for v in self.core.levels() {
            let k = level_key(&v);
            prop_assert!(v.reserved >= 0 && v.unsellable >= 0, "negative reserved or unsellable: {:?}", v);
            prop_assert_eq!(
                v.available,
                v.on_hand - v.reserved - v.unsellable - v.safety_stock,
                "available of {:?}",
                v
            );
            prop_assert_eq!(
                v.reserved,
                held.get(&k).copied().unwrap_or(0),
                "reserved is not the sum of holds: {:?}",
                v
            );
            let was = before.get(&k).unwrap_or(&empty);
            if sound(was) && !excused.contains(&k) {
                prop_assert!(sound(&v), "{:?} went from {:?} to {:?}", m.kind.name(), was, v);
            }
            if matches!(applied, Applied::Retry { .. } | Applied::Mismatch) {
                prop_assert_eq!(Some(&v), before.get(&k), "a {:?} changed a level", applied);
            }
        }
        for k in held.keys() {
            prop_assert!(self.core.level(&k.0, &k.1).is_some(), "a hold on a level that does not exist: {:?}", k);
        }
        Ok(())
    }
}

fn record_stats(
    stats: &mut Stats,
    now: Millis,
    m: &Movement,
    applied: Applied,
    fx: &Effects,
    before: &Model,
    after: &Model,
) {
    let before_holds: BTreeMap<HoldId, Millis> = before.holds.iter().map(|(&id, h)| (id, h.expires_at)).collect();
    let before_key_times: Vec<Millis> = before.keys.iter().map(|k| k.seen_at).collect();
    let name = match &m.kind {
        MovementKind::Sell { hold: Some(_), .. } => "sell_from_hold",
        kind => kind.name(),
    };
    match applied {
        Applied::Recorded(Ok(Detail::Variance(v))) if v != 0 => stats.add("ok:count_with_variance"),
        Applied::Recorded(Ok(_)) => stats.add(format!("ok:{name}")),
        Applied::Recorded(Err(r)) => stats.add(format!("err:{}", r.code())),
        Applied::Retry { .. } => stats.add("retry"),
        Applied::Mismatch => stats.add("mismatch"),
    }
    for a in &fx.alerts {
        stats.add(format!("alert:{:?}", a.kind));
    }
    record_complex_stats(stats, now, m, applied, fx, before, after);
    if matches!(m.kind, MovementKind::Expire { .. }) && !fx.holds_closed.is_empty() {
        stats.add("expire_closed_holds");
    }
    if let (MovementKind::Expire { holds_expired_by, .. }, Some(&id)) = (&m.kind, fx.holds_closed.last()) {
        if before_holds.get(&id) == Some(holds_expired_by) {
            stats.add("expire_closed_a_hold_expiring_at_the_bound");
        }
    }
    if let (
        MovementKind::Commit { hold } | MovementKind::Sell { hold: Some(hold), .. },
        Applied::Recorded(Err(Reason::HoldExpired)),
    ) = (&m.kind, applied)
    {
        if before_holds.get(hold) == Some(&now) {
            stats.add("hold_expired_exactly_now");
        }
    }
    if let (MovementKind::Sell { hold: Some(_), .. }, false) = (&m.kind, fx.holds_closed.is_empty()) {
        stats.add("sell_used_up_hold");
    }
    if let MovementKind::Expire { keys_seen_before, .. } = &m.kind {
        if before_key_times.contains(keys_seen_before) {
            stats.add("expire_with_a_key_seen_at_the_bound");
        }
    }
    if fx.levels.iter().any(|v| v.available < 0) {
        stats.add("negative_available");
    }
}

/// What the commands did with lots, serial numbers, allocations and split holds.
fn record_complex_stats(
    stats: &mut Stats,
    now: Millis,
    m: &Movement,
    applied: Applied,
    fx: &Effects,
    before: &Model,
    after: &Model,
) {
    let ok = matches!(applied, Applied::Recorded(Ok(_)));
    let allocated = |model: &Model| model.levels.values().flat_map(|l| l.allocations.iter().map(|a| a.1)).sum::<Qty>();
    match &m.kind {
        MovementKind::Sell { hold: None, units, .. } if ok && units.lot.is_none() && fx.lots.len() >= 2 => {
            stats.add("fefo_took_two_lots")
        }
        MovementKind::Sell { hold: Some(_), units, .. } if ok && !units.serials.is_empty() => {
            stats.add("sold_serials_from_a_hold")
        }
        MovementKind::Sell { hold: None, sku, location, qty, .. }
            if applied == Applied::Recorded(Err(Reason::InsufficientStock))
                && before.level(sku, location).available() >= *qty
                && before.level(sku, location).lots.is_empty() =>
        {
            stats.add("allocation_fenced_a_sale")
        }
        MovementKind::Transfer { .. } if ok && fx.lots.iter().any(|l| l.expired) => {
            stats.add("transfer_of_expired_units")
        }
        MovementKind::Adjust { sku, location, delta, units: Units { lot: Some(lot), .. }, .. }
            if ok && *delta < 0 && before.level(sku, location).lots.get(lot).is_some_and(|l| l.expired) =>
        {
            stats.add("write_off_of_an_expired_lot")
        }
        MovementKind::Commit { hold } | MovementKind::CompleteCommit { hold } if ok && is_split(*hold) => {
            stats.add("committed_a_split_hold")
        }
        _ => {}
    }
    if let (MovementKind::CompleteCommit { hold }, true) = (&m.kind, ok) {
        if before.holds.get(hold).is_some_and(|h| now >= h.expires_at) {
            stats.add("complete_commit_of_an_expired_hold");
        }
    }
    if ok
        && matches!(m.kind, MovementKind::Sell { .. } | MovementKind::Reserve { .. })
        && allocated(after) < allocated(before)
    {
        stats.add("allocation_used");
    }
    if matches!(m.kind, MovementKind::Release { .. } | MovementKind::Expire { .. })
        && allocated(after) > allocated(before)
    {
        stats.add("allocation_given_back");
    }
    for hold in &fx.holds_closed {
        let Some(h) = before.holds.get(hold) else { continue };
        let Some(channel) = &h.channel else { continue };
        let gone = h
            .lines
            .iter()
            .any(|l| l.from_alloc > 0 && !after.level(&l.sku, &l.location).allocations.iter().any(|a| &a.0 == channel));
        if gone && !matches!(m.kind, MovementKind::Commit { .. } | MovementKind::CompleteCommit { .. }) {
            stats.add("released_after_its_allocation_was_removed");
        }
    }
    if ok && matches!(m.kind, MovementKind::Reserve { .. }) && !fx.lots.is_empty() {
        stats.add("hold_took_lots");
    }
    if fx.lots.iter().any(|l| l.on_hand == 0 && l.reserved == 0) {
        stats.add("lot_emptied");
    }
    if ok && !before.committed.is_empty() && after.committed.len() < before.committed.len() {
        stats.add("split_commit_forgotten");
    }
}

fn run_sequence(seed: &[SeedLevel], steps: &[Step], mut stats: Option<&mut Stats>) -> Result<(), TestCaseError> {
    let mut h = Harness::new(seed)?;
    for s in steps {
        h.step(s, stats.as_deref_mut())?;
    }
    Ok(())
}

// ================================================================================================
// The tests
// ================================================================================================

proptest! {
    #![proptest_config(config())]

    /// The core and the model agree on every command of a random sequence.
    #[test]
    fn core_agrees_with_the_reference_model(seed in seed(), steps in steps(steps_max())) {
        run_sequence(&seed, &steps, None)?;
    }

    /// A shard rebuilt from a checkpoint of another behaves exactly like it from then on.
    #[test]
    fn a_shard_restored_from_its_snapshot_behaves_identically(
        seed in seed(),
        before in steps(steps_max() / 2),
        after in steps(steps_max() / 2),
    ) {
        let mut original = Harness::new(&seed)?;
        for s in &before {
            original.step(s, None)?;
        }
        let snapshot = original.core.snapshot();
        let bytes = postcard::to_stdvec(&snapshot).expect("snapshot encodes");
        let decoded: ShardSnapshot = postcard::from_bytes(&bytes).expect("snapshot decodes");
        prop_assert_eq!(&decoded, &snapshot);
        let restored = ShardState::from_snapshot(decoded);
        prop_assert_eq!(&restored.snapshot(), &snapshot);
        let mut copy = original.fork(restored);
        copy.compare_state()?;
        for s in &after {
            let a = original.step(s, None)?;
            let b = copy.step(s, None)?;
            prop_assert_eq!(a, b);
            prop_assert_eq!(original.core.snapshot(), copy.core.snapshot());
        }
    }
}

/// The generators reach every rule: each rejection reason, retries, mismatches, both alerts,
/// expiry of holds, overflow near the limits. Guards the model test against a strategy change
/// that quietly stops exercising part of the core.
#[test]
fn the_generators_reach_every_rule() {
    const CASES: usize = 120;
    let mut runner = TestRunner::deterministic();
    let strategy = (seed(), steps(200));
    let mut stats = Stats::default();
    for _ in 0..CASES {
        let (seed, steps) = strategy.new_tree(&mut runner).expect("a case").current();
        run_sequence(&seed, &steps, Some(&mut stats)).expect("core agrees with the model");
    }
    let required = [
        "ok:receive",
        "ok:expect",
        "ok:sell",
        "ok:sell_from_hold",
        "ok:return",
        "ok:adjust",
        "ok:count",
        "ok:count_with_variance",
        "ok:transfer",
        "ok:reserve",
        "ok:commit",
        "ok:release",
        "ok:set_settings",
        "ok:expire",
        "err:insufficient_stock",
        "err:unknown_hold",
        "err:hold_expired",
        "err:invalid_quantity",
        "err:quantity_overflow",
        "err:invalid_field",
        "err:same_location",
        "err:hold_line_missing",
        "err:invalid_expiry",
        "err:invalid_lines",
        "err:invalid_settings",
        "retry",
        "mismatch",
        "alert:Reorder",
        "alert:OutOfStock",
        "expire_closed_holds",
        "expire_closed_a_hold_expiring_at_the_bound",
        "hold_expired_exactly_now",
        "expire_with_a_key_seen_at_the_bound",
        "sell_used_up_hold",
        "negative_available",
        // Complex inventory.
        "ok:allocate",
        "ok:set_sku_settings",
        "ok:complete_commit",
        "err:unknown_lot",
        "err:lot_expired",
        "err:invalid_lot",
        "err:lot_required",
        "err:invalid_serials",
        "err:serial_in_stock",
        "err:serial_not_in_stock",
        "err:serial_not_sold",
        "err:kit_not_stocked",
        "err:invalid_kit",
        "err:invalid_allocation",
        "alert:LotExpiring",
        "alert:LotExpired",
        "fefo_took_two_lots",
        "sold_serials_from_a_hold",
        "allocation_fenced_a_sale",
        "transfer_of_expired_units",
        "write_off_of_an_expired_lot",
        "committed_a_split_hold",
        "complete_commit_of_an_expired_hold",
        "allocation_used",
        "allocation_given_back",
        "released_after_its_allocation_was_removed",
        "hold_took_lots",
        "lot_emptied",
    ];
    eprintln!("what {CASES} generated sequences did: {:#?}", stats.counts);
    let missing: Vec<&str> = required.iter().copied().filter(|r| !stats.counts.contains_key(*r)).collect();
    assert!(missing.is_empty(), "never reached: {missing:?}\nreached: {:#?}", stats.counts);
}

fn mv(key: Option<&str>, kind: MovementKind) -> Movement {
    Movement { key: key.map(Into::into), channel: "web".into(), reference: None, occurred_at: None, kind }
}

fn apply(s: &mut ShardState, now: Millis, m: &Movement) -> (Applied, Effects) {
    let mut fx = Effects::default();
    let seq = s.last_seq() + 1;
    let a = s.apply(now, seq, m, body_hash(m), &mut fx);
    (a, fx)
}

/// Hand-computed values for one short story, so the model itself is checked against arithmetic
/// done by a person and not only against the core.
#[test]
fn a_worked_example_matches_hand_computed_values() {
    let sell = |qty, hold| MovementKind::Sell {
        sku: "A".into(),
        location: "dc".into(),
        qty,
        unit_price: None,
        hold,
        allow_negative: false,
        units: Units::ANY,
    };
    let mut s = ShardState::new();
    let mut model = Model::default();
    let mut now = T0;
    let mut run = |s: &mut ShardState, now: Millis, m: Movement| {
        let seq = model.last_seq + 1;
        let mut fx = Effects::default();
        let got = s.apply(now, seq, &m, body_hash(&m), &mut fx);
        let (want, want_fx) = model.apply(now, seq, &m);
        assert_eq!((got, &fx), (want, &want_fx), "{m:?}");
        (got, fx)
    };
    let settings = Settings { reorder_point: Some(4), safety_stock: 1, ..Settings::default() };
    run(&mut s, now, mv(None, MovementKind::SetSettings { sku: "A".into(), location: "dc".into(), settings }));
    run(&mut s, now, mv(None, MovementKind::Expect { sku: "A".into(), location: "dc".into(), qty: 12 }));
    let mut receive = mv(
        None,
        MovementKind::Receive { sku: "A".into(), location: "dc".into(), qty: 10, unit_cost: None, units: Units::ANY },
    );
    receive.reference = Some("PO-1".into());
    run(&mut s, now, receive);
    let v = s.level("A", "dc").unwrap();
    assert_eq!((v.on_hand, v.incoming, v.available), (10, 2, 9));
    let reserve = mv(
        Some("cart"),
        MovementKind::Reserve {
            hold: 7 << HOLD_SHARD_BITS | 1,
            lines: vec![Line {
                sku: "A".into(),
                location: "dc".into(),
                qty: 3,
                unit_price: Some(250),
                kit: None,
                units: Units::ANY,
            }],
            expires_at: now + 1_000,
        },
    );
    let (r, _) = run(&mut s, now, reserve.clone());
    assert_eq!(r, Applied::Recorded(Ok(Detail::Hold(7 << HOLD_SHARD_BITS | 1))));
    // A retry with a different engine-assigned id is still the same body.
    let mut retry = reserve;
    if let MovementKind::Reserve { hold, .. } = &mut retry.kind {
        *hold = 8 << HOLD_SHARD_BITS | 1;
    }
    assert_eq!(
        run(&mut s, now, retry).0,
        Applied::Retry { seq: 4, outcome: Ok(Detail::Hold(7 << HOLD_SHARD_BITS | 1)) }
    );
    // available 9 - 3 = 6; selling 5 from the hold takes 3 held and 2 more: available 4, at the
    // reorder point.
    now += 10;
    let (r, fx) = run(&mut s, now, mv(None, sell(5, Some(7 << HOLD_SHARD_BITS | 1))));
    assert_eq!(r, Applied::Recorded(Ok(Detail::None)));
    assert_eq!(fx.holds_closed, vec![7 << HOLD_SHARD_BITS | 1]);
    assert_eq!(
        fx.alerts,
        vec![Alert {
            kind: AlertKind::Reorder,
            sku: "A".into(),
            location: "dc".into(),
            available: 4,
            reorder_point: Some(4),
            lot: None
        }]
    );
    let v = s.level("A", "dc").unwrap();
    assert_eq!((v.on_hand, v.reserved, v.available), (5, 0, 4));
    // Selling 4 more reaches zero: out of stock (the reorder alert is not raised again).
    let (_, fx) = run(&mut s, now, mv(None, sell(4, None)));
    assert_eq!(fx.alerts.iter().map(|a| (a.kind, a.available)).collect::<Vec<_>>(), vec![(AlertKind::OutOfStock, 0)]);
    assert_eq!(run(&mut s, now, mv(None, sell(1, None))).0, Applied::Recorded(Err(Reason::InsufficientStock)));
    // A count finds 3: variance 3 - 1 = 2.
    let (r, _) = run(
        &mut s,
        now,
        mv(None, MovementKind::Count { sku: "A".into(), location: "dc".into(), counted: 3, units: Units::ANY }),
    );
    assert_eq!(r, Applied::Recorded(Ok(Detail::Variance(2))));
    assert_eq!(s.level("A", "dc").unwrap().available, 2);
}

/// Reproduction: an adjustment by `i64::MIN` must be rejected as `invalid_quantity`, not make
/// the shard panic ("attempt to negate with overflow" in `delta.abs()` in a debug build; a
/// wrapped negative magnitude in release).
#[test]
fn an_adjustment_by_i64_min_is_an_invalid_quantity() {
    let mut s = ShardState::new();
    let m = mv(
        Some("adj"),
        MovementKind::Adjust {
            sku: "A".into(),
            location: "dc".into(),
            delta: i64::MIN,
            reason: AdjustReason::Correction,
            allow_negative: true,
            units: Units::ANY,
        },
    );
    let (applied, fx) = apply(&mut s, T0, &m);
    assert_eq!(applied, Applied::Recorded(Err(Reason::InvalidQuantity)));
    assert_eq!(fx, Effects::default());
    assert_eq!(s.level("A", "dc"), None);
}

/// Reproduction: a reservation that names the same level twice is malformed whatever the stock,
/// so it is `invalid_lines`; the core used to look the levels up first and answer
/// `insufficient_stock` when the level was missing or short, so the client could not tell a
/// malformed request from a stock problem.
#[test]
fn a_reservation_naming_a_level_twice_is_invalid_lines_whatever_the_stock() {
    let line =
        |qty| Line { sku: "A".into(), location: "dc".into(), qty, unit_price: None, kit: None, units: Units::ANY };
    let reserve =
        |id: u64, lines| mv(None, MovementKind::Reserve { hold: id << HOLD_SHARD_BITS | 1, lines, expires_at: T0 + 1 });
    let mut s = ShardState::new();
    // The level does not exist yet.
    assert_eq!(apply(&mut s, T0, &reserve(1, vec![line(1), line(1)])).0, Applied::Recorded(Err(Reason::InvalidLines)));
    apply(
        &mut s,
        T0,
        &mv(
            None,
            MovementKind::Receive {
                sku: "A".into(),
                location: "dc".into(),
                qty: 1,
                unit_cost: None,
                units: Units::ANY,
            },
        ),
    );
    // The first line alone is more than is available.
    assert_eq!(apply(&mut s, T0, &reserve(2, vec![line(5), line(1)])).0, Applied::Recorded(Err(Reason::InvalidLines)));
    // Enough stock for both.
    assert_eq!(apply(&mut s, T0, &reserve(3, vec![line(1), line(1)])).0, Applied::Recorded(Err(Reason::InvalidLines)));
    assert_eq!(s.level("A", "dc").map(|v| (v.on_hand, v.reserved)), Some((1, 0)));
    assert_eq!(s.holds().count(), 0);
}
