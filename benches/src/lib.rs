//! Workloads shared by Perpetua's benchmarks: a catalogue of SKUs whose popularity follows a Zipf
//! law, and a checkout-like mix of movements over it.

use engine::core::{Line, Millis, Movement, MovementKind, Qty, Units, DAY_MILLIS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// SKU codes look like real ones: "SKU-00012345".
pub fn sku_name(i: u64) -> String {
    format!("SKU-{i:08}")
}

/// Draws SKU indexes `0..skus` with Zipf-skewed popularity (a few hot SKUs).
pub struct Catalogue {
    pub skus: u64,
    pub locations: Vec<String>,
    /// Lots per level (0: plain stock). With lots, the seed stock is split over them, receipts
    /// name one of them, and sales and holds take first-expiry-first-out.
    pub lots: u32,
    zipf: Zipf<f64>,
    rng: StdRng,
}

impl Catalogue {
    pub fn new(skus: u64, locations: usize, exponent: f64, seed: u64) -> Catalogue {
        Catalogue {
            skus,
            locations: (0..locations).map(|i| format!("loc-{i}")).collect(),
            lots: 0,
            zipf: Zipf::new(skus, exponent).expect("valid Zipf parameters"),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The same catalogue with `lots` lots per level.
    pub fn with_lots(mut self, lots: u32) -> Catalogue {
        self.lots = lots;
        self
    }

    /// Lot `j`: its code and its expiry (far in the future: nothing expires during a benchmark).
    fn lot(j: u32) -> Units {
        const FAR: Millis = 4_000_000_000_000;
        Units::new_lot(&format!("LOT-{j}"), FAR + j as Millis * 30 * DAY_MILLIS)
    }

    /// A SKU index, hot ones more often.
    pub fn pick(&mut self) -> u64 {
        self.zipf.sample(&mut self.rng) as u64 - 1
    }

    fn location(&mut self) -> String {
        let i = self.rng.gen_range(0..self.locations.len());
        self.locations[i].clone()
    }

    /// Receipts that put `qty` of every SKU at every location (the seed stock).
    /// With lots, `qty` is split evenly over them.
    pub fn seed_stock(&self, qty: Qty) -> impl Iterator<Item = Movement> + '_ {
        let parts = self.lots.max(1);
        (0..self.skus).flat_map(move |i| {
            self.locations.iter().flat_map(move |loc| {
                (0..parts).map(move |j| {
                    let units = if self.lots == 0 { Units::ANY } else { Catalogue::lot(j) };
                    movement(
                        None,
                        MovementKind::Receive {
                            sku: sku_name(i),
                            location: loc.clone(),
                            qty: qty / parts as Qty,
                            unit_cost: Some(500),
                            units,
                        },
                    )
                })
            })
        })
    }

    /// One movement of a checkout-like mix: mostly sells, some receipts, returns and
    /// single-line reservations. `key` makes it idempotent.
    pub fn next_movement(&mut self, key: Option<String>) -> Movement {
        let sku = sku_name(self.pick());
        let location = self.location();
        let kind = match self.rng.gen_range(0..100) {
            0..=69 => MovementKind::Sell {
                sku,
                location,
                qty: 1,
                unit_price: Some(1999),
                hold: None,
                allow_negative: false,
                units: Units::ANY,
            },
            70..=84 => {
                let units = if self.lots == 0 { Units::ANY } else { Catalogue::lot(self.rng.gen_range(0..self.lots)) };
                MovementKind::Receive { sku, location, qty: 5, unit_cost: Some(800), units }
            }
            85..=89 => MovementKind::Return {
                sku,
                location,
                qty: 1,
                condition: engine::core::ReturnCondition::Restock,
                unit_price: Some(1999),
                units: Units::ANY,
            },
            _ => MovementKind::Reserve {
                hold: 0,
                lines: vec![Line { sku, location, qty: 1, unit_price: Some(1999), kit: None, units: Units::ANY }],
                expires_at: u64::MAX / 2,
            },
        };
        movement(key, kind)
    }
}

pub fn movement(key: Option<String>, kind: MovementKind) -> Movement {
    Movement { key, channel: "web".into(), reference: None, occurred_at: None, kind }
}

/// A setting from the environment variable `name`, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// True when the harness only asks for a list of benchmarks (`cargo test --benches`): the
/// hand-written benchmarks then do nothing.
pub fn only_listing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}
