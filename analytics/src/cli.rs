//! The `stock-analytics` command line: flags with their defaults, and what each subcommand runs.

use crate::import::{import, ImportOptions};
use crate::ingest::{ingest, snapshot_levels, IngestOptions};
use crate::query::{render, run_sql, session, Format, SessionLimits};
use crate::reports::{self, Measure, Report, ReportParams};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use engine::client::ConnectArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Perpetua analytics: Parquet snapshots of the engine's change feed, SQL and reports.
///
/// `ingest` follows a running stockd (or `import --wal` reads a stopped engine's log) into
/// Parquet files under --snapshots; `sql` and `report` answer questions from those files with
/// DataFusion, never touching the engine. The files are plain Parquet (see docs/analytics.md):
/// pyarrow, DuckDB or Spark read them as well.
#[derive(Parser, Debug)]
#[command(name = "stock-analytics", version, verbatim_doc_comment)]
pub struct Args {
    /// Where the Parquet files are kept: a folder, or an s3://bucket/prefix URL (credentials
    /// from AWS_* environment variables).
    #[arg(long, env = "PERPETUA_SNAPSHOTS", default_value = "./snapshots", global = true, value_name = "DIR|URL")]
    pub snapshots: String,
    /// Output of queries and reports.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Memory the query engine may use, in MiB (joins and aggregations spill or fail past it).
    #[arg(long, default_value_t = 2048, global = true, value_name = "MIB")]
    pub memory_mib: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Follow the engine's change feed into Parquet (until Ctrl-C, or --once).
    ///
    /// Resumes where the files end: it may be stopped or killed at any moment and restarted
    /// with no gap and no duplicate row.
    Ingest {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Catch up to the engine's durable point, write a levels snapshot, and exit.
        #[arg(long)]
        once: bool,
        /// Rows per committed chunk, at most (one Parquet file per day per chunk).
        #[arg(long, default_value_t = 1_000_000, value_name = "ROWS")]
        chunk_rows: usize,
        /// Commit what was read at least this often (e.g. 30s, 5m).
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        flush_every: Duration,
        /// Write a levels snapshot this often (e.g. 1h; 0 for never).
        #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
        levels_every: Duration,
        /// If the engine no longer keeps the first records, start an empty store at the oldest
        /// it keeps (the history then starts there).
        #[arg(long)]
        allow_gap: bool,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Take a levels snapshot from the running engine now (levels/levels-SEQ.parquet).
    Levels {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Import the log of a stopped engine (backfill), resuming where the files end.
    Import {
        /// The engine's data directory (holding wal/ and checkpoints/).
        #[arg(long, value_name = "DIR")]
        wal: PathBuf,
        /// Rows per committed chunk, at most.
        #[arg(long, default_value_t = 1_000_000, value_name = "ROWS")]
        chunk_rows: usize,
        /// If the log no longer starts at the first record, start an empty store at its oldest.
        #[arg(long)]
        allow_gap: bool,
        /// Do not write a levels snapshot, a lot snapshot and settings at the end.
        #[arg(long)]
        no_levels: bool,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Run SQL over the snapshots; with no query, an interactive prompt (history in
    /// ~/.stock_analytics_history). Tables: movements, levels, level_history, settings, lots,
    /// lot_history.
    Sql {
        /// The query (quote it).
        query: Option<String>,
    },
    /// A merchant report: best-sellers, slow-movers, reorder, trends, abc, expiring, or all
    /// (with --html).
    Report {
        /// best-sellers | slow-movers | reorder | trends | abc | expiring | all
        name: String,
        #[command(flatten)]
        params: ReportArgs,
        /// Draw a chart (trends: daily units; best-sellers: bars) to FILE.png or FILE.svg.
        #[arg(long, value_name = "FILE")]
        chart: Option<PathBuf>,
        /// `report all`: write DIR/index.html with every report and chart.
        #[arg(long, value_name = "DIR")]
        html: Option<PathBuf>,
        /// Print the SQL instead of running it.
        #[arg(long)]
        show_sql: bool,
    },
    /// Show what the snapshots hold: committed sequence number, rows, files.
    Status,
}

/// Parameters shared by the reports.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Length of the window, in days (e.g. 7d, 28d, 90d).
    #[arg(long, default_value = "28d", value_parser = parse_days, value_name = "DAYS")]
    pub window: u32,
    /// Last day of the window, YYYY-MM-DD (UTC). [default: the newest day in the snapshots]
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<chrono::NaiveDate>,
    /// Only this location.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
    /// Rows shown (0 for all).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Rank best-sellers and ABC classes by units or revenue.
    #[arg(long, value_enum, default_value_t = Measure::Units)]
    pub by: Measure,
    /// Reorder: probability of not running out during the lead time.
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    pub service_level: f64,
    /// Reorder: lead time where a level has no lead_time_days setting.
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub lead_time_days: u32,
    /// Slow movers: dead stock is on hand with no sale in this many days.
    #[arg(long, default_value = "90d", value_parser = parse_days, value_name = "DAYS")]
    pub dead_days: u32,
    /// Expiring: lots that expire within this many days after the end of the --as-of day (e.g.
    /// 30d; 0d for expired stock only). Expired lots still on hand are always listed.
    #[arg(long, default_value = "30d", value_parser = parse_days, value_name = "DAYS")]
    pub within: u32,
    /// Best-sellers: rank per sales channel (the top N of each channel).
    #[arg(long)]
    pub by_channel: bool,
    /// Best-sellers: rank kits (bundles) by kits sold, instead of stock SKUs (whose units include
    /// those sold inside kits).
    #[arg(long)]
    pub kits: bool,
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `28d` or `28` as days.
pub fn parse_days(s: &str) -> Result<u32, String> {
    let n = s.trim().trim_end_matches('d');
    n.parse().map_err(|_| format!("{s:?} is not a number of days like 28d"))
}

/// The newest `date=` partition in the store, if any.
pub async fn newest_day(store: &Store) -> Result<Option<chrono::NaiveDate>> {
    let names = store.list(crate::schema::MOVEMENTS_DIR).await?;
    Ok(names
        .iter()
        .filter_map(|n| n.split('/').find_map(|p| p.strip_prefix("date=")))
        .filter_map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .max())
}

/// Report parameters from the flags, the as-of date defaulting to the newest day of data.
pub async fn report_params(store: &Store, a: &ReportArgs) -> Result<ReportParams> {
    let as_of = match a.as_of {
        Some(d) => d,
        None => newest_day(store).await?.unwrap_or_else(|| chrono::Utc::now().date_naive()),
    };
    let p = ReportParams {
        window_days: a.window,
        as_of,
        location: a.location.clone(),
        top: a.top,
        by: a.by,
        service_level: a.service_level,
        lead_time_days: a.lead_time_days,
        dead_days: a.dead_days.max(1),
        within_days: a.within,
        by_channel: a.by_channel,
        kits: a.kits,
    };
    p.validate()?;
    Ok(p)
}

fn report_by_name(name: &str) -> Result<Report> {
    Report::ALL.into_iter().find(|r| r.name() == name).with_context(|| {
        format!(
            "unknown report {name:?}: use best-sellers, slow-movers, reorder, trends, abc, expiring, or all (with --html DIR)"
        )
    })
}

/// Tells the user when a store has no movements yet (a wrong --snapshots, or nothing ingested).
async fn warn_if_empty(store: &Store) -> Result<()> {
    if newest_day(store).await?.is_none() {
        eprintln!(
            "stock-analytics: no movements in {} yet: run `stock-analytics ingest` or `import --wal DIR` first, or pass --snapshots",
            store.show("")
        );
    }
    Ok(())
}

/// An error and its causes on one line, leaving out causes that only repeat the text before them
/// (DataFusion's errors carry their message again in their source).
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Runs the command line.
pub async fn run(args: Args) -> Result<()> {
    let store = Store::open(&args.snapshots)?;
    let limits = SessionLimits { memory_bytes_max: args.memory_mib << 20, threads: 0 };
    match args.command {
        Command::Ingest { connect, once, chunk_rows, flush_every, levels_every, allow_gap, quiet } => {
            let opts = IngestOptions {
                connect,
                once,
                chunk_rows: chunk_rows.max(1),
                flush_every,
                levels_every: (!levels_every.is_zero()).then_some(levels_every),
                allow_gap,
                progress: !quiet,
            };
            let r = ingest(store.clone(), opts).await?;
            println!(
                "ingest: records {}..={} committed, {} rows in all, in {}",
                r.first_seq,
                r.last_seq,
                r.rows_total,
                store.show("")
            );
        }
        Command::Levels { connect } => {
            let client =
                connect.connect().await.with_context(|| format!("cannot connect to stockd at {}", connect.server))?;
            let (seq, name) = snapshot_levels(&client, &store).await?;
            client.close_and_wait().await;
            println!("levels: snapshot at sequence number {seq} written to {}", store.show(&name));
        }
        Command::Import { wal, chunk_rows, allow_gap, no_levels, quiet } => {
            let opts = ImportOptions { data_dir: wal, chunk_rows, allow_gap, levels: !no_levels, progress: !quiet };
            let r = import(store.clone(), opts).await?;
            let secs = r.elapsed.as_secs_f64();
            if r.records == 0 {
                println!("import: nothing new after sequence number {} in {}", r.last_seq, store.show(""));
            } else {
                println!(
                    "import: {} records ({}..={}) in {secs:.2} s ({:.0} records/s); {} rows in all in {}",
                    r.records,
                    r.first_seq,
                    r.last_seq,
                    r.records as f64 / secs.max(1e-9),
                    r.rows,
                    store.show("")
                );
            }
            if let Some(f) = r.levels_file {
                println!("import: levels snapshot {}", store.show(&f));
            }
            if let Some(f) = r.lots_file {
                println!("import: lot snapshot {}", store.show(&f));
            }
        }
        Command::Sql { query } => {
            warn_if_empty(&store).await?;
            let ctx = session(&store, limits).await?;
            match query {
                Some(q) => print!("{}", render(&run_sql(&ctx, &q).await?, args.format)?),
                None => crate::repl::prompt(&ctx, args.format).await?,
            }
        }
        Command::Report { name, params, chart, html, show_sql } => {
            if name != "all" {
                report_by_name(&name)?;
            }
            if !show_sql {
                warn_if_empty(&store).await?;
            }
            let p = report_params(&store, &params).await?;
            if name == "all" {
                let Some(dir) = html else { bail!("`report all` writes HTML: pass --html DIR") };
                let ctx = session(&store, limits).await?;
                let page = crate::html::write_all(&ctx, &p, &dir).await?;
                println!("report: wrote {}", page.display());
                return Ok(());
            }
            let report = report_by_name(&name)?;
            if (p.by_channel || p.kits) && report != Report::BestSellers {
                bail!("--by-channel and --kits apply to best-sellers only (report {name})");
            }
            if show_sql {
                println!("{};", reports::sql(report, &p));
                return Ok(());
            }
            let ctx = session(&store, limits).await?;
            let batches = reports::run(&ctx, report, &p).await?;
            print!("{}", render(&batches, args.format)?);
            if let Some(path) = chart {
                crate::chart::draw(report, &batches, &p, &path)?;
                eprintln!("report: chart written to {}", path.display());
            }
        }
        Command::Status => {
            let s = crate::sink::read_committed(&store).await?;
            let files = store.list(crate::schema::MOVEMENTS_DIR).await?.len();
            let levels = store.list(crate::schema::LEVELS_DIR).await?;
            println!("snapshots: {}", store.show(""));
            println!(
                "committed through sequence number {} (history starts at {})",
                s.last_seq,
                s.history_starts_at.max(1)
            );
            println!("rows: {} in {files} movement files; open holds: {}", s.rows_total, s.holds.open.len());
            println!(
                "live lots: {} (changes per lot {})",
                s.lots.live.len(),
                if s.lots.complete { "exact: the history is complete" } else { "unknown until a lot's first change" }
            );
            println!(
                "level snapshots: {} (newest: {})",
                levels.len(),
                levels.last().map(String::as_str).unwrap_or("none")
            );
            println!("last written by: {}", if s.source.is_empty() { "nothing yet" } else { &s.source });
        }
    }
    Ok(())
}
