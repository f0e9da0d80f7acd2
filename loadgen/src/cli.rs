//! Command-line flags of `stock-loadgen`, with their defaults, and their checks.

use crate::complex::{ComplexConfig, ALLOCATED_SKUS_DEFAULT};
use crate::workload::Mix;
use clap::Parser;
use engine::client::ConnectArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Perpetua's load generator: realistic checkout traffic against the stock engine (or Redis, or
/// PostgreSQL), with honest latency figures and an end-of-run stock audit.
///
/// It seeds a catalogue (SKUs x locations, stock and reorder settings), then drives a shop-like
/// mix: reservations then commits (paid checkouts) or releases (abandoned carts), multi-item
/// carts, point-of-sale sales, returns, receipts that answer reorder alerts, counts and
/// transfers, with Zipf-skewed SKU popularity. Open loop with --rate (latency measured from each
/// request's intended send time, no coordinated omission), closed loop otherwise. At the end it
/// reads every level back and checks that seeded stock plus every acknowledged change equals
/// it, and that no online sale oversold; it exits with status 1 if not.
///
/// Complex inventory (engine only, off by default): --lots, --serial-share, --kits and
/// --channels seed lots, serial numbers, kits and channel allocations, make the traffic name
/// them, and verify them at the end (lots add up, serials are where the load generator left
/// them, no channel sold into another's allocation).
///
/// Examples:
///   stock-loadgen --duration 30s --batch 1 --concurrency 512            (closed loop)
///   stock-loadgen --rate 100000 --duration 30s                           (open loop)
///   stock-loadgen --find-max --p99-max-ms 5                              (highest rate that holds)
///   stock-loadgen --lots 4 --serial-share 0.1 --kits 50 --channels web,amazon
///   stock-loadgen --target redis://127.0.0.1:6379 --connections 8
///   stock-loadgen --target postgres://bench@127.0.0.1:5432/bench --connections 16
#[derive(Parser, Debug, Clone)]
#[command(name = "stock-loadgen", version, verbatim_doc_comment)]
pub struct Args {
    /// What to load: `perpetua` (stockd at --server), `redis://HOST:PORT`, or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
    #[arg(long, env = "LOADGEN_TARGET", default_value = "perpetua", value_name = "TARGET", help_heading = "Target")]
    pub target: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Connections to the target (QUIC connections, Redis connections or PostgreSQL sessions).
    #[arg(long, default_value_t = 4, value_name = "N", help_heading = "Target")]
    pub connections: usize,
    /// Time allowed for one answer; a request still unanswered this long after the end of the
    /// run is abandoned and its movements are put in doubt.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Target")]
    pub request_timeout: Duration,
    /// Perpetua: times the client library sends a request again (same bytes, same idempotency
    /// keys) after a timeout or a broken connection.
    #[arg(long, default_value_t = 2, value_name = "N", help_heading = "Target")]
    pub retries: u32,
    /// Perpetua: request streams per QUIC connection.
    #[arg(long, default_value_t = 4, value_name = "N", help_heading = "Target")]
    pub streams: usize,
    /// Perpetua: send movements without idempotency keys (steps in doubt then stay unchecked).
    #[arg(long, help_heading = "Target")]
    pub no_keys: bool,
    /// PostgreSQL: `SET synchronous_commit` to this in every session (`on`, `off`...).
    /// [default: the server's setting]
    #[arg(long, value_name = "VALUE", help_heading = "Target")]
    pub pg_synchronous_commit: Option<String>,

    /// Seed of the workload: the same seed gives the same sequence of operations.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    pub seed: u64,
    /// SKUs in the catalogue.
    #[arg(long, default_value_t = 100_000, value_name = "N", help_heading = "Workload")]
    pub skus: u32,
    /// Locations (a warehouse and stores); every SKU is stocked at each.
    #[arg(long, default_value_t = 4, value_name = "M", help_heading = "Workload")]
    pub locations: u16,
    /// Zipf exponent of SKU popularity (0 = uniform, 1 = long tail, higher = hotter head).
    #[arg(long, default_value_t = 1.0, value_name = "S", help_heading = "Workload")]
    pub zipf: f64,
    /// Draw only the N most popular SKUs (a flash sale). [default: all]
    #[arg(long, value_name = "N", help_heading = "Workload")]
    pub hot_skus: Option<u32>,
    /// Seeded stock per level, in units (its reorder point is a quarter of it, and a receipt
    /// brings half of it). Hot SKUs run down to their reorder points and get replenished.
    #[arg(long, default_value_t = 1000, value_name = "UNITS", help_heading = "Workload")]
    pub stock: i64,
    /// Spread stock by popularity instead (mean --stock per level, at least 10): a well-stocked
    /// shop where little runs out.
    #[arg(long, help_heading = "Workload")]
    pub stock_popular: bool,
    /// SKU codes are PREFIX followed by 8 digits.
    #[arg(long, default_value = "SKU-", value_name = "PREFIX", help_heading = "Workload")]
    pub sku_prefix: String,
    /// Relative weights of the operations: commit (paid one-line checkout), abandon (released
    /// one-line checkout), multi (2-5 line cart), pos (point-of-sale sale, allow_negative),
    /// return, transfer, count. Names left out keep their default.
    #[arg(long, default_value_t = Mix::default(), value_parser = Mix::parse, value_name = "NAME=W,...", help_heading = "Workload")]
    pub mix: Mix,
    /// Do not seed: run on the levels the target already has (they are read first).
    #[arg(long, help_heading = "Workload")]
    pub no_seed: bool,
    /// Holds expire this long after they are placed.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION", help_heading = "Workload")]
    pub hold_ttl: Duration,
    /// Where reorder alerts come from: `target` (the engine's change feed, or what the Redis
    /// scripts and PostgreSQL functions return) or `inferred` (from the acknowledged movements,
    /// with no change-feed subscriber on the engine).
    #[arg(long, default_value = "target", value_parser = ["target", "inferred"], value_name = "FROM", help_heading = "Workload")]
    pub alerts: String,
    /// A receipt of the reorder quantity follows each reorder alert after this long.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, value_name = "DURATION", help_heading = "Workload")]
    pub receipt_delay: Duration,

    /// Complex inventory (engine only; off by default). Seed every SKU but the serial-tracked
    /// ones as N lots with staggered expiry dates (30 days apart; the codes are the dates)
    /// instead of loose stock. Sales and reservations take first-expiry-first-out, a tenth of
    /// them (and of returns) naming a seeded lot; receipts bring a new lot; a count becomes an
    /// adjustment of one lot. At most 16.
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Complex inventory")]
    pub lots: u8,
    /// Share of SKUs that are serial-tracked (engine only): seeded with serial numbers (at most
    /// 32 units per level), and every movement of them names its serials, which the load
    /// generator hands out so that no two movements in flight name the same one; returns name
    /// sold serials; a count becomes an adjustment naming the serials found or missing.
    #[arg(long, default_value_t = 0.0, value_name = "F", help_heading = "Complex inventory")]
    pub serial_share: f64,
    /// Define N kits of 2 or 3 components (engine only), drawn by popularity among the SKUs that
    /// are not serial-tracked; a fifth of one-line checkouts buy a kit instead (the engine holds
    /// and sells its components).
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Complex inventory")]
    pub kits: u32,
    /// Online sales channels (engine only), e.g. `web,amazon`: checkouts are split evenly over
    /// them; every channel after the first gets an allocation (ring-fenced stock) of
    /// --allocation-share of each level of the --allocated-skus most popular SKUs. [default: all
    /// online traffic is `web`, no allocation]
    #[arg(long, value_name = "LIST", help_heading = "Complex inventory")]
    pub channels: Option<String>,
    /// Share of a level's seeded stock ring-fenced for each allocated channel.
    #[arg(long, default_value_t = 0.2, value_name = "F", help_heading = "Complex inventory")]
    pub allocation_share: f64,
    /// The N most popular SKUs get allocations. [default: --hot-skus, or 100]
    #[arg(long, value_name = "N", help_heading = "Complex inventory")]
    pub allocated_skus: Option<u32>,

    /// Open loop: movements per second to send on schedule. Without it: closed loop.
    #[arg(long, value_name = "MV/S", help_heading = "Load")]
    pub rate: Option<f64>,
    /// Closed loop: concurrent clients. Open loop: most requests in flight at once.
    #[arg(long, default_value_t = 256, value_name = "N", help_heading = "Load")]
    pub concurrency: usize,
    /// Movements per request.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Load")]
    pub batch: usize,
    /// How long to send (e.g. 30s, 2m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Load")]
    pub duration: Duration,
    /// Send this many operations (checkouts count once) instead of running for --duration.
    #[arg(long, value_name = "N", help_heading = "Load")]
    pub operations: Option<u64>,
    /// First send the same load this long without measuring it (a warm-up), then measure.
    /// An engine that has just started still grows its tables (idempotency keys, holds): the
    /// warm-up shows the steady state a long-running engine is in. Verification covers both.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Load")]
    pub warmup: Duration,
    /// Threads of the load generator's runtime (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Load")]
    pub threads: usize,
    /// Raise the open-loop rate step by step until p99 passes --p99-max-ms or errors appear;
    /// report the highest rate that held. Starts at --rate (default 20000), goes up by half
    /// while steps hold, then bisects; a step that does not hold is tried once more before it
    /// counts (a shared machine has hiccups).
    #[arg(long, help_heading = "Load")]
    pub find_max: bool,
    /// The p99 bound of --find-max, in milliseconds.
    #[arg(long, default_value_t = 5.0, value_name = "MS", help_heading = "Load")]
    pub p99_max_ms: f64,
    /// Length of each --find-max step.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Load")]
    pub step_duration: Duration,
    /// Most --find-max steps.
    #[arg(long, default_value_t = 12, value_name = "N", help_heading = "Load")]
    pub find_max_steps: u32,

    /// Write the whole report as JSON to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Report")]
    pub json: Option<PathBuf>,
    /// A name for this run in the report (a scenario name).
    #[arg(long, default_value = "run", value_name = "TEXT", help_heading = "Report")]
    pub label: String,
    /// No progress line.
    #[arg(long, help_heading = "Report")]
    pub quiet: bool,
    /// Process id of the target's server on this machine: the report then gives its CPU time
    /// per movement (with its reaped children, as PostgreSQL's backends), a figure that holds on
    /// a busy machine.
    #[arg(long, value_name = "PID", help_heading = "Report")]
    pub server_pid: Option<u32>,
    /// Skip the end-of-run verification.
    #[arg(long, help_heading = "Report")]
    pub no_verify: bool,
    /// Perpetua: most change-feed records read to check every online take for an oversell
    /// (0: skip that check; the end-of-run level check still runs).
    #[arg(long, default_value_t = 2_000_000, value_name = "N", help_heading = "Report")]
    pub history_records_max: u64,
}

impl Args {
    /// Checks that the flags make sense together; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.concurrency == 0 || self.batch == 0 || self.threads == 0 {
            return Err("--connections, --concurrency, --batch and --threads must be at least 1".into());
        }
        if self.batch > engine::protocol::Limits::default().batch_movements_max as usize {
            return Err(format!(
                "--batch {} is above the server's default limit of {} movements per request",
                self.batch,
                engine::protocol::Limits::default().batch_movements_max
            ));
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be a positive number of movements per second".into());
            }
        }
        if self.duration.is_zero() && self.operations.is_none() {
            return Err("--duration must be above 0 (or give --operations)".into());
        }
        if self.find_max && self.operations.is_some() {
            return Err("--find-max runs for --step-duration per step; leave out --operations".into());
        }
        if self.p99_max_ms <= 0.0 {
            return Err("--p99-max-ms must be above 0".into());
        }
        if self.complex()?.is_on() && self.no_seed {
            return Err("--lots, --serial-share, --kits and --channels need the seeding (the serial numbers the load \
                 generator may sell, the kits, the allocations): leave out --no-seed"
                .into());
        }
        Ok(())
    }

    /// The complex-inventory options.
    pub fn complex(&self) -> Result<ComplexConfig, String> {
        let channels = match &self.channels {
            Some(text) => ComplexConfig::parse_channels(text)?,
            None => Vec::new(),
        };
        Ok(ComplexConfig {
            lots: self.lots,
            serial_share: self.serial_share,
            kits: self.kits,
            channels,
            allocation_share: self.allocation_share,
            allocated_skus: self.allocated_skus.or(self.hot_skus).unwrap_or(ALLOCATED_SKUS_DEFAULT),
        })
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `250us` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use us, ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_flags_are_checked() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3 parsecs").unwrap_err().contains("unknown unit"));
        let args = Args::parse_from(["stock-loadgen", "--batch", "0"]);
        assert!(args.validate().unwrap_err().contains("--batch"));
        let args = Args::parse_from(["stock-loadgen", "--mix", "pos=50", "--rate", "1000"]);
        assert_eq!(args.mix.pos, 50);
        assert!(args.validate().is_ok());
    }
}
