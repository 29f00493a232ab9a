//! The server lives within its open-file limit: it raises the soft limit to the hard one
//! at start, fits `max_connections` under it with descriptors kept back for the database,
//! and thousands of recorders on keep-alive connections heartbeat under a soft limit of
//! 1024 (the systemd default).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contera_e2e::tls_client::{client_config, post_http1, tls_connect};
use contera_e2e::*;
use serde_json::Value;

const RECORDERS: usize = 2000;
const SOURCE_ADDRESSES: usize = 10;

fn soft_and_hard_nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn two_thousand_keep_alive_recorders_heartbeat_under_a_1024_soft_open_file_limit() {
    let server = Server::start_configured(30, "", &["prlimit", "--nofile=1024:"]);
    let (soft, hard) = soft_and_hard_nofile(server.pid());
    assert!(
        hard > 1024 + RECORDERS as u64,
        "this test needs a hard open-file limit above {} (have {hard})",
        1024 + RECORDERS
    );
    assert_eq!(
        soft, hard,
        "the server raised its soft limit to the hard one"
    );
    assert!(
        server
            .log_text()
            .contains(&format!("raised the open-file limit from 1024 to {hard}")),
        "{}",
        server.log_text()
    );

    let (_, code) = server.create_account("Big Site", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = openssl_key_and_csr(dir.path(), "nvr");
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "FD-1"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let enrolled: Value = serde_json::from_str(&body).unwrap();
    let cert = dir.path().join("nvr.pem");
    std::fs::write(&cert, enrolled["certificate_pem"].as_str().unwrap()).unwrap();
    let config = client_config(&server.ca_file(), Some((&cert, &key)), &[b"http/1.1"]);
    let addr = server.addr();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let (first_round, second_round) = runtime.block_on(async {
        // Open every connection and heartbeat once on it, a hundred at a time.
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = Vec::new();
        for n in 0..RECORDERS {
            let from: IpAddr = format!("127.0.0.{}", 2 + n % SOURCE_ADDRESSES)
                .parse()
                .unwrap();
            let config = config.clone();
            let gate = gate.clone();
            let failures = failures.clone();
            tasks.push(tokio::spawn(async move {
                let _turn = gate.acquire().await.unwrap();
                let outcome = tokio::time::timeout(Duration::from_secs(60), async {
                    let mut tls = tls_connect(Some(from), addr, config).await?;
                    let answer =
                        post_http1(&mut tls, "/api/v1/heartbeat", br#"{"status":{}}"#).await?;
                    Ok::<_, std::io::Error>((tls, answer))
                })
                .await;
                match outcome {
                    Ok(Ok((tls, (200, _)))) => Some(tls),
                    other => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("recorder {n}: {:?}", other.map(|r| r.map(|(_, a)| a)));
                        }
                        None
                    }
                }
            }));
        }
        let mut open = Vec::new();
        for task in tasks {
            if let Some(tls) = task.await.unwrap() {
                open.push(tls);
            }
        }
        let first_round = open.len();
        // All of them are still open: heartbeat again on every kept connection.
        let mut tasks = Vec::new();
        for mut tls in open {
            tasks.push(tokio::spawn(async move {
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(60),
                        post_http1(&mut tls, "/api/v1/heartbeat", br#"{"status":{}}"#)
                    )
                    .await,
                    Ok(Ok((200, _)))
                )
                .then_some(tls)
            }));
        }
        let mut kept = Vec::new();
        for task in tasks {
            if let Some(tls) = task.await.unwrap() {
                kept.push(tls);
            }
        }
        (first_round, kept.len())
    });
    assert_eq!(first_round, RECORDERS, "heartbeats on new connections");
    assert_eq!(second_round, RECORDERS, "heartbeats on kept connections");
    let log = server.log_text();
    assert!(!log.contains("unable to open database file"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
    // The database still works with every connection open: an admin read and a write.
    assert_eq!(server.recorders(None).len(), 1);
    server.create_account("After", "customer", None);
}

#[test]
fn with_few_descriptors_extra_connections_wait_and_the_database_keeps_working() {
    // A hard limit of 200 leaves 72 connections after the 128 kept for the database.
    let server = Server::start_configured(
        30,
        "max_connections_per_address = 1000\n",
        &["prlimit", "--nofile=200:200"],
    );
    assert!(
        server.log_text().contains("serving at most 72 connections"),
        "{}",
        server.log_text()
    );
    let (_, code) = server.create_account("Site", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = openssl_key_and_csr(dir.path(), "nvr");
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "FD-2"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let enrolled: Value = serde_json::from_str(&body).unwrap();
    let id = enrolled["recorder_id"].as_str().unwrap().to_string();
    let cert = dir.path().join("nvr.pem");
    std::fs::write(&cert, enrolled["certificate_pem"].as_str().unwrap()).unwrap();
    let config = client_config(&server.ca_file(), Some((&cert, &key)), &[b"http/1.1"]);
    let addr = server.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // 100 clients; those past the 72 slots wait in the accept queue.
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let config = config.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    let mut tls = tls_connect(None, addr, config).await?;
                    let answer =
                        post_http1(&mut tls, "/api/v1/heartbeat", br#"{"status":{}}"#).await?;
                    Ok::<_, std::io::Error>((tls, answer.0))
                })
                .await
            }));
        }
        let mut held = Vec::new();
        let mut waited = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Ok((tls, 200))) => held.push(tls),
                Ok(other) => panic!("a served connection failed: {:?}", other.map(|(_, s)| s)),
                Err(_) => waited += 1,
            }
        }
        assert!((70..=72).contains(&held.len()), "{} served", held.len());
        assert_eq!(held.len() + waited, 100);
        // Every slot taken, yet the server still reads and writes its database: the
        // held connections heartbeat again and the flush marks the recorder online.
        for tls in held.iter_mut() {
            let (status, body) = post_http1(tls, "/api/v1/heartbeat", br#"{"status":{}}"#)
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
        // Freeing slots lets new connections in.
        held.truncate(10);
        let mut late = tokio::time::timeout(
            Duration::from_secs(10),
            tls_connect(None, addr, config.clone()),
        )
        .await
        .expect("a freed slot")
        .unwrap();
        let (status, _) = post_http1(&mut late, "/api/v1/heartbeat", br#"{"status":{}}"#)
            .await
            .unwrap();
        assert_eq!(status, 200);
    });
    wait_for(Duration::from_secs(10), "recorder online", || {
        (server.recorder(&id)["online"] == true).then_some(())
    });
    let log = server.log_text();
    assert!(!log.contains("unable to open database file"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}
