//! The systems a workload runs against, behind one trait: the Perpetua engine over QUIC
//! ([`perpetua`]), Redis with Lua scripts ([`redis`]) and PostgreSQL with SQL transactions
//! ([`postgres`]). Each gets the same steps, is measured the same way and verified the same way.
//!
//! API boundary: [`Target`], [`TargetInfo`], [`TargetError`], [`TargetSpec`].

pub mod perpetua;
pub mod postgres;
pub mod redis;

use crate::step::{Step, StepOutcome};
use crate::verify::units::UnitsReads;
use crate::verify::{HistoryCheck, LevelState};
use crate::workload::{Catalogue, LevelIx};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What a report says about a target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetInfo {
    /// "perpetua", "redis" or "postgres".
    pub kind: String,
    /// Where it is (credentials left out).
    pub address: String,
    /// Its name and version, as it reports them.
    pub server: String,
    /// When a write is acknowledged, as the server is configured ("appendfsync always", ...).
    pub durability: String,
    /// Whether that durability matches the engine's default (acknowledged only once on disk).
    pub durable: bool,
    /// Whether a step sent twice is recognised (idempotency keys): in-doubt steps can then be
    /// settled by sending them again.
    pub idempotent: bool,
    /// How the workload's logic runs there.
    pub logic: String,
}

/// A failure that left the outcome of a whole request unknown.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TargetError {
    /// A short stable name for counting: "timeout", "connection_lost", "deadlock", a protocol
    /// code...
    pub kind: String,
    pub message: String,
}

impl TargetError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> TargetError {
        TargetError { kind: kind.into(), message: message.into() }
    }
}

/// A system the load generator can drive.
///
/// `conn` picks one of the target's connections (`0..connections()`); the driver spreads its
/// requests over them. Futures are `Send` so that a multi-threaded runtime may run them.
pub trait Target: Clone + Send + Sync + 'static {
    fn info(&self) -> TargetInfo;

    fn connections(&self) -> usize;

    /// Prepares the target (schema, scripts) and writes the catalogue's levels: stock and
    /// reorder settings. Prints progress on stderr.
    fn seed(&self, catalogue: Arc<Catalogue>) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Sends one request carrying `steps`; one outcome per step, in order.
    fn submit<'a>(
        &'a self,
        conn: usize,
        steps: &'a [Step],
    ) -> impl Future<Output = Result<Vec<StepOutcome>, TargetError>> + Send + 'a;

    /// Every level of the catalogue as the target has it now, indexed by [`LevelIx`].
    fn read_levels(
        &self,
        catalogue: Arc<Catalogue>,
    ) -> impl Future<Output = Result<Vec<Option<LevelState>>, TargetError>> + Send;

    /// A position in the target's history (the engine's sequence number), taken before a run
    /// so that [`Target::watch_alerts`] and [`Target::check_history`] start there.
    fn position(&self) -> impl Future<Output = Result<u64, TargetError>> + Send;

    /// Starts forwarding the reorder alerts the target raises from `from` on to `alerts`, for
    /// targets that publish them (the engine's change feed). Targets that report alerts in
    /// their replies ([`StepOutcome::alert_lines`]) do nothing.
    fn watch_alerts(
        &self,
        catalogue: Arc<Catalogue>,
        from: u64,
        alerts: UnboundedSender<LevelIx>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Checks every accepted online take between `from` and now for an oversell, from the
    /// target's own record of the levels each one left, if it keeps one (the engine's change
    /// feed); reads at most `records_max` records. `None`: no such record.
    fn check_history(
        &self,
        from: u64,
        records_max: u64,
    ) -> impl Future<Output = Result<Option<HistoryCheck>, TargetError>> + Send;

    /// (records logged, log syncs) so far, for targets that count them (the engine): their
    /// change over a run shows whether acknowledgements waited for the disk, and how many
    /// movements shared each sync.
    fn sync_counters(&self) -> impl Future<Output = Option<(u64, u64)>> + Send;

    /// The reads of lots, serial numbers and allocations, for targets that have complex
    /// inventory (the engine).
    fn units_reads(&self) -> Option<Arc<dyn UnitsReads>> {
        None
    }
}

/// Which target a `--target` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Perpetua,
    Redis(String),
    Postgres(String),
}

impl TargetSpec {
    pub fn parse(s: &str) -> Result<TargetSpec, String> {
        if s == "perpetua" || s == "engine" || s == "stockd" {
            Ok(TargetSpec::Perpetua)
        } else if s.starts_with("redis://") {
            Ok(TargetSpec::Redis(s.to_string()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(TargetSpec::Postgres(s.to_string()))
        } else {
            Err(format!(
                "--target {s:?}: expected `perpetua` (the engine at --server), `redis://HOST:PORT` or `postgres://USER@HOST:PORT/DB`"
            ))
        }
    }
}

/// A URL without its password, for reports.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// A price in cents that depends only on the SKU, so that revenue figures are stable.
pub fn unit_price(sku: u32) -> i64 {
    499 + (sku as i64 * 37) % 9_500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_passwords_stay_out_of_reports() {
        assert_eq!(TargetSpec::parse("perpetua").unwrap(), TargetSpec::Perpetua);
        assert!(matches!(TargetSpec::parse("redis://127.0.0.1:6379").unwrap(), TargetSpec::Redis(_)));
        assert!(TargetSpec::parse("mysql://x").unwrap_err().contains("expected"));
        assert_eq!(redact("postgres://bob:secret@127.0.0.1:5432/db"), "postgres://bob@127.0.0.1:5432/db");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
