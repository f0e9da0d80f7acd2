//! Steps: the movements the load generator sends, one per line of a request, in a form every
//! target understands, and what a target answers for each.

use crate::workload::{LevelIx, Then};
use engine::core::{Detail, HoldId, Qty, Reason, Units};
use serde::Serialize;

/// Kinds of step, for latency histograms and counts. The order is the report's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Reservation of a one-line cart.
    Reserve,
    /// Reservation of a cart with several lines.
    ReserveMulti,
    /// Reservation of a kit (the engine holds its components).
    ReserveKit,
    Commit,
    Release,
    /// Point-of-sale sale (`allow_negative`).
    SellPos,
    Return,
    /// Receipt answering a reorder alert.
    Receive,
    Count,
    Transfer,
    /// A recount of one lot, or of a serial-tracked level, that found a difference (complex
    /// inventory: such levels are corrected by adjustments naming the lot or the serials).
    Adjust,
}

impl StepKind {
    pub const ALL: [StepKind; 11] = [
        StepKind::Reserve,
        StepKind::ReserveMulti,
        StepKind::ReserveKit,
        StepKind::Commit,
        StepKind::Release,
        StepKind::SellPos,
        StepKind::Return,
        StepKind::Receive,
        StepKind::Count,
        StepKind::Transfer,
        StepKind::Adjust,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Reserve => "reserve",
            StepKind::ReserveMulti => "reserve_multi",
            StepKind::ReserveKit => "reserve_kit",
            StepKind::Commit => "commit",
            StepKind::Release => "release",
            StepKind::SellPos => "sell_pos",
            StepKind::Return => "return",
            StepKind::Receive => "receive",
            StepKind::Count => "count",
            StepKind::Transfer => "transfer",
            StepKind::Adjust => "adjust",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One movement to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Unique within the run: with the run's tag it makes the idempotency key, so a step sent
    /// again (to settle an unknown outcome) is recognised as the same movement.
    pub id: u64,
    pub body: StepBody,
    /// What complex inventory adds (lots, serial numbers, a kit, a channel); `None` in the
    /// standard workload.
    pub extra: Option<Box<StepExtra>>,
}

/// No lot, no serial numbers (what a line without extras names).
static ANY: Units = Units::ANY;

/// The lots, serial numbers, kit and channel of a step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepExtra {
    /// The sales channel of an online step (and of the commit or release that follows it), an
    /// index into the plan's channels. `None`: the step's usual channel.
    pub channel: Option<u8>,
    /// Per line of the step (a reservation's lines in order, one entry for the other steps; a
    /// commit or release keeps its reservation's): the lot or serial numbers it names. Shorter
    /// than the lines (or empty): the rest name none.
    pub units: Vec<Units>,
    /// A reservation of a kit: (kit index, location, kits). It is sent as one line naming the
    /// kit; the step's `lines` are its components, which is what the engine holds.
    pub kit: Option<(u32, u16, Qty)>,
}

impl StepExtra {
    /// The units line `i` names ([`Units::ANY`] if none).
    pub fn units(&self, i: usize) -> &Units {
        self.units.get(i).unwrap_or(&ANY)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepBody {
    /// Holds every line or none; then (on success) a commit or release follows.
    Reserve {
        lines: Vec<(LevelIx, Qty)>,
        then: Then,
        expires_at_ms: u64,
    },
    Commit {
        hold: HoldId,
        lines: Vec<(LevelIx, Qty)>,
    },
    Release {
        hold: HoldId,
        lines: Vec<(LevelIx, Qty)>,
    },
    SellPos {
        level: LevelIx,
        qty: Qty,
    },
    Return {
        level: LevelIx,
        qty: Qty,
        damaged: bool,
    },
    Receive {
        level: LevelIx,
        qty: Qty,
    },
    /// `on_hand := counted`.
    Count {
        level: LevelIx,
        counted: Qty,
    },
    Transfer {
        from: LevelIx,
        to: LevelIx,
        qty: Qty,
    },
    /// `on_hand += delta` (a lot or serial numbers named in the step's extra).
    Adjust {
        level: LevelIx,
        delta: Qty,
    },
}

impl Step {
    /// A step of the standard workload (no extras).
    pub fn new(id: u64, body: StepBody) -> Step {
        Step { id, body, extra: None }
    }

    /// The units line `i` names ([`Units::ANY`] without extras).
    pub fn units(&self, i: usize) -> &Units {
        self.extra.as_ref().map_or(&ANY, |x| x.units(i))
    }

    pub fn kind(&self) -> StepKind {
        match &self.body {
            StepBody::Reserve { .. } if self.extra.as_ref().is_some_and(|x| x.kit.is_some()) => StepKind::ReserveKit,
            StepBody::Reserve { lines, .. } if lines.len() > 1 => StepKind::ReserveMulti,
            StepBody::Reserve { .. } => StepKind::Reserve,
            StepBody::Commit { .. } => StepKind::Commit,
            StepBody::Release { .. } => StepKind::Release,
            StepBody::SellPos { .. } => StepKind::SellPos,
            StepBody::Return { .. } => StepKind::Return,
            StepBody::Receive { .. } => StepKind::Receive,
            StepBody::Count { .. } => StepKind::Count,
            StepBody::Transfer { .. } => StepKind::Transfer,
            StepBody::Adjust { .. } => StepKind::Adjust,
        }
    }

    /// Every level the step may change.
    pub fn levels(&self) -> Vec<LevelIx> {
        match &self.body {
            StepBody::Reserve { lines, .. } | StepBody::Commit { lines, .. } | StepBody::Release { lines, .. } => {
                lines.iter().map(|(l, _)| *l).collect()
            }
            StepBody::SellPos { level, .. }
            | StepBody::Return { level, .. }
            | StepBody::Receive { level, .. }
            | StepBody::Count { level, .. }
            | StepBody::Adjust { level, .. } => vec![*level],
            StepBody::Transfer { from, to, .. } => vec![*from, *to],
        }
    }

    /// Whether the step takes stock under the online rule (it must never take `available`
    /// below zero).
    pub fn is_online_take(&self) -> bool {
        matches!(self.body, StepBody::Reserve { .. } | StepBody::Transfer { .. })
    }
}

/// What a target answered for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    /// Accepted (with its detail: a hold id, a count's variance) or rejected with a reason.
    pub result: Result<Detail, Reason>,
    /// For an accepted online take, the lowest `available` it left on the levels it took from,
    /// when the target reports it (Redis and PostgreSQL do; the engine's is read from its change
    /// feed instead).
    pub available_after: Option<Qty>,
    /// Bit `i` set: line `i` of the step (for a transfer, its source) raised a reorder alert.
    /// Targets without a change feed report alerts this way.
    pub alert_lines: u32,
}

impl StepOutcome {
    pub fn of(result: Result<Detail, Reason>) -> StepOutcome {
        StepOutcome { result, available_after: None, alert_lines: 0 }
    }
}
