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

    let (sale, detail) = ok(&submit(&c, sell_units("GIFT", "dc", 2, Units::ANY)).await);
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

    // On the feed the sale is a reservation of both components, marked with the kit, then its commit.
    let events = feed_until(&c, first, FeedFilter::All, |e| e.seq == sale).await;
    let reserved: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.seq <= sale && matches!(&e.movement.kind, MovementKind::Reserve { .. }) && e.outcome.is_ok())
        .collect();
    assert_eq!(reserved.len(), 2, "one reservation record per shard");
    let mut lines: Vec<(String, Qty, Option<KitRef>)> = reserved
        .iter()
        .flat_map(|e| match &e.movement.kind {
            MovementKind::Reserve { lines, .. } => {
                lines.iter().map(|l| (l.sku.clone(), l.qty, l.kit.clone())).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mark = Some(KitRef { sku: "GIFT".into(), qty: 2 });
    let mut expected = vec![(soap.clone(), 4, mark.clone()), (cream.clone(), 2, mark)];
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
