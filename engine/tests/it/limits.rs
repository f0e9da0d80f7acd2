//! Limits and bad input against a live server, through raw QUIC streams: malformed frames,
//! oversized frames and batches, a trickling client, too many streams, requests and connections,
//! a bad hello. Each gets its error, the server stays up, and other clients are unaffected.

use crate::harness::*;
use engine::client::Client;
use engine::protocol::stream::FrameReader;
use engine::protocol::*;
use engine::server::ServerConfig;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn error_code(r: &Response) -> &str {
    match &r.body {
        ResponseBody::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn still_serves(server: &InProcess) {
    let c = server.admin().await;
    let r = c.submit_one(&mv(None, receive("OK", "dc", 1))).await.unwrap();
    assert!(r.outcome.is_ok());
    c.close();
}

fn start(tweak: impl FnOnce(&mut ServerConfig)) -> (tempfile::TempDir, InProcess) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let server = InProcess::start_with(config);
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_malformed_and_the_stream_goes_on() {
    let (_dir, server) = start(|_| {});
    let mut r = raw(&server, &server.admin_token()).await;
    // An id, then garbage.
    r.send.write_all(&raw_frame(&[5, 0xff, 0xff, 0xff, 0xff, 0xff])).await.unwrap();
    let a = next(&mut r.reader).await;
    assert_eq!((a.id, error_code(&a)), (5, "malformed"));
    // An empty payload.
    r.send.write_all(&raw_frame(&[])).await.unwrap();
    assert_eq!(error_code(&next(&mut r.reader).await), "malformed");
    // Trailing bytes after a valid request.
    let mut f = frame(6, &RequestBody::Status)[4..].to_vec();
    f.push(0);
    r.send.write_all(&raw_frame(&f)).await.unwrap();
    let a = next(&mut r.reader).await;
    assert_eq!((a.id, error_code(&a)), (6, "malformed"));
    // A second hello.
    let hello = RequestBody::Hello { version: 1, token: server.admin_token(), client: "again".into() };
    r.send.write_all(&frame(7, &hello)).await.unwrap();
    assert_eq!(error_code(&next(&mut r.reader).await), "malformed");
    // The stream still works.
    r.send.write_all(&frame(8, &RequestBody::Status)).await.unwrap();
    let a = next(&mut r.reader).await;
    assert!(matches!(a.body, ResponseBody::Status(_)) && a.id == 8);

    // Random frames from a reader token: one answer each, never a crash.
    let (_, reader_token) = server.admin().await.create_token("fuzz", Role::Reader).await.unwrap();
    let mut r = raw(&server, &reader_token).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let frames = 300;
    let mut bytes = Vec::new();
    for i in 0..frames {
        let len = rng.gen_range(1..40);
        let mut payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        payload[0] = (i % 100) as u8 + 1; // an id
        bytes.extend(raw_frame(&payload));
    }
    r.send.write_all(&bytes).await.unwrap();
    for _ in 0..frames {
        next(&mut r.reader).await;
    }
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_and_frames_are_refused() {
    let (_dir, server) = start(|c| {
        c.limits.batch_movements_max = 10;
        c.limits.frame_bytes_max = 4096;
    });
    let c = server.admin().await;
    let batch: Vec<_> = (0..11).map(|_| mv(None, receive("BIG", "dc", 1))).collect();
    let e = c.submit(&batch).await.unwrap_err();
    assert_eq!(e.code(), Some("batch_too_large"), "{e}");
    // The client refuses before sending; the server refuses too.
    let mut r = raw(&server, &server.admin_token()).await;
    r.send.write_all(&frame(3, &RequestBody::Submit { movements: batch })).await.unwrap();
    let a = next(&mut r.reader).await;
    assert_eq!((a.id, error_code(&a)), (3, "batch_too_large"));
    assert_eq!(c.level("BIG", "dc").await.unwrap(), None, "nothing was applied");

    // A frame above the limit: refused from its header, the stream is closed, the connection lives.
    r.send.write_all(&100_000u32.to_le_bytes()).await.unwrap();
    let _ = r.send.write_all(&[0u8; 1000]).await;
    let a = next(&mut r.reader).await;
    assert_eq!((a.id, error_code(&a)), (0, "frame_too_large"));
    assert!(tokio::time::timeout(Duration::from_secs(5), r.reader.next()).await.unwrap().map_or(true, |f| f.is_none()));
    let (mut send, recv) = r.conn.open_bi().await.unwrap();
    send.write_all(&frame(9, &RequestBody::Status)).await.unwrap();
    let mut reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
    assert!(matches!(next(&mut reader).await.body, ResponseBody::Status(_)));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_cut_off_and_others_are_not() {
    let (_dir, server) = start(|c| c.limits.request_timeout_ms = 300);
    let other = server.admin().await;
    let mut r = raw(&server, &server.admin_token()).await;
    let f = frame(1, &RequestBody::Status);
    for b in &f[..f.len() - 1] {
        if r.send.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The other client is served meanwhile.
        assert!(other.status().await.is_ok());
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), r.conn.closed()).await.expect("cut off");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(ErrorCode::from_app_code(c.error_code.into_inner()), Some(ErrorCode::TooSlow));
            assert!(String::from_utf8_lossy(&c.reason).starts_with("too_slow"));
        }
        other => panic!("unexpected {other}"),
    }
    // A hello that never comes is cut off too.
    let (_endpoint, conn) = raw_connection(&server).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1, 0]).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("cut off");
    assert!(matches!(reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 10));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_streams_requests_and_connections_each_get_their_error() {
    let (_dir, server) = start(|c| {
        c.limits.streams_max = 2;
        c.limits.requests_in_flight_max = 4;
        c.connections_max = 3;
    });
    let mut r = raw(&server, &server.admin_token()).await;
    // Stream 0 is open; a second is allowed, a third gets too_many_streams.
    let (mut s1, recv1) = r.conn.open_bi().await.unwrap();
    s1.write_all(&frame(1, &RequestBody::Status)).await.unwrap();
    let mut r1 = FrameReader::new(recv1, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
    assert!(matches!(next(&mut r1).await.body, ResponseBody::Status(_)));
    let (mut s2, recv2) = r.conn.open_bi().await.unwrap();
    let _ = s2.write_all(&frame(2, &RequestBody::Status)).await;
    let mut r2 = FrameReader::new(recv2, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
    assert_eq!(error_code(&next(&mut r2).await), "too_many_streams");
    // The streams within the limit still work.
    s1.write_all(&frame(3, &RequestBody::Status)).await.unwrap();
    assert!(matches!(next(&mut r1).await.body, ResponseBody::Status(_)));

    // Requests beyond the in-flight limit are refused, the others answered: one answer each.
    let mut burst = Vec::new();
    for i in 0..64 {
        let m = mv(None, receive("INF", "dc", 1));
        burst.extend(frame(100 + i, &RequestBody::Submit { movements: vec![m] }));
    }
    r.send.write_all(&burst).await.unwrap();
    let (mut done, mut refused) = (0, 0);
    for _ in 0..64 {
        match next(&mut r.reader).await.body {
            ResponseBody::Outcomes { .. } => done += 1,
            ResponseBody::Error { code, .. } if code == "too_many_requests" => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(done >= 4 && refused >= 1, "{done} done, {refused} refused");
    let c = server.admin().await;
    assert_eq!(c.level("INF", "dc").await.unwrap().unwrap().on_hand, done);

    // Connections: r and c are two; a third is the last allowed; a fourth is refused.
    let third = server.admin().await;
    let e = Client::connect(server.config(&server.admin_token())).await.err().expect("refused");
    assert_eq!(e.code(), Some("too_many_connections"), "{e}");
    third.close_and_wait().await;
    r.conn.close(0u32.into(), b"done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_hello_is_refused_with_its_code() {
    let (_dir, server) = start(|_| {});
    for (body, code) in [
        (
            RequestBody::Hello { version: 99, token: server.admin_token(), client: "x".into() },
            ErrorCode::UnsupportedVersion,
        ),
        (RequestBody::Status, ErrorCode::Malformed),
        (
            RequestBody::Hello { version: PROTOCOL_VERSION, token: "pt_x".into(), client: "x".into() },
            ErrorCode::Unauthenticated,
        ),
    ] {
        let (_endpoint, conn) = raw_connection(&server).await;
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&frame(0, &body)).await.unwrap();
        let mut reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
        assert_eq!(error_code(&next(&mut reader).await), code.as_str());
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == code.app_code() as u64),
            "{reason}"
        );
    }
    still_serves(&server).await;
}

/// A client of protocol version 1 (ALPN `perpetua/1`, hello version 1) is told the server
/// speaks another version, instead of failing the handshake or misreading movements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_client_gets_unsupported_version() {
    use rustls::pki_types::pem::PemObject;
    let (_dir, server) = start(|_| {});
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(server.dir.join("tls/cert.pem")).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"perpetua/1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = quinn::ClientConfig::new(std::sync::Arc::new(quic));
    let conn = endpoint.connect_with(config, server.addr, "localhost").unwrap().await.expect("the handshake passes");
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = RequestBody::Hello { version: 1, token: server.admin_token(), client: "v1".into() };
    send.write_all(&frame(0, &hello)).await.unwrap();
    let mut reader = FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, Duration::from_secs(5));
    match next(&mut reader).await.body {
        ResponseBody::Error { code, message } => {
            assert_eq!(code, "unsupported_version");
            assert_eq!(message, "this server speaks protocol version 2, not 1");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let (_dir, server) = start(|c| c.limits.idle_timeout_ms = 300);
    let ca = std::fs::read(server.dir.join("tls/cert.pem")).unwrap();
    let mut config = engine::client::quic_client_config(&ca).unwrap();
    config.transport_config(std::sync::Arc::new(quinn::TransportConfig::default())); // no keep-alives
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint.connect_with(config, server.addr, "localhost").unwrap().await.unwrap();
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("closed");
    assert!(matches!(reason, quinn::ConnectionError::TimedOut), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The library's client reconnects by itself when it needs the connection again.
    let c = server.admin().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(c.status().await.is_ok());
}
