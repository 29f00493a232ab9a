//! Certificate lifetime: agents renew before expiry; a recorder that was offline past
//! expiry gets back in by renewing with its expired certificate within the grace period;
//! after the grace it needs a registration code, and keeps its recorder id.

use std::time::{Duration, Instant};

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn server_with(settings: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("provisioning.toml");
    std::fs::write(&config, settings).unwrap();
    let server = Server::start_with(1, &["--config", config.to_str().unwrap()]);
    (dir, server)
}

fn renewals(server: &Server) -> usize {
    server
        .audit_actions()
        .iter()
        .filter(|a| a.starts_with("certificate.renewed"))
        .count()
}

#[test]
fn certificates_are_renewed_before_they_expire() {
    let (_cfg, server) = server_with("certificate_lifetime_secs = 4\n");
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-RENEW");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first_expiry = agent.status()["certificate_expires"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "two renewals", || {
        (renewals(&server) >= 2).then_some(())
    });
    let status = agent.status();
    assert!(status["certificate_expires"].as_str().unwrap() > first_expiry.as_str());
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(server.recorder(&id)["online"], true);
    assert_eq!(server.recorders(None).len(), 1);
}

#[test]
fn a_recorder_offline_past_expiry_renews_with_its_expired_certificate() {
    let (_cfg, server) = server_with("certificate_lifetime_secs = 3\n");
    let (_, code) = server.create_account("Store", "customer", None);
    let mut agent = Agent::start(&server, "NVR-EXPIRED");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    agent.kill();
    let renewed_before = renewals(&server);

    // The certificate expires while the recorder is off.
    let off = Instant::now();
    wait_for(WAIT, "the certificate to expire", || {
        (off.elapsed() > Duration::from_secs(5)).then_some(())
    });
    agent.run();
    wait_for(WAIT, "a renewal with the expired certificate", || {
        (renewals(&server) > renewed_before).then_some(())
    });
    wait_for(WAIT, "online again", || {
        (server.recorder(&id)["online"] == true).then_some(())
    });
    assert_eq!(agent.status()["recorder_id"], id.as_str());
    assert_eq!(server.recorders(None).len(), 1);
}

#[test]
fn after_the_grace_period_a_code_brings_back_the_same_recorder() {
    let (_cfg, server) =
        server_with("certificate_lifetime_secs = 2\nexpired_renewal_grace_days = 0\n");
    let (_, code) = server.create_account("Store", "customer", None);
    let mut agent = Agent::start(&server, "NVR-GRACE");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    agent.kill();
    let off = Instant::now();
    wait_for(WAIT, "the certificate to expire", || {
        (off.elapsed() > Duration::from_secs(4)).then_some(())
    });
    agent.run();
    wait_for(WAIT, "the agent to ask for a code", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("enter a registration code"))
            .then_some(())
    });
    assert_eq!(server.recorder(&id)["online"], false);
    let again = agent.enroll(&code).unwrap();
    assert_eq!(again["recorder_id"], id.as_str(), "same key, same recorder");
}
