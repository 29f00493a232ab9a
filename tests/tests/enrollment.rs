//! Recorders land in exactly the account whose code was typed, show online and offline
//! there, and keep one identity per key through re-enrollment, moves and races.

use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn online(server: &Server, id: &str) -> bool {
    server.recorder(id)["online"] == true
}

#[test]
fn two_customers_under_one_partner_each_see_only_their_own_recorder() {
    // A 2 s interval leaves a crashed recorder online for a few seconds, long enough to
    // check that it is not marked offline early.
    let server = Server::start_with(2, &[]);
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let (store_a, code_a) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, code_b) = server.create_account("Store B", "customer", Some(&partner));

    let mut agent_a = Agent::start(&server, "NVR-A");
    let agent_b = Agent::start(&server, "NVR-B");
    let joined_a = agent_a.enroll(&code_a).expect("A enrolls");
    let joined_b = agent_b.enroll(&code_b).expect("B enrolls");
    assert_eq!(joined_a["account"]["name"], "Store A");
    assert_eq!(joined_a["account"]["id"], store_a.as_str());
    assert_eq!(joined_b["account"]["name"], "Store B");
    let id_a = joined_a["recorder_id"].as_str().unwrap().to_string();
    let id_b = joined_b["recorder_id"].as_str().unwrap().to_string();

    wait_for(WAIT, "both recorders online", || {
        (online(&server, &id_a) && online(&server, &id_b)).then_some(())
    });
    let in_a = server.recorders(Some(&store_a));
    let in_b = server.recorders(Some(&store_b));
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_a[0]["id"], id_a.as_str());
    assert_eq!(in_a[0]["serial"], "NVR-A");
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b[0]["id"], id_b.as_str());
    assert!(server.recorders(Some(&partner)).is_empty());

    let status = agent_a.status();
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["recorder_id"], id_a.as_str());
    assert_eq!(status["account"]["name"], "Store A");
    assert!(status["certificate_expires"].is_string());
    wait_for(WAIT, "a heartbeat in agent status", || {
        agent_a.status()["last_heartbeat"].is_string().then_some(())
    });

    // A clean stop says goodbye: offline at once, recorded as a shutdown.
    assert_eq!(agent_a.stop(), Some(0), "clean exit on SIGTERM");
    let row = server.recorder(&id_a);
    assert_eq!(row["online"], false, "offline as soon as the agent stopped");
    assert_eq!(row["offline_reason"], "shutdown");
    assert!(agent_a.log_text().contains("told the server goodbye"));

    // A crash says nothing: online until three intervals pass, then offline.
    let mut agent_b = agent_b;
    agent_b.kill();
    assert!(
        online(&server, &id_b),
        "a missed heartbeat is not yet offline"
    );
    wait_for(
        server.offline_grace(),
        "B offline three intervals after it died",
        || (!online(&server, &id_b)).then_some(()),
    );
    assert_eq!(
        server.recorder(&id_b)["offline_reason"],
        "missed heartbeats"
    );
    let audit = server.audit_actions();
    assert_eq!(
        audit.iter().filter(|a| *a == "recorder.enrolled").count(),
        2
    );
}

#[test]
fn enrolling_again_with_the_same_key_keeps_the_recorder_id() {
    let server = Server::start();
    let (account, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-1");
    let first = agent.enroll(&code).unwrap();
    let second = agent
        .enroll(&code.to_lowercase().replace('-', " "))
        .unwrap();
    assert_eq!(first["recorder_id"], second["recorder_id"]);
    assert_eq!(server.recorders(Some(&account)).len(), 1);
    assert!(server
        .audit_actions()
        .contains(&"recorder.re_enrolled".to_string()));
}

#[test]
fn the_same_key_with_another_accounts_code_moves_the_recorder() {
    let server = Server::start();
    let (from, code_from) = server.create_account("Old site", "customer", None);
    let (to, code_to) = server.create_account("New site", "customer", None);
    let agent = Agent::start(&server, "NVR-MOVE");
    let first = agent.enroll(&code_from).unwrap();
    let moved = agent.enroll(&code_to).unwrap();
    assert_eq!(first["recorder_id"], moved["recorder_id"]);
    assert_eq!(moved["account"]["name"], "New site");
    assert!(server.recorders(Some(&from)).is_empty());
    let listed = server.recorders(Some(&to));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], first["recorder_id"]);
    assert_eq!(agent.status()["account"]["id"], to.as_str());
    assert!(server
        .audit_actions()
        .contains(&"recorder.moved".to_string()));
}

#[test]
fn a_new_key_claiming_an_existing_serial_is_a_possible_replacement() {
    let server = Server::start();
    let (account, code) = server.create_account("Store", "customer", None);
    let original = Agent::start(&server, "SERIAL-1");
    let old_id = original.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "original online", || {
        online(&server, &old_id).then_some(())
    });
    let before = server.recorder(&old_id);

    // A reinstall (or someone who read the label): same serial, new key.
    let newcomer = Agent::start(&server, "SERIAL-1");
    let new_id = newcomer.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_id, old_id);
    let new_row = server.recorder(&new_id);
    assert_eq!(new_row["replaces"], old_id.as_str());
    let old_row = server.recorder(&old_id);
    assert_eq!(old_row["account_id"], before["account_id"]);
    assert_eq!(old_row["revoked"], false);
    assert_eq!(old_row["replaces"], serde_json::Value::Null);
    assert_eq!(server.recorders(Some(&account)).len(), 2);
    // The original keeps working: it was neither taken over nor knocked out.
    wait_for(WAIT, "original still online", || {
        online(&server, &old_id).then_some(())
    });
    assert_eq!(original.status()["recorder_id"], old_id.as_str());
}

#[test]
fn a_serial_enrolled_in_another_account_is_flagged_but_never_moved_or_displaced() {
    let server = Server::start();
    // Two sites of one partner: the same device re-enrolled at the other site is flagged.
    let (partner, _) = server.create_account("Partner", "partner", None);
    let (account_a, code_a) = server.create_account("Site A", "customer", Some(&partner));
    let (account_b, code_b) = server.create_account("Site B", "customer", Some(&partner));
    let first = Agent::start(&server, "SHARED-SERIAL");
    let second = Agent::start(&server, "SHARED-SERIAL");
    let id_a = first.enroll(&code_a).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = server.recorder(&id_a);
    let id_b = second.enroll(&code_b).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id_a, id_b);
    assert_eq!(server.recorder(&id_b)["replaces"], id_a.as_str());
    assert_eq!(server.recorder(&id_b)["account_id"], account_b.as_str());
    let after = server.recorder(&id_a);
    assert_eq!(after["account_id"], account_a.as_str());
    assert_eq!(after["revoked"], false);
    assert_eq!(after["replaces"], serde_json::Value::Null);
    assert_eq!(after["certificate_expires"], before["certificate_expires"]);
    assert_eq!(first.status()["recorder_id"], id_a.as_str());

    // Another partner's customer with the same serial is not flagged: that would tell
    // one tenant that another has the device, and its recorder's id.
    let (_, code_c) = server.create_account("Other tenant", "customer", None);
    let third = Agent::start(&server, "SHARED-SERIAL");
    let id_c = third.enroll(&code_c).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(server.recorder(&id_c)["replaces"], serde_json::Value::Null);
}

#[test]
fn concurrent_enrollments_of_one_key_create_one_recorder() {
    let server = Server::start();
    let (account, code) = server.create_account("Store", "customer", None);
    let scratch = tempfile::tempdir().unwrap();
    let (_key, csr) = openssl_key_and_csr(scratch.path(), "racer");
    let body = enroll_body(&code, &csr, "RACE-1");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| curl_post(&server, "/api/v1/enroll", &body, None)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, body) = h.join().unwrap().expect("HTTP answer");
                assert_eq!(status, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["recorder_id"].as_str().unwrap().to_string()
            })
            .collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(server.recorders(Some(&account)).len(), 1);
}

#[test]
fn a_rotated_code_stops_working_at_once_and_looks_like_an_unknown_one() {
    let server = Server::start();
    let (account, old_code) = server.create_account("Store", "customer", None);
    let rotated = server.admin_json(&["codes", "rotate", "--account", &account]);
    let new_code = rotated["registration_code"].as_str().unwrap().to_string();
    assert_ne!(new_code, old_code);

    let agent = Agent::start(&server, "NVR-ROT");
    let (exit, rotated_message) = agent.enroll(&old_code).unwrap_err();
    assert_eq!(exit, 1);
    assert!(
        rotated_message.contains("does not accept this registration code"),
        "{rotated_message}"
    );

    // A well-formed code the server never issued gets exactly the same answer.
    let other = Server::start();
    let (_, foreign_code) = other.create_account("Other server", "customer", None);
    let (_, unknown_message) = agent.enroll(&foreign_code).unwrap_err();
    assert_eq!(unknown_message, rotated_message);

    let joined = agent.enroll(&new_code).unwrap();
    assert_eq!(joined["account"]["id"], account.as_str());
    assert!(server.audit_actions().contains(&"code.rotated".to_string()));
}

#[test]
fn a_revoked_recorder_drops_its_credential_and_stops_heartbeats() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-REV");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "online", || online(&server, &id).then_some(()));

    let out = server.admin(&["recorders", "revoke", &id]);
    assert!(out.status.success());
    wait_for(WAIT, "agent to see the revocation", || {
        (agent.status()["revoked"] == true).then_some(())
    });
    let status = agent.status();
    assert_eq!(status["enrolled"], false);
    assert!(!agent.state_dir().join("key.pem").exists(), "key dropped");
    let state = std::fs::read_to_string(agent.state_dir().join("state.json")).unwrap();
    assert!(!state.contains("BEGIN CERTIFICATE"), "certificate dropped");
    let row = server.recorder(&id);
    assert_eq!(row["revoked"], true);
    assert_eq!(row["online"], false);

    // No more heartbeats: the log shows the revocation once and stays quiet after it.
    let seen = agent
        .log_text()
        .matches("was revoked by the server")
        .count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent
            .log_text()
            .matches("was revoked by the server")
            .count(),
        seen
    );
    assert_eq!(seen, 1);
    assert!(!agent.log_text().contains("heartbeat failed"));

    // A new code enrolls it again, as a new recorder with a new key.
    let again = agent.enroll(&code).unwrap();
    assert_ne!(again["recorder_id"], id.as_str());
}

#[test]
fn heartbeats_resume_by_themselves_after_a_server_restart() {
    let mut server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let agent = Agent::start(&server, "NVR-RESTART");
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "online", || online(&server, &id).then_some(()));

    server.kill();
    wait_for(WAIT, "agent to notice the outage", || {
        agent.status()["last_error"].is_string().then_some(())
    });
    server.restart();
    let restarted_at = time_now();
    wait_for(WAIT, "heartbeats after the restart", || {
        let status = agent.status();
        let after = status["last_heartbeat"]
            .as_str()
            .is_some_and(|t| t > restarted_at.as_str());
        (after && status["last_error"].is_null()).then_some(())
    });
    wait_for(WAIT, "online again", || online(&server, &id).then_some(()));
}

fn time_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
