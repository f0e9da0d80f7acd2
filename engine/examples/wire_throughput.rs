//! A quick measurement of the client -> server path: movements per second over QUIC with many
//! requests in flight, one movement per request or batches. Not the load generator (that is
//! `stock-loadgen`); a check of the wire and the server.
//!
//! ```text
//! stockd --fsync always &        # in some folder
//! cargo run --release --example wire_throughput -- --batch 1 --connections 2 --in-flight 256 --seconds 5
//! ```

use clap::Parser;
use engine::client::ConnectArgs;
use engine::core::Units;
use engine::core::{Movement, MovementKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Movements per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Connections (one client each).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Distinct SKUs.
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// Give every movement an idempotency key.
    #[arg(long)]
    keys: bool,
    /// Tokio worker threads (0: current-thread runtime).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let rt = if args.threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build().unwrap()
    };
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    let mut clients = Vec::new();
    for c in 0..args.connections {
        let client = Arc::new(args.connect.connect().await.expect("connects"));
        clients.push(client.clone());
        for t in 0..args.in_flight {
            let (client, done, stop) = (client.clone(), done.clone(), stop.clone());
            let (batch, skus, keys) = (args.batch, args.skus, args.keys);
            n += 1;
            let seed = n;
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let movements: Vec<Movement> = (0..batch)
                        .map(|j| {
                            i += 1;
                            let sku = format!("SKU-{}", (seed * 7919 + i * 31 + j as u64) % skus as u64);
                            Movement {
                                key: keys.then(|| format!("c{c}-t{t}-{i}")),
                                channel: "web".into(),
                                reference: None,
                                occurred_at: None,
                                kind: MovementKind::Receive {
                                    sku,
                                    location: "dc".into(),
                                    qty: 1,
                                    unit_cost: None,
                                    units: Units::ANY,
                                },
                            }
                        })
                        .collect();
                    match client.submit(&movements).await {
                        Ok(r) => {
                            done.fetch_add(r.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            return;
                        }
                    }
                }
            }));
        }
    }
    // Warm up one second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = done.load(Ordering::Relaxed);
    let stats_before: Vec<_> = clients.iter().map(|c| c.connection_stats()).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    let (mut tx, mut rx, mut tx_ios, mut rx_ios) = (0, 0, 0, 0);
    for (c, before) in clients.iter().zip(&stats_before) {
        let s = c.connection_stats();
        tx += s.udp_tx.datagrams - before.udp_tx.datagrams;
        rx += s.udp_rx.datagrams - before.udp_rx.datagrams;
        tx_ios += s.udp_tx.ios - before.udp_tx.ios;
        rx_ios += s.udp_rx.ios - before.udp_rx.ios;
    }
    println!(
        "client: {:.0} datagrams/s sent in {:.0} sends, {:.0} received in {:.0} receives; path MTU {}",
        tx as f64 / elapsed,
        tx_ios as f64 / elapsed,
        rx as f64 / elapsed,
        rx_ios as f64 / elapsed,
        clients[0].connection_stats().path.current_mtu
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "{:.0} movements/s ({} requests of {} movement(s), {} connections x {} in flight, {:.1} s)",
        count as f64 / elapsed,
        count / args.batch as u64,
        args.batch,
        args.connections,
        args.in_flight,
        elapsed
    );
}
