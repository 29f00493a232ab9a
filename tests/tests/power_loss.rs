//! Power cuts and bad disks: a torn state falls back to the last good copy, a lost state
//! keeps the key (so the same recorder comes back), a damaged key never crash-loops, and a
//! full disk leaves the old state intact and says so.

use std::process::Command;
use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn enrolled_agent(server: &Server, serial: &str, code: &str) -> (Agent, String) {
    let agent = Agent::start(server, serial);
    let id = agent.enroll(code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "online", || {
        (server.recorder(&id)["online"] == true).then_some(())
    });
    (agent, id)
}

#[test]
fn a_torn_state_file_after_a_power_cut_restores_from_the_previous_copy() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let (mut agent, id) = enrolled_agent(&server, "NVR-TORN", &code);
    agent.kill();
    let state = agent.state_dir().join("state.json");
    assert!(agent.state_dir().join("state.json.prev").exists());
    let text = std::fs::read(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    std::fs::write(
        agent.state_dir().join(".state.json.tmp"),
        b"{\"generation\"",
    )
    .unwrap();

    agent.run();
    assert_eq!(agent.status()["recorder_id"], id.as_str());
    assert!(agent.log_text().contains("using the previous good state"));
    assert!(agent.state_dir().join("state.json.broken").exists());
    let restarted = time_marker(&server, &id);
    wait_for(WAIT, "heartbeats after the restart", || {
        (server.recorder(&id)["last_seen"].as_str() > Some(restarted.as_str())).then_some(())
    });
    assert_eq!(server.recorders(None).len(), 1);
}

fn time_marker(server: &Server, id: &str) -> String {
    server.recorder(id)["last_seen"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn with_no_usable_state_the_kept_key_brings_back_the_same_recorder() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let (mut agent, id) = enrolled_agent(&server, "NVR-LOST", &code);
    agent.kill();
    for file in ["state.json", "state.json.prev"] {
        std::fs::write(agent.state_dir().join(file), b"").unwrap();
    }
    agent.run();
    assert_eq!(agent.status()["enrolled"], false);
    let again = agent.enroll(&code).unwrap();
    assert_eq!(
        again["recorder_id"],
        id.as_str(),
        "never a second recorder for the same key"
    );
    assert_eq!(server.recorders(None).len(), 1);
}

#[test]
fn a_damaged_key_is_quarantined_instead_of_a_crash_loop() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let (mut agent, _) = enrolled_agent(&server, "NVR-BADKEY", &code);
    agent.kill();
    std::fs::write(
        agent.state_dir().join("key.pem"),
        b"-----BEGIN PRIVATE KEY-----\ngarbage\n",
    )
    .unwrap();
    agent.run();
    assert_eq!(agent.status()["enrolled"], false);
    assert!(agent.state_dir().join("key.pem.broken").exists());
    assert!(agent.log_text().contains("is damaged"));
    agent.enroll(&code).unwrap();
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_the_old_state_intact_and_is_reported() {
    let server = Server::start();
    let (store_a, code_a) = server.create_account("Store A", "customer", None);
    let (_, code_b) = server.create_account("Store B", "customer", None);
    let mut agent = Agent::configure(&server, "NVR-FULL");
    let state_dir = agent.state_dir();
    std::fs::create_dir_all(&state_dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&state_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        skip("full-disk test", "mounting a small tmpfs needs root");
        return;
    }
    let _mount = Mount(state_dir.clone());
    agent.run();
    let id = agent.enroll(&code_a).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = std::fs::read_to_string(state_dir.join("state.json")).unwrap();

    // Fill the disk. (Without the previous copy, whose replacement would free a page.)
    std::fs::remove_file(state_dir.join("state.json.prev")).unwrap();
    let filler = state_dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .output();
    let (exit, message) = agent.enroll(&code_b).unwrap_err();
    assert_eq!(exit, 1);
    assert!(message.contains("No space left on device"), "{message}");
    assert_eq!(
        std::fs::read_to_string(state_dir.join("state.json")).unwrap(),
        before
    );
    assert_eq!(
        agent.status()["account"]["id"],
        store_a.as_str(),
        "old state still in force"
    );

    // Space again: the same enrollment now goes through.
    std::fs::remove_file(&filler).unwrap();
    let moved = agent.enroll(&code_b).unwrap();
    assert_eq!(moved["recorder_id"], id.as_str());
    assert_eq!(moved["account"]["name"], "Store B");
    agent.stop();
}

#[test]
fn a_read_only_state_directory_keeps_the_recorder_reporting_and_says_so() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let (mut agent, id) = enrolled_agent(&server, "NVR-RO", &code);
    agent.kill();
    let state_dir = agent.state_dir();
    let bind = Command::new("mount")
        .arg("--bind")
        .arg(&state_dir)
        .arg(&state_dir)
        .status();
    if !bind.map(|s| s.success()).unwrap_or(false) {
        skip("read-only test", "bind mounts need root");
        return;
    }
    let _mount = Mount(state_dir.clone());
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&state_dir)
        .status()
        .unwrap();
    assert!(remounted.success());

    agent.run();
    let status = agent.status();
    assert_eq!(
        status["recorder_id"],
        id.as_str(),
        "the identity is read as it was"
    );
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not writable")),
        "{status}"
    );
    let seen = server.recorder(&id)["last_seen"]
        .as_str()
        .unwrap_or("")
        .to_string();
    wait_for(WAIT, "heartbeats from the read-only recorder", || {
        (server.recorder(&id)["last_seen"].as_str().unwrap_or("") > seen.as_str()).then_some(())
    });
    assert!(agent
        .last_status()
        .is_some_and(|s| s.contains("not writable")));
    agent.stop();
}
