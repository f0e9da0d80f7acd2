//! The SQL side: a DataFusion session over a snapshot store with the tables `movements`,
//! `level_history`, `levels` (the latest snapshot), `settings`, `lot_history` and `lots` (the
//! newest state of every lot, with its unit cost), and printing results as a table, CSV or JSON.
//!
//! Where `settings` comes from: the `settings/` files, which hold every accepted `set_settings`
//! movement (each chunk writes its own beside its movement files: the same rows as the
//! `set_settings` rows of `movements`) and the settings a checkpoint holds (written by `import`,
//! for settings set by movements the log no longer has). The newest by sequence number wins for
//! each (SKU, location); `settings_history` is every row. Level snapshots carry `safety_stock`
//! but not the other settings.
//!
//! Where `lots` comes from: `lot_history`, which is every lot change (each chunk writes the lots
//! its movements changed, from `Effects.lots`) and the lot snapshots `import` writes (the lots a
//! checkpoint holds, for lots that no ingested movement changed). A lot's state is its newest row
//! by sequence number; a lot with no units and no reservation is gone.

use crate::schema::{self, LEVELS, LOT_HISTORY, MOVEMENTS, SETTINGS};
use crate::store::Store;
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// RFC 4180 CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Limits of a query session.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Memory DataFusion may use for joins, sorts and aggregations; past it, it spills or fails.
    pub memory_bytes_max: usize,
    /// Threads scanning and aggregating (0: one per core).
    pub threads: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { memory_bytes_max: 2 << 30, threads: 0 }
    }
}

/// The `settings` view (see the module docs).
pub const SETTINGS_VIEW_SQL: &str = "\
SELECT seq, sku, location, reorder_point, reorder_qty, max_qty, safety_stock, lead_time_days
FROM (
  SELECT *, row_number() OVER (PARTITION BY sku, location ORDER BY seq DESC) AS newest
  FROM settings_history
) WHERE newest = 1";

/// The `levels` view: the newest snapshot of `level_history`.
pub const LEVELS_VIEW_SQL: &str =
    "SELECT * FROM level_history WHERE snapshot_seq = (SELECT max(snapshot_seq) FROM level_history)";

/// The common table expressions of the lot state and costs, as of the last change recorded
/// before `before_ms` (every change if `None`), at one location (every one if `None`), with unit
/// costs from the receives up to the UTC day `receives_through` (every receive if `None`):
///
/// - `lot_state`: the newest row of every lot, if it has units or a reservation;
/// - `lot_cost`: per (SKU, lot), the average `unit_cost` of its receives, weighted by quantity;
/// - `sku_cost`: per SKU, the same over all its receives (any lot or none): the fallback.
pub fn lot_ctes(before_ms: Option<u64>, receives_through: Option<chrono::NaiveDate>, location: Option<&str>) -> String {
    let mut conditions = Vec::new();
    if let Some(ms) = before_ms {
        conditions.push(format!("CAST(recorded_at AS BIGINT) < {ms}"));
    }
    if let Some(l) = location {
        conditions.push(format!("location = '{}'", l.replace('\'', "''")));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let through = receives_through.map(|d| format!(" AND date <= DATE '{}'", d.format("%Y-%m-%d"))).unwrap_or_default();
    format!(
        "lot_state AS (
  SELECT seq, recorded_at, sku, location, lot, expires_at, on_hand, reserved, expired
  FROM (
    SELECT *, row_number() OVER (PARTITION BY sku, location, lot ORDER BY seq DESC) AS newest
    FROM lot_history{filter})
  WHERE newest = 1 AND (on_hand <> 0 OR reserved <> 0)),
received AS (
  SELECT sku, lot, qty, unit_cost FROM movements
  WHERE kind = 'receive' AND accepted AND unit_cost IS NOT NULL{through}),
lot_cost AS (
  SELECT sku, lot, CAST(sum(qty * unit_cost) AS DOUBLE) / sum(qty) AS unit_cost
  FROM received WHERE lot IS NOT NULL GROUP BY sku, lot),
sku_cost AS (
  SELECT sku, CAST(sum(qty * unit_cost) AS DOUBLE) / sum(qty) AS unit_cost
  FROM received GROUP BY sku)"
    )
}

/// The `lots` view: the current state of every lot with its unit cost (see [`lot_ctes`]).
pub fn lots_view_sql() -> String {
    format!(
        "WITH {}
SELECT s.sku, s.location, s.lot, s.expires_at, s.on_hand, s.reserved, s.expired,
       round(coalesce(lc.unit_cost, sc.unit_cost), 2) AS unit_cost,
       CASE WHEN lc.unit_cost IS NOT NULL THEN 'lot' WHEN sc.unit_cost IS NOT NULL THEN 'sku' END AS unit_cost_from,
       s.seq AS last_change_seq, s.recorded_at AS last_change_at
FROM lot_state s
LEFT JOIN lot_cost lc ON s.sku = lc.sku AND s.lot = lc.lot
LEFT JOIN sku_cost sc ON s.sku = sc.sku",
        lot_ctes(None, None, None)
    )
}

fn with_date(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("date", DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

async fn register_listing(
    ctx: &SessionContext,
    store: &Store,
    name: &str,
    dir: &str,
    schema: SchemaRef,
    partitioned: bool,
) -> Result<()> {
    let has_files = store.list(dir).await?.iter().any(|n| n.ends_with(".parquet"));
    if !has_files {
        let schema = if partitioned { with_date(&schema) } else { schema };
        ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        return Ok(());
    }
    let url = ListingTableUrl::parse(format!("{}{dir}/", store.url))?;
    let mut options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if partitioned {
        options = options.with_table_partition_cols(vec![("date".into(), DataType::Date32)]);
    }
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// A session with every table of `store` registered.
pub async fn session(store: &Store, limits: SessionLimits) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true);
    if limits.threads > 0 {
        config = config.with_target_partitions(limits.threads);
    }
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(limits.memory_bytes_max, 1.0).build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if store.local.is_none() {
        ctx.register_object_store(&store.url, store.os.clone());
    }
    register_listing(&ctx, store, "movements", schema::MOVEMENTS_DIR, MOVEMENTS.clone(), true).await?;
    register_listing(&ctx, store, "level_history", schema::LEVELS_DIR, LEVELS.clone(), false).await?;
    register_listing(&ctx, store, "settings_history", schema::SETTINGS_DIR, SETTINGS.clone(), false).await?;
    register_listing(&ctx, store, "lot_history", schema::LOTS_DIR, LOT_HISTORY.clone(), false).await?;
    ctx.sql(&format!("CREATE VIEW levels AS {LEVELS_VIEW_SQL}")).await?;
    ctx.sql(&format!("CREATE VIEW settings AS {SETTINGS_VIEW_SQL}")).await?;
    ctx.sql(&format!("CREATE VIEW lots AS {}", lots_view_sql())).await?;
    Ok(ctx)
}

/// Runs one statement and collects its result.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.with_context(|| "the query is not valid (tables: movements, levels, level_history, settings, lots, lot_history; `\\d TABLE` in the prompt lists columns)".to_string())?;
    let schema = df.schema().as_arrow().clone();
    let batches = df.collect().await?;
    if batches.is_empty() {
        // Still print the header of an empty result.
        return Ok(vec![RecordBatch::new_empty(Arc::new(schema))]);
    }
    Ok(batches)
}

/// Prints batches in a format.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                return Ok("(no rows)\n".into());
            }
            Ok(format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?))
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8(out)?)
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
            Ok(String::from_utf8(out)?)
        }
    }
}
