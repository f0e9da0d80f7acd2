//! Recovery: replays a log of RECORDS movements (2,000,000) with no checkpoint and prints
//! records replayed per second.
//!
//! Run: `cargo bench -p perpetua-benches --bench recovery` (RECORDS, SKUS to change the size).

use engine::runtime::{Engine, EngineConfig, Fsync};
use perpetua_benches::{env_or as env, only_listing, Catalogue};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if only_listing() {
        return;
    }
    let records: u64 = env("RECORDS", 2_000_000);
    let skus: u64 = env("SKUS", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.fsync = Fsync::Never;
    {
        let engine = Engine::open(config.clone()).unwrap();
        let mut cat = Catalogue::new(skus, 1, 1.0, 1);
        let seed: Vec<_> = cat.seed_stock(1_000_000).collect();
        for chunk in seed.chunks(10_000) {
            engine.execute(chunk.to_vec());
        }
        let mut written = skus;
        let mut i = 0u64;
        while written < records {
            let batch: Vec<_> = (0..10_000)
                .map(|_| {
                    i += 1;
                    cat.next_movement(Some(format!("k{i}")))
                })
                .collect();
            written += batch.len() as u64;
            engine.submit(batch).wait();
        }
        engine.halt(); // no checkpoint: recovery replays everything
    }
    let log_bytes: u64 =
        std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    for run in 1..=3 {
        let t = Instant::now();
        let engine = Engine::open(config.clone()).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let replayed = engine.recovery_report().records_replayed;
        println!(
            "run {run}: replayed {replayed} records ({:.0} MB) in {secs:.2} s = {:.0} records/s",
            log_bytes as f64 / 1e6,
            replayed as f64 / secs
        );
        engine.halt();
    }
}
