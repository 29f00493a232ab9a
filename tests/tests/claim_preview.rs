//! The claim preview through the real agent: at a terminal, `contera-agent enroll` shows
//! the account the code belongs to and asks before anything is committed; the control
//! socket answers `preview` and `version` for a recorder's own setup screen, and refuses
//! requests it does not know as `bad_request`.

use std::io::Write;
use std::process::{Command, Stdio};

use contera_e2e::*;
use serde_json::Value;

/// Runs `contera-agent enroll --code CODE` on a pseudo-terminal (util-linux `script`),
/// typing `answer`; returns (exit success, everything the terminal showed).
fn enroll_at_a_terminal(agent: &Agent, code: &str, answer: &str) -> (bool, String) {
    let command = format!(
        "{} --config {} enroll --code {}",
        bin("contera-agent").display(),
        agent.config.display(),
        code
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    // Typed once the question is up; a pty buffers what comes earlier anyway.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn at_a_terminal_enroll_names_the_account_and_asks_before_committing() {
    let server = Server::start();
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let (store, code) = server.create_account("Store 12", "customer", Some(&partner));
    let agent = Agent::start(&server, "PREVIEW-1");

    let (ok, screen) = enroll_at_a_terminal(&agent, &code, "n\n");
    assert!(
        screen.contains("This recorder will join Store 12 (Acme Integrators). Continue? [y/N]"),
        "{screen}"
    );
    assert!(!ok, "declining exits non-zero: {screen}");
    assert!(screen.contains("nothing was changed"), "{screen}");
    assert!(server.recorders(None).is_empty(), "nothing enrolled");
    assert_eq!(agent.status()["enrolled"], false);

    let (ok, screen) = enroll_at_a_terminal(&agent, &code, "y\n");
    assert!(ok, "{screen}");
    assert!(
        screen.contains("joined the account \"Store 12\""),
        "{screen}"
    );
    let recorders = server.recorders(None);
    assert_eq!(recorders.len(), 1);
    assert_eq!(recorders[0]["account_id"], store.as_str());
}

#[test]
fn without_a_terminal_or_with_yes_nothing_is_asked() {
    let server = Server::start();
    let (_, code) = server.create_account("Store 7", "customer", None);
    let agent = Agent::start(&server, "PREVIEW-2");
    // Standard input is not a terminal here: scripts enroll as before.
    let out = agent.cli(&["enroll", "--code", &code]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("Continue?"), "{shown}");

    let other = Agent::start(&server, "PREVIEW-3");
    let (ok, screen) = {
        let command = format!(
            "{} --config {} enroll --yes --code {}",
            bin("contera-agent").display(),
            other.config.display(),
            code
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert!(ok, "{screen}");
    assert!(!screen.contains("Continue?"), "{screen}");
    assert_eq!(server.recorders(None).len(), 2);
}

#[test]
fn the_control_socket_answers_version_preview_and_refuses_unknown_requests() {
    let server = Server::start();
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let (_, code) = server.create_account("Store 12", "customer", Some(&partner));
    let agent = Agent::start(&server, "PREVIEW-4");

    let version: Value = serde_json::from_str(&agent.control(r#"{"op":"version"}"#)).unwrap();
    assert_eq!(version["result"], "version");
    assert_eq!(version["api"], 1);
    assert!(version["agent"].is_string());

    let preview: Value = serde_json::from_str(
        &agent.control(&serde_json::json!({ "op": "preview", "code": code }).to_string()),
    )
    .unwrap();
    assert_eq!(
        preview,
        serde_json::json!({
            "result": "preview",
            "account_name": "Store 12",
            "parent_name": "Acme Integrators",
        })
    );
    assert!(server.recorders(None).is_empty());

    let typo: Value = serde_json::from_str(
        &agent.control(r#"{"op":"preview","code":"K7QD-2M9X-4RTB-8HZP-0WNA-6YCT"}"#),
    )
    .unwrap();
    assert_eq!(typo["result"], "failed");
    assert_eq!(typo["kind"], "typo");

    let unknown: Value = serde_json::from_str(&agent.control(r#"{"op":"teleport"}"#)).unwrap();
    assert_eq!(unknown["result"], "failed");
    assert_eq!(unknown["kind"], "bad_request");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("API version 1"),
        "{unknown}"
    );
}
