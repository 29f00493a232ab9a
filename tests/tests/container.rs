//! The packaged agent under a real systemd: the .deb installed into a Debian root booted
//! with systemd-nspawn, enrolling against a server in a network namespace next to it.
//! Checks READY/STATUS as systemd sees them, the journal's structured fields, a watchdog
//! restart of a wedged main loop, and a clean stop that shows the recorder offline at once.
//!
//! Needs root, systemd-nspawn, a Debian root (`CONTERA_NSPAWN_ROOT`, made by
//! `scripts/make-nspawn-root.sh`) and the built packages (`CONTERA_DEB_DIR`); `.ci/run`
//! provides all of them. Without them the test says it is skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use contera_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

struct Container {
    nspawn: Option<Child>,
    leader: u32,
    log: PathBuf,
}

impl Container {
    fn boot(root: &Path, netns: &str, debs: &Path, log: PathBuf) -> Container {
        let out = std::fs::File::create(&log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args([
                "--ephemeral",
                "-b",
                "--register=no",
                "--keep-unit",
                "--console=pipe",
            ])
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg(format!("--bind-ro={}:/debs", debs.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("systemd-nspawn starts");
        let nspawn_pid = nspawn.id();
        let mut container = Container {
            nspawn: Some(nspawn),
            leader: 0,
            log,
        };
        // The container's init is the child of nspawn whose innermost NSpid is 1.
        container.leader = wait_for(WAIT, "the container's init", || {
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .ok()?;
            children.split_whitespace().find_map(|c| {
                let status = std::fs::read_to_string(format!("/proc/{c}/status")).ok()?;
                let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
                (nspid.split_whitespace().last() == Some("1")).then(|| c.parse().unwrap())
            })
        });
        wait_for(WAIT, "systemd in the container to finish booting", || {
            let out = container.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (state == "running" || state == "degraded").then_some(())
        });
        container
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} failed in the container: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, path: &str, content: &str) {
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-a",
                "sh",
                "-c",
                &format!("cat > {path}"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    fn show(&self, property: &str) -> String {
        self.ok(&["systemctl", "show", "-P", property, "contera-agent"])
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Never kill -9 nspawn: its systemd would be orphaned. Power off and wait.
        let _ = self.exec(&["systemctl", "poweroff"]);
        if let Some(mut nspawn) = self.nspawn.take() {
            for _ in 0..600 {
                if nspawn.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-TERM", &nspawn.id().to_string()])
                .status();
            let _ = nspawn.wait();
        }
        let _ = &self.log;
    }
}

fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    if !running_as_root() {
        return Err("needs root".into());
    }
    let root = std::env::var_os("CONTERA_NSPAWN_ROOT")
        .map(PathBuf::from)
        .ok_or(
        "CONTERA_NSPAWN_ROOT is not set (scripts/make-nspawn-root.sh makes one; .ci/run sets it)",
    )?;
    if !root.join("lib/systemd/systemd").exists() {
        return Err(format!(
            "{} is not a Debian root with systemd",
            root.display()
        ));
    }
    let debs = std::env::var_os("CONTERA_DEB_DIR")
        .map(PathBuf::from)
        .ok_or("CONTERA_DEB_DIR is not set (cargo deb builds the packages; .ci/run sets it)")?;
    let has_deb = std::fs::read_dir(&debs)
        .map_err(|e| format!("{}: {e}", debs.display()))?
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("contera-agent_")
        });
    if !has_deb {
        return Err(format!("no contera-agent_*.deb in {}", debs.display()));
    }
    if Command::new("systemd-nspawn")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("systemd-nspawn is missing (apt-get install systemd-container)".into());
    }
    Ok((root, debs))
}

#[test]
fn the_packaged_agent_runs_under_systemd_with_watchdog_journal_and_clean_stop() {
    let (root, debs) = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            skip("container test", &why);
            return;
        }
    };
    let lan = Lan::create("c").expect("network namespaces");
    let server = Server::start_in(&lan.a, Lan::A_IP, &[]);
    let (account, code) = server.create_account("Store 12", "customer", None);

    let scratch = tempfile::tempdir().unwrap();
    let ct = Container::boot(&root, &lan.b, &debs, scratch.path().join("nspawn.log"));
    ct.ok(&["sh", "-c", "dpkg -i /debs/contera-agent_*.deb"]);
    ct.write(
        "/etc/contera/ca.pem",
        &std::fs::read_to_string(server.ca_file()).unwrap(),
    );
    let packaged = ct.ok(&["cat", "/etc/contera/agent.toml"]);
    assert!(
        packaged.contains("[discovery]"),
        "the packaged config: {packaged}"
    );
    ct.write(
        "/etc/contera/agent.toml",
        &format!(
            "[server]\nurl = \"{}\"\nca_file = \"/etc/contera/ca.pem\"\n\n[recorder]\nserial = \"NSPAWN-1\"\nmodel = \"NV-16\"\n",
            server.url()
        ),
    );

    // The package started the agent with its own config (mDNS, no URL); use ours.
    assert_eq!(ct.show("ActiveState"), "active", "started on install");
    ct.ok(&["systemctl", "restart", "contera-agent"]);
    assert_eq!(ct.show("ActiveState"), "active");
    assert_eq!(ct.show("StatusText"), "waiting for a registration code");
    let socket = ct.ok(&["stat", "-c", "%a %G", "/run/contera-agent/control.sock"]);
    assert_eq!(socket.trim(), "660 contera-agent");

    let enrolled = ct.ok(&["contera-agent", "enroll", "--code", &code]);
    assert!(
        enrolled.contains("joined the account \"Store 12\""),
        "{enrolled}"
    );
    wait_for(WAIT, "an enrolled StatusText", || {
        ct.show("StatusText")
            .starts_with("enrolled in Store 12, last heartbeat")
            .then_some(())
    });
    let recorder = wait_for(WAIT, "the recorder online", || {
        let list = server.recorders(Some(&account));
        let r = list.first()?.clone();
        (r["online"] == true).then_some(r)
    });
    let recorder_id = recorder["id"].as_str().unwrap().to_string();

    let journal = ct.ok(&[
        "journalctl",
        "-b",
        "-u",
        "contera-agent",
        "-o",
        "json",
        "--no-pager",
    ]);
    let entries: Vec<Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with_fields = entries
        .iter()
        .find(|e| e["RECORDER_ID"] == recorder_id.as_str())
        .unwrap_or_else(|| panic!("no entry with RECORDER_ID in {journal}"));
    assert_eq!(with_fields["ACCOUNT_ID"], account.as_str());
    assert_eq!(with_fields["SERVER"], server.url().as_str());
    assert_eq!(with_fields["SYSLOG_IDENTIFIER"], "contera-agent");
    let secret = code.replace('-', "")[4..23].to_string();
    for needle in [
        code.as_str(),
        secret.as_str(),
        secret.to_lowercase().as_str(),
    ] {
        assert!(!journal.contains(needle), "the code is in the journal");
    }

    // A wedged main loop: the watchdog fires and systemd restarts the service. The
    // packaged (release) agent has no freeze hook, so the process is stopped instead:
    // no pings come, as from a wedged loop.
    ct.ok(&["mkdir", "-p", "/etc/systemd/system/contera-agent.service.d"]);
    ct.write(
        "/etc/systemd/system/contera-agent.service.d/test.conf",
        "[Service]\nWatchdogSec=3\nRestartSec=1\n",
    );
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&["systemctl", "restart", "contera-agent"]);
    let restarts_before: u32 = ct.show("NRestarts").parse().unwrap();
    ct.ok(&[
        "sh",
        "-c",
        "kill -STOP \"$(systemctl show --property=MainPID --value contera-agent)\"",
    ]);
    wait_for(WAIT, "a watchdog restart", || {
        let restarts: u32 = ct.show("NRestarts").parse().ok()?;
        (restarts > restarts_before).then_some(())
    });
    let journal = ct.ok(&["journalctl", "-b", "-u", "contera-agent", "--no-pager"]);
    assert!(
        journal.to_lowercase().contains("watchdog timeout"),
        "{journal}"
    );
    wait_for(WAIT, "active again, still enrolled", || {
        (ct.show("ActiveState") == "active" && ct.show("StatusText").starts_with("enrolled in"))
            .then_some(())
    });

    // A clean stop: exit 0, and the server shows the recorder offline at once.
    wait_for(WAIT, "online before the stop", || {
        (server.recorder(&recorder_id)["online"] == true).then_some(())
    });
    ct.ok(&["systemctl", "stop", "contera-agent"]);
    assert_eq!(ct.show("Result"), "success");
    assert_eq!(ct.show("ExecMainStatus"), "0");
    let row = server.recorder(&recorder_id);
    assert_eq!(row["online"], false, "offline at once after a clean stop");
    assert_eq!(row["offline_reason"], "shutdown");
    println!("container test passed: recorder {recorder_id} in account {account}");
}
