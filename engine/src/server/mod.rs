//! `stockd` as a library: a QUIC endpoint in front of an [`Engine`], with token authentication,
//! TLS, limits, a change feed and a metrics page. `src/bin/stockd.rs` only parses flags and
//! calls [`Server::start`].
//!
//! API boundary: [`Server`] (start, addresses, graceful shutdown) and [`ServerConfig`]. The
//! wire format is in [`crate::protocol`] and `docs/protocol.md`.
//!
//! Architecture invariant: no tokio worker blocks on the engine: movements are awaited with
//! `Submission::wait_async`, reads with `query_async`, and the blocking change feed runs on
//! threads of its own behind bounded buffers.

pub mod auth;
pub mod config;
mod conn;
mod feed;
pub mod metrics;
pub mod tls;

pub use config::{FsyncMode, RuntimeKind, ServerConfig, Settings};

use crate::protocol::{ErrorCode, Limits};
use crate::runtime::Engine;
use auth::TokenStore;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a graceful shutdown waits for connections to finish what they have in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// "stockd VERSION".
pub fn server_name() -> String {
    format!("stockd {}", env!("CARGO_PKG_VERSION"))
}

/// The engine as the server shares it. Dropping an `Engine` waits for its threads, which must not
/// happen on a runtime thread: the last holder drops it on a plain thread instead.
pub struct EngineCell(Option<Engine>);

impl std::ops::Deref for EngineCell {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("the engine is there until the cell is dropped")
    }
}

impl Drop for EngineCell {
    fn drop(&mut self) {
        if let Some(engine) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("engine-drop".into())
                    .spawn(move || drop(engine))
                    .map(|t| t.join());
            }
        }
    }
}

/// What every connection shares.
pub(crate) struct Shared {
    pub engine: Arc<EngineCell>,
    pub tokens: TokenStore,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub shutdown: watch::Receiver<bool>,
    pub started: Instant,
}

/// What a start created or found, for the operator.
#[derive(Clone, Debug)]
pub struct StartupInfo {
    pub data_dir: PathBuf,
    /// The certificate clients verify the server with.
    pub cert_path: PathBuf,
    pub cert_created: bool,
    /// Set on first start: where the admin token was written.
    pub admin_token_path: Option<PathBuf>,
    pub recovered_records: u64,
    pub durable_seq: u64,
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    info: StartupInfo,
    engine: Arc<EngineCell>,
    shared: Option<Arc<Shared>>,
    shutdown_tx: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    /// Held while the server runs, until its engine has stopped: one server per data directory.
    lock: Option<std::fs::File>,
}

/// The lock file that keeps a second server off a data directory.
pub const LOCK_FILE: &str = "stockd.lock";

/// Takes the data directory's lock (an exclusive `flock`, released when the process ends however
/// it ends) and writes our pid in it.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| ServerError::Config(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(ServerError::Config(format!(
            "another stockd (pid {}) is using the data directory {}; stop it first or choose another --data-dir",
            holder.trim(),
            data_dir.display()
        )));
    }
    let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] crate::runtime::EngineError),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Tokens(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

impl Server {
    /// Opens the engine (recovering its data directory), prepares TLS and tokens on first start,
    /// and starts listening. Must be called inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let data_dir = config.data_dir().to_owned();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            ServerError::Config(format!("cannot create the data directory {}: {e}", data_dir.display()))
        })?;
        let lock = lock_data_dir(&data_dir)?;
        let identity = tls::load_or_create(&data_dir, config.tls_cert.as_deref(), config.tls_key.as_deref())
            .map_err(ServerError::Tls)?;
        let crypto = tls::server_crypto(&identity).map_err(ServerError::Tls)?;
        let now = config.engine.clock.now();
        let (tokens, first) = TokenStore::open(&data_dir, now).map_err(ServerError::Tokens)?;

        // Bind everything that can fail before the engine opens.
        let limits = config.limits;
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| ServerError::Tls(format!("TLS configuration unusable for QUIC: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        server_config.transport_config(Arc::new(transport_config(&limits)));
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let local_addr = endpoint.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let listener = metrics::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?;
                let bound = listener.local_addr().map_err(|source| ServerError::Listen { addr, source })?;
                Some((listener, bound))
            }
            None => None,
        };

        let engine_config = config.engine.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await
            .map_err(|e| ServerError::Config(format!("the engine failed to open: {e}")))??;
        let engine = Arc::new(EngineCell(Some(engine)));

        let metrics = Arc::new(Metrics::default());
        let (metrics_addr, metrics_task) = match metrics_listener {
            Some((listener, bound)) => {
                (Some(bound), Some(tokio::spawn(metrics::serve(listener, metrics.clone(), engine.clone()))))
            }
            None => (None, None),
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            tokens,
            metrics,
            limits,
            shutdown: shutdown_rx,
            started: Instant::now(),
        });
        let accept_task = tokio::spawn(accept_loop(shared.clone(), endpoint, config.connections_max));
        let info = StartupInfo {
            data_dir,
            cert_path: identity.cert_path,
            cert_created: identity.created,
            admin_token_path: first.map(|f| f.admin_token_path),
            recovered_records: engine.recovery_report().records_replayed,
            durable_seq: engine.stats().durable_seq,
        };
        tracing::info!(%local_addr, metrics = ?metrics_addr, shards = engine.shard_count(), "stockd listening");
        Ok(Server {
            local_addr,
            metrics_addr,
            info,
            engine,
            shared: Some(shared),
            shutdown_tx,
            accept_task,
            metrics_task,
            lock: Some(lock),
        })
    }

    /// The UDP address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP address of the metrics page, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn info(&self) -> &StartupInfo {
        &self.info
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops gracefully: stops accepting, lets every connection finish what is in flight (up to
    /// 30 s), then flushes the log and writes a checkpoint. Returns the checkpoint's path.
    pub async fn shutdown(mut self) -> Result<Option<PathBuf>, String> {
        tracing::info!("shutting down: no new connections or requests; finishing those in flight");
        self.shutdown_tx.send_replace(true);
        let _ = (&mut self.accept_task).await;
        if let Some(task) = self.metrics_task.take() {
            task.abort();
            let _ = task.await;
        }
        drop(self.shared.take());
        // Request tasks still holding the engine finish on their own shortly.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.engine) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let engine = self.engine.clone();
        let lock = self.lock.take();
        drop(self);
        let mut cell = Arc::try_unwrap(engine)
            .map_err(|_| "the engine is still in use; it checkpoints when released".to_string())?;
        let engine = cell.0.take().expect("the engine is there until shut down");
        let stopped = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        drop(lock);
        stopped
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the final checkpoint failed (the log still has every movement): {e}"))
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<Option<PathBuf>, String> {
        wait_for_signal().await;
        self.shutdown().await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server dropped without `shutdown` stops accepting at once.
        self.shutdown_tx.send_replace(true);
        if let Some(task) = &self.metrics_task {
            task.abort();
        }
    }
}

/// Resolves once the server is shutting down (holding no borrow of the flag).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves at SIGTERM or Ctrl-C (SIGINT).
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

fn transport_config(limits: &Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // One more than the limit, so that a client that opens one stream too many gets a clear
    // `too_many_streams` answer on it rather than waiting for credit.
    t.max_concurrent_bidi_streams((limits.streams_max + 1).into());
    t.max_concurrent_uni_streams(0u32.into());
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    t.max_idle_timeout(Some(idle.try_into().unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(u32::MAX)))));
    // Flow control bounds what a client can make the server buffer: a stream takes a whole
    // frame and some, a connection a few streams' worth.
    let stream_window = (limits.frame_bytes_max + (64 << 10)).max(256 << 10);
    t.stream_receive_window(stream_window.into());
    t.receive_window(stream_window.saturating_mul(2).max(4 << 20).into());
    t.send_window(8 << 20);
    t
}

/// Finishes the handshake of a connection over the limit and closes it with `too_many_connections`.
async fn refuse_connection(incoming: quinn::Incoming, connections_max: u32) {
    let Ok(connecting) = incoming.accept() else { return };
    if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await {
        let code = ErrorCode::TooManyConnections;
        let reason = format!("{code}: the server has its {connections_max} connections; retry later");
        conn.close(code.app_code().into(), reason.as_bytes());
    }
}

async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint, connections_max: u32) {
    let mut connections = JoinSet::new();
    let mut shutdown = shared.shutdown.clone();
    let metrics = shared.metrics.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if metrics.connections.load(Ordering::Relaxed) >= connections_max as i64 {
                    metrics.error(ErrorCode::TooManyConnections);
                    tracing::warn!(remote = %incoming.remote_address(), connections_max, "connection refused: too many connections");
                    // Completed and closed with our code, so that the client learns why.
                    tokio::spawn(refuse_connection(incoming, connections_max));
                    continue;
                }
                metrics.connections.fetch_add(1, Ordering::Relaxed);
                metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                let (shared, metrics) = (shared.clone(), metrics.clone());
                connections.spawn(async move {
                    conn::serve_connection(shared, incoming).await;
                    metrics.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            _ = stopping(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(shared);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    endpoint.close(ErrorCode::ShuttingDown.app_code().into(), b"shutting_down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}
