//! Writes a synthetic engine log (a data directory with `wal/`) for the `import --wal`
//! benchmark, straight through the engine's own record format (no engine running, no fsync).
//!
//! `cargo run --release -p perpetua-analytics --example gen_wal -- DIR [RECORDS] [DAYS]`
//! (defaults: 10,000,000 records over 28 days).

use engine::core::*;
use engine::wal::format::{begin_record, finish_record, segment_file_name, segment_header, RECORD_TYPE_MOVEMENT};
use engine::wal::record::encode_into;
use rand::{Rng, SeedableRng};
use std::io::Write;

const SEGMENT_BYTES_MAX: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("usage: gen_wal DIR [RECORDS] [DAYS]"));
    let records: u64 = args.get(2).map_or(10_000_000, |s| s.replace('_', "").parse().unwrap());
    let days: u64 = args.get(3).map_or(28, |s| s.parse().unwrap());
    let wal = dir.join("wal");
    std::fs::create_dir_all(&wal)?;
    std::fs::write(dir.join("engine.meta"), "# Perpetua data directory. Do not edit.\nformat = 1\nshards = 2\n")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let skus: Vec<String> = (0..10_000).map(|i| format!("SKU-{i:05}")).collect();
    let locs = ["dc-east", "dc-west", "store-1", "store-2", "store-3"];
    let start_ms: u64 = 1_767_225_600_000; // 2026-01-01
    let step = days * 86_400_000 / records.max(1);
    let mut seg = segment_header(1).to_vec();
    let mut seg_first = 1;
    let mut payload_total = 0u64;
    for seq in 1..=records {
        // A skewed popularity: a few SKUs sell a lot.
        let r: f64 = rng.gen();
        let sku = &skus[((r * r * r) * skus.len() as f64) as usize];
        let location = locs[rng.gen_range(0..locs.len())].to_string();
        let recorded_at = start_ms + seq * step;
        let kind = if rng.gen_bool(0.9) {
            MovementKind::Sell {
                sku: sku.clone(),
                location: location.clone(),
                qty: rng.gen_range(1..4),
                unit_price: Some(rng.gen_range(500..5000)),
                hold: None,
                allow_negative: false,
                units: Units::ANY,
            }
        } else {
            MovementKind::Receive {
                sku: sku.clone(),
                location: location.clone(),
                qty: rng.gen_range(20..200),
                unit_cost: Some(300),
                units: Units::ANY,
            }
        };
        let m = Movement {
            key: Some(format!("{seq:016x}")),
            channel: "web".into(),
            reference: None,
            occurred_at: None,
            kind,
        };
        let on_hand = rng.gen_range(0..500);
        let mut fx = Effects::default();
        fx.levels.push(LevelView {
            sku: sku.clone(),
            location,
            on_hand,
            reserved: 0,
            unsellable: 0,
            incoming: 0,
            safety_stock: 0,
            available: on_hand,
        });
        let at = begin_record(&mut seg);
        encode_into(&mut seg, &recorded_at);
        encode_into(&mut seg, &body_hash(&m));
        encode_into(&mut seg, &m);
        encode_into(&mut seg, &Ok::<Detail, Reason>(Detail::None));
        encode_into(&mut seg, &fx);
        payload_total += (seg.len() - at) as u64;
        finish_record(&mut seg, at, RECORD_TYPE_MOVEMENT, (shard_of(sku, 2)) as u16, seq);
        if seg.len() >= SEGMENT_BYTES_MAX || seq == records {
            std::fs::File::create(wal.join(segment_file_name(seg_first)))?.write_all(&seg)?;
            seg_first = seq + 1;
            seg = segment_header(seg_first).to_vec();
        }
    }
    println!(
        "wrote {records} records ({:.1} MB of records) over {days} days to {}",
        payload_total as f64 / 1e6,
        wal.display()
    );
    Ok(())
}
