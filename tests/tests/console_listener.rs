//! The console's own listener: it never asks for a client certificate (so no browser asks
//! its user to pick one), it presents the operator's certificate when one is configured,
//! and the device port keeps serving recorders beside it.

use std::path::Path;
use std::process::Command;

use contera_e2e::Server;

/// Whether the TLS server at `addr` sends a CertificateRequest, and the subject of the
/// certificate it presents, as `openssl s_client` sees them.
fn handshake(addr: &str, ca: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(ca)
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Verification: OK") || text.contains("Verify return code: 0"),
        "{addr}: {text}"
    );
    let asked = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername localhost -tls1_2 -msg </dev/null 2>&1"
        ))
        .output()
        .expect("openssl runs");
    let msg = String::from_utf8_lossy(&asked.stdout);
    (msg.contains("CertificateRequest"), text)
}

#[test]
fn the_console_asks_for_no_client_certificate_while_the_device_port_does() {
    let server = Server::start();
    let ca = server.ca_file();
    let (device_asks, _) = handshake(&format!("127.0.0.1:{}", server.port), &ca);
    let (console_asks, _) = handshake(&format!("127.0.0.1:{}", server.console_port), &ca);
    assert!(
        device_asks,
        "the device port asks recorders for their certificate"
    );
    assert!(
        !console_asks,
        "the console never asks a browser for a certificate"
    );
}

#[test]
fn the_console_presents_the_operators_own_certificate_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("console.pem");
    let key = dir.path().join("console.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=console.example.test"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = format!(
        "[console]\ncertificate_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let server = Server::start_configured(1, &config, &[]);
    // The console chains to the operator's certificate, not to the server's own CA...
    let (_, seen) = handshake(&format!("127.0.0.1:{}", server.console_port), &cert);
    assert!(seen.contains("console.example.test"), "{seen}");
    let login = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .arg(format!("https://localhost:{}/login", server.console_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&login.stdout), "200");
    // ...and the device port still presents the server certificate recorders trust.
    let health = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(server.ca_file())
        .arg(format!("{}/healthz", server.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n");
}

#[test]
fn a_console_certificate_without_its_key_is_refused_at_start_naming_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[console]\ncertificate_file = \"/nonexistent.pem\"\n",
    )
    .unwrap();
    let out = Command::new(contera_e2e::bin("contera-provisioning"))
        .arg("--config")
        .arg(&config)
        .arg("validate-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("console.certificate_file") && stderr.contains("console.key_file"),
        "{stderr}"
    );
}
