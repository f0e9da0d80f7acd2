//! Short runs against a real `stockd` started in-process on loopback.

use crate::{args, slow_tests, start_server, start_server_with};
use loadgen::run::execute;

/// Closed loop, batches of 4, a fixed number of operations with the whole mix: the run passes
/// verification, every level was checked, and the change feed covered every online take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_closed_loop_run_against_stockd_passes_verification() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let data_dir = dir.path().to_str().unwrap();
    let a = args(&[
        "--server",
        &addr,
        "--data-dir",
        data_dir,
        "--operations",
        "4000",
        "--batch",
        "4",
        "--concurrency",
        "32",
        "--connections",
        "2",
    ]);
    let report = execute(a).await.expect("the run completes");
    let v = report.verification.as_ref().expect("verified");
    assert!(v.passed, "{}", report.render());
    assert_eq!(v.levels_checked, 900, "{}", report.render());
    let p = &report.phases[0];
    // Every operation's first step, plus commits and releases of the holds placed.
    assert!(p.movements >= 4000, "{}", report.render());
    assert!(p.latency.contains_key("commit") && p.latency.contains_key("reserve_multi"), "{}", report.render());
    let h = v.history.as_ref().expect("the change feed was checked");
    assert!(h.complete && h.takes_checked > 2000 && h.violations == 0, "{h:?}");
    let log = report.log.as_ref().expect("log counters");
    assert!(log.syncs > 0, "the default stockd syncs its log: {log:?}");
    assert_eq!(report.left_in_doubt, 0);

    // A second run on the same levels (no seeding) passes too: its baseline is what the first left.
    let a = args(&["--server", &addr, "--data-dir", data_dir, "--operations", "1000", "--no-seed", "--seed", "8"]);
    let report = execute(a).await.expect("the second run completes");
    assert!(report.passed(), "{}", report.render());
    server.shutdown().await.unwrap();
}

/// A warm-up sends load that the report leaves out and the verification keeps in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_is_sent_verified_and_left_out_of_the_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let data_dir = dir.path().to_str().unwrap();
    let seeded = args(&["--server", &addr, "--data-dir", data_dir, "--operations", "1", "--no-verify"]);
    execute(seeded).await.expect("the seeding run completes");
    let before = server.engine().stats().durable_seq;
    let a = args(&[
        "--server",
        &addr,
        "--data-dir",
        data_dir,
        "--no-seed",
        "--operations",
        "500",
        "--warmup",
        "1s",
        "--concurrency",
        "16",
    ]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.workload.warmup_s, 1.0);
    assert!(report.render().contains("after 1 s of warm-up"), "{}", report.render());
    assert_eq!(report.phases.len(), 1);
    let measured = report.phases[0].movements;
    let log = report.log.as_ref().expect("log counters");
    // The engine logged the warm-up too (a second of 16 clients: thousands of movements), but the
    // log counters and the phase cover only what came after it.
    let logged = server.engine().stats().durable_seq - before;
    assert!(logged > log.records + 1000, "logged {logged}, after the warm-up {}", log.records);
    assert!(
        measured >= 500 && measured <= log.records,
        "measured {measured}, logged after the warm-up {}",
        log.records
    );
    server.shutdown().await.unwrap();
}

/// A run that outlives the log's retention still checks the change feed, from the oldest record
/// kept, and says the check is partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_check_goes_on_from_what_retention_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_with(dir.path(), |config| {
        config.engine.segment_bytes_max = 64 << 10;
        config.engine.log_retention_bytes = 0;
        config.engine.checkpoint_log_bytes = 256 << 10; // a checkpoint (and pruning) every 256 KiB
    })
    .await;
    let addr = server.local_addr().to_string();
    let data_dir = dir.path().to_str().unwrap();
    let a = args(&["--server", &addr, "--data-dir", data_dir, "--operations", "6000", "--concurrency", "16"]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    let h = report.verification.as_ref().unwrap().history.as_ref().expect("the change feed was checked");
    assert!(!h.complete, "the log was pruned under the run: {h:?}");
    assert!(h.takes_checked > 0 && h.violations == 0, "{h:?}");
    server.shutdown().await.unwrap();
}

/// Open loop at a modest rate on a flash sale: the schedule is kept (nothing missed), latency
/// counts from the intended send times, and the hot levels sell out without an oversell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_flash_sale_sells_out_without_overselling() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let secs = if slow_tests() { "10s" } else { "1500ms" };
    let a = args(&[
        "--server",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--rate",
        "3000",
        "--duration",
        secs,
        "--hot-skus",
        "3",
        "--stock",
        "40",
        "--mix",
        "commit=70,abandon=10,multi=20,pos=0,return=0,transfer=0,count=0",
        "--receipt-delay",
        "10s",
    ]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    let p = &report.phases[0];
    assert_eq!(p.mode, "open");
    assert!(
        p.rejections.get("insufficient_stock").copied().unwrap_or(0) > 0,
        "the hot SKUs sold out: {}",
        report.render()
    );
    assert!(p.send_lag.is_some());
    assert!(p.movements_per_s > 2000.0, "{}", report.render());
    server.shutdown().await.unwrap();
}

/// `--find-max` with tiny steps finds some rate that holds a generous bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_max_reports_the_highest_rate_that_held() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let a = args(&[
        "--server",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--find-max",
        "--rate",
        "1000",
        "--step-duration",
        "400ms",
        "--find-max-steps",
        "3",
        "--p99-max-ms",
        "500",
    ]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    let f = report.find_max.as_ref().unwrap();
    assert!(f.highest_rate_held.unwrap() >= 1000.0, "{}", report.render());
    assert_eq!(report.phases.len(), 3);
    server.shutdown().await.unwrap();
}

/// A server that goes away in the middle of a run: the run ends within a bound (requests are
/// abandoned and put in doubt, the verification cannot read the levels) instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_ends_the_run_within_a_bound() {
    if !slow_tests() {
        eprintln!("skipped: set PERPETUA_SLOW_TESTS=1 (takes about a minute)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let run = tokio::spawn(async move {
        let a = args(&[
            "--server",
            &addr,
            "--data-dir",
            &data_dir,
            "--duration",
            "4s",
            "--request-timeout",
            "1s",
            "--retries",
            "1",
        ]);
        execute(a).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // A graceful stop: in-flight requests are answered, then the endpoint closes and every
    // later request fails.
    tokio::spawn(server.shutdown());
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(150), run).await;
    let result = outcome.expect("the run ended within the bound").unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(150));
    match result {
        Err(e) => eprintln!("the run failed as it should: {e}"),
        Ok(report) => assert!(report.phases[0].errors > 0 || !report.passed(), "{}", report.render()),
    }
}
