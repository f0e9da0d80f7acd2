//! `ingest`: follows the engine's change feed over QUIC into Parquet, committing a chunk every
//! `chunk_rows` rows or `flush_every`, and writing level snapshots on a schedule. Resumes from
//! the files' own commit marker (see [`crate::sink`]), so it may be killed at any moment.

use crate::rows::{Converter, DayRows, RecordIn};
use crate::sink::{encode_chunk, write_levels, Chunk, Sink};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use engine::client::{Client, ClientError, ConnectArgs, FeedBatch, Subscription};
use engine::protocol::FeedFilter;
use std::time::{Duration, Instant};

/// Feed errors in a row (slow consumer, connection down) before `ingest` gives up.
pub const FEED_ERRORS_MAX: u32 = 20;
/// Feed batches read ahead of the writer.
pub const FEED_BATCHES_QUEUED_MAX: usize = 8;

/// Settings of `ingest`.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub connect: ConnectArgs,
    /// Catch up to the engine's durable point as of the start, then exit.
    pub once: bool,
    /// Rows per chunk, at most.
    pub chunk_rows: usize,
    /// A chunk is committed at least this often while records arrive.
    pub flush_every: Duration,
    /// A level snapshot is written this often (none if `None`), and at the end of `--once`.
    pub levels_every: Option<Duration>,
    /// Start an empty store at the oldest record the engine still keeps, if it no longer has
    /// the first one.
    pub allow_gap: bool,
    pub progress: bool,
}

/// What an ingest run did.
#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows_total: u64,
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    args.connect().await.with_context(|| {
        format!("cannot connect to stockd at {} (is it running? see --server, --ca, --token)", args.server)
    })
}

/// Takes a consistent level snapshot from the engine and writes it.
pub async fn snapshot_levels(client: &Client, store: &Store) -> Result<(u64, String)> {
    let (seq, mut levels) = client.snapshot().await.context("cannot take a levels snapshot from the engine")?;
    levels.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    Ok((seq, write_levels(store, seq, now, &levels).await?))
}

/// Reads the subscription on a task of its own (its reads are not cancel-safe, the channel's
/// are), retrying what a resubscription can fix: a `slow_consumer` cut-off (the ingester was
/// busy writing) or a connection that stayed down through the client's own retries. At most
/// [`FEED_BATCHES_QUEUED_MAX`] batches wait for the writer.
fn follow(mut sub: Subscription) -> tokio::sync::mpsc::Receiver<Result<FeedBatch>> {
    let (tx, rx) = tokio::sync::mpsc::channel(FEED_BATCHES_QUEUED_MAX);
    tokio::spawn(async move {
        let mut errors = 0u32;
        loop {
            let r = match sub.next().await {
                Ok(b) => {
                    errors = 0;
                    Ok(b)
                }
                Err(e) if (e.code() == Some("slow_consumer") || e.is_transient()) && errors < FEED_ERRORS_MAX => {
                    errors += 1;
                    tracing::warn!(error = %e, position = sub.position(), "the change feed broke; resubscribing");
                    tokio::time::sleep(Duration::from_millis(100 * errors as u64)).await;
                    continue;
                }
                Err(e) => Err(anyhow::Error::new(e).context("the change feed failed")),
            };
            let fatal = r.is_err();
            if tx.send(r).await.is_err() || fatal {
                break;
            }
        }
    });
    rx
}

/// Commits the rows read so far as the chunk ending at `through` (nothing if nothing was read).
async fn commit_through(sink: &mut Sink, conv: &mut Converter, rows: &mut DayRows, through: u64) -> Result<()> {
    if through <= sink.state.last_seq {
        return Ok(());
    }
    let chunk = Chunk::new(sink.state.last_seq + 1, through, std::mem::take(rows), conv);
    let encoded = tokio::task::spawn_blocking(move || encode_chunk(chunk)).await??;
    sink.commit(encoded).await
}

/// Follows the feed until stopped (Ctrl-C, SIGTERM) or, with `once`, caught up.
pub async fn ingest(store: Store, opts: IngestOptions) -> Result<IngestReport> {
    let mut sink = Sink::open(store.clone(), format!("ingest {}", opts.connect.server)).await?;
    let client = connect(&opts.connect).await?;
    let target = client.welcome().durable_seq;
    let mut report = IngestReport { first_seq: sink.resume_seq(), ..IngestReport::default() };
    let sub = match client.subscribe(sink.resume_seq(), FeedFilter::All).await {
        Ok(s) => s,
        Err(ClientError::FeedTruncated { oldest_available }) => {
            if !(opts.allow_gap && sink.state.last_seq == 0) {
                bail!(
                    "the engine's log no longer holds sequence number {} (the oldest kept is {oldest_available}). \
                     Import the older records from a copy of the data directory with `stock-analytics import --wal DIR`, \
                     or pass --allow-gap to start this (empty) store at {oldest_available}",
                    sink.resume_seq()
                );
            }
            tracing::warn!(
                oldest_available,
                "history starts at {oldest_available}: older records are gone from the log"
            );
            sink.start_after_gap(oldest_available)?;
            report.first_seq = oldest_available;
            client.subscribe(oldest_available, FeedFilter::All).await.context("cannot follow the change feed")?
        }
        Err(e) => return Err(e).context("cannot follow the change feed"),
    };
    let mut conv = Converter::new(sink.state.holds.clone(), sink.state.lots.clone());
    let mut rows = DayRows::default();
    let mut through = sink.state.last_seq;
    let mut chunk_started = Instant::now();
    let mut last_levels = Instant::now();
    let started = Instant::now();
    let start_seq = sink.state.last_seq;
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut said_caught_up = false;
    let mut stop = Box::pin(engine::server::wait_for_signal());
    let mut batches = follow(sub);
    if store.list(crate::schema::LEVELS_DIR).await?.is_empty() && opts.levels_every.is_some() {
        snapshot_levels(&client, &store).await?;
    }
    loop {
        let caught_up = opts.once && through >= target;
        let flush_due = chunk_started.elapsed() >= opts.flush_every;
        if rows.rows() >= opts.chunk_rows || flush_due || caught_up {
            commit_through(&mut sink, &mut conv, &mut rows, through).await?;
            chunk_started = Instant::now();
        }
        // The progress line is for catching up; once there, one line says so.
        let catching_up = through < target;
        if opts.progress && !catching_up && !said_caught_up && !opts.once {
            said_caught_up = true;
            eprintln!("\ringest: caught up at sequence number {through}; following the change feed (Ctrl-C stops)");
        }
        if opts.progress
            && (catching_up || caught_up)
            && (last_print.elapsed() >= Duration::from_millis(500) || caught_up)
        {
            last_print = Instant::now();
            let done = through.saturating_sub(start_seq);
            let todo = target.saturating_sub(start_seq).max(1);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\ringest: sequence number {through} of {target} ({:.0}%), {} rows, {rate:.0} records/s   ",
                100.0 * done.min(todo) as f64 / todo as f64,
                sink.state.rows_total
            );
        }
        if caught_up {
            break;
        }
        if let Some(every) = opts.levels_every {
            if last_levels.elapsed() >= every {
                last_levels = Instant::now();
                let (seq, name) = snapshot_levels(&client, &store).await?;
                tracing::info!(seq, file = %store.show(&name), "wrote a levels snapshot");
            }
        }
        let wait = opts.flush_every.saturating_sub(chunk_started.elapsed()).max(Duration::from_millis(10));
        let batch = tokio::select! {
            b = batches.recv() => b.unwrap_or_else(|| Err(anyhow::anyhow!("the change feed reader stopped"))),
            _ = tokio::time::sleep(wait) => continue,
            _ = &mut stop => {
                tracing::info!("stopping: committing what was read");
                commit_through(&mut sink, &mut conv, &mut rows, through).await?;
                break;
            }
        };
        let batch = batch?;
        for e in &batch.events {
            if e.seq <= through {
                continue; // already read (a resubscription repeats nothing, but be sure)
            }
            let input = RecordIn {
                seq: e.seq,
                shard: e.shard,
                recorded_at: e.recorded_at,
                movement: &e.movement,
                outcome: &e.outcome,
                effects: &e.effects,
            };
            conv.convert(&input, rows.builder_for(e.recorded_at));
            through = e.seq;
        }
        through = through.max(batch.through_seq);
    }
    if opts.progress {
        eprintln!();
    }
    if opts.once && opts.levels_every.is_some() {
        snapshot_levels(&client, &store).await?;
    }
    client.close_and_wait().await;
    report.last_seq = sink.state.last_seq;
    report.rows_total = sink.state.rows_total;
    Ok(report)
}
