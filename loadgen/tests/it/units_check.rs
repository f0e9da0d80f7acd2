//! The complex-inventory verification fails on a crafted wrong state: a lot with the wrong
//! quantity, a serial number in the wrong place, an allocation breached (at the end, and in the
//! replay of the change feed); and passes on the right one.

use engine::core::{Detail, LevelDetail, LevelView, LotView, Qty, SerialStatus, SerialView};
use loadgen::complex::{ComplexConfig, Plan};
use loadgen::step::{Step, StepBody, StepExtra, StepOutcome};
use loadgen::verify::book::UnitsBook;
use loadgen::verify::units::{
    check_units, planned_allocations, replay_allocations, AllocEvent, UnitsSnapshot, UnitsVerification,
};
use loadgen::verify::Ledger;
use loadgen::workload::{Catalogue, CatalogueConfig, LevelIx, Then};
use std::collections::BTreeMap;
use std::sync::Arc;

const NOW_MS: u64 = 1_700_000_000_000;

/// 3 SKUs x 2 locations, 10 units each: levels 0 (T-00000000, dc-main) to 5.
fn setup(config: ComplexConfig) -> (Arc<Catalogue>, Arc<Plan>, Arc<UnitsBook>, Ledger) {
    let mut cat = Catalogue::new(CatalogueConfig {
        skus: 3,
        locations: 2,
        zipf_exponent: 1.0,
        hot_skus: None,
        stock: 10,
        stock_popular: false,
        sku_prefix: "T-".into(),
    })
    .unwrap();
    let plan = Plan::new(&cat, config, 1, NOW_MS).unwrap();
    plan.cap_serial_stock(&mut cat);
    let (cat, plan) = (Arc::new(cat), Arc::new(plan));
    let book = Arc::new(UnitsBook::new(plan.clone(), cat.clone()));
    let ledger = Ledger::with_units(cat.level_count(), Some(book.clone()));
    (cat, plan, book, ledger)
}

fn view(cat: &Catalogue, l: LevelIx, on_hand: Qty, reserved: Qty) -> LevelView {
    LevelView {
        sku: cat.sku_name(l).into(),
        location: cat.location_name(l).into(),
        on_hand,
        reserved,
        unsellable: 0,
        incoming: 0,
        safety_stock: 0,
        available: on_hand - reserved,
    }
}

fn lot(cat: &Catalogue, l: LevelIx, (code, expires_at): (String, u64), on_hand: Qty, reserved: Qty) -> LotView {
    LotView {
        sku: cat.sku_name(l).into(),
        location: cat.location_name(l).into(),
        lot: code,
        expires_at,
        on_hand,
        reserved,
        expired: false,
    }
}

fn check(
    cat: &Catalogue,
    plan: &Plan,
    book: &UnitsBook,
    ledger: &Ledger,
    snap: &UnitsSnapshot,
    replay: Option<loadgen::verify::units::AllocReplay>,
) -> UnitsVerification {
    check_units(plan, cat, ledger, book, snap, Some(&planned_allocations(plan)), replay)
}

#[test]
fn a_wrong_lot_quantity_is_caught_and_named() {
    let (cat, plan, book, ledger) = setup(ComplexConfig { lots: 2, ..ComplexConfig::default() });
    let detail = |second: Qty, loose: Qty| LevelDetail {
        level: view(&cat, 0, 10, 1),
        lots: vec![lot(&cat, 0, plan.seeded_lot(0), 5, 1), lot(&cat, 0, plan.seeded_lot(1), second, 0)],
        allocations: Vec::new(),
        loose_on_hand: loose,
    };
    let mut snap = UnitsSnapshot { detail_levels_wanted: 1, ..UnitsSnapshot::default() };
    snap.details.insert(0, Some(detail(5, 0)));
    let good = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(good.passed && good.levels_checked == 1, "{good:?}");

    // One unit missing from the second lot: the lots no longer add up to on_hand.
    snap.details.insert(0, Some(detail(4, 0)));
    let bad = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(!bad.passed);
    assert_eq!(bad.lot_mismatches, 1);
    assert!(
        bad.examples[0].contains("(T-00000000, dc-main)")
            && bad.examples[0].contains("lot L20231214 5, lot L20240113 4")
            && bad.examples[0].contains("on_hand is 10"),
        "{:?}",
        bad.examples
    );
    assert!(bad.summary().starts_with("FAILED"));

    // A lot below zero (made up for by loose units) is caught too, and so is a seeded lot whose
    // expiry is not the one its code says.
    snap.details.insert(0, Some(detail(-1, 6)));
    let bad = check(&cat, &plan, &book, &ledger, &snap, None);
    assert_eq!(bad.lot_mismatches, 1, "{bad:?}");
    assert!(bad.examples[0].contains("lot L20240113: on_hand -1"), "{:?}", bad.examples);
    let mut d = detail(5, 0);
    d.lots[1].expires_at += 1;
    snap.details.insert(0, Some(d));
    assert!(check(&cat, &plan, &book, &ledger, &snap, None).examples[0].contains("expires at"));
}

#[test]
fn a_serial_in_the_wrong_place_or_state_is_caught_and_named() {
    let (cat, plan, book, ledger) = setup(ComplexConfig { serial_share: 1.0, ..ComplexConfig::default() });
    assert!(plan.is_serial(0) && plan.is_serial(1));
    let serials = book.seed_serials(0, 3);
    assert_eq!(cat.seed(0).stock, 10, "10 units are under the cap of 32");
    // A point-of-sale sale of the first one, accepted; a transfer of the second to store-001.
    let sell = book.take_in_stock(0, 1);
    let mut step = Step::new(1, StepBody::SellPos { level: 0, qty: 1 });
    step.extra = Some(Box::new(StepExtra { units: vec![engine::core::Units::serials(&sell)], ..Default::default() }));
    ledger.record(&step, &StepOutcome::of(Ok(Detail::None)));
    let moved = book.take_in_stock(0, 1);
    let mut step = Step::new(2, StepBody::Transfer { from: 0, to: 1, qty: 1 });
    step.extra = Some(Box::new(StepExtra { units: vec![engine::core::Units::serials(&moved)], ..Default::default() }));
    ledger.record(&step, &StepOutcome::of(Ok(Detail::None)));
    assert_eq!((sell[0].as_str(), moved[0].as_str()), (serials[0].as_str(), serials[1].as_str()));

    let engine_view = |code: &str, location: &str, status| SerialView {
        sku: "T-00000000".into(),
        serial: code.into(),
        location: location.into(),
        status,
        history: Vec::new(),
    };
    let truth = [
        engine_view(&serials[0], "dc-main", SerialStatus::Sold),
        engine_view(&serials[1], "store-001", SerialStatus::InStock),
        engine_view(&serials[2], "dc-main", SerialStatus::InStock),
    ];
    let snapshot = |views: &[SerialView]| {
        let beliefs = book.beliefs();
        assert_eq!(beliefs.len(), 3);
        UnitsSnapshot {
            serials: beliefs.iter().zip(views).map(|((k, b), v)| (*k, *b, Some(v.clone()))).collect(),
            serials_certain: 3,
            ..UnitsSnapshot::default()
        }
    };
    let good = check(&cat, &plan, &book, &ledger, &snapshot(&truth), None);
    assert!(good.passed && good.serials_checked == 3 && good.serials_coverage == "all", "{good:?}");

    // The transferred serial still at dc-main: caught, with the serial and both places named.
    let mut wrong = truth.clone();
    wrong[1].location = "dc-main".into();
    let bad = check(&cat, &plan, &book, &ledger, &snapshot(&wrong), None);
    assert!(!bad.passed && bad.serial_mismatches == 1, "{bad:?}");
    assert!(
        bad.examples[0].contains(&serials[1])
            && bad.examples[0].contains("T-00000000")
            && bad.examples[0].contains("store-001"),
        "{:?}",
        bad.examples
    );
    // The sold one back in stock, and one the engine never heard of.
    let mut wrong = truth.clone();
    wrong[0].status = SerialStatus::InStock;
    assert_eq!(check(&cat, &plan, &book, &ledger, &snapshot(&wrong), None).serial_mismatches, 1);
    let mut snap = snapshot(&truth);
    snap.serials[2].2 = None;
    let bad = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(bad.examples[0].contains("unknown to the engine"), "{:?}", bad.examples);
}

#[test]
fn an_allocation_breach_is_caught_at_the_end_and_in_the_feed() {
    let (cat, plan, book, ledger) = setup(ComplexConfig {
        channels: vec!["web".into(), "amazon".into()],
        allocation_share: 0.2,
        allocated_skus: 1,
        ..ComplexConfig::default()
    });
    assert_eq!(planned_allocations(&plan)[&0], vec![("amazon".to_string(), 2)]);
    // amazon reserves 1 at level 0 and pays.
    let extra = StepExtra { channel: Some(1), ..Default::default() };
    let mut reserve = Step::new(1, StepBody::Reserve { lines: vec![(0, 1)], then: Then::Commit, expires_at_ms: 0 });
    reserve.extra = Some(Box::new(extra.clone()));
    ledger.record(&reserve, &StepOutcome::of(Ok(Detail::Hold(7))));
    let mut commit = Step::new(2, StepBody::Commit { hold: 7, lines: vec![(0, 1)] });
    commit.extra = Some(Box::new(extra));
    ledger.record(&commit, &StepOutcome::of(Ok(Detail::None)));
    assert_eq!(book.taken(0, 1), 1);

    let detail = |l: LevelIx, on_hand: Qty, amazon: Qty| LevelDetail {
        level: view(&cat, l, on_hand, 0),
        lots: Vec::new(),
        allocations: vec![("amazon".into(), amazon)],
        loose_on_hand: on_hand,
    };
    let mut snap = UnitsSnapshot { detail_levels_wanted: 2, ..UnitsSnapshot::default() };
    snap.details.insert(0, Some(detail(0, 9, 1)));
    snap.details.insert(1, Some(detail(1, 10, 2)));
    snap.available_for = vec![(0, "web".into(), Some(8)), (0, "amazon".into(), Some(9))];
    let good = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(good.passed && good.allocation_levels_checked == 2, "{good:?}");

    // amazon's allocation at store-001 used up although amazon sold nothing there: another channel
    // took ring-fenced units.
    snap.details.insert(1, Some(detail(1, 8, 0)));
    let bad = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(!bad.passed && bad.allocation_violations == 1, "{bad:?}");
    assert!(bad.examples[0].contains("(T-00000000, store-001)") && bad.examples[0].contains("another channel"));
    // An allocation below zero, and an available_for that ignores the ring fence.
    snap.details.insert(1, Some(detail(1, 10, -1)));
    assert!(check(&cat, &plan, &book, &ledger, &snap, None).examples[0].contains("outside 0..=2"));
    snap.details.insert(1, Some(detail(1, 10, 2)));
    snap.available_for[0].2 = Some(9);
    let bad = check(&cat, &plan, &book, &ledger, &snap, None);
    assert!(bad.examples[0].contains("available_for(web) is Some(9)"), "{:?}", bad.examples);
    snap.available_for[0].2 = Some(8);

    // The change feed: amazon takes 1 (from its allocation of 2), then web takes 8 of the 9 left
    // (1 is still amazon's, so 8 is all web may take). Then web takes 1 more with 1 available,
    // all of it amazon's: a breach.
    let take = |seq, channel: &str, qty, hold, available_after| AllocEvent::Take {
        seq,
        level: 0,
        channel: channel.into(),
        qty,
        hold: Some(hold),
        available_after,
    };
    let events = vec![
        take(10, "amazon", 1, 7, 9),
        AllocEvent::HoldClosed { hold: 7, sold: true },
        take(11, "web", 8, 8, 1),
        AllocEvent::HoldClosed { hold: 8, sold: true },
    ];
    let fair = replay_allocations(&cat, &planned_allocations(&plan), &events, true);
    assert_eq!((fair.takes, fair.violations), (2, 0), "{fair:?}");
    assert!(check(&cat, &plan, &book, &ledger, &snap, Some(fair)).passed);
    let mut breach = events.clone();
    breach.push(take(12, "web", 1, 9, 0));
    let r = replay_allocations(&cat, &planned_allocations(&plan), &breach, true);
    assert_eq!(r.violations, 1, "{r:?}");
    assert!(
        r.examples[0].contains("seq 12: web took 1 at (T-00000000, dc-main)") && r.examples[0].contains("amazon 1")
    );
    // The example recalls what came before at that level, oldest first.
    assert!(
        r.examples[0].ends_with(
            "before it there: seq 10 amazon took 1 (hold 7, 1 of its allocation, 9 available after); hold 7 committed; \
             seq 11 web took 8 (hold 8, 0 of its allocation, 1 available after); hold 8 committed"
        ),
        "{:?}",
        r.examples
    );
    assert!(!check(&cat, &plan, &book, &ledger, &snap, Some(r)).passed);
    // A release gives the allocation back: amazon holds 2, releases, and web may then take only
    // the unfenced units.
    let released =
        vec![take(20, "amazon", 2, 30, 8), AllocEvent::HoldClosed { hold: 30, sold: false }, take(21, "web", 9, 31, 1)];
    let r = replay_allocations(&cat, &planned_allocations(&plan), &released, true);
    assert_eq!(r.violations, 1, "web took 9 of 10 with 2 fenced: {r:?}");
    // And the replay's end must match the engine's allocations.
    let ended: BTreeMap<LevelIx, Vec<(String, Qty)>> = r.remaining.clone();
    assert_eq!(ended[&0], vec![("amazon".to_string(), 2)]);
    let ok_events = vec![take(20, "amazon", 2, 30, 8), AllocEvent::HoldClosed { hold: 30, sold: false }];
    let r = replay_allocations(&cat, &planned_allocations(&plan), &ok_events, true);
    let bad = check(&cat, &plan, &book, &ledger, &snap, Some(r));
    assert!(bad.examples.iter().any(|e| e.contains("replay of the change feed ends at 2")), "{bad:?}");
}
