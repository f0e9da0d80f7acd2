//! What the load generator knows of complex inventory while it runs: every serial number of the
//! run and where it believes it is, which serials it may name next (so that no two steps in
//! flight ever name the same one), the units each channel's acknowledged reservations still take
//! at the allocated levels, and counts for the report.
//!
//! Serials are handed out when a step is built (like a hold's expiry), oldest first, under one
//! lock: whichever client sends a step, the serials it names are its own until the outcome is
//! known. They are decided from what was acknowledged before, never by the generator (whose
//! operation `i` stays a pure function of the seed); with one client the choice is deterministic.

use crate::complex::Plan;
use crate::step::{Step, StepBody, StepOutcome};
use crate::workload::{Catalogue, LevelIx};
use engine::core::Qty;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Where the load generator believes a serial number is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Belief {
    /// In stock at this level.
    InStock(LevelIx),
    /// Held by an open reservation at this level.
    Held(LevelIx),
    /// Sold from this level.
    Sold(LevelIx),
    /// Written off at this level.
    WrittenOff(LevelIx),
    /// Named by a step whose outcome is not known (in flight, or in doubt and never settled):
    /// neither checked nor used again.
    Pending(LevelIx),
    /// A commit or release of its hold was refused (the hold expired): where it is depends on
    /// when the engine expired the hold. Not checked, not used again.
    Unknown(LevelIx),
}

/// Counts of one kind of complex-inventory movement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    pub sent: u64,
    pub accepted: u64,
}

/// One channel's online traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelCounts {
    pub reservations: u64,
    pub accepted: u64,
    /// Units of its reservations that were committed (sold).
    pub units_sold: u64,
}

/// What the run did with complex inventory, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitsCounts {
    /// Seeding movements of the new kinds (set_sku_settings, allocate, receipts of lots and
    /// serials), as the plan sent them.
    pub seeded: BTreeMap<String, u64>,
    /// Run movements by kind: `reserve_kit`, `commit_kit`, `lot_named` (a sale, reservation or
    /// return naming a seeded lot), `receive_lot` (a receipt bringing a new lot), `adjust_lot`,
    /// `adjust_serials` (recounts), `return_serial`, `serials_named` (every movement naming
    /// serials; `serial_units`: how many serials the accepted ones named).
    pub movements: BTreeMap<String, Counted>,
    pub channels: BTreeMap<String, ChannelCounts>,
    /// Serials whose every step was answered, out of every serial of the run.
    pub serials_known: u64,
    pub serials_total: u64,
    /// Steps that had to name serials the load generator did not have free (so made-up ones,
    /// which the engine refuses).
    pub serials_short: u64,
}

#[derive(Default)]
struct Serials {
    /// Per serial-tracked level: serials in stock there that no step in flight names, oldest first.
    free: HashMap<LevelIx, VecDeque<u32>>,
    /// Per serial-tracked level: serials sold there that no return in flight names.
    sold: HashMap<LevelIx, Vec<u32>>,
    /// Every serial number of the run: (SKU index, number) -> belief.
    state: HashMap<(u32, u32), Belief>,
    /// Serials an accepted step of the run named (or brought).
    moved: HashSet<(u32, u32)>,
    /// The next new serial number (serials are numbered per run, not per SKU).
    next: u32,
    /// Made-up serials named so far (for unique codes).
    ghosts: u64,
    short: u64,
}

/// The kinds of complex-inventory movement the report counts (see [`UnitsCounts::movements`]).
const KINDS: [&str; 8] = [
    "reserve_kit",
    "commit_kit",
    "lot_named",
    "receive_lot",
    "adjust_lot",
    "adjust_serials",
    "return_serial",
    "serials_named",
];

/// The load generator's knowledge of complex inventory during a run.
pub struct UnitsBook {
    plan: Arc<Plan>,
    catalogue: Arc<Catalogue>,
    serials: Mutex<Serials>,
    /// (allocated level, channel index) -> units its acknowledged reservations still take.
    taken: Mutex<HashMap<(LevelIx, u8), Qty>>,
    /// Per entry of [`KINDS`]: (sent, accepted).
    kinds: [(AtomicU64, AtomicU64); KINDS.len()],
    serial_units: AtomicU64,
    /// Per channel: reservations, accepted, units sold.
    channels: Vec<[AtomicU64; 3]>,
}

impl UnitsBook {
    pub fn new(plan: Arc<Plan>, catalogue: Arc<Catalogue>) -> UnitsBook {
        let channels = (0..plan.channels().len()).map(|_| Default::default()).collect();
        UnitsBook {
            plan,
            catalogue,
            serials: Mutex::new(Serials::default()),
            taken: Mutex::new(HashMap::new()),
            kinds: Default::default(),
            serial_units: AtomicU64::new(0),
            channels,
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// `qty` new serials in stock at `level` (seeding): their codes.
    pub fn seed_serials(&self, level: LevelIx, qty: Qty) -> Vec<String> {
        let mut s = self.serials.lock().unwrap();
        let sku = self.catalogue.sku_of(level);
        (0..qty)
            .map(|_| {
                let n = s.next;
                s.next += 1;
                s.state.insert((sku, n), Belief::InStock(level));
                s.free.entry(level).or_default().push_back(n);
                self.plan.serial_code(n)
            })
            .collect()
    }

    /// `qty` new serials a receipt or found adjustment in flight brings to `level`.
    pub fn new_serials(&self, level: LevelIx, qty: Qty) -> Vec<String> {
        let mut s = self.serials.lock().unwrap();
        let sku = self.catalogue.sku_of(level);
        (0..qty)
            .map(|_| {
                let n = s.next;
                s.next += 1;
                s.state.insert((sku, n), Belief::Pending(level));
                self.plan.serial_code(n)
            })
            .collect()
    }

    /// `qty` serials in stock at `level` for a step to name (oldest first); made-up ones if there
    /// are not enough (the engine refuses them, as it would a shop's mistake).
    pub fn take_in_stock(&self, level: LevelIx, qty: Qty) -> Vec<String> {
        self.take(level, qty, false)
    }

    /// `qty` serials sold at `level` for a return to name (the last sold first).
    pub fn take_sold(&self, level: LevelIx, qty: Qty) -> Vec<String> {
        self.take(level, qty, true)
    }

    fn take(&self, level: LevelIx, qty: Qty, sold: bool) -> Vec<String> {
        let mut guard = self.serials.lock().unwrap();
        let s = &mut *guard;
        let sku = self.catalogue.sku_of(level);
        let mut out = Vec::with_capacity(qty as usize);
        let mut short = false;
        for _ in 0..qty {
            let n = if sold {
                s.sold.get_mut(&level).and_then(Vec::pop)
            } else {
                s.free.get_mut(&level).and_then(VecDeque::pop_front)
            };
            match n {
                Some(n) => {
                    s.state.insert((sku, n), Belief::Pending(level));
                    out.push(self.plan.serial_code(n));
                }
                None => {
                    short = true;
                    s.ghosts += 1;
                    out.push(format!("G{}-{}", self.plan.serial_tag, s.ghosts));
                }
            }
        }
        s.short += short as u64;
        out
    }

    /// Records the outcome of a step (accepted or refused).
    pub fn record(&self, step: &Step, outcome: &StepOutcome) {
        let Some(extra) = &step.extra else { return };
        let ok = outcome.result.is_ok();
        self.count_step(step, ok);
        // Serials: each line's named serials move with the outcome.
        if extra.units.iter().any(|u| !u.serials.is_empty()) {
            let mut s = self.serials.lock().unwrap();
            for (i, level) in serial_lines(step) {
                for code in &step.units(i).serials {
                    if let Some(n) = self.plan.serial_number(code) {
                        s.apply(&self.catalogue, step, ok, level, n);
                    }
                }
            }
        }
        // Channel takes at the allocated levels.
        let Some(channel) = extra.channel else { return };
        let allocated = self.plan.allocations();
        let lines: &[(LevelIx, Qty)] = match &step.body {
            StepBody::Reserve { lines, .. } | StepBody::Commit { lines, .. } | StepBody::Release { lines, .. } => lines,
            _ => return,
        };
        let sign = match (&step.body, ok) {
            (StepBody::Reserve { .. }, true) => 1,
            // A hold released, or refused at commit or release (it expired: the engine released
            // it and gave its allocation back).
            (StepBody::Release { .. }, _) | (StepBody::Commit { .. }, false) => -1,
            _ => 0,
        };
        if sign != 0 {
            let mut t = self.taken.lock().unwrap();
            for &(l, q) in lines.iter().filter(|(l, _)| allocated.contains_key(l)) {
                *t.entry((l, channel)).or_default() += sign * q;
            }
        }
    }

    fn count_step(&self, step: &Step, ok: bool) {
        let extra = step.extra.as_ref().expect("a step with extras");
        let named_lot = extra.units.iter().any(|u| u.lot.is_some());
        let serials: usize = extra.units.iter().map(|u| u.serials.len()).sum();
        let follow_up = matches!(step.body, StepBody::Commit { .. } | StepBody::Release { .. });
        let kind = match &step.body {
            StepBody::Reserve { .. } if extra.kit.is_some() => Some(0),
            StepBody::Commit { .. } if extra.kit.is_some() => Some(1),
            StepBody::Receive { .. } if named_lot => Some(3),
            StepBody::Adjust { .. } if named_lot => Some(4),
            StepBody::Adjust { .. } => Some(5),
            StepBody::Return { .. } if serials > 0 => Some(6),
            _ if named_lot && !follow_up => Some(2),
            _ => None,
        };
        let count = |k: usize| {
            self.kinds[k].0.fetch_add(1, Relaxed);
            self.kinds[k].1.fetch_add(ok as u64, Relaxed);
        };
        if let Some(k) = kind {
            count(k);
        }
        if serials > 0 && !follow_up {
            count(7);
            if ok {
                self.serial_units.fetch_add(serials as u64, Relaxed);
            }
        }
        if let Some(ch) = extra.channel.and_then(|c| self.channels.get(c as usize)) {
            match &step.body {
                StepBody::Reserve { .. } => {
                    ch[0].fetch_add(1, Relaxed);
                    ch[1].fetch_add(ok as u64, Relaxed);
                }
                StepBody::Commit { lines, .. } if ok => {
                    ch[2].fetch_add(lines.iter().map(|l| l.1 as u64).sum::<u64>(), Relaxed);
                }
                _ => {}
            }
        }
    }

    /// A step that was built but never sent: the new serials it would have brought do not exist,
    /// and the serials it named are where they were.
    pub fn unsent(&self, step: &Step) {
        let mut s = self.serials.lock().unwrap();
        for (i, level) in serial_lines(step) {
            for code in &step.units(i).serials {
                if let Some(n) = self.plan.serial_number(code) {
                    s.apply(&self.catalogue, step, false, level, n);
                }
            }
        }
    }

    /// Net units each channel's acknowledged reservations still take at an allocated level
    /// (committed, or held).
    pub fn taken(&self, level: LevelIx, channel: u8) -> Qty {
        self.taken.lock().unwrap().get(&(level, channel)).copied().unwrap_or(0)
    }

    /// Every serial of the run and where the load generator believes it is, sorted by (SKU, number).
    pub fn beliefs(&self) -> Vec<((u32, u32), Belief)> {
        let s = self.serials.lock().unwrap();
        let mut v: Vec<_> = s.state.iter().map(|(k, b)| (*k, *b)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// The serials an accepted step of the run named or brought (the others are where the
    /// seeding put them).
    pub fn moved(&self) -> HashSet<(u32, u32)> {
        self.serials.lock().unwrap().moved.clone()
    }

    /// Counts for the report.
    pub fn counts(&self) -> UnitsCounts {
        let mut movements: BTreeMap<String, Counted> = KINDS
            .iter()
            .zip(&self.kinds)
            .map(|(k, (sent, accepted))| {
                (k.to_string(), Counted { sent: sent.load(Relaxed), accepted: accepted.load(Relaxed) })
            })
            .filter(|(_, c)| c.sent > 0)
            .collect();
        let units = self.serial_units.load(Relaxed);
        if units > 0 {
            movements.insert("serial_units".into(), Counted { sent: 0, accepted: units });
        }
        let channels = self
            .plan
            .channels()
            .iter()
            .zip(&self.channels)
            .map(|(name, c)| {
                let [reservations, accepted, units_sold] = c.each_ref().map(|x| x.load(Relaxed));
                (name.clone(), ChannelCounts { reservations, accepted, units_sold })
            })
            .collect();
        let s = self.serials.lock().unwrap();
        UnitsCounts {
            seeded: self.plan.seeding_counts(&self.catalogue),
            movements,
            channels,
            serials_known: s.state.values().filter(|b| !matches!(b, Belief::Pending(_) | Belief::Unknown(_))).count()
                as u64,
            serials_total: s.state.len() as u64,
            serials_short: s.short,
        }
    }

    /// Sets a belief directly (for tests that craft a state).
    pub fn set_belief(&self, sku: u32, n: u32, belief: Belief) {
        self.serials.lock().unwrap().state.insert((sku, n), belief);
    }
}

/// (line index, level) of each line of a step that may name serials.
fn serial_lines(step: &Step) -> Vec<(usize, LevelIx)> {
    match &step.body {
        StepBody::Reserve { lines, .. } | StepBody::Commit { lines, .. } | StepBody::Release { lines, .. } => {
            lines.iter().enumerate().map(|(i, (l, _))| (i, *l)).collect()
        }
        StepBody::SellPos { level, .. }
        | StepBody::Return { level, .. }
        | StepBody::Receive { level, .. }
        | StepBody::Adjust { level, .. } => vec![(0, *level)],
        StepBody::Transfer { from, .. } => vec![(0, *from)],
        StepBody::Count { .. } => Vec::new(),
    }
}

impl Serials {
    /// Serial `n` named by line at `level` of `step`, which was accepted (`ok`) or refused.
    fn apply(&mut self, cat: &Catalogue, step: &Step, ok: bool, level: LevelIx, n: u32) {
        let key = (cat.sku_of(level), n);
        if ok {
            self.moved.insert(key);
        }
        let in_stock = |s: &mut Serials, l: LevelIx, free: bool| {
            s.state.insert(key, Belief::InStock(l));
            if free {
                s.free.entry(l).or_default().push_back(n);
            }
        };
        let sold = |s: &mut Serials| {
            s.state.insert(key, Belief::Sold(level));
            s.sold.entry(level).or_default().push(n);
        };
        match (&step.body, ok) {
            (StepBody::Reserve { .. }, true) => {
                self.state.insert(key, Belief::Held(level));
            }
            (StepBody::Commit { .. } | StepBody::SellPos { .. }, true) => sold(self),
            (StepBody::Release { .. }, true) => in_stock(self, level, true),
            (StepBody::Commit { .. } | StepBody::Release { .. }, false) => {
                self.state.insert(key, Belief::Unknown(level));
            }
            (StepBody::Return { damaged, .. }, true) => in_stock(self, level, !damaged),
            (StepBody::Return { .. }, false) => sold(self),
            (StepBody::Receive { .. }, true) => in_stock(self, level, true),
            (StepBody::Adjust { delta, .. }, true) if *delta > 0 => in_stock(self, level, true),
            // It never came in: it does not exist.
            (StepBody::Receive { .. }, false) => {
                self.state.remove(&key);
            }
            (StepBody::Adjust { delta, .. }, false) if *delta > 0 => {
                self.state.remove(&key);
            }
            (StepBody::Adjust { .. }, true) => {
                self.state.insert(key, Belief::WrittenOff(level));
            }
            (StepBody::Transfer { to, .. }, true) => in_stock(self, *to, true),
            // Refused takes leave the serial where it was.
            (StepBody::Reserve { .. } | StepBody::SellPos { .. } | StepBody::Adjust { .. }, false)
            | (StepBody::Transfer { .. }, false) => in_stock(self, level, true),
            (StepBody::Count { .. }, _) => {}
        }
    }
}
