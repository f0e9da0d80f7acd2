//! SIGKILL `stockd` under load from several clients that record every acknowledgement, restart
//! it, and check: every acknowledged movement is in the log with its sequence number and outcome,
//! nothing is there that was not sent, levels are what the log says, and none is oversold.
//! Repeated at random moments (more rounds with `PERPETUA_SLOW_TESTS=1`).

use crate::harness::*;
use engine::client::Client;
use engine::core::*;
use engine::protocol::{FeedFilter, MovementOutcome};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SKUS: usize = 6;

/// Movements sent (by key) and the acknowledged ones, shared by the load tasks.
#[derive(Default)]
struct Ledger {
    sent: HashMap<String, Movement>,
    acked: HashMap<String, MovementOutcome>,
}

async fn client(stockd: &Stockd) -> Client {
    let dir = stockd.data_dir();
    let mut config = client_config(&dir, stockd.addr, &admin_token(&dir));
    config.retry.retries = 0; // an error ends a load task: the server is gone
    config.request_timeout = Duration::from_secs(3);
    Client::connect(config).await.unwrap()
}

/// Keyed receives and sells, several in flight per client, until the first error.
async fn load(c: Arc<Client>, round: usize, task: usize, ledger: Arc<Mutex<Ledger>>) {
    for i in 0.. {
        let sku = format!("K-{}", (task + i) % SKUS);
        let key = format!("r{round}-t{task}-{i}");
        let kind = if i % 4 == 0 { receive(&sku, "dc", 3) } else { sell(&sku, "dc", 1) };
        let m = mv(Some(&key), kind);
        ledger.lock().unwrap().sent.insert(key.clone(), m.clone());
        match c.submit_one(&m).await {
            Ok(outcome) => {
                ledger.lock().unwrap().acked.insert(key, outcome);
            }
            Err(_) => return,
        }
    }
}

async fn one_round(round: usize, stockd: &mut Stockd, ledger: &Arc<Mutex<Ledger>>) {
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = Arc::new(client(stockd).await);
        for t in 0..8 {
            tasks.push(tokio::spawn(load(c.clone(), round, tasks.len() + t, ledger.clone())));
        }
    }
    let wait = rand::thread_rng().gen_range(150..700);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    stockd.kill9();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every record of the log through the feed, from a restarted server.
async fn log_of(c: &Client) -> Vec<engine::protocol::FeedEvent> {
    let durable = c.status().await.unwrap().durable_seq;
    let mut sub = c.subscribe(1, FeedFilter::All).await.unwrap();
    let mut events = Vec::new();
    while sub.position() <= durable {
        events.extend(sub.next().await.unwrap().events);
    }
    events.retain(|e| e.seq <= durable);
    events
}

async fn check(stockd: &Stockd, ledger: &Ledger) {
    let c = client(stockd).await;
    let log = log_of(&c).await;
    let mut by_key = HashMap::new();
    let mut on_hand: HashMap<String, Qty> = HashMap::new();
    for e in &log {
        let Some(key) = &e.movement.key else { continue }; // the engine's own records
        let sent = ledger.sent.get(key).unwrap_or_else(|| panic!("{key} is in the log but was never sent"));
        assert_eq!(&e.movement, sent, "the log has {key} as it was sent");
        assert!(by_key.insert(key.clone(), (e.seq, e.outcome)).is_none(), "{key} is in the log once");
        if e.outcome.is_ok() {
            match &e.movement.kind {
                MovementKind::Receive { sku, qty, .. } => *on_hand.entry(sku.clone()).or_default() += qty,
                MovementKind::Sell { sku, qty, .. } => *on_hand.entry(sku.clone()).or_default() -= qty,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for (key, ack) in &ledger.acked {
        let (seq, outcome) = by_key.get(key).unwrap_or_else(|| panic!("acknowledged {key} is not in the log"));
        assert_eq!((Some(*seq), *outcome), (ack.seq, ack.outcome), "{key}");
    }
    for s in 0..SKUS {
        let sku = format!("K-{s}");
        let level = c.level(&sku, "dc").await.unwrap();
        let expected = on_hand.get(&sku).copied().unwrap_or(0);
        match level {
            Some(l) => {
                assert_eq!(l.on_hand, expected, "{sku}: the level is what the log says");
                assert!(l.available >= 0 && l.on_hand >= 0, "{sku} oversold: {l:?}");
            }
            None => assert_eq!(expected, 0),
        }
    }
    // A retry of an acknowledged movement returns its first outcome.
    if let Some((key, ack)) = ledger.acked.iter().next() {
        let again = c.submit_one(&ledger.sent[key]).await.unwrap();
        assert_eq!(&again, ack);
    }
    c.close_and_wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_movement() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_addr();
    let rounds = if slow_tests() { 8 } else { 2 };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut stockd = Stockd::spawn(dir.path(), addr, &[]);
    for round in 0..rounds {
        one_round(round, &mut stockd, &ledger).await;
        stockd = Stockd::spawn(dir.path(), addr, &[]);
        let snapshot = {
            let l = ledger.lock().unwrap();
            Ledger { sent: l.sent.clone(), acked: l.acked.clone() }
        };
        assert!(!snapshot.acked.is_empty(), "the load got acknowledgements before the kill");
        eprintln!("round {round}: {} sent, {} acknowledged", snapshot.sent.len(), snapshot.acked.len());
        check(&stockd, &snapshot).await;
    }
}
