//! The sharded engine: routes movements to shard threads, runs the log writer and a housekeeper
//! (hold expiry, checkpoints), recovers on open and checkpoints on shutdown.
//!
//! API boundary: [`Engine`] is what servers, tools and tests use; nothing outside this module
//! touches shard threads or the log writer.

mod batch;
mod config;
mod feed;
mod key_guards;
mod log_writer;
mod reads;
mod shard_worker;

pub use batch::MovementResult;
pub use config::{Clock, EngineConfig, Fsync};
pub use feed::{Feed, FeedError, FeedEvent};
pub use shard_worker::{Answer, Query};

use crate::core::*;
use crate::wal::checkpoint::{list_checkpoints, verify_checkpoint, write_checkpoint, CheckpointBody};
use crate::wal::format::FORMAT_VERSION;
use crate::wal::recovery::{recover, RecoveryError, RecoveryReport};
use crate::wal::segment::{list_segments, SegmentWriter};
use ahash::AHashMap;
use batch::BatchState;
use crossbeam_channel::{bounded, unbounded, Sender};
use key_guards::{KeyGuard, KeyGuards};
use log_writer::{LogShared, LogWriter};
use shard_worker::{Copied, CopyKind, Item, ShardMsg, ShardWorker};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub durable_seq: Seq,
    pub log_bytes: u64,
    pub log_syncs: u64,
    pub shard_queue_depths: [usize; SHARDS_MAX],
}

struct Inner {
    config: EngineConfig,
    shards: Vec<Sender<ShardMsg>>,
    /// Clones of the shards' receivers, to drain (and so fail) what is left once they stop.
    shard_inboxes: Vec<crossbeam_channel::Receiver<ShardMsg>>,
    stopped: std::sync::atomic::AtomicBool,
    log: Arc<LogShared>,
    hold_counter: AtomicU64,
    guards: KeyGuards,
    /// Scans of `guards` by `prune_guards` so far.
    guard_prunes: AtomicU64,
    checkpoint_lock: Mutex<()>,
    /// Barriers are sent to all shards under this lock, so that two never cross.
    barrier_lock: Mutex<()>,
    wal_dir: PathBuf,
    checkpoint_dir: PathBuf,
    /// SKU settings that differ from the default, mirrored from the shards: kits span shards, so
    /// their definitions and the rules between SKUs (no kit of kits) are checked here.
    sku_settings: RwLock<AHashMap<String, SkuSettings>>,
    /// Kits defined: while zero, no movement pays for a kit lookup.
    kit_count: AtomicUsize,
    /// Serializes `set_sku_settings` checks against the mirror.
    sku_settings_lock: Mutex<()>,
}

/// How long the hold behind a kit sale lives (it is committed at once; should the engine stall
/// longer, the sale fails as a whole and the hold expires).
const KIT_SALE_HOLD_MILLIS: Millis = 60_000;

/// The stock engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Engine {
    inner: Arc<Inner>,
    threads: Mutex<Threads>,
    recovery: RecoveryReport,
}

#[derive(Default)]
struct Threads {
    shards: Vec<JoinHandle<()>>,
    log: Option<JoinHandle<()>>,
    housekeeper: Option<(Sender<()>, JoinHandle<()>)>,
}

/// How the results of a submission's parts make up each movement's result.
enum Plan {
    Done(MovementResult),
    Single(u32),
    /// A movement split over several shards: all parts must succeed.
    Multi {
        parts: Vec<(usize, u32)>,
        hold: HoldId,
        is_reserve: bool,
    },
    /// A kit sale: its reservation (this plan), then a commit of the hold (this movement).
    KitSale {
        reserve: Box<Plan>,
        commit: Movement,
    },
    /// New SKU settings, already in the engine's mirror: put back `previous` if the shard refuses.
    SkuSettings {
        part: u32,
        sku: String,
        previous: Option<SkuSettings>,
    },
}

/// Movements on their way; [`Submission::wait`] returns one result per movement, in order.
pub struct Submission {
    rx: oneshot::Receiver<Vec<MovementResult>>,
    plans: Vec<Plan>,
    inner: Arc<Inner>,
}

impl Submission {
    /// Blocks until every movement is decided and, if accepted, durable.
    pub fn wait(self) -> Vec<MovementResult> {
        let parts = self.rx.blocking_recv().ok();
        let (mut results, commits) = finish(&self.inner, self.plans, parts);
        if !commits.is_empty() {
            let (at, movements): (Vec<usize>, Vec<Movement>) = commits.into_iter().unzip();
            let committed = submit_on(&self.inner, movements, None).wait();
            finish_kit_sales(&mut results, at, committed);
        }
        results
    }

    /// [`Submission::wait`] for async code.
    pub async fn wait_async(self) -> Vec<MovementResult> {
        let parts = self.rx.await.ok();
        let (mut results, commits) = finish(&self.inner, self.plans, parts);
        if !commits.is_empty() {
            let (at, movements): (Vec<usize>, Vec<Movement>) = commits.into_iter().unzip();
            let committed = Box::pin(submit_on(&self.inner, movements, None).wait_async()).await;
            finish_kit_sales(&mut results, at, committed);
        }
        results
    }
}

/// A kit sale's result is its commit's (its reservation's, if that failed).
fn finish_kit_sales(results: &mut [MovementResult], at: Vec<usize>, committed: Vec<MovementResult>) {
    for (i, r) in at.into_iter().zip(committed) {
        results[i] = r;
    }
}

/// Results of a submission's movements from their parts' results, and the commits of the kit
/// sales whose reservation succeeded (with the index of their movement).
fn finish(
    inner: &Inner,
    plans: Vec<Plan>,
    parts: Option<Vec<MovementResult>>,
) -> (Vec<MovementResult>, Vec<(usize, Movement)>) {
    let mut commits = Vec::new();
    let results = plans.into_iter().enumerate().map(|(i, plan)| match plan {
        Plan::KitSale { reserve, commit } => {
            let r = finish_plan(inner, *reserve, &parts);
            if r.outcome.is_ok() {
                commits.push((i, commit));
            }
            r
        }
        plan => finish_plan(inner, plan, &parts),
    });
    let results = results.collect();
    (results, commits)
}

fn finish_plan(inner: &Inner, plan: Plan, parts: &Option<Vec<MovementResult>>) -> MovementResult {
    let part = |i: u32| parts.as_ref().map_or(MovementResult::SHUTTING_DOWN, |p| p[i as usize]);
    match plan {
        Plan::Done(r) => r,
        Plan::Single(i) => part(i),
        Plan::KitSale { reserve, .. } => finish_plan(inner, *reserve, parts),
        Plan::SkuSettings { part: i, sku, previous } => {
            let r = part(i);
            if r.outcome.is_err() {
                inner.put_sku_settings(&sku, previous);
            }
            r
        }
        Plan::Multi { parts: ps, hold, is_reserve } => {
            let results: Vec<(usize, MovementResult)> = ps.iter().map(|&(shard, i)| (shard, part(i))).collect();
            let failed = results.iter().find(|(_, r)| r.outcome.is_err());
            match failed {
                None => MovementResult {
                    seq: results.iter().filter_map(|(_, r)| r.seq).max(),
                    outcome: results[0].1.outcome,
                },
                Some(&(_, failure)) => {
                    if is_reserve {
                        // All or none: release the parts that were held. Should the engine stop
                        // before this is durable, those parts still end at the hold's expiry.
                        for (shard, r) in &results {
                            if r.outcome.is_ok() {
                                inner.send_internal(*shard, release_movement(hold));
                            }
                        }
                    }
                    failure
                }
            }
        }
    }
}

fn submit_on(inner: &Arc<Inner>, movements: Vec<Movement>, hashes: Option<Vec<u64>>) -> Submission {
    let n = inner.shards.len();
    let now = inner.config.clock.now();
    let mut per_shard: Vec<Vec<Item>> = (0..n).map(|_| Vec::new()).collect();
    let mut plans = Vec::with_capacity(movements.len());
    let mut parts = 0u32;
    let mut add_part = |shard: usize, movement: Movement, body_hash: u64, per_shard: &mut Vec<Vec<Item>>| {
        per_shard[shard].push(Item { part: parts, now, body_hash, movement });
        parts += 1;
        parts - 1
    };
    let failed = inner.log.failed.load(Ordering::Acquire);
    for (i, mut m) in movements.into_iter().enumerate() {
        if failed {
            plans.push(Plan::Done(MovementResult { seq: None, outcome: Err(Reason::StorageFailure) }));
            continue;
        }
        if matches!(m.kind, MovementKind::Expire { .. } | MovementKind::CompleteCommit { .. }) {
            // Engine-internal movements.
            plans.push(Plan::Done(MovementResult { seq: None, outcome: Err(Reason::InvalidField) }));
            continue;
        }
        if let Err(reason) = check_sizes(&m) {
            // Refused before any shard sees it: no record, no sequence number.
            plans.push(Plan::Done(MovementResult { seq: None, outcome: Err(reason) }));
            continue;
        }
        if let MovementKind::Reserve { hold, .. } = &mut m.kind {
            *hold = 0; // the client form, for the body hash
        }
        let mut reuse_hold = 0;
        let body_hash = match (&m.key, &hashes) {
            (None, _) => 0,
            (Some(_), Some(hashes)) => hashes[i],
            (Some(_), None) => body_hash(&m),
        };
        // Kits become their components here (the hash above is of the movement as sent).
        let mut kit_sale = false;
        if inner.kit_count.load(Ordering::Relaxed) > 0 {
            match inner.expand_kits(&mut m, now) {
                Ok(KitExpansion::None) => {}
                Ok(KitExpansion::Sale) => kit_sale = true,
                Ok(KitExpansion::Parts(parts)) => {
                    if let Some(reject) = inner.check_key(&m, body_hash, now) {
                        plans.push(Plan::Done(reject));
                        continue;
                    }
                    let ps = parts
                        .into_iter()
                        .map(|part| {
                            let (shard, hash) = (shard_of(routing_sku(&part.kind), n), body_hash_of_part(&part));
                            (shard, add_part(shard, part, hash, &mut per_shard))
                        })
                        .collect();
                    plans.push(Plan::Multi { parts: ps, hold: 0, is_reserve: false });
                    continue;
                }
                Err(reason) => {
                    plans.push(Plan::Done(MovementResult { seq: None, outcome: Err(reason) }));
                    continue;
                }
            }
        }
        if let Some(key) = &m.key {
            let reserved = match &m.kind {
                MovementKind::Reserve { lines, .. } => Some(lines),
                _ => None,
            };
            let new = KeyGuard { body_hash, seen_at: now, hold: 0 };
            let hold = inner.guards.with(key_hash(key), new, |guard| {
                (guard.body_hash == body_hash).then(|| {
                    if let (Some(lines), 0) = (reserved, guard.hold) {
                        guard.hold = inner.new_hold_id(lines, n);
                    }
                    guard.hold
                })
            });
            let Some(hold) = hold else {
                plans.push(Plan::Done(MovementResult { seq: None, outcome: Err(Reason::IdempotencyMismatch) }));
                continue;
            };
            if reserved.is_some() {
                reuse_hold = hold;
            }
        }
        if let MovementKind::SetSkuSettings { sku, settings } = &m.kind {
            let plan = match inner.claim_sku_settings(sku, settings) {
                Err(reason) => Plan::Done(MovementResult { seq: None, outcome: Err(reason) }),
                Ok(previous) => {
                    let (sku, shard) = (sku.clone(), shard_of(sku, n));
                    Plan::SkuSettings { part: add_part(shard, m, body_hash, &mut per_shard), sku, previous }
                }
            };
            plans.push(plan);
            continue;
        }
        let mut commit = None;
        if let MovementKind::Reserve { hold, lines, .. } = &mut m.kind {
            *hold = if reuse_hold != 0 { reuse_hold } else { inner.new_hold_id(lines, n) };
            let hold = *hold;
            if kit_sale {
                commit = Some(kit_commit(&m, hold));
            }
        }
        let plan = match &mut m.kind {
            MovementKind::Reserve { hold, lines, .. } => {
                let mask = hold_shard_mask(*hold);
                if mask.count_ones() <= 1 {
                    Plan::Single(add_part(mask.trailing_zeros() as usize % n, m, body_hash, &mut per_shard))
                } else {
                    let hold = *hold;
                    let all_lines = std::mem::take(lines);
                    let mut ps = Vec::new();
                    for shard in shards_in(mask) {
                        let mut part = m.clone();
                        if let MovementKind::Reserve { lines, .. } = &mut part.kind {
                            *lines = all_lines.iter().filter(|l| shard_of(&l.sku, n) == shard).cloned().collect();
                        }
                        ps.push((shard, add_part(shard, part, body_hash, &mut per_shard)));
                    }
                    Plan::Multi { parts: ps, hold, is_reserve: true }
                }
            }
            MovementKind::Commit { hold } | MovementKind::Release { hold } => {
                let hold = *hold;
                let mask = hold_shard_mask(hold);
                let shards: Vec<usize> = shards_in(mask).filter(|&s| s < n).collect();
                if shards.len() <= 1 || shards.len() != mask.count_ones() as usize {
                    Plan::Single(add_part(shards.first().copied().unwrap_or(0), m, body_hash, &mut per_shard))
                } else {
                    let ps = shards.iter().map(|&s| (s, add_part(s, m.clone(), body_hash, &mut per_shard))).collect();
                    Plan::Multi { parts: ps, hold, is_reserve: false }
                }
            }
            kind => {
                let shard = shard_of(routing_sku(kind), n);
                Plan::Single(add_part(shard, m, body_hash, &mut per_shard))
            }
        };
        let plan = match commit {
            Some(commit) => Plan::KitSale { reserve: Box::new(plan), commit },
            None => plan,
        };
        plans.push(plan);
    }
    let (state, rx) = BatchState::new(parts as usize);
    let batch = Arc::new(state);
    for (shard, items) in per_shard.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let parts: Vec<u32> = items.iter().map(|i| i.part).collect();
        if inner.shards[shard].send(ShardMsg::Movements { items, batch: Some(batch.clone()) }).is_err() {
            for p in parts {
                batch.complete(p, MovementResult::SHUTTING_DOWN);
            }
        }
    }
    if inner.stopped.load(Ordering::Acquire) {
        inner.drain_inboxes(); // the shards are gone: fail what was just queued
    }
    Submission { rx, plans, inner: inner.clone() }
}

/// Where a kit expansion leaves a movement.
enum KitExpansion {
    /// Not about a kit (or a reservation whose kit lines were expanded in place).
    None,
    /// A kit sale, turned into the reservation of its components: commit it once held.
    Sale,
    /// Independent parts, one per component (a kit return, or a point-of-sale kit sale).
    Parts(Vec<Movement>),
}

/// The commit that ends a kit sale held as `hold`; its idempotency key derives from the sale's.
fn kit_commit(sale: &Movement, hold: HoldId) -> Movement {
    Movement {
        key: sale.key.as_deref().map(|k| format!("kit-commit:{:032x}", key_hash(k))),
        channel: sale.channel.clone(),
        reference: sale.reference.clone(),
        occurred_at: sale.occurred_at,
        kind: MovementKind::Commit { hold },
    }
}

/// Part `i` of a kit movement: the same channel, reference and time; a key derived from its key.
fn kit_part(m: &Movement, i: usize, kind: MovementKind) -> Movement {
    Movement {
        key: m.key.as_deref().map(|k| format!("kit:{:032x}:{i}", key_hash(k))),
        channel: m.channel.clone(),
        reference: m.reference.clone(),
        occurred_at: m.occurred_at,
        kind,
    }
}

/// The body hash a part of a kit movement is logged with (its own: parts have their own keys).
fn body_hash_of_part(part: &Movement) -> u64 {
    if part.key.is_some() {
        body_hash(part)
    } else {
        0
    }
}

fn complete_commit_movement(hold: HoldId) -> Movement {
    Movement {
        key: None,
        channel: "engine".into(),
        reference: Some(format!("completion of the commit of hold {hold}")),
        occurred_at: None,
        kind: MovementKind::CompleteCommit { hold },
    }
}

fn release_movement(hold: HoldId) -> Movement {
    Movement {
        key: None,
        channel: "engine".into(),
        reference: Some(format!("rollback of hold {hold}")),
        occurred_at: None,
        kind: MovementKind::Release { hold },
    }
}

const META_FILE: &str = "engine.meta";

/// Reads or creates `engine.meta`, which fixes the shard count of a data directory.
fn shard_count(data_dir: &Path, wanted: usize) -> Result<usize, EngineError> {
    let path = data_dir.join(META_FILE);
    let io = |what, source| EngineError::Io { what, path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let format = format!("format = {FORMAT_VERSION}");
            if !text.lines().any(|l| l.trim() == format) {
                let found = text.lines().find(|l| l.trim().starts_with("format =")).unwrap_or("no format line");
                return Err(EngineError::Config(format!(
                    "{} says `{}`, this build reads `{format}`: the data directory was written by another \
                     version of Perpetua; open it with that version, or start this one on an empty directory",
                    path.display(),
                    found.trim()
                )));
            }
            let shards = text
                .lines()
                .find_map(|l| l.strip_prefix("shards = "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| (1..=SHARDS_MAX).contains(&n))
                .ok_or_else(|| EngineError::Config(format!("{} has no valid `shards = N` line", path.display())))?;
            if shards != wanted {
                tracing::warn!(shards, wanted, "the data directory was created with {shards} shards; using {shards}");
            }
            Ok(shards)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = path.with_extension("tmp");
            std::fs::write(
                &tmp,
                format!("# Perpetua data directory. Do not edit.\nformat = {FORMAT_VERSION}\nshards = {wanted}\n"),
            )
            .map_err(|e| io("cannot write", e))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io("cannot sync", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("cannot create", e))?;
            crate::wal::segment::sync_dir(data_dir).map_err(|e| io("cannot sync", e))?;
            Ok(wanted)
        }
        Err(e) => Err(io("cannot read", e)),
    }
}

impl Engine {
    /// Opens (creating if needed) the data directory, recovers, and starts the threads.
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        if !(1..=SHARDS_MAX).contains(&config.shards) {
            return Err(EngineError::Config(format!("shards must be 1 to {SHARDS_MAX}, not {}", config.shards)));
        }
        let wal_dir = config.data_dir.join("wal");
        let checkpoint_dir = config.data_dir.join("checkpoints");
        for dir in [&config.data_dir, &wal_dir, &checkpoint_dir] {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
                what: "cannot create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let shards = shard_count(&config.data_dir, config.shards)?;
        let started = Instant::now();
        let recovered = recover(&wal_dir, &checkpoint_dir, shards)?;
        tracing::info!(
            checkpoint = ?recovered.report.checkpoint,
            replayed = recovered.report.records_replayed,
            next_seq = recovered.next_seq,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered"
        );

        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| EngineError::Io { what, path, source }
        };
        let segment = match &recovered.last_segment {
            Some(path) => SegmentWriter::reopen(path).map_err(io("cannot open log segment", path))?,
            None => SegmentWriter::create(&wal_dir, recovered.next_seq)
                .map_err(io("cannot create log segment", &wal_dir))?,
        };

        let guards = KeyGuards::new();
        for state in &recovered.shards {
            for (k, body_hash, seen_at, hold) in state.key_guards() {
                let new = KeyGuard { body_hash, seen_at, hold: 0 };
                guards.with(k, new, |guard| guard.hold = guard.hold.max(hold.unwrap_or(0)));
            }
        }

        let mut sku_settings = AHashMap::new();
        let mut committed = std::collections::HashSet::new();
        for state in &recovered.shards {
            sku_settings.extend(state.all_sku_settings().map(|(sku, s)| (sku.to_owned(), s.clone())));
            committed.extend(state.committed_split_holds());
        }
        let kit_count = sku_settings.values().filter(|s: &&SkuSettings| s.is_kit()).count();
        let unfinished_commits: Vec<(usize, HoldId)> = recovered
            .shards
            .iter()
            .enumerate()
            .flat_map(|(shard, state)| state.holds().map(move |(hold, _, _)| (shard, hold)))
            .filter(|(_, hold)| committed.contains(hold))
            .collect();

        let log = Arc::new(LogShared::default());
        log.durable_seq.store(recovered.next_seq - 1, Ordering::Release); // all recovered records are on disk
        let next_seq = Arc::new(AtomicU64::new(recovered.next_seq));
        let (log_tx, log_rx) = unbounded();
        let mut threads = Threads::default();
        let mut senders = Vec::with_capacity(shards);
        let mut inboxes = Vec::with_capacity(shards);
        for (i, state) in recovered.shards.into_iter().enumerate() {
            let (tx, rx) = bounded(config.shard_queue_depth_max);
            senders.push(tx);
            inboxes.push(rx.clone());
            let worker = ShardWorker {
                shard: i as u16,
                state,
                rx,
                log: log_tx.clone(),
                next_seq: next_seq.clone(),
                batch_max: config.shard_batch_max,
            };
            let (log_shared, wake_log) = (log.clone(), log_tx.clone());
            let handle = std::thread::Builder::new().name(format!("shard-{i}")).spawn(move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err() {
                    // A bug, not bad input: stop acknowledging anything, loudly. Restarting recovers
                    // exactly what was acknowledged.
                    tracing::error!(
                        shard = i,
                        "shard thread panicked: the engine acknowledges nothing more; restart it"
                    );
                    log_shared.failed.store(true, Ordering::Release);
                    let _ = wake_log.send(log_writer::ShardOutput::wake());
                }
            });
            threads.shards.push(handle.map_err(io("cannot start shard thread", &config.data_dir))?);
        }
        drop(log_tx);
        let writer = LogWriter {
            rx: log_rx,
            wal_dir: wal_dir.clone(),
            segment,
            segment_bytes_max: config.segment_bytes_max,
            fsync: config.fsync,
            next_seq: recovered.next_seq,
            shared: log.clone(),
        };
        let handle = std::thread::Builder::new().name("log-writer".into()).spawn(move || writer.run());
        threads.log = Some(handle.map_err(io("cannot start log writer", &config.data_dir))?);

        let inner = Arc::new(Inner {
            config,
            shards: senders,
            shard_inboxes: inboxes,
            stopped: std::sync::atomic::AtomicBool::new(false),
            log,
            hold_counter: AtomicU64::new(recovered.hold_counter),
            guards,
            guard_prunes: AtomicU64::new(0),
            checkpoint_lock: Mutex::new(()),
            barrier_lock: Mutex::new(()),
            wal_dir,
            checkpoint_dir,
            sku_settings: RwLock::new(sku_settings),
            kit_count: AtomicUsize::new(kit_count),
            sku_settings_lock: Mutex::new(()),
        });
        // A commit of a hold split over shards that a crash cut in two: finish the parts still
        // open, before any new movement and before the housekeeper could expire them.
        for &(shard, hold) in &unfinished_commits {
            tracing::warn!(hold, shard, "completing a split commit cut by a crash");
            inner.send_internal(shard, complete_commit_movement(hold));
        }
        if !unfinished_commits.is_empty() {
            // Open only once they are durable: each takes one record, right after the recovered ones.
            let last = recovered.next_seq + unfinished_commits.len() as Seq - 1;
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            while inner.log.durable_seq.load(Ordering::Acquire) < last {
                if inner.log.failed.load(Ordering::Acquire) || Instant::now() > deadline {
                    return Err(EngineError::Config("could not log the completion of split commits".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let hk = inner.clone();
        let handle = std::thread::Builder::new().name("housekeeper".into()).spawn(move || housekeeper(hk, stop_rx));
        threads.housekeeper = Some((stop_tx, handle.map_err(io("cannot start housekeeper", &inner.config.data_dir))?));
        Ok(Engine { inner, threads: Mutex::new(threads), recovery: recovered.report })
    }

    /// What recovery found when the engine opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Sends movements on their way; each is decided by its shard and acknowledged once durable.
    /// A reservation's `hold` is assigned here (whatever the caller put there).
    pub fn submit(&self, movements: Vec<Movement>) -> Submission {
        submit_on(&self.inner, movements, None)
    }

    /// [`Engine::submit`] with each movement's [`body_hash`] already known (one per movement, in
    /// order; the server takes them from the bytes as they came). Movements without a key ignore
    /// theirs.
    pub fn submit_hashed(&self, movements: Vec<Movement>, body_hashes: Vec<u64>) -> Submission {
        assert_eq!(movements.len(), body_hashes.len(), "one body hash per movement");
        submit_on(&self.inner, movements, Some(body_hashes))
    }

    /// Submits and waits (blocking).
    pub fn execute(&self, movements: Vec<Movement>) -> Vec<MovementResult> {
        self.submit(movements).wait()
    }

    /// Submits one movement and waits (blocking).
    pub fn execute_one(&self, movement: Movement) -> MovementResult {
        self.execute(vec![movement])[0]
    }

    fn ask(&self, shard: usize, q: Query) -> Option<Answer> {
        self.ask_later(shard, q)?.blocking_recv().ok()
    }

    fn ask_later(&self, shard: usize, q: Query) -> Option<oneshot::Receiver<Answer>> {
        let (tx, rx) = oneshot::channel();
        self.inner.shards[shard].send(ShardMsg::Query(q, tx)).ok()?;
        Some(rx)
    }

    /// Asks the shard that owns `sku` (blocking). Answers reflect every movement acknowledged
    /// before the call, and never a rejected one.
    pub fn query(&self, sku: &str, q: Query) -> Option<Answer> {
        self.ask(shard_of(sku, self.shard_count()), q)
    }

    /// [`Engine::query`] for async code.
    pub async fn query_async(&self, sku: &str, q: Query) -> Option<Answer> {
        self.ask_later(shard_of(sku, self.shard_count()), q)?.await.ok()
    }

    /// Asks every shard (async); one answer per shard.
    pub async fn query_all_async(&self, q: impl Fn() -> Query) -> Vec<Answer> {
        let mut answers = Vec::new();
        for shard in 0..self.shard_count() {
            if let Some(rx) = self.ask_later(shard, q()) {
                if let Ok(a) = rx.await {
                    answers.push(a);
                }
            }
        }
        answers
    }

    /// The level of one (SKU, location): reflects every movement acknowledged before the call.
    /// A kit's level is derived from its components' (see [`kit_level`]).
    pub fn level(&self, sku: &str, location: &str) -> Option<LevelView> {
        if let Some(components) = self.kit_components(sku) {
            let levels: Vec<Option<LevelView>> = components.iter().map(|c| self.level(&c.sku, location)).collect();
            return kit_level(sku, location, &components, &levels);
        }
        let q = Query::Level { sku: sku.into(), location: location.into() };
        match self.ask(shard_of(sku, self.shard_count()), q) {
            Some(Answer::Level(l)) => l,
            _ => None,
        }
    }

    /// Settings of one (SKU, location).
    pub fn settings(&self, sku: &str, location: &str) -> Option<Settings> {
        let q = Query::Settings { sku: sku.into(), location: location.into() };
        match self.ask(shard_of(sku, self.shard_count()), q) {
            Some(Answer::Settings(s)) => s,
            _ => None,
        }
    }

    /// A level with its lots (first to expire first), channel allocations and loose units.
    pub fn level_detail(&self, sku: &str, location: &str) -> Option<LevelDetail> {
        match self.query(sku, Query::LevelDetail { sku: sku.into(), location: location.into() }) {
            Some(Answer::LevelDetail(d)) => d,
            _ => None,
        }
    }

    /// `available` of a level for one channel: its allocation plus the units no channel ring-fenced.
    pub fn available_for_channel(&self, sku: &str, location: &str, channel: &str) -> Option<Qty> {
        let q = Query::AvailableFor { sku: sku.into(), location: location.into(), channel: channel.into() };
        match self.query(sku, q) {
            Some(Answer::AvailableFor(a)) => a,
            _ => None,
        }
    }

    /// Where a serial number is, its state, and every movement that named it.
    pub fn serial(&self, sku: &str, serial: &str) -> Option<SerialView> {
        match self.query(sku, Query::Serial { sku: sku.into(), serial: serial.into() }) {
            Some(Answer::Serial(s)) => s,
            _ => None,
        }
    }

    /// A SKU's settings (serial tracking, expiry warning, kit components); the default if never set.
    pub fn sku_settings(&self, sku: &str) -> SkuSettings {
        self.inner.sku_settings.read().expect("settings lock").get(sku).cloned().unwrap_or_default()
    }

    /// The components of a kit, or `None` if `sku` is not a kit.
    pub fn kit_components(&self, sku: &str) -> Option<Vec<Component>> {
        self.inner.kit_components(sku)
    }

    /// Every level (of one location, if given), sorted by SKU then location.
    pub fn levels(&self, location: Option<&str>) -> Vec<LevelView> {
        let mut all = Vec::new();
        for shard in 0..self.shard_count() {
            if let Some(Answer::Levels(mut ls)) = self.ask(shard, Query::Levels { location: location.map(Into::into) })
            {
                all.append(&mut ls);
            }
        }
        all.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        all
    }

    /// Open holds of every shard, merged by hold id and sorted: (id, expires_at, lines).
    pub fn holds(&self) -> Vec<HoldView> {
        let mut merged = std::collections::BTreeMap::new();
        for shard in 0..self.shard_count() {
            if let Some(Answer::Holds(hs)) = self.ask(shard, Query::Holds) {
                for (id, exp, mut lines) in hs {
                    let e = merged.entry(id).or_insert((exp, Vec::new()));
                    e.1.append(&mut lines);
                }
            }
        }
        merged
            .into_iter()
            .map(|(id, (exp, mut lines))| {
                lines.sort();
                (id, exp, lines)
            })
            .collect()
    }

    /// Levels, idempotency keys, and bytes of level tables beyond the SKU strings, summed over shards.
    pub fn memory_stats(&self) -> (usize, usize, usize) {
        let mut totals = (0, 0, 0);
        for shard in 0..self.shard_count() {
            if let Some(Answer::Stats { levels, keys, overhead_bytes }) = self.ask(shard, Query::Stats) {
                totals = (totals.0 + levels, totals.1 + keys, totals.2 + overhead_bytes);
            }
        }
        totals
    }

    /// Number of idempotency keys the engine-wide guard holds.
    pub fn key_guard_count(&self) -> usize {
        self.inner.guards.len()
    }

    /// How many times the guards were scanned for pruning (each scan visits every guard).
    pub fn key_guard_prunes(&self) -> u64 {
        self.inner.guard_prunes.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> EngineStats {
        let log = &self.inner.log;
        let mut depths = [0; SHARDS_MAX];
        for (d, s) in depths.iter_mut().zip(&self.inner.shards) {
            *d = s.len();
        }
        EngineStats {
            durable_seq: log.durable_seq.load(Ordering::Acquire),
            log_bytes: log.bytes_written.load(Ordering::Relaxed),
            log_syncs: log.syncs.load(Ordering::Relaxed),
            shard_queue_depths: depths,
        }
    }

    /// Durable records from `from_seq` (inclusive) on: catch-up from the log files, then live.
    pub fn feed(&self, from_seq: Seq) -> Result<Feed, FeedError> {
        Feed::new(self.inner.wal_dir.clone(), self.inner.log.clone(), from_seq)
    }

    /// A consistent copy of every level as of one sequence number: it reflects every record up
    /// to that number and none after. All shards pause while they copy their levels.
    pub fn levels_snapshot(&self) -> (Seq, Vec<LevelView>) {
        let Some((seq, copies)) = self.inner.copy_at_barrier(CopyKind::Levels) else { return (0, Vec::new()) };
        let mut all: Vec<LevelView> = copies
            .into_iter()
            .flat_map(|c| match c {
                Copied::Levels(l) => l,
                Copied::Snapshot(_) => Vec::new(),
            })
            .collect();
        all.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        (seq, all)
    }

    /// Takes a checkpoint now and removes the log segments it makes unnecessary.
    pub fn checkpoint(&self) -> std::io::Result<PathBuf> {
        self.inner.checkpoint()
    }

    /// Stops cleanly: finishes what is queued, flushes the log, writes a checkpoint.
    pub fn shutdown(self) -> std::io::Result<Option<PathBuf>> {
        self.stop(true)
    }

    /// Stops as a crash would (for tests): no checkpoint, and nothing queued is written or
    /// acknowledged after this call. What was acknowledged is on disk.
    pub fn halt(&self) {
        self.inner.log.halt.store(true, Ordering::Release);
        let _ = self.stop(false);
    }

    fn stop(&self, checkpoint: bool) -> std::io::Result<Option<PathBuf>> {
        let mut threads = std::mem::take(&mut *self.threads.lock().unwrap());
        if threads.log.is_none() {
            return Ok(None); // already stopped
        }
        if let Some((stop, handle)) = threads.housekeeper.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        let snapshots = if checkpoint { self.inner.snapshots() } else { None };
        for tx in &self.inner.shards {
            let _ = tx.send(ShardMsg::Stop);
        }
        for h in threads.shards.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = threads.log.take() {
            let _ = h.join();
        }
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.drain_inboxes();
        match snapshots {
            Some((shards, paused)) if !self.inner.log.failed.load(Ordering::Acquire) => {
                self.inner.write_checkpoint(shards, paused).map(Some)
            }
            _ => Ok(None),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.threads.lock().map(|t| t.log.is_some()).unwrap_or(false) {
            if let Err(e) = self.stop(true) {
                tracing::error!(error = %e, "checkpoint at shutdown failed; the log still has every movement");
            }
        }
    }
}

/// The SKU that decides the shard of a single-SKU movement.
fn routing_sku(kind: &MovementKind) -> &str {
    match kind {
        MovementKind::Receive { sku, .. }
        | MovementKind::Expect { sku, .. }
        | MovementKind::Sell { sku, .. }
        | MovementKind::Return { sku, .. }
        | MovementKind::Adjust { sku, .. }
        | MovementKind::Count { sku, .. }
        | MovementKind::Transfer { sku, .. }
        | MovementKind::SetSettings { sku, .. }
        | MovementKind::Allocate { sku, .. }
        | MovementKind::SetSkuSettings { sku, .. } => sku,
        MovementKind::Reserve { lines, .. } => lines.first().map_or("", |l| &l.sku),
        MovementKind::Commit { .. }
        | MovementKind::Release { .. }
        | MovementKind::Expire { .. }
        | MovementKind::CompleteCommit { .. } => "",
    }
}

fn shards_in(mask: u64) -> impl Iterator<Item = usize> {
    (0..SHARDS_MAX).filter(move |s| mask & (1 << s) != 0)
}

impl Inner {
    /// The components of a kit, or `None`.
    fn kit_components(&self, sku: &str) -> Option<Vec<Component>> {
        if self.kit_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let settings = self.sku_settings.read().expect("settings lock");
        settings.get(sku).filter(|s| s.is_kit()).map(|s| s.components.clone())
    }

    /// Turns a movement naming a kit into movements of its components (see
    /// `docs/complex-inventory.md`): a sale into a reservation (committed once held), reservation
    /// lines into component lines, a return or a point-of-sale sale into one part per component.
    fn expand_kits(&self, m: &mut Movement, now: Millis) -> Result<KitExpansion, Reason> {
        let settings = self.sku_settings.read().expect("settings lock");
        let kit_of = |sku: &str| settings.get(sku).filter(|s| s.is_kit()).map(|s| s.components.as_slice());
        match &mut m.kind {
            MovementKind::Reserve { lines, .. } => {
                if lines.iter().any(|l| kit_of(&l.sku).is_some()) {
                    *lines = expand_kit_lines(std::mem::take(lines), kit_of)?;
                }
                Ok(KitExpansion::None)
            }
            MovementKind::Sell { sku, location, qty, unit_price, hold, allow_negative, units } => {
                if kit_of(sku).is_none() {
                    return Ok(KitExpansion::None);
                }
                if hold.is_some() {
                    return Err(Reason::HoldLineMissing); // a hold holds the components, not the kit
                }
                if !units.is_any() {
                    return Err(Reason::InvalidLot);
                }
                // The sale's price is per kit: it goes onto the components' kit marks.
                let line = Line {
                    sku: sku.clone(),
                    location: location.clone(),
                    qty: *qty,
                    unit_price: *unit_price,
                    units: Units::ANY,
                    kit: None,
                };
                let lines = expand_kit_lines(vec![line], kit_of)?;
                if *allow_negative {
                    // Goods in the customer's hand: every component is sold whatever the stock.
                    let parts = lines.into_iter().enumerate().map(|(i, l)| {
                        let kind = MovementKind::Sell {
                            sku: l.sku,
                            location: l.location,
                            qty: l.qty,
                            unit_price: None,
                            hold: None,
                            allow_negative: true,
                            units: Units::ANY,
                        };
                        kit_part(m, i, kind)
                    });
                    return Ok(KitExpansion::Parts(parts.collect()));
                }
                m.kind = MovementKind::Reserve { hold: 0, lines, expires_at: now + KIT_SALE_HOLD_MILLIS };
                Ok(KitExpansion::Sale)
            }
            MovementKind::Return { sku, location, qty, condition, units, .. } => {
                let Some(components) = kit_of(sku) else { return Ok(KitExpansion::None) };
                let (location, qty, condition) = (location.clone(), *qty, *condition);
                if !units.is_any() {
                    return Err(Reason::InvalidLot);
                }
                let mut parts = Vec::with_capacity(components.len());
                for (i, c) in components.iter().enumerate() {
                    let qty =
                        qty.checked_mul(c.qty).filter(|&q| q <= MOVEMENT_QTY_MAX).ok_or(Reason::InvalidQuantity)?;
                    let kind = MovementKind::Return {
                        sku: c.sku.clone(),
                        location: location.clone(),
                        qty,
                        condition,
                        unit_price: None,
                        units: Units::ANY,
                    };
                    parts.push(kit_part(m, i, kind));
                }
                Ok(KitExpansion::Parts(parts))
            }
            _ => Ok(KitExpansion::None),
        }
    }

    /// The engine-wide idempotency check of a movement split into independent parts: `Some` is
    /// the rejection of a key reused with another body.
    fn check_key(&self, m: &Movement, body_hash: u64, now: Millis) -> Option<MovementResult> {
        let key = m.key.as_deref()?;
        let new = KeyGuard { body_hash, seen_at: now, hold: 0 };
        (self.guards.with(key_hash(key), new, |guard| guard.body_hash) != body_hash)
            .then_some(MovementResult { seq: None, outcome: Err(Reason::IdempotencyMismatch) })
    }

    /// Checks new SKU settings against the other SKUs' (no kit of kits, no serial-tracked
    /// component) and puts them in the mirror at once, so that a concurrent change is checked
    /// against them. Returns the previous settings, to put back if the shard refuses.
    fn claim_sku_settings(&self, sku: &str, new: &SkuSettings) -> Result<Option<SkuSettings>, Reason> {
        let _serial = self.sku_settings_lock.lock().expect("settings lock");
        let settings = self.sku_settings.read().expect("settings lock");
        let is_component = |s: &str| settings.values().any(|k| k.components.iter().any(|c| c.sku == s));
        if new.is_kit() {
            for c in &new.components {
                let component = settings.get(&c.sku);
                if component.is_some_and(|x| x.is_kit() || x.serial_tracked) {
                    return Err(Reason::InvalidKit);
                }
            }
            if is_component(sku) {
                return Err(Reason::InvalidKit);
            }
        }
        if new.serial_tracked && is_component(sku) {
            return Err(Reason::InvalidKit);
        }
        let previous = settings.get(sku).cloned();
        drop(settings);
        self.put_sku_settings(sku, Some(new.clone()));
        Ok(previous)
    }

    /// Puts a SKU's settings in the mirror (`None` or the default: removes them).
    fn put_sku_settings(&self, sku: &str, new: Option<SkuSettings>) {
        let mut settings = self.sku_settings.write().expect("settings lock");
        let old = match new.filter(|s| *s != SkuSettings::default()) {
            Some(s) => settings.insert(sku.to_owned(), s),
            None => settings.remove(sku),
        };
        let now_kit = settings.get(sku).is_some_and(|s| s.is_kit());
        match (old.is_some_and(|s| s.is_kit()), now_kit) {
            (false, true) => self.kit_count.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.kit_count.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Drops whatever is still queued to the stopped shards; their submitters get `shutting_down`.
    fn drain_inboxes(&self) {
        for rx in &self.shard_inboxes {
            while rx.try_recv().is_ok() {}
        }
    }

    fn new_hold_id(&self, lines: &[Line], shards: usize) -> HoldId {
        let mut mask = 0u64;
        for l in lines {
            mask |= 1 << shard_of(&l.sku, shards);
        }
        if mask == 0 {
            mask = 1; // no line: shard 0 rejects it
        }
        let counter = self.hold_counter.fetch_add(1, Ordering::Relaxed) + 1;
        (counter << HOLD_SHARD_BITS) | mask
    }

    /// Sends a movement nobody waits for (a rollback, an expiry).
    fn send_internal(&self, shard: usize, movement: Movement) {
        let item = Item { part: 0, now: self.config.clock.now(), body_hash: 0, movement };
        let _ = self.shards[shard].send(ShardMsg::Movements { items: vec![item], batch: None });
    }

    /// Copies every shard's state at one moment (see `ShardMsg::AtBarrier`): returns the sequence
    /// number the copies are consistent at, and one copy per shard in shard order.
    fn copy_at_barrier(&self, what: CopyKind) -> Option<(Seq, Vec<Copied>)> {
        if self.log.failed.load(Ordering::Acquire) {
            return None; // a shard may be gone: nobody would pass the barrier
        }
        let barrier = Arc::new(std::sync::Barrier::new(self.shards.len()));
        let mut replies = Vec::new();
        {
            let _no_crossing = self.barrier_lock.lock().unwrap();
            for tx in &self.shards {
                let (reply, rx) = oneshot::channel();
                let rx = OneshotRx(rx);
                tx.send(ShardMsg::AtBarrier(barrier.clone(), what, reply)).ok()?;
                replies.push(rx);
            }
        }
        let mut seq = 0;
        let mut copies = Vec::new();
        for rx in replies {
            let (claimed, copy) = rx.recv()?;
            seq = seq.max(claimed);
            copies.push(copy);
        }
        Some((seq, copies))
    }

    /// Snapshots of every shard, all as of one sequence number (a consistent cut), and how long
    /// the shards paused for their copies (the snapshots are finished after the pause).
    fn snapshots(&self) -> Option<(Vec<ShardSnapshot>, Duration)> {
        let started = Instant::now();
        let (seq, copies) = self.copy_at_barrier(CopyKind::Snapshot)?;
        let paused = started.elapsed();
        let snaps = copies.into_iter().filter_map(|c| match c {
            Copied::Snapshot(copy) => {
                let mut s = copy.finish();
                s.last_seq = seq; // no record of this shard lies between its own last and `seq`
                Some(s)
            }
            Copied::Levels(_) => None,
        });
        Some((snaps.collect(), paused))
    }

    fn checkpoint(&self) -> std::io::Result<PathBuf> {
        in_background(|| {
            let (shards, paused) = self.snapshots().ok_or_else(|| std::io::Error::other("the engine is stopping"))?;
            self.write_checkpoint(shards, paused)
        })
    }

    /// Writes a checkpoint once every record it covers is durable, then prunes old segments.
    /// `paused` is how long the shards paused for their copies (logged with the checkpoint).
    fn write_checkpoint(&self, shards: Vec<ShardSnapshot>, paused: Duration) -> std::io::Result<PathBuf> {
        let started = Instant::now();
        let _one_at_a_time = self.checkpoint_lock.lock().unwrap();
        let newest = shards.iter().map(|s| s.last_seq).max().unwrap_or(0);
        if !self.log.wait_durable(newest) {
            return Err(std::io::Error::other("the log failed before the checkpoint's records were durable"));
        }
        let body = CheckpointBody {
            taken_at: self.config.clock.now(),
            hold_counter: self.hold_counter.load(Ordering::Relaxed),
            shards,
        };
        let path = write_checkpoint(&self.checkpoint_dir, &body)?;
        // Segments entirely covered by the oldest kept checkpoint are no longer needed.
        let oldest = list_checkpoints(&self.checkpoint_dir)?.into_iter().next();
        if let Some((covered, oldest)) = oldest {
            // Its name is its covered sequence number; its checksums say it is whole (decoding
            // it, hundreds of megabytes with millions of keys, would tell nothing more).
            verify_checkpoint(&oldest).map_err(|why| std::io::Error::other(format!("{}: {why}", oldest.display())))?;
            let segments = list_segments(&self.wal_dir)?;
            let sizes: Vec<u64> =
                segments.iter().map(|(_, p)| std::fs::metadata(p).map(|m| m.len())).collect::<Result<_, _>>()?;
            for (i, pair) in segments.windows(2).enumerate() {
                let newer_bytes: u64 = sizes[i + 1..].iter().sum();
                if pair[1].0 <= covered + 1 && newer_bytes >= self.config.log_retention_bytes {
                    std::fs::remove_file(&pair[0].1)?;
                }
            }
        }
        tracing::info!(
            checkpoint = %path.display(),
            seq = body.covered_seq(),
            bytes = std::fs::metadata(&path).map_or(0, |m| m.len()),
            pause_ms = paused.as_millis() as u64,
            write_ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        Ok(path)
    }

    /// Sends every shard an expiry tick.
    fn expire(&self) {
        let now = self.config.clock.now();
        let keys_seen_before = now.saturating_sub(self.config.idempotency_window.as_millis() as Millis);
        for tx in &self.shards {
            let _ = tx.send(ShardMsg::Expire {
                now,
                holds_expired_by: now.saturating_sub(self.config.hold_sweep_grace.as_millis() as Millis),
                keys_seen_before,
                keys_max: self.config.idempotency_keys_max / self.shards.len() as u64,
                due: false,
            });
        }
    }

    /// Drops key guards of keys the shards no longer remember: older than the window, or older
    /// than the oldest key any shard still keeps (shards drop their oldest beyond `keys_max`).
    fn prune_guards(&self) {
        let mut cutoff = self.config.clock.now().saturating_sub(self.config.idempotency_window.as_millis() as Millis);
        let mut oldest_kept: Option<Millis> = None;
        for tx in &self.shards {
            let (reply, rx) = oneshot::channel();
            if tx.send(ShardMsg::Query(Query::OldestKey, reply)).is_err() {
                return;
            }
            match rx.blocking_recv() {
                Ok(Answer::OldestKey(Some(t))) => oldest_kept = Some(oldest_kept.map_or(t, |o| o.min(t))),
                Ok(_) => {}
                Err(_) => return,
            }
        }
        // With no key kept anywhere, every guard can go; but never a young one: its movement may
        // still be on its way to a shard.
        cutoff = cutoff
            .max(oldest_kept.unwrap_or(Millis::MAX))
            .min(self.config.clock.now().saturating_sub(KEY_GUARD_AGE_MIN.as_millis() as Millis));
        self.guards.retain(|g| g.seen_at >= cutoff);
        self.guard_prunes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Key guards younger than this are kept even over `idempotency_keys_max`: their movements may
/// still be on their way to a shard (queues drain in milliseconds; this is the margin for an
/// engine far behind). Short enough that at hundreds of thousands of keyed movements per second
/// the guards stay near the bound instead of piling up (a minute of them at 340,000/s was twice
/// the bound, and the table's growth stalled the network thread for seconds).
pub const KEY_GUARD_AGE_MIN: Duration = Duration::from_secs(10);

/// A oneshot receiver to wait on from any thread, async runtime or not (shutdown may run on a
/// runtime thread, where tokio's `blocking_recv` would panic).
struct OneshotRx<T>(oneshot::Receiver<T>);

impl<T> OneshotRx<T> {
    fn recv(mut self) -> Option<T> {
        loop {
            match self.0.try_recv() {
                Ok(v) => return Some(v),
                Err(oneshot::error::TryRecvError::Closed) => return None,
                Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(std::time::Duration::from_micros(200)),
            }
        }
    }
}

/// Runs `work` on a thread of its own at a lower CPU priority (nice 10 on Linux), and waits for
/// it. A checkpoint with millions of idempotency keys encodes and writes hundreds of megabytes:
/// on a small machine it then gives way to the shards, the log writer and the network instead of
/// taking a core from them. (`work` takes no lock the hot path needs while it is off the CPU: the
/// shards copy their state at their own priority, and the rest is files.)
fn in_background<T: Send>(work: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name("checkpoint-writer".into()).spawn_scoped(scope, || {
            lower_priority();
            work()
        })?;
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Lowers the calling thread's CPU priority (nice 10; Linux only).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, no memory passed.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the checkpoint thread's priority");
        }
    }
}

/// Expires holds and keys, prunes key guards and takes periodic checkpoints until told to stop.
fn housekeeper(inner: Arc<Inner>, stop: crossbeam_channel::Receiver<()>) {
    let mut last_checkpoint = Instant::now();
    let mut last_prune = Instant::now();
    let mut guards_after_prune = 0;
    let mut log_bytes_at_checkpoint = 0;
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(inner.config.expire_interval) {
        inner.expire();
        // Over the bound by an eighth, and by another eighth since the last prune: a prune scans
        // every guard, and guards under KEY_GUARD_AGE_MIN stay, so at a high rate a prune right after
        // another would scan millions of guards and remove none.
        let (guards, slack) = (inner.guards.len() as u64, (inner.config.idempotency_keys_max / 8).max(1));
        let guards_over = guards > inner.config.idempotency_keys_max + slack && guards >= guards_after_prune + slack;
        if last_prune.elapsed() >= inner.config.key_guard_prune_interval || guards_over {
            inner.prune_guards();
            last_prune = Instant::now();
            guards_after_prune = inner.guards.len() as u64;
        }
        let log_bytes = inner.log.bytes_written.load(Ordering::Relaxed);
        if last_checkpoint.elapsed() >= inner.config.checkpoint_interval
            || log_bytes - log_bytes_at_checkpoint >= inner.config.checkpoint_log_bytes
        {
            if let Err(e) = inner.checkpoint() {
                tracing::error!(error = %e, "periodic checkpoint failed; will retry");
            }
            last_checkpoint = Instant::now();
            log_bytes_at_checkpoint = log_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> i32 {
        // SAFETY: plain system calls on the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_on_another_thread_at_a_lower_priority_and_gives_back_its_result() {
        let caller = (std::thread::current().id(), nice_of_this_thread());
        let (thread, nice) =
            in_background(|| Ok((std::thread::current().id(), nice_of_this_thread()))).expect("it runs");
        assert_ne!(thread, caller.0);
        assert_eq!(nice, caller.1.max(10), "nice 10, or the caller's if that was already lower");
        assert_eq!(nice_of_this_thread(), caller.1, "the caller keeps its priority");
        let failed: std::io::Result<()> = in_background(|| Err(std::io::Error::other("disk full")));
        assert_eq!(failed.unwrap_err().to_string(), "disk full");
    }
}
