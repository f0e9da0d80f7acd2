//! The vocabulary of the core: commands in, outcomes and events out.
//!
//! Every type here is plain data with a stable serde shape: the write-ahead log and checkpoints
//! encode these exact types with postcard (see `docs/wal.md`), so changing a field or the order of
//! enum variants is a format change and needs a new format version.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC). The engine stamps commands with it; the core never
/// reads a clock.
pub type Millis = u64;
/// The engine's sequence number: one per logged record, strictly increasing, no gaps.
pub type Seq = u64;
/// A signed quantity of units.
pub type Qty = i64;
/// A hold (reservation) id, assigned by the engine. The low [`HOLD_SHARD_BITS`] bits are the mask
/// of the shards that hold a part of it; the rest is a counter.
pub type HoldId = u64;

/// Bits of a [`HoldId`] that carry the mask of shards holding a part of the hold.
pub const HOLD_SHARD_BITS: u32 = 16;
/// The most shards an engine can have (one bit each in a hold id).
pub const SHARDS_MAX: usize = HOLD_SHARD_BITS as usize;
/// Largest quantity one movement line may carry.
pub const MOVEMENT_QTY_MAX: Qty = 1_000_000_000_000;
/// Largest absolute value a level's quantity may reach; movements that would pass it are
/// rejected with `quantity_overflow`. Keeps every derived sum far inside `i64`.
pub const LEVEL_QTY_MAX: Qty = 1 << 60;
/// SKU codes are 1 to 64 bytes of UTF-8.
pub const SKU_BYTES_MAX: usize = 64;
/// Locations and channels are 1 to 32 bytes of UTF-8.
pub const LOCATION_BYTES_MAX: usize = 32;
/// Channel names: 1 to 32 bytes.
pub const CHANNEL_BYTES_MAX: usize = 32;
/// Idempotency keys: 1 to 128 bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// References (order, purchase order, count sheet): at most 128 bytes.
pub const REFERENCE_BYTES_MAX: usize = 128;
/// Lines of one reservation.
pub const HOLD_LINES_MAX: usize = 256;

/// The mask of shards in a hold id.
pub fn hold_shard_mask(hold: HoldId) -> u64 {
    hold & ((1 << HOLD_SHARD_BITS) - 1)
}

/// A command sent to the engine: one movement plus what every movement carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// Client-chosen idempotency key; `None` makes the movement not retry-safe.
    pub key: Option<String>,
    /// Where the movement came from ("web", "pos", "amazon", "erp").
    pub channel: String,
    /// Order, purchase order or count sheet.
    pub reference: Option<String>,
    /// Client time, recorded as given.
    pub occurred_at: Option<Millis>,
    pub kind: MovementKind,
}

/// One (SKU, location, quantity) line of a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub location: String,
    pub qty: Qty,
    /// Minor units (cents); kept so a commit sells at the hold's prices.
    pub unit_price: Option<i64>,
}

/// The condition of returned goods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnCondition {
    /// Sellable again.
    Restock,
    /// Back on hand but `unsellable`.
    Damaged,
}

/// Why stock was adjusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustReason {
    Correction,
    Shrinkage,
    Damaged,
    Found,
    Promotion,
}

/// Replenishment settings of one (SKU, location).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// A reorder alert is raised when `available` falls to or below it. `None`: no reorder alerts.
    pub reorder_point: Option<Qty>,
    /// Fixed quantity to order.
    pub reorder_qty: Option<Qty>,
    /// For min/max ordering: order up to this level.
    pub max_qty: Option<Qty>,
    /// Units never offered for sale.
    pub safety_stock: Qty,
    pub lead_time_days: u16,
}

/// What a movement does. Variant order is part of the log format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovementKind {
    /// `on_hand += qty`; with a `reference` (a purchase order), `incoming -= min(qty, incoming)`.
    Receive { sku: String, location: String, qty: Qty, unit_cost: Option<i64> },
    /// `incoming += qty`: a purchase order was placed.
    Expect { sku: String, location: String, qty: Qty },
    /// `on_hand -= qty`. Consumes from `hold` when named; otherwise needs `available >= qty`
    /// unless `allow_negative` (point of sale, goods in the customer's hand).
    Sell {
        sku: String,
        location: String,
        qty: Qty,
        unit_price: Option<i64>,
        hold: Option<HoldId>,
        allow_negative: bool,
    },
    /// `on_hand += qty`; `Damaged` also `unsellable += qty`.
    Return { sku: String, location: String, qty: Qty, condition: ReturnCondition, unit_price: Option<i64> },
    /// `on_hand += delta`. A negative delta needs `available >= -delta` unless `allow_negative`.
    Adjust { sku: String, location: String, delta: Qty, reason: AdjustReason, allow_negative: bool },
    /// A physical count: `on_hand := counted`; the outcome carries the variance.
    Count { sku: String, location: String, counted: Qty },
    /// Moves `qty` of one SKU from one location to another, atomically.
    Transfer { sku: String, from: String, to: String, qty: Qty },
    /// Holds every line or none, until `expires_at`. `hold` is assigned by the engine.
    Reserve { hold: HoldId, lines: Vec<Line>, expires_at: Millis },
    /// Turns a hold into sales at the hold's prices.
    Commit { hold: HoldId },
    /// Drops a hold.
    Release { hold: HoldId },
    /// Replaces the replenishment settings of one (SKU, location).
    SetSettings { sku: String, location: String, settings: Settings },
    /// Housekeeping the engine logs periodically: drops holds that expired at or before
    /// `holds_expired_by` (the earliest first, at most `EXPIRE_HOLDS_MAX` per record), and
    /// idempotency keys first seen before `keys_seen_before` (and the oldest beyond `keys_max`).
    Expire { holds_expired_by: Millis, keys_seen_before: Millis, keys_max: u64 },
}

impl MovementKind {
    /// The name used in the protocol, metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MovementKind::Receive { .. } => "receive",
            MovementKind::Expect { .. } => "expect",
            MovementKind::Sell { .. } => "sell",
            MovementKind::Return { .. } => "return",
            MovementKind::Adjust { .. } => "adjust",
            MovementKind::Count { .. } => "count",
            MovementKind::Transfer { .. } => "transfer",
            MovementKind::Reserve { .. } => "reserve",
            MovementKind::Commit { .. } => "commit",
            MovementKind::Release { .. } => "release",
            MovementKind::SetSettings { .. } => "set_settings",
            MovementKind::Expire { .. } => "expire",
        }
    }
}

/// Why a movement was rejected. Each has a stable snake_case code a client can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// Not enough `available` stock (or, for a transfer, at the source).
    InsufficientStock,
    /// No open hold with that id.
    UnknownHold,
    /// The hold expired before it was committed.
    HoldExpired,
    /// The idempotency key was used before with a different body.
    IdempotencyMismatch,
    /// A quantity is zero, negative where it must be positive, or too large.
    InvalidQuantity,
    /// The movement would take a level past the largest quantity the engine keeps.
    QuantityOverflow,
    /// A SKU, location, channel, key or reference is empty or too long.
    InvalidField,
    /// A transfer from a location to itself.
    SameLocation,
    /// A sell names a hold that has no line for this SKU and location.
    HoldLineMissing,
    /// A reservation whose expiry is not in the future.
    InvalidExpiry,
    /// A reservation with no line or too many lines, or the same (SKU, location) twice.
    InvalidLines,
    /// Settings with a quantity out of range (negative, over the movement maximum, or an order
    /// quantity over `ORDER_QTY_MAX`), or both `reorder_qty` and `max_qty`.
    InvalidSettings,
    /// The engine could not make the movement durable; nothing is acknowledged.
    StorageFailure,
    /// The engine is shutting down.
    ShuttingDown,
}

impl Reason {
    /// The stable code on the wire and in logs.
    pub fn code(self) -> &'static str {
        match self {
            Reason::InsufficientStock => "insufficient_stock",
            Reason::UnknownHold => "unknown_hold",
            Reason::HoldExpired => "hold_expired",
            Reason::IdempotencyMismatch => "idempotency_mismatch",
            Reason::InvalidQuantity => "invalid_quantity",
            Reason::QuantityOverflow => "quantity_overflow",
            Reason::InvalidField => "invalid_field",
            Reason::SameLocation => "same_location",
            Reason::HoldLineMissing => "hold_line_missing",
            Reason::InvalidExpiry => "invalid_expiry",
            Reason::InvalidLines => "invalid_lines",
            Reason::InvalidSettings => "invalid_settings",
            Reason::StorageFailure => "storage_failure",
            Reason::ShuttingDown => "shutting_down",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// What an accepted movement reports back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    None,
    /// A reservation was placed.
    Hold(HoldId),
    /// A count: `counted - on_hand before`.
    Variance(Qty),
}

/// The outcome of one movement, as the core decided it.
pub type Outcome = Result<Detail, Reason>;

/// The quantities of one level after a movement, as they appear on the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelView {
    pub sku: String,
    pub location: String,
    pub on_hand: Qty,
    pub reserved: Qty,
    pub unsellable: Qty,
    pub incoming: Qty,
    pub safety_stock: Qty,
    pub available: Qty,
}

/// An open hold as reads report it: id, expiry, and its lines as (SKU, location, quantity).
pub type HoldView = (HoldId, Millis, Vec<(String, String, Qty)>);

/// Which alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertKind {
    /// `available` fell to or below the reorder point.
    Reorder,
    /// `available` reached zero.
    OutOfStock,
}

/// An alert raised once per crossing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub sku: String,
    pub location: String,
    pub available: Qty,
    pub reorder_point: Option<Qty>,
}

/// Events a movement produced, beside its outcome: the levels it changed and the alerts it raised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    pub levels: Vec<LevelView>,
    pub alerts: Vec<Alert>,
    /// Holds dropped by an `Expire` (or released by a commit or release).
    pub holds_closed: Vec<HoldId>,
    /// Views cleared earlier, kept so that their strings' memory is reused (not part of the value).
    #[serde(skip)]
    spare: SpareViews,
}

/// Recycled level views; never part of what effects are (equal whatever they hold).
#[derive(Clone, Debug, Default)]
struct SpareViews(Vec<LevelView>);

impl PartialEq for SpareViews {
    fn eq(&self, _: &SpareViews) -> bool {
        true
    }
}
impl Eq for SpareViews {}

impl Effects {
    /// Empties the effects, keeping their memory for the next movement.
    pub fn clear(&mut self) {
        self.spare.0.append(&mut self.levels);
        self.alerts.clear();
        self.holds_closed.clear();
    }

    /// Appends a level view, reusing a cleared one's strings when there is one.
    pub fn push_level(&mut self, sku: &str, location: &str, quantities: [Qty; 6]) {
        let [on_hand, reserved, unsellable, incoming, safety_stock, available] = quantities;
        let mut view = self.spare.0.pop().unwrap_or_else(|| LevelView {
            sku: String::new(),
            location: String::new(),
            on_hand,
            reserved,
            unsellable,
            incoming,
            safety_stock,
            available,
        });
        view.sku.clear();
        view.sku.push_str(sku);
        view.location.clear();
        view.location.push_str(location);
        (view.on_hand, view.reserved, view.unsellable, view.incoming) = (on_hand, reserved, unsellable, incoming);
        (view.safety_stock, view.available) = (safety_stock, available);
        self.levels.push(view);
    }
}
