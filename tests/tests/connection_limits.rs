//! Connection slots cannot be held by clients that do nothing: a TCP connection that
//! never starts TLS, a TLS connection that never sends a request and an HTTP/2 connection
//! that only answers PINGs are closed on their deadlines, one address holds at most its
//! share, and a recorder that heartbeats every interval on one kept connection is never
//! cut off.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use contera_e2e::tls_client::{
    client_config, h2_connect, h2_ping_only, post_http1, post_http2, tcp_connect, tls_connect,
};
use contera_e2e::*;
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Limits small enough to fill from one test: 20 connections, 8 per address, 2 s for the
/// handshake and the first request, 6 s idle (a 1 s heartbeat plus jitter and 5 s).
const TIGHT: &str = "max_connections = 20\nmax_connections_per_address = 8\n\
tls_handshake_timeout_secs = 2\nfirst_request_timeout_secs = 2\nidle_timeout_secs = 6\n";

fn enrolled_identity(
    server: &Server,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (_, code) = server.create_account("Store", "customer", None);
    let (key, csr) = openssl_key_and_csr(dir, "nvr");
    let (status, body) = curl_post(
        server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "CONN-1"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let enrolled: Value = serde_json::from_str(&body).unwrap();
    let cert = dir.join("nvr.pem");
    std::fs::write(&cert, enrolled["certificate_pem"].as_str().unwrap()).unwrap();
    (cert, key)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits until the server closes `stream` (EOF or error); returns how long that took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn idle_sockets_and_ping_only_http2_from_one_address_cannot_stop_another_clients_heartbeat() {
    let server = Server::start_configured(1, TIGHT, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = enrolled_identity(&server, dir.path());
    let addr = server.addr();
    let anonymous = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let h2_only = client_config(&server.ca_file(), None, &[b"h2"]);
    let recorder = client_config(&server.ca_file(), Some((&cert, &key)), &[b"http/1.1"]);

    runtime().block_on(async {
        // 8 HTTP/2 connections that only answer PINGs (from 127.0.0.4), 10 raw TCP
        // connections that never start TLS (127.0.0.2) and 10 TLS connections that never
        // send a request (127.0.0.3): more than the 20 slots, from three addresses.
        let mut pingers = Vec::new();
        for _ in 0..8 {
            pingers.push(
                h2_ping_only(Some(ip("127.0.0.4")), addr, h2_only.clone())
                    .await
                    .unwrap(),
            );
        }
        let mut raw = Vec::new();
        for _ in 0..10 {
            raw.push(tcp_connect(Some(ip("127.0.0.2")), addr).await.unwrap());
        }
        let mut silent = Vec::new();
        for _ in 0..10 {
            let anonymous = anonymous.clone();
            silent.push(tokio::spawn(async move {
                let mut tls = tls_connect(Some(ip("127.0.0.3")), addr, anonymous)
                    .await
                    .ok()?;
                closed_within(&mut tls, Duration::from_secs(30)).await
            }));
        }

        // Meanwhile a recorder from another address gets its heartbeats through within
        // seconds, again and again.
        for _ in 0..3 {
            let started = Instant::now();
            let mut tls = tokio::time::timeout(
                Duration::from_secs(5),
                tls_connect(Some(ip("127.0.0.5")), addr, recorder.clone()),
            )
            .await
            .expect("a connection slot within 5 s")
            .unwrap();
            let (status, body) = post_http1(&mut tls, "/api/v1/heartbeat", br#"{"status":{}}"#)
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            assert!(started.elapsed() < Duration::from_secs(5));
        }

        // Every idle connection is closed by its deadline: raw TCP by the handshake
        // deadline (2 s after it was accepted), silent TLS by the first-request deadline
        // (2 s), PING-only HTTP/2 by the idle limit (6 s); with slack for the queue.
        for mut stream in raw {
            assert!(
                closed_within(&mut stream, Duration::from_secs(10))
                    .await
                    .is_some(),
                "raw TCP connection still open"
            );
        }
        for task in silent {
            if let Some(open_for) = task.await.unwrap() {
                assert!(
                    open_for < Duration::from_secs(10),
                    "silent TLS open {open_for:?}"
                );
            }
        }
        for task in pingers {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("PING-only HTTP/2 connection closed by the idle limit")
                .unwrap();
        }
    });
}

#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    let server = Server::start_configured(1, TIGHT, &[]);
    let addr = server.addr();
    let anonymous = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    runtime().block_on(async {
        let mut kept = Vec::new();
        let mut refused = 0;
        for _ in 0..12 {
            match tls_connect(Some(ip("127.0.0.4")), addr, anonymous.clone()).await {
                Ok(mut tls) => {
                    let (status, _) = post_http1(&mut tls, "/healthz", b"")
                        .await
                        .unwrap_or((0, String::new()));
                    if status == 405 || status == 200 {
                        kept.push(tls);
                    } else {
                        refused += 1;
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert_eq!(kept.len(), 8, "max_connections_per_address = 8");
        assert_eq!(refused, 4);
        // Another address still gets in.
        let mut other = tls_connect(Some(ip("127.0.0.5")), addr, anonymous.clone())
            .await
            .unwrap();
        let (status, _) = post_http1(&mut other, "/healthz", b"").await.unwrap();
        assert_eq!(status, 405, "POST /healthz answered, with the error shape");
    });
}

#[test]
fn a_recorder_heartbeating_every_interval_keeps_its_connection() {
    let server = Server::start_configured(1, TIGHT, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = enrolled_identity(&server, dir.path());
    let addr = server.addr();
    let http1 = client_config(&server.ca_file(), Some((&cert, &key)), &[b"http/1.1"]);
    let http2 = client_config(&server.ca_file(), Some((&cert, &key)), &[b"h2"]);
    runtime().block_on(async {
        let mut one = tls_connect(None, addr, http1).await.unwrap();
        let mut two = h2_connect(None, addr, http2).await.unwrap();
        // 10 s of beats 1.1 s apart (the interval plus its jitter) on the same two
        // connections: longer than the first-request (2 s) and idle (6 s) limits.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let (status, body) = post_http1(&mut one, "/api/v1/heartbeat", br#"{"status":{}}"#)
                .await
                .expect("HTTP/1 connection kept");
            assert_eq!(status, 200, "{body}");
            let (status, body) = post_http2(&mut two, "/api/v1/heartbeat", br#"{"status":{}}"#)
                .await
                .expect("HTTP/2 connection kept");
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    });
}

#[test]
fn clients_trickling_request_heads_or_bodies_lose_their_slots_on_deadlines() {
    let config = format!("{TIGHT}request_timeout_secs = 3\n");
    let server = Server::start_configured(1, &config, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = enrolled_identity(&server, dir.path());
    let addr = server.addr();
    let anonymous = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let recorder = client_config(&server.ca_file(), Some((&cert, &key)), &[b"http/1.1"]);
    runtime().block_on(async {
        use tokio::io::AsyncWriteExt;
        // 20 connections from four addresses, each trickling a byte a second: ten send
        // a request head that never ends, ten a body that never ends.
        let mut tricklers = Vec::new();
        for n in 0..20u8 {
            let anonymous = anonymous.clone();
            tricklers.push(tokio::spawn(async move {
                let from = ip(&format!("127.0.0.{}", 10 + n % 4));
                let mut tls = tls_connect(Some(from), addr, anonymous).await.ok()?;
                let start = Instant::now();
                let head: &[u8] = if n % 2 == 0 {
                    b"POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nX-Slow: "
                } else {
                    b"POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{"
                };
                if tls.write_all(head).await.is_err() {
                    return Some(start.elapsed());
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
                        return Some(start.elapsed());
                    }
                    if start.elapsed() > Duration::from_secs(40) {
                        return None;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A recorder gets its heartbeat through once deadlines free slots: the head
        // tricklers go after the first-request limit (2 s), the body tricklers after the
        // request limit (3 s), closed with their connection.
        let started = Instant::now();
        let mut tls = tokio::time::timeout(
            Duration::from_secs(10),
            tls_connect(Some(ip("127.0.0.20")), addr, recorder.clone()),
        )
        .await
        .expect("a slot within 10 s")
        .unwrap();
        let (status, body) = post_http1(&mut tls, "/api/v1/heartbeat", br#"{"status":{}}"#)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(10));
        for task in tricklers {
            let held = task.await.unwrap().expect("a trickler kept its slot for 40 s");
            assert!(held < Duration::from_secs(15), "held {held:?}");
        }
    });
}
