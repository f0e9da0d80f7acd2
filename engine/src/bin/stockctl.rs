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
    /// Where the movement comes from (web, pos, erp, ...).
    #[arg(long, default_value = "cli")]
    channel: String,
    /// Order, purchase order or count sheet.
    #[arg(long)]
    reference: Option<String>,
    /// When it happened, in milliseconds since the Unix epoch (client time, recorded as given).
    #[arg(long, value_name = "MS")]
    occurred_at: Option<Millis>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Goods arrived: on_hand += QTY (with --reference naming a purchase order, incoming shrinks).
    Receive {
        sku: String,
        location: String,
        qty: Qty,
        /// Cost per unit in minor units (cents).
        #[arg(long)]
        unit_cost: Option<i64>,
        #[command(flatten)]
        common: Common,
    },
    /// A purchase order was placed: incoming += QTY.
    Expect {
        sku: String,
        location: String,
        qty: Qty,
        #[command(flatten)]
        common: Common,
    },
    /// A sale: on_hand -= QTY; needs available stock unless it consumes --hold or --allow-negative.
    Sell {
        sku: String,
        location: String,
        qty: Qty,
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
        common: Common,
    },
    /// A customer return: on_hand += QTY (also unsellable with --damaged).
    Return {
        sku: String,
        location: String,
        qty: Qty,
        /// The goods are damaged: they count as unsellable.
        #[arg(long)]
        damaged: bool,
        #[arg(long)]
        unit_price: Option<i64>,
        #[command(flatten)]
        common: Common,
    },
    /// Correct on_hand by DELTA (negative to remove) with a reason.
    Adjust {
        sku: String,
        location: String,
        #[arg(allow_negative_numbers = true)]
        delta: Qty,
        /// correction, shrinkage, damaged, found or promotion.
        #[arg(long, value_parser = parse_adjust_reason)]
        reason: AdjustReason,
        /// Allow available to go below zero.
        #[arg(long)]
        allow_negative: bool,
        #[command(flatten)]
        common: Common,
    },
    /// A physical count: on_hand := COUNTED; prints the variance.
    Count {
        sku: String,
        location: String,
        counted: Qty,
        #[command(flatten)]
        common: Common,
    },
    /// Move QTY of a SKU from one location to another, atomically.
    Transfer {
        sku: String,
        from: String,
        to: String,
        qty: Qty,
        #[command(flatten)]
        common: Common,
    },
    /// Hold stock for a checkout: every line or none. LINE is SKU:LOCATION:QTY[@UNIT_PRICE].
    Reserve {
        #[arg(required = true, value_parser = parse_line)]
        lines: Vec<Line>,
        /// Seconds until the hold expires.
        #[arg(long, default_value_t = 900)]
        expires_in: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Turn a hold into sales (checkout paid).
    Commit {
        hold: HoldId,
        #[command(flatten)]
        common: Common,
    },
    /// Drop a hold (cart abandoned, payment failed).
    Release {
        hold: HoldId,
        #[command(flatten)]
        common: Common,
    },
    /// The level of a SKU at one location, or at every location.
    Level { sku: String, location: Option<String> },
    /// Every level, or those of one location.
    Levels {
        #[arg(long)]
        location: Option<String>,
    },
    /// Levels at or below their reorder point (or at or below zero when they have none).
    LowStock {
        #[arg(long)]
        location: Option<String>,
    },
    /// Replenishment settings of a level.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// API tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Follow the change feed: every movement with its outcome, level changes and alerts.
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
    Status,
}

#[derive(Subcommand, Debug)]
enum SettingsCmd {
    /// Show the settings of a level.
    Get { sku: String, location: String },
    /// Change settings; what is not given keeps its current value.
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
    Create {
        name: String,
        /// admin, checkout, warehouse or reader.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; connections using it are refused from their next request.
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
    let mut config = cli.connect.config()?;
    if matches!(cli.command, Command::Watch { .. }) {
        // A follower waits out server restarts, however long.
        config.retry.retries = u32::MAX;
    }
    let client = Client::connect(config).await?;
    let result = dispatch(&client, cli.command, json).await;
    client.close_and_wait().await;
    result
}

async fn dispatch(client: &Client, command: Command, json: bool) -> Result<ExitCode, ClientError> {
    use Command::*;
    let m = match command {
        Receive { sku, location, qty, unit_cost, common } => {
            movement(common, MovementKind::Receive { sku, location, qty, unit_cost, units: Units::ANY })
        }
        Expect { sku, location, qty, common } => movement(common, MovementKind::Expect { sku, location, qty }),
        Sell { sku, location, qty, unit_price, hold, allow_negative, common } => movement(
            common,
            MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units: Units::ANY },
        ),
        Return { sku, location, qty, damaged, unit_price, common } => {
            let condition = if damaged { ReturnCondition::Damaged } else { ReturnCondition::Restock };
            movement(common, MovementKind::Return { sku, location, qty, condition, unit_price, units: Units::ANY })
        }
        Adjust { sku, location, delta, reason, allow_negative, common } => {
            movement(common, MovementKind::Adjust { sku, location, delta, reason, allow_negative, units: Units::ANY })
        }
        Count { sku, location, counted, common } => {
            movement(common, MovementKind::Count { sku, location, counted, units: Units::ANY })
        }
        Transfer { sku, from, to, qty, common } => {
            movement(common, MovementKind::Transfer { sku, from, to, qty, units: Units::ANY })
        }
        Reserve { lines, expires_in, common } => {
            let expires_at = now_ms() + expires_in * 1000;
            movement(common, MovementKind::Reserve { hold: 0, lines, expires_at })
        }
        Commit { hold, common } => movement(common, MovementKind::Commit { hold }),
        Release { hold, common } => movement(common, MovementKind::Release { hold }),
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

fn outcome_json(key: &str, o: &MovementOutcome) -> Value {
    let mut v = json!({"key": key, "seq": o.seq, "accepted": o.outcome.is_ok()});
    match o.outcome {
        Ok(Detail::None) => {}
        Ok(Detail::Hold(h)) => v["hold"] = json!(h),
        Ok(Detail::Variance(q)) => v["variance"] = json!(q),
        Err(r) => v["reason"] = json!(r.code()),
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
            Err(r) => println!("rejected: {r} ({seq}, key {key})"),
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

fn describe_movement(m: &Movement) -> String {
    match &m.kind {
        MovementKind::Receive { sku, location, qty, .. } => format!("receive {qty} {sku}@{location}"),
        MovementKind::Expect { sku, location, qty } => format!("expect {qty} {sku}@{location}"),
        MovementKind::Sell { sku, location, qty, hold, .. } => {
            format!("sell {qty} {sku}@{location}{}", hold.map_or(String::new(), |h| format!(" from hold {h}")))
        }
        MovementKind::Return { sku, location, qty, condition, .. } => {
            format!("return {qty} {sku}@{location} ({condition:?})")
        }
        MovementKind::Adjust { sku, location, delta, reason, .. } => {
            format!("adjust {delta:+} {sku}@{location} ({reason:?})")
        }
        MovementKind::Count { sku, location, counted, units: _ } => format!("count {sku}@{location} = {counted}"),
        MovementKind::Transfer { sku, from, to, qty, units: _ } => format!("transfer {qty} {sku} {from} -> {to}"),
        MovementKind::Reserve { hold, lines, .. } => {
            let ls: Vec<String> = lines.iter().map(|l| format!("{} {}@{}", l.qty, l.sku, l.location)).collect();
            format!("reserve hold {hold}: {}", ls.join(", "))
        }
        MovementKind::Commit { hold } => format!("commit hold {hold}"),
        MovementKind::Release { hold } => format!("release hold {hold}"),
        MovementKind::SetSettings { sku, location, .. } => format!("settings {sku}@{location}"),
        MovementKind::Expire { .. } => "expire holds, lots and keys".to_string(),
        MovementKind::Allocate { sku, location, channel, qty } => {
            format!("allocate {qty} {sku}@{location} to {channel}")
        }
        MovementKind::SetSkuSettings { sku, .. } => format!("sku settings {sku}"),
        MovementKind::CompleteCommit { hold } => format!("complete commit of hold {hold}"),
    }
}

fn event_json(e: &FeedEvent) -> Value {
    let outcome = match e.outcome {
        Ok(Detail::None) => json!({"accepted": true}),
        Ok(Detail::Hold(h)) => json!({"accepted": true, "hold": h}),
        Ok(Detail::Variance(q)) => json!({"accepted": true, "variance": q}),
        Err(r) => json!({"accepted": false, "reason": r.code()}),
    };
    json!({
        "seq": e.seq,
        "shard": e.shard,
        "recorded_at": e.recorded_at,
        "kind": e.movement.kind.name(),
        "movement": e.movement,
        "outcome": outcome,
        "levels": e.effects.levels,
        "alerts": e.effects.alerts,
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
                let levels: Vec<String> = e
                    .effects
                    .levels
                    .iter()
                    .map(|l| format!("{}@{} on_hand {} available {}", l.sku, l.location, l.on_hand, l.available))
                    .collect();
                let levels = if levels.is_empty() { String::new() } else { format!(" -> {}", levels.join("; ")) };
                println!("#{} [{}] {}: {outcome}{levels}", e.seq, e.movement.channel, describe_movement(&e.movement));
            }
            for a in &e.effects.alerts {
                let point = a.reorder_point.map_or(String::new(), |p| format!(" (reorder point {p})"));
                println!("#{} ALERT {:?} {}@{}: available {}{point}", e.seq, a.kind, a.sku, a.location, a.available);
            }
        }
    }
}
