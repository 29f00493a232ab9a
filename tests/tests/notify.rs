//! The sd_notify protocol, read from a NOTIFY_SOCKET the test binds as systemd would:
//! READY before enrollment, STATUS in plain words, WATCHDOG from the main loop at half of
//! WATCHDOG_USEC (and none while the loop is stuck), STOPPING and exit 0 on SIGTERM.

use std::time::{Duration, Instant};

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn ready_status_and_stopping_follow_the_agents_life() {
    let mut server = Server::start();
    let (_, code) = server.create_account("Store 12", "customer", None);
    let mut agent = Agent::start(&server, "NVR-NOTIFY");
    // READY=1 came before any enrollment: an offline recorder has still started.
    assert!(agent.notified("READY=1"));
    assert_eq!(
        agent.last_status().as_deref(),
        Some("waiting for a registration code")
    );

    agent.enroll(&code).unwrap();
    wait_for(WAIT, "an enrolled STATUS", || {
        let status = agent.last_status()?;
        (status.starts_with("enrolled in Store 12, last heartbeat ") && status.ends_with(" s ago"))
            .then_some(())
    });

    server.kill();
    wait_for(WAIT, "an unreachable STATUS", || {
        let status = agent.last_status()?;
        (status.contains("server unreachable") && status.contains("next try in")).then_some(status)
    });
    server.restart();
    wait_for(WAIT, "enrolled STATUS again", || {
        agent
            .last_status()?
            .contains("last heartbeat")
            .then_some(())
    });

    assert_eq!(agent.stop(), Some(0));
    assert!(agent.notified("STOPPING=1"));
}

#[test]
fn revocation_shows_in_status_text() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-NOTIFY-REV");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(server.admin(&["recorders", "revoke", &id]).status.success());
    wait_for(WAIT, "revoked STATUS", || {
        (agent.last_status()? == "revoked by the server: enter a new code").then_some(())
    });
}

#[test]
fn watchdog_pings_come_at_half_the_period_and_stop_while_the_loop_is_stuck() {
    let server = Server::start();
    let mut agent = Agent::configure(&server, "NVR-WATCHDOG");
    agent.env.push(("WATCHDOG_USEC".into(), "200000".into()));
    agent
        .env
        .push(("CONTERA_AGENT_TEST_HOOKS".into(), "1".into()));
    agent.run();

    // Cadence: every 100 ms (half of 200 ms).
    let start = Instant::now();
    wait_for(WAIT, "a second of pings", || {
        (start.elapsed() > Duration::from_secs(1)).then_some(())
    });
    let pings = agent.watchdog_pings();
    let recent: Vec<_> = pings.iter().filter(|t| **t >= start).collect();
    assert!(
        (7..=13).contains(&recent.len()),
        "{} pings in 1 s",
        recent.len()
    );

    // A stuck main loop sends nothing, so systemd would restart it.
    let before = agent.watchdog_pings().len();
    let frozen_at = Instant::now();
    let answer = agent.control(r#"{"op":"freeze","secs":1}"#);
    assert!(answer.contains("done"), "{answer}");
    let pings = agent.watchdog_pings();
    let during = pings[before..]
        .iter()
        .filter(|t| {
            **t > frozen_at + Duration::from_millis(150)
                && **t < frozen_at + Duration::from_millis(900)
        })
        .count();
    assert_eq!(during, 0, "no pings while the loop was frozen");
    wait_for(WAIT, "pings after the freeze", || {
        (agent.watchdog_pings().len() > pings.len() + 2).then_some(())
    });
}

#[test]
fn the_freeze_hook_is_off_unless_asked_for() {
    let server = Server::start();
    let agent = Agent::start(&server, "NVR-NOHOOK");
    let answer = agent.control(r#"{"op":"freeze","secs":5}"#);
    assert!(answer.contains("test hooks are off"), "{answer}");
}
