//! The end-of-run check of complex inventory, beside the conservation check of every level:
//!
//! - **Lots**: at every level read, the lots' units plus the loose units make `on_hand`; no lot
//!   has negative units or reservations, or more reserved than on hand; a seeded lot has the
//!   expiry its code says; a SKU without lots (serial-tracked) has none.
//! - **Serial numbers**: every serial the load generator saw sold is `sold`, every one it
//!   believes in stock is `in_stock` at that location (held: reserved there; written off:
//!   written off). All of them, or a deterministic sample when there are very many.
//! - **Allocations**: what is left of each allocation is between 0 and what was ring-fenced, and
//!   at least what the channel's own acknowledged reservations cannot have used (less would mean
//!   another channel took ring-fenced units); every channel sale in the change feed at an
//!   allocated level was within `min(available, own allocation + max(0, available - ring-fenced))`
//!   (a replay of the allocations in feed order), and the replay ends where the engine does;
//!   `available_for` agrees with the level and its allocations.
//! - **Settings**: kits have their components, serial-tracked SKUs are tracked.
//!
//! The reads go through [`UnitsReads`], which the target implements; the checks themselves are
//! pure functions of what was read ([`UnitsSnapshot`]), so tests can feed them a crafted state.

use super::book::{Belief, UnitsBook};
use super::{Ledger, EXAMPLES_MAX};
use crate::complex::Plan;
use crate::workload::{Catalogue, LevelIx};
use engine::core::{HoldId, LevelDetail, Qty, SerialStatus, SerialView, SkuSettings};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Most levels whose details (lots, allocations) are read at the end; above it, a deterministic
/// sample of the levels the run touched (allocated levels are always read).
pub const DETAIL_LEVELS_MAX: usize = 50_000;
/// Most serial numbers looked up at the end; above it, a deterministic sample.
pub const SERIALS_CHECKED_MAX: usize = 50_000;
/// Reads in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// A read that could not be made.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    /// The target has no such read (yet): the checks that need it are skipped, and say so.
    pub unsupported: bool,
    pub message: String,
}

/// The reads the complex-inventory check needs (the engine's client implements them).
pub trait UnitsReads: Send + Sync {
    fn level_detail<'a>(
        &'a self,
        sku: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<Option<LevelDetail>, ReadError>>;
    fn serial<'a>(&'a self, sku: &'a str, serial: &'a str) -> BoxFuture<'a, Result<Option<SerialView>, ReadError>>;
    fn sku_settings<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<SkuSettings, ReadError>>;
    fn available_for<'a>(
        &'a self,
        sku: &'a str,
        location: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Qty>, ReadError>>;
}

/// What was read back at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct UnitsSnapshot {
    /// Level details (`None`: the engine has no such level).
    pub details: BTreeMap<LevelIx, Option<LevelDetail>>,
    /// Levels whose details were wanted (touched by the run, or allocated).
    pub detail_levels_wanted: u64,
    /// Serial numbers looked up, with what the load generator believes and what the engine says.
    pub serials: Vec<((u32, u32), Belief, Option<SerialView>)>,
    /// Serials whose belief is certain (every step naming them answered): the population sampled.
    pub serials_certain: u64,
    /// Of those, the ones an accepted step of the run named (or brought), and how many of them
    /// were looked up (all, unless there are more than [`SERIALS_CHECKED_MAX`]).
    pub serials_moved: u64,
    pub serials_moved_checked: u64,
    /// Serials named by a step whose outcome stayed unknown (not checked).
    pub serials_uncertain: u64,
    /// Settings of the kits (by index) and of the serial-tracked SKUs (by SKU index).
    pub kit_settings: Vec<(u32, SkuSettings)>,
    pub serial_settings: Vec<(u32, SkuSettings)>,
    /// `available_for` of every channel at the allocated levels.
    pub available_for: Vec<(LevelIx, String, Option<Qty>)>,
    /// Reads the target could not make, and so the checks not made.
    pub not_read: Vec<String>,
}

/// `items` if at most `max`, else every `ceil(len / max)`-th: a deterministic sample.
pub fn sample<T>(items: Vec<T>, max: usize) -> (Vec<T>, bool) {
    if items.len() <= max {
        return (items, false);
    }
    let stride = items.len().div_ceil(max);
    (items.into_iter().step_by(stride).collect(), true)
}

/// Runs `read` over `items`, `READS_IN_FLIGHT` at a time, in order.
async fn read_all<'a, I, T, F>(items: Vec<I>, read: F) -> Result<Vec<(I, T)>, ReadError>
where
    I: Clone + Send + 'a,
    T: Send + 'a,
    F: Fn(I) -> BoxFuture<'a, Result<T, ReadError>>,
{
    let results: Vec<Result<(I, T), ReadError>> = futures_util::stream::iter(items)
        .map(|i| {
            let f = read(i.clone());
            async move { f.await.map(|t| (i, t)) }
        })
        .buffered(READS_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The allocations of the allocated levels, read from the engine: the starting point of the
/// replay. `Ok(None)`: the target cannot read them.
pub async fn read_allocations(
    plan: &Plan,
    catalogue: &Catalogue,
    reads: &dyn UnitsReads,
) -> Result<Option<BTreeMap<LevelIx, Vec<(String, Qty)>>>, ReadError> {
    let levels: Vec<LevelIx> = plan.allocations().keys().copied().collect();
    match read_all(levels, |l| reads.level_detail(catalogue.sku_name(l), catalogue.location_name(l))).await {
        Ok(v) => Ok(Some(v.into_iter().map(|(l, d)| (l, d.map(|d| d.allocations).unwrap_or_default())).collect())),
        Err(e) if e.unsupported => Ok(None),
        Err(e) => Err(e),
    }
}

/// The allocations the plan seeded, by channel name.
pub fn planned_allocations(plan: &Plan) -> BTreeMap<LevelIx, Vec<(String, Qty)>> {
    plan.allocations()
        .iter()
        .map(|(l, a)| (*l, a.iter().map(|(c, q)| (plan.channel_name(Some(*c)).to_string(), *q)).collect()))
        .collect()
}

/// Reads back what the check needs: details of the levels the run touched (a sample if very
/// many) and of every allocated level, the serials (a sample if very many), the SKU settings,
/// and `available_for` at the allocated levels. A read the target does not have is noted in
/// [`UnitsSnapshot::not_read`]; any other failure is an error.
pub async fn read_snapshot(
    plan: &Plan,
    catalogue: &Catalogue,
    ledger: &Ledger,
    book: &UnitsBook,
    reads: &dyn UnitsReads,
) -> Result<UnitsSnapshot, ReadError> {
    let mut snap = UnitsSnapshot::default();
    let cat = catalogue;
    let note = |snap: &mut UnitsSnapshot, what: &str, e: ReadError| -> Result<(), ReadError> {
        if e.unsupported {
            snap.not_read.push(format!("{what}: {}", e.message));
            Ok(())
        } else {
            Err(e)
        }
    };
    // Levels: the allocated ones, and those with lots or serials the run touched.
    let has_units = |l: LevelIx| plan.config.lots > 0 || plan.is_serial(cat.sku_of(l));
    let touched: Vec<LevelIx> = (0..cat.level_count() as LevelIx)
        .filter(|&l| !plan.allocations().contains_key(&l) && has_units(l) && ledger.touched(l))
        .collect();
    snap.detail_levels_wanted = (touched.len() + plan.allocations().len()) as u64;
    let (mut levels, _) = sample(touched, DETAIL_LEVELS_MAX);
    levels.extend(plan.allocations().keys().copied());
    match read_all(levels, |l| reads.level_detail(cat.sku_name(l), cat.location_name(l))).await {
        Ok(v) => snap.details = v.into_iter().collect(),
        Err(e) => note(&mut snap, "lots and allocations were not read back", e)?,
    }
    // Serials.
    let beliefs = book.beliefs();
    let (certain, uncertain): (Vec<_>, Vec<_>) =
        beliefs.into_iter().partition(|(_, b)| !matches!(b, Belief::Pending(_) | Belief::Unknown(_)));
    snap.serials_certain = certain.len() as u64;
    snap.serials_uncertain = uncertain.len() as u64;
    // Every serial the run moved, then a sample of the others with what is left of the budget.
    let moved = book.moved();
    let (touched, rest): (Vec<_>, Vec<_>) = certain.into_iter().partition(|(k, _)| moved.contains(k));
    snap.serials_moved = touched.len() as u64;
    let (mut picked, _) = sample(touched, SERIALS_CHECKED_MAX);
    snap.serials_moved_checked = picked.len() as u64;
    let budget = SERIALS_CHECKED_MAX - picked.len();
    if budget > 0 {
        picked.extend(sample(rest, budget).0);
    }
    picked.sort_unstable_by_key(|(k, _)| *k);
    let codes: Vec<(usize, String)> =
        picked.iter().enumerate().map(|(i, ((_, n), _))| (i, plan.serial_code(*n))).collect();
    let read = read_all(codes, |(i, code): (usize, String)| {
        let sku = catalogue.skus[picked[i].0 .0 as usize].as_str();
        Box::pin(async move { reads.serial(sku, &code).await })
    })
    .await;
    match read {
        Ok(v) => snap.serials = v.into_iter().map(|((i, _), view)| (picked[i].0, picked[i].1, view)).collect(),
        Err(e) => note(&mut snap, "serial numbers were not looked up", e)?,
    }
    // Settings.
    let kits: Vec<u32> = (0..plan.kits.len() as u32).collect();
    match read_all(kits, |k| reads.sku_settings(&plan.kits[k as usize].sku)).await {
        Ok(v) => snap.kit_settings = v,
        Err(e) => note(&mut snap, "kit settings were not read back", e)?,
    }
    let serial_skus: Vec<u32> = (0..cat.config.skus).filter(|&s| plan.is_serial(s)).collect();
    let (serial_skus, _) = sample(serial_skus, 1000);
    match read_all(serial_skus, |s| reads.sku_settings(&cat.skus[s as usize])).await {
        Ok(v) => snap.serial_settings = v,
        Err(e) => note(&mut snap, "serial tracking settings were not read back", e)?,
    }
    // available_for at the allocated levels, for every channel.
    let pairs: Vec<(LevelIx, String)> =
        plan.allocations().keys().flat_map(|&l| plan.channels().iter().map(move |c| (l, c.clone()))).collect();
    let read = read_all(pairs, |(l, c): (LevelIx, String)| {
        Box::pin(async move { reads.available_for(cat.sku_name(l), cat.location_name(l), &c).await })
    })
    .await;
    match read {
        Ok(v) => snap.available_for = v.into_iter().map(|((l, c), a)| (l, c, a)).collect(),
        Err(e) => note(&mut snap, "available_for was not read back", e)?,
    }
    Ok(snap)
}

/// A fact of the change feed at an allocated level, for the replay of its allocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocEvent {
    /// An accepted channel sale (a reservation line, or a sale not from a hold and not
    /// `allow_negative`) and the level's `available` after it.
    Take { seq: u64, level: LevelIx, channel: String, qty: Qty, hold: Option<HoldId>, available_after: Qty },
    /// A hold ended: committed (`sold`: its allocated units stay used) or released or expired
    /// (they come back).
    HoldClosed { hold: HoldId, sold: bool },
    /// An `allocate` movement (0 removes the allocation).
    Set { level: LevelIx, channel: String, qty: Qty },
}

/// The replay of the allocations over the change feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AllocReplay {
    pub takes: u64,
    pub violations: u64,
    pub examples: Vec<String>,
    /// Whether the feed covered the whole run (only then is the end compared with the engine).
    pub complete: bool,
    #[serde(skip)]
    pub remaining: BTreeMap<LevelIx, Vec<(String, Qty)>>,
}

/// Events a violation's example recalls from its level.
const SEEN_PER_LEVEL: usize = 8;

/// Replays the allocation rule over `events` from `initial` (per level, per channel): each take
/// by channel `c` of `qty` must be within `min(available, a_c + max(0, available - F))` before it
/// (`F` the sum of what is ring-fenced), and uses `min(qty, a_c)` of the allocation, which a
/// release gives back. The example of a violation ends with what the replay saw last at that
/// level, so that a violation can be judged from the report alone.
pub fn replay_allocations(
    catalogue: &Catalogue,
    initial: &BTreeMap<LevelIx, Vec<(String, Qty)>>,
    events: &[AllocEvent],
    complete: bool,
) -> AllocReplay {
    let mut r = AllocReplay { remaining: initial.clone(), complete, ..AllocReplay::default() };
    // hold -> (level, channel, units taken from its allocation)
    let mut held: HashMap<HoldId, Vec<(LevelIx, String, Qty)>> = HashMap::new();
    // level -> the last events seen there, oldest first
    let mut seen: HashMap<LevelIx, VecDeque<String>> = HashMap::new();
    let note = |seen: &mut HashMap<LevelIx, VecDeque<String>>, level: LevelIx, what: String| {
        let last = seen.entry(level).or_default();
        if last.len() == SEEN_PER_LEVEL {
            last.pop_front();
        }
        last.push_back(what);
    };
    for e in events {
        match e {
            AllocEvent::Take { seq, level, channel, qty, hold, available_after } => {
                let Some(allocs) = r.remaining.get_mut(level) else { continue };
                r.takes += 1;
                let fenced: Qty = allocs.iter().map(|a| a.1).sum();
                let own = allocs.iter().find(|a| &a.0 == channel).map_or(0, |a| a.1);
                let before = available_after + qty;
                let allowed = before.min(own + (before - fenced).max(0));
                if *qty > allowed {
                    r.violations += 1;
                    if r.examples.len() < EXAMPLES_MAX {
                        let fences: Vec<String> = allocs.iter().map(|(c, q)| format!("{c} {q}")).collect();
                        let earlier: Vec<&str> = seen.get(level).into_iter().flatten().map(String::as_str).collect();
                        r.examples.push(format!(
                            "seq {seq}: {channel} took {qty} at ({}, {}) with {before} available and {fenced} ring-fenced ({}): it could take {allowed}; before it there: {}",
                            catalogue.sku_name(*level),
                            catalogue.location_name(*level),
                            fences.join(", "),
                            if earlier.is_empty() { "nothing".to_string() } else { earlier.join("; ") }
                        ));
                    }
                }
                let used = (*qty).min(own);
                if used > 0 {
                    if let Some(a) = allocs.iter_mut().find(|a| &a.0 == channel) {
                        a.1 -= used;
                    }
                }
                if let Some(h) = hold {
                    held.entry(*h).or_default().push((*level, channel.clone(), used));
                }
                let hold = hold.map_or("no hold".to_string(), |h| format!("hold {h}"));
                note(&mut seen, *level, format!("seq {seq} {channel} took {qty} ({hold}, {used} of its allocation, {available_after} available after)"));
            }
            AllocEvent::HoldClosed { hold, sold } => {
                let Some(parts) = held.remove(hold) else { continue };
                for (level, channel, used) in parts {
                    if *sold {
                        note(&mut seen, level, format!("hold {hold} committed"));
                        continue;
                    }
                    if let Some(a) = r.remaining.get_mut(&level).and_then(|v| v.iter_mut().find(|a| a.0 == channel)) {
                        a.1 += used;
                    }
                    note(&mut seen, level, format!("hold {hold} released ({used} back to {channel})"));
                }
            }
            AllocEvent::Set { level, channel, qty } => {
                note(&mut seen, *level, format!("allocate {qty} to {channel}"));
                let allocs = r.remaining.entry(*level).or_default();
                match allocs.iter().position(|a| &a.0 == channel) {
                    Some(i) if *qty == 0 => {
                        allocs.remove(i);
                    }
                    Some(i) => allocs[i].1 = *qty,
                    None if *qty == 0 => {}
                    None => allocs.push((channel.clone(), *qty)),
                }
            }
        }
    }
    r
}

/// The verdict on complex inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitsVerification {
    pub passed: bool,
    /// Levels whose lots (and allocations) were read and checked, of those wanted.
    pub levels_checked: u64,
    pub levels_wanted: u64,
    pub lot_mismatches: u64,
    /// Serials looked up, of those whose place the load generator knows for sure.
    pub serials_checked: u64,
    pub serials_certain: u64,
    /// "all", "moved + sample" (every serial the run moved, and a sample of the others) or "sample".
    pub serials_coverage: String,
    /// Serials named by a step whose outcome stayed unknown (not checked).
    pub serials_uncertain: u64,
    pub serial_mismatches: u64,
    pub allocation_levels_checked: u64,
    pub allocation_violations: u64,
    /// The replay of channel sales in the change feed, if the feed was read.
    pub allocation_replay: Option<AllocReplay>,
    pub settings_checked: u64,
    pub settings_mismatches: u64,
    /// What could not be checked, and why.
    pub not_checked: Vec<String>,
    /// Failures, each naming the SKU, location, lot or serial.
    pub examples: Vec<String>,
}

/// Which count a failure adds to.
#[derive(Clone, Copy)]
enum Failure {
    Lot,
    Serial,
    Allocation,
    Settings,
}

impl UnitsVerification {
    fn fail(&mut self, which: Failure, message: String) {
        *match which {
            Failure::Lot => &mut self.lot_mismatches,
            Failure::Serial => &mut self.serial_mismatches,
            Failure::Allocation => &mut self.allocation_violations,
            Failure::Settings => &mut self.settings_mismatches,
        } += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(message);
        }
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} of {} levels' lots and allocations checked ({} lot mismatches, {} allocation violations)",
            if self.passed { "PASSED" } else { "FAILED" },
            self.levels_checked,
            self.levels_wanted,
            self.lot_mismatches,
            self.allocation_violations,
        );
        if self.serials_certain + self.serials_uncertain > 0 {
            s += &format!(
                "; {} of {} serials checked ({}), {} mismatches, {} not checked (a step naming them has an unknown outcome)",
                self.serials_checked,
                self.serials_certain,
                self.serials_coverage,
                self.serial_mismatches,
                self.serials_uncertain
            );
        }
        if self.settings_checked > 0 {
            s += &format!("; {} SKU settings checked, {} wrong", self.settings_checked, self.settings_mismatches);
        }
        if let Some(r) = &self.allocation_replay {
            s += &format!(
                "; channel sales replayed from the change feed: {}{}, {} over their allowance",
                r.takes,
                if r.complete { "" } else { " (partial)" },
                r.violations
            );
        }
        s
    }
}

/// Checks what was read against the plan and the book. `initial`: the allocations at the start
/// of the run (for the bounds); `replay`: the replay of the change feed, if it was read.
pub fn check_units(
    plan: &Plan,
    catalogue: &Catalogue,
    ledger: &Ledger,
    book: &UnitsBook,
    snap: &UnitsSnapshot,
    initial: Option<&BTreeMap<LevelIx, Vec<(String, Qty)>>>,
    replay: Option<AllocReplay>,
) -> UnitsVerification {
    let cat = catalogue;
    let mut v = UnitsVerification {
        levels_wanted: snap.detail_levels_wanted,
        serials_certain: snap.serials_certain,
        serials_uncertain: snap.serials_uncertain,
        not_checked: snap.not_read.clone(),
        ..UnitsVerification::default()
    };
    let at = |l: LevelIx| format!("({}, {})", cat.sku_name(l), cat.location_name(l));
    let seeded_lots: HashMap<String, u64> = (0..plan.config.lots).map(|k| plan.seeded_lot(k)).collect();
    let (lot_mis, alloc_mis, ser_mis, set_mis) =
        (Failure::Lot, Failure::Allocation, Failure::Serial, Failure::Settings);
    for (&l, detail) in &snap.details {
        v.levels_checked += 1;
        let Some(d) = detail else {
            if plan.allocations().contains_key(&l) || ledger.touched(l) {
                v.fail(lot_mis, format!("{}: the engine has no such level", at(l)));
            }
            continue;
        };
        // Lots.
        let lots_on_hand: Qty = d.lots.iter().map(|x| x.on_hand).sum();
        let lots_reserved: Qty = d.lots.iter().map(|x| x.reserved).sum();
        if lots_on_hand + d.loose_on_hand != d.level.on_hand {
            let lots: Vec<String> = d.lots.iter().map(|x| format!("lot {} {}", x.lot, x.on_hand)).collect();
            v.fail(
                lot_mis,
                format!(
                    "{}: its lots ({}) hold {lots_on_hand} and {} units are loose, but on_hand is {}",
                    at(l),
                    lots.join(", "),
                    d.loose_on_hand,
                    d.level.on_hand
                ),
            );
        }
        if lots_reserved > d.level.reserved {
            v.fail(
                lot_mis,
                format!("{}: its lots have {lots_reserved} reserved, the level only {}", at(l), d.level.reserved),
            );
        }
        if !plan.has_lots(cat.sku_of(l)) && !d.lots.is_empty() {
            v.fail(lot_mis, format!("{}: has {} lots, but the SKU is not kept in lots", at(l), d.lots.len()));
        }
        for lot in &d.lots {
            if lot.on_hand < 0 || lot.reserved < 0 || lot.reserved > lot.on_hand {
                v.fail(
                    lot_mis,
                    format!("{} lot {}: on_hand {}, reserved {}", at(l), lot.lot, lot.on_hand, lot.reserved),
                );
            }
            if let Some(&exp) = seeded_lots.get(&lot.lot) {
                if exp != lot.expires_at {
                    v.fail(
                        lot_mis,
                        format!("{} lot {}: expires at {}, its code says {exp}", at(l), lot.lot, lot.expires_at),
                    );
                }
            }
        }
        // Allocations.
        let Some(planned) = plan.allocations().get(&l) else { continue };
        v.allocation_levels_checked += 1;
        let start = initial.and_then(|i| i.get(&l));
        for &(c, seeded) in planned {
            let name = plan.channel_name(Some(c));
            let Some(&(_, left)) = d.allocations.iter().find(|a| a.0 == name) else {
                v.fail(alloc_mis, format!("{}: no allocation for {name} (seeded {seeded})", at(l)));
                continue;
            };
            let fenced = start.and_then(|s| s.iter().find(|a| a.0 == name)).map_or(seeded, |a| a.1);
            if left < 0 || left > fenced {
                v.fail(alloc_mis, format!("{}: {name}'s allocation is {left}, outside 0..={fenced}", at(l)));
                continue;
            }
            let taken = book.taken(l, c);
            if !ledger.in_doubt(l) && left < fenced - taken.max(0) {
                v.fail(
                    alloc_mis,
                    format!(
                        "{}: {name}'s allocation is down to {left} of {fenced}, but its own sales and holds take only {taken}: another channel took ring-fenced units",
                        at(l)
                    ),
                );
            }
        }
        if let Some(r) = replay.as_ref().filter(|r| r.complete) {
            for (name, left) in &d.allocations {
                let replayed = r.remaining.get(&l).and_then(|a| a.iter().find(|a| &a.0 == name)).map(|a| a.1);
                if replayed.is_some_and(|x| x != *left) {
                    v.fail(
                        alloc_mis,
                        format!(
                            "{}: {name}'s allocation is {left}, the replay of the change feed ends at {}",
                            at(l),
                            replayed.unwrap_or(0)
                        ),
                    );
                }
            }
        }
    }
    // available_for agrees with the level and its allocations.
    for (l, channel, got) in &snap.available_for {
        let Some(Some(d)) = snap.details.get(l) else { continue };
        let fenced: Qty = d.allocations.iter().map(|a| a.1).sum();
        let own = d.allocations.iter().find(|a| &a.0 == channel).map_or(0, |a| a.1);
        let avail = d.level.available;
        let want = if d.allocations.is_empty() { avail } else { avail.min(own + (avail - fenced).max(0)) };
        if *got != Some(want) {
            v.fail(
                alloc_mis,
                format!("{}: available_for({channel}) is {got:?}, the level and its allocations say {want}", at(*l)),
            );
        }
    }
    if let Some(r) = &replay {
        v.allocation_violations += r.violations;
        for ex in &r.examples {
            if v.examples.len() < EXAMPLES_MAX {
                v.examples.push(ex.clone());
            }
        }
    } else if !plan.allocations().is_empty() {
        v.not_checked.push("channel sales were not replayed (no change feed read, or no starting allocations)".into());
    }
    v.allocation_replay = replay;
    // Serials.
    v.serials_checked = snap.serials.len() as u64;
    v.serials_coverage = if snap.serials.len() as u64 >= snap.serials_certain {
        "all"
    } else if snap.serials_moved_checked == snap.serials_moved {
        "moved + sample"
    } else {
        "sample"
    }
    .into();
    for ((sku, n), belief, view) in &snap.serials {
        let code = plan.serial_code(*n);
        let name = &cat.skus[*sku as usize];
        let Some(view) = view else {
            v.fail(ser_mis, format!("serial {code} of {name}: unknown to the engine (expected {belief:?})"));
            continue;
        };
        let (want, level) = match *belief {
            Belief::InStock(l) => ("in stock", l),
            Belief::Held(l) => ("reserved", l),
            Belief::Sold(l) => ("sold", l),
            Belief::WrittenOff(l) => ("written off", l),
            Belief::Pending(_) | Belief::Unknown(_) => continue,
        };
        let status_ok = matches!(
            (*belief, view.status),
            (Belief::InStock(_), SerialStatus::InStock)
                | (Belief::Held(_), SerialStatus::Reserved(_))
                | (Belief::Sold(_), SerialStatus::Sold)
                | (Belief::WrittenOff(_), SerialStatus::WrittenOff)
        );
        let place_matters = matches!(belief, Belief::InStock(_) | Belief::Held(_));
        if !status_ok || (place_matters && view.location != cat.location_name(level)) {
            v.fail(
                ser_mis,
                format!(
                    "serial {code} of {name}: the engine has it {:?} at {}, the load generator {want} at {}",
                    view.status,
                    view.location,
                    cat.location_name(level)
                ),
            );
        }
    }
    // Settings.
    for (k, s) in &snap.kit_settings {
        v.settings_checked += 1;
        let kit = &plan.kits[*k as usize];
        let want: Vec<(String, Qty)> =
            kit.components.iter().map(|(c, q)| (cat.skus[*c as usize].clone(), *q)).collect();
        let got: Vec<(String, Qty)> = s.components.iter().map(|c| (c.sku.clone(), c.qty)).collect();
        if want != got {
            v.fail(set_mis, format!("kit {}: components {got:?}, expected {want:?}", kit.sku));
        }
    }
    for (sku, s) in &snap.serial_settings {
        v.settings_checked += 1;
        if !s.serial_tracked {
            v.fail(set_mis, format!("{}: not serial-tracked", cat.skus[*sku as usize]));
        }
    }
    v.passed =
        v.lot_mismatches == 0 && v.serial_mismatches == 0 && v.allocation_violations == 0 && v.settings_mismatches == 0;
    v
}
