//! Day-to-day operation of the daemon: SIGHUP reloads a valid config and keeps the old
//! one when the new one is broken; a wrong clock is reported as such and the identity
//! is kept.

use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_on_error() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-HUP");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    let good = std::fs::read_to_string(&agent.config).unwrap();

    std::fs::write(&agent.config, format!("{good}\nnot_a_key = 1\n")).unwrap();
    agent.signal("HUP");
    wait_for(WAIT, "the reload refusal", || {
        agent
            .log_text()
            .contains("SIGHUP: keeping the running configuration")
            .then_some(())
    });
    assert!(
        agent.log_text().contains("not_a_key"),
        "the error names the key"
    );
    // Still running and reporting with the old configuration (asked over the socket: the
    // CLI itself would refuse the broken file).
    assert!(agent.control(r#"{"op":"status"}"#).contains(&id));
    let seen = wait_for(WAIT, "a first heartbeat", || {
        server.recorder(&id)["last_seen"]
            .as_str()
            .map(str::to_string)
    });
    wait_for(WAIT, "heartbeats after the refused reload", || {
        (server.recorder(&id)["last_seen"].as_str().unwrap() > seen.as_str()).then_some(())
    });

    let changed = good.replace("[recorder]\n", "[recorder]\nfirmware = \"9.9.9\"\n");
    std::fs::write(&agent.config, changed).unwrap();
    agent.signal("HUP");
    wait_for(WAIT, "the reload", || {
        agent
            .log_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    wait_for(WAIT, "the new firmware in the heartbeat", || {
        let shown = server.admin_json(&["recorders", "show", &id]);
        (shown["status"]["firmware"] == "9.9.9").then_some(())
    });
}

#[test]
fn a_recorder_clock_in_the_past_is_reported_as_a_clock_problem_and_the_identity_kept() {
    // libfaketime preloaded into the agent alone (the `faketime` wrapper would fork, and
    // killing it would leave the agent running).
    let Some(lib) = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1"))
        .find(|p| std::path::Path::new(p).exists())
    else {
        skip(
            "clock test",
            "libfaketime is missing (apt-get install faketime)",
        );
        return;
    };
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let mut agent = Agent::start(&server, "NVR-CLOCK");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    agent.kill();

    // The recorder's battery died: its clock is more than a year behind, so the server's
    // certificate looks "not valid yet".
    agent.env.push(("LD_PRELOAD".into(), lib));
    agent.env.push(("FAKETIME".into(), "-400d".into()));
    agent.run();
    let problem = wait_for(WAIT, "a clock problem in status", || {
        agent.status()["last_error"].as_str().map(str::to_string)
    });
    assert!(
        problem.contains("clock"),
        "{problem}\n{}",
        agent
            .log_text()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let status = agent.status();
    assert_eq!(status["enrolled"], true, "the identity is kept");
    assert_eq!(status["recorder_id"], id.as_str());
    assert!(agent.state_dir().join("key.pem").exists());

    // Clock fixed: the same identity carries on.
    agent.kill();
    agent.env.clear();
    agent.run();
    wait_for(WAIT, "heartbeats with the right clock", || {
        agent.status()["last_heartbeat"].is_string().then_some(())
    });
    assert_eq!(agent.status()["recorder_id"], id.as_str());
}

#[test]
fn a_stop_does_not_wait_for_a_server_that_never_answers() {
    // A "server" that accepts connections and then says nothing, ever.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let server = Server::start();
    let mut agent = Agent::configure(&server, "NVR-BLACKHOLE");
    let config = std::fs::read_to_string(&agent.config)
        .unwrap()
        .replace(&server.url(), &format!("https://localhost:{port}"))
        .replace(
            "[agent]\n",
            "connect_timeout_secs = 120\nrequest_timeout_secs = 120\n\n[agent]\n",
        );
    std::fs::write(&agent.config, config).unwrap();
    agent.run();
    let (_, code) = server.create_account("Store", "customer", None);

    let config = agent.config.clone();
    let enroll = std::thread::spawn(move || {
        std::process::Command::new(bin("contera-agent"))
            .arg("--config")
            .arg(&config)
            .args(["enroll", "--code", &code])
            .output()
            .unwrap()
    });
    wait_for(WAIT, "the enrollment to be under way", || {
        agent
            .log_text()
            .contains("enrolling with code")
            .then_some(())
    });
    let asked = std::time::Instant::now();
    assert_eq!(agent.stop(), Some(0), "a clean exit");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "the stop waited {took:?} for the silent server"
    );
    let out = enroll.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
