//! A whole run, from flags to verdict: connect, seed, read the baseline, send the phases (one,
//! or the steps of `--find-max`), finish open checkouts, verify, report (text and JSON).

use crate::cli::Args;
use crate::complex::{ComplexConfig, Plan, COMPLEX_REASONS};
use crate::driver::{DriverConfig, Mode, Phase, Run};
use crate::stats::{cpu_seconds, thousands, PhaseReport};
use crate::target::perpetua::Perpetua;
use crate::target::postgres::Postgres;
use crate::target::redis::Redis;
use crate::target::{Target, TargetInfo, TargetSpec};
use crate::verify::book::{UnitsBook, UnitsCounts};
use crate::verify::units::{
    check_units, planned_allocations, read_allocations, read_snapshot, replay_allocations, UnitsSnapshot,
};
use crate::verify::{verify, Ledger, Verification};
use crate::workload::{Catalogue, CatalogueConfig, Generator, Mix};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first rate `--find-max` tries when `--rate` is not given, in movements per second.
pub const FIND_MAX_START: f64 = 20_000.0;
/// `--find-max` stops once the last rate that held and the first that failed are this close.
const FIND_MAX_PRECISION: f64 = 0.05;
/// Longest wait for the commits and releases sent after a run.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the levels (or the change feed) read for the verification.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// A rate holds when at least this share of it was achieved.
const ACHIEVED_MIN: f64 = 0.95;

/// The workload as the report states it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadInfo {
    pub seed: u64,
    pub catalogue: CatalogueConfig,
    pub levels: usize,
    pub mix: Mix,
    pub mix_text: String,
    /// "target" or "inferred".
    pub alerts: String,
    pub batch: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub threads: usize,
    pub mode: String,
    pub rate: Option<f64>,
    pub duration_s: f64,
    /// Seconds of unmeasured load sent before the measured phases (`--warmup`).
    pub warmup_s: f64,
    pub operations: Option<u64>,
}

/// The machine's load while the run went on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub load_average_before: Option<[f64; 3]>,
    pub load_average_after: Option<[f64; 3]>,
}

/// The result of `--find-max`.
#[derive(Clone, Debug, Serialize)]
pub struct FindMax {
    pub p99_bound_ms: f64,
    /// The highest rate (movements per second) that held: p99 within the bound, no errors, at
    /// least 95% of it achieved. `None`: not even the first step held.
    pub highest_rate_held: Option<f64>,
    /// What was achieved at that rate.
    pub achieved_movements_per_s: Option<f64>,
    pub p99_us_at_highest: Option<u64>,
    pub lowest_rate_failed: Option<f64>,
}

/// Everything a run reports; `--json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub label: String,
    pub started_at_unix_ms: u64,
    pub target: TargetInfo,
    /// Engine only: how acknowledgements met the disk during the run.
    pub log: Option<LogInfo>,
    pub workload: WorkloadInfo,
    pub machine: MachineInfo,
    pub seeding_s: f64,
    pub phases: Vec<PhaseReport>,
    pub find_max: Option<FindMax>,
    /// Steps whose outcome was unknown and that were settled by sending them again.
    pub settled_in_doubt: u64,
    pub left_in_doubt: u64,
    pub verification: Option<Verification>,
    /// Complex inventory (`--lots`, `--serial-share`, `--kits`, `--channels`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complex: Option<ComplexReport>,
}

/// What the run did with complex inventory.
#[derive(Clone, Debug, Serialize)]
pub struct ComplexReport {
    pub config: ComplexConfig,
    pub serial_skus: usize,
    /// Each kit's SKU and its components (SKU, units per kit).
    pub kits: BTreeMap<String, Vec<(String, i64)>>,
    pub allocated_levels: usize,
    /// Movements of the new kinds (seeding and run) and each channel's traffic.
    pub counts: UnitsCounts,
    /// Refusals for the new reasons, over every phase (each listed, even at 0).
    pub rejections: BTreeMap<String, u64>,
}

/// How the engine's log met the disk over the run.
#[derive(Clone, Debug, Serialize)]
pub struct LogInfo {
    pub records: u64,
    pub syncs: u64,
    pub records_per_sync: Option<f64>,
    /// "fsync = always" when the log synced during the run, "fsync = never (UNSAFE)" otherwise.
    pub fsync: String,
}

/// Why a run could not be carried out (as opposed to a run that failed verification).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs the load described by `args`; the report is printed and, with `--json`, written.
pub async fn execute(args: Args) -> Result<Report, RunError> {
    args.validate().map_err(RunError)?;
    let spec = TargetSpec::parse(&args.target).map_err(RunError)?;
    let mut catalogue = Catalogue::new(CatalogueConfig {
        skus: args.skus,
        locations: args.locations,
        zipf_exponent: args.zipf,
        hot_skus: args.hot_skus,
        stock: args.stock,
        stock_popular: args.stock_popular,
        sku_prefix: args.sku_prefix.clone(),
    })
    .map_err(RunError)?;
    let complex = args.complex().map_err(RunError)?;
    let plan = if complex.is_on() {
        if spec != TargetSpec::Perpetua {
            return Err(RunError(format!(
                "--lots, --serial-share, --kits and --channels are Perpetua-only: the Redis and PostgreSQL targets \
                 keep plain stock levels (no lots, serial numbers, kits or allocations). Leave them out with \
                 --target {}, or drop --target to load the engine",
                crate::target::redact(&args.target)
            )));
        }
        let plan = Plan::new(&catalogue, complex, args.seed, unix_ms()).map_err(RunError)?;
        plan.cap_serial_stock(&mut catalogue);
        Some(Arc::new(plan))
    } else {
        None
    };
    let catalogue = Arc::new(catalogue);
    let units = plan.map(|p| {
        let book = Arc::new(UnitsBook::new(p.clone(), catalogue.clone()));
        (p, book)
    });
    let e = |e: crate::target::TargetError| RunError(e.to_string());
    match spec {
        TargetSpec::Perpetua => {
            let mut config = args.connect.config().map_err(|e| RunError(e.to_string()))?;
            config.streams = args.streams.max(1);
            config.request_timeout = args.request_timeout;
            config.retry.retries = args.retries;
            config.retry.backoff_max = Duration::from_secs(1);
            let t =
                Perpetua::connect_with_units(config, args.connections, catalogue.clone(), !args.no_keys, units.clone())
                    .await
                    .map_err(e)?;
            run_on(t, catalogue, &args, units).await
        }
        TargetSpec::Redis(url) => {
            let t = Redis::connect(&url, args.connections, catalogue.clone(), args.request_timeout).await.map_err(e)?;
            run_on(t, catalogue, &args, None).await
        }
        TargetSpec::Postgres(url) => {
            let sc = args.pg_synchronous_commit.as_deref();
            let t = Postgres::connect(&url, args.connections, catalogue.clone(), sc).await.map_err(e)?;
            run_on(t, catalogue, &args, None).await
        }
    }
}

async fn run_on<T: Target>(
    target: T,
    catalogue: Arc<Catalogue>,
    args: &Args,
    units: Option<(Arc<Plan>, Arc<UnitsBook>)>,
) -> Result<Report, RunError> {
    let e = |e: crate::target::TargetError| RunError(e.to_string());
    let started_at = unix_ms();
    let load_before = load_average();
    let info = target.info();
    eprintln!(
        "stock-loadgen: target {} at {} ({}; {}); {} levels ({} SKUs x {} locations), seed {}",
        info.kind,
        info.address,
        info.server,
        info.durability,
        thousands(catalogue.level_count() as u64),
        thousands(args.skus as u64),
        args.locations,
        args.seed
    );
    let seeding = Instant::now();
    if !args.no_seed {
        target.seed(catalogue.clone()).await.map_err(e)?;
    }
    let seeding_s = seeding.elapsed().as_secs_f64();
    let baseline = Arc::new(target.read_levels(catalogue.clone()).await.map_err(e)?);
    // The allocations at the start, for the replay of channel sales: read back if the target
    // can, else as seeded.
    let reads = target.units_reads();
    let mut allocations_start = None;
    if let (Some((plan, _)), Some(reads)) = (&units, &reads) {
        if !plan.allocations().is_empty() {
            allocations_start = read_allocations(plan, &catalogue, reads.as_ref())
                .await
                .map_err(|e| RunError(format!("could not read the allocations back: {e}")))?;
        }
    }
    if let Some((plan, _)) = &units {
        allocations_start = allocations_start.or_else(|| Some(planned_allocations(plan)));
    }
    let position = target.position().await.map_err(e)?;

    let ledger = Arc::new(Ledger::with_units(catalogue.level_count(), units.as_ref().map(|u| u.1.clone())));
    let generator =
        Generator::new(catalogue.clone(), args.mix, args.seed).with_plan(units.as_ref().map(|u| u.0.clone()));
    let config = DriverConfig {
        concurrency: args.concurrency,
        batch: args.batch,
        hold_ttl: args.hold_ttl,
        receipt_delay: args.receipt_delay,
        drain: args.request_timeout + Duration::from_secs(5),
        alerts_inferred: args.alerts == "inferred",
        progress: !args.quiet,
    };
    let run = Arc::new(Run::new(target.clone(), generator, ledger.clone(), baseline.clone(), config));
    let (alert_tx, mut alert_rx) = tokio::sync::mpsc::unbounded_channel();
    if args.alerts != "inferred" {
        target.watch_alerts(catalogue.clone(), position, alert_tx).await.map_err(e)?;
    }
    let alerts = {
        let run = run.clone();
        tokio::spawn(async move {
            while let Some(level) = alert_rx.recv().await {
                run.alert(level);
            }
        })
    };

    let mode_name = |m: Mode| if m == Mode::Closed { "closed" } else { "open" };
    if !args.warmup.is_zero() {
        // The same load as the first measured phase (for --find-max: its first step's rate).
        let mode = match (args.rate, args.find_max) {
            (Some(r), _) => Mode::Open { movements_per_s: r },
            (None, true) => Mode::Open { movements_per_s: FIND_MAX_START },
            (None, false) => Mode::Closed,
        };
        let phase = Phase {
            label: format!("{} warm-up (not measured)", args.label),
            mode,
            duration: Some(args.warmup),
            operations: None,
        };
        let (rec, elapsed) = run.phase(&phase).await;
        let warm = PhaseReport::new(&phase.label, mode_name(mode), args.rate, elapsed, &rec);
        eprintln!(
            "warm-up: {} movements in {:.1} s ({} mv/s, p99 {} ms, {} errors), not counted in the report",
            thousands(warm.movements),
            elapsed.as_secs_f64(),
            thousands(warm.movements_per_s as u64),
            crate::stats::ms(warm.p99_us()),
            warm.errors
        );
    }
    let syncs_before = target.sync_counters().await;

    let mut phases = Vec::new();
    let mut find_max = None;
    if args.find_max {
        let bound_us = (args.p99_max_ms * 1000.0) as u64;
        let mut rate = args.rate.unwrap_or(FIND_MAX_START);
        let (mut held, mut failed): (Option<(f64, f64, u64)>, Option<f64>) = (None, None);
        let mut confirmed: Option<f64> = None;
        for step in 0..args.find_max_steps {
            let mode = Mode::Open { movements_per_s: rate };
            let phase = Phase {
                label: format!("{} step {} @ {} mv/s", args.label, step + 1, thousands(rate as u64)),
                mode,
                duration: Some(args.step_duration),
                operations: None,
            };
            let cpu0 = (cpu_seconds(None), cpu_seconds(args.server_pid));
            let (rec, elapsed) = run.phase(&phase).await;
            let report = PhaseReport::new(&phase.label, mode_name(mode), Some(rate), elapsed, &rec)
                .with_cpu(cpu_delta(cpu0.0, None), cpu_delta(cpu0.1, args.server_pid));
            let ok = report.p99_us() <= bound_us && report.errors == 0 && report.movements_per_s >= ACHIEVED_MIN * rate;
            eprintln!(
                "find-max: {} mv/s -> achieved {}, p99 {} ms, errors {}: {}",
                thousands(rate as u64),
                thousands(report.movements_per_s as u64),
                crate::stats::ms(report.p99_us()),
                report.errors,
                if ok { "held" } else { "did not hold" }
            );
            phases.push(report.clone());
            if !ok && confirmed != Some(rate) {
                // One bad step may be a hiccup of a shared machine: try the same rate once more.
                confirmed = Some(rate);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if ok {
                held = Some((rate, report.movements_per_s, report.p99_us()));
            } else {
                failed = Some(failed.map_or(rate, |f: f64| f.min(rate)));
            }
            let next = match (held, failed) {
                (Some((h, ..)), Some(f)) if (f - h) / h <= FIND_MAX_PRECISION => break,
                (Some((h, ..)), Some(f)) => (h + f) / 2.0,
                (Some((h, ..)), None) => h * 1.5,
                (None, Some(f)) => f / 2.0,
                (None, None) => unreachable!("each step either held or failed"),
            };
            rate = next;
            // Let queues on both sides drain before the next step.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        find_max = Some(FindMax {
            p99_bound_ms: args.p99_max_ms,
            highest_rate_held: held.map(|h| h.0),
            achieved_movements_per_s: held.map(|h| h.1),
            p99_us_at_highest: held.map(|h| h.2),
            lowest_rate_failed: failed,
        });
    } else {
        let mode = match args.rate {
            Some(r) => Mode::Open { movements_per_s: r },
            None => Mode::Closed,
        };
        let phase = Phase {
            label: args.label.clone(),
            mode,
            duration: if args.operations.is_some() { None } else { Some(args.duration) },
            operations: args.operations,
        };
        let cpu0 = (cpu_seconds(None), cpu_seconds(args.server_pid));
        let (rec, elapsed) = run.phase(&phase).await;
        phases.push(
            PhaseReport::new(&phase.label, mode_name(mode), args.rate, elapsed, &rec)
                .with_cpu(cpu_delta(cpu0.0, None), cpu_delta(cpu0.1, args.server_pid)),
        );
    }

    let (settled, left) = match tokio::time::timeout(FINISH_TIMEOUT, run.finish()).await {
        Ok(r) => r,
        Err(_) => {
            eprintln!("stock-loadgen: the target did not take the last commits and releases within {FINISH_TIMEOUT:?}");
            (0, run.in_doubt_count())
        }
    };
    alerts.abort();
    let syncs_after = target.sync_counters().await;
    let log = match (syncs_before, syncs_after) {
        (Some((r0, s0)), Some((r1, s1))) => {
            let (records, syncs) = (r1.saturating_sub(r0), s1.saturating_sub(s0));
            Some(LogInfo {
                records,
                syncs,
                records_per_sync: (syncs > 0).then(|| (records as f64 / syncs as f64 * 10.0).round() / 10.0),
                fsync: if syncs > 0 { "fsync = always".into() } else { "fsync = never (UNSAFE)".into() },
            })
        }
        _ => None,
    };
    let mut info = info;
    if let Some(l) = &log {
        info.durability = l.fsync.clone();
        info.durable = l.syncs > 0;
    }

    let verification = if args.no_verify {
        None
    } else {
        let actual = tokio::time::timeout(READ_TIMEOUT, target.read_levels(catalogue.clone()))
            .await
            .map_err(|_| RunError(format!("the target did not return its levels within {READ_TIMEOUT:?}")))?
            .map_err(e)?;
        let history = if args.history_records_max > 0 {
            match tokio::time::timeout(READ_TIMEOUT, target.check_history(position, args.history_records_max)).await {
                Ok(h) => h.map_err(e)?,
                Err(_) => {
                    return Err(RunError(format!("the change-feed check did not finish within {READ_TIMEOUT:?}")))
                }
            }
        } else {
            None
        };
        let replay = match (&units, &allocations_start, &history) {
            (Some((plan, _)), Some(start), Some(h)) if !plan.allocations().is_empty() && h.source == "change feed" => {
                Some(replay_allocations(&catalogue, start, &h.allocation_events, h.complete))
            }
            _ => None,
        };
        let mut v = verify(&catalogue, &baseline, &ledger, &actual, history);
        if let Some((plan, book)) = &units {
            let snapshot = match &reads {
                Some(r) => {
                    tokio::time::timeout(READ_TIMEOUT, read_snapshot(plan, &catalogue, &ledger, book, r.as_ref()))
                        .await
                        .map_err(|_| {
                            RunError(format!(
                                "the target did not answer the reads of lots and serials within {READ_TIMEOUT:?}"
                            ))
                        })?
                        .map_err(|e| RunError(format!("could not read lots and serials back: {e}")))?
                }
                None => UnitsSnapshot {
                    not_read: vec!["the target has no reads of lots, serials or allocations".into()],
                    ..UnitsSnapshot::default()
                },
            };
            let u = check_units(plan, &catalogue, &ledger, book, &snapshot, allocations_start.as_ref(), replay);
            v.passed &= u.passed;
            v.units = Some(u);
        }
        Some(v)
    };
    let complex = units.as_ref().map(|(plan, book)| {
        let mut rejections: BTreeMap<String, u64> = COMPLEX_REASONS.iter().map(|r| (r.code().to_string(), 0)).collect();
        for p in &phases {
            for (reason, n) in &p.rejections {
                if let Some(x) = rejections.get_mut(reason) {
                    *x += n;
                }
            }
        }
        ComplexReport {
            config: plan.config.clone(),
            serial_skus: plan.serial_sku_count(),
            kits: plan
                .kits
                .iter()
                .map(|k| {
                    (
                        k.sku.clone(),
                        k.components.iter().map(|(c, q)| (catalogue.skus[*c as usize].clone(), *q)).collect(),
                    )
                })
                .collect(),
            allocated_levels: plan.allocations().len(),
            counts: book.counts(),
            rejections,
        }
    });

    let report = Report {
        tool: format!("stock-loadgen {}", env!("CARGO_PKG_VERSION")),
        label: args.label.clone(),
        started_at_unix_ms: started_at,
        target: info,
        log,
        workload: WorkloadInfo {
            seed: args.seed,
            catalogue: catalogue.config.clone(),
            levels: catalogue.level_count(),
            mix: args.mix,
            mix_text: args.mix.to_string(),
            alerts: args.alerts.clone(),
            batch: args.batch,
            connections: args.connections,
            concurrency: args.concurrency,
            threads: args.threads,
            mode: if args.find_max { "find-max".into() } else { mode_name(phases_mode(args)).into() },
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            operations: args.operations,
        },
        machine: MachineInfo {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            load_average_before: load_before,
            load_average_after: load_average(),
        },
        seeding_s: (seeding_s * 1000.0).round() / 1000.0,
        phases,
        find_max,
        settled_in_doubt: settled,
        left_in_doubt: left,
        verification,
        complex,
    };
    Ok(report)
}

/// CPU seconds of a process since `before`.
fn cpu_delta(before: Option<f64>, pid: Option<u32>) -> Option<f64> {
    Some(cpu_seconds(pid)? - before?)
}

fn phases_mode(args: &Args) -> Mode {
    match args.rate {
        Some(r) => Mode::Open { movements_per_s: r },
        None => Mode::Closed,
    }
}

impl Report {
    /// The human report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let t = &self.target;
        s += &format!("\n== stock-loadgen: {} ==\n", self.label);
        s += &format!("target: {} at {} ({})\n", t.kind, t.address, t.server);
        s += &format!(
            "durability: {}{}\n",
            t.durability,
            if t.durable {
                " (acknowledged once on disk, as the engine's default)"
            } else {
                " (WEAKER than the engine's default)"
            }
        );
        if let Some(l) = &self.log {
            s += &format!(
                "log: {} records, {} syncs{}\n",
                thousands(l.records),
                thousands(l.syncs),
                l.records_per_sync.map(|r| format!(", {r} records per sync")).unwrap_or_default()
            );
        }
        s += &format!("logic: {}\n", t.logic);
        let w = &self.workload;
        s += &format!(
            "workload: seed {}, {} levels, zipf {}{}, mix {}, batch {}, {} connections, concurrency {}{}\n",
            w.seed,
            thousands(w.levels as u64),
            w.catalogue.zipf_exponent,
            w.catalogue.hot_skus.map(|h| format!(" on the {h} hottest SKUs")).unwrap_or_default(),
            w.mix_text,
            w.batch,
            w.connections,
            w.concurrency,
            if w.warmup_s > 0.0 { format!(", after {} s of warm-up", w.warmup_s) } else { String::new() }
        );
        let la = |l: Option<[f64; 3]>| l.map_or("?".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
        s += &format!(
            "machine: {} cores, load average {} before, {} after\n\n",
            self.machine.cores,
            la(self.machine.load_average_before),
            la(self.machine.load_average_after)
        );
        for p in &self.phases {
            s += &p.render();
            s += "\n";
        }
        if let Some(f) = &self.find_max {
            match f.highest_rate_held {
                Some(r) => {
                    s += &format!(
                        "find-max: highest rate that held p99 <= {} ms: {} movements/s (achieved {}, p99 {} ms)\n",
                        f.p99_bound_ms,
                        thousands(r as u64),
                        thousands(f.achieved_movements_per_s.unwrap_or(0.0) as u64),
                        crate::stats::ms(f.p99_us_at_highest.unwrap_or(0))
                    )
                }
                None => s += &format!("find-max: no rate held p99 <= {} ms\n", f.p99_bound_ms),
            }
        }
        if let Some(c) = &self.complex {
            s += &c.render();
        }
        if self.settled_in_doubt > 0 || self.left_in_doubt > 0 {
            s += &format!(
                "steps in doubt: {} settled by sending them again, {} left\n",
                self.settled_in_doubt, self.left_in_doubt
            );
        }
        match &self.verification {
            Some(v) => {
                s += &format!("verification: {}\n", v.summary());
                for m in &v.mismatch_examples {
                    s += &format!(
                        "  mismatch: ({}, {}) {}: expected {}, target has {}\n",
                        m.sku, m.location, m.field, m.expected, m.actual
                    );
                }
                for m in &v.oversold_examples {
                    s += &format!("  oversold: ({}, {}) available = {}\n", m.sku, m.location, m.actual);
                }
                if let Some(h) = &v.history {
                    for ex in &h.examples {
                        s += &format!("  oversell: {ex}\n");
                    }
                }
                if let Some(u) = &v.units {
                    s += &format!("complex inventory: {}\n", u.summary());
                    for n in &u.not_checked {
                        s += &format!("  NOT CHECKED: {n}\n");
                    }
                    for ex in &u.examples {
                        s += &format!("  mismatch: {ex}\n");
                    }
                }
            }
            None => s += "verification: skipped (--no-verify)\n",
        }
        s
    }

    /// Whether the run passed (verification passed or was skipped).
    pub fn passed(&self) -> bool {
        self.verification.as_ref().is_none_or(|v| v.passed)
    }
}

impl ComplexReport {
    /// The human report of complex inventory.
    pub fn render(&self) -> String {
        let c = &self.config;
        let list = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect::<Vec<_>>().join(", ")
        };
        let mut s = format!(
            "complex inventory: {} lots per level, {} serial-tracked SKUs, {} kits, channels {}{}\n",
            c.lots,
            self.serial_skus,
            self.kits.len(),
            if c.channels.is_empty() { "web (no allocation)".to_string() } else { c.channels.join(",") },
            if self.allocated_levels > 0 {
                format!(
                    " ({} levels ring-fence {}% per allocated channel)",
                    thousands(self.allocated_levels as u64),
                    c.allocation_share * 100.0
                )
            } else {
                String::new()
            }
        );
        s += &format!("  seeding: {}\n", list(&self.counts.seeded));
        let moves: Vec<String> = self
            .counts
            .movements
            .iter()
            .map(|(k, v)| {
                if v.sent == 0 {
                    format!("{k} {}", thousands(v.accepted))
                } else {
                    format!("{k} {} ({} accepted)", thousands(v.sent), thousands(v.accepted))
                }
            })
            .collect();
        s += &format!("  movements: {}\n", if moves.is_empty() { "none".into() } else { moves.join(", ") });
        for (name, ch) in &self.counts.channels {
            s += &format!(
                "  channel {name}: {} reservations ({} accepted), {} units sold\n",
                thousands(ch.reservations),
                thousands(ch.accepted),
                thousands(ch.units_sold)
            );
        }
        if self.counts.serials_total > 0 {
            s += &format!(
                "  serials: {} in the run, {} whose place is known for sure; {} steps had to name serials the load generator had none of\n",
                thousands(self.counts.serials_total),
                thousands(self.counts.serials_known),
                thousands(self.counts.serials_short)
            );
        }
        s += &format!("  rejections for the new reasons: {}\n", list(&self.rejections));
        s
    }
}
