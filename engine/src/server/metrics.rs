//! Server counters and their Prometheus text page, served over plain HTTP on a loopback port.
//!
//! Counters are relaxed atomics bumped on the request path; the page is rendered on demand.

use crate::core::{MovementKind, Reason};
use crate::protocol::ErrorCode;
use crate::runtime::Engine;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KINDS: [&str; 15] = MovementKind::NAMES;
const REASONS: [Reason; 25] = Reason::ALL;

/// Upper bounds of the acknowledgement latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

/// Counters of one server.
#[derive(Default)]
pub struct Metrics {
    movements: [AtomicU64; KINDS.len()],
    rejections: [AtomicU64; REASONS.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    requests: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    pub connections: AtomicI64,
    pub connections_accepted: AtomicU64,
    pub feed_subscribers: AtomicI64,
    pub feed_events_sent: AtomicU64,
}

impl Metrics {
    pub fn movement(&self, kind: &MovementKind) {
        self.movements[kind.index()].fetch_add(1, Relaxed);
    }

    pub fn rejection(&self, reason: Reason) {
        self.rejections[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// A request answered after `latency`.
    pub fn request_done(&self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let bucket = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every counter, with the engine's.
    pub fn render(&self, engine: &Engine) -> String {
        let mut s = String::with_capacity(8192);
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(&mut s, "perpetua_movements_total", "counter", "Movements received, by kind.");
        for (name, c) in KINDS.iter().zip(&self.movements) {
            let _ = writeln!(s, "perpetua_movements_total{{kind=\"{name}\"}} {}", c.load(Relaxed));
        }
        head(&mut s, "perpetua_rejections_total", "counter", "Movements rejected by the engine, by reason.");
        for (r, c) in REASONS.iter().zip(&self.rejections) {
            let _ = writeln!(s, "perpetua_rejections_total{{reason=\"{}\"}} {}", r.code(), c.load(Relaxed));
        }
        head(&mut s, "perpetua_request_errors_total", "counter", "Requests refused before the engine, by code.");
        for (code, c) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(s, "perpetua_request_errors_total{{code=\"{code}\"}} {}", c.load(Relaxed));
        }
        head(
            &mut s,
            "perpetua_ack_latency_seconds",
            "histogram",
            "Time from a request's arrival to its answer (for movements: durable and decided).",
        );
        let mut cumulative = 0;
        for (i, c) in self.latency_buckets.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match LATENCY_BUCKETS_US.get(i) {
                Some(b) => {
                    let _ =
                        writeln!(s, "perpetua_ack_latency_seconds_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1e6);
                }
                None => {
                    let _ = writeln!(s, "perpetua_ack_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(s, "perpetua_ack_latency_seconds_sum {}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "perpetua_ack_latency_seconds_count {cumulative}");
        let stats = engine.stats();
        head(&mut s, "perpetua_shard_queue_depth", "gauge", "Messages waiting in each shard's queue.");
        for (i, d) in stats.shard_queue_depths.iter().take(engine.shard_count()).enumerate() {
            let _ = writeln!(s, "perpetua_shard_queue_depth{{shard=\"{i}\"}} {d}");
        }
        let gauges: [(&str, &str, &str, i64); 9] = [
            ("perpetua_requests_total", "counter", "Requests answered.", self.requests.load(Relaxed) as i64),
            ("perpetua_connections", "gauge", "Open client connections.", self.connections.load(Relaxed)),
            (
                "perpetua_connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.connections_accepted.load(Relaxed) as i64,
            ),
            ("perpetua_feed_subscribers", "gauge", "Change-feed subscribers.", self.feed_subscribers.load(Relaxed)),
            (
                "perpetua_feed_events_sent_total",
                "counter",
                "Change-feed events sent.",
                self.feed_events_sent.load(Relaxed) as i64,
            ),
            ("perpetua_log_bytes_total", "counter", "Bytes written to the log.", stats.log_bytes as i64),
            ("perpetua_log_fsyncs_total", "counter", "Log syncs (fdatasync).", stats.log_syncs as i64),
            ("perpetua_durable_seq", "gauge", "Highest durable sequence number.", stats.durable_seq as i64),
            ("perpetua_shards", "gauge", "Shards of the engine.", engine.shard_count() as i64),
        ];
        for (name, kind, help, v) in gauges {
            head(&mut s, name, kind, help);
            let _ = writeln!(s, "{name} {v}");
        }
        s
    }
}

/// Serves `GET /metrics` until the listener is dropped with the task.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, engine: Arc<super::EngineCell>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let (metrics, engine) = (metrics.clone(), engine.clone());
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            });
            if !matches!(read.await, Ok(true)) {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
                ("200 OK", metrics.render(&engine))
            } else {
                ("404 Not Found", "not found: try GET /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
