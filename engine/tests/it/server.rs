//! The server and the client library end to end on loopback: every movement kind, tokens and
//! roles, a hot SKU under concurrent reservations, batches, metrics, graceful shutdown, retries.

use crate::harness::*;
use engine::client::{Client, ClientError};
use engine::core::*;
use engine::protocol::{FeedFilter, MovementOutcome, Role};
use std::sync::Arc;

fn ok(o: &MovementOutcome) -> Detail {
    assert!(o.seq.is_some(), "an accepted movement has a sequence number: {o:?}");
    o.outcome.unwrap_or_else(|r| panic!("rejected: {r}"))
}

fn level(l: &Option<LevelView>) -> (Qty, Qty, Qty, Qty, Qty, Qty) {
    let l = l.as_ref().expect("the level exists");
    (l.on_hand, l.reserved, l.unsellable, l.incoming, l.safety_stock, l.available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_movement_kind_through_the_client_library() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let c = server.admin().await;
    assert_eq!(c.welcome().role, Role::Admin);
    let one = |kind: MovementKind| mv(Some(&engine::client::new_key()), kind);

    let r = c
        .submit_one(&one(MovementKind::Receive {
            sku: "A".into(),
            location: "dc".into(),
            qty: 10,
            unit_cost: Some(500),
            units: Units::ANY,
        }))
        .await
        .unwrap();
    assert_eq!(ok(&r), Detail::None);
    ok(&c.submit_one(&one(MovementKind::Expect { sku: "A".into(), location: "dc".into(), qty: 5 })).await.unwrap());
    let mut po = one(receive("A", "dc", 3));
    po.reference = Some("PO-1".into());
    ok(&c.submit_one(&po).await.unwrap());
    assert_eq!(level(&c.level("A", "dc").await.unwrap()), (13, 0, 0, 2, 0, 13));
    let s = MovementKind::Sell {
        sku: "A".into(),
        location: "dc".into(),
        qty: 3,
        unit_price: Some(1000),
        hold: None,
        allow_negative: false,
        units: Units::ANY,
    };
    ok(&c.submit_one(&one(s)).await.unwrap());
    for condition in [ReturnCondition::Restock, ReturnCondition::Damaged] {
        let k = MovementKind::Return {
            sku: "A".into(),
            location: "dc".into(),
            qty: 1,
            condition,
            unit_price: None,
            units: Units::ANY,
        };
        ok(&c.submit_one(&one(k)).await.unwrap());
    }
    assert_eq!(level(&c.level("A", "dc").await.unwrap()), (12, 0, 1, 2, 0, 11));
    let adj = MovementKind::Adjust {
        sku: "A".into(),
        location: "dc".into(),
        delta: -1,
        reason: AdjustReason::Shrinkage,
        allow_negative: false,
        units: Units::ANY,
    };
    ok(&c.submit_one(&one(adj)).await.unwrap());
    let count = MovementKind::Count { sku: "A".into(), location: "dc".into(), counted: 20, units: Units::ANY };
    assert_eq!(ok(&c.submit_one(&one(count)).await.unwrap()), Detail::Variance(9));
    let t =
        MovementKind::Transfer { sku: "A".into(), from: "dc".into(), to: "store".into(), qty: 5, units: Units::ANY };
    ok(&c.submit_one(&one(t)).await.unwrap());
    let Detail::Hold(h1) = ok(&c.submit_one(&one(reserve("A", "dc", 2))).await.unwrap()) else { panic!("a hold") };
    assert_eq!(level(&c.level("A", "dc").await.unwrap()), (15, 2, 1, 2, 0, 12));
    ok(&c.submit_one(&one(MovementKind::Commit { hold: h1 })).await.unwrap());
    let Detail::Hold(h2) = ok(&c.submit_one(&one(reserve("A", "dc", 4))).await.unwrap()) else { panic!("a hold") };
    assert_ne!(h1, h2);
    ok(&c.submit_one(&one(MovementKind::Release { hold: h2 })).await.unwrap());
    let too_many = c.submit_one(&one(sell("A", "dc", 100))).await.unwrap();
    assert_eq!(too_many.outcome, Err(Reason::InsufficientStock));
    let settings =
        Settings { reorder_point: Some(3), reorder_qty: Some(24), max_qty: None, safety_stock: 2, lead_time_days: 7 };
    ok(&c.set_settings("A", "dc", settings, Some("settings-1".into())).await.unwrap());
    assert_eq!(c.settings("A", "dc").await.unwrap(), Some(settings));

    assert_eq!(level(&c.level("A", "dc").await.unwrap()), (13, 0, 1, 2, 2, 10));
    assert_eq!(level(&c.level("A", "store").await.unwrap()), (5, 0, 0, 0, 0, 5));
    assert_eq!(c.level("A", "nowhere").await.unwrap(), None);
    let all = c.levels(None).await.unwrap();
    assert_eq!(
        all.iter().map(|l| (l.sku.as_str(), l.location.as_str())).collect::<Vec<_>>(),
        [("A", "dc"), ("A", "store")]
    );
    assert_eq!(c.levels(Some("store")).await.unwrap().len(), 1);
    // available 10 > reorder point 3: not low; store has no settings and 5 > 0: not low.
    assert!(c.low_stock(None).await.unwrap().is_empty());
    ok(&c.submit_one(&one(sell("A", "dc", 8))).await.unwrap());
    let low = c.low_stock(None).await.unwrap();
    assert_eq!(low.len(), 1);
    assert_eq!((low[0].level.available, low[0].settings), (2, settings));
    let status = c.status().await.unwrap();
    assert!(status.durable_seq >= 16, "{status:?}");
    c.close_and_wait().await;
    server.stop().expect("a checkpoint at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_and_roles_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let admin = server.admin().await;
    ok(&admin.submit_one(&mv(None, receive("A", "dc", 10))).await.unwrap());

    let err = Client::connect(server.config("pt_00000000_nope")).await.err().expect("refused");
    assert_eq!(err.code(), Some("unauthenticated"), "{err}");
    let err = Client::connect(server.config("")).await.err().expect("refused");
    assert_eq!(err.code(), Some("unauthenticated"));

    let mut clients = std::collections::HashMap::new();
    for role in [Role::Checkout, Role::Warehouse, Role::Reader] {
        let (info, secret) = admin.create_token(&format!("{role}-1"), role).await.unwrap();
        assert_eq!(info.role, role);
        let c = Client::connect(server.config(&secret)).await.unwrap();
        assert_eq!(c.welcome().role, role);
        clients.insert(role, (info, c));
    }
    let forbidden = |r: Result<MovementOutcome, ClientError>| {
        let e = r.expect_err("forbidden");
        assert_eq!(e.code(), Some("forbidden"), "{e}");
    };
    let checkout = &clients[&Role::Checkout].1;
    let warehouse = &clients[&Role::Warehouse].1;
    let reader = &clients[&Role::Reader].1;
    forbidden(checkout.submit_one(&mv(None, receive("A", "dc", 1))).await);
    forbidden(warehouse.submit_one(&mv(None, sell("A", "dc", 1))).await);
    forbidden(reader.submit_one(&mv(None, sell("A", "dc", 1))).await);
    forbidden(warehouse.set_settings("A", "dc", Settings::default(), None).await);
    // A batch with one movement outside the role is refused whole: the allowed sell did not happen.
    let e = checkout.submit(&[mv(None, sell("A", "dc", 1)), mv(None, receive("A", "dc", 1))]).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    assert_eq!(level(&admin.level("A", "dc").await.unwrap()).0, 10);
    // What each role may do.
    ok(&checkout.submit_one(&mv(None, sell("A", "dc", 1))).await.unwrap());
    ok(&warehouse.submit_one(&mv(None, receive("A", "dc", 2))).await.unwrap());
    assert_eq!(level(&reader.level("A", "dc").await.unwrap()).0, 11);
    assert_eq!(checkout.levels(None).await.unwrap().len(), 1);
    let e = checkout.subscribe(0, FeedFilter::All).await.err().expect("forbidden");
    assert_eq!(e.code(), Some("forbidden"));
    reader.subscribe(0, FeedFilter::All).await.expect("a reader follows the feed");
    assert_eq!(warehouse.list_tokens().await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(reader.create_token("x", Role::Admin).await.unwrap_err().code(), Some("forbidden"));

    // Tokens: listed without secrets, revoked at once.
    let tokens = admin.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 4);
    let (info, _) = &clients[&Role::Checkout];
    admin.revoke_token(&info.id).await.unwrap();
    assert_eq!(admin.revoke_token(&info.id).await.unwrap_err().code(), Some("not_found"));
    let e = checkout.submit_one(&mv(None, sell("A", "dc", 1))).await.unwrap_err();
    assert_eq!(e.code(), Some("unauthenticated"), "{e}");
    assert_eq!(level(&admin.level("A", "dc").await.unwrap()).0, 11);
    assert_eq!(admin.list_tokens().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_sku_with_100_units_takes_exactly_100_of_1000_concurrent_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let admin = server.admin().await;
    ok(&admin.submit_one(&mv(None, receive("HOT", "dc", 100))).await.unwrap());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Arc::new(server.admin().await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let c = clients[i % clients.len()].clone();
        tasks.spawn(
            async move { c.submit_one(&mv(Some(&format!("cart-{i}")), reserve("HOT", "dc", 1))).await.unwrap() },
        );
    }
    let (mut held, mut refused) = (0, 0);
    let mut holds = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        match r.outcome {
            Ok(Detail::Hold(h)) => {
                held += 1;
                assert!(holds.insert(h), "hold ids are unique");
            }
            Err(Reason::InsufficientStock) => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
        assert!(r.seq.is_some());
    }
    assert_eq!((held, refused), (100, 900));
    assert_eq!(level(&admin.level("HOT", "dc").await.unwrap()), (100, 100, 0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_one_outcome_per_movement_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let c = server.admin().await;
    let mut batch = vec![mv(None, receive("B", "dc", 50))];
    for i in 0..99 {
        batch.push(mv(Some(&format!("b-{i}")), sell("B", "dc", 1)));
    }
    let results = c.submit(&batch).await.unwrap();
    assert_eq!(results.len(), 100);
    let accepted = results.iter().filter(|r| r.outcome.is_ok()).count();
    // Movements of one SKU are applied in batch order: the receive first, then 50 sells.
    assert_eq!(accepted, 51);
    assert!(results[1..51].iter().all(|r| r.outcome == Ok(Detail::None)));
    assert!(results[51..].iter().all(|r| r.outcome == Err(Reason::InsufficientStock)));
    let mut seqs: Vec<Seq> = results.iter().map(|r| r.seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one shard, in order");
    seqs.dedup();
    assert_eq!(seqs.len(), 100);
    // A retry of the whole batch returns the same outcomes and sequence numbers for the keyed ones.
    let again = c.submit(&batch[1..]).await.unwrap();
    assert_eq!(again, results[1..]);
}

/// The server hashes a movement from its bytes as they came; the engine, submitted in process,
/// from its encoding. Both must give the same body hash, or a retry after a restart (or through
/// another path) would be refused as a reuse of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_movement_sent_over_the_wire_has_the_body_hash_of_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let c = server.admin().await;
    ok(&c.submit_one(&mv(None, receive("W", "dc", 10))).await.unwrap());
    let sold = mv(Some("wire-sell"), sell("W", "dc", 2));
    let held = mv(Some("wire-hold"), reserve("W", "dc", 3));
    let first = c.submit(&[sold.clone(), held.clone()]).await.unwrap();
    let hold = match ok(&first[1]) {
        Detail::Hold(hold) => hold,
        other => panic!("a hold, not {other:?}"),
    };
    // The same key with another body is refused over the wire too.
    let other = c.submit_one(&mv(Some("wire-sell"), sell("W", "dc", 1))).await.unwrap();
    assert_eq!(other.outcome, Err(Reason::IdempotencyMismatch));
    drop(c);
    server.stop();

    let config = test_config(dir.path()).engine;
    let (again, level) = tokio::task::spawn_blocking(move || {
        let engine = engine::runtime::Engine::open(config).unwrap();
        let again = engine.execute(vec![sold, held]);
        (again, engine.level("W", "dc").map(|l| (l.on_hand, l.reserved)))
    })
    .await
    .unwrap();
    assert_eq!(again[0].seq, first[0].seq, "the in-process retry is the wire movement's");
    assert_eq!(again[0].outcome, Ok(Detail::None));
    assert_eq!(again[1].seq, first[1].seq);
    assert_eq!(again[1].outcome, Ok(Detail::Hold(hold)));
    assert_eq!(level, Some((8, 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_counts_movements_rejections_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let c = server.admin().await;
    ok(&c.submit_one(&mv(None, receive("M", "dc", 1))).await.unwrap());
    c.submit(&[mv(None, sell("M", "dc", 1)), mv(None, sell("M", "dc", 1))]).await.unwrap();
    let page = http_get(server.metrics.unwrap(), "/metrics").await;
    for line in [
        "HTTP/1.1 200 OK",
        "perpetua_movements_total{kind=\"receive\"} 1",
        "perpetua_movements_total{kind=\"sell\"} 2",
        "perpetua_rejections_total{reason=\"insufficient_stock\"} 1",
        "perpetua_ack_latency_seconds_count 2",
        "perpetua_connections 1",
        "perpetua_shard_queue_depth{shard=\"1\"} 0",
        "# TYPE perpetua_ack_latency_seconds histogram",
    ] {
        assert!(page.contains(line), "{line} missing in\n{page}");
    }
    assert!(page.contains("perpetua_log_fsyncs_total"));
    assert!(http_get(server.metrics.unwrap(), "/nope").await.starts_with("HTTP/1.1 404"));
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_answers_what_is_in_flight_and_a_keyed_retry_after_restart_gets_the_first_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.listen = free_udp_addr();
    let server = InProcess::start_with(config.clone());
    let c = Arc::new(server.admin().await);
    ok(&c.submit_one(&mv(None, receive("G", "dc", 1_000_000))).await.unwrap());
    // Load in flight while the server stops.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let c = c.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let key = format!("g-{t}-{i}");
                match c.submit_one(&mv(Some(&key), sell("G", "dc", 1))).await {
                    Ok(r) => acked.push((key, r)),
                    Err(_) => break,
                }
                if i == 200 {
                    break;
                }
            }
            acked
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let stopper = tokio::task::spawn_blocking(move || server.stop());
    let checkpoint = stopper.await.unwrap();
    assert!(checkpoint.is_some(), "a checkpoint is written at shutdown");
    // Restart on the same address; the same client reconnects by itself.
    let server = InProcess::start_with(config);
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    assert!(acked.len() >= 8, "some sells were acknowledged");
    let mut sold = 0;
    for (key, first) in &acked {
        assert_eq!(first.outcome, Ok(Detail::None));
        let again = c.submit_one(&mv(Some(key), sell("G", "dc", 1))).await.unwrap();
        assert_eq!(&again, first, "a retry returns the first outcome and sequence number");
        sold += 1;
    }
    // Every acknowledged sell is there, and nothing else was sold (the client retries a lost
    // request with the same key, so a sell is counted once).
    let on_hand = level(&c.level("G", "dc").await.unwrap()).0;
    assert!(on_hand <= 1_000_000 - sold, "{on_hand}");
    assert!(on_hand >= 1_000_000 - 8 * 201, "{on_hand}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_bind_says_so_and_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = InProcess::start(dir.path());
    let other = tempfile::tempdir().unwrap();
    let mut config = test_config(other.path());
    config.listen = first.addr;
    let err = engine::server::Server::start(config).await.err().expect("the address is taken");
    assert!(err.to_string().contains(&format!("cannot listen on {}", first.addr)), "{err}");
    assert!(!other.path().join("wal").exists(), "the engine was not opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = InProcess::start(dir.path());
    let err = engine::server::Server::start(test_config(dir.path())).await.err().expect("refused");
    assert!(err.to_string().contains("another stockd"), "{err}");
    let c = first.admin().await;
    assert!(c.status().await.is_ok(), "the first one is unharmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_certificate_is_used_and_a_client_trusting_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["stock.test".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("deploy.pem"), dir.path().join("deploy.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut config = test_config(&dir.path().join("data"));
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key);
    let server = InProcess::start_with(config);
    assert!(!server.dir.join("tls/cert.pem").exists(), "no self-signed certificate when one is given");

    let token = server.admin_token();
    let mut good = engine::client::ClientConfig::new(server.addr.to_string(), std::fs::read(&cert).unwrap(), &token);
    good.server_name = Some("stock.test".into());
    good.connect_timeout = std::time::Duration::from_secs(2);
    let c = Client::connect(good.clone()).await.expect("the deployment's certificate verifies");
    assert!(c.status().await.is_ok());

    // Another certificate, or the right one under another name: the handshake fails.
    let other = rcgen::generate_simple_self_signed(vec!["stock.test".to_string()]).unwrap();
    let mut wrong_ca = good.clone();
    wrong_ca.ca_pem = other.cert.pem().into_bytes();
    let e = Client::connect(wrong_ca).await.err().expect("refused");
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    let mut wrong_name = good;
    wrong_name.server_name = Some("elsewhere.test".into());
    assert!(matches!(Client::connect(wrong_name).await, Err(ClientError::Connect { .. })));
}

/// Requests written together on one stream reach the engine gathered into one submission; each
/// still gets its own answer with its own movements' results, and the engine sees them in the
/// stream's order: the movements of a SKU get their sequence numbers in the order they were sent,
/// and a read between them sees at least the submissions before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_arrive_together_are_answered_each_in_the_order_of_the_stream() {
    use engine::protocol::{RequestBody, ResponseBody};
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path());
    let (a, b) = crate::common::skus_on_two_shards(2);
    let admin = server.admin().await;
    for sku in [&a, &b] {
        ok(&admin.submit_one(&mv(None, receive(sku, "dc", 100))).await.unwrap());
    }
    // Request k (1 to 40) sells 1 unit k % 3 + 1 times, of A and B in turn; every fifth also
    // sells 1,000 of A, which is refused. Request 21 reads A's level; request 30 is garbage.
    let (read_at, garbage_at) = (21, 30);
    // Per request: its frame and the (SKU, quantity) of each sell in it.
    type Sent = (Vec<u8>, Vec<(String, Qty)>);
    let mut sent: BTreeMap<u64, Sent> = BTreeMap::new();
    let mut bytes = Vec::new();
    for k in 1..=40u64 {
        if k == read_at {
            bytes.extend(frame(k, &RequestBody::Level { sku: a.clone(), location: "dc".into() }));
            continue;
        }
        if k == garbage_at {
            bytes.extend(raw_frame(&[k as u8, 0xff, 0xff, 0xff]));
            continue;
        }
        let mut lines: Vec<(String, Qty)> =
            (0..k % 3 + 1).map(|i| (if (k + i) % 2 == 0 { a.clone() } else { b.clone() }, 1)).collect();
        if k % 5 == 0 {
            lines.push((a.clone(), 1000));
        }
        let movements =
            lines.iter().enumerate().map(|(i, (sku, q))| mv(Some(&format!("together-{k}-{i}")), sell(sku, "dc", *q)));
        let request = frame(k, &RequestBody::Submit { movements: movements.collect() });
        bytes.extend(&request);
        sent.insert(k, (request, lines));
    }
    let mut r = raw(&server, &server.admin_token()).await;
    r.send.write_all(&bytes).await.unwrap();
    let mut answers = BTreeMap::new();
    for _ in 1..=40 {
        let answer = next(&mut r.reader).await;
        assert!(answers.insert(answer.id, answer.body).is_none(), "one answer per request");
    }
    assert!(matches!(&answers[&garbage_at], ResponseBody::Error { code, .. } if code == "malformed"));

    // Each submission's own results, in its order; per SKU, sequence numbers in the stream's order.
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut sold: BTreeMap<String, Qty> = BTreeMap::new();
    let mut a_sold_before_read = 0;
    for (k, (_, lines)) in &sent {
        let ResponseBody::Outcomes { results } = &answers[k] else { panic!("request {k}: {:?}", answers[k]) };
        assert_eq!(results.len(), lines.len(), "request {k}: one result per movement");
        for ((sku, qty), result) in lines.iter().zip(results) {
            if *qty == 1000 {
                assert_eq!(result.outcome, Err(Reason::InsufficientStock), "request {k}");
                continue;
            }
            ok(result);
            let seq = result.seq.unwrap();
            assert!(last_seq.get(sku).is_none_or(|&last| last < seq), "request {k}: {sku} out of order");
            last_seq.insert(sku.clone(), seq);
            *sold.entry(sku.clone()).or_default() += qty;
            if *k < read_at && *sku == a {
                a_sold_before_read += qty;
            }
        }
    }
    let ResponseBody::Level { level: Some(read) } = &answers[&read_at] else { panic!("{:?}", answers[&read_at]) };
    // Reads are not ordered with later movements (answers come in any order), but the sells sent
    // before one reach the engine before it.
    let on_hand_range = 100 - sold[&a]..=100 - a_sold_before_read;
    assert!(on_hand_range.contains(&read.on_hand), "the read sees the sells before it: {}", read.on_hand);
    for sku in [&a, &b] {
        assert_eq!(admin.level(sku, "dc").await.unwrap().unwrap().on_hand, 100 - sold[sku]);
    }

    // A request sent again alone gets the same answer: its movements were keyed by their own bytes.
    let (request, _) = &sent[&7];
    r.send.write_all(request).await.unwrap();
    let again = next(&mut r.reader).await;
    assert_eq!((again.id, &again.body), (7, &answers[&7]));
    assert_eq!(admin.level(&a, "dc").await.unwrap().unwrap().on_hand, 100 - sold[&a], "nothing applied twice");
    admin.close();
}
