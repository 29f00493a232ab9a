//! mDNS with real packets between two network namespaces: the agent finds the server the
//! server announces (and trusts it only because TLS verifies), and `discover` lists the
//! recorder with its TXT record. Needs root and iproute2; never touches the host's
//! network namespace.

use std::time::Duration;

use contera_e2e::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// A server in namespace A that announces itself by mDNS.
fn announced_server(lan: &Lan) -> (tempfile::TempDir, Server) {
    let cfg = tempfile::tempdir().unwrap();
    let server_config = cfg.path().join("provisioning.toml");
    std::fs::write(&server_config, "[mdns]\nadvertise = true\n").unwrap();
    let server = Server::start_in(
        &lan.a,
        Lan::A_IP,
        &["--config", server_config.to_str().unwrap()],
    );
    (cfg, server)
}

/// Takes the server URL out of an agent's config, turns mDNS discovery on, and puts the
/// agent in namespace B.
fn discover_from_b(agent: &mut Agent, lan: &Lan) {
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let without_url: String = config
        .lines()
        .filter(|l| !l.starts_with("url = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let with_discovery = format!("{without_url}\n[discovery]\nenabled = true\nbrowse_secs = 3\n");
    std::fs::write(&agent.config, with_discovery).unwrap();
    agent.netns = Some(lan.b.clone());
}

#[test]
fn an_agent_without_a_url_finds_the_announced_server_and_discover_lists_both() {
    let lan = match Lan::create("m") {
        Ok(lan) => lan,
        Err(why) => {
            skip("mDNS test", &why);
            return;
        }
    };
    let (_cfg, server) = announced_server(&lan);
    let (account, code) = server.create_account("Site LAN", "customer", None);

    let mut agent = Agent::configure(&server, "NVR-MDNS");
    discover_from_b(&mut agent, &lan);
    agent.run();

    let joined = wait_for(WAIT, "enrollment through a discovered server", || {
        agent.enroll(&code).ok()
    });
    assert_eq!(joined["account"]["id"], account.as_str());
    assert_eq!(agent.status()["server"], server.url().as_str());
    assert!(agent
        .log_text()
        .contains("by mDNS; its TLS certificate verifies"));

    // From the other host: the server and the recorder, with its TXT and no secrets.
    let agent_bin = bin("contera-agent");
    let listing: Value = wait_for(WAIT, "both in discover", || {
        let out = Lan::exec(
            &lan.a,
            &agent_bin,
            &["discover", "--timeout", "3", "--json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let has_recorder = v["recorders"]
            .as_array()?
            .iter()
            .any(|r| r["txt"]["enrolled"] == "yes");
        (has_recorder && !v["servers"].as_array()?.is_empty()).then_some(v)
    });
    let recorder = listing["recorders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["txt"]["serial"] == "NVR-MDNS")
        .expect("our recorder");
    assert_eq!(recorder["txt"]["model"], "NV-16");
    assert_eq!(recorder["txt"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(recorder["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == Lan::B_IP));
    let txt = recorder["txt"].to_string();
    assert!(
        !txt.contains("Site LAN") && !txt.contains(&code[..4]),
        "no account or code in TXT: {txt}"
    );
    let server_entry = &listing["servers"][0];
    assert_eq!(server_entry["port"], server.port);
    assert_eq!(server_entry["txt"]["tls_name"], Lan::A_IP);
}

#[test]
fn an_announced_server_that_fails_tls_is_not_used() {
    let lan = match Lan::create("t") {
        Ok(lan) => lan,
        Err(why) => {
            skip("mDNS test", &why);
            return;
        }
    };
    let (_cfg, server) = announced_server(&lan);
    let (_, code) = server.create_account("Site LAN", "customer", None);
    // The agent trusts another CA: the announced server cannot prove who it is.
    let other = Server::start();
    let mut agent = Agent::configure(&other, "NVR-MDNS-UNTRUSTED");
    discover_from_b(&mut agent, &lan);
    agent.run();
    // Each attempt listens for a few seconds; keep trying until the server was seen and
    // refused for its certificate (not simply missed).
    wait_for(WAIT, "the announced server to be seen and refused", || {
        let (exit, message) = agent.enroll(&code).unwrap_err();
        assert_eq!(exit, 1);
        assert!(
            message.contains("no trusted provisioning server"),
            "{message}"
        );
        let log = agent.log_text();
        (log.contains("ignoring provisioning server") && log.contains("invalid peer certificate"))
            .then_some(())
    });
    assert!(server.recorders(None).is_empty());
}
