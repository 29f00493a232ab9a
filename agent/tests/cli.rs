//! The installer's command line, run as a real process: exit codes and messages for bad
//! configs, typos and a daemon that is not running.

use std::path::Path;
use std::process::{Command, Output};

fn agent(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_contera-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn good_config(dir: &Path) -> String {
    format!(
        "[server]\nurl = \"https://127.0.0.1:9\"\n[agent]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
        dir.join("state").display(),
        dir.join("control.sock").display()
    )
}

#[test]
fn an_unknown_config_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nurl = \"https://h:1\"\nca_flie = \"/x\"\n",
    );
    for args in [&["validate-config"][..], &["run"], &["status"]] {
        let out = agent(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("ca_flie"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_bad_server_url_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nurl = \"localhost:8443\"\n");
    let out = agent(&config, &["validate-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[server] url"), "{}", stderr(&out));
}

#[test]
fn a_missing_config_file_says_which_file_and_exits_2() {
    let out = agent(Path::new("/nonexistent/agent.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/agent.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_mistyped_code_is_caught_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    // No daemon and no server exist: only a local check can answer.
    let config = write_config(dir.path(), &good_config(dir.path()));
    let out = agent(
        &config,
        &["enroll", "--code", "K7QD-2M9X-4RTB-8HZP-0WNA-6YCT"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("typo"), "{}", stderr(&out));
    let out = agent(&config, &["enroll", "--code", "K7QD-2M9X"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has 8 letters and digits"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn enroll_without_a_running_daemon_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &good_config(dir.path()));
    // A well-formed code (valid check symbol) so the local check passes.
    let code = contera_protocol::RegistrationCode::from_random([1; 23]).to_string();
    let out = agent(&config, &["enroll", "--code", &code]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not running") && err.contains("systemctl start contera-agent"),
        "{err}"
    );
    // status still answers, from the state file.
    let out = agent(&config, &["status", "--json"]);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["daemon_running"], false);
    assert_eq!(status["enrolled"], false);
}

#[test]
fn a_state_dir_that_cannot_be_written_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nurl = \"https://127.0.0.1:9\"\n[agent]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
            blocker.join("state").display(),
            dir.path().join("control.sock").display()
        ),
    );
    let out = agent(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not writable") && err.contains("state_dir"),
        "{err}"
    );
    assert!(!dir.path().join("control.sock").exists());
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("agent"))
        {
            contera_agent::config::AgentConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no agent config found in {}", dir.display());
    // The config the .deb installs.
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    contera_agent::config::AgentConfig::load(&packaged)
        .unwrap_or_else(|e| panic!("{}: {e}", packaged.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_contera-agent"))
        .arg("print-default-config")
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    contera_agent::config::AgentConfig::parse(&printed, Path::new("printed")).unwrap();
}

#[test]
fn the_freeze_hook_exists_only_in_builds_with_the_test_hooks_feature() {
    // `cargo build --release -p contera-agent` has no feature: no hidden command, and the
    // daemon does not even parse a freeze request. The end-to-end tests turn it on.
    let out = Command::new(env!("CARGO_BIN_EXE_contera-agent"))
        .args(["debug-freeze", "--help"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.success(),
        cfg!(feature = "test-hooks"),
        "{}",
        stderr(&out)
    );
    let request =
        serde_json::from_str::<contera_agent::control::Request>(r#"{"op":"freeze","secs":1}"#);
    assert_eq!(request.is_ok(), cfg!(feature = "test-hooks"));
}
