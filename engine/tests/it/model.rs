//! Model test of the core state machine: random movement sequences go to `ShardState::apply` and
//! to a plain reference model written from `design/domain.md`; after every step the outcome, the
//! effects (level views, alerts, closed holds), every level, the open holds and the remembered
//! idempotency keys must agree, and the domain invariants must hold.
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
}

impl MLevel {
    fn available(&self) -> Qty {
        self.on_hand - self.reserved - self.unsellable - self.settings.safety_stock
    }
}

#[derive(Clone, Debug, PartialEq)]
struct MHold {
    expires_at: Millis,
    /// (sku, location, qty still held), in the order of the reservation; qty > 0.
    lines: Vec<(String, String, Qty)>,
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

impl Model {
    /// The model's answer to one movement: what `ShardState::apply` must return and append.
    fn apply(&mut self, now: Millis, seq: Seq, m: &Movement) -> (Applied, Effects) {
        let envelope_ok = m.key.iter().all(|k| text_ok(k, IDEMPOTENCY_KEY_BYTES_MAX))
            && text_ok(&m.channel, CHANNEL_BYTES_MAX)
            && m.reference.iter().all(|r| text_ok(r, REFERENCE_BYTES_MAX));
        let names: Vec<(&str, &str)> = match &m.kind {
            MovementKind::Receive { sku, location, .. }
            | MovementKind::Expect { sku, location, .. }
            | MovementKind::Sell { sku, location, .. }
            | MovementKind::Return { sku, location, .. }
            | MovementKind::Adjust { sku, location, .. }
            | MovementKind::Count { sku, location, .. }
            | MovementKind::SetSettings { sku, location, .. } => vec![(sku, location)],
            MovementKind::Transfer { sku, from, to, .. } => vec![(sku, from), (sku, to)],
            MovementKind::Reserve { lines, .. } => lines.iter().map(|l| (&l.sku[..], &l.location[..])).collect(),
            _ => Vec::new(),
        };
        let too_many_lines = matches!(&m.kind, MovementKind::Reserve { lines, .. } if lines.len() > HOLD_LINES_MAX);
        let sizes = if !envelope_ok {
            Err(Reason::InvalidField)
        } else if too_many_lines {
            Err(Reason::InvalidLines)
        } else {
            names.iter().try_for_each(|(sku, location)| check_names(sku, location))
        };
        if let Err(reason) = sizes {
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
        let outcome = next.decide(now, m, &mut fx);
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

    fn level_mut(&mut self, sku: &str, location: &str) -> &mut MLevel {
        self.levels.entry(key_of(sku, location)).or_default()
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

    /// A sale without a hold (also a negative adjustment).
    fn take(&mut self, sku: &str, location: &str, qty: Qty, allow_negative: bool, fx: &mut Effects) -> Outcome {
        if !allow_negative && self.level(sku, location).available() < qty {
            return Err(Reason::InsufficientStock);
        }
        let l = self.level_mut(sku, location);
        l.on_hand = level_qty(l.on_hand as i128 - qty as i128)?;
        self.touched(sku, location, fx);
        Ok(Detail::None)
    }

    fn drop_hold(&mut self, hold: HoldId, sold: bool, fx: &mut Effects) {
        let h = self.holds.remove(&hold).expect("hold exists");
        for (sku, location, qty) in &h.lines {
            let l = self.levels.get_mut(&key_of(sku, location)).expect("held level exists");
            l.reserved -= qty;
            if sold {
                l.on_hand -= qty;
            }
            self.touched(sku, location, fx);
        }
        fx.holds_closed.push(hold);
    }

    fn decide(&mut self, now: Millis, m: &Movement, fx: &mut Effects) -> Outcome {
        match &m.kind {
            MovementKind::Receive { sku, location, qty, .. } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                let l = self.level_mut(sku, location);
                l.on_hand = level_qty(l.on_hand as i128 + *qty as i128)?;
                if m.reference.is_some() {
                    l.incoming -= (*qty).min(l.incoming);
                }
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Expect { sku, location, qty } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                let l = self.level_mut(sku, location);
                l.incoming = level_qty(l.incoming as i128 + *qty as i128)?;
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Sell { sku, location, qty, hold: None, allow_negative, .. } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                self.take(sku, location, *qty, *allow_negative, fx)
            }
            MovementKind::Sell { sku, location, qty, hold: Some(hold), allow_negative, .. } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                let h = self.holds.get(hold).ok_or(Reason::UnknownHold)?;
                if now >= h.expires_at {
                    return Err(Reason::HoldExpired);
                }
                let line =
                    h.lines.iter().position(|(s, l, _)| s == sku && l == location).ok_or(Reason::HoldLineMissing)?;
                let from_hold = (*qty).min(h.lines[line].2);
                let beyond_hold = qty - from_hold;
                if beyond_hold > 0 && !allow_negative && self.level(sku, location).available() < beyond_hold {
                    return Err(Reason::InsufficientStock);
                }
                let l = self.level_mut(sku, location);
                l.on_hand = level_qty(l.on_hand as i128 - *qty as i128)?;
                l.reserved -= from_hold;
                let h = self.holds.get_mut(hold).expect("hold exists");
                h.lines[line].2 -= from_hold;
                if h.lines[line].2 == 0 {
                    h.lines.remove(line);
                }
                if h.lines.is_empty() {
                    self.holds.remove(hold);
                    fx.holds_closed.push(*hold);
                }
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Return { sku, location, qty, condition, .. } => {
                check_names(sku, location)?;
                check_movement_qty(*qty)?;
                let l = self.level_mut(sku, location);
                l.on_hand = level_qty(l.on_hand as i128 + *qty as i128)?;
                if *condition == ReturnCondition::Damaged {
                    l.unsellable = level_qty(l.unsellable as i128 + *qty as i128)?;
                }
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Adjust { sku, location, delta, allow_negative, .. } => {
                check_names(sku, location)?;
                let magnitude = (*delta as i128).abs();
                if magnitude < 1 || magnitude > MOVEMENT_QTY_MAX as i128 {
                    return Err(Reason::InvalidQuantity);
                }
                if *delta < 0 {
                    return self.take(sku, location, -delta, *allow_negative, fx);
                }
                let l = self.level_mut(sku, location);
                l.on_hand = level_qty(l.on_hand as i128 + *delta as i128)?;
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Count { sku, location, counted, units: _ } => {
                check_names(sku, location)?;
                if *counted < 0 || *counted > MOVEMENT_QTY_MAX {
                    return Err(Reason::InvalidQuantity);
                }
                let l = self.level_mut(sku, location);
                let variance = counted - l.on_hand;
                l.on_hand = *counted;
                l.unsellable = l.unsellable.min(*counted);
                self.touched(sku, location, fx);
                Ok(Detail::Variance(variance))
            }
            MovementKind::Transfer { sku, from, to, qty, units: _ } => {
                check_names(sku, from)?;
                check_names(sku, to)?;
                check_movement_qty(*qty)?;
                if from == to {
                    return Err(Reason::SameLocation);
                }
                if self.level(sku, from).available() < *qty {
                    return Err(Reason::InsufficientStock);
                }
                let dst = self.level_mut(sku, to);
                dst.on_hand = level_qty(dst.on_hand as i128 + *qty as i128)?;
                let src = self.level_mut(sku, from);
                src.on_hand = level_qty(src.on_hand as i128 - *qty as i128)?;
                self.touched(sku, from, fx);
                self.touched(sku, to, fx);
                Ok(Detail::None)
            }
            MovementKind::Reserve { hold, lines, expires_at } => {
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
                if *expires_at <= now {
                    return Err(Reason::InvalidExpiry);
                }
                if self.holds.contains_key(hold) {
                    return Err(Reason::InvalidLines);
                }
                for line in lines {
                    if self.level(&line.sku, &line.location).available() < line.qty {
                        return Err(Reason::InsufficientStock);
                    }
                }
                for line in lines {
                    self.level_mut(&line.sku, &line.location).reserved += line.qty;
                    self.touched(&line.sku, &line.location, fx);
                }
                let lines = lines.iter().map(|l| (l.sku.clone(), l.location.clone(), l.qty)).collect();
                self.holds.insert(*hold, MHold { expires_at: *expires_at, lines });
                Ok(Detail::Hold(*hold))
            }
            MovementKind::Commit { hold } => {
                let h = self.holds.get(hold).ok_or(Reason::UnknownHold)?;
                if now >= h.expires_at {
                    return Err(Reason::HoldExpired);
                }
                self.drop_hold(*hold, true, fx);
                Ok(Detail::None)
            }
            MovementKind::Release { hold } => {
                if !self.holds.contains_key(hold) {
                    return Err(Reason::UnknownHold);
                }
                self.drop_hold(*hold, false, fx);
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
                self.level_mut(sku, location).settings = *settings;
                self.touched(sku, location, fx);
                Ok(Detail::None)
            }
            MovementKind::Allocate { .. }
            | MovementKind::SetSkuSettings { .. }
            | MovementKind::CompleteCommit { .. } => {
                unreachable!("the model does not generate complex-inventory movements yet")
            }
            MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max } => {
                let mut expired: Vec<(Millis, HoldId)> = self
                    .holds
                    .iter()
                    .filter(|(_, h)| h.expires_at <= *holds_expired_by)
                    .map(|(&id, h)| (h.expires_at, id))
                    .collect();
                expired.sort();
                for (_, id) in expired {
                    self.drop_hold(id, false, fx);
                }
                self.keys.retain(|k| k.seen_at >= *keys_seen_before);
                while self.keys.len() as u64 > *keys_max {
                    self.keys.remove(0);
                }
                Ok(Detail::None)
            }
        }
    }

    fn expire_due(&self, holds_expired_by: Millis, keys_seen_before: Millis, keys_max: u64) -> bool {
        self.holds.values().any(|h| h.expires_at <= holds_expired_by)
            || self.keys.iter().any(|k| k.seen_at < keys_seen_before)
            || self.keys.len() as u64 > keys_max
    }

    fn views(&self) -> Vec<LevelView> {
        self.levels.iter().map(|((s, l), level)| model_view(s, l, level)).collect()
    }

    fn open_holds(&self) -> Vec<OpenHold> {
        self.holds.iter().map(|(&id, h)| (id, h.expires_at, h.lines.clone())).collect()
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

#[derive(Clone, Debug)]
enum Op {
    /// A movement fully decided by the generator.
    Plain(MovementKind),
    /// `held_line`: sell the SKU and location of that line of the hold, when it is open.
    SellFromHold {
        sku: String,
        location: String,
        qty: Qty,
        hold: HoldPick,
        allow_negative: bool,
        held_line: Option<usize>,
    },
    /// `reuse_open_id`: give it the id of an open hold (the core must refuse it).
    Reserve {
        lines: Vec<Line>,
        expires_in_ms: i64,
        reuse_open_id: bool,
    },
    Commit(HoldPick),
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

fn reserve_lines() -> impl Strategy<Value = Vec<Line>> {
    prop_oneof![
        40 => prop::collection::vec(line(), 1..=2),
        10 => prop::collection::vec(line(), 3..=4),
        1 => Just(Vec::new()),
        1 => Just(
            (0..=HOLD_LINES_MAX)
                .map(|_| Line { sku: "A".into(), location: "dc".into(), qty: 1, unit_price: None, kit: None, units: Units::ANY  })
                .collect()
        ),
    ]
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
        12 => (sku(), location(), prop_oneof![4 => 1..=30i64, 1 => qty()], prop::option::of(0..1000i64))
            .prop_map(|(sku, location, qty, unit_cost)| Op::Plain(MovementKind::Receive { sku, location, qty, unit_cost, units: Units::ANY  })),
        4 => (sku(), location(), qty())
            .prop_map(|(sku, location, qty)| Op::Plain(MovementKind::Expect { sku, location, qty })),
        12 => (sku(), location(), qty(), prop::option::of(0..10_000i64), prop::bool::weighted(0.15))
            .prop_map(|(sku, location, qty, unit_price, allow_negative)| Op::Plain(MovementKind::Sell {
                sku, location, qty, unit_price, hold: None, allow_negative, units: Units::ANY
            })),
        7 => (sku(), location(), qty(), hold_pick(), prop::bool::weighted(0.15), prop::option::weighted(0.8, any::<usize>()))
            .prop_map(|(sku, location, qty, hold, allow_negative, held_line)| Op::SellFromHold {
                sku, location, qty, hold, allow_negative, held_line,
            }),
        5 => (sku(), location(), qty(), condition, prop::option::of(0..10_000i64))
            .prop_map(|(sku, location, qty, condition, unit_price)| Op::Plain(MovementKind::Return {
                sku, location, qty, condition, unit_price, units: Units::ANY
            })),
        6 => (sku(), location(), delta(), adjust_reason, prop::bool::weighted(0.2))
            .prop_map(|(sku, location, delta, reason, allow_negative)| Op::Plain(MovementKind::Adjust {
                sku, location, delta, reason, allow_negative, units: Units::ANY
            })),
        3 => (sku(), location(), counted())
            .prop_map(|(sku, location, counted)| Op::Plain(MovementKind::Count { sku, location, counted, units: Units::ANY  })),
        6 => (sku(), location(), prop::bool::weighted(0.85), location(), qty())
            .prop_map(|(sku, from, to_other, any_to, qty)| {
                let to = match LOCATIONS.iter().position(|l| *l == from) {
                    Some(i) if to_other => LOCATIONS[1 - i].to_string(),
                    _ => any_to,
                };
                Op::Plain(MovementKind::Transfer { sku, from, to, qty, units: Units::ANY  })
            }),
        14 => (
            reserve_lines(),
            prop_oneof![70 => 1..=10_000i64, 15 => 10_001..=120_000i64, 3 => Just(0i64), 2 => -2_000..=-1i64],
            prop::bool::weighted(0.03),
        )
            .prop_map(|(lines, expires_in_ms, reuse_open_id)| Op::Reserve { lines, expires_in_ms, reuse_open_id }),
        6 => hold_pick().prop_map(Op::Commit),
        4 => hold_pick().prop_map(Op::Release),
        5 => (sku(), location(), settings())
            .prop_map(|(sku, location, settings)| Op::Plain(MovementKind::SetSettings { sku, location, settings })),
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

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..=max)
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

    fn new_hold_id(&mut self) -> HoldId {
        self.holds_placed += 1;
        let id = (self.holds_placed << HOLD_SHARD_BITS) | 1;
        self.hold_ids.push(id);
        id
    }

    fn resolve(&mut self, s: &Step) -> Movement {
        let kind = match &s.op {
            Op::Repeat(i) if !self.history.is_empty() => {
                let mut m = self.history[i % self.history.len()].clone();
                if let MovementKind::Reserve { hold, .. } = &mut m.kind {
                    // The engine assigns a new id to every reservation it is sent.
                    *hold = self.new_hold_id();
                }
                return m;
            }
            Op::Repeat(_) => MovementKind::Release { hold: UNKNOWN_HOLD },
            Op::Plain(kind) => kind.clone(),
            Op::SellFromHold { sku, location, qty, hold, allow_negative, held_line } => {
                let hold = self.pick_hold(hold);
                let (sku, location) = match (self.model.holds.get(&hold), held_line) {
                    (Some(h), Some(i)) => {
                        let (sku, location, _) = &h.lines[i % h.lines.len()];
                        (sku.clone(), location.clone())
                    }
                    _ => (sku.clone(), location.clone()),
                };
                MovementKind::Sell {
                    sku,
                    location,
                    qty: *qty,
                    unit_price: None,
                    hold: Some(hold),
                    allow_negative: *allow_negative,
                    units: Units::ANY,
                }
            }
            Op::Reserve { lines, expires_in_ms, reuse_open_id } => {
                let hold = match self.model.holds.keys().next() {
                    Some(&open) if *reuse_open_id => open,
                    _ => self.new_hold_id(),
                };
                let expires_at = self.now.saturating_add_signed(*expires_in_ms);
                MovementKind::Reserve { hold, lines: lines.clone(), expires_at }
            }
            Op::Commit(pick) => MovementKind::Commit { hold: self.pick_hold(pick) },
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
                    Op::Commit(pick) | Op::Release(pick) | Op::SellFromHold { hold: pick, .. } => pick,
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
        let before_holds: BTreeMap<HoldId, Millis> =
            self.model.holds.iter().map(|(&id, h)| (id, h.expires_at)).collect();
        let before_key_times: Vec<Millis> = self.model.keys.iter().map(|k| k.seen_at).collect();
        let seq = self.model.last_seq + 1;
        let mut fx = Effects::default();
        let got = self.core.apply(now, seq, &m, body_hash(&m), &mut fx);
        let (want, want_fx) = self.model.apply(now, seq, &m);
        prop_assert_eq!(got, want, "step {} at {}: outcome of {:?}", i, now, m);
        prop_assert_eq!(&fx.alerts, &want_fx.alerts, "step {}: alerts of {:?}", i, m);
        prop_assert_eq!(&fx.levels, &want_fx.levels, "step {}: level changes of {:?}", i, m);
        prop_assert_eq!(&fx.holds_closed, &want_fx.holds_closed, "step {}: holds closed by {:?}", i, m);
        self.compare_state().map_err(|e| TestCaseError::fail(format!("step {i} after {m:?}: {e}")))?;
        self.check_invariants(&before, &m, got)
            .map_err(|e| TestCaseError::fail(format!("step {i} after {m:?}: {e}")))?;
        if let Some(stats) = stats {
            record_stats(stats, now, &m, got, &fx, &before_holds, &before_key_times);
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
        Ok(())
    }

    /// The domain's invariants, checked on the core.
    fn check_invariants(
        &self,
        before: &BTreeMap<LevelKey, LevelView>,
        m: &Movement,
        applied: Applied,
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
        let excused: Option<LevelKey> = match (&m.kind, applied) {
            (_, Applied::Recorded(Err(_)) | Applied::Retry { .. } | Applied::Mismatch) => None,
            (MovementKind::Sell { sku, location, allow_negative: true, .. }, _)
            | (MovementKind::Adjust { sku, location, allow_negative: true, .. }, _)
            | (MovementKind::Count { sku, location, .. }, _)
            | (MovementKind::SetSettings { sku, location, .. }, _) => Some(key_of(sku, location)),
            _ => None,
        };
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
            if sound(was) && excused.as_ref() != Some(&k) {
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
    before_holds: &BTreeMap<HoldId, Millis>,
    before_key_times: &[Millis],
) {
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
    let mut runner = TestRunner::deterministic();
    let strategy = (seed(), steps(200));
    let mut stats = Stats::default();
    for _ in 0..80 {
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
    ];
    eprintln!("what 80 generated sequences did: {:#?}", stats.counts);
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
