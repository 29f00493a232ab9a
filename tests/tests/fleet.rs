//! The fleet simulator against a real server: a storm of 50 enrollments saves 50
//! identities, they heartbeat open loop and show online, an empty state directory is
//! refused plainly, and an outage is survived with the agent's backoff and reported as
//! a histogram of reconnections.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use contera_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `contera-fleet MODE --server … --ca … --state STATE ARGS… --json --quiet`.
fn fleet(server: &Server, mode: &str, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("contera-fleet"));
    cmd.arg(mode)
        .arg("--server")
        .arg(server.url())
        .arg("--ca")
        .arg(server.ca_file())
        .arg("--state")
        .arg(state)
        .args(args)
        .args(["--json", "--quiet"]);
    cmd
}

fn summary(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Enrolls `n` recorders into a new account; returns the account id.
fn enroll(server: &Server, state: &Path, n: usize) -> String {
    let (account, code) = server.create_account("Fleet", "customer", None);
    let out = fleet(
        server,
        "enroll",
        state,
        &["--recorders", &n.to_string(), "--code", &code],
    )
    .output()
    .unwrap();
    let enrolled = summary("enroll", &out);
    assert_eq!(count(&enrolled["enrolled"]), n as u64, "{enrolled:#}");
    assert_eq!(count(&enrolled["failed"]), 0, "{enrolled:#}");
    assert_eq!(
        count(&enrolled["statuses"]["200"]),
        n as u64,
        "{enrolled:#}"
    );
    account
}

#[test]
fn a_fleet_of_fifty_enrolls_heartbeats_open_loop_and_shows_online() {
    let server = Server::start();
    let state = tempfile::tempdir().unwrap();
    let account = enroll(&server, state.path(), 50);

    let saved: Vec<Value> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(saved.len(), 50, "one file per recorder");
    let mut ids: Vec<String> = saved
        .iter()
        .map(|s| s["recorder_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "every recorder has its own id");

    // 50 recorders, one heartbeat a second each at its own phase, for 3 s: every one is
    // due exactly 3 times.
    let out = fleet(
        &server,
        "steady",
        state.path(),
        &["--interval", "1", "--duration", "3"],
    )
    .output()
    .unwrap();
    let steady = summary("steady", &out);
    assert_eq!(steady["mode"], "steady");
    assert_eq!(steady["open_loop"], true);
    assert_eq!(count(&steady["recorders"]), 50);
    assert_eq!(count(&steady["sent"]), 150, "{steady:#}");
    assert_eq!(count(&steady["ok"]), 150, "{steady:#}");
    assert_eq!(count(&steady["errors"]), 0, "{steady:#}");
    assert_eq!(count(&steady["latency_ms"]["count"]), 150);
    assert!(steady["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    // Kept-alive: one connection per recorder for the whole run.
    assert_eq!(count(&steady["connections_opened"]), 50, "{steady:#}");
    let per_second_ok: u64 = steady["per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| count(&s["ok"]))
        .sum();
    assert_eq!(per_second_ok, 150);

    let listed = server.recorders(Some(&account));
    assert_eq!(listed.len(), 50);
    for r in &listed {
        assert!(ids
            .binary_search(&r["id"].as_str().unwrap().to_string())
            .is_ok());
        assert!(r["serial"].as_str().unwrap().starts_with("FLEET-"), "{r}");
    }
    wait_for(WAIT, "all 50 recorders online", || {
        let online = server
            .recorders(Some(&account))
            .iter()
            .filter(|r| r["online"] == true)
            .count();
        (online == 50).then_some(())
    });

    // `resume` is `steady` over the same identities, here a fresh connection each time.
    let out = fleet(
        &server,
        "resume",
        state.path(),
        &[
            "--rate",
            "50",
            "--duration",
            "2",
            "--recorders",
            "10",
            "--new-connection-per-heartbeat",
        ],
    )
    .output()
    .unwrap();
    let resumed = summary("resume", &out);
    assert_eq!(count(&resumed["recorders"]), 10);
    assert_eq!(resumed["keep_alive"], false);
    assert_eq!(count(&resumed["sent"]), 100, "{resumed:#}");
    assert_eq!(count(&resumed["ok"]), 100, "{resumed:#}");
    assert_eq!(count(&resumed["connections_opened"]), 100, "{resumed:#}");
}

#[test]
fn resume_refuses_a_state_dir_without_identities() {
    let empty = tempfile::tempdir().unwrap();
    for mode in ["resume", "steady"] {
        // Refused before any connection: the server address is never used.
        let out = Command::new(bin("contera-fleet"))
            .args([mode, "--server", "https://localhost:1", "--ca"])
            .arg(empty.path().join("ca.pem"))
            .arg("--state")
            .arg(empty.path())
            .args(["--duration", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {stderr}");
        assert!(
            stderr.contains("holds no saved identities") && stderr.contains("enroll"),
            "{mode}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_outage_is_reported_as_a_histogram_of_reconnections() {
    let mut server = Server::start();
    let state = tempfile::tempdir().unwrap();
    let account = enroll(&server, state.path(), 20);

    let started = Instant::now();
    let run = fleet(
        &server,
        "outage",
        state.path(),
        &["--interval", "1", "--duration", "20", "--max-backoff", "2"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for(WAIT, "the fleet online", || {
        let online = server
            .recorders(Some(&account))
            .iter()
            .filter(|r| r["online"] == true)
            .count();
        (online == 20).then_some(())
    });
    let stopping_at = started.elapsed().as_secs_f64();
    server.stop();
    // The outage itself: what the fleet must notice and ride out.
    std::thread::sleep(Duration::from_secs(3));
    let restarting_at = started.elapsed().as_secs_f64();
    server.restart();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the server took too long to come back"
    );

    let out = run.wait_with_output().unwrap();
    let report = summary("outage", &out);
    let outage = &report["outage"];
    assert_eq!(report["mode"], "outage");
    assert_eq!(count(&outage["recorders_disconnected"]), 20, "{report:#}");
    assert_eq!(count(&outage["reconnected"]), 20, "{report:#}");
    assert_eq!(count(&outage["still_disconnected"]), 0, "{report:#}");
    assert!(
        count(&report["errors_by_kind"]["connect_refused"]) > 0,
        "{report:#}"
    );
    let histogram: Vec<u64> = outage["reconnections_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(count)
        .collect();
    assert_eq!(histogram.iter().sum::<u64>(), 20, "{report:#}");
    let busiest = *histogram.iter().max().unwrap();
    assert_eq!(count(&outage["max_reconnections_in_one_second"]), busiest);
    assert!(
        (outage["max_share_of_recorders"].as_f64().unwrap() - busiest as f64 / 20.0).abs() < 1e-9
    );
    // Failures start once the server is stopping, reconnections once it is restarting
    // (the fleet's clock starts a little after ours: a second of slack).
    let failed = outage["first_failure_at_secs"].as_f64().unwrap();
    let reconnected = outage["first_reconnection_at_secs"].as_f64().unwrap();
    assert!(
        failed >= stopping_at - 1.0,
        "{failed} vs stopping at {stopping_at}"
    );
    assert!(
        reconnected >= restarting_at - 1.0,
        "{reconnected} vs restarting at {restarting_at}"
    );
    assert!(reconnected > failed + 2.0, "{report:#}");
}
