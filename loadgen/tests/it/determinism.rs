//! Each complex-inventory option is deterministic for a seed, and leaves the standard operations
//! as they are: operation `i` is the same with or without it (the options' extras come from a
//! random stream of their own).

use loadgen::complex::{ComplexConfig, OpExtras, Plan, KIT_CHECKOUT_SHARE};
use loadgen::verify::book::UnitsBook;
use loadgen::workload::{Catalogue, CatalogueConfig, Generator, Mix, Op};
use std::sync::Arc;

const OPS: u64 = 5000;
const DAY_MS: u64 = 86_400_000;

fn catalogue() -> Catalogue {
    Catalogue::new(CatalogueConfig {
        skus: 1000,
        locations: 3,
        zipf_exponent: 1.0,
        hot_skus: None,
        stock: 100,
        stock_popular: false,
        sku_prefix: "SKU-".into(),
    })
    .unwrap()
}

fn plan(config: &ComplexConfig, seed: u64, now_ms: u64) -> Arc<Plan> {
    Arc::new(Plan::new(&catalogue(), config.clone(), seed, now_ms).unwrap())
}

/// Operations and their extras `0..OPS` of a run with `config` and `seed`.
fn run(config: &ComplexConfig, seed: u64, now_ms: u64) -> Vec<(Op, OpExtras)> {
    let g = Generator::new(Arc::new(catalogue()), Mix::default(), seed).with_plan(Some(plan(config, seed, now_ms)));
    (0..OPS)
        .map(|i| {
            let op = g.op(i);
            let x = g.extras(i, &op).expect("a plan gives extras");
            (op, x)
        })
        .collect()
}

/// The same seed gives the same operations and extras (in any order of asking, and whatever the
/// day of the run), another seed other extras, and the operations are those of the standard
/// workload.
fn check_deterministic(config: ComplexConfig, differs: impl Fn(&OpExtras) -> bool) -> Vec<(Op, OpExtras)> {
    let a = run(&config, 42, 1_700_000_000_000);
    let b = run(&config, 42, 1_700_000_000_000 + 40 * DAY_MS);
    assert_eq!(a, b, "the same seed gives the same operations and extras");
    let g = Generator::new(Arc::new(catalogue()), Mix::default(), 42).with_plan(Some(plan(&config, 42, 0)));
    for i in (0..OPS).rev().step_by(7) {
        let op = g.op(i);
        assert_eq!((op.clone(), g.extras(i, &op).unwrap()), a[i as usize], "operation {i} asked out of order");
    }
    let plain = Generator::new(Arc::new(catalogue()), Mix::default(), 42);
    for (i, (op, _)) in a.iter().enumerate() {
        assert_eq!(*op, plain.op(i as u64), "operation {i} is the standard one");
    }
    let c = run(&config, 43, 1_700_000_000_000);
    let same = a.iter().zip(&c).filter(|(x, y)| differs(&x.1) && x.1 == y.1).count();
    let with = a.iter().filter(|x| differs(&x.1)).count();
    assert!(with > 0, "the option adds something to some operations");
    assert!(same * 2 < with, "another seed gives other extras ({same} of {with} equal)");
    a
}

#[test]
fn lots_are_deterministic_and_name_seeded_lots() {
    let config = ComplexConfig { lots: 4, ..ComplexConfig::default() };
    let a = check_deterministic(config.clone(), |x| !x.lots.is_empty());
    // Every count of a level with lots names one; other operations name one a tenth of the time.
    for (op, x) in &a {
        if matches!(op, Op::Count { .. }) {
            assert!(x.lot(0).is_some_and(|k| k < 4), "{op:?} {x:?}");
        }
        assert!(x.channel.is_none() && x.kit.is_none());
    }
    let named = a.iter().filter(|(op, x)| matches!(op, Op::PosSell { .. }) && x.lot(0).is_some()).count() as f64;
    let pos = a.iter().filter(|(op, _)| matches!(op, Op::PosSell { .. })).count() as f64;
    assert!((named / pos - 0.1).abs() < 0.05, "{named} of {pos} point-of-sale sales name a lot");
    // Lot codes are their expiry dates: the same code always means the same expiry.
    let p = plan(&config, 42, 1_700_000_000_000);
    let (code, expires) = p.seeded_lot(0);
    assert_eq!(code, "L20231214", "2023-11-14 plus 30 days");
    assert_eq!(expires % DAY_MS, 0);
    assert!(p.seeded_lot(1).1 > expires && p.receipt_lot(7).1 > p.seeded_lot(3).1);
    assert_eq!(p.lot_split(10), vec![(0, 2), (1, 2), (2, 2), (3, 4)]);
}

#[test]
fn serial_tracking_is_deterministic_and_so_are_the_serials_one_client_names() {
    let config = ComplexConfig { serial_share: 0.1, ..ComplexConfig::default() };
    // The extras do not change (serials are chosen when a step is built), nor the operations.
    let a = run(&config, 42, 1_700_000_000_000);
    let plain = Generator::new(Arc::new(catalogue()), Mix::default(), 42);
    assert!(a.iter().enumerate().all(|(i, (op, x))| *op == plain.op(i as u64) && x.lots.is_empty()));
    let tracked = |seed| (0..1000).filter(|&s| plan(&config, seed, 0).is_serial(s)).collect::<Vec<u32>>();
    let (t42, again) = (tracked(42), tracked(42));
    assert_eq!(t42, again);
    assert!((60..=140).contains(&t42.len()), "about a tenth of 1000 SKUs: {}", t42.len());
    assert_ne!(t42, tracked(7));
    // Serial-tracked levels hold at most 32 units.
    let mut cat = catalogue();
    plan(&config, 42, 0).cap_serial_stock(&mut cat);
    assert_eq!(cat.seed(cat.level(t42[0], 0)).stock, 32);
    // One client taking serials in the same order gets the same ones; never one twice while
    // in flight.
    let takes = || {
        let p = plan(&config, 42, 1_700_000_000_000);
        let cat = Arc::new(catalogue());
        let book = UnitsBook::new(p, cat.clone());
        let level = cat.level(t42[0], 1);
        book.seed_serials(level, 10);
        let first = book.take_in_stock(level, 3);
        let second = book.take_in_stock(level, 3);
        assert!(first.iter().all(|s| !second.contains(s)));
        (first, second, book.take_in_stock(level, 5))
    };
    let (x, y) = (takes(), takes());
    assert_eq!(x, y);
    assert!(x.2[..4].iter().all(|s| s.starts_with('S')) && x.2[4].starts_with('G'), "only 10 in stock: {x:?}");
}

#[test]
fn kits_are_deterministic_and_a_share_of_checkouts_buys_them() {
    let config = ComplexConfig { kits: 5, serial_share: 0.2, ..ComplexConfig::default() };
    let a = check_deterministic(config.clone(), |x| x.kit.is_some());
    let p = plan(&config, 42, 0);
    assert_eq!(p.kits, plan(&config, 42, 99).kits);
    assert_ne!(p.kits, plan(&config, 43, 0).kits);
    assert_eq!(p.kits.len(), 5);
    for k in &p.kits {
        assert!((2..=3).contains(&k.components.len()), "{k:?}");
        assert!(k.components.iter().all(|(s, q)| !p.is_serial(*s) && (1..=2).contains(q)), "{k:?}");
        let mut skus: Vec<u32> = k.components.iter().map(|c| c.0).collect();
        skus.dedup();
        assert_eq!(skus.len(), k.components.len());
        assert!(k.sku.starts_with("SKU-KIT"));
    }
    let one_line = a.iter().filter(|(op, _)| matches!(op, Op::Checkout { lines, .. } if lines.len() == 1));
    let (n, kits) = one_line.fold((0, 0), |(n, k), (_, x)| (n + 1, k + x.kit.is_some() as u32));
    let share = kits as f64 / n as f64;
    assert!((share - KIT_CHECKOUT_SHARE).abs() < 0.03, "kit share {share}");
}

#[test]
fn channels_are_deterministic_split_evenly_and_allocate_the_hot_skus() {
    let config = ComplexConfig {
        channels: vec!["web".into(), "amazon".into()],
        allocation_share: 0.2,
        allocated_skus: 10,
        ..ComplexConfig::default()
    };
    let a = check_deterministic(config.clone(), |x| x.channel == Some(1));
    let checkouts: Vec<_> = a.iter().filter(|(op, _)| matches!(op, Op::Checkout { .. })).collect();
    assert!(checkouts.iter().all(|(_, x)| x.channel.is_some()));
    let amazon = checkouts.iter().filter(|(_, x)| x.channel == Some(1)).count() as f64 / checkouts.len() as f64;
    assert!((amazon - 0.5).abs() < 0.05, "amazon's share {amazon}");
    assert!(a.iter().filter(|(op, _)| !matches!(op, Op::Checkout { .. })).all(|(_, x)| x.channel.is_none()));
    let p = plan(&config, 42, 0);
    assert_eq!(p.allocations().len(), 30, "10 SKUs x 3 locations");
    assert!(p.allocations().values().all(|a| a == &vec![(1, 20)]), "20% of 100 units for amazon");
}
