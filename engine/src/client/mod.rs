//! The async client of `stockd`: one QUIC connection, a few long-lived request streams with many
//! requests in flight on each, typed outcomes, and retries that resend the same bytes (so the
//! same idempotency keys) after a reconnect.
//!
//! ```no_run
//! # async fn demo() -> Result<(), engine::client::ClientError> {
//! use engine::client::ConnectArgs;
//! let client = ConnectArgs::default().connect().await?;
//! let level = client.level("TSHIRT-RED-M", "dc-east").await?;
//! # Ok(()) }
//! ```
//!
//! API boundary: [`Client`], [`ClientConfig`], [`ConnectArgs`], [`Subscription`], [`ClientError`].

mod args;
mod conn;
/// For clients of their own (tests, tools): the QUIC and TLS configuration this client uses.
pub use conn::{quic_client_config, quic_client_config_with};
mod error;
mod feed;

pub use args::ConnectArgs;
pub use error::ClientError;
pub use feed::{FeedBatch, Subscription};

use crate::core::{LevelDetail, LevelView, Movement, MovementKind, Qty, Seq, SerialView, Settings, SkuSettings};
use crate::protocol::*;
use conn::Conn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How requests that failed for a passing reason are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first (0: never retry).
    pub retries: u32,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy { retries: 10, backoff_first: Duration::from_millis(50), backoff_max: Duration::from_secs(2) }
    }
}

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// HOST:PORT of the server.
    pub server: String,
    /// The name the server's certificate must carry; default: the host part of `server`.
    pub server_name: Option<String>,
    /// PEM certificates the server's certificate must chain to (its own, if self-signed).
    pub ca_pem: Vec<u8>,
    pub token: String,
    /// Request streams per connection.
    pub streams: usize,
    /// Time allowed for one answer.
    pub request_timeout: Duration,
    /// Time allowed to connect and authenticate.
    pub connect_timeout: Duration,
    /// A connection silent this long is dead (keep-alives go out at a third of it): how soon a
    /// server that vanished without closing (killed, unplugged) is noticed.
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    /// Sent in the hello, for the server's logs.
    pub client_name: String,
}

impl ClientConfig {
    pub fn new(server: impl Into<String>, ca_pem: Vec<u8>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            server: server.into(),
            server_name: None,
            ca_pem,
            token: token.into(),
            streams: 4,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: conn::IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
            client_name: format!("perpetua-client {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A connection to a server; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    addr: SocketAddr,
    server_name: String,
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    /// The current connection; replaced after it breaks.
    conn: Mutex<Arc<Conn>>,
    /// One reconnect at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects and authenticates. Fails at once on a bad certificate or token.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let addr = resolve(&config.server).await?;
        let server_name = match &config.server_name {
            Some(n) => n.clone(),
            None => host_of(&config.server),
        };
        let quic = conn::quic_client_config_with(&config.ca_pem, config.idle_timeout)?;
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| ClientError::Connect { server: config.server.clone(), message: e.to_string() })?;
        let first = Conn::open(&endpoint, &quic, addr, &server_name, &config).await?;
        let inner = Inner {
            config,
            addr,
            server_name,
            endpoint,
            quic,
            conn: Mutex::new(Arc::new(first)),
            reconnecting: tokio::sync::Mutex::new(()),
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// The server's welcome on the current connection: role, limits, durable sequence number.
    pub fn welcome(&self) -> Welcome {
        self.inner.conn.lock().unwrap().welcome.clone()
    }

    /// The current connection, reconnecting if it broke.
    async fn connection(&self) -> Result<Arc<Conn>, ClientError> {
        let current = self.inner.conn.lock().unwrap().clone();
        if !current.is_broken() {
            return Ok(current);
        }
        let _one = self.inner.reconnecting.lock().await;
        let current = self.inner.conn.lock().unwrap().clone();
        if !current.is_broken() {
            return Ok(current); // another task reconnected meanwhile
        }
        let i = &self.inner;
        let fresh = Arc::new(Conn::open(&i.endpoint, &i.quic, i.addr, &i.server_name, &i.config).await?);
        *i.conn.lock().unwrap() = fresh.clone();
        tracing::debug!(server = %i.config.server, "reconnected");
        Ok(fresh)
    }

    /// Sends an encoded request body and waits for its single answer, retrying passing failures
    /// when `retry_safe` (the same bytes go out again, so the same idempotency keys).
    async fn call(&self, body: &[u8], retry_safe: bool) -> Result<ResponseBody, ClientError> {
        let policy = self.inner.config.retry;
        let mut backoff = policy.backoff_first;
        let mut attempt = 0;
        loop {
            let result = match self.connection().await {
                Ok(conn) => {
                    let r = conn.call(body, self.inner.config.request_timeout).await;
                    if let Err(e) = &r {
                        if e.breaks_connection() {
                            conn.mark_broken();
                        }
                    }
                    r
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if retry_safe && e.is_transient() && attempt < policy.retries => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.backoff_max);
                }
                Ok(ResponseBody::Error { code, message }) => return Err(ClientError::Refused { code, message }),
                other => return other,
            }
        }
    }

    /// Like [`Client::call`] for answers in several frames (levels, snapshots).
    async fn call_chunked(&self, body: &[u8]) -> Result<Vec<ResponseBody>, ClientError> {
        let policy = self.inner.config.retry;
        let mut backoff = policy.backoff_first;
        let mut attempt = 0;
        loop {
            let result = match self.connection().await {
                Ok(conn) => conn.call_chunked(body, self.inner.config.request_timeout).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_transient() && attempt < policy.retries => {
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.backoff_max);
                }
                Ok(parts) => {
                    if let Some(ResponseBody::Error { code, message }) = parts.first() {
                        return Err(ClientError::Refused { code: code.clone(), message: message.clone() });
                    }
                    return Ok(parts);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits movements (one request); one outcome per movement, in order. Retried after a
    /// broken connection or a server restart only if every movement has an idempotency key.
    pub async fn submit(&self, movements: &[Movement]) -> Result<Vec<MovementOutcome>, ClientError> {
        let max = self.inner.conn.lock().unwrap().welcome.limits.batch_movements_max as usize;
        if movements.len() > max {
            return Err(ClientError::refused(
                ErrorCode::BatchTooLarge,
                format!("{} movements in one request; the server takes at most {max}", movements.len()),
            ));
        }
        let retry_safe = movements.iter().all(|m| m.key.is_some());
        let body = encode_submit_body(movements);
        match self.call(&body, retry_safe).await? {
            ResponseBody::Outcomes { results } if results.len() == movements.len() => Ok(results),
            other => Err(unexpected("outcomes", &other)),
        }
    }

    /// Submits one movement.
    pub async fn submit_one(&self, movement: &Movement) -> Result<MovementOutcome, ClientError> {
        Ok(self.submit(std::slice::from_ref(movement)).await?[0])
    }

    /// One level, if the engine knows it.
    pub async fn level(&self, sku: &str, location: &str) -> Result<Option<LevelView>, ClientError> {
        let body = encode_body(&RequestBody::Level { sku: sku.into(), location: location.into() });
        match self.call(&body, true).await? {
            ResponseBody::Level { level } => Ok(level),
            other => Err(unexpected("a level", &other)),
        }
    }

    /// Every level, or every level of one location, sorted by SKU then location.
    pub async fn levels(&self, location: Option<&str>) -> Result<Vec<LevelView>, ClientError> {
        self.chunked_levels(&RequestBody::Levels { location: location.map(Into::into) }).await
    }

    /// Every location's level of one SKU, sorted by location.
    pub async fn sku_levels(&self, sku: &str) -> Result<Vec<LevelView>, ClientError> {
        self.chunked_levels(&RequestBody::SkuLevels { sku: sku.into() }).await
    }

    /// Sends a request answered by `Levels` chunks and joins them.
    async fn chunked_levels(&self, request: &RequestBody) -> Result<Vec<LevelView>, ClientError> {
        let mut all = Vec::new();
        for part in self.call_chunked(&encode_body(request)).await? {
            match part {
                ResponseBody::Levels { mut levels, .. } => all.append(&mut levels),
                other => return Err(unexpected("levels", &other)),
            }
        }
        Ok(all)
    }

    /// Levels at or below their reorder point (or at or below zero without one).
    pub async fn low_stock(&self, location: Option<&str>) -> Result<Vec<LowStockItem>, ClientError> {
        let body = encode_body(&RequestBody::LowStock { location: location.map(Into::into) });
        let mut all = Vec::new();
        for part in self.call_chunked(&body).await? {
            match part {
                ResponseBody::LowStock { mut items, .. } => all.append(&mut items),
                other => return Err(unexpected("low-stock levels", &other)),
            }
        }
        Ok(all)
    }

    /// The replenishment settings of one level.
    pub async fn settings(&self, sku: &str, location: &str) -> Result<Option<Settings>, ClientError> {
        let body = encode_body(&RequestBody::GetSettings { sku: sku.into(), location: location.into() });
        match self.call(&body, true).await? {
            ResponseBody::Settings { settings } => Ok(settings),
            other => Err(unexpected("settings", &other)),
        }
    }

    /// Replaces the settings of one level (admin). A movement like any other: logged, with a
    /// sequence number.
    pub async fn set_settings(
        &self,
        sku: &str,
        location: &str,
        settings: Settings,
        key: Option<String>,
    ) -> Result<MovementOutcome, ClientError> {
        let m = Movement {
            key,
            channel: "admin".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::SetSettings { sku: sku.into(), location: location.into(), settings },
        };
        self.submit_one(&m).await
    }

    /// One level with its lots (first to expire first), channel allocations and loose units.
    /// `None` for a level never recorded, and for a kit (which has no stock of its own).
    pub async fn level_detail(&self, sku: &str, location: &str) -> Result<Option<LevelDetail>, ClientError> {
        let body = encode_body(&RequestBody::LevelDetail { sku: sku.into(), location: location.into() });
        match self.call(&body, true).await? {
            ResponseBody::LevelDetail(detail) => Ok(detail),
            other => Err(unexpected("a level detail", &other)),
        }
    }

    /// Where a serial number of a SKU is, its state and every movement that named it; `None` if
    /// the engine never saw it.
    pub async fn serial(&self, sku: &str, serial: &str) -> Result<Option<SerialView>, ClientError> {
        let body = encode_body(&RequestBody::Serial { sku: sku.into(), serial: serial.into() });
        match self.call(&body, true).await? {
            ResponseBody::Serial(view) => Ok(view),
            other => Err(unexpected("a serial number", &other)),
        }
    }

    /// A SKU's settings (serial tracking, expiry warning, kit components); the default if never set.
    pub async fn sku_settings(&self, sku: &str) -> Result<SkuSettings, ClientError> {
        let body = encode_body(&RequestBody::GetSkuSettings { sku: sku.into() });
        match self.call(&body, true).await? {
            ResponseBody::SkuSettings(settings) => Ok(settings),
            other => Err(unexpected("SKU settings", &other)),
        }
    }

    /// `available` of a level for one channel: what the channel has ring-fenced plus what no
    /// channel has (never more than the level's `available`). `None` for a level never recorded.
    pub async fn available_for(&self, sku: &str, location: &str, channel: &str) -> Result<Option<Qty>, ClientError> {
        let body = encode_body(&RequestBody::AvailableFor {
            sku: sku.into(),
            location: location.into(),
            channel: channel.into(),
        });
        match self.call(&body, true).await? {
            ResponseBody::AvailableFor(available) => Ok(available),
            other => Err(unexpected("an available quantity", &other)),
        }
    }

    /// Replaces a SKU's settings at every location (admin): serial tracking, expiry warning, kit
    /// components. A movement with a fresh idempotency key (so a retry after a broken connection
    /// applies once).
    pub async fn set_sku_settings(&self, sku: &str, settings: SkuSettings) -> Result<MovementOutcome, ClientError> {
        let m = Movement {
            key: Some(new_key()),
            channel: "admin".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::SetSkuSettings { sku: sku.into(), settings },
        };
        self.submit_one(&m).await
    }

    /// Ring-fences `qty` units of a level for `channel` (admin, warehouse); 0 removes the
    /// allocation. A movement with a fresh idempotency key.
    pub async fn allocate(
        &self,
        sku: &str,
        location: &str,
        channel: &str,
        qty: Qty,
    ) -> Result<MovementOutcome, ClientError> {
        let m = Movement {
            key: Some(new_key()),
            channel: "admin".into(),
            reference: None,
            occurred_at: None,
            kind: MovementKind::Allocate { sku: sku.into(), location: location.into(), channel: channel.into(), qty },
        };
        self.submit_one(&m).await
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        match self.call(&encode_body(&RequestBody::Status), true).await? {
            ResponseBody::Status(s) => Ok(s),
            other => Err(unexpected("a status", &other)),
        }
    }

    /// Creates a token (admin); returns it with its secret, which is shown only now.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<(TokenInfo, String), ClientError> {
        let body = encode_body(&RequestBody::CreateToken { name: name.into(), role });
        match self.call(&body, false).await? {
            ResponseBody::Token { info, secret } => Ok((info, secret)),
            other => Err(unexpected("a token", &other)),
        }
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        match self.call(&encode_body(&RequestBody::ListTokens), true).await? {
            ResponseBody::Tokens { tokens } => Ok(tokens),
            other => Err(unexpected("tokens", &other)),
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        match self.call(&encode_body(&RequestBody::RevokeToken { id: id.into() }), false).await? {
            ResponseBody::Done => Ok(()),
            other => Err(unexpected("done", &other)),
        }
    }

    /// A consistent copy of every level as of one sequence number.
    pub async fn snapshot(&self) -> Result<(Seq, Vec<LevelView>), ClientError> {
        let mut all = Vec::new();
        let mut at = 0;
        for part in self.call_chunked(&encode_body(&RequestBody::Snapshot)).await? {
            match part {
                ResponseBody::Snapshot { seq, mut levels, .. } => {
                    at = seq;
                    all.append(&mut levels);
                }
                other => return Err(unexpected("a snapshot", &other)),
            }
        }
        Ok((at, all))
    }

    /// Follows the change feed from `from_seq` (see [`Subscription`]).
    pub async fn subscribe(&self, from_seq: Seq, filter: FeedFilter) -> Result<Subscription, ClientError> {
        Subscription::start(self.clone(), from_seq, filter).await
    }

    /// QUIC statistics of the current connection (packets, bytes, round-trip time).
    pub fn connection_stats(&self) -> quinn::ConnectionStats {
        self.inner.conn.lock().unwrap().quic.stats()
    }

    /// Closes the connection (pending requests fail).
    pub fn close(&self) {
        let conn = self.inner.conn.lock().unwrap().clone();
        conn.quic.close(crate::protocol::codes::APP_CODE_DONE.into(), b"done");
    }

    /// Closes the connection and waits until the server has been told.
    pub async fn close_and_wait(&self) {
        self.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }
}

fn unexpected(wanted: &str, got: &ResponseBody) -> ClientError {
    let got = format!("{got:?}");
    ClientError::Protocol(format!("expected {wanted}, got {}", &got[..got.len().min(120)]))
}

async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    let err = |message: String| ClientError::Config(format!("--server {server:?}: {message}"));
    let mut addrs = tokio::net::lookup_host(server).await.map_err(|e| err(format!("{e} (expected HOST:PORT)")))?;
    addrs.next().ok_or_else(|| err("the name has no address".into()))
}

/// The host part of HOST:PORT, without brackets.
fn host_of(server: &str) -> String {
    let host = match server.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => server,
    };
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// A fresh random idempotency key (128 bits, hex).
pub fn new_key() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the system random number generator works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(super::host_of("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:7400"), "::1");
        assert_eq!(super::host_of("stock.example:7400"), "stock.example");
        assert_eq!(super::new_key().len(), 32);
    }
}
