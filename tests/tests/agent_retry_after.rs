//! The agent obeys a 429's `Retry-After` at every step against the real server: a typed
//! enrollment is not sent again before it has passed, a provisioned code is not retried
//! on the (2-second) backoff, and a renewal refused by the per-recorder limit waits for
//! it while heartbeats go on. The agents here have `max_backoff_secs = 2`, so an agent
//! that took a 429 for an outage would be back within two seconds.

use std::time::Duration;

use contera_e2e::tls_client::{client_config, post_http1, tls_connect};
use contera_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A server that takes 2 enrollment attempts a minute, with both used up (by empty
/// bodies, each answered 400), so the next one is answered 429.
fn server_with_enrollments_used_up() -> Server {
    let server = Server::start_configured(1, "enroll_attempts_total_per_minute = 2\n", &[]);
    let config = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let addr = server.addr();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            for _ in 0..2 {
                let mut tls = tls_connect(None, addr, config.clone()).await.unwrap();
                let (status, body) = post_http1(&mut tls, "/api/v1/enroll", b"{}").await.unwrap();
                assert_eq!(status, 400, "{body}");
            }
        });
    server
}

/// The `error` object `enroll --json` printed.
fn enroll_error(output: &str) -> Value {
    let json = &output[output.find('{').expect("JSON in the output")..];
    let end = json.rfind('}').expect("JSON object ends");
    let value: Value =
        serde_json::from_str(&json[..=end]).unwrap_or_else(|e| panic!("{e}: {output}"));
    value["error"].clone()
}

#[test]
fn a_typed_enrollment_answered_429_is_not_sent_again_before_retry_after() {
    let server = server_with_enrollments_used_up();
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-429-TYPED");

    let (_, out) = agent.enroll(&code).unwrap_err();
    let first = enroll_error(&out);
    assert_eq!(first["kind"], "busy", "{out}");
    let asked = first["retry_after_secs"]
        .as_u64()
        .expect("Retry-After kept");
    assert!((1..=60).contains(&asked), "{first}");

    // Typed again at once: answered by the agent itself, nothing sent.
    let (_, out) = agent.enroll(&code).unwrap_err();
    let again = enroll_error(&out);
    assert_eq!(again["kind"], "busy", "{out}");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("the server asked to wait before the next enrollment"),
        "{again}"
    );
    assert!(
        again["retry_after_secs"].as_u64().unwrap() <= asked,
        "{again}"
    );
    assert_eq!(
        agent.log_text().matches("enrolling with code").count(),
        1,
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_provisioned_code_answered_429_is_retried_only_after_retry_after() {
    let server = server_with_enrollments_used_up();
    let (_, code) = server.create_account("Fleet", "customer", None);
    let mut agent = Agent::configure(&server, "NVR-429-ZT");
    let code_file = agent.dir.path().join("registration-code");
    std::fs::write(&code_file, format!("{code}\n")).unwrap();
    agent.append_config(&format!(
        "[enrollment]\ncode_file = \"{}\"\n",
        code_file.display()
    ));
    agent.run();

    let failure = wait_for(WAIT, "the provisioned enrollment answered 429", || {
        let status = agent.status();
        (status["last_failure"]["kind"] == "busy").then(|| status["last_failure"].clone())
    });
    let asked = failure["retry_after_secs"]
        .as_u64()
        .expect("Retry-After kept");
    // One attempt back every 30 s: the wait asked for outlasts the look below.
    assert!(asked >= 4, "{failure}");
    // The backoff cap is 2 s: an agent that took the 429 for an outage would have tried
    // again by now.
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.log_text();
    assert_eq!(log.matches("enrolling with code").count(), 1, "{log}");
    assert!(
        log.contains("enrolling with the provisioned code failed: the server is busy"),
        "{log}"
    );
    assert!(code_file.exists(), "kept for the next try");
}

#[test]
fn a_renewal_answered_429_waits_for_retry_after_while_heartbeats_go_on() {
    // 2-second certificates: the agent renews about every 1.6 s and meets the server's
    // per-recorder limit (12 an hour) within half a minute.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("provisioning.toml");
    std::fs::write(&config, "certificate_lifetime_secs = 2\n").unwrap();
    let server = Server::start_with(1, &["--config", config.to_str().unwrap()]);
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-429-RENEW");
    agent.enroll(&code).unwrap();

    let refused = "certificate renewal refused for now";
    wait_for(Duration::from_secs(90), "a renewal answered 429", || {
        agent.log_text().contains(refused).then_some(())
    });
    let heartbeats_before = agent.log_text().matches("heartbeat").count();
    // Heartbeats are due every second; the refused renewal is not tried with them.
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log_text();
    assert_eq!(log.matches(refused).count(), 1, "{log}");
    assert!(!log.contains("certificate renewal failed"), "{log}");
    assert!(
        log.matches("heartbeat").count() > heartbeats_before,
        "heartbeats go on: {log}"
    );
}
