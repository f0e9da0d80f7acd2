//! The engine end to end in one process: movements, reads, idempotency, holds across shards,
//! restarts.

use crate::common::*;
use engine::core::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn receive_sell_and_read_back_with_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let r = e.execute(vec![receive("A", "dc", 10), sell(None, "A", "dc", 3), sell(None, "A", "dc", 8)]);
    assert_eq!(r[0].outcome, Ok(Detail::None));
    assert_eq!(r[1].outcome, Ok(Detail::None));
    assert_eq!(r[2].outcome, Err(Reason::InsufficientStock));
    let mut seqs: Vec<Seq> = r.iter().map(|r| r.seq.unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((7, 0, 7)));
    assert_eq!(e.level("A", "nowhere"), None);
}

#[test]
fn state_survives_a_clean_restart_and_a_halt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, _) = open(dir.path(), 2);
        e.execute(vec![receive("A", "dc", 10), receive("B", "dc", 5), sell(Some("k1"), "A", "dc", 4)]);
        e.shutdown().unwrap().expect("a checkpoint is written");
    }
    {
        let (e, _) = open(dir.path(), 2);
        assert!(e.recovery_report().checkpoint.is_some());
        assert_eq!(e.recovery_report().records_replayed, 0);
        assert_eq!(oh_res_av(&e, "A", "dc"), Some((6, 0, 6)));
        e.execute_one(sell(None, "B", "dc", 2));
        e.halt();
    }
    let (e, _) = open(dir.path(), 2);
    assert_eq!(e.recovery_report().records_replayed, 1);
    assert_eq!(oh_res_av(&e, "B", "dc"), Some((3, 0, 3)));
    // The idempotency key survived both restarts.
    let r = e.execute_one(sell(Some("k1"), "A", "dc", 4));
    assert_eq!(r.outcome, Ok(Detail::None));
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((6, 0, 6)));
    assert_eq!(e.execute_one(sell(Some("k1"), "A", "dc", 5)).outcome, Err(Reason::IdempotencyMismatch));
}

#[test]
fn a_retry_returns_the_first_outcome_and_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    e.execute_one(receive("A", "dc", 5));
    let first = e.execute_one(sell(Some("order-1"), "A", "dc", 5));
    let again = e.execute_one(sell(Some("order-1"), "A", "dc", 5));
    assert_eq!(first, again);
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((0, 0, 0)));
    // A rejection is remembered too, even after stock arrives.
    let rejected = e.execute_one(sell(Some("order-2"), "A", "dc", 1));
    assert_eq!(rejected.outcome, Err(Reason::InsufficientStock));
    e.execute_one(receive("A", "dc", 5));
    assert_eq!(e.execute_one(sell(Some("order-2"), "A", "dc", 1)), rejected);
}

#[test]
fn the_same_key_on_another_shard_with_another_body_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let (a, b) = skus_on_two_shards(2);
    e.execute(vec![receive(&a, "dc", 5), receive(&b, "dc", 5)]);
    assert_eq!(e.execute_one(sell(Some("k"), &a, "dc", 1)).outcome, Ok(Detail::None));
    assert_eq!(e.execute_one(sell(Some("k"), &b, "dc", 1)).outcome, Err(Reason::IdempotencyMismatch));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((5, 0, 5)));
}

#[test]
fn a_multi_shard_reservation_that_fails_on_one_shard_leaves_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    let (a, b) = skus_on_two_shards(2);
    e.execute(vec![receive(&a, "dc", 5), receive(&b, "dc", 1)]);
    let r = e.execute_one(reserve(Some("cart-1"), &[(&a, "dc", 2), (&b, "dc", 2)], T0 + 60_000));
    assert_eq!(r.outcome, Err(Reason::InsufficientStock));
    // The rollback of the held part is asynchronous; it is queued before any later read.
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((5, 0, 5)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 0, 1)));
    assert!(e.holds().is_empty());

    let ok = e.execute_one(reserve(Some("cart-2"), &[(&a, "dc", 2), (&b, "dc", 1)], T0 + 60_000));
    let Ok(Detail::Hold(hold)) = ok.outcome else { panic!("{ok:?}") };
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((5, 2, 3)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((1, 1, 0)));
    // A retry gets the same hold.
    assert_eq!(e.execute_one(reserve(Some("cart-2"), &[(&a, "dc", 2), (&b, "dc", 1)], T0 + 60_000)), ok);
    let c = e.execute_one(mv(Some("pay-2"), MovementKind::Commit { hold }));
    assert_eq!(c.outcome, Ok(Detail::None));
    assert_eq!(oh_res_av(&e, &a, "dc"), Some((3, 0, 3)));
    assert_eq!(oh_res_av(&e, &b, "dc"), Some((0, 0, 0)));
    assert_eq!(e.execute_one(mv(None, MovementKind::Commit { hold })).outcome, Err(Reason::UnknownHold));
}

#[test]
fn holds_expire_on_their_own_and_cannot_be_committed_late() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, clock) = config(dir.path(), 2);
    c.expire_interval = std::time::Duration::from_millis(10);
    let e = engine::runtime::Engine::open(c).unwrap();
    e.execute_one(receive("A", "dc", 5));
    let r = e.execute_one(reserve(None, &[("A", "dc", 3)], T0 + 1_000));
    let Ok(Detail::Hold(hold)) = r.outcome else { panic!("{r:?}") };
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((5, 3, 2)));
    clock.store(T0 + 1_000, Ordering::Relaxed);
    assert_eq!(e.execute_one(mv(None, MovementKind::Commit { hold })).outcome, Err(Reason::HoldExpired));
    // Past the sweep grace (1 s), the housekeeper drops it.
    clock.store(T0 + 2_000, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while oh_res_av(&e, "A", "dc") != Some((5, 0, 5)) {
        assert!(std::time::Instant::now() < deadline, "hold never expired: {:?}", oh_res_av(&e, "A", "dc"));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(e.holds().is_empty());
}

#[test]
fn concurrent_sells_of_100_units_from_many_threads_exactly_100_win() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = open(dir.path(), 2);
    e.execute_one(receive("HOT", "dc", 100));
    let e = std::sync::Arc::new(e);
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let e = e.clone();
                s.spawn(move || {
                    let batch = (0..25).map(|i| sell(Some(&format!("t{t}-{i}")), "HOT", "dc", 1)).collect();
                    e.execute(batch).iter().filter(|r| r.outcome.is_ok()).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 100);
    assert_eq!(oh_res_av(&e, "HOT", "dc"), Some((0, 0, 0)));
}

#[test]
fn young_guards_over_the_bound_are_not_scanned_again_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _clock) = config(dir.path(), 2);
    c.idempotency_keys_max = 8; // over the bound past 9 guards; another scan after 1 more
    c.expire_interval = std::time::Duration::from_millis(2);
    c.key_guard_prune_interval = std::time::Duration::from_secs(3600);
    let e = engine::runtime::Engine::open(c).unwrap();
    e.execute_one(receive("A", "dc", 1000));
    for i in 0..30 {
        e.execute_one(sell(Some(&format!("k{i}")), "A", "dc", 1));
    }
    // The clock stands still: every guard is younger than KEY_GUARD_AGE_MIN, so no prune can
    // remove one.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (prunes, guards) = (e.key_guard_prunes(), e.key_guard_count());
    assert_eq!(guards, 30);
    assert!((1..=22).contains(&prunes), "{prunes} scans for 30 guards");
    // No new guard: no new scan, however many housekeeping rounds go by (about 100 here).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(e.key_guard_prunes(), prunes);
    // Another eighth of the bound (1 guard) more: one scan more.
    e.execute_one(sell(Some("k30"), "A", "dc", 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.key_guard_prunes() == prunes {
        assert!(std::time::Instant::now() < deadline, "no scan after a new guard");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(e.key_guard_prunes(), prunes + 1);
}

/// An engine that keeps at most 10 idempotency keys (and checks every 5 ms), after a receive and
/// 40 keyed sells `k0`..`k39`, 1 ms apart.
fn forty_keyed_sells_over_a_bound_of_ten(dir: &std::path::Path) -> (engine::runtime::Engine, Arc<AtomicU64>) {
    let (mut c, clock) = config(dir, 2);
    c.idempotency_keys_max = 10;
    c.idempotency_window = std::time::Duration::from_secs(3600);
    c.expire_interval = std::time::Duration::from_millis(5);
    c.key_guard_prune_interval = std::time::Duration::from_millis(5);
    let e = engine::runtime::Engine::open(c).unwrap();
    e.execute_one(receive("A", "dc", 1000));
    for i in 0..40 {
        clock.fetch_add(1, Ordering::Relaxed);
        e.execute_one(sell(Some(&format!("k{i}")), "A", "dc", 1));
    }
    (e, clock)
}

/// Waits (up to 10 s) until the engine keeps at most `keys` keys and `guards` key guards.
fn wait_for_keys_and_guards_at_most(e: &engine::runtime::Engine, keys: usize, guards: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.memory_stats().1 > keys || e.key_guard_count() > guards {
        assert!(std::time::Instant::now() < deadline, "keys {} guards {}", e.memory_stats().1, e.key_guard_count());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Over the bound, guards go once they are KEY_GUARD_AGE_MIN (10 s) old, not a minute: at a
/// high rate a minute of guards was twice the bound.
#[test]
fn guards_over_the_bound_go_once_ten_seconds_old() {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = forty_keyed_sells_over_a_bound_of_ten(dir.path());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(e.key_guard_count(), 40, "every guard is younger than KEY_GUARD_AGE_MIN");
    assert_eq!(engine::runtime::KEY_GUARD_AGE_MIN, std::time::Duration::from_secs(10));
    clock.fetch_add(10_500, Ordering::Relaxed);
    // The shards keep at most 10 keys in all; the guards older than the oldest of them go.
    wait_for_keys_and_guards_at_most(&e, 10, 12);
    assert_eq!(e.execute_one(sell(Some("k39"), "A", "dc", 5)).outcome, Err(Reason::IdempotencyMismatch));
    assert_eq!(e.execute_one(sell(Some("k0"), "A", "dc", 5)).outcome, Ok(Detail::None));
}

#[test]
fn idempotency_keys_are_bounded_by_count_and_forgotten_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = forty_keyed_sells_over_a_bound_of_ten(dir.path());
    clock.fetch_add(120_000, Ordering::Relaxed); // young guards are never dropped
    wait_for_keys_and_guards_at_most(&e, 10, 12);
    // The newest key is still remembered; the oldest was forgotten and can be used again.
    assert_eq!(e.execute_one(sell(Some("k39"), "A", "dc", 5)).outcome, Err(Reason::IdempotencyMismatch));
    assert_eq!(e.execute_one(sell(Some("k0"), "A", "dc", 5)).outcome, Ok(Detail::None));
    assert_eq!(oh_res_av(&e, "A", "dc"), Some((1000 - 40 - 5, 0, 955)));
    // After the window, every key is forgotten.
    clock.fetch_add(3_700_000, Ordering::Relaxed);
    wait_for_keys_and_guards_at_most(&e, 0, 0);
}
