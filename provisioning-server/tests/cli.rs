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

/// Writes a customer account straight into the data directory's database, with any name
/// (as one created before names were checked); returns its id.
fn create_directly(data_dir: &Path, name: &str) -> String {
    use contera_provisioning::store::{Account, AccountKind, SqliteStore, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&data_dir.join("contera.db"))
            .await
            .unwrap();
        let account = Account {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            kind: AccountKind::Customer,
            parent_id: None,
            code_public_id: None,
            created_at: 1,
            address: String::new(),
            contact: None,
            disabled_at: None,
            disabled_by: None,
            disabled_via: None,
        };
        let code = contera_provisioning::store::NewCode {
            public_id: "TST0".into(),
            secret_hash: vec![0; 32],
            sealed: contera_provisioning::secrets::SealedCode {
                nonce: vec![0; 12],
                ciphertext: vec![1; 40],
            },
            label: "Initial code".into(),
            expires_at: None,
            max_uses: None,
            created_by: "test".into(),
            created_at: 1,
        };
        store.create_account(&account, &code, "test").await.unwrap();
        account.id
    })
}

/// Writes a recorder straight into the data directory's database, as enrollment and
/// heartbeats would, with whatever text a recorder could send (or more).
fn enroll_directly(data_dir: &Path, account_id: &str, serial: &str, model: &str, status: &str) {
    use contera_provisioning::store::{EnrollRecord, Presence, SqliteStore, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&data_dir.join("contera.db"))
            .await
            .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // Enrollment counts a use of the code, so it must be the account's real one.
        let code_public_id = store
            .account(account_id)
            .await
            .unwrap()
            .unwrap()
            .code_public_id
            .unwrap();
        let outcome = store
            .enroll(&EnrollRecord {
                recorder_id: uuid::Uuid::new_v4().to_string(),
                account_id: account_id.into(),
                key_fingerprint: "f".repeat(64),
                serial: serial.into(),
                mac: None,
                model: model.into(),
                firmware: Some("1.0".into()),
                agent_version: "0.1.0\u{202e}".into(),
                code_public_id,
                cert_serial: "01".into(),
                cert_not_after: now + 86_400,
                now,
            })
            .await
            .unwrap();
        store
            .record_presence(&[Presence {
                recorder_id: outcome.recorder.id,
                last_seen: now,
                online_until: now + 60,
                status: Some(status.into()),
                uptime_secs: None,
            }])
            .await
            .unwrap();
    });
}

/// Characters that must never reach the terminal raw from a human listing.
fn raw_unsafe(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        })
        .collect()
}

#[test]
fn human_listings_escape_bidi_overrides_and_controls_and_json_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let name = "Shop\u{202e}regit\u{9b}2J";
    // The CLI refuses control characters in a name now, but a database from before holds
    // whatever was typed: such a name is written straight into the store.
    let refused = admin(dir.path(), &["accounts", "create", "--name", name]);
    assert!(
        stderr(&refused).contains("control characters"),
        "{}",
        stderr(&refused)
    );
    let account_id = &create_directly(dir.path(), name);
    let serial = "SN\u{202e}4321";
    let model = "Cam\u{1b}[2J\u{200b}";
    let status = serde_json::json!({ "disk": "ok\u{2066}\u{85}", "note": "a \"b\" \\ c" });
    enroll_directly(dir.path(), account_id, serial, model, &status.to_string());

    let list = admin(dir.path(), &["recorders", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list = stdout(&list);
    assert!(raw_unsafe(&list).is_empty(), "{list:?}");
    assert!(list.contains("SN\\u{202e}4321"), "{list}");
    assert!(list.contains("Cam\\u{1b}[2J\\u{200b}"), "{list}");

    let json: serde_json::Value =
        serde_json::from_slice(&admin(dir.path(), &["recorders", "list", "--json"]).stdout)
            .unwrap();
    assert_eq!(json[0]["serial"], serial, "JSON keeps the exact text");
    assert_eq!(json[0]["model"], model);
    let id = json[0]["id"].as_str().unwrap();

    let show = admin(dir.path(), &["recorders", "show", id]);
    assert!(show.status.success(), "{}", stderr(&show));
    let show = stdout(&show);
    assert!(raw_unsafe(&show).is_empty(), "{show:?}");
    assert!(
        show.contains("SN\\u{202e}4321 / Cam\\u{1b}[2J\\u{200b}"),
        "{show}"
    );
    assert!(show.contains("0.1.0\\u{202e}"), "{show}");
    assert!(show.contains(r#""ok\u2066\u0085""#), "{show}");
    assert!(show.contains(r#""a \"b\" \\ c""#), "{show}");
    let shown: serde_json::Value =
        serde_json::from_slice(&admin(dir.path(), &["recorders", "show", id, "--json"]).stdout)
            .unwrap();
    assert_eq!(shown["status"], status);

    let accounts = stdout(&admin(dir.path(), &["accounts", "list"]));
    assert!(raw_unsafe(&accounts).is_empty(), "{accounts:?}");
    assert!(
        accounts.contains("Shop\\u{202e}regit\\u{9b}2J"),
        "{accounts}"
    );

    let audit = stdout(&admin(dir.path(), &["audit"]));
    assert!(raw_unsafe(&audit).is_empty(), "{audit:?}");
    assert!(audit.contains("recorder.enrolled"), "{audit}");
    assert!(audit.contains(r"SN\u202e4321"), "{audit}");
}

/// Runs the binary through `sh` with a umask of 022, as from an admin's shell.
fn admin_with_umask_022(data_dir: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every regular file directly in `dir`, `dir/tls` and `dir/secrets`, with its mode.
fn file_modes(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut files = Vec::new();
    for d in [dir.to_owned(), dir.join("tls"), dir.join("secrets")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let m = mode(&path);
                files.push((path, m));
            }
        }
    }
    files
}

#[test]
fn the_data_dir_is_0700_and_its_files_0600_whatever_the_umask() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let out = admin_with_umask_022(&data, &["accounts", "create", "--name", "Shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&data), 0o700);
    let files = file_modes(&data);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("contera.db")),
        "{files:?}"
    );
    for (path, mode) in &files {
        assert_eq!(*mode, 0o600, "{}", path.display());
    }

    // The server, started on a fresh directory: database, WAL and shared memory, the CAs
    // and the server certificate.
    let data = parent.path().join("served");
    let mut server = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
        ])
        .env_remove("CONTERA_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The console's line comes first, then the device port's "listening on" line.
    let mut stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
            break;
        }
    }
    // The line comes before the database and the certificates: wait for the last of them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !data.join("tls/server.pem").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let files = file_modes(&data);
    let _ = server.kill();
    let output = server.wait_with_output().unwrap();
    assert!(
        line.contains("listening on"),
        "{line:?} {}",
        stderr(&output)
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("tls")), 0o700);
    assert_eq!(mode(&data.join("secrets")), 0o700);
    for name in [
        "contera.db",
        "contera.db-wal",
        "contera.db-shm",
        "ca.key",
        "server.pem",
        "codes.key",
    ] {
        assert!(
            files.iter().any(|(p, _)| p.ends_with(name)),
            "{name} missing from {files:?}"
        );
    }
    for (path, mode) in &files {
        assert_eq!(*mode, 0o600, "{}", path.display());
    }
}

#[test]
fn an_existing_loose_data_dir_is_tightened_and_named() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let out = admin_with_umask_022(&data, &["accounts", "create", "--name", "Shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let db = data.join("contera.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = admin_with_umask_022(&data, &["accounts", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    let log = stderr(&out);
    assert!(log.contains(&format!("{}", db.display())), "{log}");
}

fn id_un() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn last_actor(data_dir: &Path) -> String {
    let audit: serde_json::Value =
        serde_json::from_slice(&admin(data_dir, &["audit", "--limit", "1", "--json"]).stdout)
            .unwrap();
    audit[0]["actor"].as_str().unwrap().to_owned()
}

#[test]
fn the_cli_actor_is_the_real_user_not_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let me = id_un();
    assert_ne!(me, "mallory");
    let out = Command::new(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["accounts", "create", "--name", "Shop"])
        .env("USER", "mallory")
        .env("LOGNAME", "mallory")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_actor(dir.path()), format!("cli:{me}"));

    // $SUDO_USER names who used sudo only for root; for anyone else it is ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["accounts", "create", "--name", "Shop 2"])
        .env("USER", "mallory")
        .env("SUDO_USER", "mallory")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let actor = last_actor(dir.path());
    if me == "root" {
        assert_eq!(actor, "cli:root (sudo: mallory)");
    } else {
        assert_eq!(actor, format!("cli:{me}"));
    }
}

/// Resolves a code the way enrollment does, against the data directory's database.
fn enrolls(data_dir: &Path, code: &str) -> bool {
    use contera_provisioning::store::{SqliteStore, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(
            SqliteStore::open(&data_dir.join("contera.db"))
                .await
                .unwrap(),
        );
        contera_provisioning::accounts::resolve_code(&store, code)
            .await
            .is_ok()
    })
}

#[test]
fn codes_are_created_with_limits_listed_shown_again_disabled_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let account = json_of(&admin(
        dir.path(),
        &["accounts", "create", "--name", "Shop", "--json"],
    ));
    let id = account["id"].as_str().unwrap();
    let initial = account["registration_code"].as_str().unwrap();

    let created = json_of(&admin(
        dir.path(),
        &[
            "codes",
            "create",
            "--account",
            id,
            "--label",
            "Installer Bob",
            "--expires-in-days",
            "7",
            "--max-uses",
            "3",
            "--json",
        ],
    ));
    let code = created["registration_code"].as_str().unwrap();
    let public_id = created["public_id"].as_str().unwrap();
    assert_eq!(created["max_uses"], 3);
    assert!(enrolls(dir.path(), code) && enrolls(dir.path(), initial));

    let listed = json_of(&admin(
        dir.path(),
        &["codes", "list", "--account", id, "--json"],
    ));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["public_id"], public_id);
    assert_eq!(listed[0]["label"], "Installer Bob");
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["uses"], 0);
    assert!(listed[0]["expires_at"].is_string());
    assert!(listed[0]["created_by"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    assert_eq!(listed[1]["label"], "Initial code");
    let human = stdout(&admin(dir.path(), &["codes", "list", "--account", id]));
    assert!(
        human.contains("Installer Bob") && human.contains("0/3"),
        "{human}"
    );
    assert!(!human.contains(code) && !human.contains(initial), "{human}");

    // Shown again: the very code that enrolls, in both forms.
    let shown = json_of(&admin(dir.path(), &["codes", "show", public_id, "--json"]));
    assert_eq!(shown["registration_code"], code);
    let human = stdout(&admin(dir.path(), &["codes", "show", public_id]));
    assert!(human.contains(code), "{human}");

    // Disabled: no longer enrolls; the other code still does.
    let out = admin(dir.path(), &["codes", "disable", public_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!enrolls(dir.path(), code) && enrolls(dir.path(), initial));
    let out = admin(dir.path(), &["codes", "disable", "ZZZZ"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("codes list"), "{}", stderr(&out));

    // Rotate keeps its output and disables every active code.
    let rotated = admin(dir.path(), &["codes", "rotate", "--account", id]);
    let text = stdout(&rotated);
    assert!(
        text.starts_with(&format!("New registration code for {id}: ")),
        "{text}"
    );
    assert!(text.contains("The previous code no longer works."));
    let new_code = text.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert!(!enrolls(dir.path(), initial) && enrolls(dir.path(), new_code));

    // Bad limits are refused with the fix.
    let out = admin(
        dir.path(),
        &[
            "codes",
            "create",
            "--account",
            id,
            "--expires-at",
            "tomorrow",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
    let out = admin(
        dir.path(),
        &["codes", "create", "--account", id, "--max-uses", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = admin(
        dir.path(),
        &[
            "codes",
            "create",
            "--account",
            id,
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("in the past"), "{}", stderr(&out));
    assert_eq!(
        json_of(&admin(
            dir.path(),
            &["codes", "list", "--account", id, "--json"]
        ))
        .as_array()
        .unwrap()
        .len(),
        3,
        "refused codes are not stored"
    );

    // Every step is audited, and no audit row holds a code.
    let audit = stdout(&admin(dir.path(), &["audit", "--json", "--limit", "100"]));
    for action in [
        "code.created",
        "code.shown",
        "code.disabled",
        "code.rotated",
    ] {
        assert!(audit.contains(action), "{action} missing: {audit}");
    }
    for c in [initial, code, new_code] {
        assert!(!audit.contains(c) && !audit.contains(&c.replace('-', "")));
    }
}

#[test]
fn a_lost_code_key_is_named_and_codes_still_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let account = json_of(&admin(
        dir.path(),
        &["accounts", "create", "--name", "Shop", "--json"],
    ));
    let code = account["registration_code"].as_str().unwrap();
    let public_id = &code[..4];
    std::fs::remove_file(dir.path().join("secrets/codes.key")).unwrap();
    let out = admin(dir.path(), &["codes", "show", public_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("codes.key is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("secrets/codes.key").exists(), "no new key");
    assert!(enrolls(dir.path(), code));
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn accounts_carry_an_address_and_contact_and_are_updated_audited() {
    let dir = tempfile::tempdir().unwrap();
    let created = json_of(&admin(
        dir.path(),
        &[
            "accounts",
            "create",
            "--name",
            "Shop",
            "--address",
            "1 Main St\nSpringfield",
            "--contact",
            "Ann, 555-0100",
            "--json",
        ],
    ));
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["address"], "1 Main St\nSpringfield");
    assert_eq!(created["contact"], "Ann, 555-0100");
    assert_eq!(created["disabled"], false);

    let updated = json_of(&admin(
        dir.path(),
        &[
            "accounts",
            "update",
            id,
            "--name",
            "Shop 2",
            "--contact",
            "",
            "--json",
        ],
    ));
    assert_eq!(updated["name"], "Shop 2");
    assert_eq!(updated["contact"], serde_json::Value::Null);
    assert_eq!(updated["address"], "1 Main St\nSpringfield");

    // The human form escapes the address's line break, so it stays on its line.
    let shown = stdout(&admin(dir.path(), &["accounts", "show", id]));
    assert!(
        shown.contains("address:  1 Main St\\u{a}Springfield"),
        "{shown}"
    );
    assert!(shown.contains("state:    enabled"), "{shown}");

    let audit = json_of(&admin(dir.path(), &["audit", "--limit", "1", "--json"]));
    let entry = &audit[0];
    assert_eq!(entry["action"], "account.updated");
    assert_eq!(entry["account_id"], id);
    assert!(entry["actor"].as_str().unwrap().starts_with("cli:"));
    let detail: serde_json::Value =
        serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["name"]["new"], "Shop 2");
    assert_eq!(detail["contact"]["old"], "Ann, 555-0100");
    assert!(detail.get("address").is_none(), "{detail}");

    // Bad input: refused with the limit, nothing changed.
    for (args, words) in [
        (vec!["--name", " "], "name is empty"),
        (vec!["--address", &"x".repeat(501)], "at most 500"),
        (vec!["--contact", "a\u{1b}[2Jb"], "control characters"),
        (vec![], "nothing to change"),
    ] {
        let mut all = vec!["accounts", "update", id];
        all.extend(args.iter().copied());
        let out = admin(dir.path(), &all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(words), "{all:?}: {}", stderr(&out));
    }
    let missing = admin(dir.path(), &["accounts", "update", "nope", "--name", "X"]);
    assert!(
        stderr(&missing).contains("accounts list"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(
        json_of(&admin(dir.path(), &["accounts", "show", id, "--json"])),
        updated
    );
}

#[test]
fn disabling_a_partner_marks_its_subtree_until_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let partner = json_of(&admin(
        dir.path(),
        &[
            "accounts", "create", "--name", "Acme", "--kind", "partner", "--json",
        ],
    ));
    let pid = partner["id"].as_str().unwrap();
    let customer = json_of(&admin(
        dir.path(),
        &[
            "accounts", "create", "--name", "Store", "--parent", pid, "--json",
        ],
    ));
    let cid = customer["id"].as_str().unwrap();

    let out = admin(dir.path(), &["accounts", "disable", pid]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("disabled"), "{}", stdout(&out));
    let again = admin(dir.path(), &["accounts", "disable", pid]);
    assert!(stdout(&again).contains("already disabled"));

    let tree = stdout(&admin(dir.path(), &["accounts", "list"]));
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].ends_with("[disabled]"), "{tree}");
    assert!(
        lines[1].ends_with(&format!("[disabled with {pid}]")),
        "{tree}"
    );
    let listed = json_of(&admin(dir.path(), &["accounts", "list", "--json"]));
    for account in listed.as_array().unwrap() {
        assert_eq!(account["disabled"], true, "{account}");
        assert_eq!(account["disabled_via"], pid, "{account}");
        for key in ["address", "contact"] {
            assert!(account.get(key).is_some(), "{key} missing from {account}");
        }
    }
    let shown = json_of(&admin(dir.path(), &["accounts", "show", pid, "--json"]));
    assert!(shown["disabled_by"].as_str().unwrap().starts_with("cli:"));
    assert!(shown["disabled_at"].is_string());

    // Enabling the customer alone does nothing while its partner is disabled: said so.
    let out = admin(dir.path(), &["accounts", "enable", cid]);
    assert!(
        stdout(&out).contains("was not disabled"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("enable that one too"),
        "{}",
        stdout(&out)
    );

    let out = admin(dir.path(), &["accounts", "enable", pid]);
    assert!(stdout(&out).contains("enabled"), "{}", stdout(&out));
    let listed = json_of(&admin(dir.path(), &["accounts", "list", "--json"]));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["disabled"] == false));
    assert!(!stdout(&admin(dir.path(), &["accounts", "list"])).contains("disabled"));

    let audit = json_of(&admin(dir.path(), &["audit", "--limit", "2", "--json"]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["account.enabled", "account.disabled"]);
    assert_eq!(audit[0]["account_id"], pid);

    let missing = admin(dir.path(), &["accounts", "disable", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("accounts list"),
        "{}",
        stderr(&missing)
    );
}

fn partner(data_dir: &Path) -> String {
    let out = admin(
        data_dir,
        &[
            "accounts", "create", "--name", "Acme", "--kind", "partner", "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    json_of(&out)["id"].as_str().unwrap().to_owned()
}

#[test]
fn users_invite_prints_an_accept_link_and_list_shows_the_user_invited() {
    let dir = tempfile::tempdir().unwrap();
    let account = partner(dir.path());
    let out = admin(
        dir.path(),
        &[
            "users",
            "invite",
            "--account",
            &account,
            "--email",
            "Jo@Example.com",
            "--name",
            "Jo",
            "--base-url",
            "https://prov.example/",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("Accept link (shown once): "))
        .unwrap_or_else(|| panic!("no link in {text}"));
    let token = link
        .strip_prefix("https://prov.example/invitations/accept#token=")
        .unwrap_or_else(|| panic!("unexpected link {link}"));
    assert_eq!(token.len(), 64);

    let json = admin(
        dir.path(),
        &[
            "users",
            "invite",
            "--account",
            &account,
            "--email",
            "ann@example.com",
            "--name",
            "Ann",
            "--json",
        ],
    );
    assert!(json.status.success(), "{}", stderr(&json));
    let json = json_of(&json);
    let link = json["accept_link"].as_str().unwrap();
    assert!(link.starts_with("https://"), "{link}");
    assert!(link.ends_with(&format!(
        "/invitations/accept#token={}",
        json["token"].as_str().unwrap()
    )));

    let listed = json_of(&admin(dir.path(), &["users", "list", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|u| u["status"] == "invited"));
    assert!(listed
        .iter()
        .all(|u| u["groups"] == serde_json::json!(["Administrators"])));
    let human = stdout(&admin(
        dir.path(),
        &["users", "list", "--account", &account],
    ));
    assert!(
        human.contains("invited") && human.contains("Jo@Example.com"),
        "{human}"
    );

    let audit = stdout(&admin(dir.path(), &["audit", "--json"]));
    assert!(audit.contains("user.invited"), "{audit}");
    assert!(audit.contains(&format!("cli:{}", id_un())), "{audit}");
    assert!(!audit.contains(token), "no token in the audit log");
}

#[test]
fn a_second_invite_with_the_same_email_in_any_case_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let account = partner(dir.path());
    let invite = |email: &str| {
        admin(
            dir.path(),
            &[
                "users",
                "invite",
                "--account",
                &account,
                "--email",
                email,
                "--name",
                "Jo",
            ],
        )
    };
    assert!(invite("jo@example.com").status.success());
    let again = invite("JO@EXAMPLE.com");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let listed = json_of(&admin(dir.path(), &["users", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn groups_create_with_a_bad_permission_is_refused_naming_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let account = partner(dir.path());
    let out = admin(
        dir.path(),
        &[
            "groups",
            "create",
            "--account",
            &account,
            "--name",
            "Techs",
            "--permission",
            "recorders.view",
            "--permission",
            "recorders.delete",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for name in [
        "accounts.view",
        "accounts.manage",
        "users.view",
        "users.manage",
        "groups.manage",
        "codes.view",
        "codes.manage",
        "recorders.view",
        "recorders.manage",
        "audit.view",
    ] {
        assert!(err.contains(name), "{name} missing from {err}");
    }
    let groups = json_of(&admin(
        dir.path(),
        &["groups", "list", "--account", &account, "--json"],
    ));
    assert_eq!(groups.as_array().unwrap().len(), 1, "only Administrators");

    let ok = admin(
        dir.path(),
        &[
            "groups",
            "create",
            "--account",
            &account,
            "--name",
            "Techs",
            "--permission",
            "recorders.view",
            "--permission",
            "recorders.manage",
            "--json",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        json_of(&ok)["permissions"],
        serde_json::json!(["recorders.view", "recorders.manage"])
    );
    let human = stdout(&admin(
        dir.path(),
        &["groups", "list", "--account", &account],
    ));
    assert!(
        human.contains("Administrators") && human.contains("Techs"),
        "{human}"
    );
}

#[test]
fn users_disable_of_an_invited_user_changes_nothing_and_unknown_users_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let account = partner(dir.path());
    admin(
        dir.path(),
        &[
            "users",
            "invite",
            "--account",
            &account,
            "--email",
            "jo@example.com",
            "--name",
            "Jo",
        ],
    );
    let out = admin(dir.path(), &["users", "disable", "JO@example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is invited; nothing changed"),
        "{}",
        stdout(&out)
    );
    let unknown = admin(dir.path(), &["users", "enable", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("users list"),
        "{}",
        stderr(&unknown)
    );
}
