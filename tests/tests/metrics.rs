//! `GET /metrics` on its own listener, scraped and parsed by the Prometheus project's
//! OpenMetrics parser: what it counts follows what recorders did, and an overloaded
//! server answers 429 with `Retry-After` at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contera_e2e::*;
use serde_json::Value;

fn value(metrics: &std::collections::BTreeMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

fn heartbeat(server: &Server, nvr: &CurlRecorder) -> u16 {
    curl_post(
        server,
        "/api/v1/heartbeat",
        br#"{"status":{"uptime_secs":5}}"#,
        Some((&nvr.cert, &nvr.key)),
    )
    .unwrap()
    .0
}

#[test]
fn metrics_follow_enrollments_heartbeats_revocations_and_rate_limits() {
    let server = Server::start_configured(1, "enroll_attempts_per_minute = 3\n", &[]);
    let (_, code) = server.create_account("Store", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let first = enroll_with_curl(&server, &code, "NVR-M1", dir.path());
    let second = enroll_with_curl(&server, &code, "NVR-M2", dir.path());
    // One wrong code is refused; the next attempt from this address is over the limit.
    let (key, csr) = openssl_key_and_csr(dir.path(), "NVR-M3");
    let _ = key;
    let wrong = enroll_body("CNTR-AAAA-AAAA-AAAA-AAAA", &csr, "NVR-M3");
    let (status, _) = curl_post(&server, "/api/v1/enroll", &wrong, None).unwrap();
    assert_ne!(status, 200);
    let (status, _) = curl_post(&server, "/api/v1/enroll", &wrong, None).unwrap();
    assert_eq!(status, 429);

    for _ in 0..5 {
        assert_eq!(heartbeat(&server, &first), 200);
        assert_eq!(heartbeat(&server, &second), 200);
    }
    let out = server.admin(&["recorders", "revoke", &second.recorder_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI is another process: the revocation reaches heartbeats within the refresh.
    wait_for(
        Duration::from_secs(5),
        "the revocation to be refused",
        || (heartbeat(&server, &second) == 410).then_some(()),
    );
    // Online means seen within three 1 s intervals: one more beat, then long enough for a
    // presence flush (every second by default) to have written it.
    assert_eq!(heartbeat(&server, &first), 200);
    std::thread::sleep(Duration::from_millis(1200));

    let m = server.metrics();
    assert_eq!(
        value(&m, r#"contera_enrollments_total{outcome="new"}"#),
        2.0,
        "{m:#?}"
    );
    assert_eq!(
        value(&m, r#"contera_enrollments_total{outcome="rate_limited"}"#),
        1.0
    );
    assert!(value(&m, r#"contera_enrollments_total{outcome="refused"}"#) >= 1.0);
    assert_eq!(
        value(&m, r#"contera_rate_limited_total{reason="enroll_address"}"#),
        1.0
    );
    // Ten, and those sent while the revocation was on its way.
    let ok = value(&m, r#"contera_heartbeats_total{outcome="ok"}"#);
    assert!(ok >= 10.0, "{m:#?}");
    assert!(value(&m, r#"contera_heartbeats_total{outcome="refused"}"#) >= 1.0);
    assert_eq!(
        value(&m, r#"contera_recorders{state="online"}"#),
        1.0,
        "{m:#?}"
    );
    assert_eq!(value(&m, r#"contera_recorders{state="revoked"}"#), 1.0);
    assert_eq!(value(&m, r#"contera_recorders{state="offline"}"#), 0.0);
    // Every heartbeat after a recorder's first is answered from memory.
    let hits = value(&m, r#"contera_facts_lookups_total{outcome="hit"}"#);
    let misses = value(&m, r#"contera_facts_lookups_total{outcome="miss"}"#);
    assert!(
        hits >= 14.0 && misses <= 6.0,
        "hits {hits}, misses {misses}"
    );
    assert!(value(&m, "contera_facts_cache_hit_ratio") > 0.6);
    // One statement per flush, whatever it held.
    let flushes = value(&m, "contera_presence_flush_rows_count");
    assert!(flushes >= 1.0, "{m:#?}");
    assert_eq!(
        value(&m, "contera_presence_flush_statements_total"),
        flushes
    );
    assert!(value(&m, "contera_presence_flush_rows_sum") >= 2.0);
    assert_eq!(
        value(
            &m,
            r#"contera_request_duration_seconds_count{route="heartbeat"}"#
        ),
        ok + value(&m, r#"contera_heartbeats_total{outcome="refused"}"#)
    );
    assert!(
        value(
            &m,
            r#"contera_request_duration_seconds_count{route="enroll"}"#
        ) >= 4.0
    );
    assert!(value(&m, "contera_store_pool_max_connections") >= 1.0);
    assert_eq!(value(&m, "contera_requests_in_flight"), 0.0);
}

#[test]
fn the_metrics_listener_is_plain_http_apart_from_the_device_port() {
    let server = Server::start();
    assert_ne!(server.metrics_port, server.port);
    // The device port speaks only TLS: no metrics there.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(server.ca_file())
        .arg(format!("{}/metrics", server.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let m = server.metrics();
    assert!(
        m.contains_key("contera_store_pool_max_connections"),
        "{m:#?}"
    );
}

#[test]
fn an_overloaded_server_answers_429_with_retry_after_at_once_and_recovers() {
    let server = Server::start_configured(
        1,
        "max_requests_in_flight = 1\noverload_retry_after_secs = 7\n",
        &[],
    );
    // One request held in flight: a body trickled in at 200 bytes a second.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b' '; 20_000]).unwrap();
    let mut slow = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--limit-rate", "200", "-H"])
        .arg("content-type: application/json")
        .arg("--cacert")
        .arg(server.ca_file())
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/api/v1/heartbeat", server.url()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || (value(&server.metrics(), "contera_requests_in_flight") == 1.0).then_some(()),
    );
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--cacert"])
        .arg(server.ca_file())
        .args(["-H", "content-type: application/json", "--data", "{}"])
        .arg(format!("{}/api/v1/heartbeat", server.url()))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("refused in {:?}", started.elapsed());
    assert!(
        answer.starts_with("HTTP/2 429") || answer.starts_with("HTTP/1.1 429"),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 7"),
        "{answer}"
    );
    let json: Value = serde_json::from_str(answer.rsplit("\r\n\r\n").next().unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "rate_limited", "{json}");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("overloaded"));
    assert_eq!(
        value(
            &server.metrics(),
            r#"contera_rate_limited_total{reason="overload"}"#
        ),
        1.0
    );
    // The held request ends (its client goes away): the slot is free again.
    slow.kill().unwrap();
    slow.wait().unwrap();
    wait_for(Duration::from_secs(10), "the slot to be free", || {
        let (status, _) =
            curl_post(&server, "/api/v1/heartbeat", br#"{"status":{}}"#, None).unwrap();
        (status == 401).then_some(())
    });
}
