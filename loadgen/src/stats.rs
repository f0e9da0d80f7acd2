//! Measurements: latency histograms (HdrHistogram, microseconds) per step kind and per request,
//! counts of rejections by reason and errors by kind, and their summaries for the report.
//!
//! Each sending task records into a [`Recorder`] of its own and hands it over at the end of a
//! phase; a small [`Interval`] shared by all feeds the progress line once a second.

use crate::step::StepKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Largest latency a histogram keeps, in microseconds (larger values are clamped to it).
pub const LATENCY_US_MAX: u64 = 120_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, LATENCY_US_MAX)
}

/// Everything one task measured.
#[derive(Clone)]
pub struct Recorder {
    /// Latency of each step, by kind: the latency of the request that carried it.
    pub by_kind: Vec<Histogram<u64>>,
    /// Latency of each request.
    pub requests: Histogram<u64>,
    /// Open loop: how late each request left after its intended send time.
    pub send_lag: Histogram<u64>,
    pub steps: u64,
    pub accepted: u64,
    pub rejections: BTreeMap<&'static str, u64>,
    /// Steps that got no answer, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Open loop: scheduled requests never sent because the phase ended while the sender was
    /// held back by the in-flight limit.
    pub missed_sends: u64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            by_kind: StepKind::ALL.iter().map(|_| histogram()).collect(),
            requests: histogram(),
            send_lag: histogram(),
            steps: 0,
            accepted: 0,
            rejections: BTreeMap::new(),
            errors: BTreeMap::new(),
            missed_sends: 0,
        }
    }
}

impl Recorder {
    pub fn request(&mut self, latency: Duration) {
        self.requests.saturating_record(micros(latency));
    }

    pub fn step(&mut self, kind: StepKind, latency: Duration, result: Result<(), &'static str>) {
        self.by_kind[kind.index()].saturating_record(micros(latency));
        self.steps += 1;
        match result {
            Ok(()) => self.accepted += 1,
            Err(reason) => *self.rejections.entry(reason).or_default() += 1,
        }
    }

    pub fn error(&mut self, kind: &str, steps: u64) {
        *self.errors.entry(kind.to_string()).or_default() += steps;
    }

    pub fn lag(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (a, b) in self.by_kind.iter_mut().zip(&other.by_kind) {
            a.add(b).expect("histograms of the same bounds");
        }
        self.requests.add(&other.requests).expect("same bounds");
        self.send_lag.add(&other.send_lag).expect("same bounds");
        self.steps += other.steps;
        self.accepted += other.accepted;
        for (k, v) in &other.rejections {
            *self.rejections.entry(k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.missed_sends += other.missed_sends;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejections.values().sum()
    }
}

/// What the progress line shows, gathered since it was last shown.
pub struct Interval {
    inner: Mutex<IntervalInner>,
}

struct IntervalInner {
    steps: u64,
    rejected: u64,
    errors: u64,
    requests: Histogram<u64>,
}

impl Default for Interval {
    fn default() -> Interval {
        Interval { inner: Mutex::new(IntervalInner { steps: 0, rejected: 0, errors: 0, requests: histogram() }) }
    }
}

/// A sender's counts since it last handed them to the [`Interval`].
#[derive(Default)]
pub struct IntervalPart {
    pub steps: u64,
    pub rejected: u64,
    pub errors: u64,
    pub latencies_us: Vec<u64>,
}

impl Interval {
    pub fn add(&self, part: &mut IntervalPart) {
        let mut i = self.inner.lock().unwrap();
        i.steps += part.steps;
        i.rejected += part.rejected;
        i.errors += part.errors;
        for &l in &part.latencies_us {
            i.requests.saturating_record(l);
        }
        part.steps = 0;
        part.rejected = 0;
        part.errors = 0;
        part.latencies_us.clear();
    }

    /// (steps, rejected, errors, p99 of requests in µs) since the last call; resets.
    pub fn take(&self) -> (u64, u64, u64, u64) {
        let mut i = self.inner.lock().unwrap();
        let p99 = if i.requests.is_empty() { 0 } else { i.requests.value_at_quantile(0.99) };
        let r = (i.steps, i.rejected, i.errors, p99);
        i.steps = 0;
        i.rejected = 0;
        i.errors = 0;
        i.requests.reset();
        r
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The measurements of one phase (a whole run, or one rate of `--find-max`).
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub label: String,
    /// "open" or "closed".
    pub mode: String,
    /// Open loop: the movements per second asked for.
    pub target_movements_per_s: Option<f64>,
    pub duration_s: f64,
    pub movements: u64,
    pub requests: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub errors: u64,
    pub movements_per_s: f64,
    pub requests_per_s: f64,
    /// Per request, then per step kind (the latency of the request that carried the step).
    pub latency: BTreeMap<String, LatencySummary>,
    pub rejections: BTreeMap<String, u64>,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Open loop: how late requests left after their intended time (the sender's own delay;
    /// it is part of every latency above).
    pub send_lag: Option<LatencySummary>,
    pub missed_sends: u64,
    /// CPU time the load generator used in the phase (user + system), in seconds.
    pub loadgen_cpu_s: Option<f64>,
    /// CPU time of the process given with `--server-pid` (and its children) in the phase.
    pub server_cpu_s: Option<f64>,
    /// Server CPU per movement, in microseconds: a figure that holds on a busy machine.
    pub server_cpu_us_per_movement: Option<f64>,
    pub loadgen_cpu_us_per_movement: Option<f64>,
}

/// CPU time (user + system) of a process and all its descendants, live or reaped, in seconds:
/// PostgreSQL's backends count towards the postmaster. `None` is this process alone. Linux only
/// (`/proc`); `None` elsewhere or if the process is gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    match pid {
        None => proc_ticks("self", false).map(|t| t as f64 / CLOCK_TICKS_PER_S),
        Some(p) => tree_ticks(p, 0).map(|t| t as f64 / CLOCK_TICKS_PER_S),
    }
}

/// `USER_HZ`, the unit of `/proc/PID/stat` times: 100 on every Linux platform.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// utime + stime (+ cutime + cstime with `reaped`) of `/proc/{pid}/stat`.
fn proc_ticks(pid: &str, reaped: bool) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let f: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14 to 17.
    let n = if reaped { 4 } else { 2 };
    Some(f.get(11..11 + n)?.iter().map(|x| x.parse::<i64>().unwrap_or(0).max(0) as u64).sum())
}

fn tree_ticks(pid: u32, depth: u32) -> Option<u64> {
    let own = proc_ticks(&pid.to_string(), true)?;
    if depth > 4 {
        return Some(own);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let live: u64 =
        children.split_whitespace().filter_map(|c| c.parse().ok()).filter_map(|c| tree_ticks(c, depth + 1)).sum();
    Some(own + live)
}

impl PhaseReport {
    /// Adds CPU figures: `loadgen` and `server` are CPU seconds spent over the phase.
    pub fn with_cpu(mut self, loadgen: Option<f64>, server: Option<f64>) -> PhaseReport {
        let per = |cpu: f64| ((cpu * 1e6 / self.movements.max(1) as f64) * 100.0).round() / 100.0;
        self.loadgen_cpu_s = loadgen.map(|c| (c * 100.0).round() / 100.0);
        self.server_cpu_s = server.map(|c| (c * 100.0).round() / 100.0);
        self.loadgen_cpu_us_per_movement = loadgen.map(per);
        self.server_cpu_us_per_movement = server.map(per);
        self
    }

    pub fn new(label: &str, mode: &str, target: Option<f64>, elapsed: Duration, r: &Recorder) -> PhaseReport {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut latency = BTreeMap::new();
        latency.insert("request".to_string(), LatencySummary::of(&r.requests));
        for k in StepKind::ALL {
            let h = &r.by_kind[k.index()];
            if !h.is_empty() {
                latency.insert(k.name().to_string(), LatencySummary::of(h));
            }
        }
        PhaseReport {
            label: label.to_string(),
            mode: mode.to_string(),
            target_movements_per_s: target,
            duration_s: (secs * 1000.0).round() / 1000.0,
            movements: r.steps + r.errors_total(),
            requests: r.requests.len(),
            accepted: r.accepted,
            rejected: r.rejected_total(),
            errors: r.errors_total(),
            movements_per_s: ((r.steps + r.errors_total()) as f64 / secs).round(),
            requests_per_s: (r.requests.len() as f64 / secs).round(),
            latency,
            rejections: r.rejections.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors_by_kind: r.errors.clone(),
            send_lag: (!r.send_lag.is_empty()).then(|| LatencySummary::of(&r.send_lag)),
            missed_sends: r.missed_sends,
            loadgen_cpu_s: None,
            server_cpu_s: None,
            server_cpu_us_per_movement: None,
            loadgen_cpu_us_per_movement: None,
        }
    }

    /// p99 of requests, in microseconds.
    pub fn p99_us(&self) -> u64 {
        self.latency.get("request").map_or(0, |l| l.p99_us)
    }

    /// The human report of this phase.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let target =
            self.target_movements_per_s.map(|t| format!(", target {} mv/s", thousands(t as u64))).unwrap_or_default();
        s += &format!(
            "{}: {} loop{}, {:.1} s\n  throughput: {} movements/s ({} requests/s); {} movements: {} accepted, {} rejected, {} errors\n",
            self.label,
            self.mode,
            target,
            self.duration_s,
            thousands(self.movements_per_s as u64),
            thousands(self.requests_per_s as u64),
            thousands(self.movements),
            thousands(self.accepted),
            thousands(self.rejected),
            thousands(self.errors),
        );
        s += &format!(
            "  {:<14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut rows: Vec<(&String, &LatencySummary)> = self.latency.iter().collect();
        rows.sort_by_key(|(k, _)| (k.as_str() != "request", StepKind::ALL.iter().position(|x| x.name() == k.as_str())));
        for (k, l) in rows {
            s += &format!(
                "  {:<14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                k,
                thousands(l.count),
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            );
        }
        if let Some(lag) = &self.send_lag {
            s += &format!(
                "  send lag (included above): p50 {} ms, p99 {} ms, max {} ms; {} scheduled requests not sent\n",
                ms(lag.p50_us),
                ms(lag.p99_us),
                ms(lag.max_us),
                self.missed_sends
            );
        }
        if let Some(l) = self.loadgen_cpu_us_per_movement {
            s += &format!("  CPU per movement: load generator {l} us");
            if let Some(sv) = self.server_cpu_us_per_movement {
                s += &format!(", server {sv} us");
            }
            s += "\n";
        }
        if !self.rejections.is_empty() {
            let parts: Vec<String> = self.rejections.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect();
            s += &format!("  rejections: {}\n", parts.join(", "));
        }
        if !self.errors_by_kind.is_empty() {
            let parts: Vec<String> =
                self.errors_by_kind.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect();
            s += &format!("  errors: {}\n", parts.join(", "));
        }
        s
    }
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// 1234567 as "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A progress line on stderr for long steps (seeding, the feed check): rewritten in place on a
/// terminal, one line every few seconds otherwise (logs stay readable).
pub struct ProgressLine {
    tty: bool,
    shown: Option<std::time::Instant>,
}

impl Default for ProgressLine {
    fn default() -> ProgressLine {
        ProgressLine { tty: std::io::IsTerminal::is_terminal(&std::io::stderr()), shown: None }
    }
}

impl ProgressLine {
    /// Shows `message` if enough time passed since the last one, or if `last`.
    pub fn show(&mut self, message: &str, last: bool) {
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !last && self.shown.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        if self.shown.is_none() && !last && !self.tty {
            // The first line on a log waits a little, so quick steps print once.
            self.shown = Some(std::time::Instant::now());
            return;
        }
        self.shown = Some(std::time::Instant::now());
        if self.tty {
            eprint!("\r{message}\x1b[K");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_merges_count_what_was_recorded() {
        let mut a = Recorder::default();
        for us in 1..=1000u64 {
            a.request(Duration::from_micros(us));
            a.step(
                StepKind::Commit,
                Duration::from_micros(us),
                if us % 10 == 0 { Err("insufficient_stock") } else { Ok(()) },
            );
        }
        let mut b = Recorder::default();
        b.error("timeout", 3);
        b.merge(&a);
        let r = PhaseReport::new("run", "closed", None, Duration::from_secs(1), &b);
        assert_eq!((r.movements, r.accepted, r.rejected, r.errors), (1003, 900, 100, 3));
        let l = r.latency["commit"];
        assert_eq!(l.count, 1000);
        assert!((989..=991).contains(&l.p99_us), "{l:?}");
        assert_eq!(l.max_us, 1000);
        assert!(r.render().contains("insufficient_stock 100"));
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
