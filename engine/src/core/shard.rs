//! One shard's stock: levels, holds, idempotency keys and settings for the SKUs it owns, and the
//! deterministic rules that change them.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or spawns. `apply` is a pure
//! function of the state, the command and the time it is given, so the live engine, recovery
//! (replay of the log) and the model tests all run this same code.

use super::interner::Interner;
use super::key_log::{KeyEntry, KeyIndex, KeyLog, KeysSnapshot};
use super::types::*;
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

const NONE: Qty = -1;
/// Holds one `Expire` drops at most (each adds its lines' levels to the record's effects).
pub const EXPIRE_HOLDS_MAX: usize = 1_000;
const NONE_ORDER_QTY: u32 = u32::MAX;
/// Largest `reorder_qty` or `max_qty` a level keeps.
pub const ORDER_QTY_MAX: Qty = u32::MAX as Qty - 1;
/// No level: the end of a SKU's chain of levels.
const NO_SLOT: u32 = u32::MAX;
const FLAG_ORDER_UP_TO_MAX: u8 = 1;
const FLAG_REORDER_ALERTED: u8 = 2;
const FLAG_OUT_OF_STOCK_ALERTED: u8 = 4;

/// The stored state of one (SKU, location). 64 bytes; settings live inline because the hot
/// path needs the reorder point and safety stock on every change. The levels of one SKU form a
/// chain (`next_of_sku`) starting at `ShardState::sku_first_level`, so no separate index by
/// (SKU, location) is needed: this keeps a level at under 100 bytes beyond its SKU string.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Level {
    on_hand: Qty,
    reserved: Qty,
    unsellable: Qty,
    incoming: Qty,
    safety_stock: Qty,
    /// `NONE` when unset.
    reorder_point: Qty,
    /// `reorder_qty`, or `max_qty` when `FLAG_ORDER_UP_TO_MAX`; `NONE_ORDER_QTY` when unset.
    order_qty: u32,
    lead_time_days: u16,
    flags: u8,
    /// The next level of the same SKU, or `NO_SLOT` (not stored in checkpoints).
    #[serde(skip)]
    next_of_sku: u32,
    /// The location's interned id (not stored in checkpoints).
    #[serde(skip)]
    location: u32,
}

const _: () = assert!(std::mem::size_of::<Level>() == 64, "a level must stay 64 bytes (memory target)");

/// Equal quantities and settings (chain links are where a level is stored, not what it is).
impl PartialEq for Level {
    fn eq(&self, o: &Level) -> bool {
        (self.on_hand, self.reserved, self.unsellable, self.incoming, self.safety_stock, self.reorder_point)
            == (o.on_hand, o.reserved, o.unsellable, o.incoming, o.safety_stock, o.reorder_point)
            && (self.order_qty, self.lead_time_days, self.flags) == (o.order_qty, o.lead_time_days, o.flags)
    }
}
impl Eq for Level {}

impl Level {
    fn new() -> Level {
        Level { reorder_point: NONE, order_qty: NONE_ORDER_QTY, next_of_sku: NO_SLOT, ..Level::default() }
    }

    fn available(&self) -> Qty {
        self.on_hand - self.reserved - self.unsellable - self.safety_stock
    }

    fn settings(&self) -> Settings {
        let order_qty = (self.order_qty != NONE_ORDER_QTY).then_some(self.order_qty as Qty);
        let up_to_max = self.flags & FLAG_ORDER_UP_TO_MAX != 0;
        Settings {
            reorder_point: (self.reorder_point != NONE).then_some(self.reorder_point),
            reorder_qty: if up_to_max { None } else { order_qty },
            max_qty: if up_to_max { order_qty } else { None },
            safety_stock: self.safety_stock,
            lead_time_days: self.lead_time_days,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HoldLine {
    sku: u32,
    location: u32,
    slot: u32,
    qty: Qty,
    unit_price: Option<i64>,
    /// The lots held, in the order they are consumed: (lot code id, quantity).
    lots: Vec<(u32, Qty)>,
    /// The serial numbers held (ids in `serial_names`).
    serials: Vec<u32>,
    /// Units taken from the hold's channel allocation (given back on release).
    from_alloc: Qty,
    kit: Option<KitRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Hold {
    expires_at: Millis,
    /// The channel that placed it (interned in `channels`), if it took allocated units;
    /// `NO_CHANNEL` otherwise.
    channel: u32,
    lines: Vec<HoldLine>,
}

/// One lot at one level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lot {
    /// Lot code id (in `lot_codes`).
    code: u32,
    expires_at: Millis,
    on_hand: Qty,
    reserved: Qty,
    expired: bool,
    warned: bool,
}

impl Lot {
    fn free(&self) -> Qty {
        self.on_hand - self.reserved
    }
}

/// What only some levels have: lots (in first-expiry-first-out order) and channel allocations.
/// Kept beside the 64-byte level (flag `FLAG_EXTRAS`), so plain levels pay nothing for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extras {
    /// The level's SKU id (levels do not store it: they are chained per SKU).
    sku: u32,
    lots: Vec<Lot>,
    /// (channel id, units still ring-fenced for it).
    allocations: Vec<(u32, Qty)>,
}

impl Extras {
    fn lot(&self, code: u32) -> Option<&Lot> {
        self.lots.iter().find(|l| l.code == code)
    }

    fn lot_mut(&mut self, code: u32) -> Option<&mut Lot> {
        self.lots.iter_mut().find(|l| l.code == code)
    }

    fn allocation(&self, channel: u32) -> Qty {
        self.allocations.iter().find(|a| a.0 == channel).map_or(0, |a| a.1)
    }
}

/// One serial number of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SerialEntry {
    location: u32,
    status: SerialStatus,
    /// (seq, time, movement kind, location id).
    history: Vec<(Seq, Millis, &'static str, u32)>,
}

/// Which units a take (sell, hold, transfer, write-off) uses at one level.
#[derive(Debug, Default)]
struct Take {
    lots: Vec<(u32, Qty)>,
    serials: Vec<u32>,
    from_alloc: Qty,
}

/// How long a shard remembers that it committed its part of a hold split over shards: recovery
/// completes the other parts of a commit cut by a crash (see `CompleteCommit`). The parts are sent
/// together, so the others are durable within milliseconds unless the engine is badly overloaded.
const COMMITTED_KEEP_MILLIS: Millis = 60_000;
/// A hold that took no allocated units remembers no channel.
const NO_CHANNEL: u32 = u32::MAX;
/// Level flag: the level has an entry in `ShardState::extras`.
const FLAG_EXTRAS: u8 = 8;

/// What `apply` did with a movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new movement: decided, changed the state if accepted; it takes the sequence number it
    /// was given and must be logged.
    Recorded(Outcome),
    /// A retry of a movement recorded earlier as `seq`: its first outcome, nothing changed,
    /// nothing to log.
    Retry { seq: Seq, outcome: Outcome },
    /// The key was used earlier for a different body: rejected, nothing changed, nothing to log.
    Mismatch,
}

impl Applied {
    pub fn outcome(&self) -> Outcome {
        match *self {
            Applied::Recorded(o) | Applied::Retry { outcome: o, .. } => o,
            Applied::Mismatch => Err(Reason::IdempotencyMismatch),
        }
    }
}

/// One shard's state machine.
#[derive(Default)]
pub struct ShardState {
    /// Highest sequence number applied (recorded) by this shard.
    last_seq: Seq,
    skus: Interner,
    locations: Interner,
    /// First level of each SKU (by interned id), or `NO_SLOT`.
    sku_first_level: Vec<u32>,
    levels: Vec<Level>,
    holds: AHashMap<HoldId, Hold>,
    hold_expiry: BTreeSet<(Millis, HoldId)>,
    /// Idempotency keys by key hash: their positions in `key_order`.
    keys: KeyIndex,
    /// The keys' entries in arrival order, for expiry and checkpoints.
    key_order: KeyLog,
    /// Level views given back by `recycle`, reused by the next effects (not state).
    spare_views: Vec<LevelView>,
    /// The same for lot views.
    spare_lot_views: Vec<LotView>,
    channels: Interner,
    lot_codes: Interner,
    serial_names: Interner,
    /// Lots and allocations of the levels that have any (by slot).
    extras: AHashMap<u32, Extras>,
    /// Expiry of every lot code seen, per (SKU id, lot code id): a lot's expiry is the same at
    /// every location.
    lot_expiry: AHashMap<(u32, u32), Millis>,
    /// Lots by expiry time, and by the time their `expiring` warning is due: (time, slot, code).
    lots_due: BTreeSet<(Millis, u32, u32)>,
    lot_warnings_due: BTreeSet<(Millis, u32, u32)>,
    /// SKU settings that differ from the default, by SKU id.
    sku_settings: AHashMap<u32, SkuSettings>,
    /// Serial numbers by (SKU id, serial id).
    serials: AHashMap<(u32, u32), SerialEntry>,
    /// Holds split over several shards whose part this shard committed, with their expiry.
    /// (when committed, hold): kept `COMMITTED_KEEP_MILLIS`, oldest first.
    committed_split_holds: BTreeSet<(Millis, HoldId)>,
}

/// Stable hash of an idempotency key (the key itself is not stored).
pub fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// Stable hash of a movement's body as the client sent it, for telling a retry from a reuse of
/// its key: xxh3-64 of its postcard encoding, with an engine-assigned hold id set to 0. The
/// engine computes it once, at submission, over the whole movement (a reservation split over
/// shards keeps the hash of the whole), and logs it with the record.
pub fn body_hash(movement: &Movement) -> u64 {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut client_form;
    let movement = match &movement.kind {
        MovementKind::Reserve { hold, .. } if *hold != 0 => {
            client_form = movement.clone();
            if let MovementKind::Reserve { hold, .. } = &mut client_form.kind {
                *hold = 0;
            }
            &client_form
        }
        _ => movement,
    };
    SCRATCH.with(|scratch| {
        let mut buf = std::mem::take(&mut *scratch.borrow_mut());
        buf.clear();
        buf = postcard::to_extend(movement, buf).expect("movement encodes");
        let hash = body_hash_of_bytes(&buf);
        *scratch.borrow_mut() = buf;
        hash
    })
}

fn check_text(s: &str, max: usize) -> Result<(), Reason> {
    if s.is_empty() || s.len() > max {
        Err(Reason::InvalidField)
    } else {
        Ok(())
    }
}

fn check_qty(q: Qty) -> Result<(), Reason> {
    if (1..=MOVEMENT_QTY_MAX).contains(&q) {
        Ok(())
    } else {
        Err(Reason::InvalidQuantity)
    }
}

/// `a + b`, or `quantity_overflow` past the largest level quantity.
fn add(a: Qty, b: Qty) -> Result<Qty, Reason> {
    let sum = a + b; // both are bounded far below i64::MAX
    if sum.abs() > LEVEL_QTY_MAX {
        Err(Reason::QuantityOverflow)
    } else {
        Ok(sum)
    }
}

/// [`body_hash`] of a movement from its postcard bytes as a client sent them (the server hashes
/// them as they came instead of encoding the decoded movement again). A client that encodes the
/// same movement into other bytes (postcard allows longer varints than needed) gets another hash:
/// a retry must send the same bytes, as every postcard encoder does for the same movement.
pub fn body_hash_of_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Checks every text field's length and the number of lines and serial numbers: what bounds a
/// record's size. The engine refuses a movement that fails this before it reaches a shard.
pub fn check_sizes(m: &Movement) -> Result<(), Reason> {
    if let Some(key) = &m.key {
        check_text(key, IDEMPOTENCY_KEY_BYTES_MAX)?;
    }
    check_text(&m.channel, CHANNEL_BYTES_MAX)?;
    if let Some(r) = &m.reference {
        check_text(r, REFERENCE_BYTES_MAX)?;
    }
    match &m.kind {
        MovementKind::Receive { sku, location, units, .. }
        | MovementKind::Sell { sku, location, units, .. }
        | MovementKind::Return { sku, location, units, .. }
        | MovementKind::Adjust { sku, location, units, .. }
        | MovementKind::Count { sku, location, units, .. } => {
            check_level_key(sku, location)?;
            check_unit_sizes(units)
        }
        MovementKind::Expect { sku, location, .. } | MovementKind::SetSettings { sku, location, .. } => {
            check_level_key(sku, location)
        }
        MovementKind::Transfer { sku, from, to, units, .. } => {
            check_level_key(sku, from)?;
            check_text(to, LOCATION_BYTES_MAX)?;
            check_unit_sizes(units)
        }
        MovementKind::Reserve { lines, .. } => {
            if lines.len() > HOLD_LINES_MAX {
                return Err(Reason::InvalidLines);
            }
            let serials: usize = lines.iter().map(|l| l.units.serials.len()).sum();
            if serials > SERIALS_PER_LINE_MAX {
                return Err(Reason::InvalidSerials);
            }
            lines.iter().try_for_each(|l| {
                check_level_key(&l.sku, &l.location)?;
                check_unit_sizes(&l.units)?;
                l.kit.as_ref().map_or(Ok(()), |k| check_text(&k.sku, SKU_BYTES_MAX))
            })
        }
        MovementKind::Allocate { sku, location, channel, .. } => {
            check_level_key(sku, location)?;
            check_text(channel, CHANNEL_BYTES_MAX)
        }
        MovementKind::SetSkuSettings { sku, settings } => {
            check_text(sku, SKU_BYTES_MAX)?;
            if settings.components.len() > KIT_COMPONENTS_MAX {
                return Err(Reason::InvalidKit);
            }
            settings.components.iter().try_for_each(|c| check_text(&c.sku, SKU_BYTES_MAX))
        }
        MovementKind::Commit { .. }
        | MovementKind::Release { .. }
        | MovementKind::Expire { .. }
        | MovementKind::CompleteCommit { .. } => Ok(()),
    }
}

fn check_unit_sizes(units: &Units) -> Result<(), Reason> {
    if let Some(lot) = &units.lot {
        check_text(lot, LOT_BYTES_MAX)?;
    }
    if units.serials.len() > SERIALS_PER_LINE_MAX {
        return Err(Reason::InvalidSerials);
    }
    units.serials.iter().try_for_each(|s| check_text(s, SERIAL_BYTES_MAX))
}

fn check_level_key(sku: &str, location: &str) -> Result<(), Reason> {
    check_text(sku, SKU_BYTES_MAX)?;
    check_text(location, LOCATION_BYTES_MAX)
}

/// Whether a hold id names parts on more than one shard.
fn is_split(hold: HoldId) -> bool {
    hold_shard_mask(hold).count_ones() > 1
}

impl ShardState {
    pub fn new() -> ShardState {
        ShardState::default()
    }

    /// Highest sequence number this shard has recorded.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Applies one movement at time `now`. `seq` is the sequence number the movement gets if it
    /// is recorded; `body_hash` is [`body_hash`] of the movement. Effects of a recorded movement
    /// are appended to `fx`.
    pub fn apply(&mut self, now: Millis, seq: Seq, movement: &Movement, body_hash: u64, fx: &mut Effects) -> Applied {
        let key = match check_sizes(movement) {
            Err(reason) => return self.record(seq, Err(reason)),
            Ok(()) => movement.key.as_deref().map(key_hash),
        };
        if let Some(k) = key {
            if let Some((_, entry)) = self.keys.get(k).and_then(|at| self.key_order.get(at)) {
                return if entry.body_hash == body_hash {
                    Applied::Retry { seq: entry.seq, outcome: entry.outcome }
                } else {
                    Applied::Mismatch
                };
            }
        }
        let levels_before = fx.levels.len();
        let outcome = self.apply_kind(now, seq, movement, fx);
        debug_assert!(outcome.is_ok() || fx.levels.len() == levels_before, "a rejection changed a level");
        if let Some(k) = key {
            let entry = KeyEntry { body_hash, seen_at: now, seq, outcome };
            let at = self.key_order.push_back(k, entry);
            self.keys.insert(k, at);
        }
        self.record(seq, outcome)
    }

    fn record(&mut self, seq: Seq, outcome: Outcome) -> Applied {
        debug_assert!(seq > self.last_seq, "sequence numbers must increase");
        self.last_seq = seq;
        Applied::Recorded(outcome)
    }

    fn apply_kind(&mut self, now: Millis, seq: Seq, m: &Movement, fx: &mut Effects) -> Outcome {
        let kind_name = m.kind.name();
        match &m.kind {
            MovementKind::Receive { sku, location, qty, units, .. } => {
                self.put(now, seq, kind_name, sku, location, *qty, units, PutKind::Receive(m.reference.is_some()), fx)
            }
            MovementKind::Expect { sku, location, qty } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                self.check_stocked(sku)?;
                let slot = self.slot_or_new(sku, location);
                let l = &mut self.levels[slot as usize];
                l.incoming = add(l.incoming, *qty)?;
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Sell { sku, location, qty, hold, allow_negative, units, .. } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                self.check_stocked(sku)?;
                self.check_serial_count(sku, units, *qty)?;
                match hold {
                    None => {
                        let out = TakeOut::Sold(seq, now, kind_name);
                        self.take(now, sku, location, *qty, units, Some(&m.channel), *allow_negative, out, fx)
                    }
                    Some(h) => {
                        self.sell_from_hold(now, seq, *h, sku, location, *qty, &m.channel, *allow_negative, units, fx)
                    }
                }
            }
            MovementKind::Return { sku, location, qty, condition, units, .. } => {
                self.put(now, seq, kind_name, sku, location, *qty, units, PutKind::Return(*condition), fx)
            }
            MovementKind::Adjust { sku, location, delta, allow_negative, units, .. } => {
                check_level_key(sku, location)?;
                // `i64::MIN` has no absolute value: it is as invalid as any other too-large delta.
                check_qty(delta.checked_abs().unwrap_or(Qty::MAX))?;
                if *delta > 0 {
                    return self.put(now, seq, kind_name, sku, location, *delta, units, PutKind::Found, fx);
                }
                self.check_stocked(sku)?;
                self.check_serial_count(sku, units, -*delta)?;
                let out = TakeOut::WrittenOff(seq, now, kind_name);
                self.take(now, sku, location, -*delta, units, None, *allow_negative, out, fx)
            }
            MovementKind::Count { sku, location, counted, units } => {
                check_level_key(sku, location)?;
                if !(0..=MOVEMENT_QTY_MAX).contains(counted) {
                    return Err(Reason::InvalidQuantity);
                }
                self.check_stocked(sku)?;
                if self.is_serial_tracked(sku) || !units.serials.is_empty() {
                    // Serial-tracked stock is corrected unit by unit, with `adjust` naming serials.
                    return Err(Reason::InvalidSerials);
                }
                if units.lot_expires_at.is_some() {
                    return Err(Reason::InvalidLot);
                }
                self.count(sku, location, *counted, units.lot.as_deref(), fx)
            }
            MovementKind::Transfer { sku, from, to, qty, units } => {
                check_level_key(sku, from)?;
                check_text(to, LOCATION_BYTES_MAX)?;
                check_qty(*qty)?;
                if from == to {
                    return Err(Reason::SameLocation);
                }
                self.check_stocked(sku)?;
                self.check_serial_count(sku, units, *qty)?;
                self.transfer(now, seq, sku, from, to, *qty, units, fx)
            }
            MovementKind::Reserve { hold, lines, expires_at } => {
                self.reserve(now, seq, *hold, &m.channel, lines, *expires_at, fx)
            }
            MovementKind::Commit { hold } => {
                let h = self.holds.get(hold).ok_or(Reason::UnknownHold)?;
                if now >= h.expires_at {
                    return Err(Reason::HoldExpired);
                }
                self.commit(now, seq, *hold, fx);
                Ok(Detail::None)
            }
            MovementKind::CompleteCommit { hold } => {
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.commit(now, seq, *hold, fx);
                Ok(Detail::None)
            }
            MovementKind::Release { hold } => {
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.release(now, seq, *hold, fx);
                Ok(Detail::None)
            }
            MovementKind::SetSettings { sku, location, settings } => {
                check_level_key(sku, location)?;
                let s = settings;
                let quantities = [s.reorder_point, s.reorder_qty, s.max_qty, Some(s.safety_stock)];
                if quantities.iter().flatten().any(|q| !(0..=MOVEMENT_QTY_MAX).contains(q))
                    || [s.reorder_qty, s.max_qty].iter().flatten().any(|&q| q > ORDER_QTY_MAX)
                    || (s.reorder_qty.is_some() && s.max_qty.is_some())
                {
                    return Err(Reason::InvalidSettings);
                }
                self.check_stocked(sku)?;
                let slot = self.slot_or_new(sku, location);
                let l = &mut self.levels[slot as usize];
                l.reorder_point = s.reorder_point.unwrap_or(NONE);
                l.order_qty = s.reorder_qty.or(s.max_qty).map_or(NONE_ORDER_QTY, |q| q as u32);
                l.safety_stock = s.safety_stock;
                l.lead_time_days = s.lead_time_days;
                l.flags &= !FLAG_ORDER_UP_TO_MAX;
                if s.max_qty.is_some() {
                    l.flags |= FLAG_ORDER_UP_TO_MAX;
                }
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max } => {
                // At most EXPIRE_HOLDS_MAX holds and lots per record, so that the record stays
                // small; the rest are still due and go with the next expiry.
                let mut budget = EXPIRE_HOLDS_MAX;
                while budget > 0 {
                    match self.hold_expiry.first() {
                        Some(&(at, hold)) if at <= *holds_expired_by => self.release(now, seq, hold, fx),
                        _ => break,
                    }
                    budget -= 1;
                }
                // Lots only once every hold due is gone: a hold never outlives the lots it holds.
                if budget > 0 {
                    self.expire_lots(*holds_expired_by, budget, fx);
                }
                while let Some(&(k, KeyEntry { seen_at, .. })) = self.key_order.front() {
                    if seen_at >= *keys_seen_before && self.key_order.len() as u64 <= *keys_max {
                        break;
                    }
                    self.key_order.pop_front();
                    self.keys.remove(k);
                }
                while let Some(&(at, _)) = self.committed_split_holds.first() {
                    if at + COMMITTED_KEEP_MILLIS > *holds_expired_by {
                        break;
                    }
                    self.committed_split_holds.pop_first();
                }
                Ok(Detail::None)
            }
            MovementKind::Allocate { sku, location, channel, qty } => {
                check_level_key(sku, location)?;
                check_text(channel, CHANNEL_BYTES_MAX)?;
                if !(0..=MOVEMENT_QTY_MAX).contains(qty) {
                    return Err(Reason::InvalidAllocation);
                }
                self.check_stocked(sku)?;
                let channel = self.channels.intern(channel);
                let slot = self.slot_or_new(sku, location);
                let sku_id = self.skus.intern(sku);
                let x = self.extras.entry(slot).or_insert_with(|| Extras { sku: sku_id, ..Extras::default() });
                match x.allocations.iter().position(|a| a.0 == channel) {
                    Some(i) if *qty == 0 => {
                        x.allocations.remove(i);
                    }
                    Some(i) => x.allocations[i].1 = *qty,
                    None if *qty == 0 => {}
                    None if x.allocations.len() >= ALLOCATIONS_PER_LEVEL_MAX => {
                        self.drop_extras_if_empty(slot);
                        return Err(Reason::InvalidAllocation);
                    }
                    None => x.allocations.push((channel, *qty)),
                }
                self.levels[slot as usize].flags |= FLAG_EXTRAS;
                self.drop_extras_if_empty(slot);
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::SetSkuSettings { sku, settings } => self.set_sku_settings(sku, settings),
        }
    }

    // ---- SKU settings ----

    fn sku_settings_of(&self, sku: &str) -> Option<&SkuSettings> {
        if self.sku_settings.is_empty() {
            return None; // the common case: no SKU with settings, no lookup
        }
        self.skus.get(sku).and_then(|id| self.sku_settings.get(&id))
    }

    fn is_serial_tracked(&self, sku: &str) -> bool {
        self.sku_settings_of(sku).is_some_and(|s| s.serial_tracked)
    }

    /// Kits have no stock of their own: movements of stock name their components.
    fn check_stocked(&self, sku: &str) -> Result<(), Reason> {
        if self.sku_settings_of(sku).is_some_and(|s| s.is_kit()) {
            Err(Reason::KitNotStocked)
        } else {
            Ok(())
        }
    }

    /// Serial numbers: exactly `qty` distinct ones for a serial-tracked SKU, none otherwise; and
    /// no lot on a serial-tracked SKU.
    fn check_serial_count(&self, sku: &str, units: &Units, qty: Qty) -> Result<(), Reason> {
        if !self.is_serial_tracked(sku) {
            return if units.serials.is_empty() { Ok(()) } else { Err(Reason::InvalidSerials) };
        }
        if units.lot.is_some() || units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        if units.serials.len() as Qty != qty {
            return Err(Reason::InvalidSerials);
        }
        let mut seen: Vec<&str> = units.serials.iter().map(String::as_str).collect();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(Reason::InvalidSerials);
        }
        Ok(())
    }

    fn set_sku_settings(&mut self, sku: &str, new: &SkuSettings) -> Outcome {
        if new.is_kit() {
            if new.serial_tracked || new.components.len() > KIT_COMPONENTS_MAX {
                return Err(Reason::InvalidKit);
            }
            for (i, c) in new.components.iter().enumerate() {
                if c.sku == sku
                    || !(1..=KIT_COMPONENT_QTY_MAX).contains(&c.qty)
                    || new.components[..i].iter().any(|d| d.sku == c.sku)
                {
                    return Err(Reason::InvalidKit);
                }
            }
        }
        let old = self.sku_settings_of(sku).cloned().unwrap_or_default();
        let sku_id = self.skus.intern(sku);
        let has_stock = self.sku_slots(sku_id).any(|slot| {
            let l = &self.levels[slot as usize];
            l.on_hand != 0
                || l.reserved != 0
                || l.incoming != 0
                || self.extras.get(&slot).is_some_and(|x| !x.lots.is_empty())
        });
        if new.is_kit() && !old.is_kit() && (has_stock || self.serials.keys().any(|&(s, _)| s == sku_id)) {
            return Err(Reason::InvalidKit);
        }
        if new.serial_tracked != old.serial_tracked && has_stock {
            return Err(Reason::InvalidSettings);
        }
        if new.expiry_warning_days != old.expiry_warning_days {
            // Warnings not raised yet follow the new setting.
            let slots: Vec<u32> = self.sku_slots(sku_id).collect();
            for slot in slots {
                let Some(x) = self.extras.get(&slot) else { continue };
                for lot in x.lots.iter().filter(|l| !l.warned && !l.expired) {
                    if let Some(at) = warn_at(old.expiry_warning_days, lot.expires_at) {
                        self.lot_warnings_due.remove(&(at, slot, lot.code));
                    }
                    if let Some(at) = warn_at(new.expiry_warning_days, lot.expires_at) {
                        self.lot_warnings_due.insert((at, slot, lot.code));
                    }
                }
            }
        }
        if *new == SkuSettings::default() {
            self.sku_settings.remove(&sku_id);
        } else {
            self.sku_settings.insert(sku_id, new.clone());
        }
        Ok(Detail::None)
    }

    // ---- putting stock in: receive, return, found ----

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        now: Millis,
        seq: Seq,
        kind_name: &'static str,
        sku: &str,
        location: &str,
        qty: Qty,
        units: &Units,
        how: PutKind,
        fx: &mut Effects,
    ) -> Outcome {
        check_level_key(sku, location)?;
        check_qty(qty)?;
        self.check_stocked(sku)?;
        self.check_serial_count(sku, units, qty)?;
        // Serial numbers: a receive or a find brings in units not in stock; a return, sold ones.
        let sku_id_now = if units.is_any() { None } else { self.skus.get(sku) };
        for serial in &units.serials {
            let entry = sku_id_now.zip(self.serial_names.get(serial)).and_then(|(s, n)| self.serials.get(&(s, n)));
            match (how, entry.map(|e| e.status)) {
                (_, Some(SerialStatus::InStock | SerialStatus::Reserved(_))) => return Err(Reason::SerialInStock),
                (PutKind::Return(_), Some(SerialStatus::Sold)) => {}
                (PutKind::Return(_), _) => return Err(Reason::SerialNotSold),
                _ => {}
            }
        }
        let lot = match &units.lot {
            None if units.lot_expires_at.is_some() => return Err(Reason::InvalidLot),
            None => None,
            Some(code) => {
                let known =
                    sku_id_now.zip(self.lot_codes.get(code)).and_then(|(s, c)| self.lot_expiry.get(&(s, c))).copied();
                let expires_at = match (known, units.lot_expires_at) {
                    (Some(k), Some(given)) if k != given => return Err(Reason::InvalidLot),
                    (Some(k), _) => k,
                    (None, Some(given)) => given,
                    (None, None) => return Err(Reason::InvalidLot),
                };
                if matches!(how, PutKind::Receive(_)) && expires_at <= now {
                    return Err(Reason::LotExpired);
                }
                Some((code.as_str(), expires_at))
            }
        };
        let slot = self.slot_or_new(sku, location);
        let l = &self.levels[slot as usize];
        let on_hand = add(l.on_hand, qty)?;
        let mut unsellable = match how {
            PutKind::Return(ReturnCondition::Damaged) => add(l.unsellable, qty)?,
            _ => l.unsellable,
        };
        let incoming = match how {
            PutKind::Receive(true) => l.incoming - qty.min(l.incoming),
            _ => l.incoming,
        };
        if let Some((code, expires_at)) = lot {
            let code = self.lot_codes.intern(code);
            let x = self.extras.get(&slot);
            let lot_now = x.and_then(|x| x.lot(code));
            if lot_now.is_none() && x.is_some_and(|x| x.lots.len() >= LOTS_PER_LEVEL_MAX) {
                return Err(Reason::InvalidLot);
            }
            if lot_now.is_some_and(|l| l.expired) && !matches!(how, PutKind::Return(ReturnCondition::Damaged)) {
                unsellable = add(unsellable, qty)?; // units of an expired lot are unsellable
            }
            let sku_id = self.skus.intern(sku);
            self.lot_add(slot, sku_id, code, expires_at, qty, fx);
        }
        let l = &mut self.levels[slot as usize];
        (l.on_hand, l.unsellable, l.incoming) = (on_hand, unsellable, incoming);
        if !units.serials.is_empty() {
            self.serials_in(sku, location, &units.serials, (seq, now, kind_name));
        }
        self.changed(slot, sku, location, fx);
        Ok(Detail::None)
    }

    /// Serial numbers come in stock at a location.
    fn serials_in(
        &mut self,
        sku: &str,
        location: &str,
        serials: &[String],
        (seq, now, kind_name): (Seq, Millis, &'static str),
    ) {
        let (sku_id, loc_id) = (self.skus.intern(sku), self.locations.intern(location));
        for serial in serials {
            let id = self.serial_names.intern(serial);
            let e = self.serials.entry((sku_id, id)).or_insert_with(|| SerialEntry {
                location: loc_id,
                status: SerialStatus::InStock,
                history: Vec::new(),
            });
            e.location = loc_id;
            e.status = SerialStatus::InStock;
            e.history.push((seq, now, kind_name, loc_id));
        }
    }

    /// Adds units to a lot of a level, creating the lot (and its expiry entries) if needed.
    fn lot_add(&mut self, slot: u32, sku_id: u32, code: u32, expires_at: Millis, qty: Qty, fx: &mut Effects) {
        self.lot_expiry.insert((sku_id, code), expires_at);
        let warning = self.sku_settings.get(&sku_id).and_then(|s| s.expiry_warning_days);
        self.levels[slot as usize].flags |= FLAG_EXTRAS;
        let x = self.extras.entry(slot).or_insert_with(|| Extras { sku: sku_id, ..Extras::default() });
        if x.lot(code).is_none() {
            // First to expire first; ties by lot code (its text, not its id: ids depend on the
            // order codes were seen, which a restore from a checkpoint does not keep).
            let names = &self.lot_codes;
            let key = (expires_at, names.name(code));
            let at = x.lots.partition_point(|l| (l.expires_at, names.name(l.code)) < key);
            let lot = Lot { code, expires_at, on_hand: 0, reserved: 0, expired: false, warned: false };
            x.lots.insert(at, lot);
            self.lots_due.insert((expires_at, slot, code));
            if let Some(at) = warn_at(warning, expires_at) {
                self.lot_warnings_due.insert((at, slot, code));
            }
        }
        let x = self.extras.get_mut(&slot).expect("just made");
        x.lot_mut(code).expect("just made").on_hand += qty;
        self.lot_changed(slot, code, fx);
    }

    // ---- taking stock out: sell, hold, write-off, transfer ----

    /// Which units a take of `qty` at `slot` uses: the named lot or first-expiry-first-out over
    /// the lots that are still usable after `usable_after`, then units in no lot; the channel's
    /// allocation first. Checks `available` (for the channel) unless `allow_negative`; a named
    /// expired lot is allowed only if `expired_ok` (writing off or moving expired stock).
    #[allow(clippy::too_many_arguments)]
    fn plan_take(
        &self,
        slot: u32,
        qty: Qty,
        lot: Option<&str>,
        usable_after: Millis,
        channel: Option<&str>,
        allow_negative: bool,
        expired_ok: bool,
    ) -> Result<Take, Reason> {
        let level = &self.levels[slot as usize];
        let x = (level.flags & FLAG_EXTRAS != 0).then(|| &self.extras[&slot]);
        let mut take = Take::default();
        let named_expired = match lot {
            None => false,
            Some(code) => {
                let lot = self.lot_codes.get(code).and_then(|c| x.and_then(|x| x.lot(c))).ok_or(Reason::UnknownLot)?;
                let expired = lot.expired || lot.expires_at <= usable_after;
                if expired && !expired_ok {
                    return Err(Reason::LotExpired);
                }
                if lot.free() < qty {
                    return Err(Reason::InsufficientStock);
                }
                take.lots.push((lot.code, qty));
                lot.expired
            }
        };
        // Expired units are `unsellable` already: writing them off does not need `available`.
        // Allocations ring-fence units against other channels' sales only: a transfer or an
        // adjustment (no channel) may take any available unit.
        let available = match channel {
            Some(_) => self.available_for(slot, channel),
            None => level.available(),
        };
        if !allow_negative && !named_expired && available < qty {
            return Err(Reason::InsufficientStock);
        }
        if let (Some(x), None) = (x, lot) {
            let mut rest = qty;
            for l in x.lots.iter().filter(|l| !l.expired && l.expires_at > usable_after) {
                let n = rest.min(l.free());
                if n > 0 {
                    take.lots.push((l.code, n));
                    rest -= n;
                }
                if rest == 0 {
                    break;
                }
            }
            let (lots_on_hand, lots_reserved) = x.lots.iter().fold((0, 0), |(o, r), l| (o + l.on_hand, r + l.reserved));
            let loose_free = (level.on_hand - lots_on_hand) - (level.reserved - lots_reserved);
            if rest > 0 && !allow_negative && loose_free < rest {
                return Err(Reason::InsufficientStock);
            }
        }
        if let (Some(x), Some(channel)) = (x, channel.and_then(|c| self.channels.get(c))) {
            take.from_alloc = qty.min(x.allocation(channel));
        }
        Ok(take)
    }

    /// What a level's `available` is for a channel: its own allocation plus what no channel has
    /// ring-fenced (never more than `available`).
    fn available_for(&self, slot: u32, channel: Option<&str>) -> Qty {
        let level = &self.levels[slot as usize];
        let available = level.available();
        if level.flags & FLAG_EXTRAS == 0 {
            return available;
        }
        let x = &self.extras[&slot];
        if x.allocations.is_empty() {
            return available;
        }
        let fenced: Qty = x.allocations.iter().map(|a| a.1).sum();
        let mine = channel.and_then(|c| self.channels.get(c)).map_or(0, |c| x.allocation(c));
        available.min(mine + (available - fenced).max(0))
    }

    /// Serial numbers to take: each in stock at this location.
    fn plan_serials(&self, sku: &str, location: &str, serials: &[String]) -> Result<Vec<u32>, Reason> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let (sku_id, loc_id) = (self.skus.get(sku), self.locations.get(location));
        serials
            .iter()
            .map(|serial| {
                let id = self.serial_names.get(serial).ok_or(Reason::SerialNotInStock)?;
                match sku_id.and_then(|s| self.serials.get(&(s, id))) {
                    Some(e) if e.status == SerialStatus::InStock && Some(e.location) == loc_id => Ok(id),
                    _ => Err(Reason::SerialNotInStock),
                }
            })
            .collect()
    }

    /// Takes `qty` off `on_hand` where `available` allows it (or regardless, if `allow_negative`).
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        now: Millis,
        sku: &str,
        location: &str,
        qty: Qty,
        units: &Units,
        channel: Option<&str>,
        allow_negative: bool,
        out: TakeOut,
        fx: &mut Effects,
    ) -> Outcome {
        let slot = self.slot_to_take_from(sku, location, units, allow_negative)?;
        let serials = self.plan_serials(sku, location, &units.serials)?;
        let write_off = matches!(out, TakeOut::WrittenOff(..));
        let mut take = self.plan_take(slot, qty, units.lot.as_deref(), now, channel, allow_negative, write_off)?;
        let on_hand = add(self.levels[slot as usize].on_hand, -qty)?;
        take.serials = serials;
        self.levels[slot as usize].on_hand = on_hand;
        self.take_lots(slot, &take.lots, false, fx);
        if let (Some(channel), true) = (channel, take.from_alloc > 0) {
            let channel = self.channels.get(channel).expect("an allocation names its channel");
            self.use_allocation(slot, channel, take.from_alloc);
        }
        let (seq, at, what, status) = match out {
            TakeOut::Sold(seq, at, what) => (seq, at, what, SerialStatus::Sold),
            TakeOut::WrittenOff(seq, at, what) => (seq, at, what, SerialStatus::WrittenOff),
        };
        self.serials_to(sku, &take.serials, status, None, (seq, at, what));
        self.changed(slot, sku, location, fx);
        Ok(Detail::None)
    }

    /// Removes units from lots (and, if `held`, from their reservations); units of an expired lot
    /// leave `unsellable` too. Empty lots are dropped.
    fn take_lots(&mut self, slot: u32, lots: &[(u32, Qty)], held: bool, fx: &mut Effects) {
        for &(code, n) in lots {
            let x = self.extras.get_mut(&slot).expect("level has lots");
            let lot = x.lot_mut(code).expect("lot exists");
            lot.on_hand -= n;
            if held {
                lot.reserved -= n;
            }
            // Held units of an expired lot were never counted unsellable (only its free ones).
            if lot.expired && !held {
                let l = &mut self.levels[slot as usize];
                l.unsellable = (l.unsellable - n).max(0);
            }
            self.lot_changed(slot, code, fx);
        }
    }

    fn use_allocation(&mut self, slot: u32, channel: u32, n: Qty) {
        if n > 0 {
            let x = self.extras.get_mut(&slot).expect("level has allocations");
            if let Some(a) = x.allocations.iter_mut().find(|a| a.0 == channel) {
                a.1 -= n;
            }
        }
    }

    fn serials_to(
        &mut self,
        sku: &str,
        serials: &[u32],
        status: SerialStatus,
        location: Option<u32>,
        (seq, at, what): (Seq, Millis, &'static str),
    ) {
        if serials.is_empty() {
            return;
        }
        let sku_id = self.skus.get(sku).expect("serials belong to a known SKU");
        self.serials_of_id_to(sku_id, serials, status, location, (seq, at, what));
    }

    fn serials_of_id_to(
        &mut self,
        sku_id: u32,
        serials: &[u32],
        status: SerialStatus,
        location: Option<u32>,
        (seq, at, what): (Seq, Millis, &'static str),
    ) {
        for id in serials {
            let e = self.serials.get_mut(&(sku_id, *id)).expect("serial exists");
            e.status = status;
            if let Some(location) = location {
                e.location = location;
            }
            e.history.push((seq, at, what, e.location));
        }
    }

    /// The level units are taken from (a sale, a write-off, a transfer's source): it must exist,
    /// unless `allow_negative` creates it; a movement taking units names no new lot expiry.
    fn slot_to_take_from(
        &mut self,
        sku: &str,
        location: &str,
        units: &Units,
        allow_negative: bool,
    ) -> Result<u32, Reason> {
        if units.lot_expires_at.is_some() {
            return Err(Reason::InvalidLot);
        }
        match self.slot(sku, location) {
            Some(slot) => Ok(slot),
            None if units.lot.is_some() => Err(Reason::UnknownLot),
            None if !units.serials.is_empty() => Err(Reason::SerialNotInStock),
            None if allow_negative => Ok(self.slot_or_new(sku, location)),
            None => Err(Reason::InsufficientStock),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        now: Millis,
        seq: Seq,
        sku: &str,
        from: &str,
        to: &str,
        qty: Qty,
        units: &Units,
        fx: &mut Effects,
    ) -> Outcome {
        let src = self.slot_to_take_from(sku, from, units, false)?;
        let serials = self.plan_serials(sku, from, &units.serials)?;
        // Expired stock may be moved (to a disposal area) when its lot is named.
        let take = self.plan_take(src, qty, units.lot.as_deref(), now, None, false, true)?;
        let dst_on_hand = match self.slot(sku, to) {
            Some(dst) => add(self.levels[dst as usize].on_hand, qty)?,
            None => qty,
        };
        // Checked before the destination level is created: a refused transfer changes nothing.
        let dst_extras = self.slot(sku, to).and_then(|dst| self.extras.get(&dst));
        let lots_in_dst = dst_extras.map_or(0, |x| x.lots.len());
        let new_lots = take.lots.iter().filter(|(c, _)| dst_extras.is_none_or(|x| x.lot(*c).is_none()));
        if lots_in_dst + new_lots.count() > LOTS_PER_LEVEL_MAX {
            return Err(Reason::InvalidLot);
        }
        let dst = self.slot_or_new(sku, to);
        let moved: Vec<(u32, Millis, bool, Qty)> = take
            .lots
            .iter()
            .map(|&(code, n)| {
                let lot = self.extras[&src].lot(code).expect("lot exists");
                (code, lot.expires_at, lot.expired, n)
            })
            .collect();
        self.levels[src as usize].on_hand -= qty;
        self.take_lots(src, &take.lots, false, fx);
        self.levels[dst as usize].on_hand = dst_on_hand;
        let sku_id = self.skus.intern(sku);
        for (code, expires_at, expired, n) in moved {
            let dst_expired = self.extras.get(&dst).and_then(|x| x.lot(code)).is_some_and(|l| l.expired);
            self.lot_add(dst, sku_id, code, expires_at, n, fx);
            if dst_expired {
                // Units put into an expired lot are unsellable (as for a return).
                self.levels[dst as usize].unsellable += n;
            } else if expired {
                // Expired units stay expired: the lot expires at the destination too, with every
                // free unit it has there (not only those moved), and is no longer due.
                let units = self.expire_lot(dst, code, None);
                self.levels[dst as usize].unsellable += units;
                self.lot_changed(dst, code, fx); // its view says expired
            }
        }
        let to_id = self.locations.intern(to);
        self.serials_to(sku, &serials, SerialStatus::InStock, Some(to_id), (seq, now, "transfer"));
        self.changed(src, sku, from, fx);
        self.changed(dst, sku, to, fx);
        Ok(Detail::None)
    }

    fn count(&mut self, sku: &str, location: &str, counted: Qty, lot: Option<&str>, fx: &mut Effects) -> Outcome {
        let slot = self.slot(sku, location);
        let has_lots = slot.is_some_and(|s| self.extras.get(&s).is_some_and(|x| !x.lots.is_empty()));
        let Some(code) = lot else {
            if has_lots {
                return Err(Reason::LotRequired);
            }
            let slot = self.slot_or_new(sku, location);
            let l = &mut self.levels[slot as usize];
            let variance = counted - l.on_hand;
            l.on_hand = counted;
            l.unsellable = l.unsellable.min(counted);
            self.changed(slot, sku, location, fx);
            return Ok(Detail::Variance(variance));
        };
        let slot = slot.ok_or(Reason::UnknownLot)?;
        let code = self.lot_codes.get(code).ok_or(Reason::UnknownLot)?;
        let lot = self.extras.get(&slot).and_then(|x| x.lot(code)).ok_or(Reason::UnknownLot)?;
        let variance = counted - lot.on_hand;
        let expired = lot.expired;
        let on_hand = add(self.levels[slot as usize].on_hand, variance)?;
        let l = &mut self.levels[slot as usize];
        l.on_hand = on_hand;
        if expired {
            l.unsellable = (l.unsellable + variance).max(0);
        }
        l.unsellable = l.unsellable.min(on_hand.max(0));
        self.extras.get_mut(&slot).and_then(|x| x.lot_mut(code)).expect("lot exists").on_hand = counted;
        self.lot_changed(slot, code, fx);
        self.changed(slot, sku, location, fx);
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
        let (sku_id, loc_id) = match (self.skus.get(sku), self.locations.get(location)) {
            (Some(s), Some(l)) => (s, l),
            _ => return Err(Reason::HoldLineMissing),
        };
        let idx =
            h.lines.iter().position(|l| l.sku == sku_id && l.location == loc_id).ok_or(Reason::HoldLineMissing)?;
        let line = &h.lines[idx];
        let consumed = qty.min(line.qty);
        let excess = qty - consumed;
        // Serial numbers: those named must be held by this line (a serial-tracked line sells only
        // what it holds).
        let serials: Vec<u32> = units
            .serials
            .iter()
            .map(|s| self.serial_names.get(s).filter(|id| line.serials.contains(id)).ok_or(Reason::SerialNotInStock))
            .collect::<Result<_, _>>()?;
        if !line.serials.is_empty() && excess > 0 {
            return Err(Reason::SerialNotInStock);
        }
        let level = &self.levels[line.slot as usize];
        let slot = line.slot;
        let mut lots = Vec::new();
        let mut rest = consumed;
        for &(code, n) in &line.lots {
            if rest == 0 {
                break;
            }
            lots.push((code, n.min(rest)));
            rest -= n.min(rest);
        }
        // Units beyond the hold are a sale like any other: the channel's available (its
        // allocation first, never other channels' allocated units).
        let excess_take = if excess > 0 {
            Some(self.plan_take(slot, excess, None, now, Some(channel), allow_negative, false)?)
        } else {
            None
        };
        let on_hand = add(level.on_hand, -qty)?;
        let l = &mut self.levels[slot as usize];
        l.on_hand = on_hand;
        l.reserved -= consumed;
        self.take_lots(slot, &lots, true, fx);
        if let Some(t) = &excess_take {
            self.take_lots(slot, &t.lots, false, fx);
            if t.from_alloc > 0 {
                let channel = self.channels.get(channel).expect("an allocation names its channel");
                self.use_allocation(slot, channel, t.from_alloc);
            }
        }
        let h = self.holds.get_mut(&hold).expect("hold exists");
        let line = &mut h.lines[idx];
        line.qty -= consumed;
        for (code, n) in &lots {
            let held = line.lots.iter_mut().find(|l| l.0 == *code).expect("lot held");
            held.1 -= n;
        }
        line.lots.retain(|l| l.1 > 0);
        let sold: Vec<u32> =
            if serials.is_empty() { line.serials.iter().take(consumed as usize).copied().collect() } else { serials };
        line.serials.retain(|s| !sold.contains(s));
        line.from_alloc = line.from_alloc.min(line.qty);
        if h.lines[idx].qty == 0 {
            h.lines.remove(idx);
        }
        if h.lines.is_empty() {
            self.remove_hold(hold);
            fx.holds_closed.push(hold);
        }
        self.serials_of_id_to(sku_id, &sold, SerialStatus::Sold, None, (seq, now, "sell"));
        self.changed(slot, sku, location, fx);
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
            check_level_key(&line.sku, &line.location)?;
            check_qty(line.qty)?;
        }
        // The same level twice is a malformed request whatever the stock, so it is checked before
        // the levels are looked up (else it could be reported as `insufficient_stock`).
        for (i, line) in lines.iter().enumerate() {
            if lines[..i].iter().any(|l| l.sku == line.sku && l.location == line.location) {
                return Err(Reason::InvalidLines);
            }
        }
        for line in lines {
            self.check_stocked(&line.sku)?;
            self.check_serial_count(&line.sku, &line.units, line.qty)?;
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
        let mut plans = Vec::with_capacity(lines.len());
        for line in lines {
            let slot = match self.slot(&line.sku, &line.location) {
                Some(slot) => slot,
                None if line.units.lot.is_some() => return Err(Reason::UnknownLot),
                None if !line.units.serials.is_empty() => return Err(Reason::SerialNotInStock),
                None => return Err(Reason::InsufficientStock),
            };
            let serials = self.plan_serials(&line.sku, &line.location, &line.units.serials)?;
            // A hold never outlives the lots it holds: lots expiring before the hold are skipped.
            let mut take =
                self.plan_take(slot, line.qty, line.units.lot.as_deref(), expires_at, Some(channel), false, false)?;
            take.serials = serials;
            plans.push((slot, take));
        }
        // The channel is remembered only when the hold took allocated units (to give them back).
        let channel = match plans.iter().any(|(_, t)| t.from_alloc > 0) {
            true => self.channels.get(channel).expect("an allocation names its channel"),
            false => NO_CHANNEL,
        };
        let mut held = Vec::with_capacity(lines.len());
        for (line, (slot, take)) in lines.iter().zip(plans) {
            self.levels[slot as usize].reserved += line.qty;
            for &(code, n) in &take.lots {
                let lot = self.extras.get_mut(&slot).and_then(|x| x.lot_mut(code)).expect("lot exists");
                lot.reserved += n;
                self.lot_changed(slot, code, fx);
            }
            self.use_allocation(slot, channel, take.from_alloc);
            self.serials_to(&line.sku, &take.serials, SerialStatus::Reserved(hold), None, (seq, now, "reserve"));
            let sku = self.skus.get(&line.sku).expect("slot exists");
            let location = self.locations.get(&line.location).expect("slot exists");
            held.push(HoldLine {
                sku,
                location,
                slot,
                qty: line.qty,
                unit_price: line.unit_price,
                lots: take.lots,
                serials: take.serials,
                from_alloc: take.from_alloc,
                kit: line.kit.clone(),
            });
            self.changed(slot, &line.sku, &line.location, fx);
        }
        self.holds.insert(hold, Hold { expires_at, channel, lines: held });
        self.hold_expiry.insert((expires_at, hold));
        Ok(Detail::Hold(hold))
    }

    fn commit(&mut self, now: Millis, seq: Seq, hold: HoldId, fx: &mut Effects) {
        let h = self.remove_hold(hold).expect("hold exists");
        if is_split(hold) {
            self.committed_split_holds.insert((now, hold));
        }
        for line in &h.lines {
            let l = &mut self.levels[line.slot as usize];
            l.on_hand -= line.qty;
            l.reserved -= line.qty;
            self.take_lots(line.slot, &line.lots, true, fx);
            self.serials_of_id_to(line.sku, &line.serials, SerialStatus::Sold, None, (seq, now, "commit"));
            self.changed_ids(line.slot, line.sku, line.location, fx);
        }
        fx.holds_closed.push(hold);
    }

    fn remove_hold(&mut self, hold: HoldId) -> Option<Hold> {
        let h = self.holds.remove(&hold)?;
        self.hold_expiry.remove(&(h.expires_at, hold));
        Some(h)
    }

    fn release(&mut self, now: Millis, seq: Seq, hold: HoldId, fx: &mut Effects) {
        let h = self.remove_hold(hold).expect("hold exists");
        for line in &h.lines {
            self.levels[line.slot as usize].reserved -= line.qty;
            for &(code, n) in &line.lots {
                let lot = self.extras.get_mut(&line.slot).and_then(|x| x.lot_mut(code)).expect("lot exists");
                lot.reserved -= n;
                // Released into a lot that expired meanwhile: the units are unsellable.
                if lot.expired {
                    self.levels[line.slot as usize].unsellable += n;
                }
                self.lot_changed(line.slot, code, fx);
            }
            // Allocated units go back to the channel's allocation if it still exists; once it
            // was removed (allocate 0) they stay in the shared pool, like any released unit.
            if let (true, Some(x)) = (line.from_alloc > 0, self.extras.get_mut(&line.slot)) {
                if let Some(a) = x.allocations.iter_mut().find(|a| a.0 == h.channel) {
                    a.1 += line.from_alloc;
                }
            }
            self.serials_of_id_to(line.sku, &line.serials, SerialStatus::InStock, None, (seq, now, "release"));
            self.changed_ids(line.slot, line.sku, line.location, fx);
        }
        fx.holds_closed.push(hold);
    }

    // ---- lot expiry ----

    /// Raises the warnings and expires the lots due by `by`, at most `budget` of them, the
    /// earliest first (see `due_first`).
    fn expire_lots(&mut self, by: Millis, mut budget: usize, fx: &mut Effects) {
        while budget > 0 {
            let due = self.due_first(&self.lot_warnings_due, by, budget);
            if due.is_empty() {
                break;
            }
            for (at, slot, code) in due {
                self.lot_warnings_due.remove(&(at, slot, code));
                let lot = self.extras.get_mut(&slot).and_then(|x| x.lot_mut(code)).expect("lot exists");
                lot.warned = true;
                let alert = (lot.expires_at, lot.on_hand - lot.reserved);
                self.lot_alert(AlertKind::LotExpiring, slot, code, alert, fx);
                budget -= 1;
            }
        }
        while budget > 0 {
            let due = self.due_first(&self.lots_due, by, budget);
            if due.is_empty() {
                break;
            }
            for (_, slot, code) in due {
                let units = self.expire_lot(slot, code, Some(fx));
                let sku = self.sku_of_slot(slot);
                let l = &mut self.levels[slot as usize];
                l.unsellable += units;
                let location = l.location;
                self.lot_changed(slot, code, fx);
                self.changed_ids(slot, sku, location, fx);
                budget -= 1;
            }
        }
    }

    /// The first `max` entries of `due` at its earliest time, if that is at or before `by`, in
    /// the order they are handled: by (SKU, location, lot code) as text. Slots and code ids
    /// depend on the order things were first seen, which a shard restored from a checkpoint does
    /// not keep; names make the original and the restored shard expire lots in the same order.
    fn due_first(&self, due: &BTreeSet<(Millis, u32, u32)>, by: Millis, max: usize) -> Vec<(Millis, u32, u32)> {
        let Some(&(at, _, _)) = due.first().filter(|d| d.0 <= by) else { return Vec::new() };
        let mut group: Vec<(Millis, u32, u32)> = due.range((at, 0, 0)..=(at, u32::MAX, u32::MAX)).copied().collect();
        group.sort_by_cached_key(|&(_, slot, code)| {
            let sku = self.skus.name(self.sku_of_slot(slot));
            (sku, self.locations.name(self.levels[slot as usize].location), self.lot_codes.name(code))
        });
        group.truncate(max);
        group
    }

    /// Marks a lot expired and drops its due entries; returns its units that leave `available`.
    /// Raises the `lot_expired` alert when given effects.
    fn expire_lot(&mut self, slot: u32, code: u32, fx: Option<&mut Effects>) -> Qty {
        let lot = self.extras.get_mut(&slot).and_then(|x| x.lot_mut(code)).expect("lot exists");
        lot.expired = true;
        let (expires_at, units) = (lot.expires_at, lot.on_hand - lot.reserved);
        self.lots_due.remove(&(expires_at, slot, code));
        let warning = self.sku_settings.get(&self.sku_of_slot(slot)).and_then(|s| s.expiry_warning_days);
        if let Some(at) = warn_at(warning, expires_at) {
            self.lot_warnings_due.remove(&(at, slot, code));
        }
        if let Some(fx) = fx {
            self.lot_alert(AlertKind::LotExpired, slot, code, (expires_at, units), fx);
        }
        units
    }

    fn lot_alert(
        &mut self,
        kind: AlertKind,
        slot: u32,
        code: u32,
        (expires_at, units): (Millis, Qty),
        fx: &mut Effects,
    ) {
        let sku = self.skus.name(self.sku_of_slot(slot)).to_owned();
        let location = self.locations.name(self.levels[slot as usize].location).to_owned();
        fx.alerts.push(Alert {
            kind,
            sku,
            location,
            available: units,
            reorder_point: None,
            lot: Some((self.lot_codes.name(code).to_owned(), expires_at)),
        });
    }

    /// Reports a lot's new quantities; drops it once it has no units and no reservation.
    fn lot_changed(&mut self, slot: u32, code: u32, fx: &mut Effects) {
        let x = &self.extras[&slot];
        let lot = x.lot(code).expect("lot exists").clone();
        let mut view = self.spare_lot_views.pop().unwrap_or_else(|| LotView {
            sku: String::new(),
            location: String::new(),
            lot: String::new(),
            expires_at: 0,
            on_hand: 0,
            reserved: 0,
            expired: false,
        });
        self.fill_lot_view(slot, &lot, &mut view);
        if lot.on_hand == 0 && lot.reserved == 0 {
            let x = self.extras.get_mut(&slot).expect("level has lots");
            x.lots.retain(|l| l.code != code);
            self.lots_due.remove(&(lot.expires_at, slot, code));
            let warning = self.sku_settings.get(&self.sku_of_slot(slot)).and_then(|s| s.expiry_warning_days);
            if let Some(at) = warn_at(warning, lot.expires_at) {
                self.lot_warnings_due.remove(&(at, slot, code));
            }
            self.drop_extras_if_empty(slot);
        }
        match fx.lots.iter_mut().find(|v| v.sku == view.sku && v.location == view.location && v.lot == view.lot) {
            Some(v) => {
                std::mem::swap(v, &mut view);
                self.spare_lot_views.push(view);
            }
            None => fx.lots.push(view),
        }
    }

    fn drop_extras_if_empty(&mut self, slot: u32) {
        if self.extras.get(&slot).is_some_and(|x| x.lots.is_empty() && x.allocations.is_empty()) {
            self.extras.remove(&slot);
            self.levels[slot as usize].flags &= !FLAG_EXTRAS;
        }
    }

    fn lot_view(&self, slot: u32, lot: &Lot) -> LotView {
        let mut view = LotView {
            sku: String::new(),
            location: String::new(),
            lot: String::new(),
            expires_at: 0,
            on_hand: 0,
            reserved: 0,
            expired: false,
        };
        self.fill_lot_view(slot, lot, &mut view);
        view
    }

    /// Writes a lot's view into `v`, reusing its strings' memory.
    fn fill_lot_view(&self, slot: u32, lot: &Lot, v: &mut LotView) {
        v.sku.clear();
        v.sku.push_str(self.skus.name(self.sku_of_slot(slot)));
        v.location.clear();
        v.location.push_str(self.locations.name(self.levels[slot as usize].location));
        v.lot.clear();
        v.lot.push_str(self.lot_codes.name(lot.code));
        (v.expires_at, v.on_hand, v.reserved, v.expired) = (lot.expires_at, lot.on_hand, lot.reserved, lot.expired);
    }

    /// The SKU id of a level that has lots or allocations.
    fn sku_of_slot(&self, slot: u32) -> u32 {
        self.extras[&slot].sku
    }

    /// The levels (slots) of one SKU.
    fn sku_slots(&self, sku: u32) -> impl Iterator<Item = u32> + '_ {
        let first = self.sku_first_level.get(sku as usize).copied().unwrap_or(NO_SLOT);
        std::iter::successors((first != NO_SLOT).then_some(first), move |&slot| {
            let next = self.levels[slot as usize].next_of_sku;
            (next != NO_SLOT).then_some(next)
        })
    }

    fn slot(&self, sku: &str, location: &str) -> Option<u32> {
        let (sku, location) = (self.skus.get(sku)?, self.locations.get(location)?);
        self.find_slot(sku, location)
    }

    fn find_slot(&self, sku: u32, location: u32) -> Option<u32> {
        let mut slot = *self.sku_first_level.get(sku as usize)?;
        while slot != NO_SLOT {
            let l = &self.levels[slot as usize];
            if l.location == location {
                return Some(slot);
            }
            slot = l.next_of_sku;
        }
        None
    }

    fn slot_or_new(&mut self, sku: &str, location: &str) -> u32 {
        let (sku, location) = (self.skus.intern(sku), self.locations.intern(location));
        if let Some(slot) = self.find_slot(sku, location) {
            return slot;
        }
        if self.sku_first_level.len() <= sku as usize {
            self.sku_first_level.resize(sku as usize + 1, NO_SLOT);
        }
        let slot = u32::try_from(self.levels.len()).ok().filter(|&s| s != NO_SLOT).expect("fewer than 2^32 levels");
        let first = &mut self.sku_first_level[sku as usize];
        self.levels.push(Level { location, next_of_sku: *first, ..Level::new() });
        *first = slot;
        slot
    }

    /// Every (SKU id, location id, slot).
    fn slots(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        slots_of(&self.sku_first_level, &self.levels)
    }

    fn changed_ids(&mut self, slot: u32, sku: u32, location: u32, fx: &mut Effects) {
        // Names are looked up only here, off the common path of single-line movements.
        let sku = self.skus.name(sku).to_owned();
        let location = self.locations.name(location).to_owned();
        self.changed(slot, &sku, &location, fx);
    }

    /// Records the level's new quantities and raises its alerts, once per crossing.
    fn changed(&mut self, slot: u32, sku: &str, location: &str, fx: &mut Effects) {
        let l = &mut self.levels[slot as usize];
        let available = l.available();
        if l.reorder_point != NONE && available <= l.reorder_point {
            if l.flags & FLAG_REORDER_ALERTED == 0 {
                l.flags |= FLAG_REORDER_ALERTED;
                fx.alerts.push(Alert {
                    kind: AlertKind::Reorder,
                    sku: sku.to_owned(),
                    location: location.to_owned(),
                    available,
                    reorder_point: Some(l.reorder_point),
                    lot: None,
                });
            }
        } else {
            l.flags &= !FLAG_REORDER_ALERTED;
        }
        if available <= 0 {
            if l.flags & FLAG_OUT_OF_STOCK_ALERTED == 0 {
                l.flags |= FLAG_OUT_OF_STOCK_ALERTED;
                fx.alerts.push(Alert {
                    kind: AlertKind::OutOfStock,
                    sku: sku.to_owned(),
                    location: location.to_owned(),
                    available,
                    reorder_point: (l.reorder_point != NONE).then_some(l.reorder_point),
                    lot: None,
                });
            }
        } else {
            l.flags &= !FLAG_OUT_OF_STOCK_ALERTED;
        }
        let (on_hand, reserved, unsellable, incoming, safety_stock) =
            (l.on_hand, l.reserved, l.unsellable, l.incoming, l.safety_stock);
        // Reuse the strings of a recycled view (see `recycle`): no allocation per level change.
        let mut v = self.spare_views.pop().unwrap_or_else(|| view("", "", &Level::new()));
        v.sku.clear();
        v.sku.push_str(sku);
        v.location.clear();
        v.location.push_str(location);
        (v.on_hand, v.reserved, v.unsellable, v.incoming, v.safety_stock, v.available) =
            (on_hand, reserved, unsellable, incoming, safety_stock, available);
        fx.levels.push(v);
    }

    /// Empties `fx` for the next movement, keeping its level views' memory for reuse.
    pub fn recycle(&mut self, fx: &mut Effects) {
        self.spare_views.append(&mut fx.levels);
        self.spare_lot_views.append(&mut fx.lots);
        fx.clear();
    }

    // ---- reads ----

    /// The level of one (SKU, location), if it was ever touched.
    pub fn level(&self, sku: &str, location: &str) -> Option<LevelView> {
        self.slot(sku, location).map(|s| view(sku, location, &self.levels[s as usize]))
    }

    /// Settings of one (SKU, location).
    pub fn settings(&self, sku: &str, location: &str) -> Option<Settings> {
        self.slot(sku, location).map(|s| self.levels[s as usize].settings())
    }

    /// Every level of this shard, in no particular order.
    pub fn levels(&self) -> impl Iterator<Item = LevelView> + '_ {
        self.slots().map(|(s, l, slot)| view(self.skus.name(s), self.locations.name(l), &self.levels[slot as usize]))
    }

    /// Number of levels.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Open holds: (id, expires_at, lines as (sku, location, qty)).
    pub fn holds(&self) -> impl Iterator<Item = HoldView> + '_ {
        self.holds.iter().map(|(&id, h)| {
            let lines = h
                .lines
                .iter()
                .map(|l| (self.skus.name(l.sku).to_owned(), self.locations.name(l.location).to_owned(), l.qty))
                .collect();
            (id, h.expires_at, lines)
        })
    }

    /// Largest hold id this shard knows, so the engine never hands it out again.
    pub fn max_hold_id(&self) -> HoldId {
        self.holds.keys().copied().max().unwrap_or(0)
    }

    /// Whether an `Expire` with these arguments would change anything.
    pub fn expire_due(&self, holds_expired_by: Millis, keys_seen_before: Millis, keys_max: u64) -> bool {
        self.hold_expiry.first().is_some_and(|&(at, _)| at <= holds_expired_by)
            || self.lots_due.first().is_some_and(|&(at, _, _)| at <= holds_expired_by)
            || self.lot_warnings_due.first().is_some_and(|&(at, _, _)| at <= holds_expired_by)
            || self.committed_split_holds.first().is_some_and(|&(at, _)| at + COMMITTED_KEEP_MILLIS <= holds_expired_by)
            || self.key_order.len() as u64 > keys_max
            || self.key_order.front().is_some_and(|(_, e)| e.seen_at < keys_seen_before)
    }

    /// Idempotency keys remembered: (key hash, body hash, seen at, hold id if the outcome was one).
    pub fn key_guards(&self) -> impl Iterator<Item = (u128, u64, Millis, Option<HoldId>)> + '_ {
        self.key_order.iter().map(|(k, e)| {
            let hold = match e.outcome {
                Ok(Detail::Hold(h)) => Some(h),
                _ => None,
            };
            (*k, e.body_hash, e.seen_at, hold)
        })
    }

    /// When the oldest idempotency key still remembered was first seen.
    pub fn oldest_key_seen_at(&self) -> Option<Millis> {
        self.key_order.front().map(|(_, e)| e.seen_at)
    }

    /// Number of idempotency keys remembered.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Bytes the level tables use beyond the SKU and location strings (for the memory benchmark).
    pub fn level_overhead_bytes(&self) -> usize {
        self.levels.capacity() * std::mem::size_of::<Level>()
            + self.sku_first_level.capacity() * std::mem::size_of::<u32>()
            + self.skus.overhead_bytes()
            + self.locations.overhead_bytes()
    }

    /// A level with its lots (first to expire first) and channel allocations.
    pub fn level_detail(&self, sku: &str, location: &str) -> Option<LevelDetail> {
        let slot = self.slot(sku, location)?;
        let level = view(sku, location, &self.levels[slot as usize]);
        let x = self.extras.get(&slot);
        let lots: Vec<LotView> = x.map_or(Vec::new(), |x| x.lots.iter().map(|l| self.lot_view(slot, l)).collect());
        let allocations = x.map_or(Vec::new(), |x| {
            x.allocations.iter().map(|&(c, q)| (self.channels.name(c).to_owned(), q)).collect()
        });
        let loose_on_hand = level.on_hand - lots.iter().map(|l| l.on_hand).sum::<Qty>();
        Some(LevelDetail { level, lots, allocations, loose_on_hand })
    }

    /// `available` of a level for one channel (its allocation plus the shared pool).
    pub fn available_for_channel(&self, sku: &str, location: &str, channel: &str) -> Option<Qty> {
        let slot = self.slot(sku, location)?;
        Some(self.available_for(slot, Some(channel)))
    }

    /// Where a serial number is and what happened to it.
    pub fn serial(&self, sku: &str, serial: &str) -> Option<SerialView> {
        let key = (self.skus.get(sku)?, self.serial_names.get(serial)?);
        let e = self.serials.get(&key)?;
        Some(self.serial_view(key, e))
    }

    fn serial_view(&self, (sku, serial): (u32, u32), e: &SerialEntry) -> SerialView {
        SerialView {
            sku: self.skus.name(sku).to_owned(),
            serial: self.serial_names.name(serial).to_owned(),
            location: self.locations.name(e.location).to_owned(),
            status: e.status,
            history: e
                .history
                .iter()
                .map(|&(seq, at, what, location)| SerialEvent {
                    seq,
                    at,
                    what: what.to_owned(),
                    location: self.locations.name(location).to_owned(),
                })
                .collect(),
        }
    }

    /// A SKU's settings (the default when never set).
    pub fn sku_settings(&self, sku: &str) -> SkuSettings {
        self.sku_settings_of(sku).cloned().unwrap_or_default()
    }

    /// Every SKU whose settings differ from the default.
    pub fn all_sku_settings(&self) -> impl Iterator<Item = (&str, &SkuSettings)> + '_ {
        self.sku_settings.iter().map(|(&id, s)| (self.skus.name(id), s))
    }

    /// Holds split over shards whose part this shard committed (see `CompleteCommit`).
    pub fn committed_split_holds(&self) -> impl Iterator<Item = HoldId> + '_ {
        self.committed_split_holds.iter().map(|&(_, hold)| hold)
    }

    // ---- checkpoints ----

    /// A complete copy of the state, in a stable serde shape (see `docs/wal.md`).
    pub fn snapshot(&self) -> ShardSnapshot {
        self.copy().finish()
    }

    /// What [`ShardState::snapshot`] needs, copied as fast as possible (levels as stored, names
    /// and idempotency keys shared): the shards pause only for this, and [`ShardCopy::finish`]
    /// does the rest (naming, sorting) elsewhere.
    pub fn copy(&self) -> ShardCopy {
        let extras = self
            .extras
            .iter()
            .map(|(&slot, x)| {
                let lots = x
                    .lots
                    .iter()
                    .map(|l| LotRecord {
                        lot: self.lot_codes.name(l.code).to_owned(),
                        expires_at: l.expires_at,
                        on_hand: l.on_hand,
                        reserved: l.reserved,
                        expired: l.expired,
                        warned: l.warned,
                    })
                    .collect();
                let allocations = x.allocations.iter().map(|&(c, q)| (self.channels.name(c).to_owned(), q)).collect();
                (slot, (lots, allocations))
            })
            .collect();
        let holds = self
            .holds
            .iter()
            .map(|(&id, h)| HoldRecord {
                id,
                expires_at: h.expires_at,
                channel: if h.channel == NO_CHANNEL { String::new() } else { self.channels.name(h.channel).to_owned() },
                lines: h
                    .lines
                    .iter()
                    .map(|l| HoldLineRecord {
                        sku: self.skus.name(l.sku).to_owned(),
                        location: self.locations.name(l.location).to_owned(),
                        qty: l.qty,
                        unit_price: l.unit_price,
                        lots: l.lots.iter().map(|&(c, q)| (self.lot_codes.name(c).to_owned(), q)).collect(),
                        serials: l.serials.iter().map(|&n| self.serial_names.name(n).to_owned()).collect(),
                        from_alloc: l.from_alloc,
                        kit: l.kit.clone(),
                    })
                    .collect(),
            })
            .collect();
        ShardCopy {
            last_seq: self.last_seq,
            levels: self.levels.clone(),
            sku_first_level: self.sku_first_level.clone(),
            sku_names: self.skus.names(),
            location_names: self.locations.names(),
            extras,
            holds,
            keys: self.key_order.snapshot(),
            sku_settings: self.all_sku_settings().map(|(sku, s)| (sku.to_owned(), s.clone())).collect(),
            lot_expiry: self
                .lot_expiry
                .iter()
                .map(|(&(s, c), &at)| (self.skus.name(s).to_owned(), self.lot_codes.name(c).to_owned(), at))
                .collect(),
            serials: self.serials.iter().map(|(&k, e)| self.serial_view(k, e)).collect(),
            committed_split_holds: self.committed_split_holds.iter().copied().collect(),
        }
    }

    /// Rebuilds a shard from [`ShardState::snapshot`].
    pub fn from_snapshot(snap: ShardSnapshot) -> ShardState {
        let mut s = ShardState { last_seq: snap.last_seq, ..ShardState::default() };
        for (sku, settings) in snap.sku_settings {
            let id = s.skus.intern(&sku);
            s.sku_settings.insert(id, settings);
        }
        for (sku, lot, at) in snap.lot_expiry {
            let key = (s.skus.intern(&sku), s.lot_codes.intern(&lot));
            s.lot_expiry.insert(key, at);
        }
        for r in snap.levels {
            let slot = s.slot_or_new(&r.sku, &r.location);
            let l = &mut s.levels[slot as usize];
            *l = Level { next_of_sku: l.next_of_sku, location: l.location, ..r.level };
            if r.lots.is_empty() && r.allocations.is_empty() {
                continue;
            }
            let sku = s.skus.intern(&r.sku);
            let warning = s.sku_settings.get(&sku).and_then(|x| x.expiry_warning_days);
            let mut x = Extras { sku, ..Extras::default() };
            for lot in r.lots {
                let code = s.lot_codes.intern(&lot.lot);
                if !lot.expired {
                    s.lots_due.insert((lot.expires_at, slot, code));
                    if let (false, Some(at)) = (lot.warned, warn_at(warning, lot.expires_at)) {
                        s.lot_warnings_due.insert((at, slot, code));
                    }
                }
                x.lots.push(Lot {
                    code,
                    expires_at: lot.expires_at,
                    on_hand: lot.on_hand,
                    reserved: lot.reserved,
                    expired: lot.expired,
                    warned: lot.warned,
                });
            }
            x.allocations = r.allocations.iter().map(|(c, q)| (s.channels.intern(c), *q)).collect();
            s.extras.insert(slot, x);
            s.levels[slot as usize].flags |= FLAG_EXTRAS;
        }
        for h in snap.holds {
            let lines = h
                .lines
                .iter()
                .map(|l| {
                    let slot = s.slot_or_new(&l.sku, &l.location);
                    HoldLine {
                        sku: s.skus.intern(&l.sku),
                        location: s.locations.intern(&l.location),
                        slot,
                        qty: l.qty,
                        unit_price: l.unit_price,
                        lots: l.lots.iter().map(|(c, q)| (s.lot_codes.intern(c), *q)).collect(),
                        serials: l.serials.iter().map(|n| s.serial_names.intern(n)).collect(),
                        from_alloc: l.from_alloc,
                        kit: l.kit.clone(),
                    }
                })
                .collect();
            s.hold_expiry.insert((h.expires_at, h.id));
            let channel = if h.channel.is_empty() { NO_CHANNEL } else { s.channels.intern(&h.channel) };
            s.holds.insert(h.id, Hold { expires_at: h.expires_at, channel, lines });
        }
        for &(k, e) in snap.keys.iter() {
            let at = s.key_order.push_back(k, e);
            s.keys.insert(k, at);
        }
        for v in snap.serials {
            let key = (s.skus.intern(&v.sku), s.serial_names.intern(&v.serial));
            let history = v
                .history
                .iter()
                .map(|e| (e.seq, e.at, static_kind_name(&e.what), s.locations.intern(&e.location)))
                .collect();
            let location = s.locations.intern(&v.location);
            s.serials.insert(key, SerialEntry { location, status: v.status, history });
        }
        s.committed_split_holds = snap.committed_split_holds.into_iter().collect();
        s
    }
}

/// The `&'static` name of a movement kind, for serial histories read back from a checkpoint.
fn static_kind_name(name: &str) -> &'static str {
    MovementKind::NAMES.iter().find(|n| **n == name).copied().unwrap_or("unknown")
}

fn view(sku: &str, location: &str, l: &Level) -> LevelView {
    LevelView {
        sku: sku.to_owned(),
        location: location.to_owned(),
        on_hand: l.on_hand,
        reserved: l.reserved,
        unsellable: l.unsellable,
        incoming: l.incoming,
        safety_stock: l.safety_stock,
        available: l.available(),
    }
}

/// A level as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelRecord {
    pub sku: String,
    pub location: String,
    level: Level,
    lots: Vec<LotRecord>,
    allocations: Vec<(String, Qty)>,
}

/// A lot as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LotRecord {
    lot: String,
    expires_at: Millis,
    on_hand: Qty,
    reserved: Qty,
    expired: bool,
    warned: bool,
}

/// A hold as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: HoldId,
    pub expires_at: Millis,
    pub channel: String,
    pub lines: Vec<HoldLineRecord>,
}

/// A hold's line as stored in a checkpoint: what it holds, down to lots and serial numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLineRecord {
    pub sku: String,
    pub location: String,
    pub qty: Qty,
    pub unit_price: Option<i64>,
    pub lots: Vec<(String, Qty)>,
    pub serials: Vec<String>,
    pub from_alloc: Qty,
    pub kit: Option<KitRef>,
}

/// The whole state of one shard, as a checkpoint stores it. Two shards with equal snapshots
/// behave identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    pub last_seq: Seq,
    pub levels: Vec<LevelRecord>,
    pub holds: Vec<HoldRecord>,
    keys: KeysSnapshot,
    sku_settings: Vec<(String, SkuSettings)>,
    lot_expiry: Vec<(String, String, Millis)>,
    serials: Vec<SerialView>,
    committed_split_holds: Vec<(Millis, HoldId)>,
}

/// (SKU id, location id, slot) of every level, SKU by SKU, following each SKU's chain of levels
/// from `sku_first_level` (a shard's, or a copy's).
fn slots_of<'a>(sku_first_level: &'a [u32], levels: &'a [Level]) -> impl Iterator<Item = (u32, u32, u32)> + 'a {
    sku_first_level.iter().enumerate().flat_map(move |(sku, &first)| {
        std::iter::successors((first != NO_SLOT).then_some(first), move |&slot| {
            let next = levels[slot as usize].next_of_sku;
            (next != NO_SLOT).then_some(next)
        })
        .map(move |slot| (sku as u32, levels[slot as usize].location, slot))
    })
}

/// A level's lots and allocations (by channel name), as a [`LevelRecord`] holds them.
type LevelExtrasRecord = (Vec<LotRecord>, Vec<(String, Qty)>);

/// A shard's state copied for a checkpoint by [`ShardState::copy`], not yet in the shape of a
/// [`ShardSnapshot`]: levels as stored (by slot, linked per SKU), names by interned id.
pub struct ShardCopy {
    last_seq: Seq,
    levels: Vec<Level>,
    sku_first_level: Vec<u32>,
    sku_names: Vec<Arc<str>>,
    location_names: Vec<Arc<str>>,
    /// Lots and allocations of the levels that have any, by slot.
    extras: AHashMap<u32, LevelExtrasRecord>,
    holds: Vec<HoldRecord>,
    keys: KeysSnapshot,
    sku_settings: Vec<(String, SkuSettings)>,
    lot_expiry: Vec<(String, String, Millis)>,
    serials: Vec<SerialView>,
    committed_split_holds: Vec<(Millis, HoldId)>,
}

impl ShardCopy {
    /// The sequence number the copy is consistent at (the shard's last record).
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// The snapshot: levels named and ordered by (SKU, location), everything else sorted.
    pub fn finish(self) -> ShardSnapshot {
        let ShardCopy { levels: stored, sku_first_level, sku_names, location_names, mut extras, .. } = self;
        // Ordered by names first (sorting small tuples, not the records), then copied out.
        let mut order: Vec<(&str, &str, u32)> = slots_of(&sku_first_level, &stored)
            .map(|(sku, location, slot)| (&*sku_names[sku as usize], &*location_names[location as usize], slot))
            .collect();
        order.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let levels = order
            .into_iter()
            .map(|(sku, location, slot)| {
                let (lots, allocations) = extras.remove(&slot).unwrap_or_default();
                let level = stored[slot as usize];
                LevelRecord {
                    sku: sku.to_owned(),
                    location: location.to_owned(),
                    level: Level { flags: level.flags & !FLAG_EXTRAS, ..level },
                    lots,
                    allocations,
                }
            })
            .collect();
        let mut holds = self.holds;
        holds.sort_by_key(|h| h.id);
        let mut sku_settings = self.sku_settings;
        sku_settings.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lot_expiry = self.lot_expiry;
        lot_expiry.sort();
        let mut serials = self.serials;
        serials.sort_by(|a, b| (&a.sku, &a.serial).cmp(&(&b.sku, &b.serial)));
        ShardSnapshot {
            last_seq: self.last_seq,
            levels,
            holds,
            keys: self.keys,
            sku_settings,
            lot_expiry,
            serials,
            committed_split_holds: self.committed_split_holds,
        }
    }
}

/// How units come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PutKind {
    /// A receive; `true` when it names a purchase order (so `incoming` goes down).
    Receive(bool),
    Return(ReturnCondition),
    /// A positive adjustment.
    Found,
}

/// Where taken units go (for serial numbers): sold or written off, with (seq, time, kind).
#[derive(Clone, Copy, Debug)]
enum TakeOut {
    Sold(Seq, Millis, &'static str),
    WrittenOff(Seq, Millis, &'static str),
}

/// When the `lot_expiring` warning of a lot expiring at `expires_at` is due.
fn warn_at(days: Option<u16>, expires_at: Millis) -> Option<Millis> {
    days.map(|d| expires_at.saturating_sub(d as Millis * DAY_MILLIS))
}
