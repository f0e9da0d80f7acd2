//! Lots, serial numbers, kits and channel allocations: a data set whose effects come from the
//! engine's own state machine (two `ShardState`s, as two shards would log them) and whose answers
//! are worked out by hand below; then a real in-process `stockd` whose log is ingested and
//! imported.
//!
//! The data set (shard 1 holds CREAM, shard 0 everything else; location "dc" unless said):
//!
//! | # | day | shard, channel | movement |
//! |---|-----|----------------|----------|
//! | 1-4 | 02-01 | 0 admin | MILK `expiry_warning_days` 3; PHONE serial-tracked; GIFT = 2 SOAP + 1 CREAM; DUO = 1 CREAM + 1 SOAP |
//! | 5-8 | 02-01 | erp | receive MILK 3 loose @60, SOAP 20 @150, CREAM 10 @300 (shard 1), PHONE 2 (S1, S2) @30000 |
//! | 9 | 02-20 | web | sell MILK 2 @250 (loose: no lot yet) |
//! | 10-12 | 03-01..03 | erp | receive MILK lot L1 10 @100 (expires 04-05), L2 10 @120 (04-20), L1 5 @130 |
//! | 13 | 03-04 | admin | allocate MILK 5 to amazon |
//! | 14-15 | 03-05..06 | pos | sell SOAP 3 @400; sell PHONE 1 (S1) @48000 |
//! | 16-17 | 03-07 | web, erp | reserve PHONE 1 (S2) @50000 (hold H4); commit H4 sent by "erp" |
//! | 18 | 03-10 | web | sell MILK 18 @250, no lot: FEFO takes L1's 15 then 3 of L2 |
//! | 19 | 03-11 | erp | receive MILK lot L3 4 @90 (expires 03-20) |
//! | 20-23 | 03-12 | web | kit sale of 2 GIFT @1999 per kit: hold H1 split over both shards (SOAP 4, CREAM 2), both parts committed |
//! | 24-26 | 03-14 | erp | receive YOGURT lot Y1 5 (no cost, expires 04-01 12:00), 10 loose @50, lot Y2 4 @80 (05-30) |
//! | 27 | 03-15 | erp | transfer MILK lot L2 2 to "store" |
//! | 28 | 03-16 | erp | receive MILK lot L4 6 @80 (expires 06-01) |
//! | 29-32 | 03-20 | amazon | kit sale of 1 GIFT @1999 (H2): shard 0 commits, shard 1 logs a `complete_commit` (channel "engine") |
//! | 33 | 03-21 | engine | expire: L3 expired (4 units), its warning raised too |
//! | 34-37 | 03-25 | web | kit sale of 5 DUO (H3) without a price, both parts committed |
//! | 38 | 03-26 | web | sell MILK 100: rejected (insufficient_stock) |
//! | 39 | 03-29 | web | sell MILK 1 of lot L2 (after the as-of day) |
//!
//! As of 2026-03-28: MILK at dc holds L2 5, L3 4 (expired), L4 6 and 1 loose; at store L2 2;
//! YOGURT Y1 5, Y2 4, 10 loose. Unit costs: L1 (10 @100 + 5 @130) / 15 = 110, L2 120, L3 90,
//! L4 80, Y2 80; Y1 was received without a cost, so YOGURT's average receive cost applies:
//! (10 @50 + 4 @80) / 14 = 58.5714.

use crate::ingest::{analytics, mv, Running};
use analytics::query::{render, run_sql, session, Format, SessionLimits};
use analytics::reports::{self, Report, ReportParams};
use analytics::rows::{Converter, DayRows, RecordIn};
use analytics::sink::{encode_chunk, encode_parquet, Chunk, Sink};
use analytics::store::Store;
use chrono::NaiveDate;
use engine::core::*;

fn ms(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis() as u64
}

/// Noon (UTC) of a 2026 day "MM-DD".
fn noon(day: &str) -> u64 {
    ms(&format!("2026-{day}T12:00:00Z"))
}

const H1: HoldId = (1 << HOLD_SHARD_BITS) | 0b11;
const H2: HoldId = (2 << HOLD_SHARD_BITS) | 0b11;
const H3: HoldId = (3 << HOLD_SHARD_BITS) | 0b11;
const H4: HoldId = (4 << HOLD_SHARD_BITS) | 0b01;

/// The records of a log written by two shards' state machines.
#[derive(Default)]
struct Log {
    shards: [ShardState; 2],
    records: Vec<(u64, u16, u64, Movement, Outcome, Effects)>,
}

impl Log {
    fn apply(&mut self, shard: u16, at: u64, channel: &str, kind: MovementKind) -> Outcome {
        let seq = self.records.len() as u64 + 1;
        let m = Movement { key: None, channel: channel.into(), reference: None, occurred_at: None, kind };
        let mut fx = Effects::default();
        let outcome = self.shards[shard as usize].apply(at, seq, &m, body_hash(&m), &mut fx).outcome();
        self.records.push((seq, shard, at, m, outcome, fx));
        outcome
    }

    /// Applies a movement that must be accepted.
    fn ok(&mut self, shard: u16, at: u64, channel: &str, kind: MovementKind) {
        let outcome = self.apply(shard, at, channel, kind.clone());
        assert!(outcome.is_ok(), "{kind:?}: {outcome:?}");
    }
}

fn receive(sku: &str, qty: i64, cost: Option<i64>, units: Units) -> MovementKind {
    MovementKind::Receive { sku: sku.into(), location: "dc".into(), qty, unit_cost: cost, units }
}

fn sell(sku: &str, qty: i64, price: i64, units: Units) -> MovementKind {
    MovementKind::Sell {
        sku: sku.into(),
        location: "dc".into(),
        qty,
        unit_price: Some(price),
        hold: None,
        allow_negative: false,
        units,
    }
}

/// A reservation line; `kit`: (kit SKU, kits, price per kit) of the kit it was expanded from.
fn line(sku: &str, qty: i64, price: Option<i64>, units: Units, kit: Option<(&str, i64, Option<i64>)>) -> Line {
    Line {
        sku: sku.into(),
        location: "dc".into(),
        qty,
        unit_price: price,
        units,
        kit: kit.map(|(k, n, kit_price)| KitRef { sku: k.into(), qty: n, unit_price: kit_price }),
    }
}

fn reserve(hold: HoldId, at: u64, lines: Vec<Line>) -> MovementKind {
    MovementKind::Reserve { hold, lines, expires_at: at + 60_000 }
}

fn sku_settings(sku: &str, s: SkuSettings) -> MovementKind {
    MovementKind::SetSkuSettings { sku: sku.into(), settings: s }
}

fn comps(list: &[(&str, i64)]) -> Vec<Component> {
    list.iter().map(|(s, q)| Component { sku: (*s).into(), qty: *q }).collect()
}

/// A kit sale of `n` kits at `price` per kit as the engine logs it: the reservation of the
/// components (one part per shard, each line marked with the kit and its price, the lines
/// themselves unpriced), then the commit of each part.
fn kit_sale(
    log: &mut Log,
    day: &str,
    channel: &str,
    hold: HoldId,
    (kit, n, price): (&str, i64, Option<i64>),
    parts: [(&str, i64); 2],
) {
    let at = noon(day);
    let [(soap, soap_qty), (cream, cream_qty)] = parts;
    let mark = Some((kit, n, price));
    log.ok(0, at, channel, reserve(hold, at, vec![line(soap, soap_qty, None, Units::ANY, mark)]));
    log.ok(1, at, channel, reserve(hold, at, vec![line(cream, cream_qty, None, Units::ANY, mark)]));
}

fn history() -> Log {
    let mut log = Log::default();
    let feb1 = noon("02-01");
    log.ok(
        0,
        feb1,
        "admin",
        sku_settings("MILK", SkuSettings { expiry_warning_days: Some(3), ..SkuSettings::default() }),
    );
    log.ok(0, feb1, "admin", sku_settings("PHONE", SkuSettings { serial_tracked: true, ..SkuSettings::default() }));
    let gift = SkuSettings { components: comps(&[("SOAP", 2), ("CREAM", 1)]), ..SkuSettings::default() };
    log.ok(0, feb1, "admin", sku_settings("GIFT", gift));
    let duo = SkuSettings { components: comps(&[("CREAM", 1), ("SOAP", 1)]), ..SkuSettings::default() };
    log.ok(0, feb1, "admin", sku_settings("DUO", duo));
    log.ok(0, feb1, "erp", receive("MILK", 3, Some(60), Units::ANY));
    log.ok(0, feb1, "erp", receive("SOAP", 20, Some(150), Units::ANY));
    log.ok(1, feb1, "erp", receive("CREAM", 10, Some(300), Units::ANY));
    log.ok(0, feb1, "erp", receive("PHONE", 2, Some(30000), Units::serials(&["S1", "S2"])));
    log.ok(0, noon("02-20"), "web", sell("MILK", 2, 250, Units::ANY));
    log.ok(0, noon("03-01"), "erp", receive("MILK", 10, Some(100), Units::new_lot("L1", ms("2026-04-05T00:00:00Z"))));
    log.ok(0, noon("03-02"), "erp", receive("MILK", 10, Some(120), Units::new_lot("L2", ms("2026-04-20T00:00:00Z"))));
    log.ok(0, noon("03-03"), "erp", receive("MILK", 5, Some(130), Units::lot("L1")));
    let allocate =
        MovementKind::Allocate { sku: "MILK".into(), location: "dc".into(), channel: "amazon".into(), qty: 5 };
    log.ok(0, noon("03-04"), "admin", allocate);
    log.ok(0, noon("03-05"), "pos", sell("SOAP", 3, 400, Units::ANY));
    log.ok(0, noon("03-06"), "pos", sell("PHONE", 1, 48000, Units::serials(&["S1"])));
    let at = noon("03-07");
    log.ok(0, at, "web", reserve(H4, at, vec![line("PHONE", 1, Some(50000), Units::serials(&["S2"]), None)]));
    log.ok(0, at, "erp", MovementKind::Commit { hold: H4 });
    log.ok(0, noon("03-10"), "web", sell("MILK", 18, 250, Units::ANY));
    log.ok(0, noon("03-11"), "erp", receive("MILK", 4, Some(90), Units::new_lot("L3", ms("2026-03-20T00:00:00Z"))));
    kit_sale(&mut log, "03-12", "web", H1, ("GIFT", 2, Some(1999)), [("SOAP", 4), ("CREAM", 2)]);
    log.ok(0, noon("03-12"), "web", MovementKind::Commit { hold: H1 });
    log.ok(1, noon("03-12"), "web", MovementKind::Commit { hold: H1 });
    log.ok(0, noon("03-14"), "erp", receive("YOGURT", 5, None, Units::new_lot("Y1", ms("2026-04-01T12:00:00Z"))));
    log.ok(0, noon("03-14"), "erp", receive("YOGURT", 10, Some(50), Units::ANY));
    log.ok(0, noon("03-14"), "erp", receive("YOGURT", 4, Some(80), Units::new_lot("Y2", ms("2026-05-30T00:00:00Z"))));
    let transfer = MovementKind::Transfer {
        sku: "MILK".into(),
        from: "dc".into(),
        to: "store".into(),
        qty: 2,
        units: Units::lot("L2"),
    };
    log.ok(0, noon("03-15"), "erp", transfer);
    log.ok(0, noon("03-16"), "erp", receive("MILK", 6, Some(80), Units::new_lot("L4", ms("2026-06-01T00:00:00Z"))));
    kit_sale(&mut log, "03-20", "amazon", H2, ("GIFT", 1, Some(1999)), [("SOAP", 2), ("CREAM", 1)]);
    log.ok(0, noon("03-20"), "amazon", MovementKind::Commit { hold: H2 });
    // Shard 1's part, committed by the engine's recovery after a crash.
    log.ok(1, noon("03-20") + 1, "engine", MovementKind::CompleteCommit { hold: H2 });
    let at = noon("03-21");
    log.ok(0, at, "engine", MovementKind::Expire { holds_expired_by: at, keys_seen_before: 0, keys_max: u64::MAX });
    kit_sale(&mut log, "03-25", "web", H3, ("DUO", 5, None), [("SOAP", 5), ("CREAM", 5)]);
    log.ok(0, noon("03-25"), "web", MovementKind::Commit { hold: H3 });
    log.ok(1, noon("03-25"), "web", MovementKind::Commit { hold: H3 });
    assert_eq!(log.apply(0, noon("03-26"), "web", sell("MILK", 100, 250, Units::ANY)), Err(Reason::InsufficientStock));
    log.ok(0, noon("03-29"), "web", sell("MILK", 1, 250, Units::lot("L2")));
    log
}

async fn dataset(dir: &std::path::Path) -> Store {
    let store = Store::open(dir.to_str().unwrap()).unwrap();
    let mut sink = Sink::open(store.clone(), "test".into()).await.unwrap();
    let mut conv = Converter::default();
    let mut rows = DayRows::default();
    let log = history();
    for (seq, shard, at, m, outcome, fx) in &log.records {
        let r = RecordIn { seq: *seq, shard: *shard, recorded_at: *at, movement: m, outcome, effects: fx };
        conv.convert(&r, rows.builder_for(*at));
    }
    let chunk = Chunk::new(1, log.records.len() as u64, rows, &mut conv);
    sink.commit(encode_chunk(chunk).unwrap()).await.unwrap();
    store
}

fn params() -> ReportParams {
    ReportParams { top: 0, ..ReportParams::new(NaiveDate::from_ymd_opt(2026, 3, 28).unwrap()) }
}

async fn report_csv(store: &Store, report: Report, p: &ReportParams) -> Vec<String> {
    let ctx = session(store, SessionLimits::default()).await.unwrap();
    let batches = reports::run(&ctx, report, p).await.unwrap();
    render(&batches, Format::Csv).unwrap().lines().map(String::from).collect()
}

async fn sql_csv(store: &Store, sql: &str) -> Vec<String> {
    let ctx = session(store, SessionLimits::default()).await.unwrap();
    let batches = run_sql(&ctx, sql).await.unwrap();
    render(&batches, Format::Csv).unwrap().lines().map(String::from).collect()
}

#[tokio::test]
async fn expiring_values_stock_by_lot_at_the_lot_cost_or_the_sku_average() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // As of the end of 03-28 (2026-03-29T00:00Z), within 30 days (before 04-28): L3 expired on
    // 03-20 (-9 days) and is still on hand; Y1 in 3.5 days (valued at YOGURT's average cost:
    // 5 * 58.5714 = 292.86 -> 293); L2 in 22 days, at both locations (the sale of 03-29 is after
    // the as-of day). L4 (06-01) and Y2 (05-30) expire later; L1 is sold out.
    assert_eq!(
        report_csv(&store, Report::Expiring, &params()).await,
        [
            "sku,location,lot,expires_at,days_left,status,on_hand,reserved,unit_cost_cents,cost_from,value_cents",
            "MILK,dc,L3,2026-03-20T00:00:00Z,-9.0,expired,4,0,90.0,lot,360",
            "YOGURT,dc,Y1,2026-04-01T12:00:00Z,3.5,expiring,5,0,58.57,sku,293",
            "MILK,dc,L2,2026-04-20T00:00:00Z,22.0,expiring,5,0,120.0,lot,600",
            "MILK,store,L2,2026-04-20T00:00:00Z,22.0,expiring,2,0,120.0,lot,240",
        ]
    );
    // Only what has expired; and a later as-of day sees the sale of 03-29.
    let expired_only = ReportParams { within_days: 0, ..params() };
    assert_eq!(
        report_csv(&store, Report::Expiring, &expired_only).await[1..],
        ["MILK,dc,L3,2026-03-20T00:00:00Z,-9.0,expired,4,0,90.0,lot,360"]
    );
    let later =
        ReportParams { as_of: NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), location: Some("dc".into()), ..params() };
    let rows = report_csv(&store, Report::Expiring, &later).await;
    assert_eq!(rows[3], "MILK,dc,L2,2026-04-20T00:00:00Z,21.0,expiring,4,0,120.0,lot,480");
    assert_eq!(rows.len(), 4, "the location filter leaves the store's lot out: {rows:?}");
    // The `lots` table: the current state of every lot, with its unit cost.
    assert_eq!(
        sql_csv(&store, "SELECT sku, location, lot, on_hand, reserved, expired, unit_cost, unit_cost_from FROM lots ORDER BY sku, location, lot").await,
        [
            "sku,location,lot,on_hand,reserved,expired,unit_cost,unit_cost_from",
            "MILK,dc,L2,4,0,false,120.0,lot",
            "MILK,dc,L3,4,0,true,90.0,lot",
            "MILK,dc,L4,6,0,false,80.0,lot",
            "MILK,store,L2,2,0,false,120.0,lot",
            "YOGURT,dc,Y1,5,0,false,58.57,sku",
            "YOGURT,dc,Y2,4,0,false,80.0,lot",
        ]
    );
}

#[tokio::test]
async fn a_fefo_sale_across_two_lots_records_the_units_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // #9 sold loose units (no lot row); #18 took L1's 15 units, then 3 of L2; #39 named L2.
    let sql = "SELECT seq, lot, l['lot'] AS taken_from, l['expires_at'] AS expires_at, -l['on_hand_change'] AS units
               FROM (SELECT seq, lot, unnest(lots) AS l FROM movements WHERE kind = 'sell' AND sku = 'MILK' AND accepted)
               ORDER BY seq, taken_from";
    assert_eq!(
        sql_csv(&store, sql).await,
        [
            "seq,lot,taken_from,expires_at,units",
            "18,,L1,2026-04-05T00:00:00Z,15",
            "18,,L2,2026-04-20T00:00:00Z,3",
            "39,L2,L2,2026-04-20T00:00:00Z,1",
        ]
    );
    // The same from `lot_history`, which also has the lots' quantities after each change.
    let sql = "SELECT seq, kind, location, lot, on_hand, reserved, expired, on_hand_change FROM lot_history
               WHERE sku = 'MILK' ORDER BY seq, location, lot";
    assert_eq!(
        sql_csv(&store, sql).await,
        [
            "seq,kind,location,lot,on_hand,reserved,expired,on_hand_change",
            "10,receive,dc,L1,10,0,false,10",
            "11,receive,dc,L2,10,0,false,10",
            "12,receive,dc,L1,15,0,false,5",
            "18,sell,dc,L1,0,0,false,-15",
            "18,sell,dc,L2,7,0,false,-3",
            "19,receive,dc,L3,4,0,false,4",
            "27,transfer,dc,L2,5,0,false,-2",
            "27,transfer,store,L2,2,0,false,2",
            "28,receive,dc,L4,6,0,false,6",
            "33,expire,dc,L3,4,0,true,0",
            "39,sell,dc,L2,4,0,false,-1",
        ]
    );
    // The transfer's two rows carry the lot moved at each end; the expiry record its alerts.
    let sql = "SELECT line, location, lot, l['on_hand_change'] AS change
               FROM (SELECT line, location, lot, unnest(lots) AS l FROM movements WHERE kind = 'transfer') ORDER BY line";
    assert_eq!(sql_csv(&store, sql).await, ["line,location,lot,change", "0,dc,L2,-2", "1,store,L2,2"]);
    let sql = "SELECT alerts FROM movements WHERE kind = 'expire'";
    assert_eq!(sql_csv(&store, sql).await, ["alerts", "\"lot_expiring:MILK@dc#L3,lot_expired:MILK@dc#L3\""]);
}

#[tokio::test]
async fn best_sellers_by_channel_sell_commits_through_the_channel_of_their_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // The commit of H4 was sent by "erp" and H2's second part by the engine: their units count
    // for the channel that placed the hold (web, amazon). Kit components count as sold.
    let by_channel = ReportParams { by_channel: true, ..params() };
    assert_eq!(
        report_csv(&store, Report::BestSellers, &by_channel).await,
        [
            "channel,rank,sku,units,revenue_cents,prev_units,change_units,change_pct",
            "amazon,1,SOAP,2,0,0,2,",
            "amazon,2,CREAM,1,0,0,1,",
            "pos,1,SOAP,3,1200,0,3,",
            "pos,2,PHONE,1,48000,0,1,",
            "web,1,MILK,18,4500,2,16,800.0",
            "web,2,SOAP,9,0,0,9,",
            "web,3,CREAM,7,0,0,7,",
            "web,4,PHONE,1,50000,0,1,",
        ]
    );
    // --top is per channel.
    let top1 = ReportParams { by_channel: true, top: 1, ..params() };
    assert_eq!(
        report_csv(&store, Report::BestSellers, &top1).await[1..],
        ["amazon,1,SOAP,2,0,0,2,", "pos,1,SOAP,3,1200,0,3,", "web,1,MILK,18,4500,2,16,800.0"]
    );
    // Overall: every sale, the complete_commit included.
    assert_eq!(
        report_csv(&store, Report::BestSellers, &params()).await,
        [
            "rank,sku,units,revenue_cents,prev_units,change_units,change_pct",
            "1,MILK,18,4500,2,16,800.0",
            "2,SOAP,14,1200,0,14,",
            "3,CREAM,8,0,0,8,",
            "4,PHONE,2,98000,0,2,",
        ]
    );
}

#[tokio::test]
async fn kit_sales_are_attributed_to_their_kit_and_ranked() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    let sql =
        "SELECT seq, shard, kind, channel, sku, qty, unit_price, kit, kit_qty, kit_unit_price, hold FROM movements
               WHERE kit IS NOT NULL AND kind <> 'reserve' ORDER BY seq, line";
    assert_eq!(
        sql_csv(&store, sql).await,
        [
            "seq,shard,kind,channel,sku,qty,unit_price,kit,kit_qty,kit_unit_price,hold",
            format!("22,0,commit,web,SOAP,4,,GIFT,2,1999,{H1}").as_str(),
            format!("23,1,commit,web,CREAM,2,,GIFT,2,1999,{H1}").as_str(),
            format!("31,0,commit,amazon,SOAP,2,,GIFT,1,1999,{H2}").as_str(),
            format!("32,1,complete_commit,amazon,CREAM,1,,GIFT,1,1999,{H2}").as_str(),
            format!("36,0,commit,web,SOAP,5,,DUO,5,,{H3}").as_str(),
            format!("37,1,commit,web,CREAM,5,,DUO,5,,{H3}").as_str(),
        ]
    );
    // A kit sale counts its kits and their price once, whatever the number of components and
    // parts: GIFT 2 x 1999 + 1 x 1999 (the second split into a commit and a complete_commit);
    // DUO was sold without a price.
    let kits = ReportParams { kits: true, ..params() };
    assert_eq!(
        report_csv(&store, Report::BestSellers, &kits).await,
        ["rank,kit,units,revenue_cents,prev_units,change_units,change_pct", "1,DUO,5,0,0,5,", "2,GIFT,3,5997,0,3,"]
    );
    let kits_by_revenue = ReportParams { kits: true, by: reports::Measure::Revenue, ..params() };
    assert_eq!(
        report_csv(&store, Report::BestSellers, &kits_by_revenue).await[1..],
        ["1,GIFT,3,5997,0,3,", "2,DUO,5,0,0,5,"]
    );
    let kits_by_channel = ReportParams { kits: true, by_channel: true, ..params() };
    assert_eq!(
        report_csv(&store, Report::BestSellers, &kits_by_channel).await,
        [
            "channel,rank,kit,units,revenue_cents,prev_units,change_units,change_pct",
            "amazon,1,GIFT,1,1999,0,1,",
            "web,1,DUO,5,0,0,5,",
            "web,2,GIFT,2,3998,0,2,",
        ]
    );
    // Serial numbers, allocations and SKU settings have their columns.
    let sql = "SELECT kind, channel, array_to_string(serials, '|') AS serials FROM movements WHERE sku = 'PHONE' ORDER BY seq";
    assert_eq!(
        sql_csv(&store, sql).await,
        [
            "kind,channel,serials",
            "set_sku_settings,admin,",
            "receive,erp,S1|S2",
            "sell,pos,S1",
            "reserve,web,S2",
            "commit,web,S2"
        ]
    );
    let sql =
        "SELECT channel, sku, location, qty, allocation_channel, on_hand_change FROM movements WHERE kind = 'allocate'";
    assert_eq!(
        sql_csv(&store, sql).await,
        ["channel,sku,location,qty,allocation_channel,on_hand_change", "admin,MILK,dc,5,amazon,0"]
    );
    let sql = "SELECT sku, serial_tracked, expiry_warning_days, cardinality(components) AS components
               FROM movements WHERE kind = 'set_sku_settings' ORDER BY seq";
    assert_eq!(
        sql_csv(&store, sql).await,
        [
            "sku,serial_tracked,expiry_warning_days,components",
            "MILK,false,3,0",
            "PHONE,true,,0",
            "GIFT,false,,2",
            "DUO,false,,2"
        ]
    );
    let sql = "SELECT sku, l['sku'] AS component, l['qty'] AS qty
               FROM (SELECT seq, sku, unnest(components) AS l FROM movements WHERE kind = 'set_sku_settings') ORDER BY seq, component";
    assert_eq!(
        sql_csv(&store, sql).await,
        ["sku,component,qty", "GIFT,CREAM,1", "GIFT,SOAP,2", "DUO,CREAM,1", "DUO,SOAP,1"]
    );
}

#[tokio::test]
async fn files_of_format_1_read_with_the_new_columns_null() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let mut conv = Converter::default();
    let mut b = analytics::rows::MovementBuilder::new();
    let m = Movement {
        key: None,
        channel: "web".into(),
        reference: None,
        occurred_at: None,
        kind: sell("A", 2, 100, Units::ANY),
    };
    let (ok, fx) = (Ok(Detail::None), Effects::default());
    let at = noon("03-10");
    conv.convert(&RecordIn { seq: 1, shard: 0, recorded_at: at, movement: &m, outcome: &ok, effects: &fx }, &mut b);
    // The columns of format 1: every column up to `alerts`.
    let batch = b.finish();
    let alerts = batch.schema().index_of("alerts").unwrap();
    let old = batch.project(&(0..=alerts).collect::<Vec<_>>()).unwrap();
    let name = analytics::schema::movement_file(NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(), 1, 1);
    store.put(&name, encode_parquet(&[old], 1, 1).unwrap()).await.unwrap();
    assert_eq!(sql_csv(&store, "SELECT sku, qty, lot, kit FROM movements").await, ["sku,qty,lot,kit", "A,2,,"]);
    let rows =
        report_csv(&store, Report::BestSellers, &ReportParams::new(NaiveDate::from_ymd_opt(2026, 3, 10).unwrap()))
            .await;
    assert_eq!(rows[1], "1,A,2,200,0,2,");
}

/// Lots, serial numbers, a kit sale and an allocation on a real engine (2 shards): `ingest` and
/// then `import --wal` of its (format version 2) log give the expected rows.
#[test]
fn ingest_and_import_of_a_real_engine_with_lots_serials_kits_and_allocations() {
    let data = tempfile::tempdir().unwrap();
    let (ingested, imported) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Running::start(data.path());
    let e = server.engine();
    let day = 86_400_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let run = |channel: &str, kind: MovementKind| {
        let r = e.execute_one(mv(kind.clone(), channel));
        assert!(r.outcome.is_ok(), "{kind:?}: {:?}", r.outcome);
    };
    run("admin", sku_settings("PHONE", SkuSettings { serial_tracked: true, ..SkuSettings::default() }));
    let gift = SkuSettings { components: comps(&[("SOAP", 2), ("CREAM", 1)]), ..SkuSettings::default() };
    run("admin", sku_settings("GIFT", gift));
    run("erp", receive("MILK", 10, Some(100), Units::new_lot("L1", now + 10 * day)));
    run("erp", receive("MILK", 10, Some(120), Units::new_lot("L2", now + 20 * day)));
    run("erp", receive("SOAP", 20, Some(150), Units::ANY));
    run("erp", receive("CREAM", 10, Some(300), Units::ANY));
    run("erp", receive("PHONE", 2, Some(30000), Units::serials(&["S1", "S2"])));
    run(
        "admin",
        MovementKind::Allocate { sku: "MILK".into(), location: "dc".into(), channel: "amazon".into(), qty: 5 },
    );
    run("web", sell("MILK", 12, 250, Units::ANY));
    run("pos", sell("PHONE", 1, 48000, Units::serials(&["S1"])));
    run("web", sell("GIFT", 2, 1999, Units::ANY));
    run(
        "erp",
        MovementKind::Transfer {
            sku: "MILK".into(),
            from: "dc".into(),
            to: "store".into(),
            qty: 1,
            units: Units::lot("L2"),
        },
    );
    assert_eq!(e.level("GIFT", "dc").map(|l| l.available), Some(8), "20 - 4 SOAP = 16 (8 kits), 10 - 2 CREAM = 8");

    let out = analytics(ingested.path())
        .args(["ingest", "--once", "--quiet", "--server", &server.addr().to_string(), "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "ingest: {}", String::from_utf8_lossy(&out.stderr));
    server.stop();
    let out = analytics(imported.path()).args(["import", "--quiet", "--wal"]).arg(data.path()).output().unwrap();
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));

    let csv = |dir: &std::path::Path, args: &[&str]| -> Vec<String> {
        let out = analytics(dir).args(["--format", "csv"]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    };
    // The kit sale's reservation and commit may be one record or one per shard (SOAP and CREAM
    // may live on different shards): compare the rows as a set.
    let rows_sql = "SELECT kind, channel, sku, location, qty, lot, kit, kit_qty, kit_unit_price, allocation_channel,
                           array_to_string(serials, '|') AS serials
                    FROM movements WHERE kind <> 'expire'";
    let mut expected = vec![
        "set_sku_settings,admin,PHONE,,,,,,,,",
        "set_sku_settings,admin,GIFT,,,,,,,,",
        "receive,erp,MILK,dc,10,L1,,,,,",
        "receive,erp,MILK,dc,10,L2,,,,,",
        "receive,erp,SOAP,dc,20,,,,,,",
        "receive,erp,CREAM,dc,10,,,,,,",
        "receive,erp,PHONE,dc,2,,,,,,S1|S2",
        "allocate,admin,MILK,dc,5,,,,,amazon,",
        "sell,web,MILK,dc,12,,,,,,",
        "sell,pos,PHONE,dc,1,,,,,,S1",
        "reserve,web,SOAP,dc,4,,GIFT,2,1999,,",
        "reserve,web,CREAM,dc,2,,GIFT,2,1999,,",
        "commit,web,SOAP,dc,4,,GIFT,2,1999,,",
        "commit,web,CREAM,dc,2,,GIFT,2,1999,,",
        "transfer,erp,MILK,dc,1,L2,,,,,",
        "transfer,erp,MILK,store,1,L2,,,,,",
    ];
    expected.sort();
    let fefo_sql = "SELECT l['lot'] AS lot, l['on_hand_change'] AS change
                    FROM (SELECT unnest(lots) AS l FROM movements WHERE kind = 'sell' AND sku = 'MILK') ORDER BY lot";
    let lots_sql =
        "SELECT sku, location, lot, on_hand, reserved, unit_cost, unit_cost_from FROM lots ORDER BY location";
    for dir in [ingested.path(), imported.path()] {
        let mut rows = csv(dir, &["sql", rows_sql]);
        assert_eq!(
            rows.remove(0),
            "kind,channel,sku,location,qty,lot,kit,kit_qty,kit_unit_price,allocation_channel,serials"
        );
        rows.sort();
        assert_eq!(rows, expected, "{}", dir.display());
        // The FEFO sale took all of L1 and 2 of L2.
        assert_eq!(csv(dir, &["sql", fefo_sql]), ["lot,change", "L1,-10", "L2,-2"]);
        assert_eq!(
            csv(dir, &["sql", lots_sql]),
            [
                "sku,location,lot,on_hand,reserved,unit_cost,unit_cost_from",
                "MILK,dc,L2,7,0,120.0,lot",
                "MILK,store,L2,1,0,120.0,lot",
            ]
        );
        assert_eq!(
            csv(dir, &["report", "best-sellers", "--kits", "--top", "0"]),
            ["rank,kit,units,revenue_cents,prev_units,change_units,change_pct", "1,GIFT,2,3998,0,2,"],
            "2 kits sold at 1999 cents each"
        );
        // The page of every report has the new sections; a chart of sales per channel draws.
        let html = dir.join("html");
        let out = analytics(dir).args(["report", "all", "--html"]).arg(&html).output().unwrap();
        assert!(out.status.success(), "report all: {}", String::from_utf8_lossy(&out.stderr));
        let page = std::fs::read_to_string(html.join("index.html")).unwrap();
        for section in ["id=\"best-sellers-by-channel\"", "id=\"best-selling-kits\"", "id=\"expiring\""] {
            assert!(page.contains(section), "{section} missing");
        }
        assert!(page.contains("<td>GIFT</td>") && page.contains("<td>L2</td>"), "kits and lots in the page");
        let chart = dir.join("by-channel.svg");
        let out =
            analytics(dir).args(["report", "best-sellers", "--by-channel", "--chart"]).arg(&chart).output().unwrap();
        assert!(out.status.success(), "chart: {}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read_to_string(&chart).unwrap().contains("web: MILK"));
        let out = analytics(dir).args(["report", "abc", "--kits"]).output().unwrap();
        assert!(!out.status.success(), "--kits is for best-sellers only");
        // Within 30 days: both lots of MILK that are left.
        let expiring = csv(dir, &["report", "expiring", "--within", "30d"]);
        assert_eq!(expiring.len(), 3, "{expiring:?}");
        assert!(
            expiring[1].starts_with("MILK,dc,L2,") && expiring[1].ends_with(",expiring,7,0,120.0,lot,840"),
            "{expiring:?}"
        );
    }
}
