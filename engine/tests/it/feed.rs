//! The change feed over the network: what a subscriber receives equals the log exactly, across a
//! dropped connection and a server restart; a subscriber that stops reading is cut off without
//! slowing the checkouts; a subscriber asking for pruned records is told so and restarts from a
//! snapshot.

use crate::harness::*;
use engine::client::{Client, ClientError};
use engine::core::*;
use engine::protocol::{FeedEvent, FeedFilter};
use engine::runtime::{Engine, EngineConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keyed movements on a few SKUs, some raising alerts, until `stop`; returns the acknowledgements.
async fn load(c: Arc<Client>, task: usize, stop: Arc<AtomicBool>) -> Vec<(String, Seq)> {
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && i < 5_000 {
        let sku = format!("F-{}", i % 5);
        let key = format!("t{task}-{i}");
        let kind = if i % 3 == 0 { receive(&sku, "dc", 2) } else { sell(&sku, "dc", 1) };
        let batch = [mv(Some(&key), kind), mv(Some(&format!("{key}-r")), reserve(&sku, "dc", 1))];
        match c.submit(&batch).await {
            Ok(results) => {
                for (m, r) in batch.iter().zip(results) {
                    if let Some(seq) = r.seq {
                        acked.push((m.key.clone().unwrap(), seq));
                    }
                }
            }
            Err(e) => panic!("the load failed: {e}"),
        }
        i += 1;
    }
    acked
}

/// Every record of a data directory's log, read with the engine's own feed.
fn log_records(dir: &std::path::Path) -> Vec<engine::runtime::FeedEvent> {
    let mut config = EngineConfig::new(dir);
    config.shards = 2;
    let engine = Engine::open(config).unwrap();
    let durable = engine.stats().durable_seq;
    let mut feed = engine.feed(1).unwrap();
    let mut all = Vec::new();
    while feed.next_seq() <= durable {
        all.extend(feed.next_batch(10_000, Duration::from_secs(1)).unwrap());
    }
    engine.shutdown().unwrap();
    all
}

fn same(wire: &FeedEvent, log: &engine::runtime::FeedEvent) -> bool {
    wire.seq == log.seq
        && wire.shard == log.shard
        && wire.recorded_at == log.record.recorded_at
        && wire.movement == log.record.movement
        && wire.outcome == log.record.outcome
        && wire.effects == log.record.effects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_equals_the_log_across_a_dropped_connection_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.listen = free_udp_addr();
    let mut server = InProcess::start_with(config.clone());
    let admin = server.admin().await;
    for i in 0..5 {
        let s = Settings { reorder_point: Some(3), ..Settings::default() };
        admin.set_settings(&format!("F-{i}"), "dc", s, Some(format!("set-{i}"))).await.unwrap();
    }
    let (_, reader_token) = admin.create_token("feed", engine::protocol::Role::Reader).await.unwrap();
    let sub_client = Client::connect(server.config(&reader_token)).await.unwrap();
    let mut sub = sub_client.subscribe(0, FeedFilter::All).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load_client = Arc::new(server.admin().await);
    let loads: Vec<_> = (0..3).map(|t| tokio::spawn(load(load_client.clone(), t, stop.clone()))).collect();

    let mut events: Vec<FeedEvent> = Vec::new();
    let mut dropped = false;
    let mut restarted = false;
    let started = Instant::now();
    loop {
        let batch = sub.next().await.expect("the subscription goes on");
        events.extend(batch.events);
        if !dropped && events.len() > 300 {
            sub_client.close(); // the next read fails; the subscription reconnects by itself
            dropped = true;
        }
        if dropped && !restarted && events.len() > 800 {
            let config = config.clone();
            server = tokio::task::spawn_blocking(move || {
                drop(server);
                InProcess::start_with(config)
            })
            .await
            .unwrap();
            restarted = true;
        }
        if restarted && (events.len() > 1500 || started.elapsed() > Duration::from_secs(20)) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for l in loads {
        acked.extend(l.await.unwrap());
    }
    let last_acked = acked.iter().map(|a| a.1).max().unwrap();
    while sub.position() <= last_acked {
        events.extend(sub.next().await.unwrap().events);
    }
    assert!(sub.reconnects >= 2, "the subscription resumed after the drop and the restart: {}", sub.reconnects);
    let position = sub.position();
    drop(sub);
    load_client.close_and_wait().await;
    sub_client.close_and_wait().await;
    admin.close();
    tokio::task::spawn_blocking(move || server.stop()).await.unwrap();

    let path = dir.path().to_owned();
    let log = tokio::task::spawn_blocking(move || log_records(&path)).await.unwrap();
    let log: Vec<_> = log.into_iter().filter(|e| e.seq < position).collect();
    assert_eq!(events.len(), log.len(), "as many events as records");
    for (w, l) in events.iter().zip(&log) {
        assert!(same(w, l), "event {} differs from the log:\n{w:?}\n{l:?}", w.seq);
    }
    // Every acknowledged movement is among them, and alerts came through.
    let keys: std::collections::HashMap<&str, Seq> =
        events.iter().filter_map(|e| e.movement.key.as_deref().map(|k| (k, e.seq))).collect();
    for (key, seq) in &acked {
        assert_eq!(keys.get(key.as_str()), Some(seq), "acknowledged {key} at {seq}");
    }
    assert!(events.iter().any(|e| !e.effects.alerts.is_empty()), "alerts are on the feed");
}

/// A raw subscription that never reads, with a small receive window so that the server's
/// buffer fills quickly.
async fn stalled_subscriber(server: &InProcess) -> (quinn::Endpoint, quinn::Connection, quinn::RecvStream) {
    use engine::protocol::*;
    let ca = std::fs::read(server.dir.join("tls/cert.pem")).unwrap();
    let mut config = engine::client::quic_client_config(&ca).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(16_000u32.into());
    transport.receive_window(64_000u32.into());
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint.connect_with(config, server.addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    let hello = RequestBody::Hello { version: PROTOCOL_VERSION, token: server.admin_token(), client: "stalled".into() };
    encode_request(&mut frame, 0, &hello);
    send.write_all(&frame).await.unwrap();
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.unwrap();
    let mut welcome = vec![0u8; u32::from_le_bytes(header) as usize];
    recv.read_exact(&mut welcome).await.unwrap();
    assert!(matches!(Response::decode(&welcome).unwrap().body, ResponseBody::Welcome(_)));
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    encode_request(&mut frame, 1, &RequestBody::Subscribe { from_seq: 1, filter: FeedFilter::All });
    send.write_all(&frame).await.unwrap();
    std::mem::forget(send); // keep the stream open
    (endpoint, conn, recv)
}

/// Sells in batches of 50; returns how long `requests` took.
async fn timed_load(c: &Client, requests: usize, tag: &str) -> Duration {
    let started = Instant::now();
    for i in 0..requests {
        let batch: Vec<Movement> = (0..50).map(|j| mv(Some(&format!("{tag}-{i}-{j}")), sell("P", "dc", 1))).collect();
        let results = c.submit(&batch).await.unwrap();
        assert!(results.iter().all(|r| r.outcome.is_ok()));
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_and_checkouts_keep_their_pace() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.feed_buffer_events_max = 500;
    let server = InProcess::start_with(config);
    let c = server.admin().await;
    c.submit_one(&mv(None, receive("P", "dc", 1_000_000))).await.unwrap();
    let baseline = timed_load(&c, 60, "base").await;

    let (_endpoint, conn, mut recv) = stalled_subscriber(&server).await;
    let with_stalled = timed_load(&c, 60, "stalled").await;
    // The subscriber fell behind by more than the bound: its stream is reset with slow_consumer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = engine::protocol::FrameBuffer::new(16 << 20);
    let code = loop {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf)).await.expect("no hang") {
            Ok(Some(n)) => {
                received.extend(&buf[..n]);
                assert!(Instant::now() < deadline, "still not cut off");
            }
            Ok(None) => {
                let mut last = None;
                while let Ok(Some(f)) = received.next_frame() {
                    last = Some(engine::protocol::Response::decode(f).map(|r| r.body));
                }
                panic!("the feed ended instead of being cut off; last frame {last:?}")
            }
            Err(quinn::ReadError::Reset(code)) => break code.into_inner(),
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(engine::protocol::ErrorCode::from_app_code(code), Some(engine::protocol::ErrorCode::SlowConsumer));
    // Only that stream: the connection stays usable.
    assert!(conn.close_reason().is_none());
    // The checkouts went on at their pace (generous bound: the machine is shared and noisy).
    assert!(
        with_stalled < baseline * 4 + Duration::from_millis(500),
        "with a stalled subscriber {with_stalled:?}, without {baseline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_pruned_records_says_feed_truncated_and_a_snapshot_restarts_the_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.engine.segment_bytes_max = 4096;
    config.engine.checkpoint_log_bytes = 8192;
    config.engine.log_retention_bytes = 0;
    let server = InProcess::start_with(config);
    let c = server.admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let oldest = loop {
        let batch: Vec<Movement> = (0..50).map(|j| mv(None, receive(&format!("S-{}", (i + j) % 7), "dc", 1))).collect();
        c.submit(&batch).await.unwrap();
        i += 50;
        match c.subscribe(1, FeedFilter::All).await {
            Err(ClientError::FeedTruncated { oldest_available }) => break oldest_available,
            Ok(_) => assert!(Instant::now() < deadline, "the log was never pruned"),
            Err(e) => panic!("unexpected {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(oldest > 1);
    // From what is kept, the feed works (a checkpoint still due may prune a little more first).
    let mut oldest = oldest;
    let mut sub = loop {
        match c.subscribe(oldest, FeedFilter::All).await {
            Ok(sub) => break sub,
            Err(ClientError::FeedTruncated { oldest_available }) if oldest_available > oldest => {
                oldest = oldest_available
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(sub.next().await.unwrap().events[0].seq, oldest);
    // A snapshot gives a consistent starting point.
    let (seq, levels) = c.snapshot().await.unwrap();
    assert_eq!(levels, c.levels(None).await.unwrap());
    assert_eq!(levels.iter().map(|l| l.on_hand).sum::<Qty>(), i as Qty);
    let mut sub = c.subscribe(seq + 1, FeedFilter::All).await.unwrap();
    let r = c.submit_one(&mv(None, receive("S-0", "dc", 1))).await.unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got = sub.next().await.unwrap().events;
    }
    assert!(got[0].seq > seq);
    assert_eq!(got.last().unwrap().seq, r.seq.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_only_subscriber_gets_only_records_with_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let c = server.admin().await;
    let mut sub = c.subscribe(1, FeedFilter::AlertsOnly).await.unwrap();
    // A reorder point above an empty level raises the alerts at once.
    let set =
        c.set_settings("AL", "dc", Settings { reorder_point: Some(2), ..Settings::default() }, None).await.unwrap();
    c.submit_one(&mv(None, receive("AL", "dc", 4))).await.unwrap();
    c.submit_one(&mv(None, sell("AL", "dc", 1))).await.unwrap(); // 3: above the point
    let low = c.submit_one(&mv(None, sell("AL", "dc", 1))).await.unwrap(); // 2: reorder alert
    let out = c.submit_one(&mv(None, sell("AL", "dc", 2))).await.unwrap(); // 0: out of stock
    let mut events = Vec::new();
    while events.len() < 3 {
        events.extend(sub.next().await.unwrap().events);
    }
    let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [set.seq.unwrap(), low.seq.unwrap(), out.seq.unwrap()]);
    assert_eq!(events[1].effects.alerts[0].kind, AlertKind::Reorder);
    assert!(events[2].effects.alerts.iter().any(|a| a.kind == AlertKind::OutOfStock));
    // Nothing else arrives: the receive and the first sell raised no alert.
    let more = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(more.map_or(true, |b| b.unwrap().events.is_empty()));
}

/// The same through SIGKILLs of the `stockd` process (slow: each kill is noticed by the idle
/// timeout). `PERPETUA_SLOW_TESTS=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_equals_the_log_across_sigkills_slow() {
    if !slow_tests() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_addr();
    let mut stockd = Stockd::spawn(dir.path(), addr, &[]);
    let data = stockd.data_dir();
    let mut config = client_config(&data, addr, &admin_token(&data));
    config.idle_timeout = Duration::from_secs(2);
    config.retry.retries = 30;
    let sub_client = Client::connect(config.clone()).await.unwrap();
    let mut sub = sub_client.subscribe(1, FeedFilter::All).await.unwrap();
    let mut events: Vec<FeedEvent> = Vec::new();
    let mut last_acked = 0;
    for round in 0..3 {
        let c = Client::connect(config.clone()).await.unwrap();
        for i in 0..200 {
            let m = mv(Some(&format!("k{round}-{i}")), receive(&format!("F-{}", i % 5), "dc", 1));
            last_acked = c.submit_one(&m).await.unwrap().seq.unwrap();
        }
        while sub.position() <= last_acked / 2 {
            events.extend(sub.next().await.unwrap().events);
        }
        stockd.kill9();
        stockd = Stockd::spawn(dir.path(), addr, &[]);
    }
    while sub.position() <= last_acked {
        events.extend(sub.next().await.unwrap().events);
    }
    let position = sub.position();
    drop(sub);
    sub_client.close_and_wait().await;
    stockd.terminate();
    let log = tokio::task::spawn_blocking(move || log_records(&data)).await.unwrap();
    let log: Vec<_> = log.into_iter().filter(|e| e.seq < position).collect();
    assert_eq!(events.len(), log.len());
    for (w, l) in events.iter().zip(&log) {
        assert!(same(w, l), "event {} differs from the log", w.seq);
    }
}
