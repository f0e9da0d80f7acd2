//! Every report over a small data set whose answers are worked out by hand below.
//!
//! Location "dc", window 28 days to 2026-03-28 (2026-03-01..=03-28), previous window
//! 2026-02-01..=02-28, service level 95% (z = 1.644854), default lead time 7 days.
//!
//! | SKU | sales in the window (units @ cents)            | before            | level now (on_hand/reserved/avail/incoming) | settings |
//! |-----|-----------------------------------------------|-------------------|---------------------------------------------|----------|
//! | A   | 10 @500 on 03-10, 20 @500 on 03-20; a rejected sell of 100 | 10 on 02-15 | 5/0/5/0    | lead 7 |
//! | B   | 25 @1000 on 03-05                             |                   | 100/0/100/0                                 |          |
//! | C   | reserve 10 @200 on 03-12, sell 4 of it, commit the other 6 | | 3/3/0/5                           | reorder_qty 12, lead 14 |
//! | D   |                                               | 7 on 2025-12-01   | 50/0/50/0                                   |          |
//! | E   |                                               | 1 on 2026-01-15   | 40/0/40/0                                   |          |
//! | F   | 8 @100 on 03-27                               |                   | 2/0/2/0                                     | max_qty 40 |
//! | G   | 2 @50 on 03-28                                |                   | 0/0/0/10                                    |          |

use analytics::query::{render, session, Format, SessionLimits};
use analytics::reports::{self, Measure, Report, ReportParams};
use analytics::rows::{Converter, DayRows, RecordIn};
use analytics::sink::{encode_chunk, write_levels, Chunk, Sink};
use analytics::store::Store;
use chrono::NaiveDate;
use engine::core::*;

fn at(date: &str) -> u64 {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    d.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp_millis() as u64
}

fn sell(sku: &str, qty: i64, price: i64, hold: Option<u64>) -> MovementKind {
    MovementKind::Sell {
        sku: sku.into(),
        location: "dc".into(),
        qty,
        unit_price: Some(price),
        hold,
        allow_negative: false,
        units: Units::ANY,
    }
}

fn settings(sku: &str, s: Settings) -> MovementKind {
    MovementKind::SetSettings { sku: sku.into(), location: "dc".into(), settings: s }
}

/// (date, movement, outcome)
fn history() -> Vec<(&'static str, MovementKind, Outcome)> {
    let ok = Ok(Detail::None);
    let lead = |d: u16| Settings { lead_time_days: d, ..Settings::default() };
    vec![
        ("2025-12-01", sell("D", 7, 900, None), ok),
        ("2026-01-01", settings("A", lead(7)), ok),
        ("2026-01-01", settings("C", Settings { reorder_qty: Some(12), ..lead(14) }), ok),
        ("2026-01-01", settings("F", Settings { max_qty: Some(40), ..Settings::default() }), ok),
        ("2026-01-15", sell("E", 1, 300, None), ok),
        ("2026-02-15", sell("A", 10, 500, None), ok),
        ("2026-03-05", sell("B", 25, 1000, None), ok),
        ("2026-03-10", sell("A", 10, 500, None), ok),
        (
            "2026-03-12",
            MovementKind::Reserve {
                hold: 0,
                lines: vec![Line {
                    sku: "C".into(),
                    location: "dc".into(),
                    qty: 10,
                    unit_price: Some(200),
                    kit: None,
                    units: Units::ANY,
                }],
                expires_at: at("2026-03-13"),
            },
            Ok(Detail::Hold(4242)),
        ),
        ("2026-03-12", sell("C", 4, 200, Some(4242)), ok),
        ("2026-03-12", MovementKind::Commit { hold: 4242 }, ok),
        ("2026-03-20", sell("A", 20, 500, None), ok),
        ("2026-03-21", sell("A", 100, 500, None), Err(Reason::InsufficientStock)),
        ("2026-03-27", sell("F", 8, 100, None), ok),
        ("2026-03-28", sell("G", 2, 50, None), ok),
    ]
}

fn level(sku: &str, on_hand: i64, reserved: i64, incoming: i64) -> LevelView {
    LevelView {
        sku: sku.into(),
        location: "dc".into(),
        on_hand,
        reserved,
        unsellable: 0,
        incoming,
        safety_stock: 0,
        available: on_hand - reserved,
    }
}

async fn dataset(dir: &std::path::Path) -> Store {
    let store = Store::open(dir.to_str().unwrap()).unwrap();
    let mut sink = Sink::open(store.clone(), "test".into()).await.unwrap();
    let mut conv = Converter::default();
    let mut rows = DayRows::default();
    let history = history();
    let fx = Effects::default();
    for (i, (date, kind, outcome)) in history.iter().enumerate() {
        let m = Movement { key: None, channel: "web".into(), reference: None, occurred_at: None, kind: kind.clone() };
        let r = RecordIn { seq: i as u64 + 1, shard: 0, recorded_at: at(date), movement: &m, outcome, effects: &fx };
        conv.convert(&r, rows.builder_for(at(date)));
    }
    let last = history.len() as u64;
    let chunk = Chunk::new(1, last, rows, &mut conv);
    sink.commit(encode_chunk(chunk).unwrap()).await.unwrap();
    let levels = vec![
        level("A", 5, 0, 0),
        level("B", 100, 0, 0),
        level("C", 3, 3, 5),
        level("D", 50, 0, 0),
        level("E", 40, 0, 0),
        level("F", 2, 0, 0),
        level("G", 0, 0, 10),
    ];
    write_levels(&store, last, at("2026-03-28"), &levels).await.unwrap();
    store
}

fn params() -> ReportParams {
    ReportParams { top: 0, ..ReportParams::new(NaiveDate::from_ymd_opt(2026, 3, 28).unwrap()) }
}

async fn csv(store: &Store, report: Report, p: &ReportParams) -> Vec<String> {
    let ctx = session(store, SessionLimits::default()).await.unwrap();
    let batches = reports::run(&ctx, report, p).await.unwrap();
    render(&batches, Format::Csv).unwrap().lines().map(String::from).collect()
}

#[tokio::test]
async fn best_sellers_rank_by_units_and_by_revenue_with_the_previous_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    assert_eq!(
        csv(&store, Report::BestSellers, &params()).await,
        [
            "rank,sku,units,revenue_cents,prev_units,change_units,change_pct",
            "1,A,30,15000,10,20,200.0",
            "2,B,25,25000,0,25,",
            "3,C,10,2000,0,10,",
            "4,F,8,800,0,8,",
            "5,G,2,100,0,2,",
        ]
    );
    let by_revenue = ReportParams { by: Measure::Revenue, top: 2, ..params() };
    let rows = csv(&store, Report::BestSellers, &by_revenue).await;
    assert_eq!(rows[1..], ["1,B,25,25000,0,25,", "2,A,30,15000,10,20,200.0"]);
}

#[tokio::test]
async fn abc_classes_by_share_of_units() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // Total 75: A (0 before) A, B (30 before < 60) A, C (55 < 60) A, F (65 < 71.25) B, G (73) C.
    assert_eq!(
        csv(&store, Report::Abc, &params()).await,
        [
            "sku,units,revenue_cents,share_pct,cumulative_pct,class",
            "A,30,15000,40.0,40.0,A",
            "B,25,25000,33.33,73.33,A",
            "C,10,2000,13.33,86.67,A",
            "F,8,800,10.67,97.33,B",
            "G,2,100,2.67,100.0,C",
        ]
    );
}

#[tokio::test]
async fn slow_movers_put_dead_stock_first_then_the_lowest_sell_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // Sell-through = sold / (sold + on hand): A 30/35, B 25/125, C 10/13, F 8/10; D and E sold
    // nothing in the window. D's last sale (2025-12-01) is more than 90 days back: dead stock.
    // G has nothing on hand.
    assert_eq!(
        csv(&store, Report::SlowMovers, &params()).await,
        [
            "sku,on_hand,available,units_sold,velocity_per_day,sell_through_pct,days_of_cover,last_sale,dead_stock",
            "D,50,50,0,0.0,0.0,,,true",
            "E,40,40,0,0.0,0.0,,2026-01-15,false",
            "B,100,100,25,0.89,20.0,112.0,2026-03-05,false",
            "C,3,0,10,0.36,76.9,0.0,2026-03-12,false",
            "F,2,2,8,0.29,80.0,7.0,2026-03-27,false",
            "A,5,5,30,1.07,85.7,4.7,2026-03-20,false",
        ]
    );
}

#[tokio::test]
async fn reorder_orders_what_the_lead_time_needs_most_urgent_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    // sigma = sqrt((sum of squares - sum^2/28) / 27) over all 28 days.
    // A: 30 units (10 + 20): velocity 1.0714/day, sigma 4.1627, lead 7: demand 7.5 + safety
    //    1.644854 * 4.1627 * sqrt 7 = 18.12 -> target 26; 5 available: order 21, 4.7 days left.
    // C: 10 units in one day: 0.3571/day, sigma 1.8898, lead 14: 5.0 + 11.63 -> 17; 0 + 5
    //    incoming: short 12, one multiple of reorder_qty 12; 14 days left.
    // F: 8 units: 0.2857/day, sigma 1.5119, lead 7: 2.0 + 6.58 -> 9; 2 available: fill up to
    //    max_qty 40: order 38; 7 days left.
    // B (target 27, has 100), G (target 3, has 10 incoming), D and E (no sales): no order.
    let rows = csv(&store, Report::Reorder, &params()).await;
    let head: Vec<String> = rows.iter().map(|r| r.split(',').take(12).collect::<Vec<_>>().join(",")).collect();
    assert_eq!(
        head,
        [
            "sku,location,velocity_per_day,lead_time_days,lead_time_demand,safety_stock,available,incoming,available_plus_incoming,target,order_qty,days_left",
            "A,dc,1.07,7,7.5,18.1,5,0,5,26,21,4.7",
            "F,dc,0.29,7,2.0,6.6,2,0,2,9,38,7.0",
            "C,dc,0.36,14,5.0,11.6,0,5,5,17,12,14.0",
        ]
    );
    assert!(rows[1].ends_with("order 21"), "{}", rows[1]);
    assert!(rows[2].ends_with("order 38 to fill up to max_qty 40"), "{}", rows[2]);
    assert!(rows[3].contains("out of stock; available 0 + incoming 5 = 5 is below 17"), "{}", rows[3]);
    assert!(rows[3].ends_with("(multiples of reorder_qty 12)"), "{}", rows[3]);
    // A lower service level needs less safety stock: A's target drops to 7.5 + 1.2816 * 4.1627 * sqrt 7 -> 22.
    let p90 = ReportParams { service_level: 0.90, ..params() };
    let rows = csv(&store, Report::Reorder, &p90).await;
    assert!(rows[1].starts_with("A,dc,1.07,7,7.5,14.1,5,0,5,22,17,"), "{}", rows[1]);
}

#[tokio::test]
async fn trends_give_every_day_of_the_window_with_a_moving_average() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    let p = ReportParams { top: 1, ..params() };
    let rows = csv(&store, Report::Trends, &p).await;
    assert_eq!(rows.len(), 1 + 28, "one row per day for the top SKU");
    assert_eq!(rows[0], "sku,date,units,moving_avg_7d,units_7d,prev_units_7d,week_over_week_pct");
    // A sold 10 on 03-10 and 20 on 03-20.
    assert_eq!(rows[10], "A,2026-03-10,10,1.43,10,0,");
    assert_eq!(rows[16], "A,2026-03-16,0,1.43,10,0,");
    assert_eq!(rows[17], "A,2026-03-17,0,0.0,0,10,-100.0");
    // 03-14..20 holds the 20, 03-07..13 the 10: +100%.
    assert_eq!(rows[20], "A,2026-03-20,20,2.86,20,10,100.0");
}

#[tokio::test]
async fn settings_and_levels_tables_and_a_location_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = dataset(dir.path()).await;
    let ctx = session(&store, SessionLimits::default()).await.unwrap();
    let sql = "SELECT sku, reorder_qty, max_qty, lead_time_days FROM settings ORDER BY sku";
    let b = analytics::query::run_sql(&ctx, sql).await.unwrap();
    assert_eq!(render(&b, Format::Csv).unwrap(), "sku,reorder_qty,max_qty,lead_time_days\nA,,,7\nC,12,,14\nF,,40,0\n");
    let b = analytics::query::run_sql(&ctx, "SELECT count(*) AS n, sum(on_hand) AS on_hand FROM levels").await.unwrap();
    assert_eq!(render(&b, Format::Csv).unwrap(), "n,on_hand\n7,200\n");
    let elsewhere = ReportParams { location: Some("store-1".into()), ..params() };
    assert_eq!(csv(&store, Report::BestSellers, &elsewhere).await.len(), 1, "only the header");
}
