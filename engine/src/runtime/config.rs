//! The engine's settings, with their defaults and limits in one place.

use crate::core::{Millis, SHARDS_MAX};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// When an accepted movement is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After its log record is on disk (`fdatasync`). The default.
    #[default]
    Always,
    /// UNSAFE: after the write to the OS, before it reaches the disk. A power loss or OS crash
    /// loses acknowledged movements. For tests and benchmarks only.
    Never,
}

/// Where the engine reads the time. Tests use a manual clock to drive hold expiry.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn now(&self) -> Millis {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Holds `wal/`, `checkpoints/` and `engine.meta`.
    pub data_dir: PathBuf,
    /// Number of shards (threads applying movements), 1 to 16. Fixed when the data directory is
    /// created; a different value later is ignored with a warning.
    pub shards: usize,
    pub fsync: Fsync,
    /// A segment is closed at the first batch boundary past this size.
    pub segment_bytes_max: u64,
    /// A checkpoint is taken this often...
    pub checkpoint_interval: Duration,
    /// ...or after this much log, whichever comes first.
    pub checkpoint_log_bytes: u64,
    /// Log segments are kept, even once a checkpoint covers them, while the segments newer than
    /// them add up to less than this: the change feed can be replayed that far back.
    pub log_retention_bytes: u64,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// At most this many idempotency keys are remembered (the oldest go first).
    pub idempotency_keys_max: u64,
    /// How often the engine-wide guards of forgotten idempotency keys are dropped (a pass over all
    /// of them; also done whenever they exceed `idempotency_keys_max` by an eighth).
    pub key_guard_prune_interval: Duration,
    /// How often expired holds and keys are dropped.
    pub expire_interval: Duration,
    /// Expired holds are dropped this long after their expiry, so that a commit that reached
    /// some shards of a multi-shard hold before the expiry reaches the others too.
    pub hold_sweep_grace: Duration,
    /// Messages queued to one shard before submitters wait.
    pub shard_queue_depth_max: usize,
    /// Movements one shard applies between two hand-offs to the log.
    pub shard_batch_max: usize,
    pub clock: Clock,
}

impl EngineConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            shards: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(SHARDS_MAX),
            fsync: Fsync::Always,
            segment_bytes_max: 64 << 20,
            checkpoint_interval: Duration::from_secs(300),
            checkpoint_log_bytes: 1 << 30,
            log_retention_bytes: 1 << 30,
            idempotency_window: Duration::from_secs(24 * 3600),
            idempotency_keys_max: 10_000_000,
            key_guard_prune_interval: Duration::from_secs(60),
            expire_interval: Duration::from_millis(250),
            hold_sweep_grace: Duration::from_secs(1),
            shard_queue_depth_max: 4096,
            shard_batch_max: 8192,
            clock: Clock::System,
        }
    }
}
