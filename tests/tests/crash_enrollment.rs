//! A server killed (SIGKILL, as a crash or power cut would) while enrollments are in
//! flight comes back with only complete recorders: every recorder row has its certificate,
//! and every enrollment that was answered 200 has its recorder.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contera_e2e::*;

const ROUNDS: usize = 20;
/// Concurrent enrollments per round, each with its own key.
const BURST: usize = 40;

/// A random number from the standard library's random hash keys.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// Starts one `curl` that sends every body to /api/v1/enroll at once, multiplexed over one
/// HTTP/2 connection: the TLS handshake is done once, so the requests reach the server
/// together and their database work overlaps, as with many recorders enrolling at once.
/// Answer `i` lands in `dir/answer-i`; stdout gets a line `i status` per request
/// (status 000: no answer).
fn burst(server: &Server, bodies: &[Vec<u8>], dir: &Path) -> Child {
    let mut cmd = Command::new("curl");
    cmd.args(["--parallel", "--parallel-max", "100", "--http2"]);
    for (i, body) in bodies.iter().enumerate() {
        let body_file = dir.join(format!("body-{i}"));
        std::fs::write(&body_file, body).unwrap();
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-sS", "-H", "content-type: application/json", "--cacert"])
            .arg(server.ca_file())
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .arg("-o")
            .arg(dir.join(format!("answer-{i}")))
            .arg("-w")
            .arg(format!("{i} %{{http_code}}\\n"))
            .arg(format!("{}/api/v1/enroll", server.url()));
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs")
}

#[test]
fn server_killed_during_enrollments_leaves_only_complete_recorders() {
    let started = Instant::now();
    // Every request comes from 127.0.0.1: lift the per-address enrollment limit.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("provisioning.toml");
    std::fs::write(&config, "enroll_attempts_per_minute = 1000000\n").unwrap();
    let mut server = Server::start_with(1, &["--config", config.to_str().unwrap()]);
    let (account, code) = server.create_account("Crash site", "customer", None);

    let scratch = tempfile::tempdir().unwrap();
    let bodies = |round: usize| -> Vec<Vec<u8>> {
        // Keys and CSRs first, so the burst is requests only.
        (0..BURST)
            .map(|i| {
                let (_key, csr) = openssl_key_and_csr(scratch.path(), &format!("key-{i}"));
                enroll_body(&code, &csr, &format!("CRASH-{round}-{i}"))
            })
            .collect()
    };

    // One burst without a kill shows how long a burst takes on this machine (a debug
    // build on a busy runner is slow), so the kills below land at random instants from
    // before the requests arrive to the last answer; in between, enrollments are at every
    // stage, their database work overlapping.
    let calibration = tempfile::tempdir().unwrap();
    let calibration_bodies = bodies(ROUNDS);
    let burst_started = Instant::now();
    let out = burst(&server, &calibration_bodies, calibration.path())
        .wait_with_output()
        .unwrap();
    let burst_took = burst_started.elapsed();
    let statuses = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        statuses.lines().filter(|l| l.ends_with(" 200")).count(),
        BURST,
        "{statuses}"
    );
    println!("a burst of {BURST} enrollments takes {burst_took:?}");

    let mut answered_ids: HashSet<String> = HashSet::new();
    let mut rounds_cut_short = 0;
    for round in 0..ROUNDS {
        let answers = tempfile::tempdir().unwrap();
        let bodies = bodies(round);
        let kill_after = Duration::from_micros(random_u64() % (burst_took.as_micros() as u64 + 1));
        let curl = burst(&server, &bodies, answers.path());
        std::thread::sleep(kill_after);
        server.sigkill();
        let out = curl.wait_with_output().unwrap();

        let mut ok = 0;
        let mut cut = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let (i, status) = line.split_once(' ').unwrap();
            match status {
                "200" => {
                    let answer =
                        std::fs::read_to_string(answers.path().join(format!("answer-{i}")))
                            .unwrap();
                    let v: serde_json::Value = serde_json::from_str(&answer)
                        .unwrap_or_else(|e| panic!("answer {i}: {e}: {answer}"));
                    answered_ids.insert(v["recorder_id"].as_str().unwrap().to_string());
                    ok += 1;
                }
                // No HTTP answer: the server died before or while handling it.
                "000" => cut += 1,
                other => panic!("round {round}: request {i} got HTTP {other}"),
            }
        }
        assert_eq!(ok + cut, BURST, "one line per request");
        if cut > 0 {
            rounds_cut_short += 1;
        }

        // Read the database as the kill left it, before a restart could tidy it: the
        // admin CLI opens it without the server's start-up cleanup.
        let recorders = server.recorders(None);
        let listed: HashMap<String, &serde_json::Value> = recorders
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r))
            .collect();
        let incomplete: Vec<&String> = listed
            .iter()
            .filter(|(_, r)| !r["certificate_expires"].is_string())
            .map(|(id, _)| id)
            .collect();
        println!(
            "round {round}: killed after {kill_after:?}: {ok} answered, {cut} cut off, {} recorders, {} without a certificate",
            listed.len(),
            incomplete.len()
        );
        assert!(
            incomplete.is_empty(),
            "round {round} (killed after {kill_after:?}): recorders without a certificate: {incomplete:?}"
        );
        let missing: Vec<&String> = answered_ids
            .iter()
            .filter(|id| !listed.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: answered 200 but not stored: {missing:?}"
        );
        assert!(recorders
            .iter()
            .all(|r| r["account_id"] == account.as_str()));
        server.restart();
    }
    // Nothing was ever left for the start-up cleanup to remove.
    assert!(
        !server
            .audit_actions()
            .iter()
            .any(|a| a == "recorder.incomplete_removed"),
        "a restart found half-written enrollments"
    );
    assert!(
        !server.log_text().contains("left without a certificate"),
        "{}",
        server.log_text()
    );
    // The test proves something only if kills landed before the bursts were done.
    assert!(
        rounds_cut_short > 0,
        "no kill landed mid-burst in {ROUNDS} rounds"
    );
    println!(
        "{rounds_cut_short} of {ROUNDS} rounds killed mid-burst; {} enrollments answered; {:?}",
        answered_ids.len(),
        started.elapsed()
    );
}
