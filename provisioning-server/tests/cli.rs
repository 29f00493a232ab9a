//! The admin command line, run as a real process against a real SQLite file.

use std::path::Path;
use std::process::{Command, Output};

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn accounts_form_a_tree_and_codes_are_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let partner = admin(
        dir.path(),
        &[
            "accounts", "create", "--name", "Acme", "--kind", "partner", "--json",
        ],
    );
    assert!(partner.status.success(), "{}", stderr(&partner));
    let partner: serde_json::Value = serde_json::from_slice(&partner.stdout).unwrap();
    for key in ["id", "name", "kind", "parent_id", "registration_code"] {
        assert!(partner.get(key).is_some(), "{key} missing from {partner}");
    }
    let pid = partner["id"].as_str().unwrap();
    let child = admin(
        dir.path(),
        &["accounts", "create", "--name", "Store 12", "--parent", pid],
    );
    assert!(child.status.success(), "{}", stderr(&child));
    assert!(stdout(&child).contains("registration code:"));

    let tree = stdout(&admin(dir.path(), &["accounts", "list"]));
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].starts_with("Acme (partner)"), "{tree}");
    assert!(lines[1].starts_with("    Store 12 (customer)"), "{tree}");
    let code = partner["registration_code"].as_str().unwrap();
    assert!(!tree.contains(code), "the full code is never shown again");

    let listed: serde_json::Value =
        serde_json::from_slice(&admin(dir.path(), &["accounts", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(code));
}

#[test]
fn mistakes_are_refused_with_the_fix_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let customer = admin(
        dir.path(),
        &["accounts", "create", "--name", "Shop", "--json"],
    );
    let customer: serde_json::Value = serde_json::from_slice(&customer.stdout).unwrap();
    let cid = customer["id"].as_str().unwrap();

    let under_customer = admin(
        dir.path(),
        &["accounts", "create", "--name", "X", "--parent", cid],
    );
    assert_eq!(under_customer.status.code(), Some(1));
    assert!(
        stderr(&under_customer).contains("only partner accounts"),
        "{}",
        stderr(&under_customer)
    );

    let no_parent = admin(
        dir.path(),
        &["accounts", "create", "--name", "X", "--parent", "nope"],
    );
    assert_eq!(no_parent.status.code(), Some(1));
    assert!(
        stderr(&no_parent).contains("accounts list"),
        "{}",
        stderr(&no_parent)
    );

    let rotate = admin(dir.path(), &["codes", "rotate", "--account", "nope"]);
    assert_eq!(rotate.status.code(), Some(1));
    let revoke = admin(dir.path(), &["recorders", "revoke", "nope"]);
    assert_eq!(revoke.status.code(), Some(1));
    assert!(
        stderr(&revoke).contains("recorders list"),
        "{}",
        stderr(&revoke)
    );

    let usage = admin(dir.path(), &["accounts", "create"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing --name is a usage error"
    );

    let listed: serde_json::Value =
        serde_json::from_slice(&admin(dir.path(), &["accounts", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn a_bad_config_file_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("provisioning.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nheartbeat_secs = 5\n").unwrap();
    let out = admin(
        dir.path(),
        &["--config", config.to_str().unwrap(), "validate-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("heartbeat_secs"), "{}", stderr(&out));

    let out = admin(dir.path(), &["serve", "--heartbeat-interval", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("heartbeat_interval_secs"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_printed_default_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let printed = admin(dir.path(), &["print-default-config"]);
    let config = dir.path().join("default.toml");
    std::fs::write(&config, &printed.stdout).unwrap();
    let out = admin(
        dir.path(),
        &["--config", config.to_str().unwrap(), "validate-config"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
