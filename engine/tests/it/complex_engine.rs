//! Complex inventory through the whole engine (threads, log, checkpoints, recovery): kits spread
//! over shards, a split commit cut by a crash, and lots, serial numbers and allocations after a
//! crash. The single-shard rules are covered by `model` and `complex_core`.

use crate::common::*;
use engine::core::*;
use engine::runtime::Engine;
use engine::wal::record::decode_movement_payload as decode_record;
use engine::wal::segment::{list_segments, RecordIter};
use std::path::Path;

fn set_sku(key: &str, sku: &str, settings: SkuSettings) -> Movement {
    mv(Some(key), MovementKind::SetSkuSettings { sku: sku.into(), settings })
}

fn kit(components: &[(&str, Qty)]) -> SkuSettings {
    SkuSettings {
        components: components.iter().map(|&(sku, qty)| Component { sku: sku.into(), qty }).collect(),
        ..SkuSettings::default()
    }
}

fn with_units(mut m: Movement, u: Units) -> Movement {
    match &mut m.kind {
        MovementKind::Receive { units, .. }
        | MovementKind::Sell { units, .. }
        | MovementKind::Return { units, .. }
        | MovementKind::Adjust { units, .. }
        | MovementKind::Count { units, .. }
        | MovementKind::Transfer { units, .. } => *units = u,
        _ => panic!("no units on {m:?}"),
    }
    m
}

/// A sell at `unit_price` cents per unit (per kit, for a kit).
fn priced(mut m: Movement, price: i64) -> Movement {
    match &mut m.kind {
        MovementKind::Sell { unit_price, .. } => *unit_price = Some(price),
        _ => panic!("not a sell: {m:?}"),
    }
    m
}

fn ok(e: &Engine, m: Movement) -> Detail {
    let r = e.execute_one(m.clone());
    r.outcome.unwrap_or_else(|reason| panic!("{m:?} was refused: {reason}"))
}

fn refused(e: &Engine, m: Movement) -> Reason {
    e.execute_one(m.clone()).outcome.expect_err(&format!("{m:?} was accepted"))
}

/// Two component SKUs on different shards, and a kit of 2 of the first and 1 of the second.
fn gift_box(e: &Engine) -> (String, String) {
    let (a, b) = skus_on_two_shards(2);
    ok(e, set_sku("def-gift", "GIFT", kit(&[(&a, 2), (&b, 1)])));
    (a, b)
}

#[test]
fn a_kit_sale_moves_its_components_on_every_shard_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let (a, b) = gift_box(&e);
    e.execute(vec![receive(&a, "dc", 10), receive(&b, "dc", 3)]);
    assert_eq!(e.level("GIFT", "dc").map(|l| (l.on_hand, l.available)), Some((3, 3)));

    // Sold at 1999 cents per kit: the price goes onto the components' kit marks.
    let order_1 = priced(sell(Some("order-1"), "GIFT", "dc", 2), 1999);
    assert_eq!(ok(&e, order_1.clone()), Detail::None);
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((6, 0, 6)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 0, 1)));
    assert_eq!(e.level("GIFT", "dc").map(|l| (l.on_hand, l.available)), Some((1, 1)));

    // Two more kits need 2 of `b`: there is 1. Nothing moves, on either shard.
    assert_eq!(refused(&e, sell(Some("order-2"), "GIFT", "dc", 2)), Reason::InsufficientStock);
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((6, 0, 6)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 0, 1)));
    assert!(e.holds().is_empty(), "{:?}", e.holds());

    // A retry of the first sale changes nothing and answers the same.
    let first = e.execute_one(order_1);
    assert_eq!(first.outcome, Ok(Detail::None));
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((6, 0, 6)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 0, 1)));

    // The log tells what happened: a reservation of the components marked with the kit, then its commit.
    e.halt();
    let records = log_records(dir.path());
    let kit_lines: Vec<(String, Qty, Option<i64>, Option<KitRef>)> = records
        .iter()
        .filter_map(|m| match &m.kind {
            MovementKind::Reserve { lines, .. } => Some(lines.clone()),
            _ => None,
        })
        .flatten()
        .map(|l| (l.sku, l.qty, l.unit_price, l.kit))
        .collect();
    let gift = Some(KitRef { sku: "GIFT".into(), qty: 2, unit_price: Some(1999) });
    assert!(kit_lines.contains(&(a.clone(), 4, None, gift.clone())), "{kit_lines:?}");
    assert!(kit_lines.contains(&(b.clone(), 2, None, gift)), "{kit_lines:?}");
}

#[test]
fn kits_in_reservations_returns_and_point_of_sale() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let (a, b) = gift_box(&e);
    e.execute(vec![receive(&a, "dc", 10), receive(&b, "dc", 10)]);

    // A cart with a kit and one more `a`: one line for `a` (2 + 1), one for `b`.
    let hold = match ok(&e, reserve(Some("cart"), &[("GIFT", "dc", 1), (&a, "dc", 1)], T0 + 60_000)) {
        Detail::Hold(h) => h,
        d => panic!("{d:?}"),
    };
    let lines = &e.holds()[0].2;
    assert_eq!(lines, &vec![(a.clone(), "dc".to_string(), 3), (b.clone(), "dc".to_string(), 1)]);
    ok(&e, mv(Some("pay"), MovementKind::Commit { hold }));
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((7, 0, 7)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((9, 0, 9)));

    // A kit comes back: every component does.
    let back = MovementKind::Return {
        sku: "GIFT".into(),
        location: "dc".into(),
        qty: 1,
        condition: ReturnCondition::Restock,
        unit_price: None,
        units: Units::ANY,
    };
    ok(&e, mv(Some("rma-1"), back));
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((9, 0, 9)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((10, 0, 10)));

    // At the till, goods in hand: every component is sold whatever the stock.
    let mut pos = sell(Some("till-1"), "GIFT", "dc", 11);
    if let MovementKind::Sell { allow_negative, .. } = &mut pos.kind {
        *allow_negative = true;
    }
    ok(&e, pos.clone());
    ok(&e, pos); // a retry applies once
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((-13, 0, -13)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((-1, 0, -1)));
}

#[test]
fn kits_of_kits_stocked_kits_and_serial_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let (a, b) = gift_box(&e);
    // No kit of kits, either way round.
    assert_eq!(refused(&e, set_sku("k2", "HAMPER", kit(&[("GIFT", 1), ("WINE", 1)]))), Reason::InvalidKit);
    assert_eq!(refused(&e, set_sku("k3", &a, kit(&[("WINE", 1)]))), Reason::InvalidKit);
    // A component cannot become serial-tracked, nor a serial-tracked SKU a component.
    let serial = SkuSettings { serial_tracked: true, ..SkuSettings::default() };
    assert_eq!(refused(&e, set_sku("k4", &b, serial.clone())), Reason::InvalidKit);
    ok(&e, set_sku("k5", "PHONE", serial));
    assert_eq!(refused(&e, set_sku("k6", "BUNDLE", kit(&[("PHONE", 1)]))), Reason::InvalidKit);
    // A kit has no stock of its own; a SKU with stock cannot become a kit.
    assert_eq!(refused(&e, receive("GIFT", "dc", 1)), Reason::KitNotStocked);
    ok(&e, receive("SOAP", "dc", 1));
    assert_eq!(refused(&e, set_sku("k7", "SOAP", kit(&[("WINE", 1)]))), Reason::InvalidKit);
    // A refused definition leaves nothing behind: "HAMPER" is still no kit.
    assert_eq!(e.kit_components("HAMPER"), None);
    assert_eq!(e.kit_components("GIFT").map(|c| c.len()), Some(2));
    // Definitions survive a restart.
    e.halt();
    let (e, _) = open(dir.path(), 2);
    assert_eq!(e.kit_components("GIFT"), Some(kit(&[(&a, 2), (&b, 1)]).components));
    assert_eq!(refused(&e, receive("GIFT", "dc", 1)), Reason::KitNotStocked);
}

/// Every movement in the log, in order.
fn log_records(dir: &Path) -> Vec<Movement> {
    let mut out = Vec::new();
    for (_, path) in list_segments(&dir.join("wal")).unwrap() {
        let data = std::fs::read(&path).unwrap();
        for r in RecordIter::new(&data) {
            let r = r.unwrap();
            if let Ok(rec) = decode_record(r.payload) {
                out.push(rec.movement);
            }
        }
    }
    out
}

#[test]
fn a_split_commit_cut_by_a_crash_is_completed_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = skus_on_two_shards(2);
    {
        let (e, _) = open(dir.path(), 2);
        e.execute(vec![receive(&a, "dc", 5), receive(&b, "dc", 5)]);
        let hold = match ok(&e, reserve(Some("cart"), &[(&a, "dc", 2), (&b, "dc", 3)], T0 + 60_000)) {
            Detail::Hold(h) => h,
            d => panic!("{d:?}"),
        };
        ok(&e, mv(Some("pay"), MovementKind::Commit { hold }));
        e.halt();
    }
    // The crash: the second part of the commit never reached the disk.
    let (_, seg) = list_segments(&dir.path().join("wal")).unwrap().pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    let last = RecordIter::new(&data).map(|r| r.unwrap()).last().unwrap();
    assert!(matches!(decode_record(last.payload).unwrap().movement.kind, MovementKind::Commit { .. }));
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(last.offset as u64).unwrap();

    // Recovery finds one part committed, the other open, and commits the rest even though the
    // clock is past the hold's expiry by now.
    let (mut c, clock) = config(dir.path(), 2);
    clock.store(T0 + 3_600_000, std::sync::atomic::Ordering::Relaxed);
    c.expire_interval = std::time::Duration::from_millis(5);
    let e = Engine::open(c).unwrap();
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((3, 0, 3)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((2, 0, 2)));
    assert!(e.holds().is_empty());
    e.shutdown().unwrap();
    let completions =
        log_records(dir.path()).iter().filter(|m| matches!(m.kind, MovementKind::CompleteCommit { .. })).count();
    assert_eq!(completions, 1);
    // And once done, a restart has nothing more to complete.
    let (e, _) = open(dir.path(), 2);
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((2, 0, 2)));
    e.halt();
    let completions =
        log_records(dir.path()).iter().filter(|m| matches!(m.kind, MovementKind::CompleteCommit { .. })).count();
    assert_eq!(completions, 1);
}

/// Everything a reader can see of lots, serials, allocations and SKU settings.
fn complex_state(e: &Engine, skus: &[&str], serials: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for sku in skus {
        out += &format!("{:?}\n", e.sku_settings(sku));
        for loc in ["dc", "store"] {
            out += &format!("{:?}\n", e.level_detail(sku, loc));
            out += &format!(
                "{:?} {:?}\n",
                e.available_for_channel(sku, loc, "web"),
                e.available_for_channel(sku, loc, "amazon")
            );
        }
    }
    for (sku, serial) in serials {
        out += &format!("{:?}\n", e.serial(sku, serial));
    }
    out += &format!("{:?}\n", e.holds());
    out
}

#[test]
fn lots_serials_and_allocations_survive_a_crash_with_or_without_a_checkpoint() {
    for checkpoint_midway in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let skus = ["MILK", "PHONE", "TEE"];
        let serials = [("PHONE", "IMEI-1"), ("PHONE", "IMEI-2"), ("PHONE", "IMEI-3")];
        let day = 86_400_000;
        let before = {
            let (e, _) = open(dir.path(), 2);
            let warn = SkuSettings { expiry_warning_days: Some(3), ..SkuSettings::default() };
            ok(&e, set_sku("s1", "MILK", warn));
            ok(&e, with_units(receive("MILK", "dc", 10), Units::new_lot("L2", T0 + 9 * day)));
            ok(&e, with_units(receive("MILK", "dc", 4), Units::new_lot("L1", T0 + 2 * day)));
            ok(&e, set_sku("s2", "PHONE", SkuSettings { serial_tracked: true, ..SkuSettings::default() }));
            ok(&e, with_units(receive("PHONE", "dc", 3), Units::serials(&["IMEI-1", "IMEI-2", "IMEI-3"])));
            ok(&e, receive("TEE", "dc", 30));
            let alloc =
                MovementKind::Allocate { sku: "TEE".into(), location: "dc".into(), channel: "amazon".into(), qty: 20 };
            ok(&e, mv(Some("a1"), alloc));
            if checkpoint_midway {
                e.checkpoint().unwrap();
            }
            // FEFO: the 4 of L1, then 1 of L2.
            ok(&e, sell(Some("o1"), "MILK", "dc", 5));
            ok(&e, with_units(sell(Some("o2"), "PHONE", "dc", 1), Units::serials(&["IMEI-2"])));
            let transfer = MovementKind::Transfer {
                sku: "PHONE".into(),
                from: "dc".into(),
                to: "store".into(),
                qty: 1,
                units: Units::serials(&["IMEI-3"]),
            };
            ok(&e, mv(Some("t1"), transfer));
            // web may take only what amazon has not ring-fenced: 10.
            assert_eq!(refused(&e, sell(Some("o3"), "TEE", "dc", 11)), Reason::InsufficientStock);
            ok(&e, sell(Some("o4"), "TEE", "dc", 10));
            let mut amazon = reserve(Some("o5"), &[("TEE", "dc", 5), ("MILK", "dc", 2)], T0 + 60_000);
            amazon.channel = "amazon".into();
            ok(&e, amazon);
            let state = complex_state(&e, &skus, &serials);
            e.halt(); // a crash: no checkpoint at the end
            state
        };
        let (e, _) = open(dir.path(), 2);
        assert_eq!(complex_state(&e, &skus, &serials), before, "checkpoint midway: {checkpoint_midway}");
        // Spot checks of what the state says.
        let milk = e.level_detail("MILK", "dc").unwrap();
        let lots: Vec<(String, Qty, Qty)> = milk.lots.iter().map(|l| (l.lot.clone(), l.on_hand, l.reserved)).collect();
        assert_eq!(lots, vec![("L2".to_string(), 9, 2)]);
        assert_eq!(e.available_for_channel("TEE", "dc", "amazon"), Some(15));
        assert_eq!(e.available_for_channel("TEE", "dc", "web"), Some(0));
        assert_eq!(milk.level.on_hand, 9);
        let phone = e.serial("PHONE", "IMEI-3").unwrap();
        assert_eq!((phone.location.as_str(), phone.status), ("store", SerialStatus::InStock));
        assert_eq!(e.serial("PHONE", "IMEI-2").unwrap().status, SerialStatus::Sold);
        e.halt();
    }
}

#[test]
fn a_lot_expires_on_time_and_raises_its_alerts_on_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, clock) = config(dir.path(), 1);
    c.expire_interval = std::time::Duration::from_millis(5);
    let e = Engine::open(c).unwrap();
    let day = 86_400_000;
    ok(&e, set_sku("s1", "MILK", SkuSettings { expiry_warning_days: Some(2), ..SkuSettings::default() }));
    ok(&e, with_units(receive("MILK", "dc", 6), Units::new_lot("L1", T0 + 5 * day)));
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what} did not happen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    clock.store(T0 + 3 * day + 2_000, std::sync::atomic::Ordering::Relaxed);
    let alerts = |e: &Engine| -> Vec<(AlertKind, Qty)> {
        let durable = e.stats().durable_seq;
        let mut feed = e.feed(1).unwrap();
        let mut out = Vec::new();
        while feed.next_seq() <= durable {
            for ev in feed.next_batch(1000, std::time::Duration::from_secs(5)).unwrap() {
                out.extend(ev.record.effects.alerts.iter().filter(|a| a.lot.is_some()).map(|a| (a.kind, a.available)));
            }
        }
        out
    };
    wait_for("the expiry warning", &|| alerts(&e) == vec![(AlertKind::LotExpiring, 6)]);
    assert_eq!(oh_res_av(&e, "MILK", "dc"), Some((6, 0, 6)));
    clock.store(T0 + 5 * day + 2_000, std::sync::atomic::Ordering::Relaxed);
    wait_for("the expiry", &|| alerts(&e).len() == 2);
    assert_eq!(alerts(&e), vec![(AlertKind::LotExpiring, 6), (AlertKind::LotExpired, 6)]);
    let l = e.level("MILK", "dc").unwrap();
    assert_eq!((l.on_hand, l.unsellable, l.available), (6, 6, 0));
    assert_eq!(refused(&e, sell(Some("o1"), "MILK", "dc", 1)), Reason::InsufficientStock);
}

#[test]
fn allocations_fence_off_other_channels_sales_not_transfers_or_adjustments() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 1);
    ok(&e, receive("TEE", "dc", 10));
    let alloc = MovementKind::Allocate { sku: "TEE".into(), location: "dc".into(), channel: "amazon".into(), qty: 8 };
    ok(&e, mv(Some("a1"), alloc));
    assert_eq!(refused(&e, sell(Some("web-1"), "TEE", "dc", 3)), Reason::InsufficientStock);
    // Moving goods is not a sale: the 9 may leave, ring-fenced or not.
    let transfer =
        MovementKind::Transfer { sku: "TEE".into(), from: "dc".into(), to: "store".into(), qty: 9, units: Units::ANY };
    ok(&e, mv(Some("t1"), transfer));
    assert_eq!(e.available_for_channel("TEE", "dc", "web"), Some(0));
    assert_eq!(e.available_for_channel("TEE", "dc", "amazon"), Some(1));
    let shrink = MovementKind::Adjust {
        sku: "TEE".into(),
        location: "dc".into(),
        delta: -1,
        reason: AdjustReason::Shrinkage,
        allow_negative: false,
        units: Units::ANY,
    };
    ok(&e, mv(Some("s1"), shrink));
    assert_eq!(oh_res_av(&e, "TEE", "dc"), Some((0, 0, 0)));
    assert_eq!(e.level_detail("TEE", "dc").unwrap().allocations, vec![("amazon".to_string(), 8)]);
}

#[test]
fn expired_stock_moved_to_a_disposal_area_stays_expired_and_unsellable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, clock) = config(dir.path(), 1);
    c.expire_interval = std::time::Duration::from_millis(5);
    let e = Engine::open(c).unwrap();
    ok(&e, with_units(receive("MILK", "dc", 4), Units::new_lot("L1", T0 + 1_000)));
    clock.store(T0 + 10_000, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.level("MILK", "dc").unwrap().unsellable != 4 {
        assert!(std::time::Instant::now() < deadline, "the lot did not expire");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let to_disposal = MovementKind::Transfer {
        sku: "MILK".into(),
        from: "dc".into(),
        to: "disposal".into(),
        qty: 4,
        units: Units::lot("L1"),
    };
    let r = e.execute_one(mv(Some("t1"), to_disposal));
    assert_eq!(r.outcome, Ok(Detail::None));
    let l = e.level("MILK", "disposal").unwrap();
    assert_eq!((l.on_hand, l.unsellable, l.available), (4, 4, 0));
    assert_eq!(e.level("MILK", "dc").map(|l| (l.on_hand, l.unsellable)), Some((0, 0)));
    // The change feed's lot views say so too.
    e.halt();
    let (e, _) = open(dir.path(), 1);
    let mut feed = e.feed(r.seq.unwrap()).unwrap();
    let event = feed.next_batch(1, std::time::Duration::from_secs(5)).unwrap().remove(0);
    let lots: Vec<(String, Qty, bool)> =
        event.record.effects.lots.iter().map(|l| (l.location.clone(), l.on_hand, l.expired)).collect();
    assert_eq!(lots, vec![("dc".to_string(), 0, true), ("disposal".to_string(), 4, true)]);
}
