//! The whole engine with its log: many concurrent submitters, each sending batches of movements
//! and waiting for their acknowledgement. Prints movements per second and the time from submit
//! to acknowledgement (HdrHistogram), over 1 million SKUs with Zipf-skewed popularity.
//!
//! Run: `cargo bench -p perpetua-benches --bench engine_durable`
//! Each submitter thread keeps IN_FLIGHT submissions pipelined (waiting for the oldest), as a
//! server's connection tasks do.
//! Settings (environment): FSYNC=always|never (always), SUBMITTERS (4), IN_FLIGHT (64), BATCH (16
//! movements per submission), SECONDS (10), SKUS (1000000), SHARDS (cores), DATA_DIR (a temporary dir),
//! KEYS=1|0 (1: every movement carries an idempotency key), LOTS (0; n: every level is n lots,
//! receipts name one, sales and holds take first-expiry-first-out).
//! Movements are generated before the clock starts, so the figures are the engine's alone.

use engine::runtime::{Engine, EngineConfig, Fsync};
use hdrhistogram::Histogram;
use perpetua_benches::{env_or as env, only_listing, Catalogue};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if only_listing() {
        return;
    }
    let fsync = if std::env::var("FSYNC").as_deref() == Ok("never") { Fsync::Never } else { Fsync::Always };
    let submitters: usize = env("SUBMITTERS", 4);
    let in_flight: usize = env("IN_FLIGHT", 64);
    let batch: usize = env("BATCH", 16);
    let seconds: u64 = env("SECONDS", 10);
    let skus: u64 = env("SKUS", 1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("DATA_DIR").map(Into::into).unwrap_or_else(|_| tmp.path().to_path_buf());
    let mut config = EngineConfig::new(&dir);
    config.fsync = fsync;
    config.shards = env("SHARDS", config.shards);
    let engine = Arc::new(Engine::open(config).unwrap());

    let started = Instant::now();
    let lots: u32 = env("LOTS", 0);
    let cat = Catalogue::new(skus, 1, 1.0, 1).with_lots(lots);
    let seed: Vec<_> = cat.seed_stock(1_000_000).collect();
    for chunk in seed.chunks(10_000) {
        engine.execute(chunk.to_vec());
    }
    println!("seeded {skus} SKUs in {:.1} s", started.elapsed().as_secs_f64());

    let keys = env("KEYS", 1) == 1;
    // Enough movements for ~1.5 M/s over the run, generated up front.
    let per_worker = (1_500_000 * seconds as usize / submitters / batch).max(1);
    let t = Instant::now();
    let pregenerated: Vec<Vec<Vec<_>>> = (0..submitters)
        .map(|w| {
            let mut cat = Catalogue::new(skus, 1, 1.0, 100 + w as u64).with_lots(lots);
            let mut i = 0u64;
            (0..per_worker)
                .map(|_| {
                    (0..batch)
                        .map(|_| {
                            i += 1;
                            cat.next_movement(keys.then(|| format!("bench-{w}-{i}")))
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    println!("generated {} movements in {:.1} s", submitters * per_worker * batch, t.elapsed().as_secs_f64());

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let stats_before = engine.stats();
    let started = Instant::now();
    let workers: Vec<_> = pregenerated
        .into_iter()
        .map(|batches| {
            let (engine, stop, done) = (engine.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
                let mut pending = std::collections::VecDeque::with_capacity(in_flight);
                let mut finish = |pending: &mut std::collections::VecDeque<(Instant, engine::runtime::Submission)>| {
                    if let Some((sent, submission)) = pending.pop_front() {
                        let results = submission.wait();
                        hist.record(sent.elapsed().as_micros().max(1) as u64).unwrap();
                        done.fetch_add(results.len() as u64, Ordering::Relaxed);
                    }
                };
                for movements in batches {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if pending.len() == in_flight {
                        finish(&mut pending);
                    }
                    pending.push_back((Instant::now(), engine.submit(movements)));
                }
                while !pending.is_empty() {
                    finish(&mut pending);
                }
                hist
            })
        })
        .collect();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline && !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for w in workers {
        hist.add(w.join().unwrap()).unwrap();
    }
    let stats = engine.stats();
    let movements = done.load(Ordering::Relaxed);
    println!(
        "fsync={fsync:?} shards={} submitters={submitters} in_flight={in_flight} batch={batch} keys={keys}: {movements} movements in {elapsed:.1} s = {:.0} movements/s",
        engine.shard_count(),
        movements as f64 / elapsed
    );
    println!(
        "time to acknowledgement per submission (us): p50 {} p90 {} p99 {} p99.9 {} max {}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    let syncs = stats.log_syncs - stats_before.log_syncs;
    println!(
        "log: {:.1} MB/s, {syncs} fsyncs ({:.0} movements per fsync), {:.0} bytes per movement",
        (stats.log_bytes - stats_before.log_bytes) as f64 / elapsed / 1e6,
        movements as f64 / syncs.max(1) as f64,
        (stats.log_bytes - stats_before.log_bytes) as f64 / movements.max(1) as f64
    );
    let (levels, keys, overhead) = engine.memory_stats();
    println!(
        "memory: {levels} levels, {keys} idempotency keys, {:.1} bytes of level tables per level beyond SKU strings",
        overhead as f64 / levels as f64
    );
    let engine = Arc::try_unwrap(engine).ok().expect("workers stopped");
    let t = Instant::now();
    engine.shutdown().unwrap();
    println!("shutdown with checkpoint: {:.2} s", t.elapsed().as_secs_f64());
}
