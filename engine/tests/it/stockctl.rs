//! `stockd` and `stockctl` as a person uses them: stockd started in a folder, stockctl run in the
//! same folder (certificate and admin token from ./data), every movement kind, reads, settings,
//! tokens, watch, `--json` parsed, wrong token and role, and a clean stop on SIGTERM.

use crate::harness::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn ctl_env(dir: &Path, addr: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_stockctl"))
        .current_dir(dir)
        .env_remove("PERPETUA_TOKEN")
        .env_remove("PERPETUA_CA")
        .env_remove("PERPETUA_DATA_DIR")
        .envs(env.iter().copied())
        .arg("--server")
        .arg(addr.to_string())
        .args(args)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ctl(dir: &Path, addr: SocketAddr, args: &[&str]) -> Out {
    ctl_env(dir, addr, &[], args)
}

/// Runs a movement with --json; returns the outcome document after checking the exit status.
fn movement(dir: &Path, addr: SocketAddr, args: &[&str], accepted: bool) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(dir, addr, &all);
    assert_eq!(out.code, if accepted { 0 } else { 2 }, "{args:?}: {}{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["accepted"], accepted, "{v}");
    assert!(v["key"].as_str().is_some_and(|k| !k.is_empty()), "a key is generated: {v}");
    v
}

fn level(dir: &Path, addr: SocketAddr, sku: &str, loc: &str) -> Value {
    let out = ctl(dir, addr, &["--json", "level", sku, loc]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()
}

#[test]
fn stockctl_drives_every_movement_and_read_against_stockd_in_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr = free_udp_addr();
    let mut stockd = Stockd::spawn(d, addr, &[]);
    assert!(d.join("data/admin.token").exists() && d.join("data/tls/cert.pem").exists());

    let r = movement(d, addr, &["receive", "A", "dc", "10", "--unit-cost", "250", "--key", "rcv-1"], true);
    assert_eq!(r["key"], "rcv-1");
    let first_seq = r["seq"].as_u64().unwrap();
    // The same key again: the first outcome.
    let again = movement(d, addr, &["receive", "A", "dc", "10", "--unit-cost", "250", "--key", "rcv-1"], true);
    assert_eq!(again["seq"].as_u64(), Some(first_seq));
    movement(d, addr, &["expect", "A", "dc", "4", "--reference", "PO-9"], true);
    movement(d, addr, &["sell", "A", "dc", "2", "--unit-price", "999", "--channel", "web"], true);
    movement(d, addr, &["return", "A", "dc", "1", "--damaged"], true);
    movement(d, addr, &["adjust", "A", "dc", "-1", "--reason", "shrinkage"], true);
    let count = movement(d, addr, &["count", "A", "dc", "12"], true);
    assert_eq!(count["variance"], 4); // 10 - 2 + 1 - 1 = 8 counted as 12
    movement(d, addr, &["transfer", "A", "dc", "store-1", "2"], true);
    let hold = movement(d, addr, &["reserve", "A:dc:3@1500"], true)["hold"].as_u64().unwrap();
    movement(d, addr, &["commit", &hold.to_string()], true);
    let hold = movement(d, addr, &["reserve", "A:dc:1"], true)["hold"].as_u64().unwrap();
    movement(d, addr, &["release", &hold.to_string()], true);
    let rejected = movement(d, addr, &["sell", "A", "dc", "100"], false);
    assert_eq!(rejected["reason"], "insufficient_stock");
    let unknown = movement(d, addr, &["commit", "12345"], false);
    assert_eq!(unknown["reason"], "unknown_hold");

    // on_hand 12 - 2 transferred - 3 committed = 7; unsellable 1; incoming 4.
    let l = level(d, addr, "A", "dc");
    assert_eq!((l["on_hand"].as_i64(), l["unsellable"].as_i64(), l["incoming"].as_i64()), (Some(7), Some(1), Some(4)));
    assert_eq!(l["available"], 6);
    assert_eq!(level(d, addr, "A", "store-1")["on_hand"], 2);
    assert_eq!(level(d, addr, "A", "nowhere"), Value::Null);
    let of_sku = ctl(d, addr, &["--json", "level", "A"]).json();
    let locations: Vec<&str> = of_sku.as_array().unwrap().iter().map(|l| l["location"].as_str().unwrap()).collect();
    assert_eq!(locations, ["dc", "store-1"]);
    let levels = ctl(d, addr, &["--json", "levels"]).json();
    assert_eq!(levels.as_array().unwrap().len(), 2);
    let at_store = ctl(d, addr, &["--json", "levels", "--location", "store-1"]).json();
    assert_eq!(at_store[0]["sku"], "A");

    // Settings: set some, get them back, low stock follows the reorder point.
    let set = ctl(d, addr, &["--json", "settings", "set", "A", "dc", "--reorder-point", "6", "--lead-time-days", "3"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    let s = ctl(d, addr, &["--json", "settings", "get", "A", "dc"]).json();
    assert_eq!(
        (s["reorder_point"].as_i64(), s["lead_time_days"].as_i64(), s["safety_stock"].as_i64()),
        (Some(6), Some(3), Some(0))
    );
    let low = ctl(d, addr, &["--json", "low-stock"]).json();
    assert_eq!(low.as_array().unwrap().len(), 1);
    assert_eq!(low[0]["level"]["sku"], "A");
    ctl(d, addr, &["settings", "set", "A", "dc", "--reorder-point", "none"]);
    assert_eq!(ctl(d, addr, &["--json", "settings", "get", "A", "dc"]).json()["reorder_point"], Value::Null);

    // People's output.
    let table = ctl(d, addr, &["level", "A", "dc"]).stdout;
    assert!(table.starts_with("SKU  LOCATION  ON_HAND"), "{table}");
    assert!(table.contains("A    dc        7"), "{table}");
    let human = ctl(d, addr, &["sell", "A", "dc", "1"]);
    assert!(human.stdout.starts_with("accepted (seq "), "{}", human.stdout);

    // The feed from the start, as JSON lines.
    let watch = ctl(d, addr, &["--json", "watch", "--from", "1", "--count", "3"]);
    assert_eq!(watch.code, 0, "{}", watch.stderr);
    let events: Vec<Value> = watch.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"].as_u64(), Some(first_seq));
    assert_eq!(events[0]["kind"], "receive");
    assert_eq!(events[0]["levels"][0]["on_hand"], 10);

    // Tokens and roles.
    let created = ctl(d, addr, &["--json", "token", "create", "till-3", "--role", "checkout"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let created = created.json();
    let token = created["token"].as_str().unwrap().to_string();
    let list = ctl(d, addr, &["--json", "token", "list"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&token[12..]), "no secret in the list");
    let denied = ctl(d, addr, &["--token", &token, "receive", "A", "dc", "1"]);
    assert_eq!(denied.code, 1);
    assert!(denied.stderr.contains("forbidden") && denied.stderr.contains("checkout"), "{}", denied.stderr);
    let sold = ctl_env(d, addr, &[("PERPETUA_TOKEN", token.as_str())], &["--json", "sell", "A", "dc", "1"]);
    assert_eq!(sold.code, 0, "the token from the environment: {}", sold.stderr);
    let revoked = ctl(d, addr, &["token", "revoke", created["id"].as_str().unwrap()]);
    assert_eq!(revoked.code, 0);
    let bad = ctl(d, addr, &["--token", &token, "level", "A", "dc"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("unauthenticated"), "{}", bad.stderr);
    let bad = ctl(d, addr, &["--json", "--token", &token, "level", "A", "dc"]);
    assert_eq!(bad.json()["error"]["code"], "unauthenticated");

    // Elsewhere, with no flags: a clear error that says what to do.
    let empty = tempfile::tempdir().unwrap();
    let lost = ctl(empty.path(), addr, &["level", "A", "dc"]);
    assert_eq!(lost.code, 1);
    assert!(lost.stderr.contains("start stockd in this folder first, or pass --ca"), "{}", lost.stderr);
    // ...and with --data-dir pointing at the server's folder, it works from anywhere.
    let data = d.join("data");
    let remote = ctl(empty.path(), addr, &["--data-dir", data.to_str().unwrap(), "--json", "level", "A", "dc"]);
    assert_eq!(remote.code, 0, "{}", remote.stderr);

    let status = stockd.terminate();
    assert!(status.success(), "stockd exits 0 on SIGTERM: {status:?}");
    // Restarted, it recovers everything from its checkpoint.
    let _stockd = Stockd::spawn(d, addr, &[]);
    assert_eq!(level(d, addr, "A", "dc")["on_hand"], 5);
}

#[test]
fn stockd_help_explains_every_flag_and_a_config_file_agrees_with_the_flags() {
    let help = Command::new(env!("CARGO_BIN_EXE_stockd")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--shards",
        "--fsync",
        "--config",
        "--metrics-listen",
        "--frame-bytes-max",
        "--batch-movements-max",
        "--requests-in-flight-max",
        "--streams-max",
        "--connections-max",
        "--idle-timeout-ms",
        "--request-timeout-ms",
        "--feed-buffer-events-max",
        "--log-retention-bytes",
        "[default: 127.0.0.1:7400]",
        "[default: ./data]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let ctl_help = Command::new(env!("CARGO_BIN_EXE_stockctl")).arg("--help").output().unwrap();
    let ctl_help = String::from_utf8(ctl_help.stdout).unwrap();
    for word in ["receive", "low-stock", "watch", "token", "--server", "--ca", "--token", "--json"] {
        assert!(ctl_help.contains(word), "stockctl --help lacks {word}");
    }

    // A config file with a data directory and an address; a flag overrides the file's shards.
    let dir = tempfile::tempdir().unwrap();
    let addr = free_udp_addr();
    let data = dir.path().join("elsewhere");
    let file = dir.path().join("stockd.toml");
    std::fs::write(
        &file,
        format!("data_dir = {:?}\nlisten = \"{addr}\"\nshards = 3\nstreams_max = 9\n", data.to_str().unwrap()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockd"))
        .current_dir(dir.path())
        .args(["--config", file.to_str().unwrap(), "--metrics-listen", "off", "--shards", "1"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("listening on"))).unwrap().unwrap();
    assert!(listening.contains(&addr.to_string()), "{listening}");
    assert!(std::fs::read_to_string(data.join("engine.meta")).unwrap().contains("shards = 1"));
    let out = ctl(dir.path(), addr, &["--data-dir", data.to_str().unwrap(), "--json", "status"]);
    assert_eq!(out.json()["shards"], 1);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());

    // A bad file says what is wrong.
    std::fs::write(&file, "listen_on = 1\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_stockd")).args(["--config", file.to_str().unwrap()]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("listen_on"));
}
