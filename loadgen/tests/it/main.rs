//! Integration tests of `stock-loadgen`: short runs against real servers on loopback.
//!
//! - `engine`: a `stockd` started in-process (always run);
//! - `complex`: the same with lots, serial numbers, kits and channels;
//! - `determinism`: each complex-inventory option is deterministic for a seed;
//! - `units_check`: the complex-inventory verification catches crafted wrong states;
//! - `redis`: a `redis-server` started on a free port, when one is installed (skipped otherwise);
//! - `postgres`: the server at `LOADGEN_TEST_POSTGRES_URL`, when set (skipped otherwise).
//!
//! Longer runs are opt-in with `PERPETUA_SLOW_TESTS=1`.

mod complex;
mod determinism;
mod engine_target;
mod peers;
mod units_check;

use clap::Parser;
use engine::server::{Server, ServerConfig};
use loadgen::cli::Args;

/// Flags for a short run, plus `extra`.
pub fn args(extra: &[&str]) -> Args {
    let mut v = vec!["stock-loadgen", "--quiet", "--skus", "300", "--locations", "3"];
    if !extra.contains(&"--seed") {
        v.extend_from_slice(&["--seed", "7"]);
    }
    v.extend_from_slice(extra);
    Args::parse_from(v)
}

pub fn slow_tests() -> bool {
    std::env::var("PERPETUA_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// A `stockd` in-process on a free loopback port, 2 shards, no metrics listener.
pub async fn start_server(dir: &std::path::Path) -> Server {
    start_server_with(dir, |_| {}).await
}

/// [`start_server`] with settings changed by `change`.
pub async fn start_server_with(dir: &std::path::Path, change: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = None;
    config.engine.shards = 2;
    change(&mut config);
    Server::start(config).await.expect("stockd starts")
}
