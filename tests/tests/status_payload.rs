//! What a recorder reports in its heartbeat reaches `recorders show`: uptime, versions, OS,
//! recording volumes and the NVR's own JSON, with a broken NVR source reported, not fatal.

use std::time::Duration;

use contera_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn recorders_show_has_the_reported_status_and_a_broken_source_is_reported() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let mut agent = Agent::configure(&server, "NVR-STATUS");
    let nvr_file = agent.dir.path().join("nvr.json");
    std::fs::write(&nvr_file, r#"{"channels": 16, "cameras_online": 15}"#).unwrap();
    let volume = agent.dir.path().to_owned();
    let config = std::fs::read_to_string(&agent.config).unwrap().replace(
        "[recorder]\n",
        &format!(
            "[recorder]\nvolumes = [\"{}\"]\nstatus_file = \"{}\"\nfirmware = \"4.2.1\"\n",
            volume.display(),
            nvr_file.display()
        ),
    );
    std::fs::write(&agent.config, config).unwrap();
    agent.run();
    let id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();

    let show = || server.admin_json(&["recorders", "show", &id]);
    let status = wait_for(WAIT, "a reported status", || {
        let v = show();
        v["status"]["nvr"].is_object().then(|| v["status"].clone())
    });
    assert_eq!(status["nvr"]["channels"], 16);
    assert_eq!(status["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["firmware"], "4.2.1");
    assert!(status["uptime_secs"].as_u64().is_some());
    assert!(status["os"].is_string());
    assert_eq!(status["disks"][0]["path"], volume.display().to_string());
    assert!(status["disks"][0]["total_bytes"].as_u64().unwrap() > 0);

    // The NVR writes garbage: the heartbeat still goes, with the problem named.
    std::fs::write(&nvr_file, "{{{ not json").unwrap();
    let status = wait_for(WAIT, "the NVR error", || {
        let v = show();
        v["status"]["nvr_error"]
            .is_string()
            .then(|| v["status"].clone())
    });
    assert!(status["nvr_error"].as_str().unwrap().contains("not JSON"));
    assert!(status["nvr"].is_null());
    assert_eq!(show()["online"], true);

    let text = server.admin(&["recorders", "show", &id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("serial / model: NVR-STATUS / NV-16"),
        "{text}"
    );
    assert!(text.contains("state:          online"), "{text}");
}
