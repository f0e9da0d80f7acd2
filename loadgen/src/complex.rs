//! Complex inventory in the workload (`--lots`, `--serial-share`, `--kits`, `--channels`): which
//! SKUs are serial-tracked, the lots every level is seeded with, the kits and their components,
//! the sales channels and their allocations ([`Plan`]), and what each operation adds to the
//! standard one ([`OpExtras`]).
//!
//! Everything here is decided from the seed (and, for dates and serial codes, the run's start),
//! never from replies. The extras of operation `i` come from a random stream of their own
//! ([`Plan::extras`]), so the standard operation `i` is the same with or without these options:
//! a run without them is the standard workload, byte for byte.

use crate::workload::{Catalogue, LevelIx, Op, OpRng};
use engine::core::{Millis, Qty, Reason, DAY_MILLIS, LOCATION_BYTES_MAX};
use serde::Serialize;
use std::collections::BTreeMap;

/// Most lots a level is seeded with (the engine keeps at most 64 per level, and receipts add more).
pub const LOTS_MAX: u8 = 16;
/// Days between the expiry dates of a level's seeded lots (the first expires this long after the
/// run's start day); receipts during the run bring lots that expire after every seeded one.
pub const LOT_SPACING_DAYS: u64 = 30;
/// Share of sales, reservation lines, returns and point-of-sale sales of a SKU with lots that name
/// a seeded lot instead of taking first-expiry-first-out (or, for a return, coming back loose).
pub const LOT_NAMED_SHARE: f64 = 0.1;
/// Units of a serial-tracked level at most (each one is a serial number that both the engine and
/// the load generator remember): serial-tracked levels are seeded with `min(--stock, this)`.
pub const SERIAL_STOCK_MAX: Qty = 32;
/// Most kits.
pub const KITS_MAX: u32 = 1000;
/// Share of one-line checkouts that buy a kit instead (when there are kits).
pub const KIT_CHECKOUT_SHARE: f64 = 0.2;
/// Most sales channels.
pub const CHANNELS_MAX: usize = 8;
/// Channels the load generator uses itself (point of sale, receipts, counts, seeding).
pub const RESERVED_CHANNELS: [&str; 5] = ["pos", "erp", "warehouse", "admin", "loadgen"];
/// Allocations go to the this many most popular SKUs unless `--hot-skus` or `--allocated-skus`
/// says otherwise.
pub const ALLOCATED_SKUS_DEFAULT: u32 = 100;

/// The rejection reasons complex inventory brings, listed in the report even when none occurred.
pub const COMPLEX_REASONS: &[Reason] = Reason::ALL.split_at(Reason::UnknownLot as usize).1;

/// Salt of the random stream the extras of an operation are drawn from.
const EXTRAS_SALT: u64 = 0x5EED_C0FF_EE00_0001;
/// Salt of the stream the plan (serial SKUs, kits) is drawn from.
const PLAN_SALT: u64 = 0x5EED_C0FF_EE00_0002;

/// The complex-inventory options of a run. All off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ComplexConfig {
    /// Lots each level is seeded with (0: plain stock).
    pub lots: u8,
    /// Share of SKUs that are serial-tracked.
    pub serial_share: f64,
    /// Kits (bundles of 2 or 3 components) to define.
    pub kits: u32,
    /// Online sales channels; the first has no allocation, each other one gets
    /// `allocation_share` of the seeded stock of every level of the allocated SKUs. Empty: every
    /// online movement is `web`, with no allocation.
    pub channels: Vec<String>,
    pub allocation_share: f64,
    /// The this many most popular SKUs get allocations.
    pub allocated_skus: u32,
}

impl ComplexConfig {
    /// Whether any complex-inventory option is on.
    pub fn is_on(&self) -> bool {
        self.lots > 0 || self.serial_share > 0.0 || self.kits > 0 || !self.channels.is_empty()
    }

    /// Parses `--channels web,amazon`.
    pub fn parse_channels(text: &str) -> Result<Vec<String>, String> {
        let names: Vec<String> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if names.is_empty() {
            return Err("--channels: give at least one channel name (e.g. web,amazon)".into());
        }
        if names.len() > CHANNELS_MAX {
            return Err(format!("--channels: at most {CHANNELS_MAX} channels, not {}", names.len()));
        }
        for (i, n) in names.iter().enumerate() {
            if n.len() > LOCATION_BYTES_MAX {
                return Err(format!("--channels: {n:?} is longer than {LOCATION_BYTES_MAX} bytes"));
            }
            if RESERVED_CHANNELS.contains(&n.as_str()) {
                return Err(format!(
                    "--channels: {n:?} is a channel the load generator uses itself ({}); pick another name",
                    RESERVED_CHANNELS.join(", ")
                ));
            }
            if names[..i].contains(n) {
                return Err(format!("--channels: {n:?} is named twice"));
            }
        }
        Ok(names)
    }
}

/// A kit: its SKU code and its components (SKU index, units per kit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kit {
    pub sku: String,
    pub components: Vec<(u32, Qty)>,
}

/// What the complex-inventory options add to one operation. Drawn by [`Plan::extras`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpExtras {
    /// Online checkouts: the sales channel (an index into [`Plan::channels`]).
    pub channel: Option<u8>,
    /// Per line of the operation (a checkout's lines in order; one entry for a point-of-sale
    /// sale, a return or a count): the seeded lot it names (an index below `--lots`), or `None`
    /// (first expiry first out; a return comes back loose). A count of a level with lots always
    /// names one. Empty when no line names a lot.
    pub lots: Vec<Option<u8>>,
    /// A one-line checkout that buys this kit (an index into [`Plan::kits`]) at the line's
    /// location, as many as the line's quantity, instead of the line's SKU.
    pub kit: Option<u32>,
}

impl OpExtras {
    pub fn is_empty(&self) -> bool {
        self.channel.is_none() && self.lots.iter().all(Option::is_none) && self.kit.is_none()
    }

    /// The lot line `i` names, if any.
    pub fn lot(&self, i: usize) -> Option<u8> {
        self.lots.get(i).copied().flatten()
    }
}

/// The complex inventory of a run.
pub struct Plan {
    pub config: ComplexConfig,
    /// The day (since the epoch) the lots' expiry dates count from: the run's start day.
    pub base_day: u64,
    /// Tags this run's serial numbers (so a second run on the same engine seeds new ones).
    pub serial_tag: String,
    serial: Vec<bool>,
    pub kits: Vec<Kit>,
    /// Ring-fenced units at seeding: level -> (channel index, units), in channel order.
    allocations: BTreeMap<LevelIx, Vec<(u8, Qty)>>,
    seed: u64,
}

impl Plan {
    /// The plan of a run seeded with `seed` over `catalogue`, starting at `now_ms` (which gives the
    /// lots' dates and the serial numbers' tag, nothing else).
    pub fn new(catalogue: &Catalogue, config: ComplexConfig, seed: u64, now_ms: Millis) -> Result<Plan, String> {
        if config.lots > LOTS_MAX {
            return Err(format!("--lots: at most {LOTS_MAX} lots per level, not {}", config.lots));
        }
        if !(0.0..=1.0).contains(&config.serial_share) {
            return Err(format!("--serial-share must be between 0 and 1, not {}", config.serial_share));
        }
        if config.kits > KITS_MAX {
            return Err(format!("--kits: at most {KITS_MAX}, not {}", config.kits));
        }
        if !(0.0..=1.0).contains(&config.allocation_share) {
            return Err(format!("--allocation-share must be between 0 and 1, not {}", config.allocation_share));
        }
        let n = catalogue.config.skus;
        let serial: Vec<bool> = (0..n)
            .map(|s| config.serial_share > 0.0 && OpRng::new(seed ^ PLAN_SALT, s as u64).unit() < config.serial_share)
            .collect();
        let mut kits = Vec::new();
        if config.kits > 0 {
            if serial.iter().filter(|s| !**s).count() < 2 {
                return Err(
                    "--kits needs at least 2 SKUs that are not serial-tracked (kits cannot hold serials)".into()
                );
            }
            let mut rng = OpRng::new(seed ^ PLAN_SALT, u64::MAX);
            for k in 0..config.kits {
                let want = rng.range(2, 3) as usize;
                let mut components: Vec<(u32, Qty)> = Vec::with_capacity(want);
                // Components by popularity, so kits sell what shoppers buy; distinct, never serial-tracked.
                for _ in 0..want * 50 {
                    if components.len() == want {
                        break;
                    }
                    let s = catalogue.draw_sku(&mut rng);
                    if !serial[s as usize] && !components.iter().any(|c| c.0 == s) {
                        components.push((s, rng.range(1, 2) as Qty));
                    }
                }
                if components.len() < 2 {
                    // A flash sale on very few SKUs: take any two that are not serial-tracked.
                    components = (0..n).filter(|&s| !serial[s as usize]).take(2).map(|s| (s, 1)).collect();
                }
                kits.push(Kit { sku: format!("{}KIT{k:05}", catalogue.config.sku_prefix), components });
            }
        }
        let mut allocations = BTreeMap::new();
        if config.channels.len() > 1 {
            let skus = config.allocated_skus.min(n);
            for s in 0..skus {
                for loc in 0..catalogue.config.locations {
                    let level = catalogue.level(s, loc);
                    let stock = catalogue.seed(level).stock;
                    let qty = ((stock as f64 * config.allocation_share).round() as Qty).max(1);
                    allocations.insert(level, (1..config.channels.len() as u8).map(|c| (c, qty)).collect());
                }
            }
        }
        let serial_tag = format!("{:x}", now_ms % (1 << 40));
        Ok(Plan { config, base_day: now_ms / DAY_MILLIS, serial_tag, serial, kits, allocations, seed })
    }

    /// Serial-tracked levels hold at most [`SERIAL_STOCK_MAX`] units: caps the catalogue's seeds.
    pub fn cap_serial_stock(&self, catalogue: &mut Catalogue) {
        for (s, _) in self.serial.iter().enumerate().filter(|(_, t)| **t) {
            catalogue.cap_stock(s as u32, SERIAL_STOCK_MAX);
        }
    }

    pub fn is_serial(&self, sku: u32) -> bool {
        self.serial.get(sku as usize).copied().unwrap_or(false)
    }

    /// Whether levels of this SKU are kept in lots.
    pub fn has_lots(&self, sku: u32) -> bool {
        self.config.lots > 0 && !self.is_serial(sku)
    }

    pub fn serial_sku_count(&self) -> usize {
        self.serial.iter().filter(|s| **s).count()
    }

    pub fn channels(&self) -> &[String] {
        &self.config.channels
    }

    /// The channel online traffic uses when `--channels` is not given.
    pub fn channel_name(&self, channel: Option<u8>) -> &str {
        match channel {
            Some(c) => &self.config.channels[c as usize],
            None => "web",
        }
    }

    /// The units ring-fenced at seeding: level -> (channel index, units).
    pub fn allocations(&self) -> &BTreeMap<LevelIx, Vec<(u8, Qty)>> {
        &self.allocations
    }

    /// Seeded lot `k` of a level: its code and expiry (the same for every SKU and location). The
    /// code is its expiry date, so a code always means the same expiry.
    pub fn seeded_lot(&self, k: u8) -> (String, Millis) {
        lot_of_day(self.base_day + LOT_SPACING_DAYS * (k as u64 + 1), "")
    }

    /// The lot a receipt brings (a new one per receipt, `n` unique in the run): it expires after
    /// every seeded lot. Its code is at most 21 bytes.
    pub fn receipt_lot(&self, n: u64) -> (String, Millis) {
        // Zero-padded, so that first-expiry-first-out (by expiry, then code) takes older receipts first.
        lot_of_day(self.base_day + LOT_SPACING_DAYS * (self.config.lots as u64 + 1), &format!("-R{n:010x}"))
    }

    /// A serial number of this run (`n` unique per SKU).
    pub fn serial_code(&self, n: u32) -> String {
        format!("S{}-{n:07}", self.serial_tag)
    }

    /// The number of one of this run's serial codes.
    pub fn serial_number(&self, code: &str) -> Option<u32> {
        code.strip_prefix('S')?.strip_prefix(self.serial_tag.as_str())?.strip_prefix('-')?.parse().ok()
    }

    /// What the complex-inventory options add to operation `index` (`op` is
    /// `Generator::op(index)`): a pure function of `(seed, index)`, drawn from a stream of its own.
    pub fn extras(&self, catalogue: &Catalogue, index: u64, op: &Op) -> OpExtras {
        let mut rng = OpRng::new(self.seed ^ EXTRAS_SALT, index);
        let mut x = OpExtras::default();
        let lots = self.config.lots as u64;
        let lot_for = |level: LevelIx, always: bool, rng: &mut OpRng| {
            let named = self.has_lots(catalogue.sku_of(level)) && (always || rng.unit() < LOT_NAMED_SHARE);
            named.then(|| rng.below(lots) as u8)
        };
        match op {
            Op::Checkout { lines, .. } => {
                if self.config.channels.len() > 1 {
                    x.channel = Some(rng.below(self.config.channels.len() as u64) as u8);
                } else if self.config.channels.len() == 1 {
                    x.channel = Some(0);
                }
                if lines.len() == 1 && !self.kits.is_empty() && rng.unit() < KIT_CHECKOUT_SHARE {
                    x.kit = Some(rng.below(self.kits.len() as u64) as u32);
                } else {
                    x.lots = lines.iter().map(|(l, _)| lot_for(*l, false, &mut rng)).collect();
                }
            }
            Op::PosSell { level, .. } | Op::Return { level, .. } => x.lots = vec![lot_for(*level, false, &mut rng)],
            Op::Count { level, .. } => x.lots = vec![lot_for(*level, true, &mut rng)],
            Op::Transfer { .. } => {}
        }
        if x.lots.iter().all(Option::is_none) {
            x.lots.clear();
        }
        x
    }

    /// How many seeding movements of each new kind the plan sends.
    pub fn seeding_counts(&self, catalogue: &Catalogue) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        let serial_skus = self.serial_sku_count() as u64;
        let locations = catalogue.config.locations as u64;
        if serial_skus > 0 {
            let units: u64 = (0..catalogue.config.skus)
                .filter(|&s| self.is_serial(s))
                .map(|s| {
                    (0..catalogue.config.locations)
                        .map(|l| catalogue.seed(catalogue.level(s, l)).stock as u64)
                        .sum::<u64>()
                })
                .sum();
            c.insert("set_sku_settings_serial_tracked".into(), serial_skus);
            c.insert("receive_serials".into(), serial_skus * locations);
            c.insert("serials_seeded".into(), units);
        }
        if !self.kits.is_empty() {
            c.insert("set_sku_settings_kit".into(), self.kits.len() as u64);
        }
        if self.config.lots > 0 {
            let lot_skus = catalogue.config.skus as u64 - serial_skus;
            c.insert("receive_lot".into(), lot_skus * locations * self.config.lots as u64);
        }
        let allocate: u64 = self.allocations.values().map(|a| a.len() as u64).sum();
        if allocate > 0 {
            c.insert("allocate".into(), allocate);
        }
        c
    }

    /// The seeded stock of a level split over its lots: `(lot index, units)`, the remainder in the
    /// last lot; lots that would be empty are left out.
    pub fn lot_split(&self, stock: Qty) -> Vec<(u8, Qty)> {
        let n = self.config.lots.max(1) as Qty;
        (0..n).map(|k| (k as u8, stock / n + if k == n - 1 { stock % n } else { 0 })).filter(|(_, q)| *q > 0).collect()
    }
}

/// A lot that expires at the start (UTC) of day `day`: its code `L` + the date (+ `suffix`).
fn lot_of_day(day: u64, suffix: &str) -> (String, Millis) {
    let (y, m, d) = civil_from_days(day as i64);
    (format!("L{y:04}{m:02}{d:02}{suffix}"), day * DAY_MILLIS)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lot_codes_carry_their_dates_and_channels_are_checked() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(lot_of_day(19_723, "-R1f"), ("L20240101-R1f".to_string(), 19_723 * DAY_MILLIS));
        assert_eq!(ComplexConfig::parse_channels(" web, amazon ").unwrap(), ["web", "amazon"]);
        assert!(ComplexConfig::parse_channels("web,pos").unwrap_err().contains("uses itself"));
        assert!(ComplexConfig::parse_channels("web,web").unwrap_err().contains("twice"));
        assert!(ComplexConfig::parse_channels(",").is_err());
    }
}
