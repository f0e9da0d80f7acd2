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

/// Runs stockctl against an in-process server whose data directory is `dir/data`.
fn run(dir: &Path, addr: SocketAddr, args: &[&str]) -> Out {
    ctl(dir, addr, args)
}

/// The key and sequence number an accepted movement printed for people.
fn accepted(out: &Out) -> (u64, String) {
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let line = out.stdout.lines().next().unwrap();
    let inner = line.strip_prefix("accepted (seq ").unwrap_or_else(|| panic!("not accepted: {line}"));
    let (seq, key) = inner.trim_end_matches(')').split_once(", key ").unwrap();
    (seq.parse().unwrap(), key.to_string())
}

/// The rejection line printed for people, without its sequence number and key.
fn rejection(out: &Out) -> String {
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let line = out.stdout.lines().next().unwrap();
    let (head, rest) = line.split_once(" (").unwrap();
    let (_, hint) = rest.split_once("): ").unwrap();
    format!("{head}: {hint}")
}

#[test]
fn stockctl_handles_lots_serials_allocations_and_kits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, clock) = crate::complex_wire::start_at_t0(&d.join("data"));
    let addr = server.addr;
    let t0 = crate::complex_wire::T0;

    // Lots: received out of expiry order, sold first to expire first.
    let (first, _) =
        accepted(&run(d, addr, &["receive", "MILK", "dc", "10", "--lot", "L2", "--expires", "2024-06-30"]));
    accepted(&run(d, addr, &["receive", "MILK", "dc", "5", "--lot", "L1", "--expires", "2024-03-31"]));
    accepted(&run(d, addr, &["receive", "MILK", "dc", "3"]));
    accepted(&run(d, addr, &["sell", "MILK", "dc", "7"]));
    accepted(&run(d, addr, &["receive", "MILK", "dc", "4", "--lot", "L3", "--expires", "2024-05-01T12:00:00+02:00"]));
    let lots = run(d, addr, &["lots", "MILK", "--location", "dc"]);
    assert_eq!(lots.code, 0, "{}", lots.stderr);
    assert_eq!(
        lots.stdout,
        "MILK at dc: on_hand 15, reserved 0, unsellable 0, available 15\n\
         LOT  EXPIRES                   ON_HAND  RESERVED  STATE\n\
         L3   2024-05-01T10:00:00Z      4        0         sellable\n\
         L2   2024-06-30T23:59:59.999Z  8        0         sellable\n\
         loose (in no lot): 3\n\
         no channel allocations\n"
    );
    let json = run(d, addr, &["--json", "lots", "MILK", "--location", "dc"]).json();
    assert_eq!(
        json,
        serde_json::json!({
            "level": {"sku": "MILK", "location": "dc", "on_hand": 15, "reserved": 0, "unsellable": 0, "incoming": 0,
                "safety_stock": 0, "available": 15},
            "lots": [
                {"lot": "L3", "expires_at": 1_714_557_600_000u64, "expires": "2024-05-01T10:00:00Z", "on_hand": 4,
                    "reserved": 0, "expired": false},
                {"lot": "L2", "expires_at": 1_719_791_999_999u64, "expires": "2024-06-30T23:59:59.999Z", "on_hand": 8,
                    "reserved": 0, "expired": false},
            ],
            "loose_on_hand": 3,
            "allocations": [],
        })
    );
    assert_eq!(
        run(d, addr, &["lots", "MILK", "--location", "nowhere"]).stdout,
        "no level for MILK at nowhere (nothing was ever recorded there)\n"
    );
    assert_eq!(
        rejection(&run(d, addr, &["count", "MILK", "dc", "20"])),
        "rejected: lot_required: the level has lots: name the lot counted with --lot"
    );
    let counted = run(d, addr, &["--json", "count", "MILK", "dc", "6", "--lot", "L3"]).json();
    assert_eq!(counted["variance"], 2);
    assert_eq!(
        rejection(&run(d, addr, &["receive", "MILK", "dc", "1", "--lot", "L9"])),
        "rejected: invalid_lot: a lot new to this SKU needs --expires DATE, a known lot keeps its expiry (leave \
         --expires out); serial-tracked SKUs and kits take no --lot; at most 64 lots per level"
    );
    let refused = run(d, addr, &["--json", "sell", "MILK", "dc", "1", "--lot", "L1"]);
    assert_eq!(refused.code, 2);
    assert_eq!(refused.json()["reason"], "unknown_lot");
    assert!(refused.json()["hint"].as_str().unwrap().contains("stockctl lots SKU --location LOCATION"));
    let bad_date = run(d, addr, &["receive", "MILK", "dc", "1", "--lot", "L9", "--expires", "2024-02-30"]);
    assert_eq!(bad_date.code, 2, "clap refuses it before connecting");
    assert!(bad_date.stderr.contains("\"2024-02-30\" is not a date: give YYYY-MM-DD"), "{}", bad_date.stderr);

    // Serial numbers: repeated and comma-separated, the quantity is their number.
    let set = run(d, addr, &["sku-settings", "PHONE", "--serial-tracked", "true"]);
    accepted(&set);
    assert!(
        set.stdout.ends_with(
            "settings of SKU PHONE:\n  serial_tracked       true\n  expiry_warning_days  -\n  kit                  - (not a kit)\n"
        ),
        "{}",
        set.stdout
    );
    let (received, _) =
        accepted(&run(d, addr, &["receive", "PHONE", "dc", "--serial", "SN-1,SN-2", "--serial", "SN-3"]));
    assert_eq!(run(d, addr, &["--json", "level", "PHONE", "dc"]).json()["on_hand"], 3);
    let (sold, _) = accepted(&run(d, addr, &["sell", "PHONE", "dc", "--serial", "SN-2"]));
    assert_eq!(
        rejection(&run(d, addr, &["sell", "PHONE", "dc", "--serial", "SN-2"])),
        "rejected: serial_not_in_stock: a serial number is not in stock at this location (unknown, sold, elsewhere \
         or held): check it with `stockctl serial SKU SERIAL`"
    );
    let (returned, _) = accepted(&run(d, addr, &["return", "PHONE", "dc", "--serial", "SN-2"]));
    let (moved, _) = accepted(&run(d, addr, &["transfer", "PHONE", "dc", "store", "--serial", "SN-2"]));
    let serial = run(d, addr, &["serial", "PHONE", "SN-2"]);
    assert_eq!(
        serial.stdout,
        format!(
            "PHONE SN-2: in stock, at store\n\
             SEQ  TIME                  WHAT      LOCATION\n\
             {received:<3}  2023-11-14T22:13:20Z  receive   dc\n\
             {sold:<3}  2023-11-14T22:13:20Z  sell      dc\n\
             {returned:<3}  2023-11-14T22:13:20Z  return    dc\n\
             {moved:<3}  2023-11-14T22:13:20Z  transfer  store\n"
        )
    );
    let serial = run(d, addr, &["--json", "serial", "PHONE", "SN-1"]).json();
    assert_eq!(
        serial,
        serde_json::json!({"sku": "PHONE", "serial": "SN-1", "location": "dc", "status": "in_stock", "hold": null,
            "history": [{"seq": received, "at": t0, "time": "2023-11-14T22:13:20Z", "what": "receive", "location": "dc"}]})
    );
    assert_eq!(
        run(d, addr, &["serial", "PHONE", "SN-9"]).stdout,
        "no serial number SN-9 of PHONE (the engine never saw it)\n"
    );
    assert_eq!(run(d, addr, &["--json", "serial", "PHONE", "SN-9"]).stdout, "null\n");
    let none = run(d, addr, &["receive", "PHONE", "dc"]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("give QTY, or name the serial numbers with --serial"), "{}", none.stderr);

    // Allocations between two channels.
    accepted(&run(d, addr, &["receive", "B", "dc", "10"]));
    accepted(&run(d, addr, &["allocate", "B", "--location", "dc", "--channel", "web", "--qty", "6"]));
    accepted(&run(d, addr, &["allocate", "B", "--location", "dc", "--channel", "pos", "--qty", "3"]));
    let available = run(d, addr, &["available", "B", "--location", "dc", "--channel", "web"]);
    assert_eq!(available.stdout, "B at dc for channel web: 7 available\n");
    let available = run(d, addr, &["--json", "available", "B", "--location", "dc", "--channel", "erp"]).json();
    assert_eq!(available, serde_json::json!({"sku": "B", "location": "dc", "channel": "erp", "available": 1}));
    assert_eq!(
        rejection(&run(d, addr, &["sell", "B", "dc", "5", "--channel", "pos"])),
        "rejected: insufficient_stock: not enough available stock (for this --channel, where others have \
         allocations): check `stockctl level` and `stockctl available`"
    );
    accepted(&run(d, addr, &["sell", "B", "dc", "4", "--channel", "pos"]));
    assert_eq!(
        run(d, addr, &["lots", "B", "--location", "dc"]).stdout,
        "B at dc: on_hand 6, reserved 0, unsellable 0, available 6\nno lots\nloose (in no lot): 6\n\
         CHANNEL  ALLOCATED\nweb      6\npos      0\n"
    );

    // Kits: defined, listed, sold (components move), refused whole when a component is short.
    accepted(&run(d, addr, &["receive", "SOAP", "dc", "10"]));
    accepted(&run(d, addr, &["receive", "CREAM", "dc", "3"]));
    accepted(&run(d, addr, &["sku-settings", "GIFT", "--kit", "SOAP:2,CREAM:1"]));
    assert_eq!(
        run(d, addr, &["sku-settings", "GIFT"]).stdout,
        "settings of SKU GIFT:\n  serial_tracked       false\n  expiry_warning_days  -\n  kit                  SOAP:2,CREAM:1\n"
    );
    assert_eq!(
        run(d, addr, &["--json", "sku-settings", "GIFT"]).json(),
        serde_json::json!({"serial_tracked": false, "expiry_warning_days": null,
            "components": [{"sku": "SOAP", "qty": 2}, {"sku": "CREAM", "qty": 1}]})
    );
    assert_eq!(
        run(d, addr, &["level", "GIFT", "dc"]).stdout,
        "SKU   LOCATION  ON_HAND  RESERVED  UNSELLABLE  INCOMING  SAFETY  AVAILABLE\n\
         GIFT  dc        3        0         0           0         0       3\n"
    );
    let (kit_sale, _) = accepted(&run(d, addr, &["sell", "GIFT", "dc", "2"]));
    assert_eq!(run(d, addr, &["--json", "level", "SOAP", "dc"]).json()["on_hand"], 6);
    assert_eq!(run(d, addr, &["--json", "level", "CREAM", "dc"]).json()["on_hand"], 1);
    assert_eq!(run(d, addr, &["--json", "level", "GIFT", "dc"]).json()["available"], 1);
    assert_eq!(rejection(&run(d, addr, &["sell", "GIFT", "dc", "2"])).split(':').nth(1), Some(" insufficient_stock"));
    assert_eq!(run(d, addr, &["--json", "level", "SOAP", "dc"]).json()["on_hand"], 6, "nothing moved");
    assert_eq!(
        rejection(&run(d, addr, &["receive", "GIFT", "dc", "1"])),
        "rejected: kit_not_stocked: a kit has no stock of its own: receive, count, move or allocate its components \
         (`stockctl sku-settings KIT` lists them)"
    );
    assert_eq!(
        run(d, addr, &["lots", "GIFT", "--location", "dc"]).stdout,
        "GIFT is a kit: it has no stock of its own (see its components' lots)\n"
    );
    accepted(&run(d, addr, &["sku-settings", "GIFT", "--no-kit"]));
    assert_eq!(run(d, addr, &["--json", "sku-settings", "GIFT"]).json()["components"], serde_json::json!([]));

    // Lot alerts and the new movements on `watch`.
    accepted(&run(d, addr, &["sku-settings", "FRESH", "--expiry-warning-days", "1"]));
    let (fresh, _) =
        accepted(&run(d, addr, &["receive", "FRESH", "dc", "4", "--lot", "F1", "--expires", "2023-11-16T22:13:20Z"]));
    clock.store(t0 + 86_400_000 + 1_000, std::sync::atomic::Ordering::Relaxed);
    let warned = run(d, addr, &["watch", "--alerts", "--from", &fresh.to_string(), "--count", "1"]);
    assert_eq!(warned.code, 0, "{}", warned.stderr);
    let line = warned.stdout.lines().next().unwrap();
    assert!(
        line.ends_with(" ALERT lot_expiring FRESH@dc: lot F1 expires at 2023-11-16T22:13:20Z; 4 unit(s) in it"),
        "{line}"
    );
    let warned_seq: u64 = line[1..line.find(' ').unwrap()].parse().unwrap();
    clock.store(t0 + 2 * 86_400_000 + 1_000, std::sync::atomic::Ordering::Relaxed);
    let expired = run(d, addr, &["watch", "--alerts", "--from", &(warned_seq + 1).to_string(), "--count", "1"]);
    let line = expired.stdout.lines().next().unwrap();
    assert!(
        line.ends_with(" ALERT lot_expired FRESH@dc: lot F1 expired at 2023-11-16T22:13:20Z; 4 unit(s) now unsellable"),
        "{line}"
    );
    let json = run(d, addr, &["--json", "watch", "--alerts", "--from", &(warned_seq + 1).to_string(), "--count", "1"]);
    let event = json.json();
    assert_eq!(
        event["alerts"][0],
        serde_json::json!({"kind": "lot_expired", "sku": "FRESH", "location": "dc", "available": 4,
            "reorder_point": null, "lot": {"lot": "F1", "expires_at": 1_700_172_800_000u64, "expires": "2023-11-16T22:13:20Z"}})
    );
    assert_eq!(event["lots"][0]["expired"], true);

    let watch = run(d, addr, &["watch", "--from", &first.to_string(), "--count", "4"]);
    assert_eq!(watch.code, 0, "{}", watch.stderr);
    let lines: Vec<&str> = watch.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "#{first} [cli] receive 10 MILK@dc lot L2 (expires 2024-06-30T23:59:59.999Z): ok -> MILK@dc on_hand 10 \
             available 10; MILK@dc lot L2 on_hand 10"
        )
    );
    assert!(
        lines[3].ends_with(
            "[cli] sell 7 MILK@dc: ok -> MILK@dc on_hand 11 available 11; MILK@dc lot L1 on_hand 0; MILK@dc lot L2 \
             on_hand 8"
        ),
        "{}",
        lines[3]
    );
    let from_sale = (kit_sale - 3).to_string();
    let kit = run(d, addr, &["watch", "--from", &from_sale, "--count", "6"]).stdout;
    assert!(kit.contains("(for 2 kit(s) GIFT)"), "{kit}");
    let phone = run(d, addr, &["watch", "--from", &received.to_string(), "--count", "1"]).stdout;
    assert!(phone.contains("receive 3 PHONE@dc serials SN-1,SN-2,SN-3: ok"), "{phone}");
    drop(server);
}
