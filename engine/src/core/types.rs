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
/// Lot codes: 1 to 32 bytes.
pub const LOT_BYTES_MAX: usize = 32;
/// Serial numbers: 1 to 64 bytes.
pub const SERIAL_BYTES_MAX: usize = 64;
/// Serial numbers one movement line may name (its quantity must equal their count).
pub const SERIALS_PER_LINE_MAX: usize = 1_000;
/// Lots one level may hold at once.
pub const LOTS_PER_LEVEL_MAX: usize = 64;
/// Channels with an allocation at one level.
pub const ALLOCATIONS_PER_LEVEL_MAX: usize = 16;
/// Components of one kit.
pub const KIT_COMPONENTS_MAX: usize = 16;
/// Largest quantity of one component per kit.
pub const KIT_COMPONENT_QTY_MAX: Qty = 10_000;
/// Milliseconds in a day (expiry warnings are set in days).
pub const DAY_MILLIS: Millis = 86_400_000;

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
    /// Which lot or serial numbers to hold (none: first-expiry-first-out over the lots).
    pub units: Units,
    /// Set by the engine on the component lines it expands a kit into: the kit SKU, how many
    /// kits the line is part of and the price per kit. A client leaves it `None` (and names the
    /// kit as `sku`).
    pub kit: Option<KitRef>,
}

/// Which units of a SKU a movement line is about: a lot, serial numbers, or (the default) any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    /// A lot code. On a `receive`: the lot the units belong to (new lots need `lot_expires_at`).
    /// Elsewhere: take from (or put back into) this lot only. `None`: first-expiry-first-out.
    pub lot: Option<String>,
    /// On a `receive` of a new lot: when it expires (ms since the epoch). Must match an existing lot.
    pub lot_expires_at: Option<Millis>,
    /// Serial numbers, for a serial-tracked SKU: exactly `qty` distinct ones. Empty otherwise.
    pub serials: Vec<String>,
}

impl Units {
    /// Any units (no lot, no serials).
    pub const ANY: Units = Units { lot: None, lot_expires_at: None, serials: Vec::new() };

    /// Units of one lot.
    pub fn lot(code: &str) -> Units {
        Units { lot: Some(code.to_owned()), ..Units::ANY }
    }

    /// Units of a new lot that expires at `expires_at`.
    pub fn new_lot(code: &str, expires_at: Millis) -> Units {
        Units { lot: Some(code.to_owned()), lot_expires_at: Some(expires_at), ..Units::ANY }
    }

    /// These serial numbers.
    pub fn serials<S: AsRef<str>>(serials: &[S]) -> Units {
        Units { serials: serials.iter().map(|s| s.as_ref().to_owned()).collect(), ..Units::ANY }
    }

    pub fn is_any(&self) -> bool {
        self.lot.is_none() && self.lot_expires_at.is_none() && self.serials.is_empty()
    }
}

/// The kit a component line was expanded from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitRef {
    pub sku: String,
    /// Kits sold or held (the line's `qty` is this times the component's quantity per kit).
    pub qty: Qty,
    /// Minor units (cents) per kit: the price the kit line (or kit sale) named, if any. The
    /// component lines themselves carry no price, so the kit's revenue is `qty * unit_price`.
    pub unit_price: Option<i64>,
}

/// One component of a kit: `qty` units of `sku` per kit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub sku: String,
    pub qty: Qty,
}

/// Settings of a SKU at every location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSettings {
    /// Every unit has a serial number; movements must name them. Can be switched only while the
    /// SKU has no stock.
    pub serial_tracked: bool,
    /// An `expiring` alert is raised this many days before a lot of the SKU expires. `None`: none.
    pub expiry_warning_days: Option<u16>,
    /// Non-empty: the SKU is a kit (bundle) of these components, which have stock; the kit has none.
    pub components: Vec<Component>,
}

impl SkuSettings {
    pub fn is_kit(&self) -> bool {
        !self.components.is_empty()
    }
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
///
/// `units` names a lot or serial numbers (see [`Units`]); `Units::ANY` for plain stock. A `sell`,
/// `reserve` or `return` of a kit SKU is expanded by the engine into its components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovementKind {
    /// `on_hand += qty`; with a `reference` (a purchase order), `incoming -= min(qty, incoming)`.
    Receive { sku: String, location: String, qty: Qty, unit_cost: Option<i64>, units: Units },
    /// `incoming += qty`: a purchase order was placed.
    Expect { sku: String, location: String, qty: Qty },
    /// `on_hand -= qty`. Consumes from `hold` when named; otherwise needs `available >= qty`
    /// (for the movement's channel, see [`MovementKind::Allocate`]) unless `allow_negative`
    /// (point of sale, goods in the customer's hand).
    Sell {
        sku: String,
        location: String,
        qty: Qty,
        unit_price: Option<i64>,
        hold: Option<HoldId>,
        allow_negative: bool,
        units: Units,
    },
    /// `on_hand += qty`; `Damaged` also `unsellable += qty`.
    Return {
        sku: String,
        location: String,
        qty: Qty,
        condition: ReturnCondition,
        unit_price: Option<i64>,
        units: Units,
    },
    /// `on_hand += delta`. A negative delta needs `available >= -delta` unless `allow_negative`
    /// (or, naming an expired lot, that lot's units: writing off expired stock).
    Adjust { sku: String, location: String, delta: Qty, reason: AdjustReason, allow_negative: bool, units: Units },
    /// A physical count: `on_hand := counted` (of the named lot, when the level has lots); the
    /// outcome carries the variance.
    Count { sku: String, location: String, counted: Qty, units: Units },
    /// Moves `qty` of one SKU from one location to another, atomically; lots and serial numbers
    /// move with their units.
    Transfer { sku: String, from: String, to: String, qty: Qty, units: Units },
    /// Holds every line or none, until `expires_at`. `hold` is assigned by the engine.
    Reserve { hold: HoldId, lines: Vec<Line>, expires_at: Millis },
    /// Turns a hold into sales at the hold's prices.
    Commit { hold: HoldId },
    /// Drops a hold.
    Release { hold: HoldId },
    /// Replaces the replenishment settings of one (SKU, location).
    SetSettings { sku: String, location: String, settings: Settings },
    /// Housekeeping the engine logs periodically: drops holds that expired at or before
    /// `holds_expired_by` (the earliest first, at most `EXPIRE_HOLDS_MAX` per record), expires
    /// lots (and raises their warnings) due by then, and forgets idempotency keys first seen
    /// before `keys_seen_before` (and the oldest beyond `keys_max`).
    Expire { holds_expired_by: Millis, keys_seen_before: Millis, keys_max: u64 },
    /// Ring-fences `qty` units of a level for `channel` (0 removes the allocation). Sales from
    /// that channel use the allocation first, then the shared pool; other channels cannot take
    /// allocated units.
    Allocate { sku: String, location: String, channel: String, qty: Qty },
    /// Replaces a SKU's settings at every location: serial tracking, expiry warning, kit.
    SetSkuSettings { sku: String, settings: SkuSettings },
    /// Engine-internal: finishes a commit of a hold split over several shards that another
    /// shard already committed (after a crash between the parts), whatever the hold's expiry.
    CompleteCommit { hold: HoldId },
}

impl MovementKind {
    /// Every kind's name, in variant order (see [`MovementKind::index`]).
    pub const NAMES: [&'static str; 15] = [
        "receive",
        "expect",
        "sell",
        "return",
        "adjust",
        "count",
        "transfer",
        "reserve",
        "commit",
        "release",
        "set_settings",
        "expire",
        "allocate",
        "set_sku_settings",
        "complete_commit",
    ];

    /// The variant's position (its index in the log format and in [`MovementKind::NAMES`]).
    pub fn index(&self) -> usize {
        match self {
            MovementKind::Receive { .. } => 0,
            MovementKind::Expect { .. } => 1,
            MovementKind::Sell { .. } => 2,
            MovementKind::Return { .. } => 3,
            MovementKind::Adjust { .. } => 4,
            MovementKind::Count { .. } => 5,
            MovementKind::Transfer { .. } => 6,
            MovementKind::Reserve { .. } => 7,
            MovementKind::Commit { .. } => 8,
            MovementKind::Release { .. } => 9,
            MovementKind::SetSettings { .. } => 10,
            MovementKind::Expire { .. } => 11,
            MovementKind::Allocate { .. } => 12,
            MovementKind::SetSkuSettings { .. } => 13,
            MovementKind::CompleteCommit { .. } => 14,
        }
    }

    /// The name used in the protocol, metrics and logs.
    pub fn name(&self) -> &'static str {
        MovementKind::NAMES[self.index()]
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
    /// The named lot has no units at this level.
    UnknownLot,
    /// The named lot has expired (or, for a reservation, expires before the hold would).
    LotExpired,
    /// A lot code on a SKU that cannot have lots, a new lot without an expiry, an existing lot
    /// with another expiry, or too many lots at one level.
    InvalidLot,
    /// A count of a level that has lots must name the lot counted.
    LotRequired,
    /// Serial numbers missing (serial-tracked SKU), present (SKU not serial-tracked), not as
    /// many as the quantity, repeated, or too long.
    InvalidSerials,
    /// A serial number received (or returned) that is already in stock.
    SerialInStock,
    /// A serial number to sell, hold, move or write off that is not in stock at that location
    /// (unknown, sold, elsewhere, or held by a reservation).
    SerialNotInStock,
    /// A serial number returned that was not sold.
    SerialNotSold,
    /// A stock movement on a kit SKU: kits have no stock of their own (move the components).
    KitNotStocked,
    /// A kit definition that is empty, too long, names the kit itself or another kit, repeats a
    /// component, has a quantity out of range, or a SKU that has stock, lots or serials.
    InvalidKit,
    /// An allocation quantity out of range, or too many channels allocated at one level.
    InvalidAllocation,
}

impl Reason {
    /// Every reason, in variant order: `Reason::ALL[r as usize] == r`.
    pub const ALL: [Reason; 25] = [
        Reason::InsufficientStock,
        Reason::UnknownHold,
        Reason::HoldExpired,
        Reason::IdempotencyMismatch,
        Reason::InvalidQuantity,
        Reason::QuantityOverflow,
        Reason::InvalidField,
        Reason::SameLocation,
        Reason::HoldLineMissing,
        Reason::InvalidExpiry,
        Reason::InvalidLines,
        Reason::InvalidSettings,
        Reason::StorageFailure,
        Reason::ShuttingDown,
        Reason::UnknownLot,
        Reason::LotExpired,
        Reason::InvalidLot,
        Reason::LotRequired,
        Reason::InvalidSerials,
        Reason::SerialInStock,
        Reason::SerialNotInStock,
        Reason::SerialNotSold,
        Reason::KitNotStocked,
        Reason::InvalidKit,
        Reason::InvalidAllocation,
    ];

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
            Reason::UnknownLot => "unknown_lot",
            Reason::LotExpired => "lot_expired",
            Reason::InvalidLot => "invalid_lot",
            Reason::LotRequired => "lot_required",
            Reason::InvalidSerials => "invalid_serials",
            Reason::SerialInStock => "serial_in_stock",
            Reason::SerialNotInStock => "serial_not_in_stock",
            Reason::SerialNotSold => "serial_not_sold",
            Reason::KitNotStocked => "kit_not_stocked",
            Reason::InvalidKit => "invalid_kit",
            Reason::InvalidAllocation => "invalid_allocation",
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
    /// A lot expires within the SKU's `expiry_warning_days` (`lot` says which, `available` its units).
    LotExpiring,
    /// A lot expired: its units left `available` for `unsellable` (`available` is their number).
    LotExpired,
}

/// An alert raised once per crossing (lot alerts: once per lot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub sku: String,
    pub location: String,
    pub available: Qty,
    pub reorder_point: Option<Qty>,
    /// Lot alerts: the lot and its expiry.
    pub lot: Option<(String, Millis)>,
}

/// One lot of a level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotView {
    pub sku: String,
    pub location: String,
    pub lot: String,
    pub expires_at: Millis,
    pub on_hand: Qty,
    pub reserved: Qty,
    /// Expired: its units count as `unsellable` at the level.
    pub expired: bool,
}

/// Where a serial number is and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialView {
    pub sku: String,
    pub serial: String,
    /// Where it is (or was last).
    pub location: String,
    pub status: SerialStatus,
    /// Every movement that named it, oldest first.
    pub history: Vec<SerialEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SerialStatus {
    InStock,
    /// Held by this reservation.
    Reserved(HoldId),
    Sold,
    /// Written off by an adjustment.
    WrittenOff,
}

/// One movement that named a serial number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialEvent {
    pub seq: Seq,
    pub at: Millis,
    /// The movement's kind ("receive", "sell", "reserve", "commit", "release", ...).
    pub what: String,
    pub location: String,
}

/// A level with its lots and channel allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelDetail {
    pub level: LevelView,
    pub lots: Vec<LotView>,
    /// (channel, units still ring-fenced for it).
    pub allocations: Vec<(String, Qty)>,
    /// Units not in any lot.
    pub loose_on_hand: Qty,
}

/// Events a movement produced, beside its outcome: the levels it changed and the alerts it raised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    pub levels: Vec<LevelView>,
    pub alerts: Vec<Alert>,
    /// Holds dropped by an `Expire` (or released by a commit or release).
    pub holds_closed: Vec<HoldId>,
    /// Lots the movement changed, after the change (which lots a first-expiry-first-out sale took).
    pub lots: Vec<LotView>,
}

impl Effects {
    pub fn clear(&mut self) {
        self.levels.clear();
        self.alerts.clear();
        self.holds_closed.clear();
        self.lots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_in_variant_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }
}
