//! End-of-run verification: the ledger of every acknowledged change, and the checks against the
//! levels the target reports.
//!
//! - Conservation: for every level, the stock seen after seeding plus every acknowledged delta
//!   must equal the target's level (`on_hand`, `reserved`, and `unsellable` where no count reset
//!   it). A step whose outcome is unknown (an error without an answer) puts its levels in doubt;
//!   targets with idempotency keys settle those by sending the same step again before the check.
//! - No online oversell: every accepted online take (reservation, transfer) must have left
//!   `available >= 0`. Checked from the target's replies or change feed where it has one, and at
//!   the end on every level that no point-of-sale sale or count touched.
//!
//! The ledger is a set of atomic counters so that any number of tasks may record into it.
//!
//! With complex inventory, [`book`] keeps what the load generator knows of serial numbers and
//! channel sales, and [`units`] checks lots, serials and allocations against the engine.

pub mod book;
pub mod units;

use crate::step::{Step, StepBody, StepOutcome};
use crate::workload::{Catalogue, LevelIx};
use engine::core::{Detail, Qty};
use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A level as a target reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LevelState {
    pub on_hand: Qty,
    pub reserved: Qty,
    pub unsellable: Qty,
    pub available: Qty,
}

/// A count set `on_hand` absolutely, which may also have cut `unsellable`.
const FLAG_COUNTED: u8 = 1;
/// A point-of-sale sale may have taken `available` below zero, legitimately.
const FLAG_NEGATIVE_ALLOWED: u8 = 2;
/// A step touching the level has an unknown outcome.
const FLAG_IN_DOUBT: u8 = 4;

/// Most examples of each kind of failure kept for the report.
pub const EXAMPLES_MAX: usize = 20;

/// Every acknowledged change, per level, relative to the levels seen after seeding.
pub struct Ledger {
    on_hand: Vec<AtomicI64>,
    reserved: Vec<AtomicI64>,
    unsellable: Vec<AtomicI64>,
    flags: Vec<AtomicU8>,
    /// Accepted online takes whose reply showed `available < 0`.
    oversells_replied: AtomicU64,
    /// Accepted online takes whose reply carried `available`.
    takes_with_available: AtomicU64,
    oversell_examples: Mutex<Vec<String>>,
    /// Complex inventory: serial numbers and channel sales.
    units: Option<Arc<book::UnitsBook>>,
}

fn zeros<T: Default>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}

impl Ledger {
    pub fn new(levels: usize) -> Ledger {
        Ledger {
            on_hand: zeros(levels),
            reserved: zeros(levels),
            unsellable: zeros(levels),
            flags: zeros(levels),
            oversells_replied: AtomicU64::new(0),
            takes_with_available: AtomicU64::new(0),
            oversell_examples: Mutex::new(Vec::new()),
            units: None,
        }
    }

    /// A ledger that also keeps the book of complex inventory.
    pub fn with_units(levels: usize, units: Option<Arc<book::UnitsBook>>) -> Ledger {
        Ledger { units, ..Ledger::new(levels) }
    }

    /// The book of complex inventory, if the run has any.
    pub fn units(&self) -> Option<&Arc<book::UnitsBook>> {
        self.units.as_ref()
    }

    /// Whether any acknowledged step (or one in doubt) touched the level.
    pub fn touched(&self, level: LevelIx) -> bool {
        let l = level as usize;
        self.flags[l].load(Relaxed) != 0
            || self.on_hand[l].load(Relaxed) != 0
            || self.reserved[l].load(Relaxed) != 0
            || self.unsellable[l].load(Relaxed) != 0
    }

    /// Whether a step touching the level has an unknown outcome.
    pub fn in_doubt(&self, level: LevelIx) -> bool {
        self.flags[level as usize].load(Relaxed) & FLAG_IN_DOUBT != 0
    }

    /// The expected `on_hand` change so far (for a count to find roughly what is there).
    pub fn on_hand_delta(&self, level: LevelIx) -> Qty {
        self.on_hand[level as usize].load(Relaxed)
    }

    /// The expected `available` change so far (on hand, less reserved and unsellable).
    pub fn available_delta(&self, level: LevelIx) -> Qty {
        let l = level as usize;
        self.on_hand[l].load(Relaxed) - self.reserved[l].load(Relaxed) - self.unsellable[l].load(Relaxed)
    }

    fn add(v: &[AtomicI64], level: LevelIx, delta: Qty) {
        v[level as usize].fetch_add(delta, Relaxed);
    }

    fn flag(&self, level: LevelIx, flag: u8) {
        self.flags[level as usize].fetch_or(flag, Relaxed);
    }

    /// Records what a target answered for a step. Rejections change nothing.
    pub fn record(&self, step: &Step, outcome: &StepOutcome) {
        if let Some(book) = &self.units {
            book.record(step, outcome);
        }
        let Ok(detail) = outcome.result else { return };
        if step.is_online_take() {
            if let Some(a) = outcome.available_after {
                self.takes_with_available.fetch_add(1, Relaxed);
                if a < 0 {
                    self.oversells_replied.fetch_add(1, Relaxed);
                    let mut ex = self.oversell_examples.lock().unwrap();
                    if ex.len() < EXAMPLES_MAX {
                        ex.push(format!("step {} ({}) left available = {a}", step.id, step.kind().name()));
                    }
                }
            }
        }
        match &step.body {
            StepBody::Reserve { lines, .. } => {
                for &(l, q) in lines {
                    Self::add(&self.reserved, l, q);
                }
            }
            StepBody::Commit { lines, .. } => {
                for &(l, q) in lines {
                    Self::add(&self.reserved, l, -q);
                    Self::add(&self.on_hand, l, -q);
                }
            }
            StepBody::Release { lines, .. } => {
                for &(l, q) in lines {
                    Self::add(&self.reserved, l, -q);
                }
            }
            StepBody::SellPos { level, qty } => {
                self.flag(*level, FLAG_NEGATIVE_ALLOWED);
                Self::add(&self.on_hand, *level, -qty);
            }
            StepBody::Return { level, qty, damaged } => {
                Self::add(&self.on_hand, *level, *qty);
                if *damaged {
                    Self::add(&self.unsellable, *level, *qty);
                }
            }
            StepBody::Receive { level, qty } => Self::add(&self.on_hand, *level, *qty),
            StepBody::Count { level, .. } => {
                self.flag(*level, FLAG_COUNTED);
                if let Detail::Variance(v) = detail {
                    Self::add(&self.on_hand, *level, v);
                } else {
                    // A count accepted without its variance cannot be accounted for.
                    self.flag(*level, FLAG_IN_DOUBT);
                }
            }
            StepBody::Transfer { from, to, qty } => {
                Self::add(&self.on_hand, *from, -qty);
                Self::add(&self.on_hand, *to, *qty);
            }
            StepBody::Adjust { level, delta } => Self::add(&self.on_hand, *level, *delta),
        }
    }

    /// The step's outcome is unknown: its levels cannot be checked.
    pub fn mark_in_doubt(&self, step: &Step) {
        for l in step.levels() {
            self.flag(l, FLAG_IN_DOUBT);
        }
    }

    /// Clears the doubt on a step's levels once it has been settled (by sending it again with
    /// the same idempotency key and recording that answer).
    pub fn clear_doubt(&self, step: &Step) {
        for l in step.levels() {
            self.flags[l as usize].fetch_and(!FLAG_IN_DOUBT, Relaxed);
        }
    }

    pub fn in_doubt_levels(&self) -> u64 {
        self.flags.iter().filter(|f| f.load(Relaxed) & FLAG_IN_DOUBT != 0).count() as u64
    }
}

/// A level whose target value differs from what the acknowledged movements imply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub sku: String,
    pub location: String,
    pub field: &'static str,
    pub expected: Qty,
    pub actual: Qty,
}

/// How the history of online takes was checked for oversells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryCheck {
    /// "target replies" or "change feed".
    pub source: String,
    /// Accepted online takes checked.
    pub takes_checked: u64,
    pub violations: u64,
    /// Whether every take of the run was covered (a long run's feed check may stop at a cap).
    pub complete: bool,
    pub examples: Vec<String>,
    /// Complex inventory: the channel sales and hold ends at the allocated levels, in feed order,
    /// for [`units::replay_allocations`].
    #[serde(skip)]
    pub allocation_events: Vec<units::AllocEvent>,
}

/// The verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub levels_checked: u64,
    /// Levels left out because a step touching them has an unknown outcome.
    pub levels_in_doubt: u64,
    /// Levels whose `unsellable` was not compared because a count reset it.
    pub unsellable_unchecked: u64,
    pub mismatches: u64,
    pub mismatch_examples: Vec<Mismatch>,
    /// Levels no point-of-sale sale or count touched that end with `available < 0`.
    pub oversold_levels: u64,
    pub oversold_examples: Vec<Mismatch>,
    pub history: Option<HistoryCheck>,
    /// Lots, serial numbers, allocations and SKU settings (complex inventory only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<units::UnitsVerification>,
}

impl Verification {
    /// One line for the report.
    pub fn summary(&self) -> String {
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let mut s = format!(
            "{verdict}: {} levels checked, {} mismatches, {} oversold at the end",
            self.levels_checked, self.mismatches, self.oversold_levels
        );
        if self.levels_in_doubt > 0 {
            s += &format!(", {} in doubt (not checked)", self.levels_in_doubt);
        }
        if let Some(h) = &self.history {
            s += &format!(
                "; online takes checked for oversell from {}: {}{}, {} violations",
                h.source,
                h.takes_checked,
                if h.complete { "" } else { " (partial)" },
                h.violations
            );
        }
        s
    }
}

/// Compares the target's levels with the seeded ones plus the ledger.
///
/// `baseline` and `actual` are indexed by [`LevelIx`]; `None` is a level the target does not
/// have. `history` is the oversell check of the run's online takes, if the caller has one;
/// otherwise the one the ledger gathered from replies is used.
pub fn verify(
    catalogue: &Catalogue,
    baseline: &[Option<LevelState>],
    ledger: &Ledger,
    actual: &[Option<LevelState>],
    history: Option<HistoryCheck>,
) -> Verification {
    assert_eq!(baseline.len(), catalogue.level_count(), "one baseline entry per level");
    assert_eq!(actual.len(), catalogue.level_count(), "one actual entry per level");
    let mut v = Verification::default();
    for level in 0..catalogue.level_count() {
        let ix = level as LevelIx;
        let flags = ledger.flags[level].load(Relaxed);
        if flags & FLAG_IN_DOUBT != 0 {
            v.levels_in_doubt += 1;
            continue;
        }
        v.levels_checked += 1;
        let base = baseline[level].unwrap_or_default();
        let d_on_hand = ledger.on_hand[level].load(Relaxed);
        let d_reserved = ledger.reserved[level].load(Relaxed);
        let d_unsellable = ledger.unsellable[level].load(Relaxed);
        let touched = d_on_hand != 0 || d_reserved != 0 || d_unsellable != 0 || flags != 0;
        let got = match actual[level] {
            Some(a) => a,
            None if baseline[level].is_none() && !touched => continue,
            None => LevelState::default(),
        };
        let mismatch = |field, expected, actual| Mismatch {
            sku: catalogue.sku_name(ix).to_string(),
            location: catalogue.location_name(ix).to_string(),
            field,
            expected,
            actual,
        };
        let mut wrong = Vec::new();
        if base.on_hand + d_on_hand != got.on_hand {
            wrong.push(mismatch("on_hand", base.on_hand + d_on_hand, got.on_hand));
        }
        if base.reserved + d_reserved != got.reserved {
            wrong.push(mismatch("reserved", base.reserved + d_reserved, got.reserved));
        }
        if flags & FLAG_COUNTED != 0 {
            v.unsellable_unchecked += 1;
        } else if base.unsellable + d_unsellable != got.unsellable {
            wrong.push(mismatch("unsellable", base.unsellable + d_unsellable, got.unsellable));
        }
        if !wrong.is_empty() {
            v.mismatches += 1;
            for w in wrong {
                if v.mismatch_examples.len() < EXAMPLES_MAX {
                    v.mismatch_examples.push(w);
                }
            }
        }
        let may_be_negative = flags & (FLAG_COUNTED | FLAG_NEGATIVE_ALLOWED) != 0 || base.available < 0;
        if !may_be_negative && got.available < 0 {
            v.oversold_levels += 1;
            if v.oversold_examples.len() < EXAMPLES_MAX {
                v.oversold_examples.push(mismatch("available", 0, got.available));
            }
        }
    }
    v.history = history.or_else(|| {
        let checked = ledger.takes_with_available.load(Relaxed);
        (checked > 0).then(|| HistoryCheck {
            source: "target replies".into(),
            takes_checked: checked,
            violations: ledger.oversells_replied.load(Relaxed),
            complete: true,
            examples: ledger.oversell_examples.lock().unwrap().clone(),
            allocation_events: Vec::new(),
        })
    });
    let history_ok = v.history.as_ref().is_none_or(|h| h.violations == 0);
    v.passed = v.mismatches == 0 && v.oversold_levels == 0 && history_ok;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{CatalogueConfig, Then};
    use engine::core::Reason;

    fn cat() -> Catalogue {
        Catalogue::new(CatalogueConfig {
            skus: 3,
            locations: 2,
            zipf_exponent: 1.0,
            hot_skus: None,
            stock: 10,
            stock_popular: false,
            sku_prefix: "T-".into(),
        })
        .unwrap()
    }

    fn seeded(c: &Catalogue) -> Vec<Option<LevelState>> {
        (0..c.level_count())
            .map(|_| Some(LevelState { on_hand: 10, reserved: 0, unsellable: 0, available: 10 }))
            .collect()
    }

    fn ok(detail: Detail) -> StepOutcome {
        StepOutcome::of(Ok(detail))
    }

    fn state(on_hand: Qty, reserved: Qty, unsellable: Qty) -> Option<LevelState> {
        Some(LevelState { on_hand, reserved, unsellable, available: on_hand - reserved - unsellable })
    }

    /// A short history: reserve 2 and commit, reserve 1 (still open), a damaged return, a
    /// rejected reservation, a transfer; then the exact levels pass and one wrong level fails.
    #[test]
    fn conservation_passes_on_the_right_levels_and_catches_a_wrong_one() {
        let c = cat();
        let ledger = Ledger::new(c.level_count());
        let steps = [
            (StepBody::Reserve { lines: vec![(0, 2)], then: Then::Commit, expires_at_ms: 0 }, ok(Detail::Hold(1))),
            (StepBody::Commit { hold: 1, lines: vec![(0, 2)] }, ok(Detail::None)),
            (
                StepBody::Reserve { lines: vec![(0, 1), (2, 1)], then: Then::Release, expires_at_ms: 0 },
                ok(Detail::Hold(2)),
            ),
            (StepBody::Return { level: 1, qty: 1, damaged: true }, ok(Detail::None)),
            (
                StepBody::Reserve { lines: vec![(3, 50)], then: Then::Commit, expires_at_ms: 0 },
                StepOutcome::of(Err(Reason::InsufficientStock)),
            ),
            (StepBody::Transfer { from: 4, to: 5, qty: 3 }, ok(Detail::None)),
        ];
        for (i, (body, outcome)) in steps.into_iter().enumerate() {
            ledger.record(&Step::new(i as u64, body), &outcome);
        }
        let mut actual = seeded(&c);
        actual[0] = state(8, 1, 0);
        actual[1] = state(11, 0, 1);
        actual[2] = state(10, 1, 0);
        actual[4] = state(7, 0, 0);
        actual[5] = state(13, 0, 0);
        let good = verify(&c, &seeded(&c), &ledger, &actual, None);
        assert!(good.passed, "{good:?}");
        assert_eq!(good.levels_checked, 6);

        // One unit too many on hand at (T-00000002, store-001): caught, and named.
        actual[5] = state(14, 0, 0);
        let bad = verify(&c, &seeded(&c), &ledger, &actual, None);
        assert!(!bad.passed);
        assert_eq!(bad.mismatches, 1);
        assert_eq!(
            bad.mismatch_examples,
            vec![Mismatch {
                sku: "T-00000002".into(),
                location: "store-001".into(),
                field: "on_hand",
                expected: 13,
                actual: 14
            }]
        );
        assert!(bad.summary().starts_with("FAILED"));

        // A level the target lost entirely is a mismatch too.
        actual[5] = None;
        assert_eq!(verify(&c, &seeded(&c), &ledger, &actual, None).mismatches, 1);
    }

    #[test]
    fn oversells_are_caught_at_the_end_and_in_replies_but_pos_sales_may_go_negative() {
        let c = cat();
        let ledger = Ledger::new(c.level_count());
        ledger.record(&Step::new(1, StepBody::SellPos { level: 0, qty: 12 }), &ok(Detail::None));
        let mut actual = seeded(&c);
        actual[0] = state(-2, 0, 0);
        assert!(verify(&c, &seeded(&c), &ledger, &actual, None).passed);

        // An online level ending below zero with the right conservation is still an oversell
        // (the seeded level was already wrong here, which is the point: the check looks at the
        // level, not only at the deltas).
        let mut base = seeded(&c);
        base[1] = state(-1, 0, 0).map(|mut s| {
            s.available = 0;
            s
        });
        actual[1] = state(-1, 0, 0);
        let v = verify(&c, &base, &ledger, &actual, None);
        assert_eq!(v.oversold_levels, 1, "{v:?}");
        assert!(!v.passed);

        let step = Step::new(2, StepBody::Reserve { lines: vec![(2, 1)], then: Then::Commit, expires_at_ms: 0 });
        let mut o = ok(Detail::Hold(5));
        o.available_after = Some(-1);
        ledger.record(&step, &o);
        actual[1] = state(10, 0, 0);
        actual[2] = state(10, 1, 0);
        let v = verify(&c, &seeded(&c), &ledger, &actual, None);
        assert_eq!(v.history.as_ref().unwrap().violations, 1);
        assert!(!v.passed);
    }

    #[test]
    fn levels_in_doubt_are_left_out_until_settled() {
        let c = cat();
        let ledger = Ledger::new(c.level_count());
        let step = Step::new(1, StepBody::Receive { level: 3, qty: 5 });
        ledger.mark_in_doubt(&step);
        let mut actual = seeded(&c);
        actual[3] = state(15, 0, 0);
        let v = verify(&c, &seeded(&c), &ledger, &actual, None);
        assert!(v.passed);
        assert_eq!((v.levels_checked, v.levels_in_doubt), (5, 1));
        ledger.clear_doubt(&step);
        ledger.record(&step, &ok(Detail::None));
        let v = verify(&c, &seeded(&c), &ledger, &actual, None);
        assert!(v.passed && v.levels_checked == 6, "{v:?}");
    }
}
