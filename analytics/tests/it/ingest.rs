//! Ingest from a real `stockd` (in-process, on loopback) under load, with the `stock-analytics`
//! process killed (SIGKILL) at random moments and restarted; then `import --wal` of the same
//! log into another folder. Both must give exactly the rows of the engine's log: no gap, no
//! duplicate, read back with the parquet crate's own reader.

use crate::common::{expected_rows, read_movement_rows, slow_tests};
use engine::core::*;
use engine::runtime::Engine;
use engine::server::{Server, ServerConfig};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A server on a multi-thread runtime owned by the test, so that the test's threads can borrow
/// its engine.
pub(crate) struct Running {
    rt: tokio::runtime::Runtime,
    server: Server,
}

impl Running {
    pub(crate) fn start(dir: &Path) -> Running {
        let mut c = ServerConfig::new(dir);
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.metrics_listen = None;
        c.engine.shards = 2;
        c.engine.fsync = engine::runtime::Fsync::Never;
        c.engine.segment_bytes_max = 256 * 1024; // several segments
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(Server::start(c)).expect("the server starts");
        Running { rt, server }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub(crate) fn engine(&self) -> &Engine {
        self.server.engine()
    }

    /// Graceful shutdown (the engine writes a checkpoint).
    pub(crate) fn stop(self) {
        let Running { rt, server } = self;
        rt.block_on(server.shutdown()).unwrap();
    }
}

pub(crate) fn mv(kind: MovementKind, channel: &str) -> Movement {
    Movement { key: None, channel: channel.into(), reference: None, occurred_at: None, kind }
}

/// Receives (some into lots), sells (first-expiry-first-out over the lots; some against holds;
/// some of a kit), transfers, counts and settings on a few SKUs, until `stop` or `max_batches`.
fn load(engine: &Engine, stop: &AtomicBool, max_batches: usize, seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let skus: Vec<String> = (0..20).map(|i| format!("SKU-{i:02}")).collect();
    let locs = ["dc", "store-1"];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Lot LOT-k expires k days after a month from now, for every SKU (a lot's expiry is fixed).
    let lot_expiry = |k: u64| now + (30 + k) * 86_400_000;
    let components = vec![Component { sku: skus[0].clone(), qty: 1 }, Component { sku: skus[1].clone(), qty: 2 }];
    let kit = SkuSettings { components, ..SkuSettings::default() };
    let set_kit = engine.execute_one(mv(MovementKind::SetSkuSettings { sku: "KIT-A".into(), settings: kit }, "admin"));
    assert!(set_kit.outcome.is_ok(), "{:?}", set_kit.outcome);
    let mut submitted = 1;
    for b in 0..max_batches {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut batch = Vec::new();
        for _ in 0..20 {
            let sku = skus[rng.gen_range(0..skus.len())].clone();
            let location = locs[rng.gen_range(0..2)].to_string();
            let kind = match rng.gen_range(0..12) {
                0 | 1 => MovementKind::Receive {
                    sku,
                    location,
                    qty: rng.gen_range(5..50),
                    unit_cost: Some(100),
                    units: Units::ANY,
                },
                10 => {
                    let k = rng.gen_range(0..3);
                    MovementKind::Receive {
                        sku,
                        location,
                        qty: rng.gen_range(5..20),
                        unit_cost: Some(90),
                        units: Units::new_lot(&format!("LOT-{k}"), lot_expiry(k)),
                    }
                }
                11 => MovementKind::Sell {
                    sku: "KIT-A".into(),
                    location,
                    qty: 1,
                    unit_price: Some(2500),
                    hold: None,
                    allow_negative: false,
                    units: Units::ANY,
                },
                2 => MovementKind::Transfer { sku, from: "dc".into(), to: "store-1".into(), qty: 1, units: Units::ANY },
                3 => MovementKind::Count { sku, location, counted: rng.gen_range(0..30), units: Units::ANY },
                4 if b % 10 == 0 => MovementKind::SetSettings {
                    sku,
                    location,
                    settings: Settings { reorder_point: Some(5), lead_time_days: 3, ..Settings::default() },
                },
                _ => MovementKind::Sell {
                    sku,
                    location,
                    qty: rng.gen_range(1..4),
                    unit_price: Some(999),
                    hold: None,
                    allow_negative: rng.gen_bool(0.1),
                    units: Units::ANY,
                },
            };
            batch.push(mv(kind, ["web", "pos"][rng.gen_range(0..2)]));
        }
        submitted += engine.execute(batch).len() as u64;
        // A checkout: hold, then commit or release.
        let sku = skus[rng.gen_range(0..skus.len())].clone();
        let line = Line {
            sku: sku.clone(),
            location: "dc".into(),
            qty: 1,
            unit_price: Some(1500),
            kit: None,
            units: Units::ANY,
        };
        let hold = mv(MovementKind::Reserve { hold: 0, lines: vec![line], expires_at: u64::MAX / 2 }, "web");
        if let Ok(Detail::Hold(h)) = engine.execute_one(hold).outcome {
            let end =
                if rng.gen_bool(0.7) { MovementKind::Commit { hold: h } } else { MovementKind::Release { hold: h } };
            engine.execute_one(mv(end, "web"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    submitted
}

pub(crate) fn analytics(snapshots: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stock-analytics"));
    c.arg("--snapshots").arg(snapshots).stdin(Stdio::null());
    c
}

#[test]
fn killed_ingesters_resume_with_no_gap_and_no_duplicate_and_import_agrees() {
    let slow = slow_tests();
    let (rounds, batches) = if slow { (25, 5_000) } else { (4, 400) };
    let data = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    let server = Running::start(data.path());
    let addr = server.addr().to_string();
    let stop = AtomicBool::new(false);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let ingest = |once: bool| {
        let mut c = analytics(snaps.path());
        c.args(["ingest", "--server", &addr, "--data-dir"]).arg(data.path());
        c.args(["--flush-every", "20ms", "--chunk-rows", "150", "--levels-every", "0", "--quiet"]);
        if once {
            c.arg("--once");
        }
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let mut kills = 0;
    let submitted = std::thread::scope(|scope| {
        let loader = scope.spawn(|| load(server.engine(), &stop, batches, 7));
        for _ in 0..rounds {
            let mut child = ingest(false).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rng.gen_range(150..700)));
            if let Ok(Some(status)) = child.try_wait() {
                let out = child.wait_with_output().unwrap();
                panic!("the ingester stopped by itself ({status}): {}", String::from_utf8_lossy(&out.stderr));
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        stop.store(true, Ordering::Relaxed);
        loader.join().unwrap()
    });
    assert!(submitted > 0);
    // Catch up to the end.
    let started = Instant::now();
    let out = ingest(true).output().unwrap();
    assert!(out.status.success(), "ingest --once: {}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(60));
    let expected = expected_rows(server.engine());
    let got = read_movement_rows(snaps.path());
    assert!(!expected.is_empty());
    // The load took lots first-expiry-first-out (some takes spanning lots) and sold kits.
    let lots_taken = expected.iter().filter(|r| r.2 == "sell" && r.6.is_some()).count();
    let across_lots = expected.iter().filter(|r| r.6.as_deref().is_some_and(|l| l.contains(';'))).count();
    let kit_rows = expected.iter().filter(|r| r.2 == "commit" && r.7.is_some()).count();
    eprintln!("{lots_taken} sells from lots, {across_lots} rows across lots, {kit_rows} kit commit rows");
    assert!(lots_taken > 0 && across_lots > 0 && kit_rows > 0, "{lots_taken} {across_lots} {kit_rows}");
    let mut dedup = got.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), got.len(), "duplicate rows after {kills} kills");
    if got != expected {
        let missing: Vec<_> = expected.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !expected.contains(r)).take(5).collect();
        panic!("{} rows, expected {}; missing {missing:?}; extra {extra:?}", got.len(), expected.len());
    }

    // A levels snapshot on demand holds every level of the engine; `settings` has the newest
    // settings of every level that was given some.
    let addr_arg = server.addr().to_string();
    let out = analytics(snaps.path())
        .args(["levels", "--server", &addr_arg, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "levels: {}", String::from_utf8_lossy(&out.stderr));
    let count = |sql: &str| {
        let out = analytics(snaps.path()).args(["--format", "csv", "sql", sql]).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().parse::<usize>().unwrap()
    };
    assert_eq!(count("SELECT count(*) FROM levels"), server.engine().levels(None).len());
    let with_settings = server
        .engine()
        .levels(None)
        .iter()
        .filter(|l| server.engine().settings(&l.sku, &l.location).is_some_and(|s| s.reorder_point.is_some()))
        .count();
    assert_eq!(count("SELECT count(*) FROM settings WHERE reorder_point IS NOT NULL"), with_settings);

    // Another reader: pyarrow, where it is installed (the script says when it skips).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_with_pyarrow.py");
    if let Ok(out) =
        Command::new("python3").arg(&script).arg(snaps.path()).arg(env!("CARGO_BIN_EXE_stock-analytics")).output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "pyarrow disagrees: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("3 passed, 0 failed") || text.contains("skipped"), "{text}");
    }

    // The same log, imported from the stopped engine's data directory, gives the same rows.
    server.stop();
    let imported = tempfile::tempdir().unwrap();
    let out = analytics(imported.path())
        .args(["import", "--quiet", "--chunk-rows", "1000", "--wal"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_movement_rows(imported.path()), expected);
    // Importing again finds nothing new and duplicates nothing.
    let out = analytics(imported.path()).args(["import", "--quiet", "--wal"]).arg(data.path()).output().unwrap();
    assert!(out.status.success(), "second import: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_movement_rows(imported.path()), expected);
    // The levels snapshot of the import: as many levels as the engine had, and SQL can count rows.
    let out = analytics(imported.path())
        .args(["--format", "csv", "sql", "SELECT count(*) AS n FROM movements"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sql: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n\n{}\n", expected.len()));
}
