//! Complex inventory against a real `stockd` on loopback: lots, serial numbers, kits and channels
//! with allocations, all at once, pass the end-of-run verification.

use crate::{args, slow_tests, start_server};
use loadgen::run::execute;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lots_serials_kits_and_channels_pass_verification_against_stockd() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let addr = server.local_addr().to_string();
    let ops = if slow_tests() { "40000" } else { "5000" };
    let a = args(&[
        "--server",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--operations",
        ops,
        "--batch",
        "4",
        "--concurrency",
        "32",
        "--connections",
        "2",
        "--stock",
        "60",
        "--lots",
        "4",
        "--serial-share",
        "0.1",
        "--kits",
        "5",
        "--channels",
        "web,amazon",
    ]);
    let report = execute(a).await.expect("the run completes");
    let text = report.render();
    let v = report.verification.as_ref().expect("verified");
    assert!(v.passed, "{text}");
    let u = v.units.as_ref().expect("complex inventory verified");
    assert!(u.not_checked.is_empty(), "{text}");
    assert!(u.levels_checked > 300 && u.allocation_levels_checked == 300, "{text}");
    assert!(u.serials_checked > 500 && u.serials_coverage == "all", "{text}");
    assert_eq!(u.settings_checked as usize, 5 + report.complex.as_ref().unwrap().serial_skus, "{text}");
    let replay = u.allocation_replay.as_ref().expect("channel sales replayed from the feed");
    assert!(replay.complete && replay.takes > 100 && replay.violations == 0, "{text}");
    let c = report.complex.as_ref().expect("complex inventory reported");
    for kind in ["reserve_kit", "commit_kit", "lot_named", "serials_named", "return_serial"] {
        assert!(c.counts.movements.get(kind).is_some_and(|k| k.accepted > 0), "no accepted {kind}: {text}");
    }
    assert!(c.counts.channels["amazon"].units_sold > 0 && c.counts.channels["web"].units_sold > 0, "{text}");
    assert_eq!(c.counts.seeded["allocate"], 300, "{text}");
    assert!(c.rejections.contains_key("unknown_lot") && c.rejections.contains_key("serial_not_in_stock"), "{text}");
    let p = &report.phases[0];
    assert!(p.latency.contains_key("reserve_kit"), "{text}");
    assert_eq!(report.left_in_doubt, 0);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["complex"]["counts"]["movements"]["reserve_kit"]["accepted"].as_u64().unwrap() > 0);
    assert!(json["verification"]["units"]["passed"].as_bool().unwrap());
    eprintln!("{text}");
    server.shutdown().await.unwrap();
}

/// Redis and PostgreSQL keep plain levels: the options are refused with a message that says so.
#[tokio::test]
async fn complex_inventory_is_refused_for_other_targets() {
    for target in ["redis://127.0.0.1:1", "postgres://x@127.0.0.1:1/db"] {
        let e = match execute(args(&["--target", target, "--lots", "2"])).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{target} accepted --lots"),
        };
        assert!(e.contains("Perpetua-only") && e.contains("--lots"), "{e}");
    }
    let e = execute(args(&["--kits", "2", "--no-seed"])).await.expect_err("refused").to_string();
    assert!(e.contains("--no-seed"), "{e}");
}
