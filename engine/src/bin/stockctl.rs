//! `stockctl`: the command line of a Perpetua server: movements, level lookups, settings,
//! tokens, and `watch` on the change feed. Output for people by default, `--json` for scripts.

use clap::{Args, Parser, Subcommand};
use engine::client::{new_key, Client, ClientError, ConnectArgs};
use engine::core::*;
use engine::protocol::{FeedEvent, FeedFilter, MovementOutcome, Role};
use serde_json::{json, Value};
use std::process::ExitCode;

/// Talk to a Perpetua stock server (stockd).
///
/// With no connection flags it uses the stockd started in this folder: ./data/tls/cert.pem to
/// verify the server and ./data/admin.token to authenticate. Elsewhere pass --server, --ca and
/// --token (or PERPETUA_SERVER, PERPETUA_CA, PERPETUA_TOKEN).
///
/// Exit status: 0 done, 1 error (connection, authentication, bad input), 2 movement rejected.
#[derive(Parser, Debug)]
#[command(name = "stockctl", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Print JSON (one document, or one line per event for `watch`) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// What every movement carries.
#[derive(Args, Debug, Clone)]
struct Common {
    /// Idempotency key: a retry with the same key returns the first outcome. [default: a new
    /// random key]
    #[arg(long)]
    key: Option<String>,
    /// Where the movement comes from (web, pos, erp, ...); channel allocations apply to sales and
    /// reservations from it.
    #[arg(long, default_value = "cli")]
    channel: String,
    /// Order, purchase order or count sheet.
    #[arg(long)]
    reference: Option<String>,
    /// When it happened, in milliseconds since the Unix epoch (client time, recorded as given).
    #[arg(long, value_name = "MS")]
    occurred_at: Option<Millis>,
}

/// Which units a movement is about: a lot, serial numbers (default: any units).
#[derive(Args, Debug, Clone, Default)]
struct UnitArgs {
    /// Lot code (1 to 32 bytes). Coming in (receive, return, adjust +N): the lot the units go
    /// into. Going out (sell, adjust -N, transfer, reserve) or counted: this lot only. [default:
    /// in: loose units, in no lot; out: lots first to expire first, then loose units]
    #[arg(long, value_name = "CODE")]
    lot: Option<String>,
    /// When a lot new to this SKU expires: YYYY-MM-DD (the lot expires at the end of that day,
    /// UTC) or an RFC 3339 timestamp such as 2030-01-31T18:00:00Z. Needs --lot.
    #[arg(long, value_name = "DATE", value_parser = parse_expiry, requires = "lot")]
    expires: Option<Millis>,
    /// Serial numbers of a serial-tracked SKU: repeat the flag or separate them with commas.
    /// Their number is the quantity when QTY is left out.
    #[arg(long = "serial", value_name = "S", value_delimiter = ',')]
    serials: Vec<String>,
}

impl UnitArgs {
    fn units(&self) -> Units {
        Units { lot: self.lot.clone(), lot_expires_at: self.expires, serials: self.serials.clone() }
    }

    /// The quantity given, or the number of serial numbers.
    fn qty(&self, given: Option<Qty>) -> Result<Qty, ClientError> {
        match given {
            Some(q) => Ok(q),
            None if !self.serials.is_empty() => Ok(self.serials.len() as Qty),
            None => Err(ClientError::Config(
                "give QTY, or name the serial numbers with --serial (QTY is then their number)".into(),
            )),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Goods arrived: on_hand += QTY (with --reference naming a purchase order, incoming shrinks).
    #[command(after_help = "Examples:\n  stockctl receive TSHIRT-M dc-east 10 --unit-cost 450 --reference PO-17\n  \
        stockctl receive MILK dc-east 24 --lot L2405 --expires 2030-05-31\n  \
        stockctl receive PHONE dc-east --serial SN-1,SN-2,SN-3")]
    Receive {
        sku: String,
        location: String,
        /// Units received. [default: the number of --serial]
        qty: Option<Qty>,
        /// Cost per unit in minor units (cents).
        #[arg(long)]
        unit_cost: Option<i64>,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// A purchase order was placed: incoming += QTY.
    #[command(after_help = "Example:\n  stockctl expect TSHIRT-M dc-east 50 --reference PO-17")]
    Expect {
        sku: String,
        location: String,
        qty: Qty,
        #[command(flatten)]
        common: Common,
    },
    /// A sale: on_hand -= QTY; needs available stock (for --channel) unless it consumes --hold or
    /// --allow-negative. Without --lot, lots go first to expire first. A kit sells its components.
    #[command(after_help = "Examples:\n  stockctl sell TSHIRT-M dc-east 2 --unit-price 1999 --channel web\n  \
        stockctl sell MILK dc-east 3 --lot L2405\n  stockctl sell PHONE dc-east --serial SN-2\n  \
        stockctl sell GIFT-BOX dc-east 1")]
    Sell {
        sku: String,
        location: String,
        /// Units sold. [default: the number of --serial]
        qty: Option<Qty>,
        /// Price per unit in minor units (cents).
        #[arg(long)]
        unit_price: Option<i64>,
        /// Consume this hold (from `reserve`).
        #[arg(long)]
        hold: Option<HoldId>,
        /// Point of sale: record the sale even if it takes available below zero.
        #[arg(long)]
        allow_negative: bool,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// A customer return: on_hand += QTY (also unsellable with --damaged); into --lot if given.
    #[command(after_help = "Examples:\n  stockctl return TSHIRT-M dc-east 1 --damaged\n  \
        stockctl return PHONE dc-east --serial SN-2")]
    Return {
        sku: String,
        location: String,
        /// Units returned. [default: the number of --serial]
        qty: Option<Qty>,
        /// The goods are damaged: they count as unsellable.
        #[arg(long)]
        damaged: bool,
        #[arg(long)]
        unit_price: Option<i64>,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Correct on_hand by DELTA (negative to remove) with a reason. A negative DELTA naming an
    /// expired --lot writes its units off.
    #[command(after_help = "Examples:\n  stockctl adjust TSHIRT-M dc-east -1 --reason shrinkage\n  \
        stockctl adjust MILK dc-east -4 --reason damaged --lot L2405\n  \
        stockctl adjust PHONE dc-east -1 --reason damaged --serial SN-3")]
    Adjust {
        sku: String,
        location: String,
        /// +N or -N units (with --serial, N is their number).
        #[arg(allow_negative_numbers = true)]
        delta: Qty,
        /// correction, shrinkage, damaged, found or promotion.
        #[arg(long, value_parser = parse_adjust_reason)]
        reason: AdjustReason,
        /// Allow available to go below zero.
        #[arg(long)]
        allow_negative: bool,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// A physical count: on_hand := COUNTED (of --lot, which a level with lots needs); prints the
    /// variance. Serial-tracked SKUs are corrected with `adjust --serial` instead.
    #[command(after_help = "Examples:\n  stockctl count TSHIRT-M dc-east 12 --reference sheet-4\n  \
        stockctl count MILK dc-east 20 --lot L2405")]
    Count {
        sku: String,
        location: String,
        counted: Qty,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Move QTY of a SKU from one location to another, atomically, with its lots and serial numbers.
    #[command(after_help = "Examples:\n  stockctl transfer TSHIRT-M dc-east store-1 5\n  \
        stockctl transfer PHONE dc-east store-1 --serial SN-1")]
    Transfer {
        sku: String,
        from: String,
        to: String,
        /// Units moved. [default: the number of --serial]
        qty: Option<Qty>,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Hold stock for a checkout: every line or none. LINE is SKU:LOCATION:QTY[@UNIT_PRICE]; a kit
    /// holds its components. --lot and --serial name the units of a single line.
    #[command(
        after_help = "Examples:\n  stockctl reserve TSHIRT-M:dc-east:2@1999 SOCKS:dc-east:1 --expires-in 600\n  \
        stockctl reserve PHONE:dc-east:1 --serial SN-4"
    )]
    Reserve {
        #[arg(required = true, value_parser = parse_line)]
        lines: Vec<Line>,
        /// Seconds until the hold expires.
        #[arg(long, default_value_t = 900)]
        expires_in: u64,
        #[command(flatten)]
        units: UnitArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Turn a hold into sales (checkout paid).
    #[command(after_help = "Example:\n  stockctl commit 65537")]
    Commit {
        hold: HoldId,
        #[command(flatten)]
        common: Common,
    },
    /// Drop a hold (cart abandoned, payment failed).
    #[command(after_help = "Example:\n  stockctl release 65537")]
    Release {
        hold: HoldId,
        #[command(flatten)]
        common: Common,
    },
    /// Ring-fence QTY units of a level for a sales channel (admin, warehouse); --qty 0 removes the
    /// allocation. Sales from that channel use it first; other channels cannot take it.
    #[command(after_help = "Example:\n  stockctl allocate TSHIRT-M --location dc-east --channel amazon --qty 20")]
    Allocate {
        sku: String,
        #[arg(long)]
        location: String,
        /// The sales channel the units are kept for.
        #[arg(long)]
        channel: String,
        /// Units ring-fenced (a cap: it may exceed what is on hand).
        #[arg(long, allow_negative_numbers = true)]
        qty: Qty,
        /// Idempotency key. [default: a new random key]
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        reference: Option<String>,
    },
    /// The level of a SKU at one location, or at every location (a kit's is derived from its
    /// components).
    #[command(after_help = "Examples:\n  stockctl level TSHIRT-M dc-east\n  stockctl level TSHIRT-M")]
    Level { sku: String, location: Option<String> },
    /// Every level, or those of one location.
    #[command(after_help = "Example:\n  stockctl levels --location dc-east")]
    Levels {
        #[arg(long)]
        location: Option<String>,
    },
    /// The lots of a level, first to expire first, with its loose units and channel allocations.
    #[command(after_help = "Example:\n  stockctl lots MILK --location dc-east")]
    Lots {
        sku: String,
        #[arg(long)]
        location: String,
    },
    /// Where a serial number is, its state and every movement that named it.
    #[command(after_help = "Example:\n  stockctl serial PHONE SN-2")]
    Serial { sku: String, serial: String },
    /// What a sales channel may sell of a level: its allocation plus what no channel ring-fenced.
    #[command(after_help = "Example:\n  stockctl available TSHIRT-M --location dc-east --channel amazon")]
    Available {
        sku: String,
        #[arg(long)]
        location: String,
        #[arg(long)]
        channel: String,
    },
    /// Levels at or below their reorder point (or at or below zero when they have none).
    #[command(after_help = "Example:\n  stockctl low-stock --location dc-east")]
    LowStock {
        #[arg(long)]
        location: Option<String>,
    },
    /// Replenishment settings of a level.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Show a SKU's settings (serial tracking, expiry warning, kit), or change them (admin) with
    /// any of the flags: what is not given keeps its current value.
    #[command(after_help = "Examples:\n  stockctl sku-settings GIFT-BOX\n  \
        stockctl sku-settings GIFT-BOX --kit SOAP:2,TOWEL:1\n  \
        stockctl sku-settings PHONE --serial-tracked true\n  stockctl sku-settings MILK --expiry-warning-days 5")]
    SkuSettings {
        sku: String,
        /// Every unit has a serial number that movements must name (only while the SKU has no stock).
        #[arg(long, value_name = "true|false")]
        serial_tracked: Option<bool>,
        /// Raise a lot_expiring alert this many days before a lot expires (`none`: no warning).
        #[arg(long, value_name = "N|none", value_parser = parse_opt_days)]
        expiry_warning_days: Option<OptDays>,
        /// Make the SKU a kit of these components, COMPONENT:QTY per kit, comma-separated.
        #[arg(long, value_name = "SKU:QTY,...", value_delimiter = ',', value_parser = parse_component, conflicts_with = "no_kit")]
        kit: Vec<Component>,
        /// The SKU is no longer a kit.
        #[arg(long)]
        no_kit: bool,
        /// Idempotency key of the change. [default: a new random key]
        #[arg(long)]
        key: Option<String>,
    },
    /// API tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Follow the change feed: every movement with its outcome, level and lot changes, and alerts.
    #[command(after_help = "Examples:\n  stockctl watch\n  stockctl watch --alerts\n  \
        stockctl --json watch --from 1 --count 100")]
    Watch {
        /// Only events that raised an alert.
        #[arg(long)]
        alerts: bool,
        /// First sequence number to show. [default: what comes after now]
        #[arg(long)]
        from: Option<Seq>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Server status: durable sequence number, log size, connections.
    #[command(after_help = "Example:\n  stockctl status")]
    Status,
}

#[derive(Subcommand, Debug)]
enum SettingsCmd {
    /// Show the settings of a level.
    #[command(after_help = "Example:\n  stockctl settings get TSHIRT-M dc-east")]
    Get { sku: String, location: String },
    /// Change settings; what is not given keeps its current value.
    #[command(after_help = "Example:\n  stockctl settings set TSHIRT-M dc-east --reorder-point 10 --reorder-qty 50")]
    Set {
        sku: String,
        location: String,
        /// Raise a reorder alert when available falls to or below this (`none` to clear).
        #[arg(long, value_parser = parse_opt_qty)]
        reorder_point: Option<OptQty>,
        /// Fixed quantity to order (`none` to clear).
        #[arg(long, value_parser = parse_opt_qty)]
        reorder_qty: Option<OptQty>,
        /// Order up to this level, for min/max ordering (`none` to clear).
        #[arg(long, value_parser = parse_opt_qty)]
        max_qty: Option<OptQty>,
        /// Units never offered for sale.
        #[arg(long)]
        safety_stock: Option<Qty>,
        /// Supplier lead time in days.
        #[arg(long)]
        lead_time_days: Option<u16>,
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token; its secret is printed once.
    #[command(after_help = "Example:\n  stockctl token create till-3 --role checkout")]
    Create {
        name: String,
        /// admin, checkout, warehouse or reader.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Example:\n  stockctl token list")]
    List,
    /// Revoke a token by id; connections using it are refused from their next request.
    #[command(after_help = "Example:\n  stockctl token revoke 1a2b3c4d")]
    Revoke { id: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: admin, checkout, warehouse or reader"))
}

fn parse_adjust_reason(s: &str) -> Result<AdjustReason, String> {
    Ok(match s {
        "correction" => AdjustReason::Correction,
        "shrinkage" => AdjustReason::Shrinkage,
        "damaged" => AdjustReason::Damaged,
        "found" => AdjustReason::Found,
        "promotion" => AdjustReason::Promotion,
        _ => return Err(format!("unknown reason {s:?}: correction, shrinkage, damaged, found or promotion")),
    })
}

/// A quantity setting that may be cleared with `none`.
#[derive(Clone, Copy, Debug)]
struct OptQty(Option<Qty>);

fn parse_opt_qty(s: &str) -> Result<OptQty, String> {
    if s == "none" {
        return Ok(OptQty(None));
    }
    s.parse().map(|q| OptQty(Some(q))).map_err(|_| format!("{s:?} is not a quantity (or `none`)"))
}

fn parse_line(s: &str) -> Result<Line, String> {
    let bad = || format!("{s:?} is not SKU:LOCATION:QTY[@UNIT_PRICE]");
    let (rest, unit_price) = match s.rsplit_once('@') {
        Some((rest, price)) => (rest, Some(price.parse::<i64>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let (rest, qty) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (sku, location) = rest.rsplit_once(':').ok_or_else(bad)?;
    let qty = qty.parse().map_err(|_| bad())?;
    Ok(Line { sku: sku.into(), location: location.into(), qty, unit_price, kit: None, units: Units::ANY })
}

/// An expiry warning that may be cleared with `none`.
#[derive(Clone, Copy, Debug)]
struct OptDays(Option<u16>);

fn parse_opt_days(s: &str) -> Result<OptDays, String> {
    if s == "none" {
        return Ok(OptDays(None));
    }
    s.parse().map(|d| OptDays(Some(d))).map_err(|_| format!("{s:?} is not a number of days (0 to 65535) or `none`"))
}

fn parse_component(s: &str) -> Result<Component, String> {
    let bad = || format!("{s:?} is not COMPONENT:QTY (a SKU and how many of it one kit holds)");
    let (sku, qty) = s.rsplit_once(':').ok_or_else(bad)?;
    let qty = qty.parse().map_err(|_| bad())?;
    if sku.is_empty() {
        return Err(bad());
    }
    Ok(Component { sku: sku.into(), qty })
}

// ---- dates: the engine keeps milliseconds since the Unix epoch, UTC ----

/// Days since 1970-01-01 of a civil date (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A valid `YYYY-MM-DD` as its day number.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `--expires`: `YYYY-MM-DD` is the last millisecond of that day (UTC); otherwise an RFC 3339
/// timestamp (`2030-01-31T18:00:00Z`, `2030-01-31T18:00:00.250+02:00`).
fn parse_expiry(s: &str) -> Result<Millis, String> {
    let bad = || {
        format!(
            "{s:?} is not a date: give YYYY-MM-DD (the lot expires at the end of that day, UTC) or an RFC 3339 \
             timestamp such as 2030-01-31T18:00:00Z"
        )
    };
    if let Some(days) = parse_date(s) {
        let end = (days + 1).checked_mul(DAY_MILLIS as i64).map(|ms| ms - 1);
        return end.and_then(|ms| Millis::try_from(ms).ok()).ok_or_else(|| format!("{s:?} is before 1970"));
    }
    let days = s.get(..10).and_then(parse_date).ok_or_else(bad)?;
    let rest = s.get(10..).ok_or_else(bad)?;
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    let two = |t: &str| -> Option<i64> { t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())? };
    let (h, mi, se) = match (rest.get(0..2), rest.get(2..3), rest.get(3..5), rest.get(5..6), rest.get(6..8)) {
        (Some(h), Some(":"), Some(mi), Some(":"), Some(se)) => (two(h), two(mi), two(se)),
        _ => return Err(bad()),
    };
    let (h, mi, se) = (h.ok_or_else(bad)?, mi.ok_or_else(bad)?, se.ok_or_else(bad)?);
    if h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &rest[8..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse::<i64>().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1) {
                Some("+") => 1,
                Some("-") => -1,
                _ => return Err(bad()),
            };
            match (rest.get(1..3).and_then(two), rest.get(3..4), rest.get(4..6).and_then(two), rest.len()) {
                (Some(oh), Some(":"), Some(om), 6) if oh <= 23 && om <= 59 => sign * (oh * 60 + om),
                _ => return Err(bad()),
            }
        }
    };
    let ms = (((days * 24 + h) * 60 + mi - offset_min) * 60 + se.min(59)) * 1000 + millis;
    Millis::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

/// RFC 3339 in UTC: `2030-01-31T23:59:59.999Z` (milliseconds only when there are some).
fn iso(ms: Millis) -> String {
    let ms = ms as i64;
    let (days, in_day) = (ms.div_euclid(DAY_MILLIS as i64), ms.rem_euclid(DAY_MILLIS as i64));
    let (y, m, d) = civil_from_days(days);
    let (secs, millis) = (in_day / 1000, in_day % 1000);
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{time}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{time}.{millis:03}Z")
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOCKCTL_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stockctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", json!({"error": {"code": e.code(), "message": e.to_string()}}));
            }
            eprintln!("stockctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

fn movement(common: Common, kind: MovementKind) -> Movement {
    Movement {
        key: Some(common.key.unwrap_or_else(new_key)),
        channel: common.channel,
        reference: common.reference,
        occurred_at: common.occurred_at,
        kind,
    }
}

async fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    let json = cli.json;
    // Bad input is refused before connecting.
    let command = check(cli.command)?;
    let mut config = cli.connect.config()?;
    if matches!(command, Command::Watch { .. }) {
        // A follower waits out server restarts, however long.
        config.retry.retries = u32::MAX;
    }
    let client = Client::connect(config).await?;
    let result = dispatch(&client, command, json).await;
    client.close_and_wait().await;
    result
}

/// Checks what can be checked without the server, and fills in what the units imply.
fn check(mut command: Command) -> Result<Command, ClientError> {
    match &command {
        Command::Receive { qty, units, .. }
        | Command::Sell { qty, units, .. }
        | Command::Return { qty, units, .. }
        | Command::Transfer { qty, units, .. } => {
            units.qty(*qty)?;
        }
        _ => {}
    }
    if let Command::Reserve { lines, units, .. } = &mut command {
        let named = units.lot.is_some() || units.expires.is_some() || !units.serials.is_empty();
        if named {
            if lines.len() != 1 {
                return Err(ClientError::Config(
                    "--lot and --serial name the units of one line: reserve the other lines in another reservation"
                        .into(),
                ));
            }
            lines[0].units = units.units();
        }
    }
    Ok(command)
}

async fn dispatch(client: &Client, command: Command, json: bool) -> Result<ExitCode, ClientError> {
    use Command::*;
    let m = match command {
        Receive { sku, location, qty, unit_cost, units, common } => {
            let qty = units.qty(qty)?;
            movement(common, MovementKind::Receive { sku, location, qty, unit_cost, units: units.units() })
        }
        Expect { sku, location, qty, common } => movement(common, MovementKind::Expect { sku, location, qty }),
        Sell { sku, location, qty, unit_price, hold, allow_negative, units, common } => {
            let qty = units.qty(qty)?;
            let kind =
                MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units: units.units() };
            movement(common, kind)
        }
        Return { sku, location, qty, damaged, unit_price, units, common } => {
            let qty = units.qty(qty)?;
            let condition = if damaged { ReturnCondition::Damaged } else { ReturnCondition::Restock };
            let kind = MovementKind::Return { sku, location, qty, condition, unit_price, units: units.units() };
            movement(common, kind)
        }
        Adjust { sku, location, delta, reason, allow_negative, units, common } => {
            let kind = MovementKind::Adjust { sku, location, delta, reason, allow_negative, units: units.units() };
            movement(common, kind)
        }
        Count { sku, location, counted, units, common } => {
            movement(common, MovementKind::Count { sku, location, counted, units: units.units() })
        }
        Transfer { sku, from, to, qty, units, common } => {
            let qty = units.qty(qty)?;
            movement(common, MovementKind::Transfer { sku, from, to, qty, units: units.units() })
        }
        Reserve { lines, expires_in, units: _, common } => {
            let expires_at = now_ms() + expires_in * 1000;
            movement(common, MovementKind::Reserve { hold: 0, lines, expires_at })
        }
        Commit { hold, common } => movement(common, MovementKind::Commit { hold }),
        Release { hold, common } => movement(common, MovementKind::Release { hold }),
        Allocate { sku, location, channel, qty, key, reference } => Movement {
            key: Some(key.unwrap_or_else(new_key)),
            channel: "cli".into(),
            reference,
            occurred_at: None,
            kind: MovementKind::Allocate { sku, location, channel, qty },
        },
        Level { sku, location: None } => {
            let levels = client.sku_levels(&sku).await?;
            if json {
                println!("{}", serde_json::to_string(&levels).expect("json"));
            } else if levels.is_empty() {
                println!("no level for {sku} (nothing was ever recorded for it)");
            } else {
                print_levels(&levels);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Level { sku, location: Some(location) } => {
            let level = client.level(&sku, &location).await?;
            match (&level, json) {
                (_, true) => println!("{}", serde_json::to_string(&level).expect("json")),
                (Some(l), false) => print_levels(std::slice::from_ref(l)),
                (None, false) => println!("no level for {sku} at {location} (nothing was ever recorded there)"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Levels { location } => {
            let levels = client.levels(location.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&levels).expect("json"));
            } else {
                print_levels(&levels);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Lots { sku, location } => {
            let detail = client.level_detail(&sku, &location).await?;
            match (&detail, json) {
                (_, true) => println!("{}", detail.as_ref().map_or(Value::Null, detail_json)),
                (Some(d), false) => print_detail(d),
                (None, false) => {
                    let kit = client.sku_settings(&sku).await?.is_kit();
                    if kit {
                        println!("{sku} is a kit: it has no stock of its own (see its components' lots)");
                    } else {
                        println!("no level for {sku} at {location} (nothing was ever recorded there)");
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Serial { sku, serial } => {
            let view = client.serial(&sku, &serial).await?;
            match (&view, json) {
                (_, true) => println!("{}", view.as_ref().map_or(Value::Null, serial_json)),
                (Some(v), false) => print_serial(v),
                (None, false) => println!("no serial number {serial} of {sku} (the engine never saw it)"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Available { sku, location, channel } => {
            let available = client.available_for(&sku, &location, &channel).await?;
            if json {
                println!("{}", json!({"sku": sku, "location": location, "channel": channel, "available": available}));
            } else {
                match available {
                    Some(a) => println!("{sku} at {location} for channel {channel}: {a} available"),
                    None => println!("no level for {sku} at {location} (nothing was ever recorded there)"),
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        LowStock { location } => {
            let items = client.low_stock(location.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&items).expect("json"));
            } else {
                let mut rows = vec![row(&[
                    "SKU",
                    "LOCATION",
                    "AVAILABLE",
                    "REORDER_POINT",
                    "REORDER_QTY",
                    "MAX_QTY",
                    "LEAD_DAYS",
                ])];
                for i in &items {
                    let s = &i.settings;
                    rows.push(vec![
                        i.level.sku.clone(),
                        i.level.location.clone(),
                        i.level.available.to_string(),
                        opt(s.reorder_point),
                        opt(s.reorder_qty),
                        opt(s.max_qty),
                        s.lead_time_days.to_string(),
                    ]);
                }
                print_table(&rows);
                println!("{} low level(s)", items.len());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Settings(SettingsCmd::Get { sku, location }) => {
            let settings = client.settings(&sku, &location).await?.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string(&settings).expect("json"));
            } else {
                print_settings(&sku, &location, &settings);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Settings(SettingsCmd::Set {
            sku,
            location,
            reorder_point,
            reorder_qty,
            max_qty,
            safety_stock,
            lead_time_days,
            key,
        }) => {
            let mut s = client.settings(&sku, &location).await?.unwrap_or_default();
            if let Some(OptQty(v)) = reorder_point {
                s.reorder_point = v;
            }
            if let Some(OptQty(v)) = reorder_qty {
                s.reorder_qty = v;
            }
            if let Some(OptQty(v)) = max_qty {
                s.max_qty = v;
            }
            if let Some(v) = safety_stock {
                s.safety_stock = v;
            }
            if let Some(v) = lead_time_days {
                s.lead_time_days = v;
            }
            let key = key.unwrap_or_else(new_key);
            let outcome = client.set_settings(&sku, &location, s, Some(key.clone())).await?;
            let code = print_outcome(&key, &outcome, json);
            if !json && outcome.outcome.is_ok() {
                print_settings(&sku, &location, &s);
            }
            return Ok(code);
        }
        SkuSettings { sku, serial_tracked, expiry_warning_days, kit, no_kit, key } => {
            let mut s = client.sku_settings(&sku).await?;
            let change = serial_tracked.is_some() || expiry_warning_days.is_some() || !kit.is_empty() || no_kit;
            if !change {
                if json {
                    println!("{}", serde_json::to_string(&s).expect("json"));
                } else {
                    print_sku_settings(&sku, &s);
                }
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(v) = serial_tracked {
                s.serial_tracked = v;
            }
            if let Some(OptDays(v)) = expiry_warning_days {
                s.expiry_warning_days = v;
            }
            if !kit.is_empty() {
                s.components = kit;
            }
            if no_kit {
                s.components.clear();
            }
            let key = key.unwrap_or_else(new_key);
            let m = Movement {
                key: Some(key.clone()),
                channel: "cli".into(),
                reference: None,
                occurred_at: None,
                kind: MovementKind::SetSkuSettings { sku: sku.clone(), settings: s.clone() },
            };
            let outcome = client.submit_one(&m).await?;
            let code = print_outcome(&key, &outcome, json);
            if !json && outcome.outcome.is_ok() {
                print_sku_settings(&sku, &s);
            }
            return Ok(code);
        }
        Token(TokenCmd::Create { name, role }) => {
            let (info, secret) = client.create_token(&name, role).await?;
            if json {
                println!(
                    "{}",
                    json!({"id": info.id, "name": info.name, "role": info.role.as_str(), "created_at": info.created_at, "token": secret})
                );
            } else {
                println!("created token {} ({}, role {})", info.id, info.name, info.role);
                println!("{secret}");
                println!("(shown only now: keep it somewhere safe)");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Token(TokenCmd::List) => {
            let tokens = client.list_tokens().await?;
            if json {
                let list: Vec<Value> = tokens
                    .iter()
                    .map(|t| json!({"id": t.id, "name": t.name, "role": t.role.as_str(), "created_at": t.created_at}))
                    .collect();
                println!("{}", Value::Array(list));
            } else {
                let mut rows = vec![row(&["ID", "NAME", "ROLE", "CREATED_AT_MS"])];
                for t in &tokens {
                    rows.push(vec![t.id.clone(), t.name.clone(), t.role.to_string(), t.created_at.to_string()]);
                }
                print_table(&rows);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Token(TokenCmd::Revoke { id }) => {
            client.revoke_token(&id).await?;
            if json {
                println!("{}", json!({"revoked": id}));
            } else {
                println!("revoked token {id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Watch { alerts, from, count } => return watch(client, alerts, from, count, json).await,
        Status => {
            let s = client.status().await?;
            if json {
                println!(
                    "{}",
                    json!({"server": s.server, "durable_seq": s.durable_seq, "log_bytes": s.log_bytes,
                        "log_syncs": s.log_syncs, "shards": s.shards, "connections": s.connections, "uptime_ms": s.uptime_ms})
                );
            } else {
                println!("{} up {:.1} s", s.server, s.uptime_ms as f64 / 1000.0);
                println!("durable up to sequence number {}", s.durable_seq);
                println!(
                    "log: {} bytes written, {} syncs; {} shards; {} connections",
                    s.log_bytes, s.log_syncs, s.shards, s.connections
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let key = m.key.clone().unwrap_or_default();
    let outcome = client.submit_one(&m).await?;
    Ok(print_outcome(&key, &outcome, json))
}

/// What to do about a rejection, for people.
fn hint(reason: Reason) -> &'static str {
    match reason {
        Reason::InsufficientStock => {
            "not enough available stock (for this --channel, where others have allocations): check `stockctl level` \
             and `stockctl available`"
        }
        Reason::UnknownHold => "no open hold with that id (committed, released or expired): reserve again",
        Reason::HoldExpired => "the hold expired before it was committed: reserve again",
        Reason::IdempotencyMismatch => {
            "this --key was used before for another movement: use another key, or leave --key out for a new one"
        }
        Reason::InvalidQuantity => "quantities are 1 to 1000000000000 (a count 0 to 1000000000000)",
        Reason::QuantityOverflow => "the level would pass the largest quantity the engine keeps (2^60)",
        Reason::InvalidField => {
            "a SKU (1 to 64 bytes), location, channel or lot (1 to 32), serial number (1 to 64), key or reference \
             (up to 128) is empty or too long; or the movement is the engine's own"
        }
        Reason::SameLocation => "a transfer needs two different locations",
        Reason::HoldLineMissing => {
            "the hold has no line for this SKU and location (a kit's hold holds its components: commit the hold)"
        }
        Reason::InvalidExpiry => "a hold must expire in the future: give --expires-in above 0",
        Reason::InvalidLines => "a reservation has 1 to 256 lines, each (SKU, location) once",
        Reason::InvalidSettings => {
            "settings are 0 to 1000000000000 and not both --reorder-qty and --max-qty; serial tracking can only be \
             switched while the SKU has no stock anywhere"
        }
        Reason::StorageFailure => {
            "the server could not make the movement durable (nothing was recorded): tell an operator"
        }
        Reason::ShuttingDown => "the server is stopping: run the same command again (same --key) once it is back",
        Reason::UnknownLot => "the level has no such lot: list its lots with `stockctl lots SKU --location LOCATION`",
        Reason::LotExpired => {
            "the lot has expired (or expires before the hold would): name another lot with --lot, or leave --lot out \
             to take the first to expire; a new lot needs an --expires in the future"
        }
        Reason::InvalidLot => {
            "a lot new to this SKU needs --expires DATE, a known lot keeps its expiry (leave --expires out); \
             serial-tracked SKUs and kits take no --lot; at most 64 lots per level"
        }
        Reason::LotRequired => "the level has lots: name the lot counted with --lot",
        Reason::InvalidSerials => {
            "a serial-tracked SKU needs exactly QTY distinct serial numbers (--serial S1,S2,...) and cannot be counted \
             (correct it with `adjust --serial`); other SKUs take no --serial"
        }
        Reason::SerialInStock => {
            "a serial number is already in stock or held: check it with `stockctl serial SKU SERIAL`"
        }
        Reason::SerialNotInStock => {
            "a serial number is not in stock at this location (unknown, sold, elsewhere or held): check it with \
             `stockctl serial SKU SERIAL`"
        }
        Reason::SerialNotSold => {
            "only a sold serial number can be returned: check it with `stockctl serial SKU SERIAL`"
        }
        Reason::KitNotStocked => {
            "a kit has no stock of its own: receive, count, move or allocate its components (`stockctl sku-settings \
             KIT` lists them)"
        }
        Reason::InvalidKit => {
            "a kit has 1 to 16 components, each once, 1 to 10000 per kit, none a kit or serial-tracked or the kit \
             itself; a SKU with stock, or a component of a kit, cannot become a kit"
        }
        Reason::InvalidAllocation => {
            "an allocation is 0 (to remove it) to 1000000000000 units, for at most 16 channels per level"
        }
    }
}

fn outcome_json(key: &str, o: &MovementOutcome) -> Value {
    let mut v = json!({"key": key, "seq": o.seq, "accepted": o.outcome.is_ok()});
    match o.outcome {
        Ok(Detail::None) => {}
        Ok(Detail::Hold(h)) => v["hold"] = json!(h),
        Ok(Detail::Variance(q)) => v["variance"] = json!(q),
        Err(r) => {
            v["reason"] = json!(r.code());
            v["hint"] = json!(hint(r));
        }
    }
    v
}

fn print_outcome(key: &str, o: &MovementOutcome, json: bool) -> ExitCode {
    if json {
        println!("{}", outcome_json(key, o));
    } else {
        let seq = o.seq.map_or("no sequence number".to_string(), |s| format!("seq {s}"));
        match o.outcome {
            Ok(Detail::None) => println!("accepted ({seq}, key {key})"),
            Ok(Detail::Hold(h)) => println!("accepted: hold {h} ({seq}, key {key})"),
            Ok(Detail::Variance(q)) => println!("accepted: variance {q:+} ({seq}, key {key})"),
            Err(r) => println!("rejected: {r} ({seq}, key {key}): {}", hint(r)),
        }
    }
    if o.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn opt(v: Option<Qty>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.len())).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_levels(levels: &[LevelView]) {
    let mut rows =
        vec![row(&["SKU", "LOCATION", "ON_HAND", "RESERVED", "UNSELLABLE", "INCOMING", "SAFETY", "AVAILABLE"])];
    for l in levels {
        rows.push(vec![
            l.sku.clone(),
            l.location.clone(),
            l.on_hand.to_string(),
            l.reserved.to_string(),
            l.unsellable.to_string(),
            l.incoming.to_string(),
            l.safety_stock.to_string(),
            l.available.to_string(),
        ]);
    }
    print_table(&rows);
}

fn print_settings(sku: &str, location: &str, s: &Settings) {
    println!("settings of {sku} at {location}:");
    println!("  reorder_point   {}", opt(s.reorder_point));
    println!("  reorder_qty     {}", opt(s.reorder_qty));
    println!("  max_qty         {}", opt(s.max_qty));
    println!("  safety_stock    {}", s.safety_stock);
    println!("  lead_time_days  {}", s.lead_time_days);
}

fn components_text(components: &[Component]) -> String {
    components.iter().map(|c| format!("{}:{}", c.sku, c.qty)).collect::<Vec<_>>().join(",")
}

fn print_sku_settings(sku: &str, s: &engine::core::SkuSettings) {
    println!("settings of SKU {sku}:");
    println!("  serial_tracked       {}", s.serial_tracked);
    println!("  expiry_warning_days  {}", s.expiry_warning_days.map_or("-".into(), |d| d.to_string()));
    let kit = if s.is_kit() { components_text(&s.components) } else { "- (not a kit)".into() };
    println!("  kit                  {kit}");
}

fn lot_json(l: &LotView) -> Value {
    json!({"lot": l.lot, "expires_at": l.expires_at, "expires": iso(l.expires_at), "on_hand": l.on_hand,
        "reserved": l.reserved, "expired": l.expired})
}

fn detail_json(d: &LevelDetail) -> Value {
    let allocations: Vec<Value> = d.allocations.iter().map(|(c, q)| json!({"channel": c, "qty": q})).collect();
    json!({
        "level": d.level,
        "lots": d.lots.iter().map(lot_json).collect::<Vec<_>>(),
        "loose_on_hand": d.loose_on_hand,
        "allocations": allocations,
    })
}

fn print_detail(d: &LevelDetail) {
    let l = &d.level;
    println!(
        "{} at {}: on_hand {}, reserved {}, unsellable {}, available {}",
        l.sku, l.location, l.on_hand, l.reserved, l.unsellable, l.available
    );
    if d.lots.is_empty() {
        println!("no lots");
    } else {
        let mut rows = vec![row(&["LOT", "EXPIRES", "ON_HAND", "RESERVED", "STATE"])];
        for lot in &d.lots {
            rows.push(vec![
                lot.lot.clone(),
                iso(lot.expires_at),
                lot.on_hand.to_string(),
                lot.reserved.to_string(),
                if lot.expired { "expired" } else { "sellable" }.into(),
            ]);
        }
        print_table(&rows);
    }
    println!("loose (in no lot): {}", d.loose_on_hand);
    if d.allocations.is_empty() {
        println!("no channel allocations");
    } else {
        let mut rows = vec![row(&["CHANNEL", "ALLOCATED"])];
        for (channel, qty) in &d.allocations {
            rows.push(vec![channel.clone(), qty.to_string()]);
        }
        print_table(&rows);
    }
}

fn status_text(s: SerialStatus) -> String {
    match s {
        SerialStatus::InStock => "in stock".into(),
        SerialStatus::Reserved(h) => format!("reserved by hold {h}"),
        SerialStatus::Sold => "sold".into(),
        SerialStatus::WrittenOff => "written off".into(),
    }
}

fn serial_json(v: &SerialView) -> Value {
    let (status, hold) = match v.status {
        SerialStatus::InStock => ("in_stock", None),
        SerialStatus::Reserved(h) => ("reserved", Some(h)),
        SerialStatus::Sold => ("sold", None),
        SerialStatus::WrittenOff => ("written_off", None),
    };
    let history: Vec<Value> = v
        .history
        .iter()
        .map(|e| json!({"seq": e.seq, "at": e.at, "time": iso(e.at), "what": e.what, "location": e.location}))
        .collect();
    json!({"sku": v.sku, "serial": v.serial, "location": v.location, "status": status, "hold": hold, "history": history})
}

fn print_serial(v: &SerialView) {
    let place = match v.status {
        SerialStatus::InStock | SerialStatus::Reserved(_) => "at",
        SerialStatus::Sold | SerialStatus::WrittenOff => "last at",
    };
    println!("{} {}: {}, {place} {}", v.sku, v.serial, status_text(v.status), v.location);
    let mut rows = vec![row(&["SEQ", "TIME", "WHAT", "LOCATION"])];
    for e in &v.history {
        rows.push(vec![e.seq.to_string(), iso(e.at), e.what.clone(), e.location.clone()]);
    }
    print_table(&rows);
}

/// ` lot L1`, ` lot L1 (new, expires ...)`, ` serials S1,S2`: the units a movement names.
fn units_text(u: &Units) -> String {
    let mut out = String::new();
    if let Some(lot) = &u.lot {
        out.push_str(&format!(" lot {lot}"));
    }
    if let Some(at) = u.lot_expires_at {
        out.push_str(&format!(" (expires {})", iso(at)));
    }
    if !u.serials.is_empty() {
        out.push_str(&format!(" serials {}", u.serials.join(",")));
    }
    out
}

fn describe_movement(m: &Movement) -> String {
    match &m.kind {
        MovementKind::Receive { sku, location, qty, units, .. } => {
            format!("receive {qty} {sku}@{location}{}", units_text(units))
        }
        MovementKind::Expect { sku, location, qty } => format!("expect {qty} {sku}@{location}"),
        MovementKind::Sell { sku, location, qty, hold, units, .. } => format!(
            "sell {qty} {sku}@{location}{}{}",
            units_text(units),
            hold.map_or(String::new(), |h| format!(" from hold {h}"))
        ),
        MovementKind::Return { sku, location, qty, condition, units, .. } => {
            format!("return {qty} {sku}@{location}{} ({condition:?})", units_text(units))
        }
        MovementKind::Adjust { sku, location, delta, reason, units, .. } => {
            format!("adjust {delta:+} {sku}@{location}{} ({reason:?})", units_text(units))
        }
        MovementKind::Count { sku, location, counted, units } => {
            format!("count {sku}@{location}{} = {counted}", units_text(units))
        }
        MovementKind::Transfer { sku, from, to, qty, units } => {
            format!("transfer {qty} {sku}{} {from} -> {to}", units_text(units))
        }
        MovementKind::Reserve { hold, lines, .. } => {
            let ls: Vec<String> = lines
                .iter()
                .map(|l| {
                    let kit = l.kit.as_ref().map_or(String::new(), |k| format!(" (for {} kit(s) {})", k.qty, k.sku));
                    format!("{} {}@{}{}{kit}", l.qty, l.sku, l.location, units_text(&l.units))
                })
                .collect();
            format!("reserve hold {hold}: {}", ls.join(", "))
        }
        MovementKind::Commit { hold } => format!("commit hold {hold}"),
        MovementKind::Release { hold } => format!("release hold {hold}"),
        MovementKind::SetSettings { sku, location, .. } => format!("settings {sku}@{location}"),
        MovementKind::Expire { .. } => "expire holds, lots and keys".to_string(),
        MovementKind::Allocate { sku, location, channel, qty } => {
            format!("allocate {qty} {sku}@{location} to channel {channel}")
        }
        MovementKind::SetSkuSettings { sku, settings } => {
            let kit = if settings.is_kit() { components_text(&settings.components) } else { "none".into() };
            let warning = settings.expiry_warning_days.map_or("none".into(), |d| format!("{d} days"));
            format!(
                "sku settings {sku}: serial_tracked {}, expiry warning {warning}, kit {kit}",
                settings.serial_tracked
            )
        }
        MovementKind::CompleteCommit { hold } => format!("complete the commit of hold {hold}"),
    }
}

fn alert_kind(k: AlertKind) -> &'static str {
    match k {
        AlertKind::Reorder => "reorder",
        AlertKind::OutOfStock => "out_of_stock",
        AlertKind::LotExpiring => "lot_expiring",
        AlertKind::LotExpired => "lot_expired",
    }
}

fn describe_alert(a: &Alert) -> String {
    let what = match (a.kind, &a.lot) {
        (AlertKind::LotExpiring, Some((lot, at))) => {
            format!("lot {lot} expires at {}; {} unit(s) in it", iso(*at), a.available)
        }
        (AlertKind::LotExpired, Some((lot, at))) => {
            format!("lot {lot} expired at {}; {} unit(s) now unsellable", iso(*at), a.available)
        }
        _ => {
            let point = a.reorder_point.map_or(String::new(), |p| format!(" (reorder point {p})"));
            format!("available {}{point}", a.available)
        }
    };
    format!("ALERT {} {}@{}: {what}", alert_kind(a.kind), a.sku, a.location)
}

fn event_json(e: &FeedEvent) -> Value {
    let outcome = match e.outcome {
        Ok(Detail::None) => json!({"accepted": true}),
        Ok(Detail::Hold(h)) => json!({"accepted": true, "hold": h}),
        Ok(Detail::Variance(q)) => json!({"accepted": true, "variance": q}),
        Err(r) => json!({"accepted": false, "reason": r.code()}),
    };
    let alerts: Vec<Value> = e
        .effects
        .alerts
        .iter()
        .map(|a| {
            let mut v = json!({"kind": alert_kind(a.kind), "sku": a.sku, "location": a.location,
                "available": a.available, "reorder_point": a.reorder_point});
            if let Some((lot, at)) = &a.lot {
                v["lot"] = json!({"lot": lot, "expires_at": at, "expires": iso(*at)});
            }
            v
        })
        .collect();
    json!({
        "seq": e.seq,
        "shard": e.shard,
        "recorded_at": e.recorded_at,
        "kind": e.movement.kind.name(),
        "movement": e.movement,
        "outcome": outcome,
        "levels": e.effects.levels,
        "lots": e.effects.lots.iter().map(|l| {
            let mut v = lot_json(l);
            v["sku"] = json!(l.sku);
            v["location"] = json!(l.location);
            v
        }).collect::<Vec<_>>(),
        "alerts": alerts,
        "holds_closed": e.effects.holds_closed,
    })
}

async fn watch(
    client: &Client,
    alerts: bool,
    from: Option<Seq>,
    count: Option<u64>,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let from = match from {
        Some(f) => f,
        None => client.status().await?.durable_seq + 1,
    };
    let filter = if alerts { FeedFilter::AlertsOnly } else { FeedFilter::All };
    let mut sub = client.subscribe(from, filter).await?;
    if !json {
        eprintln!(
            "watching the change feed from sequence number {from}{} (Ctrl-C to stop)",
            if alerts { ", alerts only" } else { "" }
        );
    }
    let mut seen = 0u64;
    loop {
        if count.is_some_and(|c| seen >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        let batch = tokio::select! {
            b = sub.next() => b?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        for e in &batch.events {
            if count.is_some_and(|c| seen >= c) {
                break;
            }
            seen += 1;
            if json {
                println!("{}", event_json(e));
                continue;
            }
            if !alerts {
                let outcome = match e.outcome {
                    Ok(Detail::Hold(h)) => format!("ok, hold {h}"),
                    Ok(Detail::Variance(v)) => format!("ok, variance {v:+}"),
                    Ok(Detail::None) => "ok".into(),
                    Err(r) => format!("rejected: {r}"),
                };
                let mut changes: Vec<String> = e
                    .effects
                    .levels
                    .iter()
                    .map(|l| format!("{}@{} on_hand {} available {}", l.sku, l.location, l.on_hand, l.available))
                    .collect();
                changes.extend(e.effects.lots.iter().map(|l| {
                    let expired = if l.expired { " expired" } else { "" };
                    format!("{}@{} lot {} on_hand {}{expired}", l.sku, l.location, l.lot, l.on_hand)
                }));
                let changes = if changes.is_empty() { String::new() } else { format!(" -> {}", changes.join("; ")) };
                println!("#{} [{}] {}: {outcome}{changes}", e.seq, e.movement.channel, describe_movement(&e.movement));
            }
            for a in &e.effects.alerts {
                println!("#{} {}", e.seq, describe_alert(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_and_timestamps_parse_and_print_in_utc() {
        let table: [(&str, Result<Millis, ()>); 12] = [
            ("1970-01-01", Ok(DAY_MILLIS - 1)),
            ("2023-11-14", Ok(1_700_006_399_999)),
            ("2024-02-29", Ok(1_709_251_199_999)),
            ("2023-02-29", Err(())),
            ("2030-13-01", Err(())),
            ("2023-11-14T22:13:20Z", Ok(1_700_000_000_000)),
            ("2023-11-14t22:13:20.5z", Ok(1_700_000_000_500)),
            ("2023-11-15T00:13:20.123+02:00", Ok(1_700_000_000_123)),
            ("2023-11-14T20:13:20-02:00", Ok(1_700_000_000_000)),
            ("2023-11-14T22:13Z", Err(())),
            ("2023-11-14T22:13:20", Err(())),
            ("1969-12-31", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(parse_expiry(text).map_err(|_| ()), want, "{text}");
        }
        assert_eq!(iso(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso(1_700_006_399_999), "2023-11-14T23:59:59.999Z");
        assert_eq!(iso(parse_expiry("2099-12-31").unwrap()), "2099-12-31T23:59:59.999Z");
        assert!(parse_expiry("tomorrow").unwrap_err().contains("YYYY-MM-DD"));
    }
}
