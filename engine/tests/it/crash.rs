//! Fault tests: crashes at random moments, a log cut at every byte of its tail, damaged bytes,
//! missing segments, damaged checkpoints.

use crate::common::*;
use engine::core::*;
use engine::runtime::{Engine, EngineError, Fsync, MovementResult};
use engine::wal::format::SEGMENT_HEADER_LEN;
use engine::wal::recovery::RecoveryError;
use engine::wal::segment::{list_segments, RecordIter};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SKUS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];
const LOCS: [&str; 2] = ["dc", "store"];

fn random_movement(rng: &mut impl Rng, thread: usize, i: usize, holds: &[HoldId]) -> Movement {
    let sku = SKUS[rng.gen_range(0..SKUS.len())];
    let loc = LOCS[rng.gen_range(0..LOCS.len())];
    let q = rng.gen_range(1..5);
    let key = Some(format!("t{thread}-{i}"));
    let kind = match rng.gen_range(0..10) {
        0..=2 => {
            MovementKind::Receive { sku: sku.into(), location: loc.into(), qty: q, unit_cost: None, units: Units::ANY }
        }
        3..=4 => MovementKind::Sell {
            sku: sku.into(),
            location: loc.into(),
            qty: q,
            unit_price: None,
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
        5 => {
            MovementKind::Transfer { sku: sku.into(), from: "dc".into(), to: "store".into(), qty: q, units: Units::ANY }
        }
        6..=7 => {
            let other = SKUS[rng.gen_range(0..SKUS.len())];
            let mut lines = vec![Line {
                sku: sku.into(),
                location: loc.into(),
                qty: q,
                unit_price: None,
                kit: None,
                units: Units::ANY,
            }];
            if other != sku {
                lines.push(Line {
                    sku: other.into(),
                    location: loc.into(),
                    qty: 1,
                    unit_price: None,
                    kit: None,
                    units: Units::ANY,
                });
            }
            MovementKind::Reserve { hold: 0, lines, expires_at: T0 + 3_600_000 }
        }
        8 if !holds.is_empty() => MovementKind::Commit { hold: holds[rng.gen_range(0..holds.len())] },
        _ if !holds.is_empty() => MovementKind::Release { hold: holds[rng.gen_range(0..holds.len())] },
        _ => MovementKind::Expect { sku: sku.into(), location: loc.into(), qty: q },
    };
    mv(key.as_deref(), kind)
}

/// Levels as a map of (sku, location) -> (on_hand, reserved).
fn level_map(levels: &[LevelView]) -> BTreeMap<(String, String), (Qty, Qty)> {
    levels.iter().map(|l| ((l.sku.clone(), l.location.clone()), (l.on_hand, l.reserved))).collect()
}

/// Recomputes on_hand and reserved of every level from the movements of the log alone (no core),
/// from their logged outcomes: an independent check of what recovery rebuilt.
fn levels_from_movements(events: &[engine::runtime::FeedEvent]) -> BTreeMap<(String, String), (Qty, Qty)> {
    let mut levels: BTreeMap<(String, String), (Qty, Qty)> = BTreeMap::new();
    let mut held: HashMap<(HoldId, u16), Vec<Line>> = HashMap::new();
    let at = |sku: &str, loc: &str| (sku.to_string(), loc.to_string());
    for ev in events {
        if ev.record.outcome.is_err() {
            continue;
        }
        match &ev.record.movement.kind {
            MovementKind::Receive { sku, location, qty, .. } => levels.entry(at(sku, location)).or_default().0 += qty,
            MovementKind::Expect { sku, location, .. } => {
                levels.entry(at(sku, location)).or_default();
            }
            MovementKind::Sell { sku, location, qty, .. } => levels.entry(at(sku, location)).or_default().0 -= qty,
            MovementKind::Transfer { sku, from, to, qty, units: _ } => {
                levels.entry(at(sku, from)).or_default().0 -= qty;
                levels.entry(at(sku, to)).or_default().0 += qty;
            }
            MovementKind::Reserve { hold, lines, .. } => {
                for l in lines {
                    levels.entry(at(&l.sku, &l.location)).or_default().1 += l.qty;
                }
                held.insert((*hold, ev.shard), lines.clone());
            }
            MovementKind::Commit { hold } | MovementKind::CompleteCommit { hold } | MovementKind::Release { hold } => {
                let commit = !matches!(ev.record.movement.kind, MovementKind::Release { .. });
                for l in held.remove(&(*hold, ev.shard)).expect("a committed hold was reserved") {
                    let e = levels.entry(at(&l.sku, &l.location)).or_default();
                    e.1 -= l.qty;
                    if commit {
                        e.0 -= l.qty;
                    }
                }
            }
            other => panic!("unexpected movement in this test: {other:?}"),
        }
    }
    levels
}

fn read_log(e: &Engine) -> Vec<engine::runtime::FeedEvent> {
    let durable = e.stats().durable_seq;
    let mut feed = e.feed(1).unwrap();
    let mut events = Vec::new();
    while feed.next_seq() <= durable {
        let batch = feed.next_batch(10_000, Duration::from_secs(5)).unwrap();
        if batch.is_empty() && feed.next_seq() <= durable {
            panic!("feed stalled at {}", feed.next_seq());
        }
        events.extend(batch);
    }
    events
}

#[test]
fn after_a_crash_at_a_random_moment_every_acknowledged_movement_is_there() {
    let rounds = if std::env::var("PERPETUA_SLOW_TESTS").is_ok() { 20 } else { 4 };
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = config(dir.path(), 2);
        c.segment_bytes_max = 8_000;
        let e = Arc::new(Engine::open(c.clone()).unwrap());
        let acked: Arc<Mutex<Vec<(Movement, MovementResult)>>> = Arc::default();
        let submitted: Arc<Mutex<Vec<Movement>>> = Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (e, acked, submitted) = (e.clone(), acked.clone(), submitted.clone());
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(round * 100 + t as u64);
                    let mut holds = Vec::new();
                    for i in 0.. {
                        let m = random_movement(&mut rng, t, i, &holds);
                        submitted.lock().unwrap().push(m.clone());
                        let r = e.execute_one(m.clone());
                        match r.outcome {
                            Err(Reason::ShuttingDown) => return,
                            Ok(Detail::Hold(h)) => holds.push(h),
                            _ => {}
                        }
                        acked.lock().unwrap().push((m, r));
                    }
                })
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(round);
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..120)));
        e.halt();
        for t in threads {
            t.join().unwrap();
        }
        drop(e);

        let e = Engine::open(c).unwrap();
        let events = read_log(&e);
        let by_seq: HashMap<Seq, &engine::runtime::FeedEvent> = events.iter().map(|ev| (ev.seq, ev)).collect();
        let acked = acked.lock().unwrap();
        assert!(acked.len() > 10, "round {round}: too little happened ({})", acked.len());
        for (m, r) in acked.iter() {
            if r.outcome == Err(Reason::IdempotencyMismatch) {
                continue;
            }
            let seq = r.seq.expect("acknowledged movements carry a sequence number");
            let ev = by_seq.get(&seq).unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} lost"));
            // A reservation's hold id is assigned by the engine, and a multi-shard one is logged
            // per shard with that shard's lines.
            match (&ev.record.movement.kind, &m.kind) {
                (MovementKind::Reserve { .. }, MovementKind::Reserve { .. }) => {}
                _ => assert_eq!(&ev.record.movement, m, "round {round}, seq {seq}"),
            }
            if !matches!(m.kind, MovementKind::Reserve { .. } | MovementKind::Commit { .. }) {
                assert_eq!(ev.record.outcome, r.outcome, "round {round}, seq {seq}");
            }
        }
        // Nothing in the log that nobody sent.
        let submitted = submitted.lock().unwrap();
        for ev in &events {
            let k = &ev.record.movement.key;
            assert!(
                k.is_none() || submitted.iter().any(|m| &m.key == k),
                "round {round}: seq {} was never submitted",
                ev.seq
            );
        }
        let recovered = level_map(&e.levels(None));
        assert_eq!(recovered, levels_from_movements(&events), "round {round}");
        for l in e.levels(None) {
            assert!(l.available >= 0 && l.reserved >= 0, "round {round}: oversold {l:?}");
        }
    }
}

/// Runs `count` movements one at a time on a fresh engine with one shard; returns the levels
/// after each one (index 0: before any) and the data directory, left without a checkpoint.
fn build_log(dir: &Path, count: usize) -> Vec<BTreeMap<(String, String), (Qty, Qty)>> {
    let (mut c, _) = config(dir, 1);
    c.fsync = Fsync::Never;
    let e = Engine::open(c).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut after = vec![BTreeMap::new()];
    let mut holds = Vec::new();
    for i in 0..count {
        let r = e.execute_one(random_movement(&mut rng, 0, i, &holds));
        if let Ok(Detail::Hold(h)) = r.outcome {
            holds.push(h);
        }
        after.push(level_map(&e.levels(None)));
    }
    e.halt();
    after
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(&dir.join("wal")).unwrap().pop().unwrap().1
}

/// Byte offsets where each record of a segment starts, and the file's length.
fn record_starts(path: &Path) -> (Vec<usize>, usize) {
    let data = std::fs::read(path).unwrap();
    (RecordIter::new(&data).map(|r| r.unwrap().offset).collect(), data.len())
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_records_recovers_the_prefix_before_the_cut() {
    let built = tempfile::tempdir().unwrap();
    let after = build_log(built.path(), 40);
    let (starts, len) = record_starts(&last_segment(built.path()));
    assert_eq!(starts.len(), 40);
    let from = starts[starts.len() - 3];
    for cut in from..=len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(built.path(), dir.path());
        let seg = last_segment(dir.path());
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut as u64).unwrap();
        let ends = starts.iter().skip(1).copied().chain([len]);
        let complete = ends.filter(|&end| end <= cut).count();
        let (e, _) = open(dir.path(), 1);
        let report = e.recovery_report().clone();
        assert_eq!(level_map(&e.levels(None)), after[complete], "cut at byte {cut}");
        assert_eq!(report.torn_tail.is_some(), !starts.contains(&cut) && cut != len, "cut at byte {cut}");
        // New movements continue right after the prefix, and survive another restart.
        let r = e.execute_one(receive("Z", "dc", 1));
        assert_eq!(r.seq, Some(complete as Seq + 1), "cut at byte {cut}");
        e.halt();
        let (e, _) = open(dir.path(), 1);
        assert!(e.recovery_report().torn_tail.is_none());
        assert_eq!(oh_res_av(&e, "Z", "dc"), Some((1, 0, 1)), "cut at byte {cut}");
    }
}

#[test]
fn a_damaged_byte_before_the_tail_stops_recovery_with_the_file_and_offset() {
    let built = tempfile::tempdir().unwrap();
    build_log(built.path(), 20);
    let (starts, _) = record_starts(&last_segment(built.path()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut positions: Vec<usize> =
        (0..30).map(|_| rng.gen_range(SEGMENT_HEADER_LEN..starts[starts.len() - 1])).collect();
    positions.extend([starts[5], starts[5] + 8, starts[10] + 30]);
    for pos in positions {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(built.path(), dir.path());
        let seg = last_segment(dir.path());
        let mut data = std::fs::read(&seg).unwrap();
        data[pos] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        let record_at = *starts.iter().rfind(|&&s| s <= pos).unwrap();
        match Engine::open(config(dir.path(), 1).0) {
            Err(EngineError::Recovery(RecoveryError::Corrupt { path, offset, .. })) => {
                assert_eq!(path, seg, "flip at {pos}");
                assert_eq!(offset, record_at, "flip at {pos}");
            }
            Err(other) => panic!("flip at {pos}: wrong error {other}"),
            Ok(_) => panic!("flip at {pos}: recovery started on a damaged log"),
        }
    }
}

#[test]
fn a_missing_segment_stops_recovery_and_a_damaged_checkpoint_falls_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 2);
    c.segment_bytes_max = 1_000;
    c.log_retention_bytes = u64::MAX; // keep every segment
    {
        let e = Engine::open(c.clone()).unwrap();
        for i in 0..60 {
            e.execute_one(receive(SKUS[i % 6], "dc", 1));
        }
        e.checkpoint().unwrap();
        for i in 0..60 {
            e.execute_one(receive(SKUS[i % 6], "dc", 1));
        }
        e.shutdown().unwrap();
    }
    let checkpoints: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir.path().join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    assert_eq!(checkpoints.len(), 2);
    // Damage the newest checkpoint: recovery uses the older one and replays the log after it.
    let mut data = std::fs::read(&checkpoints[1]).unwrap();
    let n = data.len();
    data[n - 3] ^= 0xff;
    std::fs::write(&checkpoints[1], &data).unwrap();
    {
        let e = Engine::open(c.clone()).unwrap();
        assert_eq!(e.recovery_report().checkpoint.as_ref(), Some(&checkpoints[0]));
        assert_eq!(e.recovery_report().records_replayed, 60);
        for sku in SKUS {
            assert_eq!(oh_res_av(&e, sku, "dc"), Some((20, 0, 20)));
        }
        e.halt();
    }
    // Remove a segment in the middle of what must be replayed.
    let segments = list_segments(&dir.path().join("wal")).unwrap();
    let middle = &segments[segments.len() - 3].1;
    std::fs::remove_file(middle).unwrap();
    match Engine::open(c) {
        Err(EngineError::Recovery(RecoveryError::MissingSegment { .. })) => {}
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("recovery started with a segment missing"),
    }
}

#[test]
fn a_segment_left_incomplete_while_being_created_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, _) = open(dir.path(), 1);
        e.execute_one(receive("A", "dc", 3));
        e.halt();
    }
    // A crash right after creating the next segment file, before its header reached the disk.
    for leftover in [&[][..], &[0u8; 20][..], &[0u8; SEGMENT_HEADER_LEN][..]] {
        let next = dir.path().join("wal").join(engine::wal::format::segment_file_name(2));
        std::fs::write(&next, leftover).unwrap();
        let (e, _) = open(dir.path(), 1);
        assert_eq!(oh_res_av(&e, "A", "dc"), Some((3, 0, 3)));
        assert!(!next.exists() || std::fs::metadata(&next).unwrap().len() >= SEGMENT_HEADER_LEN as u64);
        e.halt();
    }
    let (e, _) = open(dir.path(), 1);
    assert_eq!(e.execute_one(receive("A", "dc", 1)).seq, Some(2));
    e.halt();
    let (e, _) = open(dir.path(), 1);
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((4, 0, 4)));
}

#[test]
fn a_checkpoint_ahead_of_an_unsynced_log_tail_still_recovers_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 1);
    c.fsync = Fsync::Never;
    {
        let e = Engine::open(c.clone()).unwrap();
        for _ in 0..20 {
            e.execute_one(receive("A", "dc", 1));
        }
        e.checkpoint().unwrap();
        e.halt();
    }
    // Under `Fsync::Never` a power loss can keep the checkpoint but lose the log's tail.
    let seg = last_segment(dir.path());
    let (starts, _) = record_starts(&seg);
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(starts[15] as u64).unwrap();
    {
        let e = Engine::open(c.clone()).unwrap();
        assert_eq!(oh_res_av(&e, "A", "dc"), Some((20, 0, 20)));
        assert_eq!(e.execute_one(receive("A", "dc", 1)).seq, Some(21));
        e.halt();
    }
    let e = Engine::open(c).unwrap();
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((21, 0, 21)));
}

#[test]
fn an_idle_shard_does_not_hold_back_checkpoints_or_log_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 2);
    c.segment_bytes_max = 1_000;
    c.log_retention_bytes = 0;
    let e = Engine::open(c).unwrap();
    let (a, _) = skus_on_two_shards(2);
    for _ in 0..50 {
        e.execute_one(receive(&a, "dc", 1)); // only one shard ever records anything
    }
    let first = e.checkpoint().unwrap();
    for _ in 0..50 {
        e.execute_one(receive(&a, "dc", 1));
    }
    let second = e.checkpoint().unwrap();
    assert_ne!(first, second);
    assert!(second.to_string_lossy().ends_with(&format!("{:020}.ckpt", 100)), "{}", second.display());
    // Segments are kept back to the older of the two checkpoints kept (it covers up to 50).
    let segments = list_segments(&dir.path().join("wal")).unwrap();
    assert!(segments[0].0 <= 51 && segments[1].0 > 51, "covered segments were kept: {segments:?}");
}

#[test]
fn an_oversized_movement_is_refused_without_a_record_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let huge = "X".repeat(2 << 20);
    let r = e.execute(vec![
        receive(&huge, "dc", 1),
        receive("A", &huge, 1),
        mv(Some(&huge), MovementKind::Commit { hold: 1 }),
    ]);
    for r in &r {
        assert_eq!(*r, MovementResult { seq: None, outcome: Err(Reason::InvalidField) });
    }
    let lines: Vec<(&str, &str, Qty)> = (0..=HOLD_LINES_MAX).map(|_| ("A", "dc", 1)).collect();
    assert_eq!(e.execute_one(reserve(None, &lines, T0 + 1)).outcome, Err(Reason::InvalidLines));
    assert_eq!(e.execute_one(receive("A", "dc", 1)).seq, Some(1));
}

#[test]
fn a_multi_shard_reservation_retried_after_a_restart_returns_the_same_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = skus_on_two_shards(2);
    let cart = |q| reserve(Some("cart-9"), &[(&a, "dc", q), (&b, "dc", 1)], T0 + 60_000);
    let first = {
        let (e, _) = open(dir.path(), 2);
        e.execute(vec![receive(&a, "dc", 5), receive(&b, "dc", 5)]);
        let r = e.execute_one(cart(2));
        assert!(matches!(r.outcome, Ok(Detail::Hold(_))), "{r:?}");
        e.halt();
        r
    };
    let (e, _) = open(dir.path(), 2);
    assert_eq!(e.execute_one(cart(2)), first);
    assert_eq!(e.execute_one(cart(3)).outcome, Err(Reason::IdempotencyMismatch));
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((5, 2, 3)));
}

#[test]
fn after_a_crash_midway_through_a_multi_shard_reservation_nothing_outlives_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = skus_on_two_shards(2);
    let expires_at = T0 + 60_000;
    {
        let (e, _) = open(dir.path(), 2);
        e.execute(vec![receive(&a, "dc", 5), receive(&b, "dc", 1)]);
        // The part on `a`'s shard is held; the part on `b`'s fails. The rollback of the held part
        // is sent, but the engine stops before it is surely durable.
        let r = e.execute_one(reserve(Some("cart"), &[(&a, "dc", 2), (&b, "dc", 2)], expires_at));
        assert_eq!(r.outcome, Err(Reason::InsufficientStock));
        e.halt();
    }
    let (mut c, clock) = config(dir.path(), 2);
    c.expire_interval = Duration::from_millis(5);
    let e = Engine::open(c).unwrap();
    let held = oh_res_av(&e, &a, "dc").unwrap().1;
    assert!(held == 0 || held == 2, "{held}");
    clock.store(expires_at + 1_000, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !e.holds().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a hold outlived its expiry: {:?}", e.holds());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((5, 0, 5)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 0, 1)));
}

#[test]
fn expiring_many_holds_at_once_keeps_each_record_small() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, clock) = config(dir.path(), 1);
    c.fsync = Fsync::Never;
    c.expire_interval = Duration::from_millis(5);
    let e = Engine::open(c.clone()).unwrap();
    e.execute_one(receive("A", "dc", 1_000_000));
    let holds = 3 * EXPIRE_HOLDS_MAX + 7;
    for chunk in (0..holds).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk.iter().map(|_| reserve(None, &[("A", "dc", 1)], T0 + 10)).collect();
        assert!(e.execute(batch).iter().all(|r| r.outcome.is_ok()));
    }
    assert_eq!(oh_res_av(&e, "A", "dc").unwrap().1, holds as Qty);
    clock.store(T0 + 2_000, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while oh_res_av(&e, "A", "dc").unwrap().1 != 0 {
        assert!(std::time::Instant::now() < deadline, "holds never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A read shows the last expiry once applied; its record may become durable a moment later.
    let expires = loop {
        let expires: Vec<usize> = read_log(&e)
            .into_iter()
            .filter(|ev| matches!(ev.record.movement.kind, MovementKind::Expire { .. }))
            .map(|ev| ev.record.effects.holds_closed.len())
            .collect();
        if expires.iter().sum::<usize>() == holds || std::time::Instant::now() >= deadline {
            break expires;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(expires.iter().sum::<usize>(), holds);
    assert!(expires.iter().all(|&n| n <= EXPIRE_HOLDS_MAX), "{expires:?}");
    e.halt();
    let e = Engine::open(c).unwrap();
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((1_000_000, 0, 1_000_000)));
}
