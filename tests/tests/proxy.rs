//! Recorders behind a site proxy: the agent reaches the server through an HTTP CONNECT
//! proxy named in its config (a systemd service sees no shell environment) or in
//! HTTPS_PROXY.

use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn enrollment_and_heartbeats_go_through_the_configured_proxy() {
    let server = Server::start();
    let (_, code) = server.create_account("Behind a proxy", "customer", None);
    let proxy = ConnectProxy::start();
    let mut agent = Agent::configure(&server, "NVR-PROXY");
    let config = std::fs::read_to_string(&agent.config).unwrap().replace(
        "[agent]\n",
        &format!("proxy = \"{}\"\n\n[agent]\n", proxy.url()),
    );
    std::fs::write(&agent.config, config).unwrap();
    agent.run();
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "online through the proxy", || {
        (server.recorder(&id)["online"] == true).then_some(())
    });
    assert!(proxy.tunnels() >= 1);
    assert!(proxy
        .targets
        .lock()
        .unwrap()
        .iter()
        .all(|t| t == &format!("localhost:{}", server.port)));
}

#[test]
fn https_proxy_from_the_environment_is_honoured() {
    let server = Server::start();
    let (_, code) = server.create_account("Env proxy", "customer", None);
    let proxy = ConnectProxy::start();
    let mut agent = Agent::configure(&server, "NVR-ENV-PROXY");
    agent.env.push(("HTTPS_PROXY".into(), proxy.url()));
    agent.env.push(("NO_PROXY".into(), String::new()));
    agent.run();
    agent.enroll(&code).unwrap();
    assert!(
        proxy.tunnels() >= 1,
        "the enrollment went through the proxy"
    );
}

#[test]
fn an_unreachable_proxy_is_reported_as_unreachable() {
    let server = Server::start();
    let (_, code) = server.create_account("Dead proxy", "customer", None);
    let mut agent = Agent::configure(&server, "NVR-DEAD-PROXY");
    let config = std::fs::read_to_string(&agent.config)
        .unwrap()
        .replace("[agent]\n", "proxy = \"http://127.0.0.1:9\"\n\n[agent]\n");
    std::fs::write(&agent.config, config).unwrap();
    agent.run();
    let (exit, message) = agent.enroll(&code).unwrap_err();
    assert_eq!(exit, 1);
    assert!(message.contains("unreachable"), "{message}");
}
