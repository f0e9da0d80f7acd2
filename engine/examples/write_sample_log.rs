//! Writes a small but complete sample log for checking readers written from `docs/wal.md`
//! (such as `docs/tools/read_wal.py`).
//!
//! ```text
//! cargo run -p perpetua-engine --example write_sample_log -- DIR [--checkpoint]
//! ```
//!
//! Opens an engine with 2 shards on the empty directory DIR, submits movements of every kind,
//! then stops with `halt()` (as a crash would: no checkpoint at shutdown). With `--checkpoint`,
//! two checkpoints are also taken: one while a reservation over both shards is open, one after
//! the engine's own `Expire`, so the directory holds two to read (both kept; nothing pruned).
//!
//! Standard output gets one `submitted ...` line per movement (its sequence number, outcome and
//! the movement as sent), then one `logged ...` line per record and one `checkpoint ...` line per
//! checkpoint file as the engine's own decoders read them back, all in Rust's `Debug` form, for
//! comparison with another reader's output.

use engine::core::*;
use engine::runtime::{Clock, Engine, EngineConfig, Fsync, MovementResult};
use engine::wal::checkpoint::{list_checkpoints, read_checkpoint};
use engine::wal::format::RECORD_TYPE_MOVEMENT;
use engine::wal::record::decode_movement_payload;
use engine::wal::segment::{list_segments, RecordIter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The manual clock's start: 2023-11-14T22:13:20Z.
const T0: Millis = 1_700_000_000_000;

fn mv(key: Option<&str>, reference: Option<&str>, kind: MovementKind) -> Movement {
    Movement {
        key: key.map(Into::into),
        channel: "web".into(),
        reference: reference.map(Into::into),
        occurred_at: None,
        kind,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: write_sample_log DIR [--checkpoint]");
    let take_checkpoints = args.any(|a| a == "--checkpoint");
    let clock = Arc::new(AtomicU64::new(T0));
    let mut config = EngineConfig::new(&dir);
    config.shards = 2;
    config.fsync = Fsync::Always;
    config.clock = Clock::Manual(clock.clone());
    config.segment_bytes_max = 1024; // small, so the log rolls over several segments
    config.expire_interval = Duration::from_millis(10);
    let e = Engine::open(config).expect("engine opens");

    // Two SKUs on different shards, so a reservation of both spans the shards.
    let a = "SKU-0".to_string();
    let b = (1..).map(|i| format!("SKU-{i}")).find(|s| shard_of(s, 2) != shard_of(&a, 2)).unwrap();
    let (a, b) = (a.as_str(), b.as_str());
    let run = |m: Movement| -> MovementResult {
        let r = e.execute_one(m.clone());
        println!("submitted seq={:?} outcome={:?} movement={:?}", r.seq, r.outcome, m);
        r
    };
    let hold_of = |r: MovementResult| match r.outcome {
        Ok(Detail::Hold(h)) => h,
        other => panic!("expected a hold, got {other:?}"),
    };
    let line = |sku: &str, location: &str, qty: Qty, unit_price: Option<i64>| Line {
        sku: sku.into(),
        location: location.into(),
        qty,
        unit_price,
        kit: None,
        units: Units::ANY,
    };

    let settings =
        Settings { reorder_point: Some(5), reorder_qty: Some(20), max_qty: None, safety_stock: 1, lead_time_days: 7 };
    run(mv(None, None, MovementKind::SetSettings { sku: a.into(), location: "dc".into(), settings }));
    // Min/max ordering at the largest order quantity a level keeps (`ORDER_QTY_MAX`); one more is
    // rejected with `invalid_settings` (and logged).
    let up_to =
        |max_qty| Settings { reorder_point: None, reorder_qty: None, max_qty, safety_stock: 0, lead_time_days: 0 };
    run(mv(
        None,
        None,
        MovementKind::SetSettings { sku: a.into(), location: "store".into(), settings: up_to(Some(ORDER_QTY_MAX)) },
    ));
    run(mv(
        None,
        None,
        MovementKind::SetSettings { sku: a.into(), location: "store".into(), settings: up_to(Some(ORDER_QTY_MAX + 1)) },
    ));
    run(mv(None, Some("PO-1"), MovementKind::Expect { sku: a.into(), location: "dc".into(), qty: 30 }));
    let mut receive = mv(
        Some("rcv-PO-1"),
        Some("PO-1"),
        MovementKind::Receive {
            sku: a.into(),
            location: "dc".into(),
            qty: 24,
            unit_cost: Some(1250),
            units: Units::ANY,
        },
    );
    receive.channel = "erp".into();
    receive.occurred_at = Some(T0 - 5_000);
    run(receive);
    run(mv(
        None,
        None,
        MovementKind::Receive { sku: b.into(), location: "dc".into(), qty: 10, unit_cost: None, units: Units::ANY },
    ));
    let mut sale = mv(
        Some("order-1"),
        Some("order-1"),
        MovementKind::Sell {
            sku: a.into(),
            location: "dc".into(),
            qty: 3,
            unit_price: Some(1999),
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
    );
    sale.channel = "pos".into();
    run(sale.clone());
    let condition = ReturnCondition::Damaged;
    run(mv(
        None,
        Some("RMA-7"),
        MovementKind::Return {
            sku: a.into(),
            location: "dc".into(),
            qty: 1,
            condition,
            unit_price: Some(1999),
            units: Units::ANY,
        },
    ));
    let reason = AdjustReason::Shrinkage;
    run(mv(
        None,
        None,
        MovementKind::Adjust {
            sku: a.into(),
            location: "dc".into(),
            delta: -2,
            reason,
            allow_negative: false,
            units: Units::ANY,
        },
    ));
    run(mv(
        None,
        Some("count-sheet-3"),
        MovementKind::Count { sku: b.into(), location: "dc".into(), counted: 9, units: Units::ANY },
    ));
    run(mv(
        None,
        None,
        MovementKind::Transfer { sku: a.into(), from: "dc".into(), to: "store".into(), qty: 4, units: Units::ANY },
    ));

    // Refused at submission (a SKU over 64 bytes): no record, no sequence number.
    run(mv(
        None,
        None,
        MovementKind::Receive {
            sku: "X".repeat(65),
            location: "dc".into(),
            qty: 1,
            unit_cost: None,
            units: Units::ANY,
        },
    ));

    // A reservation over both shards (logged as one record per shard, same hold id), committed.
    let lines = vec![line(a, "dc", 2, Some(1999)), line(b, "dc", 3, None)];
    let cart_1 = mv(Some("cart-1"), None, MovementKind::Reserve { hold: 0, lines, expires_at: T0 + 60_000 });
    let cart = run(cart_1.clone());
    if take_checkpoints {
        // A consistent cut while the hold is open: both shards' snapshots hold a part of it.
        let path = e.checkpoint().expect("checkpoint written");
        println!("took checkpoint {}", path.display());
    }
    run(mv(None, None, MovementKind::Commit { hold: hold_of(cart) }));
    // Its retry, after the commit: the first outcome (same hold) comes back, no new record, a NOP
    // on each shard. Both parts' records carry the body hash of the whole reservation, which is
    // what the retry is compared with (also after a restart).
    run(cart_1);
    // A reservation over both shards that fails on one: the part that succeeded is released by
    // an engine-made `Release` ("rollback of hold ...").
    let lines = vec![line(a, "dc", 1, None), line(b, "dc", 1000, None)];
    run(mv(None, None, MovementKind::Reserve { hold: 0, lines, expires_at: T0 + 60_000 }));
    // One released, one sold from.
    let held = run(mv(
        None,
        None,
        MovementKind::Reserve { hold: 0, lines: vec![line(a, "store", 1, None)], expires_at: T0 + 60_000 },
    ));
    run(mv(None, None, MovementKind::Release { hold: hold_of(held) }));
    let held = run(mv(
        None,
        None,
        MovementKind::Reserve { hold: 0, lines: vec![line(b, "dc", 2, Some(500))], expires_at: T0 + 60_000 },
    ));
    run(mv(
        None,
        None,
        MovementKind::Sell {
            sku: b.into(),
            location: "dc".into(),
            qty: 2,
            unit_price: None,
            hold: Some(hold_of(held)),
            allow_negative: false,
            units: Units::ANY,
        },
    ));
    // A rejection (logged with its reason), a retry (a NOP record fills its sequence number) and
    // sales that raise a reorder and an out-of-stock alert.
    run(mv(
        None,
        None,
        MovementKind::Sell {
            sku: b.into(),
            location: "dc".into(),
            qty: 1000,
            unit_price: None,
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
    ));
    run(sale);
    run(mv(
        None,
        None,
        MovementKind::Sell {
            sku: a.into(),
            location: "dc".into(),
            qty: 10,
            unit_price: None,
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
    ));
    run(mv(
        None,
        None,
        MovementKind::Sell {
            sku: b.into(),
            location: "dc".into(),
            qty: 4,
            unit_price: None,
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
    ));
    // A hold left to expire: the engine logs an `Expire` of its own.
    run(mv(None, None, MovementKind::Reserve { hold: 0, lines: vec![line(a, "dc", 1, None)], expires_at: T0 + 1_000 }));
    clock.store(T0 + 3_000, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.holds().is_empty() {
        assert!(Instant::now() < deadline, "the hold never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Acknowledged after the expiry record, so that record is durable too.
    run(mv(
        None,
        None,
        MovementKind::Receive { sku: b.into(), location: "dc".into(), qty: 1, unit_cost: None, units: Units::ANY },
    ));
    if take_checkpoints {
        let path = e.checkpoint().expect("checkpoint written");
        println!("took checkpoint {}", path.display());
    }
    // A record after the last checkpoint.
    run(mv(
        None,
        None,
        MovementKind::Receive { sku: a.into(), location: "store".into(), qty: 2, unit_cost: None, units: Units::ANY },
    ));
    e.halt();

    for (_, path) in list_segments(&std::path::Path::new(&dir).join("wal")).expect("wal directory lists") {
        let data = std::fs::read(&path).expect("segment reads");
        for rec in RecordIter::new(&data) {
            let rec = rec.expect("the log is intact");
            let h = rec.header;
            if h.record_type == RECORD_TYPE_MOVEMENT {
                let logged = decode_movement_payload(rec.payload).expect("payload decodes");
                println!("logged seq={} shard={} type=movement {:?}", h.seq, h.shard, logged);
            } else {
                println!("logged seq={} shard={} type={}", h.seq, h.shard, h.record_type);
            }
        }
    }
    for (_, path) in list_checkpoints(&std::path::Path::new(&dir).join("checkpoints")).expect("checkpoints list") {
        let body = read_checkpoint(&path).expect("checkpoint reads");
        let name = path.file_name().unwrap().to_string_lossy();
        println!("checkpoint {name} covered_seq={} {body:?}", body.covered_seq());
    }
}
