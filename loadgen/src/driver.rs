//! Sending the workload: open loop (requests leave on a fixed schedule whatever the replies do,
//! and latency counts from the intended send time, so a stalled target shows in the
//! percentiles: no coordinated omission) or closed loop (C clients, each sending as soon as its
//! last reply came back).
//!
//! `concurrency` client tasks send requests of `batch` steps over the target's connections in
//! turn, one request at a time each, and record what comes back; in open loop a pacing thread
//! releases the send times. Each request carries first the steps that follow earlier replies
//! (the commit or release of a placed hold, the receipt that answers a reorder alert), then
//! fresh operations from the generator.

use crate::complex::{OpExtras, Plan};
use crate::stats::{Interval, IntervalPart, Recorder};
use crate::step::{Step, StepBody, StepExtra, StepOutcome};
use crate::target::{Target, TargetError};
use crate::verify::{Ledger, LevelState};
use crate::workload::{Catalogue, Generator, LevelIx, Op, Then};
use engine::core::{Detail, Qty, Units};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// A fixed schedule of this many movements per second.
    Open { movements_per_s: f64 },
    /// Every client sends again as soon as its reply is back.
    Closed,
}

/// Settings of the sending side that hold for the whole run.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Closed loop: the number of concurrent clients; open loop: the most requests in flight.
    pub concurrency: usize,
    /// Movements per request.
    pub batch: usize,
    /// Holds expire this long after they are placed.
    pub hold_ttl: Duration,
    /// A receipt follows a reorder alert after this long (the supplier's lead time, shrunk).
    pub receipt_delay: Duration,
    /// Reorder alerts are inferred from the acknowledged movements instead of taken from the
    /// target (its change feed or its replies).
    pub alerts_inferred: bool,
    /// Once sending is over, how long to wait for the last replies before giving up on them.
    pub drain: Duration,
    pub progress: bool,
}

/// One phase: a whole run, or one rate of `--find-max`.
#[derive(Clone, Debug)]
pub struct Phase {
    pub label: String,
    pub mode: Mode,
    pub duration: Option<Duration>,
    /// Fresh operations to send in this phase (`None`: as many as the duration allows).
    pub operations: Option<u64>,
}

/// What the client tasks of a phase share.
struct ClientsShared {
    /// The phase's measurements, the progress counts not yet handed over, and when they were.
    rec: Mutex<(Recorder, IntervalPart, Instant)>,
    /// Each client's request in flight, to put in doubt if it has to be abandoned.
    in_flight: Vec<Mutex<Option<Arc<Vec<Step>>>>>,
    last_reply: Mutex<Instant>,
}

/// The state every sending task shares.
pub struct Run<T: Target> {
    pub target: T,
    pub catalogue: Arc<Catalogue>,
    pub generator: Generator,
    pub ledger: Arc<Ledger>,
    pub baseline: Arc<Vec<Option<LevelState>>>,
    pub config: DriverConfig,
    next_op: AtomicU64,
    next_step: AtomicU64,
    queue: Mutex<Queue>,
    /// A receipt is on its way to this level (one purchase order at a time per level).
    receipt_open: Vec<AtomicBool>,
    in_doubt: Mutex<Vec<Step>>,
    /// The target recognises a step sent again (idempotency keys).
    idempotent: bool,
    pub interval: Interval,
}

#[derive(Default)]
struct Queue {
    /// Steps that follow earlier replies, sent before fresh operations.
    ready: VecDeque<Step>,
    /// Receipts waiting for their delivery time.
    delayed: VecDeque<(Instant, Step)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The shortest sleep of the pacing thread: requests due within it leave together (their send
/// lag, up to this, is measured and counted in their latency).
const PACER_TICK: Duration = Duration::from_micros(100);

/// Releases the open-loop schedule's send times, from a thread of its own: a permit of the
/// semaphore each time a request is due, taken by whichever client task is free (a request
/// whose client tasks are all busy leaves late, and its latency still counts from its
/// intended time). tokio's timer ticks in milliseconds, a thread's sleep in tens of
/// microseconds; spinning would take a core from the target on a small machine. At the end of
/// the schedule the semaphore is closed, which ends the client tasks waiting on it.
struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    fn start(first: Instant, every: Duration, end: Option<Instant>, permits: Arc<tokio::sync::Semaphore>) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let every_ns = every.as_nanos().max(1);
        // Send times before `end`: slots 0..last.
        let last = end.map_or(u128::MAX, |e| e.saturating_duration_since(first).as_nanos().div_ceil(every_ns));
        let thread = std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || {
                let mut released: u128 = 0;
                while !flag.load(Relaxed) && released < last {
                    let now = Instant::now();
                    let due = if now < first { 0 } else { ((now - first).as_nanos() / every_ns + 1).min(last) };
                    if due > released {
                        let n = (due - released).min(tokio::sync::Semaphore::MAX_PERMITS as u128 / 2);
                        permits.add_permits(n as usize);
                        released = due;
                    }
                    let next = first + Duration::from_nanos((released * every_ns).min(u64::MAX as u128) as u64);
                    // At least PACER_TICK between wake-ups: each one wakes the runtime from
                    // another thread, which costs more than a few microseconds of send lag.
                    // At most 10 ms, so that a stop is seen soon.
                    let wait = next.saturating_duration_since(Instant::now());
                    std::thread::sleep(wait.clamp(PACER_TICK, Duration::from_millis(10)));
                }
                // Let the last requests leave, then end the waiting client tasks.
                while !flag.load(Relaxed) && end.is_some_and(|e| Instant::now() < e) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                permits.close();
            })
            .expect("a thread can be started");
        Pacer { stop, thread: Some(thread) }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T: Target> Run<T> {
    pub fn new(
        target: T,
        generator: Generator,
        ledger: Arc<Ledger>,
        baseline: Arc<Vec<Option<LevelState>>>,
        config: DriverConfig,
    ) -> Run<T> {
        let catalogue = generator.catalogue.clone();
        let levels = catalogue.level_count();
        let idempotent = target.info().idempotent;
        Run {
            idempotent,
            target,
            catalogue,
            generator,
            ledger,
            baseline,
            config,
            next_op: AtomicU64::new(0),
            next_step: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
            receipt_open: (0..levels).map(|_| AtomicBool::new(false)).collect(),
            in_doubt: Mutex::new(Vec::new()),
            interval: Interval::default(),
        }
    }

    /// Fresh operations generated so far.
    pub fn operations_started(&self) -> u64 {
        self.next_op.load(Relaxed)
    }

    fn step_id(&self) -> u64 {
        self.next_step.fetch_add(1, Relaxed)
    }

    /// The step that starts operation `index` (none for a recount that finds nothing to correct).
    fn first_step(&self, index: u64, op: Op) -> Option<Step> {
        if let Some(plan) = &self.generator.plan {
            let extras = self.generator.extras(index, &op).unwrap_or_default();
            return self.complex_step(plan, op, extras);
        }
        let cat = &self.catalogue;
        let body = match op {
            Op::Checkout { lines, then } => StepBody::Reserve { lines, then, expires_at_ms: self.hold_expiry() },
            Op::PosSell { level, qty } => StepBody::SellPos { level, qty },
            Op::Return { level, qty, damaged } => StepBody::Return { level, qty, damaged },
            Op::Count { level, variance } => StepBody::Count { level, counted: self.expected_count(level, variance) },
            Op::Transfer { sku, from, to, qty } => {
                StepBody::Transfer { from: cat.level(sku, from), to: cat.level(sku, to), qty }
            }
        };
        Some(Step::new(self.step_id(), body))
    }

    fn hold_expiry(&self) -> u64 {
        now_ms() + self.config.hold_ttl.as_millis() as u64
    }

    /// What a count expecting the ledger's quantity, off by `variance`, finds.
    fn expected_count(&self, level: LevelIx, variance: Qty) -> Qty {
        let base = self.baseline[level as usize].map_or(0, |b| b.on_hand);
        (base + self.ledger.on_hand_delta(level) + variance).max(0)
    }

    /// The step of an operation with complex inventory: the lots and serial numbers its lines
    /// name, the kit it buys, its channel. Serials are taken from the book now (the operation
    /// says how many; the book which ones).
    fn complex_step(&self, plan: &Plan, op: Op, x: OpExtras) -> Option<Step> {
        let cat = &self.catalogue;
        let book = self.ledger.units().expect("a run with a plan keeps a book");
        let mut extra = StepExtra { channel: x.channel, ..StepExtra::default() };
        // The units a take of `qty` at `level` names.
        let take = |level: LevelIx, qty: Qty, lot: Option<u8>| {
            if plan.is_serial(cat.sku_of(level)) {
                Units::serials(&book.take_in_stock(level, qty))
            } else {
                lot.map_or(Units::ANY, |k| Units::lot(&plan.seeded_lot(k).0))
            }
        };
        let body = match op {
            Op::Checkout { lines, then } => {
                let expires_at_ms = self.hold_expiry();
                match x.kit {
                    Some(k) => {
                        let (level, kits) = lines[0];
                        let location = cat.location_of(level);
                        let components = &plan.kits[k as usize].components;
                        extra.kit = Some((k, location, kits));
                        let lines = components.iter().map(|&(sku, q)| (cat.level(sku, location), q * kits)).collect();
                        StepBody::Reserve { lines, then, expires_at_ms }
                    }
                    None => {
                        extra.units = lines.iter().enumerate().map(|(i, &(l, q))| take(l, q, x.lot(i))).collect();
                        StepBody::Reserve { lines, then, expires_at_ms }
                    }
                }
            }
            Op::PosSell { level, qty } => {
                extra.units = vec![take(level, qty, x.lot(0))];
                StepBody::SellPos { level, qty }
            }
            Op::Return { level, qty, damaged } => {
                extra.units = vec![if plan.is_serial(cat.sku_of(level)) {
                    Units::serials(&book.take_sold(level, qty))
                } else {
                    x.lot(0).map_or(Units::ANY, |k| Units::lot(&plan.seeded_lot(k).0))
                }];
                StepBody::Return { level, qty, damaged }
            }
            Op::Count { level, variance } => {
                let sku = cat.sku_of(level);
                if !plan.is_serial(sku) && !plan.has_lots(sku) {
                    StepBody::Count { level, counted: self.expected_count(level, variance) }
                } else if variance == 0 {
                    return None; // nothing to correct
                } else {
                    // Counts of lots or serials are corrected unit by unit: an adjustment naming
                    // the lot recounted, or the serials found or missing.
                    extra.units = vec![match (plan.is_serial(sku), variance > 0) {
                        (true, true) => Units::serials(&book.new_serials(level, variance)),
                        (true, false) => Units::serials(&book.take_in_stock(level, -variance)),
                        // A count of a level with lots always names one (see `Plan::extras`).
                        (false, _) => Units::lot(&plan.seeded_lot(x.lot(0).unwrap_or(0)).0),
                    }];
                    StepBody::Adjust { level, delta: variance }
                }
            }
            Op::Transfer { sku, from, to, qty } => {
                let (from, to) = (cat.level(sku, from), cat.level(sku, to));
                extra.units = vec![take(from, qty, None)];
                StepBody::Transfer { from, to, qty }
            }
        };
        Some(Step { id: self.step_id(), body, extra: Some(Box::new(extra)) })
    }

    /// Up to `n` steps for a request: follow-ups first, then fresh operations numbered below
    /// `ops_end` if `fresh`.
    fn next_batch(&self, n: usize, fresh: bool, ops_end: u64) -> Vec<Step> {
        let mut out = Vec::with_capacity(n);
        {
            let mut q = self.queue.lock().unwrap();
            let now = Instant::now();
            while q.delayed.front().is_some_and(|(at, _)| *at <= now) {
                let (_, s) = q.delayed.pop_front().expect("a front");
                q.ready.push_back(s);
            }
            while out.len() < n {
                match q.ready.pop_front() {
                    Some(s) => out.push(s),
                    None => break,
                }
            }
        }
        while fresh && out.len() < n {
            let i = self.next_op.fetch_add(1, Relaxed);
            if i >= ops_end {
                self.next_op.fetch_min(ops_end, Relaxed);
                break;
            }
            if let Some(step) = self.first_step(i, self.generator.op(i)) {
                out.push(step);
            }
        }
        out
    }

    /// Steps whose outcome is still unknown.
    pub fn in_doubt_count(&self) -> u64 {
        self.in_doubt.lock().unwrap().len() as u64
    }

    fn followups_pending(&self) -> bool {
        !self.queue.lock().unwrap().ready.is_empty()
    }

    /// A reorder alert on `level`: a receipt of its reorder quantity follows after the delay,
    /// unless one is already on its way.
    pub fn alert(&self, level: LevelIx) {
        if self.receipt_open[level as usize].swap(true, Relaxed) {
            return;
        }
        let qty = self.catalogue.seed(level).reorder_qty;
        let id = self.step_id();
        let mut step = Step::new(id, StepBody::Receive { level, qty });
        if let Some(plan) = &self.generator.plan {
            // A receipt brings a new lot, or new serial numbers.
            let sku = self.catalogue.sku_of(level);
            let units = if plan.is_serial(sku) {
                let book = self.ledger.units().expect("a run with a plan keeps a book");
                Units::serials(&book.new_serials(level, qty))
            } else if plan.has_lots(sku) {
                let (code, expires_at) = plan.receipt_lot(id);
                Units::new_lot(&code, expires_at)
            } else {
                Units::ANY
            };
            step.extra = Some(Box::new(StepExtra { units: vec![units], ..StepExtra::default() }));
        }
        let at = Instant::now() + self.config.receipt_delay;
        self.queue.lock().unwrap().delayed.push_back((at, step));
    }

    /// Records the answer to a request and queues what follows from it.
    fn complete(
        &self,
        steps: &[Step],
        result: Result<Vec<StepOutcome>, TargetError>,
        latency: Duration,
        rec: &mut Recorder,
        part: &mut IntervalPart,
    ) {
        rec.request(latency);
        part.latencies_us.push(latency.as_micros() as u64);
        match result {
            Ok(outcomes) => {
                for (s, o) in steps.iter().zip(&outcomes) {
                    self.record(s, o);
                    rec.step(s.kind(), latency, o.result.map(|_| ()).map_err(|r| r.code()));
                    part.steps += 1;
                    part.rejected += o.result.is_err() as u64;
                }
            }
            Err(e) => {
                rec.error(&e.kind, steps.len() as u64);
                part.errors += steps.len() as u64;
                tracing::debug!(error = %e, steps = steps.len(), "request failed");
                self.doubt(steps);
            }
        }
    }

    /// Puts failed steps in doubt (to settle later if the target recognises a resend).
    fn doubt(&self, steps: &[Step]) {
        for s in steps {
            self.ledger.mark_in_doubt(s);
            if let StepBody::Receive { level, .. } = s.body {
                self.receipt_open[level as usize].store(false, Relaxed);
            }
        }
        if self.idempotent {
            self.in_doubt.lock().unwrap().extend(steps.iter().cloned());
        }
    }

    /// Records one step's outcome in the ledger and queues its follow-ups.
    fn record(&self, s: &Step, o: &StepOutcome) {
        self.ledger.record(s, o);
        match (&s.body, o.result) {
            (StepBody::Reserve { lines, then, .. }, Ok(Detail::Hold(hold))) => {
                let lines = lines.clone();
                let body = match then {
                    Then::Commit => StepBody::Commit { hold, lines },
                    Then::Release => StepBody::Release { hold, lines },
                };
                // The commit or release keeps the reservation's extras (its serials, channel, kit).
                let step = Step { id: self.step_id(), body, extra: s.extra.clone() };
                self.queue.lock().unwrap().ready.push_back(step);
            }
            (StepBody::Receive { level, .. }, _) => self.receipt_open[*level as usize].store(false, Relaxed),
            _ => {}
        }
        if self.config.alerts_inferred {
            if o.result.is_ok()
                && matches!(
                    s.body,
                    StepBody::Reserve { .. }
                        | StepBody::SellPos { .. }
                        | StepBody::Transfer { .. }
                        | StepBody::Count { .. }
                        | StepBody::Adjust { .. }
                )
            {
                for l in s.levels() {
                    let base = self.baseline[l as usize].map_or(0, |b| b.available);
                    if base + self.ledger.available_delta(l) <= self.catalogue.seed(l).reorder_point {
                        self.alert(l);
                    }
                }
            }
        } else if o.alert_lines != 0 {
            let levels = s.levels();
            for (i, l) in levels.iter().enumerate().take(32) {
                if o.alert_lines & (1 << i) != 0 {
                    self.alert(*l);
                }
            }
        }
    }

    /// Runs one phase on every connection; returns what was measured and how long it took.
    pub async fn phase(self: &Arc<Self>, phase: &Phase) -> (Recorder, Duration) {
        let start = Instant::now() + Duration::from_millis(5);
        let deadline = phase.duration.map(|d| start + d);
        let ops_end = match phase.operations {
            Some(n) => self.next_op.load(Relaxed) + n,
            None => u64::MAX,
        };
        let progress = self.config.progress.then(|| {
            let run = self.clone();
            let label = phase.label.clone();
            tokio::spawn(async move { run.progress(&label, start).await })
        });
        let total = self.clone().clients(phase, start, deadline, ops_end).await;
        let elapsed = start.elapsed();
        if let Some(p) = progress {
            p.abort();
            eprintln!();
        }
        (total, elapsed)
    }

    async fn progress(&self, label: &str, start: Instant) {
        let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
        let mut last = start;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            ticks += 1;
            if !tty && !ticks.is_multiple_of(5) {
                continue;
            }
            let now = Instant::now();
            let (steps, rejected, errors, p99) = self.interval.take();
            let secs = (now - last).as_secs_f64();
            last = now;
            eprint!(
                "{}{label}: {:>6.1} s  {:>10} mv/s  p99 {:>8} ms  rejected {:>5.1}%  errors {:<8}{}",
                if tty { "\r" } else { "" },
                (now - start).as_secs_f64(),
                crate::stats::thousands((steps as f64 / secs) as u64),
                crate::stats::ms(p99),
                if steps > 0 { rejected as f64 * 100.0 / steps as f64 } else { 0.0 },
                errors,
                if tty { "" } else { "\n" }
            );
        }
    }

    /// `concurrency` client tasks over the connections in turn. Closed loop: each sends its
    /// next request as soon as its last reply is back. Open loop: each waits for the next send
    /// time the [`Pacer`] releases (so at most `concurrency` requests are in flight), and its
    /// latency counts from that intended time. They record into one shared recorder (its lock
    /// is uncontended on a single-threaded runtime). A watchdog gives up on requests still
    /// unanswered `drain` after the end (or after the last reply) and puts their steps in doubt.
    async fn clients(
        self: Arc<Self>,
        phase: &Phase,
        start: Instant,
        deadline: Option<Instant>,
        ops_end: u64,
    ) -> Recorder {
        let conns = self.target.connections();
        let clients = self.config.concurrency.max(1);
        let shared = Arc::new(ClientsShared {
            rec: Mutex::new((Recorder::default(), IntervalPart::default(), Instant::now())),
            in_flight: (0..clients).map(|_| Mutex::new(None)).collect(),
            last_reply: Mutex::new(Instant::now()),
        });
        let fresh = phase.operations.is_some() || phase.duration.is_some();
        let batch = self.config.batch.max(1);
        // Open loop: request `n` is due at `start + n * every`.
        let schedule = match phase.mode {
            Mode::Open { movements_per_s } => {
                let every = Duration::from_secs_f64(batch as f64 / movements_per_s.max(1e-3));
                let permits = Arc::new(tokio::sync::Semaphore::new(0));
                Some((every, permits, Arc::new(AtomicU64::new(0))))
            }
            Mode::Closed => None,
        };
        let _pacer =
            schedule.as_ref().map(|(every, permits, _)| Pacer::start(start, *every, deadline, permits.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..clients {
            let (run, shared, schedule) = (self.clone(), shared.clone(), schedule.clone());
            let conn = client % conns;
            tasks.spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let intended = match &schedule {
                        Some((every, permits, next)) => {
                            match permits.acquire().await {
                                Ok(p) => p.forget(),
                                Err(_) => return, // the schedule is over
                            }
                            let n = next.fetch_add(1, Relaxed);
                            start + Duration::from_nanos((every.as_nanos() * n as u128) as u64)
                        }
                        None => Instant::now(),
                    };
                    if deadline.is_some_and(|d| intended >= d || Instant::now() >= d + run.config.drain) {
                        return;
                    }
                    let steps = run.next_batch(batch, fresh, ops_end);
                    if steps.is_empty() {
                        if run.followups_pending() {
                            continue;
                        }
                        return;
                    }
                    let steps = Arc::new(steps);
                    *shared.in_flight[client].lock().unwrap() = Some(steps.clone());
                    let lag = schedule.as_ref().map(|_| Instant::now().saturating_duration_since(intended));
                    let result = run.target.submit(conn, &steps).await;
                    let now = Instant::now();
                    *shared.in_flight[client].lock().unwrap() = None;
                    *shared.last_reply.lock().unwrap() = now;
                    let mut g = shared.rec.lock().unwrap();
                    let (rec, part, flushed) = &mut *g;
                    if let Some(lag) = lag {
                        rec.lag(lag);
                    }
                    run.complete(&steps, result, now.saturating_duration_since(intended), rec, part);
                    if flushed.elapsed() >= Duration::from_millis(200) {
                        run.interval.add(part);
                        *flushed = now;
                    }
                }
            });
        }
        loop {
            let last_reply = *shared.last_reply.lock().unwrap();
            let abandon_at = deadline.map_or(last_reply, |d| d.max(last_reply)) + self.config.drain;
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(r) => r.expect("a client task panicked"),
                },
                _ = tokio::time::sleep_until(abandon_at.into()) => {
                    if *shared.last_reply.lock().unwrap() > last_reply {
                        continue; // replies still come in
                    }
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    let mut g = shared.rec.lock().unwrap();
                    let mut abandoned = 0;
                    for slot in &shared.in_flight {
                        if let Some(steps) = slot.lock().unwrap().take() {
                            g.0.error("abandoned", steps.len() as u64);
                            self.doubt(&steps);
                            abandoned += 1;
                        }
                    }
                    tracing::warn!(requests = abandoned, "no answer in time: requests abandoned, their steps in doubt");
                    break;
                }
            }
        }
        let mut g = shared.rec.lock().unwrap();
        self.interval.add(&mut g.1);
        let mut rec = std::mem::take(&mut g.0);
        if let (Some((every, _, next)), Some(d)) = (&schedule, deadline) {
            let due = (d.saturating_duration_since(start).as_nanos()).div_ceil(every.as_nanos().max(1)) as u64;
            rec.missed_sends = due.saturating_sub(next.load(Relaxed).min(due));
        }
        rec
    }

    /// Sends what still follows from the run (commits and releases of placed holds), unmeasured,
    /// and settles steps in doubt by sending them again (same idempotency keys) where the target
    /// recognises a resend. Returns (steps settled, steps still in doubt).
    pub async fn finish(&self) -> (u64, u64) {
        let mut rec = Recorder::default();
        let mut part = IntervalPart::default();
        let mut settled = 0;
        for _round in 0..3 {
            let doubtful: Vec<Step> = std::mem::take(&mut *self.in_doubt.lock().unwrap());
            let mut chunks = doubtful.chunks(100);
            for chunk in chunks.by_ref() {
                match self.target.submit(0, chunk).await {
                    Ok(outcomes) => {
                        for (s, o) in chunk.iter().zip(&outcomes) {
                            self.ledger.clear_doubt(s);
                            self.record(s, o);
                            settled += 1;
                        }
                    }
                    Err(e) => {
                        // The target is not answering: keep the rest in doubt, try again later.
                        tracing::warn!(error = %e, "could not settle steps in doubt");
                        self.in_doubt.lock().unwrap().extend(chunk.iter().cloned());
                        break;
                    }
                }
            }
            self.in_doubt.lock().unwrap().extend(chunks.flatten().cloned());
            loop {
                let steps = self.next_batch(200, false, 0);
                if steps.is_empty() {
                    break;
                }
                let r = self.target.submit(0, &steps).await;
                let failed = r.is_err();
                self.complete(&steps, r, Duration::ZERO, &mut rec, &mut part);
                if failed {
                    break;
                }
            }
            if self.in_doubt.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Receipts still waiting for their delivery time are never sent: the serial numbers they
        // would have brought do not exist.
        let unsent = std::mem::take(&mut self.queue.lock().unwrap().delayed);
        if let Some(book) = self.ledger.units() {
            for (_, step) in &unsent {
                book.unsent(step);
            }
        }
        (settled, self.in_doubt.lock().unwrap().len() as u64)
    }
}
