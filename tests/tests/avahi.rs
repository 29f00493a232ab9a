//! Interoperability with Avahi, an independent mDNS implementation: `avahi-browse` sees the
//! recorder the agent announces, and a service published with `avahi-publish` is found by
//! `contera-agent discover`. Avahi (with its own D-Bus) runs inside a network namespace and
//! a private mount namespace; nothing runs in the host's network. Needs root, iproute2,
//! avahi-daemon, avahi-utils and dbus; without them the test says it is skipped.

use std::process::{Command, Stdio};
use std::time::Duration;

use contera_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

const SCRIPT: &str = r#"
set -euo pipefail
DIR=$1
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile &
D=$!
trap 'kill $D 2>/dev/null; wait $D 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done
cat > "$DIR/avahi-daemon.conf" <<CONF
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=va
enable-dbus=yes
[publish]
publish-hinfo=no
publish-workstation=no
CONF
avahi-daemon -f "$DIR/avahi-daemon.conf" --no-drop-root --no-chroot --no-rlimits -D
for _ in $(seq 100); do avahi-daemon -c && break; sleep 0.1; done
avahi-publish -s contera-prov-avahi _contera-prov._tcp 8443 "tls_name=avahi.test" "version=avahi" &
P=$!
for _ in $(seq 300); do
  avahi-browse -rpt _contera-nvr._tcp > "$DIR/browse.txt" 2>/dev/null || true
  grep -q 'serial=NVR-AVAHI' "$DIR/browse.txt" && break
  sleep 0.1
done
touch "$DIR/browsed"
for _ in $(seq 600); do [ -e "$DIR/done" ] && break; sleep 0.1; done
kill $P || true
avahi-daemon -k || true
"#;

fn missing_tools() -> Option<String> {
    root_with_tools(
        &[
            "/usr/sbin/avahi-daemon",
            "/usr/bin/avahi-browse",
            "/usr/bin/avahi-publish",
            "/usr/bin/dbus-daemon",
        ],
        "avahi-daemon avahi-utils dbus",
    )
    .err()
}

#[test]
fn avahi_sees_the_recorder_and_the_agent_sees_avahi_services() {
    if let Some(why) = missing_tools() {
        skip("Avahi test", &why);
        return;
    }
    let lan = match Lan::create("v") {
        Ok(lan) => lan,
        Err(why) => {
            skip("Avahi test", &why);
            return;
        }
    };
    let server = Server::start();
    let mut agent = Agent::configure(&server, "NVR-AVAHI");
    agent.append_config("[discovery]\nenabled = true\n");
    agent.netns = Some(lan.b.clone());
    agent.run();

    let dir = tempfile::tempdir().unwrap();
    let mut avahi = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.a,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            SCRIPT,
            "avahi",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("avahi.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for(WAIT, "avahi-browse to finish", || {
        if let Ok(Some(status)) = avahi.try_wait() {
            panic!(
                "the Avahi side exited early ({status}): {}",
                std::fs::read_to_string(dir.path().join("avahi.log")).unwrap_or_default()
            );
        }
        dir.path().join("browsed").exists().then_some(())
    });
    let browse = std::fs::read_to_string(dir.path().join("browse.txt")).unwrap_or_default();
    let line = browse
        .lines()
        .find(|l| l.starts_with('=') && l.contains("serial=NVR-AVAHI"))
        .unwrap_or_else(|| panic!("avahi-browse did not resolve the recorder:\n{browse}"));
    assert!(line.contains("\"enrolled=no\""), "{line}");
    assert!(line.contains("\"model=NV-16\""), "{line}");
    assert!(line.contains(Lan::B_IP), "{line}");

    let agent_bin = bin("contera-agent");
    let listing: Value = wait_for(WAIT, "the Avahi-published server in discover", || {
        let out = Lan::exec(
            &lan.b,
            &agent_bin,
            &["discover", "--timeout", "3", "--json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        // One browse can end before Avahi's A record arrives (the AAAA one may come
        // first): browse again until the IPv4 address is there too.
        v["servers"]
            .as_array()?
            .iter()
            .any(|s| {
                s["instance"] == "contera-prov-avahi"
                    && s["addresses"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|a| a == Lan::A_IP))
            })
            .then_some(v)
    });
    let published = listing["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"] == "contera-prov-avahi")
        .unwrap();
    assert_eq!(published["port"], 8443);
    assert_eq!(published["txt"]["tls_name"], "avahi.test");
    assert!(published["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == Lan::A_IP));

    std::fs::write(dir.path().join("done"), b"").unwrap();
    let _ = avahi.wait();
}
