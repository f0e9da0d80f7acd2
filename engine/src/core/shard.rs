//! One shard's stock: levels, holds, idempotency keys and settings for the SKUs it owns, and the
//! deterministic rules that change them.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or spawns. `apply` is a pure
//! function of the state, the command and the time it is given, so the live engine, recovery
//! (replay of the log) and the model tests all run this same code.

use super::interner::Interner;
use super::types::*;
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Hold {
    expires_at: Millis,
    lines: Vec<HoldLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyEntry {
    body_hash: u64,
    seen_at: Millis,
    seq: Seq,
    outcome: Outcome,
}

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
    keys: AHashMap<u128, KeyEntry>,
    key_order: VecDeque<(Millis, u128)>,
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
        let hash = xxhash_rust::xxh3::xxh3_64(&buf);
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

/// Checks every text field's length and the number of lines: what bounds a record's size. The
/// engine refuses a movement that fails this before it reaches a shard.
pub fn check_sizes(m: &Movement) -> Result<(), Reason> {
    if let Some(key) = &m.key {
        check_text(key, IDEMPOTENCY_KEY_BYTES_MAX)?;
    }
    check_text(&m.channel, CHANNEL_BYTES_MAX)?;
    if let Some(r) = &m.reference {
        check_text(r, REFERENCE_BYTES_MAX)?;
    }
    match &m.kind {
        MovementKind::Receive { sku, location, .. }
        | MovementKind::Expect { sku, location, .. }
        | MovementKind::Sell { sku, location, .. }
        | MovementKind::Return { sku, location, .. }
        | MovementKind::Adjust { sku, location, .. }
        | MovementKind::Count { sku, location, .. }
        | MovementKind::SetSettings { sku, location, .. } => check_level_key(sku, location),
        MovementKind::Transfer { sku, from, to, .. } => {
            check_level_key(sku, from)?;
            check_text(to, LOCATION_BYTES_MAX)
        }
        MovementKind::Reserve { lines, .. } => {
            if lines.len() > HOLD_LINES_MAX {
                return Err(Reason::InvalidLines);
            }
            lines.iter().try_for_each(|l| check_level_key(&l.sku, &l.location))
        }
        MovementKind::Commit { .. } | MovementKind::Release { .. } | MovementKind::Expire { .. } => Ok(()),
    }
}

fn check_level_key(sku: &str, location: &str) -> Result<(), Reason> {
    check_text(sku, SKU_BYTES_MAX)?;
    check_text(location, LOCATION_BYTES_MAX)
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
            if let Some(entry) = self.keys.get(&k) {
                return if entry.body_hash == body_hash {
                    Applied::Retry { seq: entry.seq, outcome: entry.outcome }
                } else {
                    Applied::Mismatch
                };
            }
        }
        let levels_before = fx.levels.len();
        let outcome = self.apply_kind(now, movement, fx);
        debug_assert!(outcome.is_ok() || fx.levels.len() == levels_before, "a rejection changed a level");
        if let Some(k) = key {
            self.keys.insert(k, KeyEntry { body_hash, seen_at: now, seq, outcome });
            self.key_order.push_back((now, k));
        }
        self.record(seq, outcome)
    }

    fn record(&mut self, seq: Seq, outcome: Outcome) -> Applied {
        debug_assert!(seq > self.last_seq, "sequence numbers must increase");
        self.last_seq = seq;
        Applied::Recorded(outcome)
    }

    fn apply_kind(&mut self, now: Millis, m: &Movement, fx: &mut Effects) -> Outcome {
        match &m.kind {
            MovementKind::Receive { sku, location, qty, .. } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                let slot = self.slot_or_new(sku, location);
                let l = &self.levels[slot as usize];
                let on_hand = add(l.on_hand, *qty)?;
                let incoming = if m.reference.is_some() { l.incoming - (*qty).min(l.incoming) } else { l.incoming };
                let l = &mut self.levels[slot as usize];
                l.on_hand = on_hand;
                l.incoming = incoming;
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Expect { sku, location, qty } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                let slot = self.slot_or_new(sku, location);
                let l = &mut self.levels[slot as usize];
                l.incoming = add(l.incoming, *qty)?;
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Sell { sku, location, qty, hold, allow_negative, .. } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                match hold {
                    None => self.take(sku, location, *qty, *allow_negative, fx),
                    Some(h) => self.sell_from_hold(now, *h, sku, location, *qty, *allow_negative, fx),
                }
            }
            MovementKind::Return { sku, location, qty, condition, .. } => {
                check_level_key(sku, location)?;
                check_qty(*qty)?;
                let slot = self.slot_or_new(sku, location);
                let l = &self.levels[slot as usize];
                let on_hand = add(l.on_hand, *qty)?;
                let unsellable = match condition {
                    ReturnCondition::Restock => l.unsellable,
                    ReturnCondition::Damaged => add(l.unsellable, *qty)?,
                };
                let l = &mut self.levels[slot as usize];
                l.on_hand = on_hand;
                l.unsellable = unsellable;
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Adjust { sku, location, delta, allow_negative, .. } => {
                check_level_key(sku, location)?;
                // `i64::MIN` has no absolute value: it is as invalid as any other too-large delta.
                check_qty(delta.checked_abs().unwrap_or(Qty::MAX))?;
                if *delta < 0 {
                    return self.take(sku, location, -*delta, *allow_negative, fx);
                }
                let slot = self.slot_or_new(sku, location);
                let l = &mut self.levels[slot as usize];
                l.on_hand = add(l.on_hand, *delta)?;
                self.changed(slot, sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Count { sku, location, counted } => {
                check_level_key(sku, location)?;
                if !(0..=MOVEMENT_QTY_MAX).contains(counted) {
                    return Err(Reason::InvalidQuantity);
                }
                let slot = self.slot_or_new(sku, location);
                let l = &mut self.levels[slot as usize];
                let variance = counted - l.on_hand;
                l.on_hand = *counted;
                l.unsellable = l.unsellable.min(*counted);
                self.changed(slot, sku, location, fx);
                Ok(Detail::Variance(variance))
            }
            MovementKind::Transfer { sku, from, to, qty } => {
                check_level_key(sku, from)?;
                check_text(to, LOCATION_BYTES_MAX)?;
                check_qty(*qty)?;
                if from == to {
                    return Err(Reason::SameLocation);
                }
                let src = self.slot(sku, from).ok_or(Reason::InsufficientStock)?;
                if self.levels[src as usize].available() < *qty {
                    return Err(Reason::InsufficientStock);
                }
                let dst_on_hand = match self.slot(sku, to) {
                    Some(dst) => add(self.levels[dst as usize].on_hand, *qty)?,
                    None => *qty,
                };
                let dst = self.slot_or_new(sku, to);
                self.levels[src as usize].on_hand -= qty;
                self.levels[dst as usize].on_hand = dst_on_hand;
                self.changed(src, sku, from, fx);
                self.changed(dst, sku, to, fx);
                Ok(Detail::None)
            }
            MovementKind::Reserve { hold, lines, expires_at } => self.reserve(now, *hold, lines, *expires_at, fx),
            MovementKind::Commit { hold } => {
                let h = self.holds.get(hold).ok_or(Reason::UnknownHold)?;
                if now >= h.expires_at {
                    return Err(Reason::HoldExpired);
                }
                let h = self.remove_hold(*hold).expect("hold exists");
                for line in &h.lines {
                    let l = &mut self.levels[line.slot as usize];
                    l.on_hand -= line.qty;
                    l.reserved -= line.qty;
                    self.changed_ids(line.slot, line.sku, line.location, fx);
                }
                fx.holds_closed.push(*hold);
                Ok(Detail::None)
            }
            MovementKind::Release { hold } => {
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.release(*hold, fx);
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
                // At most EXPIRE_HOLDS_MAX holds per record, so that the record stays small; the
                // rest are still due and go with the next expiry.
                for _ in 0..EXPIRE_HOLDS_MAX {
                    match self.hold_expiry.first() {
                        Some(&(at, hold)) if at <= *holds_expired_by => self.release(hold, fx),
                        _ => break,
                    }
                }
                while let Some(&(seen_at, k)) = self.key_order.front() {
                    if seen_at >= *keys_seen_before && self.key_order.len() as u64 <= *keys_max {
                        break;
                    }
                    self.key_order.pop_front();
                    self.keys.remove(&k);
                }
                Ok(Detail::None)
            }
        }
    }

    /// Takes `qty` off `on_hand` where `available` allows it (or regardless, if `allow_negative`).
    fn take(&mut self, sku: &str, location: &str, qty: Qty, allow_negative: bool, fx: &mut Effects) -> Outcome {
        let slot = match self.slot(sku, location) {
            Some(slot) => slot,
            None if allow_negative => self.slot_or_new(sku, location),
            None => return Err(Reason::InsufficientStock),
        };
        let l = &mut self.levels[slot as usize];
        if !allow_negative && l.available() < qty {
            return Err(Reason::InsufficientStock);
        }
        l.on_hand = add(l.on_hand, -qty)?;
        self.changed(slot, sku, location, fx);
        Ok(Detail::None)
    }

    #[allow(clippy::too_many_arguments)]
    fn sell_from_hold(
        &mut self,
        now: Millis,
        hold: HoldId,
        sku: &str,
        location: &str,
        qty: Qty,
        allow_negative: bool,
        fx: &mut Effects,
    ) -> Outcome {
        let h = self.holds.get(&hold).ok_or(Reason::UnknownHold)?;
        if now >= h.expires_at {
            return Err(Reason::HoldExpired);
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
        let level = &self.levels[line.slot as usize];
        if excess > 0 && !allow_negative && level.available() < excess {
            return Err(Reason::InsufficientStock);
        }
        let on_hand = add(level.on_hand, -qty)?;
        let slot = line.slot;
        let l = &mut self.levels[slot as usize];
        l.on_hand = on_hand;
        l.reserved -= consumed;
        let h = self.holds.get_mut(&hold).expect("hold exists");
        h.lines[idx].qty -= consumed;
        if h.lines[idx].qty == 0 {
            h.lines.remove(idx);
        }
        if h.lines.is_empty() {
            self.remove_hold(hold);
            fx.holds_closed.push(hold);
        }
        self.changed(slot, sku, location, fx);
        Ok(Detail::None)
    }

    fn reserve(&mut self, now: Millis, hold: HoldId, lines: &[Line], expires_at: Millis, fx: &mut Effects) -> Outcome {
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
        if expires_at <= now {
            return Err(Reason::InvalidExpiry);
        }
        if self.holds.contains_key(&hold) {
            return Err(Reason::InvalidLines);
        }
        let mut slots = Vec::with_capacity(lines.len());
        for line in lines {
            let slot = self.slot(&line.sku, &line.location).ok_or(Reason::InsufficientStock)?;
            if self.levels[slot as usize].available() < line.qty {
                return Err(Reason::InsufficientStock);
            }
            slots.push(slot);
        }
        let mut held = Vec::with_capacity(lines.len());
        for (line, &slot) in lines.iter().zip(&slots) {
            self.levels[slot as usize].reserved += line.qty;
            let sku = self.skus.get(&line.sku).expect("slot exists");
            let location = self.locations.get(&line.location).expect("slot exists");
            held.push(HoldLine { sku, location, slot, qty: line.qty, unit_price: line.unit_price });
            self.changed(slot, &line.sku, &line.location, fx);
        }
        self.holds.insert(hold, Hold { expires_at, lines: held });
        self.hold_expiry.insert((expires_at, hold));
        Ok(Detail::Hold(hold))
    }

    fn remove_hold(&mut self, hold: HoldId) -> Option<Hold> {
        let h = self.holds.remove(&hold)?;
        self.hold_expiry.remove(&(h.expires_at, hold));
        Some(h)
    }

    fn release(&mut self, hold: HoldId, fx: &mut Effects) {
        let h = self.remove_hold(hold).expect("hold exists");
        for line in &h.lines {
            self.levels[line.slot as usize].reserved -= line.qty;
            self.changed_ids(line.slot, line.sku, line.location, fx);
        }
        fx.holds_closed.push(hold);
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
        self.sku_first_level.iter().enumerate().flat_map(move |(sku, &first)| {
            std::iter::successors((first != NO_SLOT).then_some(first), move |&slot| {
                let next = self.levels[slot as usize].next_of_sku;
                (next != NO_SLOT).then_some(next)
            })
            .map(move |slot| (sku as u32, self.levels[slot as usize].location, slot))
        })
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
                });
            }
        } else {
            l.flags &= !FLAG_OUT_OF_STOCK_ALERTED;
        }
        fx.push_level(sku, location, [l.on_hand, l.reserved, l.unsellable, l.incoming, l.safety_stock, available]);
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
            || self.key_order.len() as u64 > keys_max
            || self.key_order.front().is_some_and(|&(seen, _)| seen < keys_seen_before)
    }

    /// Idempotency keys remembered: (key hash, body hash, seen at, hold id if the outcome was one).
    pub fn key_guards(&self) -> impl Iterator<Item = (u128, u64, Millis, Option<HoldId>)> + '_ {
        self.keys.iter().map(|(k, e)| {
            let hold = match e.outcome {
                Ok(Detail::Hold(h)) => Some(h),
                _ => None,
            };
            (*k, e.body_hash, e.seen_at, hold)
        })
    }

    /// When the oldest idempotency key still remembered was first seen.
    pub fn oldest_key_seen_at(&self) -> Option<Millis> {
        self.key_order.front().map(|&(seen_at, _)| seen_at)
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

    // ---- checkpoints ----

    /// A complete copy of the state, in a stable serde shape (see `docs/wal.md`).
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut levels: Vec<LevelRecord> = self
            .slots()
            .map(|(s, l, slot)| LevelRecord {
                sku: self.skus.name(s).to_owned(),
                location: self.locations.name(l).to_owned(),
                level: self.levels[slot as usize],
            })
            .collect();
        levels.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        let mut holds: Vec<HoldRecord> = self
            .holds
            .iter()
            .map(|(&id, h)| HoldRecord {
                id,
                expires_at: h.expires_at,
                lines: h
                    .lines
                    .iter()
                    .map(|l| Line {
                        sku: self.skus.name(l.sku).to_owned(),
                        location: self.locations.name(l.location).to_owned(),
                        qty: l.qty,
                        unit_price: l.unit_price,
                    })
                    .collect(),
            })
            .collect();
        holds.sort_by_key(|h| h.id);
        let keys = self.key_order.iter().map(|&(_, k)| (k, self.keys[&k])).collect();
        ShardSnapshot { last_seq: self.last_seq, levels, holds, keys }
    }

    /// Rebuilds a shard from [`ShardState::snapshot`].
    pub fn from_snapshot(snap: ShardSnapshot) -> ShardState {
        let mut s = ShardState { last_seq: snap.last_seq, ..ShardState::default() };
        for r in snap.levels {
            let slot = s.slot_or_new(&r.sku, &r.location);
            let l = &mut s.levels[slot as usize];
            *l = Level { next_of_sku: l.next_of_sku, location: l.location, ..r.level };
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
                    }
                })
                .collect();
            s.hold_expiry.insert((h.expires_at, h.id));
            s.holds.insert(h.id, Hold { expires_at: h.expires_at, lines });
        }
        for (k, e) in snap.keys {
            s.key_order.push_back((e.seen_at, k));
            s.keys.insert(k, e);
        }
        s
    }
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
}

/// A hold as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: HoldId,
    pub expires_at: Millis,
    pub lines: Vec<Line>,
}

/// The whole state of one shard, as a checkpoint stores it. Two shards with equal snapshots
/// behave identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    pub last_seq: Seq,
    pub levels: Vec<LevelRecord>,
    pub holds: Vec<HoldRecord>,
    keys: Vec<(u128, KeyEntry)>,
}
