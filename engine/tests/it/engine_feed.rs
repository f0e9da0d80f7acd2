//! The engine's change feed (read back from the log) and consistent level snapshots.

use crate::common::*;
use engine::core::*;
use engine::runtime::{Engine, FeedError, FeedEvent};
use std::time::Duration;

fn drain(feed: &mut engine::runtime::Feed, until_seq: Seq) -> Vec<FeedEvent> {
    let mut out: Vec<FeedEvent> = Vec::new();
    while out.last().map_or(0, |e| e.seq) < until_seq {
        let batch = feed.next_batch(1000, Duration::from_secs(5)).unwrap();
        assert!(!batch.is_empty(), "feed stalled after {:?}", out.last().map(|e| e.seq));
        out.extend(batch);
    }
    out
}

#[test]
fn the_feed_replays_every_record_in_order_across_segments_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 2);
    c.segment_bytes_max = 2_000; // many small segments
    let e = Engine::open(c).unwrap();
    let mut submitted = Vec::new();
    for i in 0..300 {
        let m = receive(&format!("SKU-{}", i % 7), "dc", 1 + i % 3);
        let r = e.execute_one(m.clone());
        submitted.push((r.seq.unwrap(), m));
    }
    assert!(std::fs::read_dir(dir.path().join("wal")).unwrap().count() > 5);
    let mut feed = e.feed(1).unwrap();
    let events = drain(&mut feed, 300);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=300).collect::<Vec<_>>());
    for (ev, (seq, m)) in events.iter().zip(&submitted) {
        assert_eq!(ev.seq, *seq);
        assert_eq!(&ev.record.movement, m);
        assert_eq!(ev.record.outcome, Ok(Detail::None));
        assert_eq!(ev.shard as usize, shard_of(&ev.record.effects.levels[0].sku, 2));
    }
    // From the middle, then live.
    let mut feed = e.feed(250).unwrap();
    assert_eq!(drain(&mut feed, 300).first().unwrap().seq, 250);
    assert!(feed.next_batch(10, Duration::from_millis(20)).unwrap().is_empty());
    let r = e.execute_one(sell(None, "SKU-1", "dc", 1));
    let live = feed.next_batch(10, Duration::from_secs(5)).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(Some(live[0].seq), r.seq);
    assert_eq!(live[0].record.effects.levels[0].sku, "SKU-1");
}

#[test]
fn the_feed_continues_across_a_restart_and_reports_what_retention_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 1);
    c.segment_bytes_max = 1_000;
    c.log_retention_bytes = 0;
    {
        let e = Engine::open(c.clone()).unwrap();
        for i in 0..100 {
            e.execute_one(receive("A", "dc", 1 + i));
        }
        e.halt();
    }
    let e = Engine::open(c).unwrap();
    e.execute_one(receive("A", "dc", 1));
    let mut feed = e.feed(95).unwrap();
    assert_eq!(drain(&mut feed, 101).iter().map(|e| e.seq).collect::<Vec<_>>(), (95..=101).collect::<Vec<_>>());
    e.checkpoint().unwrap();
    let err = e.feed(1).err().expect("old segments were removed");
    let FeedError::Truncated { asked: 1, oldest_available } = err else { panic!("{err:?}") };
    assert!(oldest_available > 1 && oldest_available <= 102, "{oldest_available}");
    // A reader can restart from a consistent snapshot instead.
    let (seq, levels) = e.levels_snapshot();
    assert_eq!(seq, 101);
    assert_eq!(levels.len(), 1);
    assert_eq!(levels[0].on_hand, (1..=100).sum::<i64>() + 1);
}

#[test]
fn a_levels_snapshot_under_load_matches_the_log_up_to_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let e = std::sync::Arc::new(e);
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                e.execute(vec![receive(&format!("S{}", i % 13), "dc", 2), sell(None, &format!("S{}", i % 5), "dc", 1)]);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(5));
    let (seq, levels) = e.levels_snapshot();
    writer.join().unwrap();
    // Rebuild the levels from the log up to `seq` and compare.
    let mut feed = e.feed(1).unwrap();
    let mut latest = std::collections::BTreeMap::new();
    if seq > 0 {
        for ev in drain(&mut feed, seq).into_iter().filter(|ev| ev.seq <= seq) {
            for l in ev.record.effects.levels {
                latest.insert((l.sku.clone(), l.location.clone()), l);
            }
        }
    }
    let from_log: Vec<LevelView> = latest.into_values().collect();
    assert_eq!(levels, from_log, "snapshot at {seq}");
}

#[test]
fn an_alerts_only_feed_skips_exactly_the_records_without_alerts_whose_type_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = config(dir.path(), 2);
    c.segment_bytes_max = 2_000; // across segments
    let e = Engine::open(c).unwrap();
    for sku in ["A", "B"] {
        let settings = Settings { reorder_point: Some(3), ..Settings::default() };
        let set = mv(None, MovementKind::SetSettings { sku: sku.into(), location: "dc".into(), settings });
        assert!(e.execute_one(set).outcome.is_ok());
    }
    // Receipts of 10, then single sales down to 0: each SKU raises a reorder alert at 3 and an
    // out-of-stock alert at 0; the setting itself raises one (an empty level under its point).
    for sku in ["A", "B"] {
        assert!(e.execute_one(receive(sku, "dc", 10)).outcome.is_ok());
    }
    for _ in 0..10 {
        for sku in ["A", "B"] {
            assert!(e.execute_one(sell(None, sku, "dc", 1)).outcome.is_ok());
        }
    }
    let last = e.execute_one(receive("A", "dc", 1)).seq.unwrap();
    let all = drain(&mut e.feed(1).unwrap(), last);
    let with_alerts: Vec<Seq> = all.iter().filter(|ev| !ev.record.effects.alerts.is_empty()).map(|ev| ev.seq).collect();
    assert_eq!(with_alerts.len(), 6, "{with_alerts:?}");
    // The alerts-only feed: those records only, decoded the same, and it reaches the end.
    let mut feed = e.feed(1).unwrap().alerts_only();
    let mut got = Vec::new();
    while feed.next_seq() <= last {
        got.extend(feed.next_batch(1000, Duration::from_secs(5)).unwrap());
    }
    assert_eq!(got.iter().map(|ev| ev.seq).collect::<Vec<_>>(), with_alerts);
    for ev in &got {
        assert_eq!(Some(ev), all.iter().find(|a| a.seq == ev.seq));
    }
    // In the log, a movement record is of the alerts type exactly when it raises alerts.
    e.halt();
    let mut types = Vec::new();
    for (_, path) in engine::wal::segment::list_segments(&dir.path().join("wal")).unwrap() {
        let data = std::fs::read(&path).unwrap();
        for rec in engine::wal::segment::RecordIter::new(&data) {
            let h = rec.unwrap().header;
            types.push((h.seq, h.record_type));
        }
    }
    let expected: Vec<(Seq, u8)> = all
        .iter()
        .map(|ev| {
            let t = if ev.record.effects.alerts.is_empty() {
                engine::wal::format::RECORD_TYPE_MOVEMENT
            } else {
                engine::wal::format::RECORD_TYPE_MOVEMENT_ALERTS
            };
            (ev.seq, t)
        })
        .collect();
    assert_eq!(types, expected);
}
