//! The README's first command works: the demo script runs the server on its embedded
//! defaults and enrolls an agent into it.

use std::process::Command;

#[test]
fn the_readme_demo_enrolls_a_recorder_and_shows_it_online() {
    let bin_dir = contera_e2e::bin("contera-agent")
        .parent()
        .unwrap()
        .to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("LISTEN", "127.0.0.1:0")
        .env("CONTERA_BIN_DIR", &bin_dir)
        .output()
        .unwrap();
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
}
