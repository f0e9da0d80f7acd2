//! One client connection: the hello, then requests on every stream the client opens, each
//! role-checked and handed to the engine; answers go back on the request's stream, in any order.
//!
//! Per stream, one task decodes frames and writes answers. The submissions among the frames that
//! one read brought go to the engine as one submission ([`Gathered`]); each request still gets
//! its own answer. Answers decided together are written in one go, so many small answers share
//! a write. Reads and token requests run as tasks of their own. A stream whose first request is
//! a subscription carries only the feed ([`super::feed`]).

use super::auth::TokenEntry;
use super::metrics::Metrics;
use super::Shared;
use crate::core::{LevelView, MovementKind, Settings};
use crate::protocol::stream::{FrameReader, ReadFailure};
use crate::protocol::*;
use crate::runtime::{Answer, MovementResult, Query};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Encoded answer frames on their way to a stream's writer.
pub(super) type Tx = mpsc::UnboundedSender<Vec<u8>>;

/// What the requests of one authenticated connection share.
pub(super) struct ConnCtx {
    pub shared: Arc<Shared>,
    pub token: Arc<TokenEntry>,
    pub role: Role,
    pub conn: quinn::Connection,
    in_flight: AtomicU32,
    streams: AtomicU32,
}

/// A request being processed; counts against `requests_in_flight_max` until dropped.
pub(super) struct InFlight(Arc<ConnCtx>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream being served; counts against `streams_max` until dropped.
struct OpenStream(Arc<ConnCtx>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn request_timeout(limits: &Limits) -> Duration {
    Duration::from_millis(limits.request_timeout_ms)
}

/// Serves one connection from its handshake to its end.
pub(super) async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => match connecting.await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "handshake failed");
                return;
            }
        },
        Err(e) => {
            tracing::debug!(%remote, error = %e, "connection not accepted");
            return;
        }
    };
    let Some((ctx, send, reader)) = authenticate(&shared, &conn).await else { return };
    tracing::debug!(%remote, token = %ctx.token.info.id, role = %ctx.role, "connection authenticated");
    let mut streams = JoinSet::new();
    ctx.streams.fetch_add(1, Ordering::AcqRel);
    streams.spawn(serve_stream(ctx.clone(), send, reader, true));
    let mut shutdown = shared.shutdown.clone();
    let limits = shared.limits;
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    if ctx.streams.fetch_add(1, Ordering::AcqRel) >= limits.streams_max {
                        ctx.streams.fetch_sub(1, Ordering::AcqRel);
                        shared.metrics.error(ErrorCode::TooManyStreams);
                        let message = format!("at most {} streams per connection", limits.streams_max);
                        tokio::spawn(refuse_stream(send, recv, ErrorCode::TooManyStreams, message));
                        continue;
                    }
                    let reader = FrameReader::new(recv, limits.frame_bytes_max as usize, request_timeout(&limits));
                    streams.spawn(serve_stream(ctx.clone(), send, reader, false));
                }
                Err(_) => break,
            },
            _ = super::stopping(&mut shutdown) => break,
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Streams stop reading at shutdown and finish what is in flight.
    while streams.join_next().await.is_some() {}
    if *shutdown.borrow() {
        let code = ErrorCode::ShuttingDown;
        conn.close(code.app_code().into(), b"shutting_down: the server is stopping; reconnect later");
    }
}

/// Reads the hello on the first stream and checks the token. On failure the client gets an
/// error frame and the connection is closed with the error's code.
async fn authenticate(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
) -> Option<(Arc<ConnCtx>, quinn::SendStream, FrameReader)> {
    let limits = shared.limits;
    let timeout = request_timeout(&limits);
    let (mut send, recv) = match tokio::time::timeout(timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return None,
        Err(_) => {
            let code = ErrorCode::TooSlow;
            shared.metrics.error(code);
            conn.close(code.app_code().into(), b"too_slow: no hello in time");
            return None;
        }
    };
    let mut reader = FrameReader::new(recv, limits.frame_bytes_max as usize, timeout);
    let hello = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(payload))) => Request::decode(payload).map_err(|e| (0, ErrorCode::Malformed, e.to_string())),
        Ok(Ok(None)) => return None,
        Ok(Err(ReadFailure::TooLarge(e))) => Err((0, ErrorCode::FrameTooLarge, e.to_string())),
        Ok(Err(ReadFailure::TooSlow(_))) | Err(_) => Err((0, ErrorCode::TooSlow, "no whole hello in time".into())),
        Ok(Err(_)) => return None,
    };
    let verdict = hello.and_then(|req| match req.body {
        RequestBody::Hello { version, token, .. } => {
            if version != PROTOCOL_VERSION {
                return Err((
                    req.id,
                    ErrorCode::UnsupportedVersion,
                    format!("this server speaks protocol version {PROTOCOL_VERSION}, not {version}"),
                ));
            }
            match shared.tokens.authenticate(&token) {
                Some(entry) => Ok((req.id, entry)),
                None => Err((req.id, ErrorCode::Unauthenticated, "the token is not valid (unknown or revoked)".into())),
            }
        }
        _ => Err((req.id, ErrorCode::Malformed, "the first frame of a connection must be a hello".into())),
    });
    let (id, entry) = match verdict {
        Ok(v) => v,
        Err((id, code, message)) => {
            shared.metrics.error(code);
            tracing::info!(remote = %conn.remote_address(), %code, %message, "connection refused");
            let mut buf = Vec::new();
            encode_response(&mut buf, id, &ResponseBody::error(code, message.clone()));
            let _ = send.write_all(&buf).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            let reason = format!("{code}: {message}");
            conn.close(code.app_code().into(), reason.as_bytes());
            return None;
        }
    };
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        role: entry.info.role,
        token_id: entry.info.id.clone(),
        server: super::server_name(),
        durable_seq: shared.engine.stats().durable_seq,
        limits,
    };
    let mut buf = Vec::new();
    encode_response(&mut buf, id, &ResponseBody::Welcome(welcome));
    send.write_all(&buf).await.ok()?;
    let role = entry.info.role;
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        token: entry,
        role,
        conn: conn.clone(),
        in_flight: AtomicU32::new(0),
        streams: AtomicU32::new(0),
    });
    Some((ctx, send, reader))
}

/// Answers a stream beyond the limit with an error and closes it.
async fn refuse_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, code: ErrorCode, message: String) {
    let mut buf = Vec::new();
    encode_response(&mut buf, 0, &ResponseBody::error(code, message));
    let _ = recv.stop(code.app_code().into());
    let _ = send.write_all(&buf).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

/// Submissions being waited for on a stream; each gives the answers of the requests it gathered.
type Waiting = FuturesUnordered<WaitSubmission>;
type WaitSubmission = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Decided>> + Send>>;

/// A decided request: its id, arrival time, in-flight slot and the results of its movements.
struct Decided {
    id: u64,
    started: Instant,
    _guard: InFlight,
    results: Vec<MovementResult>,
}

/// Frames stop being gathered once this many movements are in (see [`Gathered`]); the request
/// that crosses it still joins, so a submission holds at most this plus one request's movements.
const GATHERED_MOVEMENTS_MAX: usize = 1024;

/// The submissions of the frames that arrived together on a stream, handed to the engine as one:
/// one plan, one message per shard and one wake-up when they are durable, instead of one per
/// request. Each request still gets its own answer with its own movements' results. Frames are
/// only gathered from what one read brought, so no request waits for another to arrive, and
/// anything else read in between (a read, a token request) first sends what was gathered: the
/// engine sees every request in the order the stream carried it.
#[derive(Default)]
struct Gathered {
    movements: Vec<crate::core::Movement>,
    hashes: Vec<u64>,
    /// Per request: its id, arrival time, in-flight slot and number of movements.
    requests: Vec<(u64, Instant, InFlight, usize)>,
}

impl Gathered {
    /// Adds a submission. The first one's vectors are taken as they are, so a read that brings a
    /// single request (a batch of many movements, typically) copies nothing.
    fn add(
        &mut self,
        id: u64,
        started: Instant,
        guard: InFlight,
        movements: Vec<crate::core::Movement>,
        hashes: BodyHashes,
    ) {
        self.requests.push((id, started, guard, movements.len()));
        if self.movements.is_empty() {
            self.movements = movements;
            self.hashes = hashes;
        } else {
            self.movements.extend(movements);
            self.hashes.extend(hashes);
        }
    }
}

/// Serves the requests of one stream until the client finishes it, the connection ends or the
/// server shuts down; then answers what is in flight and finishes the stream.
///
/// Submissions are awaited here, in one set per stream, not in a task each: the answers that one
/// group commit completes wake this task once, and go out in one write (and few QUIC packets).
async fn serve_stream(ctx: Arc<ConnCtx>, mut send: quinn::SendStream, mut reader: FrameReader, first: bool) {
    let _open = OpenStream(ctx.clone());
    // Answers of requests that run as tasks of their own (reads, tokens): rare, so a channel.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut tx = Some(tx);
    let mut waiting = Waiting::new();
    let mut out: Vec<u8> = Vec::with_capacity(4 << 10);
    let mut reading = true;
    let mut rx_open = true;
    let mut seen_frame = first;
    let mut shutdown = ctx.shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            Some(decided) = waiting.next(), if !waiting.is_empty() => {
                ctx.encode_decided(decided, &mut out);
                while let Some(Some(decided)) = waiting.next().now_or_never() {
                    ctx.encode_decided(decided, &mut out);
                }
                while let Ok(frame) = rx.try_recv() {
                    out.extend_from_slice(&frame);
                }
                if send.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            frame = rx.recv(), if rx_open => match frame {
                Some(frame) => {
                    out.extend_from_slice(&frame);
                    while let Ok(frame) = rx.try_recv() {
                        out.extend_from_slice(&frame);
                    }
                    if send.write_all(&out).await.is_err() {
                        break;
                    }
                    out.clear();
                }
                // Every sender is gone: reading has ended and every task has answered.
                None => rx_open = false,
            },
            _ = super::stopping(&mut shutdown), if reading => {
                reading = false;
                tx = None;
            }
            frame = reader.next(), if reading => {
                let Some(sender) = tx.clone() else { continue };
                // This frame, then every whole frame that came with it, their submissions
                // gathered into one.
                let mut gathered = Gathered::default();
                let mut frame = frame;
                loop {
                    match frame {
                        Ok(Some(payload)) => {
                            let started = Instant::now();
                            let request = Request::decode_hashed(payload);
                            if !seen_frame {
                                seen_frame = true;
                                if let Ok((Request { id, body: body @ RequestBody::Subscribe { .. } }, _)) = request {
                                    drop(sender);
                                    return subscribe(ctx, id, body, send, reader).await;
                                }
                            }
                            match request {
                                Ok((req, hashes)) => ctx.dispatch(req, hashes, started, &sender, &mut gathered, &mut waiting),
                                Err(e) => ctx.reply_error(&sender, peek_id(payload).unwrap_or(0), ErrorCode::Malformed, e.to_string()),
                            }
                        }
                        Ok(None) => {
                            reading = false;
                            tx = None;
                        }
                        Err(ReadFailure::TooLarge(e)) => {
                            ctx.reply_error(&sender, 0, ErrorCode::FrameTooLarge, format!("{e}; the stream is closed"));
                            let _ = reader.recv.stop(ErrorCode::FrameTooLarge.app_code().into());
                            reading = false;
                            tx = None;
                        }
                        Err(ReadFailure::TooSlow(t)) => {
                            // Only a read waits: this is the first frame, nothing is gathered.
                            let code = ErrorCode::TooSlow;
                            ctx.shared.metrics.error(code);
                            tracing::info!(remote = %ctx.conn.remote_address(), "cut off a client that sent a frame too slowly");
                            let reason = format!("{code}: a frame did not arrive whole within {} ms", t.as_millis());
                            ctx.conn.close(code.app_code().into(), reason.as_bytes());
                            return;
                        }
                        Err(_) => {
                            reading = false;
                            tx = None;
                        }
                    }
                    if !reading || gathered.movements.len() >= GATHERED_MOVEMENTS_MAX {
                        break;
                    }
                    frame = match reader.next_buffered() {
                        Ok(None) => break,
                        next => next,
                    };
                }
                ctx.submit_gathered(&mut gathered, &mut waiting);
            }
            else => break,
        }
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

/// A stream whose first request is a subscription carries the feed (after the role check).
async fn subscribe(ctx: Arc<ConnCtx>, id: u64, body: RequestBody, mut send: quinn::SendStream, reader: FrameReader) {
    if let Err((code, message)) = ctx.check(&body) {
        ctx.shared.metrics.error(code);
        let mut buf = Vec::new();
        encode_response(&mut buf, id, &ResponseBody::error(code, message));
        let _ = send.write_all(&buf).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        return;
    }
    let RequestBody::Subscribe { from_seq, filter } = body else { unreachable!("checked by the caller") };
    super::feed::serve(ctx.clone(), id, from_seq, filter, send, reader).await
}

/// Levels per frame of a chunked answer (a level encodes to at most ~160 bytes).
const LEVELS_PER_CHUNK: usize = CHUNK_BYTES_TARGET / 256;

impl ConnCtx {
    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Appends the answers to decided requests.
    fn encode_decided(&self, decided: Vec<Decided>, out: &mut Vec<u8>) {
        for decided in decided {
            let results = decided
                .results
                .into_iter()
                .map(|r| {
                    if let Err(reason) = r.outcome {
                        self.metrics().rejection(reason);
                    }
                    MovementOutcome { seq: r.seq, outcome: r.outcome }
                })
                .collect();
            encode_response(out, decided.id, &ResponseBody::Outcomes { results });
            self.metrics().request_done(decided.started.elapsed());
        }
    }

    /// Hands the gathered submissions to the engine as one; their answers come back together.
    fn submit_gathered(&self, gathered: &mut Gathered, waiting: &mut Waiting) {
        if gathered.requests.is_empty() {
            return;
        }
        let Gathered { movements, hashes, requests } = std::mem::take(gathered);
        let submission = self.shared.engine.submit_hashed(movements, hashes);
        waiting.push(Box::pin(async move {
            let mut results = submission.wait_async().await.into_iter();
            requests
                .into_iter()
                .map(|(id, started, guard, count)| Decided {
                    id,
                    started,
                    _guard: guard,
                    results: results.by_ref().take(count).collect(),
                })
                .collect()
        }));
    }

    pub(super) fn reply(&self, tx: &Tx, id: u64, body: &ResponseBody, started: Instant) {
        let mut buf = Vec::with_capacity(64);
        encode_response(&mut buf, id, body);
        let _ = tx.send(buf);
        self.metrics().request_done(started.elapsed());
    }

    pub(super) fn reply_error(&self, tx: &Tx, id: u64, code: ErrorCode, message: String) {
        self.metrics().error(code);
        let mut buf = Vec::with_capacity(64 + message.len());
        encode_response(&mut buf, id, &ResponseBody::error(code, message));
        let _ = tx.send(buf);
    }

    fn begin(self: &Arc<Self>) -> Option<InFlight> {
        let max = self.shared.limits.requests_in_flight_max;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    /// Whether this connection's token (still valid, and its role) allows the request.
    fn check(&self, body: &RequestBody) -> Result<(), (ErrorCode, String)> {
        if self.token.revoked.load(Ordering::Acquire) {
            return Err((ErrorCode::Unauthenticated, "the token of this connection was revoked".into()));
        }
        if !self.role.may(body) {
            if let RequestBody::Submit { movements } = body {
                let internal = movements
                    .iter()
                    .find(|m| matches!(m.kind, MovementKind::Expire { .. } | MovementKind::CompleteCommit { .. }));
                if let Some(m) = internal {
                    let message = format!("{} is the engine's own movement: no role may submit it", m.kind.name());
                    return Err((ErrorCode::Forbidden, message));
                }
            }
            return Err((ErrorCode::Forbidden, format!("role {} may not {}", self.role, describe(body))));
        }
        Ok(())
    }

    /// Checks a request and starts it; its answer goes to `tx`. A submission joins `gathered`;
    /// any other request first sends what was gathered, to keep the stream's order.
    /// `hashes`: the body hash of each movement of a submission, from its bytes as they came.
    fn dispatch(
        self: &Arc<Self>,
        req: Request,
        hashes: Option<BodyHashes>,
        started: Instant,
        tx: &Tx,
        gathered: &mut Gathered,
        waiting: &mut Waiting,
    ) {
        let Request { id, body } = req;
        if !matches!((&body, &hashes), (RequestBody::Submit { .. }, Some(_))) {
            self.submit_gathered(gathered, waiting);
        }
        if let Err((code, message)) = self.check(&body) {
            return self.reply_error(tx, id, code, message);
        }
        let Some(guard) = self.begin() else {
            let max = self.shared.limits.requests_in_flight_max;
            return self.reply_error(
                tx,
                id,
                ErrorCode::TooManyRequests,
                format!("at most {max} requests in flight per connection"),
            );
        };
        let engine = &self.shared.engine;
        let (ctx, tx) = (self.clone(), tx.clone());
        match body {
            RequestBody::Hello { .. } => {
                self.reply_error(&tx, id, ErrorCode::Malformed, "a hello only comes once, as the first frame".into())
            }
            RequestBody::Submit { movements } => {
                let max = self.shared.limits.batch_movements_max;
                if movements.len() > max as usize {
                    let message = format!("{} movements in one request; at most {max}", movements.len());
                    return self.reply_error(&tx, id, ErrorCode::BatchTooLarge, message);
                }
                for m in &movements {
                    self.metrics().movement(&m.kind);
                }
                match hashes {
                    Some(hashes) => gathered.add(id, started, guard, movements, hashes),
                    None => {
                        let submission = engine.submit(movements);
                        waiting.push(Box::pin(async move {
                            vec![Decided { id, started, _guard: guard, results: submission.wait_async().await }]
                        }));
                    }
                }
            }
            RequestBody::Level { sku, location } => {
                tokio::spawn(async move {
                    let level = ctx.shared.engine.level_async(&sku, &location).await;
                    ctx.reply(&tx, id, &ResponseBody::Level { level }, started);
                    drop(guard);
                });
            }
            RequestBody::LevelDetail { sku, location } => {
                tokio::spawn(async move {
                    let detail = ctx.shared.engine.level_detail_async(&sku, &location).await;
                    ctx.reply(&tx, id, &ResponseBody::LevelDetail(detail), started);
                    drop(guard);
                });
            }
            RequestBody::Serial { sku, serial } => {
                tokio::spawn(async move {
                    let view = ctx.shared.engine.serial_async(&sku, &serial).await;
                    ctx.reply(&tx, id, &ResponseBody::Serial(view), started);
                    drop(guard);
                });
            }
            RequestBody::GetSkuSettings { sku } => {
                tokio::spawn(async move {
                    let settings = ctx.shared.engine.sku_settings_async(&sku).await;
                    ctx.reply(&tx, id, &ResponseBody::SkuSettings(settings), started);
                    drop(guard);
                });
            }
            RequestBody::AvailableFor { sku, location, channel } => {
                tokio::spawn(async move {
                    let available = ctx.shared.engine.available_for_async(&sku, &location, &channel).await;
                    ctx.reply(&tx, id, &ResponseBody::AvailableFor(available), started);
                    drop(guard);
                });
            }
            RequestBody::GetSettings { sku, location } => {
                tokio::spawn(async move {
                    let q = Query::Settings { sku: sku.clone(), location };
                    let settings = match ctx.shared.engine.query_async(&sku, q).await {
                        Some(Answer::Settings(s)) => s,
                        _ => None,
                    };
                    ctx.reply(&tx, id, &ResponseBody::Settings { settings }, started);
                    drop(guard);
                });
            }
            RequestBody::Levels { location } => {
                tokio::spawn(async move {
                    let levels = ctx.levels(location).await;
                    ctx.reply_chunked(&tx, id, levels, started, |levels, last| ResponseBody::Levels { levels, last });
                    drop(guard);
                });
            }
            RequestBody::SkuLevels { sku } => {
                tokio::spawn(async move {
                    let levels = ctx.shared.engine.sku_levels_async(&sku).await;
                    ctx.reply_chunked(&tx, id, levels, started, |levels, last| ResponseBody::Levels { levels, last });
                    drop(guard);
                });
            }
            RequestBody::LowStock { location } => {
                tokio::spawn(async move {
                    let items = ctx.low_stock(location).await;
                    ctx.reply_chunked(&tx, id, items, started, |items, last| ResponseBody::LowStock { items, last });
                    drop(guard);
                });
            }
            RequestBody::Status => {
                let stats = engine.stats();
                let status = Status {
                    server: super::server_name(),
                    durable_seq: stats.durable_seq,
                    log_bytes: stats.log_bytes,
                    log_syncs: stats.log_syncs,
                    shards: engine.shard_count() as u16,
                    connections: self.metrics().connections.load(Ordering::Relaxed).max(0) as u32,
                    uptime_ms: self.shared.started.elapsed().as_millis() as u64,
                };
                self.reply(&tx, id, &ResponseBody::Status(status), started);
            }
            RequestBody::CreateToken { name, role } => {
                tokio::spawn(async move {
                    let shared = ctx.shared.clone();
                    let now = shared.engine.config().clock.now();
                    let made = tokio::task::spawn_blocking(move || shared.tokens.create(&name, role, now)).await;
                    match made {
                        Ok(Ok((info, secret))) => {
                            tracing::info!(id = %info.id, name = %info.name, role = %info.role, by = %ctx.token.info.id, "token created");
                            ctx.reply(&tx, id, &ResponseBody::Token { info, secret }, started)
                        }
                        Ok(Err(e)) => ctx.reply_error(&tx, id, ErrorCode::InvalidRequest, e),
                        Err(e) => ctx.reply_error(&tx, id, ErrorCode::Internal, e.to_string()),
                    }
                    drop(guard);
                });
            }
            RequestBody::ListTokens => {
                let tokens = self.shared.tokens.list();
                self.reply(&tx, id, &ResponseBody::Tokens { tokens }, started);
            }
            RequestBody::RevokeToken { id: token_id } => {
                tokio::spawn(async move {
                    let shared = ctx.shared.clone();
                    let tid = token_id.clone();
                    let revoked = tokio::task::spawn_blocking(move || shared.tokens.revoke(&tid)).await;
                    match revoked {
                        Ok(Ok(true)) => {
                            tracing::info!(id = %token_id, by = %ctx.token.info.id, "token revoked");
                            ctx.reply(&tx, id, &ResponseBody::Done, started)
                        }
                        Ok(Ok(false)) => {
                            ctx.reply_error(&tx, id, ErrorCode::NotFound, format!("no token with id {token_id}"))
                        }
                        Ok(Err(e)) => ctx.reply_error(&tx, id, ErrorCode::Internal, e),
                        Err(e) => ctx.reply_error(&tx, id, ErrorCode::Internal, e.to_string()),
                    }
                    drop(guard);
                });
            }
            RequestBody::Subscribe { .. } => self.reply_error(
                &tx,
                id,
                ErrorCode::Malformed,
                "a subscription needs a stream of its own: send it as the first frame of a new stream".into(),
            ),
            RequestBody::Snapshot => {
                tokio::spawn(async move {
                    super::feed::snapshot(&ctx, &tx, id, started).await;
                    drop(guard);
                });
            }
        }
    }

    /// Every level (of one location), sorted by SKU then location.
    async fn levels(&self, location: Option<String>) -> Vec<LevelView> {
        let answers = self.shared.engine.query_all_async(|| Query::Levels { location: location.clone() }).await;
        let mut all: Vec<LevelView> = answers
            .into_iter()
            .flat_map(|a| match a {
                Answer::Levels(ls) => ls,
                _ => Vec::new(),
            })
            .collect();
        all.sort_unstable_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        all
    }

    /// Levels at or below their reorder point, or at or below zero when they have none.
    async fn low_stock(self: &Arc<Self>, location: Option<String>) -> Vec<LowStockItem> {
        const WORKERS: usize = 8;
        let levels = self.levels(location).await;
        let per_worker = levels.len().div_ceil(WORKERS).max(1);
        let mut set = JoinSet::new();
        let mut levels = levels.into_iter();
        loop {
            let part: Vec<LevelView> = levels.by_ref().take(per_worker).collect();
            if part.is_empty() {
                break;
            }
            let engine = self.shared.engine.clone();
            set.spawn(async move {
                let mut low = Vec::new();
                for level in part {
                    let q = Query::Settings { sku: level.sku.clone(), location: level.location.clone() };
                    let settings = match engine.query_async(&level.sku, q).await {
                        Some(Answer::Settings(s)) => s.unwrap_or_default(),
                        _ => Settings::default(),
                    };
                    if level.available <= settings.reorder_point.unwrap_or(0) {
                        low.push(LowStockItem { level, settings });
                    }
                }
                low
            });
        }
        let mut all = Vec::new();
        while let Some(part) = set.join_next().await {
            all.extend(part.unwrap_or_default());
        }
        all.sort_unstable_by(|a, b| (&a.level.sku, &a.level.location).cmp(&(&b.level.sku, &b.level.location)));
        all
    }

    /// Sends `items` in frames of at most [`LEVELS_PER_CHUNK`], the last one marked.
    fn reply_chunked<T>(
        &self,
        tx: &Tx,
        id: u64,
        mut items: Vec<T>,
        started: Instant,
        make: impl Fn(Vec<T>, bool) -> ResponseBody,
    ) {
        while items.len() > LEVELS_PER_CHUNK {
            let rest = items.split_off(LEVELS_PER_CHUNK);
            let mut buf = Vec::new();
            encode_response(&mut buf, id, &make(items, false));
            let _ = tx.send(buf);
            items = rest;
        }
        self.reply(tx, id, &make(items, true), started);
    }
}

/// What a request asks, for error messages.
fn describe(body: &RequestBody) -> String {
    match body {
        RequestBody::Submit { movements } => {
            let mut kinds: Vec<&str> = movements.iter().map(|m| m.kind.name()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            format!("submit {}", kinds.join(", "))
        }
        RequestBody::Subscribe { .. } => "follow the change feed".into(),
        RequestBody::Snapshot => "take a snapshot".into(),
        RequestBody::CreateToken { .. } | RequestBody::ListTokens | RequestBody::RevokeToken { .. } => {
            "manage tokens".into()
        }
        _ => "send this request".into(),
    }
}
