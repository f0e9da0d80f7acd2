//! The same short run against Redis and PostgreSQL, when they are available here.

use crate::args;
use loadgen::run::execute;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` with `appendfsync always` in a temporary directory, or `None` (and why).
fn start_redis() -> Result<RedisServer, String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir", dir.path().to_str().unwrap()])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server is not available ({e}); install it to run this test"))?;
    let server = RedisServer { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_against_redis_passes_verification() {
    let redis = match start_redis() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let a =
        args(&["--target", &url, "--operations", "3000", "--batch", "3", "--concurrency", "16", "--connections", "2"]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    assert!(report.target.durable, "appendfsync always is reported as durable: {:?}", report.target);
    let v = report.verification.as_ref().unwrap();
    assert_eq!(v.levels_checked, 900);
    let h = v.history.as_ref().expect("takes checked from the scripts' replies");
    assert!(h.takes_checked > 1000 && h.violations == 0, "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_against_postgres_passes_verification() {
    let Ok(url) = std::env::var("LOADGEN_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set LOADGEN_TEST_POSTGRES_URL=postgres://USER@HOST:PORT/DB to run against PostgreSQL");
        return;
    };
    let a =
        args(&["--target", &url, "--operations", "2000", "--batch", "3", "--concurrency", "16", "--connections", "4"]);
    let report = execute(a).await.expect("the run completes");
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.verification.as_ref().unwrap().levels_checked, 900);
}
