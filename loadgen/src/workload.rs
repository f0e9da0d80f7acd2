//! The workload: a catalogue of SKUs and locations with seeded stock and reorder settings, and a
//! seeded, deterministic sequence of shop operations over it.
//!
//! Operation `i` of a run is a pure function of `(seed, i)` ([`Generator::op`]): the same seed
//! gives the same sequence of operations however many connections or threads send them, and in
//! whatever order the replies come back. What depends on the target's replies (the hold id a
//! commit names, the receipts that answer reorder alerts, the quantity a count finds) is decided
//! when it is sent, never by the generator.

use crate::complex::{OpExtras, Plan};
use engine::core::Qty;
use serde::Serialize;
use std::sync::Arc;

/// Index of a (SKU, location) level: `sku * locations + location`.
pub type LevelIx = u32;

/// A small, fast, portable random number generator (SplitMix64). Seeded per operation, so that
/// operation `i` needs no state from operations before it.
#[derive(Clone, Debug)]
pub struct OpRng(u64);

impl OpRng {
    /// The generator of operation `index` of a run seeded with `seed`.
    pub fn new(seed: u64, index: u64) -> OpRng {
        let mut r = OpRng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// How the catalogue is built.
#[derive(Clone, Debug, Serialize)]
pub struct CatalogueConfig {
    pub skus: u32,
    pub locations: u16,
    /// Zipf exponent of SKU popularity (0: uniform; 1: classic long tail; higher: hotter head).
    pub zipf_exponent: f64,
    /// Only the this many most popular SKUs are drawn (a flash sale); `None`: all of them.
    pub hot_skus: Option<u32>,
    /// Seeded stock of a level, in units (the mean, with `stock_popular`).
    pub stock: Qty,
    /// A level's stock is proportional to its SKU's popularity (mean `stock`, at least
    /// [`STOCK_MIN`]); otherwise every level gets exactly `stock`, so the hot SKUs run down to
    /// their reorder points and get replenished during a run.
    pub stock_popular: bool,
    /// SKU codes are `PREFIX` followed by 8 digits.
    pub sku_prefix: String,
}

/// The least stock a level is seeded with when stock follows popularity (`stock_popular`).
pub const STOCK_MIN: Qty = 10;
/// Most lines in a multi-item cart.
pub const CART_LINES_MAX: usize = 5;

/// Seeded quantities and settings of one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LevelSeed {
    pub stock: Qty,
    /// A reorder alert is raised when `available` falls to or below it.
    pub reorder_point: Qty,
    /// What a receipt answering a reorder alert brings.
    pub reorder_qty: Qty,
}

/// The SKUs, locations and seeded levels of a run, and the popularity law.
pub struct Catalogue {
    pub config: CatalogueConfig,
    pub skus: Vec<String>,
    pub locations: Vec<String>,
    /// Popularity of SKU ranks `0..drawn` (rank = SKU index) as an alias table (Vose), so that
    /// a draw costs two random numbers and two lookups: rank `i` is kept with probability
    /// `keep[i]`, else it is `alias[i]`.
    keep: Vec<f64>,
    alias: Vec<u32>,
    levels: Vec<LevelSeed>,
}

impl Catalogue {
    pub fn new(config: CatalogueConfig) -> Result<Catalogue, String> {
        if config.skus == 0 || config.locations == 0 {
            return Err("--skus and --locations must be at least 1".into());
        }
        if config.skus as u64 * config.locations as u64 > u32::MAX as u64 / 2 {
            return Err("--skus times --locations must stay below 2^31 levels".into());
        }
        if !(0.0..=10.0).contains(&config.zipf_exponent) {
            return Err(format!("--zipf must be between 0 and 10, not {}", config.zipf_exponent));
        }
        if config.stock < 1 {
            return Err("--stock must be at least 1".into());
        }
        if config.sku_prefix.len() + 8 > engine::core::SKU_BYTES_MAX {
            return Err("--sku-prefix is too long: SKU codes are at most 64 bytes".into());
        }
        let n = config.skus as usize;
        let drawn = config.hot_skus.map_or(n, |h| (h as usize).clamp(1, n));
        let weights: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(config.zipf_exponent)).collect();
        let (keep, alias) = alias_table(&weights[..drawn]);
        let total_all: f64 = weights.iter().sum();
        let m = config.locations as usize;
        let mut levels = Vec::with_capacity(n * m);
        for w in &weights {
            let stock = if config.stock_popular {
                ((config.stock as f64 * n as f64 * w / total_all).round() as Qty).max(STOCK_MIN)
            } else {
                config.stock
            };
            let seed = LevelSeed { stock, reorder_point: stock / 4, reorder_qty: (stock / 2).max(1) };
            levels.extend(std::iter::repeat_n(seed, m));
        }
        let skus = (0..n).map(|i| format!("{}{i:08}", config.sku_prefix)).collect();
        let locations = (0..m).map(|j| if j == 0 { "dc-main".to_string() } else { format!("store-{j:03}") }).collect();
        Ok(Catalogue { config, skus, locations, keep, alias, levels })
    }

    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    pub fn level(&self, sku: u32, location: u16) -> LevelIx {
        sku * self.config.locations as u32 + location as u32
    }

    pub fn sku_of(&self, level: LevelIx) -> u32 {
        level / self.config.locations as u32
    }

    pub fn location_of(&self, level: LevelIx) -> u16 {
        (level % self.config.locations as u32) as u16
    }

    pub fn sku_name(&self, level: LevelIx) -> &str {
        &self.skus[self.sku_of(level) as usize]
    }

    pub fn location_name(&self, level: LevelIx) -> &str {
        &self.locations[self.location_of(level) as usize]
    }

    pub fn seed(&self, level: LevelIx) -> LevelSeed {
        self.levels[level as usize]
    }

    /// Seeds every level of `sku` with at most `max` units (its reorder point and quantity follow).
    pub fn cap_stock(&mut self, sku: u32, max: Qty) {
        let m = self.config.locations as usize;
        for seed in &mut self.levels[sku as usize * m..(sku as usize + 1) * m] {
            if seed.stock > max {
                *seed = LevelSeed { stock: max, reorder_point: max / 4, reorder_qty: (max / 2).max(1) };
            }
        }
    }

    /// The level of a (SKU, location) by name, if it is in the catalogue.
    pub fn find(&self, sku: &str, location: &str) -> Option<LevelIx> {
        let digits = sku.strip_prefix(self.config.sku_prefix.as_str())?;
        if digits.len() != 8 {
            return None;
        }
        let s: u32 = digits.parse().ok()?;
        if s >= self.config.skus {
            return None;
        }
        let l = self.locations.iter().position(|x| x == location)?;
        Some(self.level(s, l as u16))
    }

    /// A SKU index drawn by popularity.
    pub fn draw_sku(&self, rng: &mut OpRng) -> u32 {
        let i = rng.below(self.keep.len() as u64) as usize;
        if rng.unit() < self.keep[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }

    fn draw_level(&self, rng: &mut OpRng) -> LevelIx {
        let sku = self.draw_sku(rng);
        let loc = rng.below(self.config.locations as u64) as u16;
        self.level(sku, loc)
    }
}

/// Vose's alias table of `weights`: (probability of keeping each index, its alias).
fn alias_table(weights: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let n = weights.len();
    let total: f64 = weights.iter().sum();
    let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
    let mut keep = vec![1.0; n];
    let mut alias: Vec<u32> = (0..n as u32).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        keep[s] = scaled[s];
        alias[s] = l as u32;
        scaled[l] += scaled[s] - 1.0;
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    (keep, alias)
}

/// What a checkout does once its reservation is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Then {
    /// Payment went through: the hold becomes sales.
    Commit,
    /// The cart was abandoned or payment failed.
    Release,
}

/// One shop operation, as the generator decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// An online checkout: reserve the cart's lines (all or none), then commit or release.
    Checkout {
        lines: Vec<(LevelIx, Qty)>,
        then: Then,
    },
    /// A point-of-sale sale of goods in the customer's hand (`allow_negative`).
    PosSell {
        level: LevelIx,
        qty: Qty,
    },
    Return {
        level: LevelIx,
        qty: Qty,
        damaged: bool,
    },
    /// A physical count that finds the expected quantity off by `variance`.
    Count {
        level: LevelIx,
        variance: Qty,
    },
    Transfer {
        sku: u32,
        from: u16,
        to: u16,
        qty: Qty,
    },
}

/// Relative weights of the operations (any non-negative numbers; they need not add up to 100).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mix {
    /// One-line checkout that is paid (reserve then commit).
    pub commit: u32,
    /// One-line checkout that is abandoned (reserve then release).
    pub abandon: u32,
    /// Multi-item cart (2 to 5 lines), paid 80% of the time.
    pub multi: u32,
    /// Point-of-sale sale with `allow_negative`.
    pub pos: u32,
    /// Customer return (one in ten damaged).
    pub r#return: u32,
    /// Transfer between two locations of one SKU.
    pub transfer: u32,
    /// Physical count.
    pub count: u32,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix { commit: 55, abandon: 15, multi: 10, pos: 12, r#return: 5, transfer: 2, count: 1 }
    }
}

impl Mix {
    pub const NAMES: [&'static str; 7] = ["commit", "abandon", "multi", "pos", "return", "transfer", "count"];

    fn weights(&self) -> [u32; 7] {
        [self.commit, self.abandon, self.multi, self.pos, self.r#return, self.transfer, self.count]
    }

    /// Parses `commit=55,abandon=15,...`; names left out keep their default weight.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut w = Mix::default().weights();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| format!("--mix: {part:?} is not NAME=WEIGHT"))?;
            let i = Mix::NAMES.iter().position(|n| *n == name.trim()).ok_or_else(|| {
                format!("--mix: unknown operation {:?}; known: {}", name.trim(), Mix::NAMES.join(", "))
            })?;
            w[i] = value.trim().parse().map_err(|_| format!("--mix: {part:?}: the weight must be a whole number"))?;
        }
        if w.iter().all(|&x| x == 0) {
            return Err("--mix: every weight is 0".into());
        }
        let [commit, abandon, multi, pos, r#return, transfer, count] = w;
        Ok(Mix { commit, abandon, multi, pos, r#return, transfer, count })
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Mix::NAMES.iter().zip(self.weights()).map(|(n, w)| format!("{n}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Turns `(seed, index)` into operations.
pub struct Generator {
    pub catalogue: Arc<Catalogue>,
    pub mix: Mix,
    pub seed: u64,
    cumulative: [u32; 7],
    /// Complex inventory (lots, serial numbers, kits, channels), if any option asks for it.
    pub plan: Option<Arc<Plan>>,
}

impl Generator {
    pub fn new(catalogue: Arc<Catalogue>, mix: Mix, seed: u64) -> Generator {
        let mut cumulative = [0; 7];
        let mut acc = 0;
        for (c, w) in cumulative.iter_mut().zip(mix.weights()) {
            acc += w;
            *c = acc;
        }
        Generator { catalogue, mix, seed, cumulative, plan: None }
    }

    /// The same generator with complex inventory: [`Generator::op`] is unchanged, and
    /// [`Generator::extras`] says what the options add to each operation.
    pub fn with_plan(mut self, plan: Option<Arc<Plan>>) -> Generator {
        self.plan = plan;
        self
    }

    /// What the complex-inventory options add to operation `index` (`op` is `self.op(index)`);
    /// `None` without them. Drawn from a random stream of its own: a pure function of
    /// `(seed, index)` that leaves the operation itself as it is without the options.
    pub fn extras(&self, index: u64, op: &Op) -> Option<OpExtras> {
        self.plan.as_ref().map(|p| p.extras(&self.catalogue, index, op))
    }

    /// Operation `index` of the run: always the same for the same seed, catalogue and mix.
    pub fn op(&self, index: u64) -> Op {
        let mut rng = OpRng::new(self.seed, index);
        let total = self.cumulative[6];
        let pick = rng.below(total as u64) as u32;
        let which = self.cumulative.iter().position(|&c| pick < c).expect("pick below the total");
        let cat = &*self.catalogue;
        let small_qty = |rng: &mut OpRng| if rng.below(10) == 0 { rng.range(2, 3) as Qty } else { 1 };
        match which {
            0 | 1 => {
                let level = cat.draw_level(&mut rng);
                let then = if which == 0 { Then::Commit } else { Then::Release };
                Op::Checkout { lines: vec![(level, small_qty(&mut rng))], then }
            }
            2 => {
                let n = rng.range(2, CART_LINES_MAX as u64) as usize;
                let mut lines: Vec<(LevelIx, Qty)> = Vec::with_capacity(n);
                // Distinct levels (the engine refuses a cart naming one level twice); a few draws
                // may collide on a small catalogue, then the cart is shorter.
                for _ in 0..n * 3 {
                    if lines.len() == n {
                        break;
                    }
                    let level = cat.draw_level(&mut rng);
                    if !lines.iter().any(|(l, _)| *l == level) {
                        lines.push((level, small_qty(&mut rng)));
                    }
                }
                let then = if rng.below(5) == 0 { Then::Release } else { Then::Commit };
                Op::Checkout { lines, then }
            }
            3 => Op::PosSell { level: cat.draw_level(&mut rng), qty: small_qty(&mut rng) },
            4 => Op::Return { level: cat.draw_level(&mut rng), qty: 1, damaged: rng.below(10) == 0 },
            5 => {
                let m = cat.config.locations as u64;
                let sku = cat.draw_sku(&mut rng);
                if m < 2 {
                    // Nowhere to transfer to: a return keeps the mix's share of movements.
                    let level = cat.level(sku, 0);
                    return Op::Return { level, qty: 1, damaged: false };
                }
                let from = rng.below(m) as u16;
                let to = ((from as u64 + rng.range(1, m - 1)) % m) as u16;
                Op::Transfer { sku, from, to, qty: rng.range(1, 5) as Qty }
            }
            _ => Op::Count { level: cat.draw_level(&mut rng), variance: rng.range(0, 4) as Qty - 2 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue(hot: Option<u32>) -> Arc<Catalogue> {
        Arc::new(
            Catalogue::new(CatalogueConfig {
                skus: 1000,
                locations: 3,
                zipf_exponent: 1.0,
                hot_skus: hot,
                stock: 100,
                stock_popular: true,
                sku_prefix: "SKU-".into(),
            })
            .unwrap(),
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_operations_and_another_seed_others() {
        let cat = catalogue(None);
        let a = Generator::new(cat.clone(), Mix::default(), 42);
        let b = Generator::new(cat.clone(), Mix::default(), 42);
        let c = Generator::new(cat.clone(), Mix::default(), 43);
        let run_a: Vec<Op> = (0..5000).map(|i| a.op(i)).collect();
        // In another order (as several connections would ask), the same operations.
        let mut run_b: Vec<(u64, Op)> = (0..5000u64).rev().map(|i| (i, b.op(i))).collect();
        run_b.sort_by_key(|(i, _)| *i);
        assert_eq!(run_a, run_b.into_iter().map(|(_, o)| o).collect::<Vec<_>>());
        let run_c: Vec<Op> = (0..5000).map(|i| c.op(i)).collect();
        let same = run_a.iter().zip(&run_c).filter(|(x, y)| x == y).count();
        assert!(same < 2500, "another seed should give another sequence ({same} of 5000 equal)");
        // Pinned values, so that a change to the generator (which changes what old seeds mean)
        // is noticed.
        let pinned: Vec<String> = (0..4).map(|i| format!("{:?}", a.op(i))).collect();
        assert_eq!(
            pinned,
            [
                "Checkout { lines: [(834, 1)], then: Commit }",
                "Checkout { lines: [(1034, 1)], then: Commit }",
                "Checkout { lines: [(63, 1)], then: Commit }",
                "PosSell { level: 54, qty: 1 }",
            ]
        );
    }

    #[test]
    fn popularity_follows_the_zipf_law_and_the_mix_its_weights() {
        let cat = catalogue(None);
        let g = Generator::new(cat.clone(), Mix::default(), 7);
        let mut rng = OpRng::new(1, 2);
        let n = 200_000;
        let hits0 = (0..n).filter(|_| cat.draw_sku(&mut rng) == 0).count() as f64 / n as f64;
        let h: f64 = (1..=1000).map(|k| 1.0 / k as f64).sum();
        assert!((hits0 - 1.0 / h).abs() < 0.01, "rank 0 drawn {hits0}, expected {}", 1.0 / h);
        let pos = (0..n as u64).filter(|&i| matches!(g.op(i), Op::PosSell { .. })).count() as f64 / n as f64;
        assert!((pos - 0.12).abs() < 0.01, "pos share {pos}");
    }

    #[test]
    fn a_flash_sale_draws_only_the_hot_skus_and_carts_name_distinct_levels() {
        let cat = catalogue(Some(10));
        let g = Generator::new(
            cat.clone(),
            Mix::parse("multi=1,commit=0,abandon=0,pos=0,return=0,transfer=0,count=0").unwrap(),
            1,
        );
        for i in 0..2000 {
            let Op::Checkout { lines, .. } = g.op(i) else { panic!("only carts") };
            assert!(lines.iter().all(|(l, _)| cat.sku_of(*l) < 10));
            let mut ls: Vec<_> = lines.iter().map(|(l, _)| *l).collect();
            ls.sort();
            ls.dedup();
            assert_eq!(ls.len(), lines.len());
        }
    }

    #[test]
    fn names_round_trip_and_stock_follows_popularity() {
        let cat = catalogue(None);
        let l = cat.level(123, 2);
        assert_eq!(cat.sku_name(l), "SKU-00000123");
        assert_eq!(cat.find(cat.sku_name(l), cat.location_name(l)), Some(l));
        assert_eq!(cat.find("SKU-0000012", "dc-main"), None);
        assert!(cat.seed(cat.level(0, 0)).stock > cat.seed(cat.level(999, 0)).stock);
        assert!(cat.seed(cat.level(999, 0)).stock >= STOCK_MIN);
        assert!(Mix::parse("bogus=1").unwrap_err().contains("unknown operation"));
        assert_eq!(Mix::parse("").unwrap(), Mix::default());
    }
}
