//! Writes a synthetic snapshot folder (movements, a levels snapshot, settings) directly as
//! Parquet, for the report benchmarks over 100 million movements.
//!
//! `cargo run --release -p perpetua-analytics --example gen_parquet -- DIR [MOVEMENTS] [DAYS] [SKUS]`
//! (defaults: 100,000,000 movements over 90 days, 50,000 SKUs, 5 locations). About 1.3 GB on
//! disk for the defaults.

use analytics::rows::{Converter, DayRows, RecordIn};
use analytics::sink::{encode_chunk, write_levels, write_settings, Chunk, Sink};
use analytics::store::Store;
use engine::core::*;
use rand::{Rng, SeedableRng};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: gen_parquet DIR [MOVEMENTS] [DAYS] [SKUS]").clone();
    let total: u64 = args.get(2).map_or(100_000_000, |s| s.replace('_', "").parse().unwrap());
    let days: u64 = args.get(3).map_or(90, |s| s.parse().unwrap());
    let sku_count: usize = args.get(4).map_or(50_000, |s| s.parse().unwrap());
    let store = Store::open(&dir)?;
    let mut sink = Sink::open(store.clone(), "gen_parquet".into()).await?;
    let first = sink.resume_seq();
    anyhow::ensure!(first == 1, "{dir} already holds data; use an empty folder");
    let skus: Vec<String> = (0..sku_count).map(|i| format!("SKU-{i:06}")).collect();
    let locs = ["dc-east", "dc-west", "store-1", "store-2", "store-3"];
    let start_ms: u64 = 1_767_225_600_000; // 2026-01-01
    let step = days * 86_400_000 / total.max(1);
    let chunk_rows = 4_000_000u64;
    let started = std::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let producer = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut conv = Converter::default();
        let mut rows = DayRows::default();
        let mut chunk_first = 1;
        let fx = Effects::default();
        let ok: Outcome = Ok(Detail::None);
        for seq in 1..=total {
            let r: f64 = rng.gen();
            let sku = &skus[((r * r * r) * skus.len() as f64) as usize];
            let location = locs[rng.gen_range(0..locs.len())].to_string();
            let kind = if rng.gen_bool(0.9) {
                MovementKind::Sell {
                    sku: sku.clone(),
                    location,
                    qty: rng.gen_range(1..4),
                    unit_price: Some(rng.gen_range(500..5000)),
                    hold: None,
                    allow_negative: false,
                    units: Units::ANY,
                }
            } else {
                MovementKind::Receive {
                    sku: sku.clone(),
                    location,
                    qty: rng.gen_range(20..200),
                    unit_cost: Some(300),
                    units: Units::ANY,
                }
            };
            let m = Movement { key: None, channel: "web".into(), reference: None, occurred_at: None, kind };
            let recorded_at = start_ms + seq * step;
            let input = RecordIn { seq, shard: 0, recorded_at, movement: &m, outcome: &ok, effects: &fx };
            conv.convert(&input, rows.builder_for(recorded_at));
            if seq - chunk_first + 1 == chunk_rows || seq == total {
                let full = std::mem::take(&mut rows);
                tx.blocking_send(Chunk::new(chunk_first, seq, full, &mut conv)).unwrap();
                chunk_first = seq + 1;
            }
        }
        (skus, locs)
    });
    while let Some(chunk) = rx.recv().await {
        let encoded = tokio::task::spawn_blocking(move || encode_chunk(chunk)).await??;
        sink.commit(encoded).await?;
        eprint!("\rgen_parquet: {} movements", sink.state.last_seq);
    }
    let (skus, locs) = producer.join().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut levels = Vec::new();
    let mut settings = Vec::new();
    for sku in &skus {
        for loc in locs {
            let on_hand = rng.gen_range(0..300);
            levels.push(LevelView {
                sku: sku.clone(),
                location: loc.to_string(),
                on_hand,
                reserved: 0,
                unsellable: 0,
                incoming: if rng.gen_bool(0.2) { 50 } else { 0 },
                safety_stock: 0,
                available: on_hand,
            });
            if rng.gen_bool(0.3) {
                settings.push((
                    sku.clone(),
                    loc.to_string(),
                    Settings { reorder_qty: Some(24), lead_time_days: 10, ..Settings::default() },
                ));
            }
        }
    }
    let end_ms = start_ms + days * 86_400_000 - 1;
    write_levels(&store, total, end_ms, &levels).await?;
    write_settings(&store, 0, &settings).await?;
    eprintln!(
        "\ngen_parquet: {total} movements over {days} days, {} levels, in {:.1} s",
        levels.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
