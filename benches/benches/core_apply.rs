//! Core apply, one shard, no log: movements per second of `ShardState::apply` over 1 million
//! SKUs with Zipf-skewed popularity. Also prints the level tables' bytes per level.
//!
//! Run: `cargo bench -p perpetua-benches --bench core_apply`; `LOTS=4` seeds every level as 4
//! lots (receipts name one, sales take first-expiry-first-out).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::core::{Effects, ShardState};
use perpetua_benches::{env_or, Catalogue};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SKUS: u64 = 1_000_000;
const BATCH: usize = 100_000;

fn lots() -> u32 {
    env_or("LOTS", 0)
}

fn seeded_shard() -> ShardState {
    let cat = Catalogue::new(SKUS, 1, 1.0, 1).with_lots(lots());
    let mut shard = ShardState::new();
    let mut fx = Effects::default();
    let mut seq = 0;
    for m in cat.seed_stock(1_000_000) {
        seq += 1;
        fx.clear();
        shard.apply(1, seq, &m, 0, &mut fx);
    }
    shard
}

fn bench(c: &mut Criterion) {
    let mut shard = seeded_shard();
    let overhead = shard.level_overhead_bytes();
    println!(
        "memory: {} levels, {} bytes of level tables beyond the SKU strings = {:.1} bytes per level",
        shard.level_count(),
        overhead,
        overhead as f64 / shard.level_count() as f64
    );
    let mut cat = Catalogue::new(SKUS, 1, 1.0, 2).with_lots(lots());
    let mut seq = 10_000_000;
    let mut fx = Effects::default();
    let mut group = c.benchmark_group("core_apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let name = match lots() {
        0 => "checkout_mix_1M_skus_zipf1.0".to_string(),
        n => format!("checkout_mix_1M_skus_zipf1.0_{n}_lots"),
    };
    group.bench_function(name, |b| {
        b.iter_batched(
            || (0..BATCH).map(|_| cat.next_movement(None)).collect::<Vec<_>>(),
            |movements| {
                for m in &movements {
                    seq += 1;
                    shard.recycle(&mut fx); // as the engine does: views' strings are reused
                    std::hint::black_box(shard.apply(1000, seq, m, 0, &mut fx));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
