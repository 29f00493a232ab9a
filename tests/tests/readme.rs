//! The README's first command works: the demo script runs the server on its embedded
//! defaults and enrolls an agent into it, keeps what it made, and its closing commands
//! still work after it ended. A taken port gets a hint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn demo(listen: &str, tmpdir: &Path) -> Output {
    let bin_dir = contera_e2e::bin("contera-agent")
        .parent()
        .unwrap()
        .to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh");
    Command::new("bash")
        .arg(script)
        .env("LISTEN", listen)
        .env("CONTERA_BIN_DIR", &bin_dir)
        // Where the demo makes its directory: removed with the test's temp dir.
        .env("TMPDIR", tmpdir)
        .output()
        .unwrap()
}

/// The command after `label:` in the demo's closing lines, split into words.
fn command_after(stdout: &str, label: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line:\n{stdout}"));
    line.split_whitespace().map(str::to_string).collect()
}

fn run(words: &[String]) -> String {
    let out = Command::new(&words[0]).args(&words[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{words:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_demo_enrolls_a_recorder_and_shows_it_online() {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo("127.0.0.1:0", tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("this recorder joined the account \"Store 12\""),
        "{stdout}"
    );
    let listing = stdout
        .lines()
        .find(|l| l.contains("DEMO-0001"))
        .unwrap_or_else(|| panic!("recorder not listed:\n{stdout}"));
    assert!(listing.contains("online"), "{listing}");

    // The data stays, where the closing lines say, and their commands work now that the
    // server and the agent have stopped.
    let data_dir = PathBuf::from(&command_after(&stdout, "server data dir:")[0]);
    assert!(data_dir.starts_with(tmp.path()), "{}", data_dir.display());
    assert!(
        data_dir.join("contera.db").is_file(),
        "{}",
        data_dir.display()
    );
    for label in ["server log:", "agent log:"] {
        let log = PathBuf::from(&command_after(&stdout, label)[0]);
        assert!(log.is_file(), "{label} {}", log.display());
    }
    let recorders = run(&command_after(&stdout, "recorders:"));
    let listing = recorders
        .lines()
        .find(|l| l.contains("DEMO-0001"))
        .unwrap_or_else(|| panic!("recorder not listed after the demo:\n{recorders}"));
    // The agent said goodbye as the demo stopped it.
    assert!(listing.contains("offline"), "{listing}");
    let audit = run(&command_after(&stdout, "audit log:"));
    assert!(audit.contains("recorder.enrolled"), "{audit}");
    let status = run(&command_after(&stdout, "agent status:"));
    assert!(status.contains("Enrolled in \"Store 12\""), "{status}");
}

#[test]
fn a_taken_port_gets_a_hint_to_use_any_free_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(&addr, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{addr} is taken by another program; for any free port run: LISTEN=127.0.0.1:0 scripts/demo.sh"
        )),
        "{stderr}"
    );
    // Nothing is left behind for a demo that never started.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    drop(taken);
}

/// Kills the child on drop, so a failed assertion leaves no daemon behind.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_local_agent_toml_validates_and_enrolls_against_a_local_server() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block in the README");
    assert!(example.lines().count() <= 6, "{example}");
    // The README's paths and port, moved to this test's server and temp dir.
    let server = contera_e2e::Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let readme_server = "/tmp/contera/server";
    assert!(example.contains(readme_server), "{example}");
    assert!(example.contains("https://localhost:8443"), "{example}");
    let config_text = example
        .replace("https://localhost:8443", &server.url())
        .replace(readme_server, &server.data_dir().display().to_string())
        .replace("/tmp/contera", &tmp.path().display().to_string());
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, &config_text).unwrap();
    let agent = |args: &[&str]| {
        Command::new(contera_e2e::bin("contera-agent"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };

    let out = agent(&["validate-config"]);
    assert!(
        out.status.success(),
        "{config_text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(tmp.path().join("agent.log")).unwrap();
    let _daemon = Daemon(
        Command::new(contera_e2e::bin("contera-agent"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let socket = tmp.path().join("agent/control.sock");
    contera_e2e::wait_for(
        std::time::Duration::from_secs(30),
        "the control socket",
        || socket.exists().then_some(()),
    );
    let (_, code) = server.create_account("Store 12", "customer", None);
    let out = agent(&["enroll", "--code", &code]);
    assert!(
        out.status.success(),
        "{}{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("joined the account \"Store 12\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The README's admin session (between `<!-- admin-session -->` markers) runs as written
/// against a real server: log in, make an API token, create a customer account with its
/// first user, and read the account's registration code with the token.
#[test]
fn the_readme_admin_session_creates_a_customer_and_reads_its_code_with_a_token() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("<!-- admin-session -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /admin-session -->").next())
        .expect("the README has an admin session block");
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```")
        .to_owned();

    let server = contera_e2e::Server::start();
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &partner,
        "--email",
        "jo@acme.example",
        "--name",
        "Jo Doe",
    ]);
    let mut jo = contera_e2e::admin::AdminClient::new(&server);
    jo.accept(
        invited["token"].as_str().unwrap(),
        "a long passphrase of yours",
    )
    .expect(200);

    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(work.path())
        .env("S", format!("{}/api/v1/admin", server.url()))
        .env("C", format!("--cacert {}", server.ca_file().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README admin session failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = stdout.trim();
    let customers: Vec<Value> = server
        .admin_json(&["accounts", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "Store 12")
        .cloned()
        .collect();
    assert_eq!(customers.len(), 1, "one customer account was made");
    assert_eq!(customers[0]["parent_id"], Value::String(partner));
    let public_id = customers[0]["code_public_id"].as_str().unwrap();
    let shown = server.admin_json(&["codes", "show", public_id]);
    assert_eq!(shown["registration_code"].as_str(), Some(code), "{stdout}");
    assert!(
        contera_e2e::admin::outbox(&server)
            .iter()
            .any(|m| m.to.contains("ann@store12.example") && m.subject == "Account Invitation"),
        "the first user got the invitation"
    );
}
