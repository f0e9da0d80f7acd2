//! Steps: the movements the load generator sends, one per line of a request, in a form every
//! target understands, and what a target answers for each.

use crate::workload::{LevelIx, Then};
use engine::core::{Detail, HoldId, Qty, Reason};
use serde::Serialize;

/// Kinds of step, for latency histograms and counts. The order is the report's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Reservation of a one-line cart.
    Reserve,
    /// Reservation of a cart with several lines.
    ReserveMulti,
    Commit,
    Release,
    /// Point-of-sale sale (`allow_negative`).
    SellPos,
    Return,
    /// Receipt answering a reorder alert.
    Receive,
    Count,
    Transfer,
}

impl StepKind {
    pub const ALL: [StepKind; 9] = [
        StepKind::Reserve,
        StepKind::ReserveMulti,
        StepKind::Commit,
        StepKind::Release,
        StepKind::SellPos,
        StepKind::Return,
        StepKind::Receive,
        StepKind::Count,
        StepKind::Transfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKind::Reserve => "reserve",
            StepKind::ReserveMulti => "reserve_multi",
            StepKind::Commit => "commit",
            StepKind::Release => "release",
            StepKind::SellPos => "sell_pos",
            StepKind::Return => "return",
            StepKind::Receive => "receive",
            StepKind::Count => "count",
            StepKind::Transfer => "transfer",
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
}

impl Step {
    pub fn kind(&self) -> StepKind {
        match &self.body {
            StepBody::Reserve { lines, .. } if lines.len() > 1 => StepKind::ReserveMulti,
            StepBody::Reserve { .. } => StepKind::Reserve,
            StepBody::Commit { .. } => StepKind::Commit,
            StepBody::Release { .. } => StepKind::Release,
            StepBody::SellPos { .. } => StepKind::SellPos,
            StepBody::Return { .. } => StepKind::Return,
            StepBody::Receive { .. } => StepKind::Receive,
            StepBody::Count { .. } => StepKind::Count,
            StepBody::Transfer { .. } => StepKind::Transfer,
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
            | StepBody::Count { level, .. } => vec![*level],
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
