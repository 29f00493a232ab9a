//! Every refusal reaches the client intact in the one error shape, over HTTP/1.1 and
//! HTTP/2, many times in a row on one server: a wrong method (405 with `Allow`), an
//! oversized body the server answers before reading it (413), a body sent to an unknown
//! path (404) and a body that is not JSON (415). Read by curl, an independent client.

use std::path::Path;
use std::process::Command;

use contera_e2e::*;
use serde_json::Value;

struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// Runs curl with `args` against `path`; panics when no HTTP answer came back (a reset,
/// a broken pipe, an HTTP/2 stream error).
fn curl(server: &Server, version: &str, args: &[&str], path: &str) -> Answer {
    let scratch = tempfile::tempdir().unwrap();
    let headers = scratch.path().join("headers");
    let body = scratch.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", version, "--cacert"])
        .arg(server.ca_file())
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(format!("{}{path}", server.url()))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {version} {args:?} {path}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Answer {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        headers: std::fs::read_to_string(&headers).unwrap().to_lowercase(),
        body: std::fs::read_to_string(&body).unwrap(),
    }
}

fn error_code(answer: &Answer) -> String {
    let v: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body));
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.body
    );
    v["error"]["code"].as_str().unwrap().to_string()
}

fn big_body(dir: &Path) -> String {
    let path = dir.join("big.json");
    let mut body = b"{\"registration_code\":\"".to_vec();
    body.resize(10 * 1024 * 1024, b'A');
    std::fs::write(&path, body).unwrap();
    format!("@{}", path.display())
}

#[test]
fn refusals_keep_the_error_shape_over_http1_and_http2_many_times_in_a_row() {
    // Enough enrollment allowance for the rounds below (each counts against the address).
    let server = Server::start_configured(1, "enroll_attempts_per_minute = 1000\n", &[]);
    let scratch = tempfile::tempdir().unwrap();
    let big = big_body(scratch.path());
    for version in ["--http1.1", "--http2"] {
        for round in 0..8 {
            let what = format!("{version} round {round}");

            let wrong_method = curl(&server, version, &[], "/api/v1/enroll");
            assert_eq!(wrong_method.status, 405, "{what}");
            assert_eq!(error_code(&wrong_method), "method_not_allowed", "{what}");
            assert!(
                wrong_method.headers.contains("allow: post"),
                "{what}: {}",
                wrong_method.headers
            );
            assert!(
                wrong_method
                    .headers
                    .contains("content-type: application/json"),
                "{what}"
            );

            // `Expect:` off, so the client sends its 10 MB at once, as most clients do.
            let too_large = curl(
                &server,
                version,
                &[
                    "-H",
                    "Expect:",
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    &big,
                ],
                "/api/v1/enroll",
            );
            assert_eq!(too_large.status, 413, "{what}");
            assert_eq!(error_code(&too_large), "payload_too_large", "{what}");

            let unknown = curl(&server, version, &["-d", "{}"], "/api/v1/nope");
            assert_eq!(unknown.status, 404, "{what}");
            assert_eq!(error_code(&unknown), "not_found", "{what}");

            let not_json = curl(
                &server,
                version,
                &["-H", "content-type: text/plain", "-d", "{}"],
                "/api/v1/enroll",
            );
            assert_eq!(not_json.status, 415, "{what}");
            assert_eq!(error_code(&not_json), "unsupported_media_type", "{what}");
        }
    }
}
