//! Complex inventory over the wire (QUIC on loopback, the client library): lots and FEFO, serial
//! numbers and their history, channel allocations, kits with derived levels, lot alerts on the
//! change feed, and the roles of the new movements and reads.

use crate::harness::*;
use engine::client::{Client, ClientError};
use engine::core::*;
use engine::protocol::{FeedEvent, FeedFilter, MovementOutcome, Role};
use engine::runtime::Clock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The manual clock's start: 2023-11-14T22:13:20Z.
pub const T0: Millis = 1_700_000_000_000;

/// A server whose engine runs on a manual clock starting at [`T0`].
pub fn start_at_t0(dir: &std::path::Path) -> (InProcess, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(T0));
    let mut config = test_config(dir);
    config.engine.clock = Clock::Manual(clock.clone());
    config.engine.expire_interval = Duration::from_millis(20);
    (InProcess::start_with(config), clock)
}

fn ok(o: &MovementOutcome) -> (Seq, Detail) {
    let detail = o.outcome.unwrap_or_else(|r| panic!("rejected: {r}"));
    (o.seq.expect("an accepted movement has a sequence number"), detail)
}

fn rejected(o: &MovementOutcome) -> Reason {
    o.outcome.expect_err("rejected")
}

fn key() -> Option<String> {
    Some(engine::client::new_key())
}

async fn submit(c: &Client, kind: MovementKind) -> MovementOutcome {
    submit_from(c, "web", kind).await
}

async fn submit_from(c: &Client, channel: &str, kind: MovementKind) -> MovementOutcome {
    let m = Movement { key: key(), channel: channel.into(), reference: None, occurred_at: None, kind };
    c.submit_one(&m).await.unwrap()
}

fn receive_units(sku: &str, loc: &str, qty: Qty, units: Units) -> MovementKind {
    MovementKind::Receive { sku: sku.into(), location: loc.into(), qty, unit_cost: None, units }
}

fn sell_units(sku: &str, loc: &str, qty: Qty, units: Units) -> MovementKind {
    MovementKind::Sell {
        sku: sku.into(),
        location: loc.into(),
        qty,
        unit_price: None,
        hold: None,
        allow_negative: false,
        units,
    }
}

/// A sell at `price` cents per unit (per kit, for a kit).
fn priced(mut sell: MovementKind, price: i64) -> MovementKind {
    if let MovementKind::Sell { unit_price, .. } = &mut sell {
        *unit_price = Some(price);
    }
    sell
}

fn return_units(sku: &str, loc: &str, qty: Qty, units: Units) -> MovementKind {
    MovementKind::Return {
        sku: sku.into(),
        location: loc.into(),
        qty,
        condition: ReturnCondition::Restock,
        unit_price: None,
        units,
    }
}

fn reserve_units(sku: &str, loc: &str, qty: Qty, units: Units, expires_at: Millis) -> MovementKind {
    let line = Line { sku: sku.into(), location: loc.into(), qty, unit_price: None, units, kit: None };
    MovementKind::Reserve { hold: 0, lines: vec![line], expires_at }
}

/// A reservation's lines: serial number S3 of PHONE at 900, and one MILK from lot L2, at dc.
fn serial_and_lot_lines() -> Vec<Line> {
    vec![
        Line {
            sku: "PHONE".into(),
            location: "dc".into(),
            qty: 1,
            unit_price: Some(900),
            units: Units::serials(&["S3"]),
            kit: None,
        },
        Line {
            sku: "MILK".into(),
            location: "dc".into(),
            qty: 1,
            unit_price: None,
            units: Units::lot("L2"),
            kit: None,
        },
    ]
}

fn lot_view(sku: &str, lot: &str, expires_at: Millis, on_hand: Qty, reserved: Qty, expired: bool) -> LotView {
    LotView { sku: sku.into(), location: "dc".into(), lot: lot.into(), expires_at, on_hand, reserved, expired }
}

/// (on_hand, reserved, unsellable, available) of a level.
fn quantities(l: &LevelView) -> (Qty, Qty, Qty, Qty) {
    (l.on_hand, l.reserved, l.unsellable, l.available)
}

/// The events of the feed from `from` until one with sequence number `until` has arrived.
async fn feed_until(c: &Client, from: Seq, filter: FeedFilter, until: impl Fn(&FeedEvent) -> bool) -> Vec<FeedEvent> {
    let mut sub = c.subscribe(from, filter).await.unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), sub.next())
            .await
            .expect("the feed goes on")
            .unwrap();
        let done = batch.events.iter().any(&until);
        events.extend(batch.events);
        if done {
            return events;
        }
    }
}

const DAY: Millis = DAY_MILLIS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lots_are_sold_first_expiry_first_and_listed_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let c = server.admin().await;

    // Received out of expiry order: L2 expires after L1.
    let (first, _) = ok(&submit(&c, receive_units("A", "dc", 10, Units::new_lot("L2", T0 + 20 * DAY))).await);
    ok(&submit(&c, receive_units("A", "dc", 5, Units::new_lot("L1", T0 + 10 * DAY))).await);
    ok(&submit(&c, receive_units("A", "dc", 3, Units::ANY)).await);
    // FEFO: all 5 of L1 (which then has nothing left and is dropped), then 2 of L2.
    let (sale, _) = ok(&submit(&c, sell_units("A", "dc", 7, Units::ANY)).await);
    // A lot received later but expiring before L2 is listed before it.
    ok(&submit(&c, receive_units("A", "dc", 4, Units::new_lot("L3", T0 + 15 * DAY))).await);

    let d = c.level_detail("A", "dc").await.unwrap().expect("the level exists");
    assert_eq!(quantities(&d.level), (15, 0, 0, 15));
    assert_eq!(
        d.lots,
        vec![lot_view("A", "L3", T0 + 15 * DAY, 4, 0, false), lot_view("A", "L2", T0 + 20 * DAY, 8, 0, false)]
    );
    assert_eq!(d.loose_on_hand, 3);
    assert!(d.allocations.is_empty());

    // The sale's record says which lots it took, after the sale.
    let events = feed_until(&c, first, FeedFilter::All, |e| e.seq == sale).await;
    let sale = events.iter().find(|e| e.seq == sale).unwrap();
    assert_eq!(
        sale.effects.lots,
        vec![lot_view("A", "L1", T0 + 10 * DAY, 0, 0, false), lot_view("A", "L2", T0 + 20 * DAY, 8, 0, false)]
    );

    // Naming a lot takes from it only.
    ok(&submit(&c, sell_units("A", "dc", 8, Units::lot("L2"))).await);
    assert_eq!(rejected(&submit(&c, sell_units("A", "dc", 1, Units::lot("L2"))).await), Reason::UnknownLot);
    assert_eq!(rejected(&submit(&c, sell_units("A", "dc", 5, Units::lot("L3"))).await), Reason::InsufficientStock);
    // What the lot rules refuse changes nothing.
    let count = MovementKind::Count { sku: "A".into(), location: "dc".into(), counted: 9, units: Units::ANY };
    assert_eq!(rejected(&submit(&c, count).await), Reason::LotRequired);
    assert_eq!(rejected(&submit(&c, receive_units("A", "dc", 1, Units::lot("NEW"))).await), Reason::InvalidLot);
    let other_expiry = Units::new_lot("L3", T0 + 16 * DAY);
    assert_eq!(rejected(&submit(&c, receive_units("A", "dc", 1, other_expiry)).await), Reason::InvalidLot);
    let past = Units::new_lot("OLD", T0 - DAY);
    assert_eq!(rejected(&submit(&c, receive_units("A", "dc", 1, past)).await), Reason::LotExpired);
    let count = MovementKind::Count { sku: "A".into(), location: "dc".into(), counted: 6, units: Units::lot("L3") };
    assert_eq!(ok(&submit(&c, count).await).1, Detail::Variance(2));

    let d = c.level_detail("A", "dc").await.unwrap().unwrap();
    assert_eq!(quantities(&d.level), (9, 0, 0, 9));
    assert_eq!(d.lots, vec![lot_view("A", "L3", T0 + 15 * DAY, 6, 0, false)]);
    assert_eq!(d.loose_on_hand, 3);
    assert_eq!(c.level_detail("A", "nowhere").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_numbers_are_received_sold_returned_and_their_history_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let c = server.admin().await;
    let tracked = SkuSettings { serial_tracked: true, ..SkuSettings::default() };
    ok(&c.set_sku_settings("P", tracked.clone()).await.unwrap());
    assert_eq!(c.sku_settings("P").await.unwrap(), tracked);

    let (received, _) = ok(&submit(&c, receive_units("P", "dc", 3, Units::serials(&["S1", "S2", "S3"]))).await);
    assert_eq!(
        rejected(&submit(&c, receive_units("P", "dc", 1, Units::serials(&["S1"]))).await),
        Reason::SerialInStock
    );
    assert_eq!(
        rejected(&submit(&c, receive_units("P", "dc", 2, Units::serials(&["S4"]))).await),
        Reason::InvalidSerials
    );
    assert_eq!(rejected(&submit(&c, receive_units("P", "dc", 1, Units::ANY)).await), Reason::InvalidSerials);
    let (sold, _) = ok(&submit(&c, sell_units("P", "dc", 1, Units::serials(&["S2"]))).await);
    assert_eq!(
        rejected(&submit(&c, sell_units("P", "dc", 1, Units::serials(&["S2"]))).await),
        Reason::SerialNotInStock
    );
    assert_eq!(rejected(&submit(&c, return_units("P", "dc", 1, Units::serials(&["S3"]))).await), Reason::SerialInStock);
    assert_eq!(rejected(&submit(&c, return_units("P", "dc", 1, Units::serials(&["S9"]))).await), Reason::SerialNotSold);
    let (returned, _) = ok(&submit(&c, return_units("P", "dc", 1, Units::serials(&["S2"]))).await);
    let transfer = MovementKind::Transfer {
        sku: "P".into(),
        from: "dc".into(),
        to: "store".into(),
        qty: 1,
        units: Units::serials(&["S1"]),
    };
    let (moved, _) = ok(&submit(&c, transfer).await);
    let (_, held) = ok(&submit(&c, reserve_units("P", "dc", 1, Units::serials(&["S3"]), T0 + 60_000)).await);
    let Detail::Hold(hold) = held else { panic!("a hold: {held:?}") };

    let event =
        |seq, what: &str, location: &str| SerialEvent { seq, at: T0, what: what.into(), location: location.into() };
    let s2 = c.serial("P", "S2").await.unwrap().expect("S2 is known");
    assert_eq!(
        s2,
        SerialView {
            sku: "P".into(),
            serial: "S2".into(),
            location: "dc".into(),
            status: SerialStatus::InStock,
            history: vec![event(received, "receive", "dc"), event(sold, "sell", "dc"), event(returned, "return", "dc")],
        }
    );
    let s1 = c.serial("P", "S1").await.unwrap().unwrap();
    assert_eq!((s1.location.as_str(), s1.status), ("store", SerialStatus::InStock));
    assert_eq!(s1.history.last().map(|e| (e.seq, e.what.as_str())), Some((moved, "transfer")));
    assert_eq!(c.serial("P", "S3").await.unwrap().unwrap().status, SerialStatus::Reserved(hold));
    ok(&submit(&c, MovementKind::Commit { hold }).await);
    assert_eq!(c.serial("P", "S3").await.unwrap().unwrap().status, SerialStatus::Sold);
    assert_eq!(c.serial("P", "S9").await.unwrap(), None);
    assert_eq!(c.serial("NOPE", "S1").await.unwrap(), None);

    assert_eq!(quantities(&c.level("P", "dc").await.unwrap().unwrap()), (1, 0, 0, 1));
    assert_eq!(quantities(&c.level("P", "store").await.unwrap().unwrap()), (1, 0, 0, 1));
    // Tracking cannot be switched off while the SKU has stock.
    assert_eq!(rejected(&c.set_sku_settings("P", SkuSettings::default()).await.unwrap()), Reason::InvalidSettings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_ring_fence_stock_between_two_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let c = server.admin().await;
    ok(&submit(&c, receive_units("B", "dc", 10, Units::ANY)).await);
    ok(&c.allocate("B", "dc", "web", 6).await.unwrap());
    ok(&c.allocate("B", "dc", "pos", 3).await.unwrap());
    let available = |channel: &'static str| {
        let c = c.clone();
        async move { c.available_for("B", "dc", channel).await.unwrap() }
    };
    // available_for(c) = min(available, a_c + max(0, available - sum(a))): 1 unit is in no allocation.
    assert_eq!((available("web").await, available("pos").await, available("erp").await), (Some(7), Some(4), Some(1)));

    assert_eq!(
        rejected(&submit_from(&c, "pos", sell_units("B", "dc", 5, Units::ANY)).await),
        Reason::InsufficientStock
    );
    assert_eq!(
        rejected(&submit_from(&c, "erp", sell_units("B", "dc", 2, Units::ANY)).await),
        Reason::InsufficientStock
    );
    ok(&submit_from(&c, "pos", sell_units("B", "dc", 4, Units::ANY)).await);
    // pos used its 3 and the 1 shared unit: web keeps its 6, nobody else gets any.
    assert_eq!((available("web").await, available("pos").await, available("erp").await), (Some(6), Some(0), Some(0)));
    assert_eq!(
        rejected(&submit_from(&c, "erp", sell_units("B", "dc", 1, Units::ANY)).await),
        Reason::InsufficientStock
    );
    let d = c.level_detail("B", "dc").await.unwrap().unwrap();
    assert_eq!(quantities(&d.level), (6, 0, 0, 6));
    assert_eq!(d.allocations, vec![("web".to_string(), 6), ("pos".to_string(), 0)]);

    // A hold from web takes from its allocation and gives it back when released.
    let (_, held) = ok(&submit_from(&c, "web", reserve_units("B", "dc", 2, Units::ANY, T0 + 60_000)).await);
    let Detail::Hold(hold) = held else { panic!("a hold") };
    assert_eq!(available("web").await, Some(4));
    assert_eq!(c.level_detail("B", "dc").await.unwrap().unwrap().allocations[0], ("web".to_string(), 4));
    ok(&submit(&c, MovementKind::Release { hold }).await);
    assert_eq!(available("web").await, Some(6));

    // 0 removes an allocation: the units are everyone's again.
    ok(&c.allocate("B", "dc", "web", 0).await.unwrap());
    assert_eq!((available("web").await, available("erp").await), (Some(6), Some(6)));
    assert_eq!(c.level_detail("B", "dc").await.unwrap().unwrap().allocations, vec![("pos".to_string(), 0)]);
    assert_eq!(rejected(&c.allocate("B", "dc", "web", -1).await.unwrap()), Reason::InvalidAllocation);
    assert_eq!(c.available_for("B", "nowhere", "web").await.unwrap(), None);
}

/// Two SKUs on different shards of a 2-shard engine.
fn two_shards() -> (String, String) {
    let a = "SOAP".to_string();
    let b = (0..).map(|i| format!("CREAM-{i}")).find(|s| shard_of(s, 2) != shard_of(&a, 2)).unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_sells_its_components_all_or_none_and_its_level_is_derived() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let c = server.admin().await;
    let (soap, cream) = two_shards();
    let (first, _) = ok(&submit(&c, receive_units(&soap, "dc", 10, Units::ANY)).await);
    ok(&submit(&c, receive_units(&cream, "dc", 3, Units::ANY)).await);
    ok(&submit(&c, receive_units(&soap, "store", 1, Units::ANY)).await);
    let kit = SkuSettings {
        serial_tracked: false,
        expiry_warning_days: None,
        components: vec![Component { sku: soap.clone(), qty: 2 }, Component { sku: cream.clone(), qty: 1 }],
    };
    ok(&c.set_sku_settings("GIFT", kit.clone()).await.unwrap());
    assert_eq!(c.sku_settings("GIFT").await.unwrap(), kit);

    // Derived: min(10 / 2, 3 / 1) = 3 kits at dc; none at store (no cream there, half a kit of soap).
    let gift = c.level("GIFT", "dc").await.unwrap().expect("a derived level");
    assert_eq!((gift.sku.as_str(), gift.location.as_str()), ("GIFT", "dc"));
    assert_eq!((gift.on_hand, gift.reserved, gift.unsellable, gift.incoming, gift.available), (3, 0, 0, 0, 3));
    let all = c.sku_levels("GIFT").await.unwrap();
    assert_eq!(
        all.iter().map(|l| (l.location.as_str(), l.on_hand, l.available)).collect::<Vec<_>>(),
        [("dc", 3, 3), ("store", 0, 0)]
    );
    assert_eq!(c.level("GIFT", "nowhere").await.unwrap(), None);
    assert_eq!(c.available_for("GIFT", "dc", "web").await.unwrap(), Some(3));

    let (sale, detail) = ok(&submit(&c, priced(sell_units("GIFT", "dc", 2, Units::ANY), 1999)).await);
    assert_eq!(detail, Detail::None);
    assert_eq!(quantities(&c.level(&soap, "dc").await.unwrap().unwrap()), (6, 0, 0, 6));
    assert_eq!(quantities(&c.level(&cream, "dc").await.unwrap().unwrap()), (1, 0, 0, 1));
    assert_eq!(quantities(&c.level("GIFT", "dc").await.unwrap().unwrap()), (1, 0, 0, 1));

    // Cream is short for 2 more: nothing is sold, soap included, and no hold is left.
    assert_eq!(rejected(&submit(&c, sell_units("GIFT", "dc", 2, Units::ANY)).await), Reason::InsufficientStock);
    assert_eq!(quantities(&c.level(&soap, "dc").await.unwrap().unwrap()), (6, 0, 0, 6));
    assert_eq!(quantities(&c.level(&cream, "dc").await.unwrap().unwrap()), (1, 0, 0, 1));
    // Kits have no stock, lots or allocations of their own.
    assert_eq!(rejected(&submit(&c, receive_units("GIFT", "dc", 1, Units::ANY)).await), Reason::KitNotStocked);
    assert_eq!(rejected(&c.allocate("GIFT", "dc", "web", 1).await.unwrap()), Reason::KitNotStocked);
    assert_eq!(c.level_detail("GIFT", "dc").await.unwrap(), None);

    // On the feed the sale is a reservation of both components, marked with the kit and its price
    // per kit (the component lines have none), then its commit.
    let events = feed_until(&c, first, FeedFilter::All, |e| e.seq == sale).await;
    let reserved: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.seq <= sale && matches!(&e.movement.kind, MovementKind::Reserve { .. }) && e.outcome.is_ok())
        .collect();
    assert_eq!(reserved.len(), 2, "one reservation record per shard");
    let mut lines: Vec<(String, Qty, Option<i64>, Option<KitRef>)> = reserved
        .iter()
        .flat_map(|e| match &e.movement.kind {
            MovementKind::Reserve { lines, .. } => {
                lines.iter().map(|l| (l.sku.clone(), l.qty, l.unit_price, l.kit.clone())).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mark = Some(KitRef { sku: "GIFT".into(), qty: 2, unit_price: Some(1999) });
    let mut expected = vec![(soap.clone(), 4, None, mark.clone()), (cream.clone(), 2, None, mark)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(lines, expected);
    let commits: Vec<&FeedEvent> =
        events.iter().filter(|e| e.seq <= sale && matches!(e.movement.kind, MovementKind::Commit { .. })).collect();
    assert_eq!(commits.len(), 2, "one commit record per shard");
    assert!(commits.iter().all(|e| e.outcome == Ok(Detail::None)));
    assert!(commits.iter().all(|commit| reserved.iter().all(|r| r.seq < commit.seq)));
    assert_eq!(commits.iter().map(|e| e.seq).max(), Some(sale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lot_warnings_and_expiries_reach_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, clock) = start_at_t0(dir.path());
    let c = server.admin().await;
    let settings = SkuSettings { expiry_warning_days: Some(1), ..SkuSettings::default() };
    let (first, _) = ok(&c.set_sku_settings("MILK", settings).await.unwrap());
    ok(&submit(&c, receive_units("MILK", "dc", 5, Units::new_lot("L7", T0 + 2 * DAY))).await);
    ok(&submit(&c, receive_units("MILK", "dc", 2, Units::ANY)).await);

    // The engine's expiry record runs `hold_sweep_grace` (1 s) behind the clock.
    clock.store(T0 + DAY + 1_000, Ordering::Relaxed);
    let is_alert = |kind: AlertKind| move |e: &FeedEvent| e.effects.alerts.iter().any(|a| a.kind == kind);
    let events = feed_until(&c, first, FeedFilter::AlertsOnly, is_alert(AlertKind::LotExpiring)).await;
    let alert = Alert {
        kind: AlertKind::LotExpiring,
        sku: "MILK".into(),
        location: "dc".into(),
        available: 5,
        reorder_point: None,
        lot: Some(("L7".into(), T0 + 2 * DAY)),
    };
    let warned = events.iter().find(|e| is_alert(AlertKind::LotExpiring)(e)).unwrap();
    assert_eq!(warned.effects.alerts, vec![alert.clone()]);
    assert!(matches!(warned.movement.kind, MovementKind::Expire { .. }));
    assert_eq!(quantities(&c.level("MILK", "dc").await.unwrap().unwrap()), (7, 0, 0, 7));

    clock.store(T0 + 2 * DAY + 1_000, Ordering::Relaxed);
    let events = feed_until(&c, warned.seq + 1, FeedFilter::AlertsOnly, is_alert(AlertKind::LotExpired)).await;
    let expired = events.iter().find(|e| is_alert(AlertKind::LotExpired)(e)).unwrap();
    assert_eq!(expired.effects.alerts, vec![Alert { kind: AlertKind::LotExpired, ..alert }]);
    assert_eq!(expired.effects.lots, vec![lot_view("MILK", "L7", T0 + 2 * DAY, 5, 0, true)]);
    assert_eq!(quantities(&c.level("MILK", "dc").await.unwrap().unwrap()), (7, 0, 5, 2));
    let d = c.level_detail("MILK", "dc").await.unwrap().unwrap();
    assert_eq!(d.lots, vec![lot_view("MILK", "L7", T0 + 2 * DAY, 5, 0, true)]);
    // FEFO skips the expired lot; the loose units remain for sale.
    ok(&submit(&c, sell_units("MILK", "dc", 2, Units::ANY)).await);
    assert_eq!(rejected(&submit(&c, sell_units("MILK", "dc", 1, Units::lot("L7"))).await), Reason::LotExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_roles_allocate_or_change_sku_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let admin = server.admin().await;
    ok(&submit(&admin, receive_units("R", "dc", 10, Units::ANY)).await);
    let mut clients = std::collections::HashMap::new();
    for role in [Role::Checkout, Role::Warehouse, Role::Reader] {
        let (_, secret) = admin.create_token(&format!("{role}-1"), role).await.unwrap();
        clients.insert(role, Client::connect(server.config(&secret)).await.unwrap());
    }
    let forbidden = |r: Result<MovementOutcome, ClientError>| {
        let e = r.expect_err("forbidden");
        assert_eq!(e.code(), Some("forbidden"), "{e}");
        e.to_string()
    };
    let (checkout, warehouse, reader) =
        (&clients[&Role::Checkout], &clients[&Role::Warehouse], &clients[&Role::Reader]);
    let message = forbidden(checkout.allocate("R", "dc", "web", 2).await);
    assert_eq!(message, "forbidden: role checkout may not submit allocate");
    forbidden(checkout.set_sku_settings("R", SkuSettings::default()).await);
    forbidden(warehouse.set_sku_settings("R", SkuSettings::default()).await);
    forbidden(reader.allocate("R", "dc", "web", 2).await);
    assert_eq!(admin.available_for("R", "dc", "erp").await.unwrap(), Some(10), "nothing was allocated");
    let (_, detail) = ok(&warehouse.allocate("R", "dc", "web", 2).await.unwrap());
    assert_eq!(detail, Detail::None);
    assert_eq!(admin.available_for("R", "dc", "erp").await.unwrap(), Some(8));

    // The engine's own movements: nobody, not even an admin.
    let expire = Movement {
        key: None,
        channel: "web".into(),
        reference: None,
        occurred_at: None,
        kind: MovementKind::Expire { holds_expired_by: u64::MAX, keys_seen_before: 0, keys_max: 0 },
    };
    let message = forbidden(admin.submit_one(&expire).await);
    assert_eq!(message, "forbidden: expire is the engine's own movement: no role may submit it");
    let complete = Movement { kind: MovementKind::CompleteCommit { hold: 65_537 }, ..expire };
    let message = forbidden(admin.submit_one(&complete).await);
    assert_eq!(message, "forbidden: complete_commit is the engine's own movement: no role may submit it");

    // Every role reads.
    for c in [checkout, warehouse, reader] {
        let d = c.level_detail("R", "dc").await.unwrap().unwrap();
        assert_eq!(d.allocations, vec![("web".to_string(), 2)]);
        assert_eq!(c.available_for("R", "dc", "web").await.unwrap(), Some(10));
        assert_eq!(c.sku_settings("R").await.unwrap(), SkuSettings::default());
        assert_eq!(c.serial("R", "S1").await.unwrap(), None);
    }
}

// ---- the independent Python tools of docs/tools against the engine ----

fn python3_missing() -> bool {
    let missing = std::process::Command::new("python3").arg("--version").output().map_or(true, |o| !o.status.success());
    if missing {
        eprintln!("skipped: python3 is not installed");
    }
    missing
}

fn tool(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tools").join(name)
}

fn adjust_reason(r: AdjustReason) -> &'static str {
    match r {
        AdjustReason::Correction => "correction",
        AdjustReason::Shrinkage => "shrinkage",
        AdjustReason::Damaged => "damaged",
        AdjustReason::Found => "found",
        AdjustReason::Promotion => "promotion",
    }
}

fn units_json(u: &Units) -> serde_json::Value {
    serde_json::json!({"lot": u.lot, "lot_expires_at": u.lot_expires_at, "serials": u.serials})
}

fn kit_json(k: &Option<KitRef>) -> serde_json::Value {
    k.as_ref().map_or(
        serde_json::Value::Null,
        |k| serde_json::json!({"sku": k.sku, "qty": k.qty, "unit_price": k.unit_price}),
    )
}

fn sku_settings_json(s: &SkuSettings) -> serde_json::Value {
    let components: Vec<_> = s.components.iter().map(|c| serde_json::json!({"sku": c.sku, "qty": c.qty})).collect();
    serde_json::json!({"serial_tracked": s.serial_tracked, "expiry_warning_days": s.expiry_warning_days,
        "components": components})
}

/// A movement record as `read_wal.py` prints it (docs/wal.md section 12), from the engine's own
/// decoder.
fn record_json(rec: &engine::wal::record::MovementRecord) -> serde_json::Value {
    use serde_json::json;
    let m = &rec.movement;
    let mut mv = json!({"key": m.key, "channel": m.channel, "reference": m.reference, "occurred_at": m.occurred_at});
    let kind = match &m.kind {
        MovementKind::Receive { sku, location, qty, unit_cost, units } => json!({"kind": "receive", "sku": sku,
            "location": location, "qty": qty, "unit_cost": unit_cost, "units": units_json(units)}),
        MovementKind::Expect { sku, location, qty } => {
            json!({"kind": "expect", "sku": sku, "location": location, "qty": qty})
        }
        MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units } => json!({"kind": "sell",
            "sku": sku, "location": location, "qty": qty, "unit_price": unit_price, "hold": hold,
            "allow_negative": allow_negative, "units": units_json(units)}),
        MovementKind::Return { sku, location, qty, condition, unit_price, units } => json!({"kind": "return",
            "sku": sku, "location": location, "qty": qty,
            "condition": if *condition == ReturnCondition::Damaged { "damaged" } else { "restock" },
            "unit_price": unit_price, "units": units_json(units)}),
        MovementKind::Adjust { sku, location, delta, reason, allow_negative, units } => json!({"kind": "adjust",
            "sku": sku, "location": location, "delta": delta, "reason": adjust_reason(*reason),
            "allow_negative": allow_negative, "units": units_json(units)}),
        MovementKind::Count { sku, location, counted, units } => json!({"kind": "count", "sku": sku,
            "location": location, "counted": counted, "units": units_json(units)}),
        MovementKind::Transfer { sku, from, to, qty, units } => json!({"kind": "transfer", "sku": sku, "from": from,
            "to": to, "qty": qty, "units": units_json(units)}),
        MovementKind::Reserve { hold, lines, expires_at } => {
            let lines: Vec<_> = lines
                .iter()
                .map(|l| {
                    json!({"sku": l.sku, "location": l.location, "qty": l.qty, "unit_price": l.unit_price,
                    "units": units_json(&l.units), "kit": kit_json(&l.kit)})
                })
                .collect();
            json!({"kind": "reserve", "hold": hold, "lines": lines, "expires_at": expires_at})
        }
        MovementKind::Commit { hold } => json!({"kind": "commit", "hold": hold}),
        MovementKind::Release { hold } => json!({"kind": "release", "hold": hold}),
        MovementKind::SetSettings { sku, location, settings } => json!({"kind": "set_settings", "sku": sku,
            "location": location, "settings": settings}),
        MovementKind::Expire { holds_expired_by, keys_seen_before, keys_max } => json!({"kind": "expire",
            "holds_expired_by": holds_expired_by, "keys_seen_before": keys_seen_before, "keys_max": keys_max}),
        MovementKind::Allocate { sku, location, channel, qty } => json!({"kind": "allocate", "sku": sku,
            "location": location, "channel": channel, "qty": qty}),
        MovementKind::SetSkuSettings { sku, settings } => {
            json!({"kind": "set_sku_settings", "sku": sku, "settings": sku_settings_json(settings)})
        }
        MovementKind::CompleteCommit { hold } => json!({"kind": "complete_commit", "hold": hold}),
    };
    for (k, v) in kind.as_object().unwrap() {
        mv[k] = v.clone();
    }
    if let Some(hold) = mv["hold"].as_u64() {
        let shards: Vec<u32> = (0..HOLD_SHARD_BITS).filter(|s| hold >> s & 1 == 1).collect();
        mv["hold_parts"] = json!({"id": hold, "counter": hold >> HOLD_SHARD_BITS, "shards": shards});
    }
    let outcome = match rec.outcome {
        Ok(Detail::None) => json!({"ok": "none"}),
        Ok(Detail::Hold(h)) => json!({"ok": {"hold": h}}),
        Ok(Detail::Variance(v)) => json!({"ok": {"variance": v}}),
        Err(r) => json!({"err": r.code()}),
    };
    let alert_kind = |k: AlertKind| match k {
        AlertKind::Reorder => "reorder",
        AlertKind::OutOfStock => "out_of_stock",
        AlertKind::LotExpiring => "lot_expiring",
        AlertKind::LotExpired => "lot_expired",
    };
    let alerts: Vec<_> = rec
        .effects
        .alerts
        .iter()
        .map(|a| {
            json!({"kind": alert_kind(a.kind), "sku": a.sku, "location": a.location, "available": a.available,
            "reorder_point": a.reorder_point,
            "lot": a.lot.as_ref().map(|(lot, at)| json!({"lot": lot, "expires_at": at}))})
        })
        .collect();
    json!({
        "type": "movement",
        "recorded_at": rec.recorded_at,
        "body_hash": format!("{:016x}", rec.body_hash),
        "movement": mv,
        "outcome": outcome,
        "effects": {"levels": rec.effects.levels, "alerts": alerts, "holds_closed": rec.effects.holds_closed,
            "lots": rec.effects.lots},
    })
}

/// What a checkpoint should hold for the checks below: every level's detail, every serial
/// number, every SKU's settings, copied from the engine just before it was taken.
struct Expected {
    details: Vec<LevelDetail>,
    serials: Vec<SerialView>,
}

fn expected_now(e: &engine::runtime::Engine, serials: &[(&str, &str)]) -> Expected {
    let details = e.levels(None).iter().map(|l| e.level_detail(&l.sku, &l.location).unwrap()).collect();
    let serials = serials.iter().map(|(sku, s)| e.serial(sku, s).unwrap()).collect();
    Expected { details, serials }
}

#[test]
fn read_wal_py_reads_a_version_2_log_and_its_checkpoints_record_for_record() {
    use serde_json::{json, Value};
    if python3_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut config, clock) = crate::common::config(dir.path(), 2);
    config.segment_bytes_max = 2048; // several segments
    config.expire_interval = Duration::from_millis(10);
    let e = engine::runtime::Engine::open(config).unwrap();
    let run = |key: Option<&str>, channel: &str, kind: MovementKind| {
        let m =
            Movement { key: key.map(Into::into), channel: channel.into(), reference: None, occurred_at: None, kind };
        e.execute_one(m)
    };
    let ok = |r: engine::runtime::MovementResult| r.outcome.unwrap_or_else(|r| panic!("rejected: {r}"));
    let settings = |kind| MovementKind::SetSkuSettings { sku: "MILK".into(), settings: kind };
    let (soap, cream) = two_shards();

    // Lots: a warning 1 day ahead, two lots, loose units, an allocation, a FEFO sale from it.
    ok(run(Some("s-milk"), "admin", settings(SkuSettings { expiry_warning_days: Some(1), ..SkuSettings::default() })));
    ok(run(Some("r-1"), "erp", receive_units("MILK", "dc", 5, Units::new_lot("L1", T0 + 2 * DAY))));
    ok(run(None, "erp", receive_units("MILK", "dc", 4, Units::new_lot("L2", T0 + 5 * DAY))));
    ok(run(None, "erp", receive_units("MILK", "dc", 2, Units::ANY)));
    ok(run(
        None,
        "admin",
        MovementKind::Allocate { sku: "MILK".into(), location: "dc".into(), channel: "web".into(), qty: 3 },
    ));
    ok(run(Some("o-1"), "web", sell_units("MILK", "dc", 6, Units::ANY)));
    // L1 emptied and dropped; received again under its known code, without an expiry.
    ok(run(None, "erp", receive_units("MILK", "dc", 3, Units::lot("L1"))));
    let count = MovementKind::Count { sku: "MILK".into(), location: "dc".into(), counted: 1, units: Units::ANY };
    assert_eq!(run(Some("c-1"), "web", count).outcome, Err(Reason::LotRequired));
    // Serial numbers.
    let tracked = SkuSettings { serial_tracked: true, ..SkuSettings::default() };
    ok(run(None, "admin", MovementKind::SetSkuSettings { sku: "PHONE".into(), settings: tracked }));
    ok(run(None, "erp", receive_units("PHONE", "dc", 3, Units::serials(&["S1", "S2", "S3"]))));
    ok(run(None, "pos", sell_units("PHONE", "dc", 1, Units::serials(&["S1"]))));
    ok(run(None, "pos", return_units("PHONE", "dc", 1, Units::serials(&["S1"]))));
    let transfer = MovementKind::Transfer {
        sku: "PHONE".into(),
        from: "dc".into(),
        to: "store".into(),
        qty: 1,
        units: Units::serials(&["S2"]),
    };
    ok(run(None, "erp", transfer));
    // A kit over two shards: a sale (reservation with kit lines, then its commit), a refused one.
    ok(run(None, "erp", receive_units(&soap, "dc", 10, Units::ANY)));
    ok(run(None, "erp", receive_units(&cream, "dc", 3, Units::ANY)));
    let kit = SkuSettings {
        components: vec![Component { sku: soap.clone(), qty: 2 }, Component { sku: cream.clone(), qty: 1 }],
        ..SkuSettings::default()
    };
    ok(run(None, "admin", MovementKind::SetSkuSettings { sku: "GIFT".into(), settings: kit.clone() }));
    ok(run(Some("kit-1"), "web", priced(sell_units("GIFT", "dc", 2, Units::ANY), 1999)));
    // Soap's part is held, cream's refused: the engine releases soap's part (a `release` record).
    // Unpriced: its kit mark has no price.
    assert_eq!(run(None, "web", sell_units("GIFT", "dc", 2, Units::ANY)).outcome, Err(Reason::InsufficientStock));
    ok(run(
        None,
        "admin",
        MovementKind::Allocate { sku: "MILK".into(), location: "dc".into(), channel: "web".into(), qty: 2 },
    ));
    // An open hold of a serial number and of a lot, from the allocated channel.
    let lines = serial_and_lot_lines();
    let held = ok(run(Some("cart-9"), "web", MovementKind::Reserve { hold: 0, lines, expires_at: T0 + 3_600_000 }));
    let Detail::Hold(hold) = held else { panic!("a hold") };
    let serials = [("PHONE", "S1"), ("PHONE", "S2"), ("PHONE", "S3")];
    let before_first = expected_now(&e, &serials);
    e.checkpoint().unwrap();

    // The hold expires, L1's warning and then its expiry reach the log; the expired lot is written off.
    clock.store(T0 + DAY + 2_000, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.holds().is_empty() {
        assert!(Instant::now() < deadline, "the hold never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    clock.store(T0 + 2 * DAY + 2_000, Ordering::Relaxed);
    let lot_expired = || e.level_detail("MILK", "dc").unwrap().lots.iter().any(|l| l.lot == "L1" && l.expired);
    while !lot_expired() {
        assert!(Instant::now() < deadline, "the lot never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    let write_off = MovementKind::Adjust {
        sku: "MILK".into(),
        location: "dc".into(),
        delta: -3,
        reason: AdjustReason::Damaged,
        allow_negative: false,
        units: Units::lot("L1"),
    };
    ok(run(None, "erp", write_off));
    let before_second = expected_now(&e, &serials);
    e.checkpoint().unwrap();
    ok(run(None, "erp", receive_units("MILK", "store", 1, Units::ANY)));
    e.halt();

    // The engine's own reading of its log and checkpoints.
    let mut records = Vec::new();
    for (_, path) in engine::wal::segment::list_segments(&dir.path().join("wal")).unwrap() {
        let data = std::fs::read(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for rec in engine::wal::segment::RecordIter::new(&data) {
            let rec = rec.unwrap();
            let h = rec.header;
            let mut v = json!({"file": file, "offset": rec.offset, "seq": h.seq, "shard": h.shard});
            if engine::wal::format::is_movement_type(h.record_type) {
                let decoded = engine::wal::record::decode_movement_payload(rec.payload).unwrap();
                for (k, x) in record_json(&decoded).as_object().unwrap() {
                    v[k] = x.clone();
                }
            } else {
                v["type"] = json!("nop");
            }
            records.push(v);
        }
    }
    let checkpoints: Vec<engine::wal::checkpoint::CheckpointBody> =
        engine::wal::checkpoint::list_checkpoints(&dir.path().join("checkpoints"))
            .unwrap()
            .iter()
            .map(|(_, p)| engine::wal::checkpoint::read_checkpoint(p).unwrap())
            .collect();
    assert_eq!(checkpoints.len(), 2);

    let out = std::process::Command::new("python3")
        .arg(tool("read_wal.py"))
        .arg(dir.path())
        .arg("--checkpoints")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "read_wal.py failed: {stderr}");
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (py_checkpoints, py_records): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|v| v.get("checkpoint").is_some());

    // Record for record.
    assert_eq!(py_records.len(), records.len());
    for (py, rust) in py_records.iter().zip(&records) {
        assert_eq!(*py, rust, "record {}", rust["seq"]);
    }
    // What the log must hold: every kind of the new layouts.
    let kinds: std::collections::BTreeSet<&str> =
        records.iter().filter_map(|r| r["movement"]["kind"].as_str()).collect();
    for kind in [
        "set_sku_settings",
        "allocate",
        "receive",
        "sell",
        "return",
        "transfer",
        "count",
        "adjust",
        "reserve",
        "commit",
        "release",
        "expire",
    ] {
        assert!(kinds.contains(kind), "no {kind} record");
    }
    let kit_lines: Vec<&Value> = records
        .iter()
        .filter(|r| r["movement"]["kind"] == "reserve")
        .flat_map(|r| r["movement"]["lines"].as_array().unwrap())
        .filter(|l| l["kit"]["sku"] == "GIFT")
        .collect();
    assert!(kit_lines.len() >= 2, "the kit sale's reservation lines are marked");
    // The sale at 1999 per kit (one line per shard) carries its price on the mark, the unpriced
    // one none; the component lines have no price of their own.
    let kit_prices: Vec<&Value> = kit_lines.iter().map(|l| &l["kit"]["unit_price"]).collect();
    assert_eq!(kit_prices.iter().filter(|p| **p == &json!(1999)).count(), 2, "{kit_prices:?}");
    assert!(kit_prices.iter().all(|p| *p == &json!(1999) || p.is_null()), "{kit_prices:?}");
    assert!(kit_lines.iter().all(|l| l["unit_price"].is_null()), "{kit_lines:?}");
    let alerts: Vec<&str> = records
        .iter()
        .flat_map(|r| r["effects"]["alerts"].as_array().into_iter().flatten())
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert!(alerts.contains(&"lot_expiring") && alerts.contains(&"lot_expired"), "{alerts:?}");
    let fefo = records.iter().find(|r| r["movement"]["key"] == "o-1").unwrap();
    let taken: Vec<(&str, i64)> = fefo["effects"]["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["lot"].as_str().unwrap(), l["on_hand"].as_i64().unwrap()))
        .collect();
    assert_eq!(taken, [("L1", 0), ("L2", 3)]);

    // Checkpoints: what Rust sees of them, and what the engine reported when they were taken.
    assert_eq!(py_checkpoints.len(), 2);
    let kit_hold = records
        .iter()
        .find(|r| r["movement"]["kind"] == "reserve" && r["movement"]["lines"][0]["kit"]["sku"] == "GIFT")
        .map(|r| (r["movement"]["hold"].as_u64().unwrap(), r["movement"]["expires_at"].as_u64().unwrap()))
        .unwrap();
    for ((py, body), expected) in py_checkpoints.iter().zip(&checkpoints).zip([&before_first, &before_second]) {
        let c = &py["checkpoint"];
        assert_eq!(c["taken_at"], body.taken_at);
        assert_eq!(c["hold_counter"], body.hold_counter);
        assert_eq!(c["covered_seq"], body.covered_seq());
        let shards = c["shards"].as_array().unwrap();
        assert_eq!(shards.len(), body.shards.len());
        let mut levels = Vec::new();
        for (py_shard, shard) in shards.iter().zip(&body.shards) {
            assert_eq!(py_shard["last_seq"], shard.last_seq);
            let names: Vec<(&str, &str)> = py_shard["levels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["sku"].as_str().unwrap(), l["location"].as_str().unwrap()))
                .collect();
            let rust_names: Vec<(&str, &str)> =
                shard.levels.iter().map(|l| (l.sku.as_str(), l.location.as_str())).collect();
            assert_eq!(names, rust_names);
            levels.extend(py_shard["levels"].as_array().unwrap().iter());
            let holds: Vec<Value> = shard
                .holds
                .iter()
                .map(|h| {
                    let lines: Vec<Value> = h
                        .lines
                        .iter()
                        .map(|l| {
                            json!({"sku": l.sku, "location": l.location, "qty": l.qty, "unit_price": l.unit_price,
                            "lots": l.lots.iter().map(|(lot, q)| json!({"lot": lot, "qty": q})).collect::<Vec<_>>(),
                            "serials": l.serials, "from_alloc": l.from_alloc, "kit": kit_json(&l.kit)})
                        })
                        .collect();
                    json!({"id": h.id, "expires_at": h.expires_at, "channel": h.channel, "lines": lines})
                })
                .collect();
            assert_eq!(py_shard["holds"], json!(holds));
            for k in py_shard["keys"].as_array().unwrap() {
                assert_eq!(k["key_hash"].as_str().unwrap().len(), 32);
                let rec = records.iter().find(|r| r["seq"] == k["seq"]).expect("a key's record is in the log");
                assert_eq!(rec["body_hash"], k["body_hash"]);
            }
        }
        // Every level with its quantities, lots and allocations, as the engine reported them.
        assert_eq!(levels.len(), expected.details.len());
        for (l, d) in levels.iter().zip({
            let mut ds: Vec<&LevelDetail> = expected.details.iter().collect();
            ds.sort_by_key(|d| (shard_of(&d.level.sku, 2), d.level.sku.clone(), d.level.location.clone()));
            ds
        }) {
            assert_eq!(
                (l["sku"].as_str(), l["location"].as_str()),
                (Some(d.level.sku.as_str()), Some(d.level.location.as_str()))
            );
            let lv = &l["level"];
            assert_eq!(
                [&lv["on_hand"], &lv["reserved"], &lv["unsellable"], &lv["incoming"], &l["available"]],
                [
                    &json!(d.level.on_hand),
                    &json!(d.level.reserved),
                    &json!(d.level.unsellable),
                    &json!(d.level.incoming),
                    &json!(d.level.available)
                ]
            );
            let lots: Vec<Value> = l["lots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    json!({"sku": l["sku"], "location": l["location"], "lot": x["lot"], "expires_at": x["expires_at"],
                    "on_hand": x["on_hand"], "reserved": x["reserved"], "expired": x["expired"]})
                })
                .collect();
            assert_eq!(json!(lots), json!(d.lots), "lots of {}@{}", d.level.sku, d.level.location);
            let allocations: Vec<Value> = d.allocations.iter().map(|(c, q)| json!({"channel": c, "qty": q})).collect();
            assert_eq!(l["allocations"], json!(allocations));
        }
        let all =
            |field: &str| -> Vec<Value> { shards.iter().flat_map(|s| s[field].as_array().unwrap().clone()).collect() };
        let mut settings: Vec<Value> = all("sku_settings");
        settings.sort_by_key(|s| s["sku"].as_str().unwrap().to_owned());
        let tracked = SkuSettings { serial_tracked: true, ..SkuSettings::default() };
        let warned = SkuSettings { expiry_warning_days: Some(1), ..SkuSettings::default() };
        assert_eq!(
            settings,
            vec![
                json!({"sku": "GIFT", "settings": sku_settings_json(&kit)}),
                json!({"sku": "MILK", "settings": sku_settings_json(&warned)}),
                json!({"sku": "PHONE", "settings": sku_settings_json(&tracked)}),
            ]
        );
        let mut lot_expiry = all("lot_expiry");
        lot_expiry.sort_by_key(|x| x["lot"].as_str().unwrap().to_owned());
        assert_eq!(
            lot_expiry,
            vec![
                json!({"sku": "MILK", "lot": "L1", "expires_at": T0 + 2 * DAY}),
                json!({"sku": "MILK", "lot": "L2", "expires_at": T0 + 5 * DAY}),
            ]
        );
        let serials: Vec<Value> = expected
            .serials
            .iter()
            .map(|s| {
                let (status, hold) = match s.status {
                    SerialStatus::InStock => ("in_stock", None),
                    SerialStatus::Reserved(h) => ("reserved", Some(h)),
                    SerialStatus::Sold => ("sold", None),
                    SerialStatus::WrittenOff => ("written_off", None),
                };
                json!({"sku": s.sku, "serial": s.serial, "location": s.location, "status": status, "hold": hold,
                    "history": s.history.iter().map(|h| json!({"seq": h.seq, "at": h.at, "what": h.what, "location": h.location})).collect::<Vec<_>>()})
            })
            .collect();
        assert_eq!(all("serials"), serials);
        // A split commit is remembered for 60 s after it was made (the kit sale's hold was made
        // and committed at once, 60 s before its expiry).
        let committed_at = kit_hold.1 - 60_000;
        let remembered = if body.taken_at < committed_at + 60_000 {
            vec![json!({"committed_at": committed_at, "hold": kit_hold.0}); 2]
        } else {
            vec![]
        };
        assert_eq!(all("committed_split_holds"), remembered, "the kit sale's split commit, on both shards");
    }
    // The first checkpoint holds the open hold of a serial number and a lot, from the allocation.
    let holds: Vec<Value> = py_checkpoints[0]["checkpoint"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["holds"].as_array().unwrap().clone())
        .collect();
    let lines: Vec<&Value> =
        holds.iter().filter(|h| h["id"] == hold).flat_map(|h| h["lines"].as_array().unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|l| l["serials"] == json!(["S3"])));
    assert!(lines.iter().any(|l| l["lots"] == json!([{"lot": "L2", "qty": 1}]) && l["from_alloc"] == 1));
}

/// `stock_client.py`'s encoders give the bytes the Rust protocol gives, and its decoders read
/// what the server sends (no QUIC needed: its codec is plain Python).
#[test]
fn stock_client_py_encodes_and_decodes_the_version_2_layouts() {
    use engine::protocol::*;
    use serde_json::{json, Value};
    if python3_missing() {
        return;
    }
    let mv = |key: Option<&str>, channel: &str, kind: MovementKind| Movement {
        key: key.map(Into::into),
        channel: channel.into(),
        reference: None,
        occurred_at: None,
        kind,
    };
    let request = |id: u64, body: RequestBody| {
        let mut f = Vec::new();
        encode_request(&mut f, id, &body);
        f.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let submit = |id, m: Movement| request(id, RequestBody::Submit { movements: vec![m] });
    let sell = priced(sell_units("PHONE", "dc", 2, Units::serials(&["S1", "S2"])), 999);
    let kit = SkuSettings {
        serial_tracked: false,
        expiry_warning_days: Some(30),
        components: vec![Component { sku: "SOAP".into(), qty: 2 }, Component { sku: "CREAM".into(), qty: 1 }],
    };
    let lines = serial_and_lot_lines();
    let expected = json!({
        "hello": request(0, RequestBody::Hello { version: PROTOCOL_VERSION, token: "t".into(), client: "stock_client.py".into() }),
        "receive": submit(1, mv(Some("k-1"), "erp", receive_units("MILK", "dc", 24, Units::new_lot("L7", 1_900_000_000_000)))),
        "sell": submit(2, mv(None, "pos", sell)),
        "allocate": submit(3, mv(Some("k-3"), "admin", MovementKind::Allocate { sku: "MILK".into(), location: "dc".into(), channel: "web".into(), qty: 5 })),
        "sku_settings": submit(4, mv(Some("k-4"), "admin", MovementKind::SetSkuSettings { sku: "GIFT".into(), settings: kit })),
        "reserve": submit(5, mv(None, "web", MovementKind::Reserve { hold: 0, lines, expires_at: T0 + 60_000 })),
        "level_detail": request(6, RequestBody::LevelDetail { sku: "MILK".into(), location: "dc".into() }),
        "serial": request(7, RequestBody::Serial { sku: "PHONE".into(), serial: "S1".into() }),
        "get_sku_settings": request(8, RequestBody::GetSkuSettings { sku: "GIFT".into() }),
        "available_for": request(9, RequestBody::AvailableFor { sku: "MILK".into(), location: "dc".into(), channel: "web".into() }),
    });
    let encode = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import stock_client as sc
m, f, sub = sc.movement, sc.frame, sc.submit
out = {
    "hello": f(0, sc.hello("t")),
    "receive": f(1, sub([m(sc.RECEIVE, sc.receive("MILK", "dc", 24, lot="L7", lot_expires_at=1900000000000), "k-1", "erp")])),
    "sell": f(2, sub([m(sc.SELL, sc.sell("PHONE", "dc", 2, unit_price=999, serials=["S1", "S2"]), None, "pos")])),
    "allocate": f(3, sub([m(sc.ALLOCATE, sc.allocate("MILK", "dc", "web", 5), "k-3", "admin")])),
    "sku_settings": f(4, sub([m(sc.SET_SKU_SETTINGS,
        sc.set_sku_settings("GIFT", sc.sku_settings(False, 30, [("SOAP", 2), ("CREAM", 1)])), "k-4", "admin")])),
    "reserve": f(5, sub([m(sc.RESERVE, sc.reserve([sc.line("PHONE", "dc", 1, 900, sc.units(serials=["S3"])),
        sc.line("MILK", "dc", 1, None, sc.units(lot="L2"))], 1700000060000), None, "web")])),
    "level_detail": f(6, sc.level_detail_request("MILK", "dc")),
    "serial": f(7, sc.serial_request("PHONE", "S1")),
    "get_sku_settings": f(8, sc.get_sku_settings_request("GIFT")),
    "available_for": f(9, sc.available_for_request("MILK", "dc", "web")),
}
out = {k: v.hex() for k, v in out.items()}
for line in sys.stdin:
    name, frame = line.split()
    out["decoded_" + name] = sc.read_response(bytes.fromhex(frame)[4:])
print(json.dumps(out))
"#;
    // Answers for the decoder.
    let level = LevelView {
        sku: "MILK".into(),
        location: "dc".into(),
        on_hand: 9,
        reserved: 1,
        unsellable: 3,
        incoming: 0,
        safety_stock: 0,
        available: 5,
    };
    let lot = lot_view("MILK", "L2", T0 + 5 * DAY, 6, 1, false);
    let answers = [
        (
            "detail",
            ResponseBody::LevelDetail(Some(LevelDetail {
                level,
                lots: vec![lot],
                allocations: vec![("web".into(), 2)],
                loose_on_hand: 3,
            })),
        ),
        ("no_detail", ResponseBody::LevelDetail(None)),
        (
            "serial",
            ResponseBody::Serial(Some(SerialView {
                sku: "PHONE".into(),
                serial: "S3".into(),
                location: "dc".into(),
                status: SerialStatus::Reserved(65_539),
                history: vec![SerialEvent { seq: 12, at: T0, what: "reserve".into(), location: "dc".into() }],
            })),
        ),
        (
            "settings",
            ResponseBody::SkuSettings(SkuSettings {
                serial_tracked: true,
                expiry_warning_days: None,
                components: vec![],
            }),
        ),
        ("available", ResponseBody::AvailableFor(Some(-2))),
        (
            "outcomes",
            ResponseBody::Outcomes {
                results: vec![
                    MovementOutcome { seq: Some(4), outcome: Err(Reason::LotRequired) },
                    MovementOutcome { seq: None, outcome: Err(Reason::InvalidAllocation) },
                ],
            },
        ),
    ];
    let stdin: String = answers
        .iter()
        .map(|(name, body)| {
            let mut f = Vec::new();
            encode_response(&mut f, 7, body);
            format!("{name} {}\n", f.iter().map(|b| format!("{b:02x}")).collect::<String>())
        })
        .collect();
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(encode)
        .arg(tool(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, want) in expected.as_object().unwrap() {
        assert_eq!(&got[name], want, "{name}");
    }
    let level = json!({"sku": "MILK", "location": "dc", "on_hand": 9, "reserved": 1, "unsellable": 3, "incoming": 0,
        "safety_stock": 0, "available": 5});
    let lot = json!({"sku": "MILK", "location": "dc", "lot": "L2", "expires_at": T0 + 5 * DAY, "on_hand": 6,
        "reserved": 1, "expired": false});
    assert_eq!(
        got["decoded_detail"],
        json!([7, ["level_detail", {"level": level, "lots": [lot], "allocations": [{"channel": "web", "qty": 2}], "loose_on_hand": 3}]])
    );
    assert_eq!(got["decoded_no_detail"], json!([7, ["level_detail", null]]));
    assert_eq!(
        got["decoded_serial"],
        json!([7, ["serial", {"sku": "PHONE", "serial": "S3", "location": "dc", "status": "reserved", "hold": 65_539,
            "history": [{"seq": 12, "at": T0, "what": "reserve", "location": "dc"}]}]])
    );
    assert_eq!(
        got["decoded_settings"],
        json!([7, ["sku_settings", {"serial_tracked": true, "expiry_warning_days": null, "components": []}]])
    );
    assert_eq!(got["decoded_available"], json!([7, ["available_for", -2]]));
    assert_eq!(
        got["decoded_outcomes"],
        json!([7, ["outcomes", [{"seq": 4, "accepted": false, "reason": "lot_required"},
            {"seq": null, "accepted": false, "reason": "invalid_allocation"}]]])
    );
}

/// `stock_client.py` against a live server over QUIC, where `aioquic` is installed.
#[test]
fn stock_client_py_talks_to_stockd_over_quic() {
    use serde_json::{json, Value};
    if python3_missing() {
        return;
    }
    let has_aioquic =
        std::process::Command::new("python3").args(["-c", "import aioquic"]).status().is_ok_and(|s| s.success());
    if !has_aioquic {
        eprintln!("skipped: aioquic is not installed (pip install aioquic)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _clock) = start_at_t0(dir.path());
    let py = |args: &[&str]| -> Value {
        let out = std::process::Command::new("python3")
            .arg(tool("stock_client.py"))
            .args(["--server", &server.addr.to_string(), "--data-dir", dir.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let accepted = |v: Value| {
        assert_eq!(v[0], "outcomes", "{v}");
        assert_eq!(v[1][0]["accepted"], true, "{v}");
        v[1][0]["seq"].as_u64().unwrap()
    };
    let expires = (T0 + 3 * DAY).to_string();
    accepted(py(&["receive", "MILK", "dc", "5", "--lot", "L1", "--expires-at", &expires]));
    accepted(py(&["receive", "MILK", "dc", "2"]));
    accepted(py(&["allocate", "MILK", "dc", "web", "4"]));
    let refused = py(&["receive", "MILK", "dc", "1", "--lot", "L9"]);
    assert_eq!(refused[1][0]["reason"], "invalid_lot");
    accepted(py(&["sku-settings", "PHONE", "--serial-tracked", "true"]));
    let received = accepted(py(&["receive", "PHONE", "dc", "--serial", "S1,S2", "--serial", "S3"]));
    let sold = accepted(py(&["sell", "PHONE", "dc", "--serial", "S1"]));
    accepted(py(&["sku-settings", "GIFT", "--kit", "MILK:2"]));

    let lot = json!({"sku": "MILK", "location": "dc", "lot": "L1", "expires_at": T0 + 3 * DAY, "on_hand": 5,
        "reserved": 0, "expired": false});
    let level = json!({"sku": "MILK", "location": "dc", "on_hand": 7, "reserved": 0, "unsellable": 0, "incoming": 0,
        "safety_stock": 0, "available": 7});
    assert_eq!(
        py(&["lots", "MILK", "dc"]),
        json!(["level_detail", {"level": level, "lots": [lot], "allocations": [{"channel": "web", "qty": 4}], "loose_on_hand": 2}])
    );
    assert_eq!(py(&["available", "MILK", "dc", "pos"]), json!(["available_for", 3]));
    assert_eq!(py(&["available", "GIFT", "dc", "web"]), json!(["available_for", 3]));
    let kit_level = json!({"sku": "GIFT", "location": "dc", "on_hand": 3, "reserved": 0, "unsellable": 0, "incoming": 0,
        "safety_stock": 0, "available": 3});
    assert_eq!(py(&["level", "GIFT", "dc"]), json!(["level", kit_level]));
    assert_eq!(
        py(&["serial", "PHONE", "S1"]),
        json!(["serial", {"sku": "PHONE", "serial": "S1", "location": "dc", "status": "sold", "hold": null,
            "history": [{"seq": received, "at": T0, "what": "receive", "location": "dc"},
                {"seq": sold, "at": T0, "what": "sell", "location": "dc"}]}])
    );
    assert_eq!(
        py(&["sku-settings", "GIFT"]),
        json!(["sku_settings", {"serial_tracked": false, "expiry_warning_days": null, "components": [{"sku": "MILK", "qty": 2}]}])
    );
}
