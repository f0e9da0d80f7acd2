//! Servers for the integration tests on loopback: in-process (a thread with its own runtime, the
//! way `stockd` runs) or the real `stockd` binary; and helpers to build movements and clients,
//! and to speak to a server frame by frame on a raw stream.

use engine::client::{Client, ClientConfig};
use engine::core::*;
use engine::protocol::stream::FrameReader;
use engine::protocol::{encode_request, RequestBody, Response, ResponseBody, PROTOCOL_VERSION, SERVER_FRAME_BYTES_MAX};
use engine::server::{Server, ServerConfig};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free UDP port on loopback (free when asked; a later bind may race, which tests accept).
pub fn free_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// A server running on a thread of its own, with a current-thread runtime like `stockd`'s.
pub struct InProcess {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<Option<PathBuf>, String>>>,
}

/// A test configuration: loopback, free ports, 2 shards, durable acknowledgements.
pub fn test_config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.engine.shards = 2;
    c
}

impl InProcess {
    pub fn start(dir: &Path) -> InProcess {
        InProcess::start_with(test_config(dir))
    }

    pub fn start_with(config: ServerConfig) -> InProcess {
        let dir = config.data_dir().to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let server = match Server::start(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                };
                let _ = ready_tx.send(Ok((server.local_addr(), server.metrics_addr())));
                let _ = stop_rx.await;
                server.shutdown().await
            })
        });
        let (addr, metrics) = ready_rx.recv().unwrap().expect("the server starts");
        InProcess { addr, metrics, dir, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Graceful shutdown; returns the checkpoint's path.
    pub fn stop(mut self) -> Option<PathBuf> {
        self.stop_inner().expect("a clean shutdown")
    }

    fn stop_inner(&mut self) -> Result<Option<PathBuf>, String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(None),
        }
    }

    pub fn admin_token(&self) -> String {
        admin_token(&self.dir)
    }

    pub fn config(&self, token: &str) -> ClientConfig {
        client_config(&self.dir, self.addr, token)
    }

    pub async fn admin(&self) -> Client {
        Client::connect(self.config(&self.admin_token())).await.expect("the admin connects")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

pub fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token")).unwrap().trim().to_string()
}

pub fn client_config(dir: &Path, addr: SocketAddr, token: &str) -> ClientConfig {
    let ca = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let mut c = ClientConfig::new(addr.to_string(), ca, token);
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(10);
    c
}

/// The `stockd` binary, started in `dir` (its working directory, so `./data` is `dir/data`).
pub struct Stockd {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Stockd {
    /// Starts `stockd --listen ADDR --metrics-listen off --shards 2 ARGS` in `dir`, waiting for it
    /// to say it listens.
    pub fn spawn(dir: &Path, addr: SocketAddr, args: &[&str]) -> Stockd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockd"))
            .current_dir(dir)
            .args(["--listen", &addr.to_string(), "--metrics-listen", "off", "--shards", "2"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stockd starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).expect("stockd says it listens");
            if line.contains("listening on") {
                break;
            }
        }
        Stockd { child, addr, dir: dir.to_owned() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Stockd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

pub fn mv(key: Option<&str>, kind: MovementKind) -> Movement {
    Movement { key: key.map(Into::into), channel: "web".into(), reference: None, occurred_at: None, kind }
}

pub fn receive(sku: &str, loc: &str, qty: Qty) -> MovementKind {
    MovementKind::Receive { sku: sku.into(), location: loc.into(), qty, unit_cost: None, units: Units::ANY }
}

pub fn sell(sku: &str, loc: &str, qty: Qty) -> MovementKind {
    MovementKind::Sell {
        sku: sku.into(),
        location: loc.into(),
        qty,
        unit_price: None,
        hold: None,
        allow_negative: false,
        units: Units::ANY,
    }
}

pub fn reserve(sku: &str, loc: &str, qty: Qty) -> MovementKind {
    let line = Line { sku: sku.into(), location: loc.into(), qty, unit_price: None, kit: None, units: Units::ANY };
    MovementKind::Reserve { hold: 0, lines: vec![line], expires_at: now_ms() + 600_000 }
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as Millis
}

/// Whether the slow variants of tests should run (`PERPETUA_SLOW_TESTS=1`).
pub fn slow_tests() -> bool {
    std::env::var("PERPETUA_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// A connection and its first stream, spoken to frame by frame.
pub struct Raw {
    pub _endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub reader: FrameReader,
}

/// A QUIC connection to `server`, before any hello.
pub async fn raw_connection(server: &InProcess) -> (quinn::Endpoint, quinn::Connection) {
    let ca = std::fs::read(server.dir.join("tls/cert.pem")).unwrap();
    let config = engine::client::quic_client_config(&ca).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint.connect_with(config, server.addr, "localhost").unwrap().await.unwrap();
    (endpoint, conn)
}

/// The frame of a request.
pub fn frame(id: u64, body: &RequestBody) -> Vec<u8> {
    let mut f = Vec::new();
    encode_request(&mut f, id, body);
    f
}

/// A frame around any payload.
pub fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Connects and says hello with `token`; returns the first stream, ready for requests.
pub async fn raw(server: &InProcess, token: &str) -> Raw {
    let (endpoint, conn) = raw_connection(server).await;
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = RequestBody::Hello { version: PROTOCOL_VERSION, token: token.into(), client: "raw".into() };
    send.write_all(&frame(0, &hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
    let welcome = next(&mut reader).await;
    assert!(matches!(welcome.body, ResponseBody::Welcome(_)), "{welcome:?}");
    Raw { _endpoint: endpoint, conn, send, reader }
}

/// The next answer on a raw stream (within 10 s).
pub async fn next(reader: &mut FrameReader) -> Response {
    let payload = tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("an answer").unwrap();
    Response::decode(payload.expect("a frame")).unwrap()
}
