//! The merchant reports, each one DataFusion SQL query over the snapshot tables. The SQL is
//! built here from a few parameters (window, as-of date, location, top N) and is printed by
//! `stock-analytics report NAME --show-sql`; `docs/analytics.md` shows each one.
//!
//! Shared definitions:
//! - a **sale** is an accepted `sell`, `commit` or `complete_commit` row (a `complete_commit` is
//!   the engine finishing a commit cut by a crash); its units are `qty` and its revenue
//!   `qty * unit_price` (cents; no price counts 0); a **kit sale** is the sale rows of one hold
//!   marked with one kit at one location, and counts `kit_qty` kits; its revenue is
//!   `kit_qty * kit_unit_price` (the price per kit on the mark; none counts 0), plus its rows'
//!   own revenue (component lines carry no price, so normally 0);
//! - the **window** is the `window_days` UTC days ending with `as_of` (inclusive), selected by
//!   the `date` partition, so only those files are read;
//! - the **stock** is the newest level snapshot taken on or before `as_of` (the oldest one if
//!   none is that old); the **stock by lot** is each lot's newest `lot_history` row recorded
//!   before the end of `as_of`.

use crate::query::{lot_ctes, run_sql};
use anyhow::{bail, Result};
use arrow::array::RecordBatch;
use chrono::{Duration as Days, NaiveDate};
use datafusion::prelude::SessionContext;

/// The reports `report NAME` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Report {
    /// Units and revenue by SKU over the window, with rank and change against the previous window.
    BestSellers,
    /// SKUs on hand with the lowest sell-through and highest days of cover, and dead stock.
    SlowMovers,
    /// What to order now, per SKU and location, most urgent first.
    Reorder,
    /// Daily units sold for the top SKUs, with a 7-day moving average and week-over-week change.
    Trends,
    /// ABC classes (80/15/5) by share of units or revenue.
    Abc,
    /// Stock by lot that expires within `--within` days (or has expired and is still on hand),
    /// with its value, soonest first.
    Expiring,
}

impl Report {
    pub const ALL: [Report; 6] =
        [Report::BestSellers, Report::SlowMovers, Report::Reorder, Report::Trends, Report::Abc, Report::Expiring];

    pub fn name(self) -> &'static str {
        match self {
            Report::BestSellers => "best-sellers",
            Report::SlowMovers => "slow-movers",
            Report::Reorder => "reorder",
            Report::Trends => "trends",
            Report::Abc => "abc",
            Report::Expiring => "expiring",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Report::BestSellers => "Best-sellers",
            Report::SlowMovers => "Slow movers and dead stock",
            Report::Reorder => "Reorder recommendations",
            Report::Trends => "Trends: daily units sold",
            Report::Abc => "ABC classes",
            Report::Expiring => "Expiring stock by lot",
        }
    }
}

/// What to rank by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    #[default]
    Units,
    Revenue,
}

/// Parameters of every report.
#[derive(Clone, Debug)]
pub struct ReportParams {
    pub window_days: u32,
    /// Last day of the window (inclusive, UTC).
    pub as_of: NaiveDate,
    pub location: Option<String>,
    /// Rows shown (0: all).
    pub top: usize,
    pub by: Measure,
    /// Service level for the reorder report's safety stock (0.5 to 0.9999).
    pub service_level: f64,
    /// Lead time where a level has no `lead_time_days` setting.
    pub lead_time_days: u32,
    /// Dead stock: on hand and no sale in this many days.
    pub dead_days: u32,
    /// Expiring: lots that expire within this many days after the end of `as_of`.
    pub within_days: u32,
    /// Best-sellers: ranked per channel (the top `top` of each).
    pub by_channel: bool,
    /// Best-sellers: rank kits (bundles) by kits sold, instead of stock SKUs.
    pub kits: bool,
}

impl ReportParams {
    pub fn new(as_of: NaiveDate) -> ReportParams {
        ReportParams {
            window_days: 28,
            as_of,
            location: None,
            top: 10,
            by: Measure::Units,
            service_level: 0.95,
            lead_time_days: 7,
            dead_days: 90,
            within_days: 30,
            by_channel: false,
            kits: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.window_days < 2 || self.window_days > 3660 {
            bail!("--window must be 2 to 3660 days, got {}", self.window_days);
        }
        if !(0.5..1.0).contains(&self.service_level) {
            bail!("--service-level must be at least 0.5 and below 1 (for example 0.95), got {}", self.service_level);
        }
        if self.within_days > 3660 {
            bail!("--within must be 0 to 3660 days, got {}", self.within_days);
        }
        Ok(())
    }

    fn start(&self) -> NaiveDate {
        self.as_of - Days::days(self.window_days as i64 - 1)
    }
}

fn date(d: NaiveDate) -> String {
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn location_filter(p: &ReportParams) -> String {
    p.location.as_deref().map(|l| format!(" AND location = {}", quote(l))).unwrap_or_default()
}

fn limit(p: &ReportParams) -> String {
    if p.top == 0 {
        String::new()
    } else {
        format!("\nLIMIT {}", p.top)
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn z_for_service_level(p: f64) -> f64 {
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_5,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [0.007_784_695_709_041_462, 0.322_467_129_070_039_8, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -z_for_service_level(1.0 - p)
    }
}

/// Stock per (SKU, location): the newest snapshot on or before the as-of date.
fn stock_sql(p: &ReportParams) -> String {
    format!(
        "SELECT sku, location, on_hand, available, incoming FROM level_history
  WHERE snapshot_seq = (
    SELECT coalesce(max(CASE WHEN CAST(snapshot_at AS DATE) <= {as_of} THEN snapshot_seq END), min(snapshot_seq))
    FROM level_history){loc}",
        as_of = date(p.as_of),
        loc = location_filter(p)
    )
}

const SALES: &str = "kind IN ('sell', 'commit', 'complete_commit') AND accepted";

/// Milliseconds since the epoch at the end of a UTC day (the start of the next).
fn end_of_day_ms(d: NaiveDate) -> u64 {
    let next = d + Days::days(1);
    next.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis() as u64
}

/// `best-sellers`: stock SKUs (or kits, with `kits`) ranked by units or revenue in the window,
/// overall or per channel (`by_channel`), with the previous window.
fn best_sellers_sql(p: &ReportParams) -> String {
    let w = p.window_days;
    let (start, end) = (date(p.start()), date(p.as_of));
    let prev_start = date(p.start() - Days::days(w as i64));
    let loc = location_filter(p);
    let order = match p.by {
        Measure::Units => "units DESC, revenue_cents DESC",
        Measure::Revenue => "revenue_cents DESC, units DESC",
    };
    let (ch, ch_col) = if p.by_channel { ("channel, ", "channel") } else { ("", "") };
    let sums = |units: &str, revenue: &str| {
        format!(
            "sum(CASE WHEN date >= {start} THEN {units} ELSE 0 END) AS units,
         sum(CASE WHEN date >= {start} THEN {revenue} ELSE 0 END) AS revenue_cents,
         sum(CASE WHEN date < {start} THEN {units} ELSE 0 END) AS prev_units"
        )
    };
    let (item, s) = if p.kits {
        // One row per kit sale: the sale rows of one hold marked with the kit, at one location
        // (a hold split over shards is committed in parts, each part's rows carry the mark). Its
        // revenue is the kits times the price per kit on the mark, counted once, not per row.
        let s = format!(
            "WITH kit_sales AS (
  SELECT kit, min(channel) AS channel, min(date) AS date, max(kit_qty) AS kits,
         max(kit_qty) * coalesce(max(kit_unit_price), 0)
           + sum(qty * coalesce(unit_price, 0)) AS revenue_cents
  FROM movements
  WHERE {SALES} AND kit IS NOT NULL AND date BETWEEN {prev_start} AND {end}{loc}
  GROUP BY kit, location, hold),
s AS (
  SELECT {ch}kit,
         {sums}
  FROM kit_sales
  GROUP BY {ch}kit)",
            sums = sums("kits", "revenue_cents")
        );
        ("kit", s)
    } else {
        let s = format!(
            "WITH s AS (
  SELECT {ch}sku,
         {sums}
  FROM movements
  WHERE {SALES} AND date BETWEEN {prev_start} AND {end}{loc}
  GROUP BY {ch}sku)",
            sums = sums("qty", "qty * coalesce(unit_price, 0)")
        );
        ("sku", s)
    };
    let change = "units - prev_units AS change_units,
       CASE WHEN prev_units > 0 THEN round(100.0 * (units - prev_units) / prev_units, 1) END AS change_pct";
    if !p.by_channel {
        return format!(
            "{s}
SELECT rank() OVER (ORDER BY {order}) AS rank, {item}, units, revenue_cents, prev_units,
       {change}
FROM s WHERE units > 0
ORDER BY rank, {item}{limit}",
            limit = limit(p)
        );
    }
    // The top N of each channel.
    let top = if p.top == 0 { String::new() } else { format!(" WHERE n <= {}", p.top) };
    format!(
        "{s},
r AS (
  SELECT {ch_col}, rank() OVER (PARTITION BY {ch_col} ORDER BY {order}) AS rank,
         row_number() OVER (PARTITION BY {ch_col} ORDER BY {order}, {item}) AS n,
         {item}, units, revenue_cents, prev_units
  FROM s WHERE units > 0)
SELECT {ch_col}, rank, {item}, units, revenue_cents, prev_units,
       {change}
FROM r{top}
ORDER BY {ch_col}, rank, {item}"
    )
}

/// `expiring`: stock by lot as of the end of `as_of` that expires within `within_days` after it
/// (or has expired and is still on hand), valued at its unit cost, soonest first.
fn expiring_sql(p: &ReportParams) -> String {
    let now = end_of_day_ms(p.as_of);
    let until = now + p.within_days as u64 * 86_400_000;
    format!(
        "-- stock by lot as of the end of {as_of} UTC ({now} ms since the epoch), expiring within
-- {within} days after it (before {until} ms) or expired
WITH {ctes}
SELECT s.sku, s.location, s.lot, s.expires_at,
       round((CAST(s.expires_at AS BIGINT) - {now}) / 86400000.0, 1) AS days_left,
       CASE WHEN s.expired OR CAST(s.expires_at AS BIGINT) <= {now} THEN 'expired' ELSE 'expiring' END AS status,
       s.on_hand, s.reserved,
       round(coalesce(lc.unit_cost, sc.unit_cost), 2) AS unit_cost_cents,
       CASE WHEN lc.unit_cost IS NOT NULL THEN 'lot' WHEN sc.unit_cost IS NOT NULL THEN 'sku' END AS cost_from,
       CAST(round(s.on_hand * coalesce(lc.unit_cost, sc.unit_cost)) AS BIGINT) AS value_cents
FROM lot_state s
LEFT JOIN lot_cost lc ON s.sku = lc.sku AND s.lot = lc.lot
LEFT JOIN sku_cost sc ON s.sku = sc.sku
WHERE s.on_hand > 0 AND CAST(s.expires_at AS BIGINT) < {until}
ORDER BY s.expires_at, s.sku, s.location, s.lot{limit}",
        as_of = p.as_of,
        within = p.within_days,
        ctes = lot_ctes(Some(now), Some(p.as_of), p.location.as_deref()),
        limit = limit(p)
    )
}

/// The SQL of a report.
pub fn sql(report: Report, p: &ReportParams) -> String {
    let w = p.window_days;
    let (start, end) = (date(p.start()), date(p.as_of));
    let loc = location_filter(p);
    match report {
        Report::BestSellers => best_sellers_sql(p),
        Report::Expiring => expiring_sql(p),
        Report::SlowMovers => {
            let lookback = p.dead_days.max(w);
            let look_start = date(p.as_of - Days::days(lookback as i64 - 1));
            let dead_start = date(p.as_of - Days::days(p.dead_days as i64 - 1));
            format!(
                "WITH stock AS (
  SELECT sku, sum(on_hand) AS on_hand, sum(available) AS available
  FROM ({stock}) GROUP BY sku HAVING sum(on_hand) > 0),
sales AS (
  SELECT sku, sum(CASE WHEN date >= {start} THEN qty ELSE 0 END) AS units, max(date) AS last_sale
  FROM movements
  WHERE {SALES} AND date BETWEEN {look_start} AND {end}{loc}
  GROUP BY sku),
r AS (
  SELECT stock.sku, stock.on_hand, stock.available, coalesce(sales.units, 0) AS units_sold, sales.last_sale
  FROM stock LEFT JOIN sales ON stock.sku = sales.sku)
SELECT sku, on_hand, available, units_sold,
       round(units_sold / {w}.0, 2) AS velocity_per_day,
       round(100.0 * units_sold / (units_sold + on_hand), 1) AS sell_through_pct,
       CASE WHEN units_sold > 0 THEN round(available * {w}.0 / units_sold, 1) END AS days_of_cover,
       last_sale,
       (last_sale IS NULL OR last_sale < {dead_start}) AS dead_stock
FROM r
ORDER BY dead_stock DESC, sell_through_pct ASC, days_of_cover DESC NULLS FIRST, sku{limit}",
                stock = stock_sql(p),
                limit = limit(p)
            )
        }
        Report::Reorder => {
            let z = z_for_service_level(p.service_level);
            let pct = p.service_level * 100.0;
            format!(
                "WITH daily AS (
  SELECT sku, location, date, sum(qty) AS units
  FROM movements
  WHERE {SALES} AND date BETWEEN {start} AND {end}{loc}
  GROUP BY sku, location, date),
demand AS (
  SELECT sku, location, sum(units) AS units, sum(units * units) AS units_sq
  FROM daily GROUP BY sku, location),
calc AS (
  SELECT s.sku, s.location, s.available, s.incoming, s.available + s.incoming AS position,
         coalesce(d.units, 0) / {w}.0 AS velocity,
         -- standard deviation of daily units over all {w} days, days without a sale counting 0
         sqrt(greatest(0.0, (coalesce(d.units_sq, 0) - coalesce(d.units, 0) * coalesce(d.units, 0) / {w}.0) / ({w} - 1))) AS sigma,
         CASE WHEN c.lead_time_days > 0 THEN c.lead_time_days ELSE {lt} END AS lead_time_days,
         c.reorder_qty, c.max_qty
  FROM ({stock}) s
  LEFT JOIN demand d ON s.sku = d.sku AND s.location = d.location
  LEFT JOIN settings c ON s.sku = c.sku AND s.location = c.location),
need AS (
  SELECT *, velocity * lead_time_days AS lead_time_demand,
         {z:.6} * sigma * sqrt(lead_time_days) AS safety_stock,
         ceil(velocity * lead_time_days + {z:.6} * sigma * sqrt(lead_time_days)) AS target
  FROM calc),
orders AS (
  SELECT *, CAST(CASE
      WHEN max_qty IS NOT NULL THEN greatest(target, max_qty) - position
      WHEN reorder_qty > 0 THEN ceil((target - position) / reorder_qty) * reorder_qty
      ELSE target - position END AS BIGINT) AS order_qty,
    CASE WHEN velocity > 0 THEN round(greatest(position, 0) / velocity, 1) ELSE 0.0 END AS days_left
  FROM need WHERE position < target)
SELECT sku, location, round(velocity, 2) AS velocity_per_day, lead_time_days,
       round(lead_time_demand, 1) AS lead_time_demand, round(safety_stock, 1) AS safety_stock,
       available, incoming, position AS available_plus_incoming, CAST(target AS BIGINT) AS target,
       order_qty, days_left,
       concat(
         CASE WHEN available <= 0 THEN 'out of stock; ' ELSE '' END,
         'available ', available, ' + incoming ', incoming, ' = ', position,
         ' is below ', CAST(target AS BIGINT), ' (', round(lead_time_demand, 1), ' expected in ', lead_time_days,
         ' days of lead time at ', round(velocity, 2), '/day + ', round(safety_stock, 1),
         ' safety stock for {pct}% service): order ', order_qty,
         CASE WHEN max_qty IS NOT NULL THEN concat(' to fill up to max_qty ', max_qty)
              WHEN reorder_qty > 0 THEN concat(' (multiples of reorder_qty ', reorder_qty, ')')
              ELSE '' END) AS reason
FROM orders
ORDER BY days_left ASC, order_qty DESC, sku, location{limit}",
                stock = stock_sql(p),
                lt = p.lead_time_days,
                limit = limit(p)
            )
        }
        Report::Trends => {
            // 13 days before the window feed the moving average and week-over-week change of
            // its first days.
            let ext_start = date(p.start() - Days::days(13));
            let days = w as i64 + 13;
            let top = if p.top == 0 { 10 } else { p.top };
            format!(
                "WITH sales AS (
  SELECT sku, date, sum(qty) AS units
  FROM movements
  WHERE {SALES} AND date BETWEEN {ext_start} AND {end}{loc}
  GROUP BY sku, date),
leaders AS (
  SELECT sku, sum(units) AS total FROM sales WHERE date >= {start}
  GROUP BY sku ORDER BY total DESC, sku LIMIT {top}),
days AS (
  SELECT CAST({ext_start} + CAST(n AS INT) AS DATE) AS date FROM (SELECT unnest(range(0, {days})) AS n)),
grid AS (
  SELECT leaders.sku, days.date, coalesce(sales.units, 0) AS units
  FROM leaders CROSS JOIN days
  LEFT JOIN sales ON sales.sku = leaders.sku AND sales.date = days.date),
rolling AS (
  SELECT sku, date, units,
         avg(units) OVER (PARTITION BY sku ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS avg_7d,
         sum(units) OVER (PARTITION BY sku ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS units_7d,
         sum(units) OVER (PARTITION BY sku ORDER BY date ROWS BETWEEN 13 PRECEDING AND 7 PRECEDING) AS prev_units_7d
  FROM grid)
SELECT r.sku, r.date, r.units, round(r.avg_7d, 2) AS moving_avg_7d, r.units_7d, r.prev_units_7d,
       CASE WHEN r.prev_units_7d > 0 THEN round(100.0 * (r.units_7d - r.prev_units_7d) / r.prev_units_7d, 1) END
         AS week_over_week_pct
FROM rolling r JOIN leaders ON r.sku = leaders.sku
WHERE r.date >= {start}
ORDER BY leaders.total DESC, r.sku, r.date"
            )
        }
        Report::Abc => {
            let m = match p.by {
                Measure::Units => "units",
                Measure::Revenue => "revenue_cents",
            };
            format!(
                "WITH s AS (
  SELECT sku, sum(qty) AS units, sum(qty * coalesce(unit_price, 0)) AS revenue_cents
  FROM movements
  WHERE {SALES} AND date BETWEEN {start} AND {end}{loc}
  GROUP BY sku),
r AS (
  SELECT *, sum({m}) OVER () AS total,
         coalesce(sum({m}) OVER (ORDER BY {m} DESC, sku ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
  FROM s WHERE {m} > 0)
-- a SKU is A while the SKUs ranked above it hold less than 80% of the total, B below 95%
SELECT sku, units, revenue_cents,
       round(100.0 * {m} / total, 2) AS share_pct,
       round(100.0 * (before + {m}) / total, 2) AS cumulative_pct,
       CASE WHEN before < 0.80 * total THEN 'A' WHEN before < 0.95 * total THEN 'B' ELSE 'C' END AS class
FROM r
ORDER BY {m} DESC, sku{limit}",
                limit = limit(p)
            )
        }
    }
}

/// Runs a report.
pub async fn run(ctx: &SessionContext, report: Report, p: &ReportParams) -> Result<Vec<RecordBatch>> {
    p.validate()?;
    run_sql(ctx, &sql(report, p)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_values_match_the_normal_table() {
        for (p, z) in
            [(0.5, 0.0), (0.9, 1.281552), (0.95, 1.644854), (0.975, 1.959964), (0.99, 2.326348), (0.999, 3.090232)]
        {
            assert!((z_for_service_level(p) - z).abs() < 1e-5, "{p}: {}", z_for_service_level(p));
        }
    }
}
