//! Logs reach a real journald with the identifier and structured fields, and never the
//! registration code. journald runs in a private mount namespace (no booted systemd
//! needed); needs root, `unshare` and /lib/systemd/systemd-journald.

use std::process::Command;

use contera_e2e::*;
use serde_json::Value;

const SCRIPT: &str = r#"
set -euo pipefail
OUT=$1 CONF=$2 AGENT=$3 CFG=$4 CODE=$5 SOCK=$6
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$OUT" /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\n' > "$CONF"
mount --bind "$CONF" /etc/systemd/journald.conf
/lib/systemd/systemd-journald & J=$!
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
"$AGENT" --config "$CFG" run & A=$!
for _ in $(seq 400); do [ -S "$SOCK" ] && break; sleep 0.05; done
"$AGENT" --config "$CFG" enroll --code "$CODE" >/dev/null
for _ in $(seq 200); do
  "$AGENT" --config "$CFG" status --json | grep -q '"last_heartbeat": "' && break
  sleep 0.05
done
kill -TERM $A
wait $A
for _ in $(seq 200); do
  journalctl --directory=/run/log/journal SYSLOG_IDENTIFIER=contera-agent -o json > "$OUT/entries.json"
  grep -q 'told the server goodbye' "$OUT/entries.json" && break
  sleep 0.05
done
kill $J
wait $J || true
"#;

fn can_run() -> Result<(), String> {
    root_with_tools(
        &[
            "/lib/systemd/systemd-journald",
            "/usr/bin/unshare",
            "/usr/bin/journalctl",
        ],
        "systemd util-linux",
    )
}

#[test]
fn journal_entries_carry_identity_fields_and_never_the_code() {
    if let Err(why) = can_run() {
        skip("journal test", &why);
        return;
    }
    let server = Server::start();
    let (account, code) = server.create_account("Store 12", "customer", None);
    let agent = Agent::configure(&server, "NVR-JOURNAL");
    agent.add_agent_setting("log_target = \"journal\"");
    let out = tempfile::tempdir().unwrap();
    let conf = out.path().join("journald.conf");
    let journal_dir = out.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let run = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            SCRIPT,
            "journal-test",
        ])
        .arg(&journal_dir)
        .arg(&conf)
        .arg(bin("contera-agent"))
        .arg(&agent.config)
        .arg(&code)
        .arg(agent.dir.path().join("run/control.sock"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "journal script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let raw = std::fs::read_to_string(journal_dir.join("entries.json")).unwrap();
    let entries: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() >= 3, "{raw}");
    let recorder_id = server.recorders(Some(&account))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let enrolled = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("enrolled as recorder"))
        })
        .unwrap_or_else(|| panic!("no enrollment line in {raw}"));
    assert_eq!(enrolled["SYSLOG_IDENTIFIER"], "contera-agent");
    assert_eq!(enrolled["RECORDER_ID"], recorder_id.as_str());
    assert_eq!(enrolled["ACCOUNT_ID"], account.as_str());
    assert_eq!(enrolled["SERVER"], server.url().as_str());
    assert_eq!(enrolled["PRIORITY"], "5", "info maps to notice");
    let started = entries
        .iter()
        .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains("started")))
        .unwrap();
    assert!(
        started.get("RECORDER_ID").is_none(),
        "no recorder id before enrollment"
    );
    assert_eq!(started["SERVER"], server.url().as_str());

    // Neither the code nor its secret part, in any form, nor the key.
    let compact = code.replace('-', "");
    let secret = &compact[4..23];
    for needle in [
        code.as_str(),
        compact.as_str(),
        secret,
        &secret.to_lowercase(),
        "PRIVATE KEY",
    ] {
        assert!(!raw.contains(needle), "{needle} leaked into the journal");
    }
    assert!(raw.contains(&compact[..4]), "the public id may appear");
}
