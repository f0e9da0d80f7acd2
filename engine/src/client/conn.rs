//! One client connection: the hello, then a few request streams, each with a writer task that
//! coalesces frames into few writes and a reader task that hands answers to their waiters by id.

use super::{ClientConfig, ClientError};
use crate::protocol::stream::FrameReader;
use crate::protocol::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a silent connection lives by default; keep-alives go out at a third of it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request id of the hello; the server also uses it for errors tied to no request.
const HELLO_ID: u64 = 0;

type Reply = Result<ResponseBody, ClientError>;

enum Waiter {
    One(oneshot::Sender<Reply>),
    Many(mpsc::UnboundedSender<Reply>),
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set when the stream ended: later requests fail at once.
    closed: Option<ClientError>,
}

struct ReqStream {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
}

pub(super) struct Conn {
    pub quic: quinn::Connection,
    pub welcome: Welcome,
    streams: Vec<ReqStream>,
    next_stream: AtomicUsize,
    next_id: AtomicU64,
    permits: Semaphore,
    broken: Arc<AtomicBool>,
}

/// The QUIC client configuration: TLS 1.3 with ring, the given roots, ALPN `perpetua/2`,
/// keep-alives so that a silent connection stays up and a dead server is noticed in seconds.
pub fn quic_client_config(ca_pem: &[u8]) -> Result<quinn::ClientConfig, ClientError> {
    quic_client_config_with(ca_pem, IDLE_TIMEOUT)
}

/// [`quic_client_config`] with another idle timeout: a dead server is noticed within it.
pub fn quic_client_config_with(ca_pem: &[u8], idle_timeout: Duration) -> Result<quinn::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert =
            cert.map_err(|e| ClientError::Config(format!("the server certificate (--ca) is not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| ClientError::Config(format!("the server certificate (--ca) is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Config("the server certificate file (--ca) holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| ClientError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    let idle =
        idle_timeout.try_into().map_err(|_| ClientError::Config(format!("idle timeout {idle_timeout:?} too long")))?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(idle_timeout / 3));
    transport.stream_receive_window((8u32 << 20).into());
    transport.receive_window((32u32 << 20).into());
    transport.send_window(16 << 20);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

impl Conn {
    /// Connects, says hello, opens the request streams.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        quic: &quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        config: &ClientConfig,
    ) -> Result<Conn, ClientError> {
        let connect_err = |message: String| ClientError::Connect { server: config.server.clone(), message };
        let connecting =
            endpoint.connect_with(quic.clone(), addr, server_name).map_err(|e| connect_err(e.to_string()))?;
        let connection = match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(match ClientError::from_connection(&e) {
                    ClientError::ConnectionLost(m) => connect_err(m),
                    other => other,
                })
            }
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {:?}; is stockd running and listening there (UDP)?",
                    config.connect_timeout
                )))
            }
        };
        let lost = |e: &quinn::ConnectionError| ClientError::from_connection(e);
        let (mut send, recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
        let mut frame = Vec::new();
        let hello = RequestBody::Hello {
            version: PROTOCOL_VERSION,
            token: config.token.clone(),
            client: config.client_name.clone(),
        };
        encode_request(&mut frame, HELLO_ID, &hello);
        let write = send.write_all(&frame).await;
        let mut reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, config.request_timeout);
        let answer = match tokio::time::timeout(config.connect_timeout, reader.next()).await {
            Ok(Ok(Some(payload))) => Response::decode(payload).map_err(|e| ClientError::Protocol(e.to_string()))?,
            Ok(Ok(None)) => return Err(ClientError::ConnectionLost("the server ended the stream".into())),
            Ok(Err(e)) => return Err(ClientError::from_read(e)),
            Err(_) => return Err(ClientError::Timeout(config.connect_timeout)),
        };
        let welcome = match answer.body {
            ResponseBody::Welcome(w) => w,
            ResponseBody::Error { code, message } => return Err(ClientError::Refused { code, message }),
            other => return Err(super::unexpected("a welcome", &other)),
        };
        write.map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
        let broken = Arc::new(AtomicBool::new(false));
        let stream_count = config.streams.clamp(1, (welcome.limits.streams_max as usize / 2).max(1));
        let mut streams = vec![start_stream(send, reader, connection.clone(), broken.clone())];
        for _ in 1..stream_count {
            let (send, recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
            let reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, config.request_timeout);
            streams.push(start_stream(send, reader, connection.clone(), broken.clone()));
        }
        Ok(Conn {
            quic: connection,
            permits: Semaphore::new(welcome.limits.requests_in_flight_max as usize),
            welcome,
            streams,
            next_stream: AtomicUsize::new(0),
            next_id: AtomicU64::new(HELLO_ID + 1),
            broken,
        })
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.quic.close_reason().is_some()
    }

    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    fn send(&self, body: &[u8], waiter: Waiter) -> Result<(u64, &ReqStream), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = &self.streams[self.next_stream.fetch_add(1, Ordering::Relaxed) % self.streams.len()];
        {
            let mut pending = stream.pending.lock().unwrap();
            if let Some(e) = &pending.closed {
                return Err(e.clone());
            }
            pending.waiters.insert(id, waiter);
        }
        let mut frame = Vec::with_capacity(body.len() + 16);
        encode_request_raw(&mut frame, id, body);
        if stream.tx.send(frame).is_err() {
            stream.pending.lock().unwrap().waiters.remove(&id);
            return Err(ClientError::ConnectionLost("the request stream is closed".into()));
        }
        Ok((id, stream))
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, body: &[u8], timeout: Duration) -> Reply {
        let _permit = self.permits.acquire().await.map_err(|_| ClientError::ConnectionLost("closed".into()))?;
        let (tx, rx) = oneshot::channel();
        let (id, stream) = self.send(body, Waiter::One(tx))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ClientError::ConnectionLost("the connection ended".into())),
            Err(_) => {
                stream.pending.lock().unwrap().waiters.remove(&id);
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Sends one request and collects every frame of its answer, up to the last.
    pub async fn call_chunked(&self, body: &[u8], timeout: Duration) -> Result<Vec<ResponseBody>, ClientError> {
        let _permit = self.permits.acquire().await.map_err(|_| ClientError::ConnectionLost("closed".into()))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (id, stream) = self.send(body, Waiter::Many(tx))?;
        let mut parts = Vec::new();
        loop {
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(Ok(part))) => {
                    let last = part.is_last();
                    parts.push(part);
                    if last {
                        return Ok(parts);
                    }
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err(ClientError::ConnectionLost("the connection ended".into())),
                Err(_) => {
                    stream.pending.lock().unwrap().waiters.remove(&id);
                    return Err(ClientError::Timeout(timeout));
                }
            }
        }
    }
}

fn start_stream(
    send: quinn::SendStream,
    reader: FrameReader,
    connection: quinn::Connection,
    broken: Arc<AtomicBool>,
) -> ReqStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(Mutex::new(Pending::default()));
    tokio::spawn(write_loop(send, rx, broken.clone()));
    tokio::spawn(read_loop(reader, pending.clone(), connection, broken));
    ReqStream { tx, pending }
}

async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Vec<u8>>, broken: Arc<AtomicBool>) {
    const WRITE_BYTES_MAX: usize = 256 << 10;
    let mut batch = Vec::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        // Let the other tasks that are ready (answers completed together by one group commit)
        // add their frames first, so that they share a write and QUIC packets.
        tokio::task::yield_now().await;
        let result = match rx.try_recv() {
            Err(_) => send.write_all(&first).await,
            Ok(next) => {
                batch.clear();
                batch.extend_from_slice(&first);
                batch.extend_from_slice(&next);
                while batch.len() < WRITE_BYTES_MAX {
                    match rx.try_recv() {
                        Ok(frame) => batch.extend_from_slice(&frame),
                        Err(_) => break,
                    }
                }
                send.write_all(&batch).await
            }
        };
        if result.is_err() {
            broken.store(true, Ordering::Release);
            return;
        }
    }
    let _ = send.finish();
}

async fn read_loop(
    mut reader: FrameReader,
    pending: Arc<Mutex<Pending>>,
    connection: quinn::Connection,
    broken: Arc<AtomicBool>,
) {
    let error = loop {
        let payload = match reader.next().await {
            Ok(Some(payload)) => payload,
            Ok(None) => break ClientError::ConnectionLost("the server ended the stream".into()),
            Err(e) => break ClientError::from_read(e),
        };
        let response = match Response::decode(payload) {
            Ok(r) => r,
            Err(e) => break ClientError::Protocol(e.to_string()),
        };
        if response.id == HELLO_ID {
            // An error about the stream as a whole (frame_too_large, too_many_streams).
            match response.body {
                ResponseBody::Error { code, message } => break ClientError::Refused { code, message },
                other => break super::unexpected("an error", &other),
            }
        }
        let mut p = pending.lock().unwrap();
        let last = response.body.is_last();
        match p.waiters.get(&response.id) {
            Some(Waiter::Many(tx)) => {
                let _ = tx.send(Ok(response.body));
                if last {
                    p.waiters.remove(&response.id);
                }
            }
            Some(Waiter::One(_)) => {
                if let Some(Waiter::One(tx)) = p.waiters.remove(&response.id) {
                    let _ = tx.send(Ok(response.body));
                }
            }
            None => {} // timed out meanwhile
        }
    };
    let error = match connection.close_reason() {
        Some(reason) => ClientError::from_connection(&reason),
        None => error,
    };
    broken.store(true, Ordering::Release);
    let mut p = pending.lock().unwrap();
    for (_, waiter) in p.waiters.drain() {
        match waiter {
            Waiter::One(tx) => {
                let _ = tx.send(Err(error.clone()));
            }
            Waiter::Many(tx) => {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
    p.closed = Some(error);
}
