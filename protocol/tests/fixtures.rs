//! Golden JSON fixtures: each file parses into its protocol type and serialises back to
//! the same JSON value, so a renamed or retyped field fails here before it reaches a peer.

use contera_protocol::v1::*;
use contera_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let parsed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(back, original, "{name} changed on the round trip");
    parsed
}

#[test]
fn enroll_request_fixture_round_trips() {
    let req: EnrollRequest = round_trip("enroll_request.json");
    assert_eq!(req.hardware.serial, "NVR-0001");
    assert_eq!(req.hardware.mac.as_deref(), Some("00:11:22:33:44:55"));
}

#[test]
fn enroll_response_fixture_round_trips() {
    let resp: EnrollResponse = round_trip("enroll_response.json");
    assert_eq!(resp.account.name, "Store 12");
    assert_eq!(resp.server_time.unix_timestamp(), 1_795_729_235);
}

#[test]
fn heartbeat_request_fixture_keeps_unknown_status_fields() {
    let req: HeartbeatRequest = round_trip("heartbeat_request.json");
    assert_eq!(req.status.uptime_secs, Some(86400));
    assert!(req.status.extra.contains_key("vendor_field"));
    assert_eq!(req.status.disks.len(), 2);
    assert_eq!(req.status.nvr.as_ref().unwrap()["channels"], 16);
}

#[test]
fn heartbeat_response_fixture_round_trips() {
    let resp: HeartbeatResponse = round_trip("heartbeat_response.json");
    assert_eq!(resp.instructions, vec![Instruction::Renew]);
}

#[test]
fn unknown_instructions_from_a_newer_server_are_tolerated() {
    let resp: HeartbeatResponse = serde_json::from_str(
        r#"{"heartbeat_interval_secs":30,"account":{"id":"a","name":"b"},
            "instructions":[{"type":"reboot_into_space"},{"type":"renew"}],
            "server_time":"2026-11-26T21:40:35Z"}"#,
    )
    .unwrap();
    assert_eq!(
        resp.instructions,
        vec![Instruction::Unknown, Instruction::Renew]
    );
}

#[test]
fn account_disabled_instruction_round_trips() {
    let resp: HeartbeatResponse = round_trip("heartbeat_response_account_disabled.json");
    assert_eq!(resp.instructions, vec![Instruction::AccountDisabled]);
}

/// The instruction as agents released before it parse it: their `Instruction` had only
/// `Renew` and the `#[serde(other)]` catch-all, so the heartbeat answer still parses and
/// the instruction is ignored.
#[test]
fn an_agent_without_account_disabled_ignores_it() {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum OldInstruction {
        Renew,
        #[serde(other)]
        Unknown,
    }
    #[derive(serde::Deserialize)]
    struct OldHeartbeatResponse {
        #[allow(dead_code)]
        heartbeat_interval_secs: u32,
        #[serde(default)]
        instructions: Vec<OldInstruction>,
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/heartbeat_response_account_disabled.json"),
    )
    .unwrap();
    let old: OldHeartbeatResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(old.instructions, vec![OldInstruction::Unknown]);
}

#[test]
fn account_disabled_error_fixture_round_trips() {
    let body: ErrorBody = round_trip("error_account_disabled.json");
    assert_eq!(
        contera_protocol::ErrorCode::parse(&body.error.code),
        Some(contera_protocol::ErrorCode::AccountDisabled)
    );
}

#[test]
fn renew_fixtures_round_trip() {
    let _: RenewRequest = round_trip("renew_request.json");
    let _: RenewResponse = round_trip("renew_response.json");
}

#[test]
fn error_fixture_round_trips() {
    let body: ErrorBody = round_trip("error.json");
    assert_eq!(body.error.code, "invalid_registration_code");
}

#[test]
fn enroll_request_without_a_csr_is_rejected() {
    let err = serde_json::from_str::<EnrollRequest>(
        r#"{"registration_code":"x","hardware":{"serial":"s","model":"m"},"agent_version":"1"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("csr_pem"), "{err}");
}

#[test]
fn goodbye_fixture_round_trips() {
    let req: GoodbyeRequest = round_trip("goodbye_request.json");
    assert_eq!(req.reason, "shutdown");
}

#[test]
fn debug_output_of_an_enrollment_hides_the_code() {
    let req: EnrollRequest = round_trip("enroll_request.json");
    let debug = format!("{req:?}");
    assert!(!debug.contains("2M9X"), "{debug}");
    assert!(debug.contains("NVR-0001"));
}

#[test]
fn enroll_preview_fixtures_round_trip() {
    let req: EnrollPreviewRequest = round_trip("enroll_preview_request.json");
    assert!(!format!("{req:?}").contains("K7QD"), "Debug hides the code");
    let resp: EnrollPreviewResponse = round_trip("enroll_preview_response.json");
    assert_eq!(resp.parent_name.as_deref(), Some("Acme Integrators"));
}
