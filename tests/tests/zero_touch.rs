//! Zero-touch: an image that carries its registration code enrolls itself on first boot,
//! keeps trying while the server is away, uses the code once and keeps no plain copy.

use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn assert_code_not_kept(agent: &Agent, code: &str) {
    let compact = code.replace('-', "");
    for file in ["state.json", "key.pem"] {
        let text = std::fs::read_to_string(agent.state_dir().join(file)).unwrap_or_default();
        assert!(
            !text.contains(&compact) && !text.contains(code),
            "code kept in {file}"
        );
    }
    let log = agent.log_text();
    assert!(!log.contains(&compact[4..23]), "code secret in the log");
}

#[test]
fn a_code_file_enrolls_on_first_start_and_is_deleted() {
    let server = Server::start();
    let (account, code) = server.create_account("Fleet", "customer", None);
    let mut agent = Agent::configure(&server, "NVR-ZT-FILE");
    let code_file = agent.dir.path().join("registration-code");
    std::fs::write(&code_file, format!("{code}\n")).unwrap();
    agent.append_config(&format!(
        "[enrollment]\ncode_file = \"{}\"\n",
        code_file.display()
    ));
    agent.run();

    wait_for(WAIT, "zero-touch enrollment", || {
        (agent.status()["enrolled"] == true).then_some(())
    });
    assert_eq!(agent.status()["account"]["id"], account.as_str());
    assert!(!code_file.exists(), "the code file is deleted once used");
    assert_code_not_kept(&agent, &code);

    // Used once: after unenroll and a restart, the same code is not used again.
    assert!(agent.cli(&["unenroll"]).status.success());
    std::fs::write(&code_file, &code).unwrap();
    agent.stop();
    agent.run();
    assert!(
        agent.log_text().contains("was used before"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.status()["enrolled"], false);
    assert_eq!(server.recorders(Some(&account)).len(), 1);
}

#[test]
fn a_systemd_credential_enrolls_once_the_server_is_reachable() {
    let mut server = Server::start();
    let (account, code) = server.create_account("Fleet", "customer", None);
    server.kill();
    let mut agent = Agent::configure(&server, "NVR-ZT-CRED");
    let creds = agent.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("registration-code"), &code).unwrap();
    agent
        .env
        .push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    agent.run();

    wait_for(WAIT, "a retrying status", || {
        let status = agent.last_status()?;
        status
            .starts_with("enrolling with the provisioned code")
            .then_some(())
    });
    assert_eq!(agent.status()["enrolled"], false);
    server.restart();
    wait_for(WAIT, "enrolled after the server came back", || {
        (agent.status()["enrolled"] == true).then_some(())
    });
    assert_eq!(agent.status()["account"]["id"], account.as_str());
    assert_code_not_kept(&agent, &code);
}

#[test]
fn a_refused_provisioned_code_is_reported_and_not_retried() {
    let server = Server::start();
    let (account, old_code) = server.create_account("Fleet", "customer", None);
    server.admin_json(&["codes", "rotate", "--account", &account]);
    let mut agent = Agent::configure(&server, "NVR-ZT-OLD");
    agent.append_config(&format!("[enrollment]\ncode = \"{old_code}\"\n"));
    agent.run();
    wait_for(WAIT, "the refusal in the log", || {
        agent.log_text().contains("was refused").then_some(())
    });
    assert_eq!(agent.status()["enrolled"], false);
    assert_eq!(
        agent.last_status().as_deref(),
        Some("waiting for a registration code")
    );
}
