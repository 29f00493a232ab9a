//! What the recorder reports about itself: serial, model, MAC and firmware from the config,
//! falling back to what the machine says.

use std::fs;
use std::path::Path;

use std::time::Duration;

use contera_protocol::v1::{DiskUsage, Hardware, RecorderStatus};

use crate::config::RecorderSection;

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && text != "None" && text != "Default string").then(|| text.to_string())
}

fn configured(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The machine's own serial: the DMI product serial (readable by root), else an id
/// derived from the machine id. The machine id itself must not leave the machine
/// (machine-id(5)), and the serial travels in mDNS announcements, so it is keyed like
/// `sd_id128_get_machine_app_specific`: HMAC-SHA256 under the machine id.
pub fn machine_serial() -> String {
    read_trimmed(Path::new("/sys/class/dmi/id/product_serial"))
        .or_else(|| read_trimmed(Path::new("/etc/machine-id")).map(|id| app_specific_id(&id)))
        .unwrap_or_else(|| "unknown".to_string())
}

fn app_specific_id(machine_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, machine_id.as_bytes());
    let tag = ring::hmac::sign(&key, b"contera-agent recorder serial");
    format!("mid-{}", hex::encode(&tag.as_ref()[..8]))
}

fn first_mac() -> Option<String> {
    let mut names: Vec<_> = fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        read_trimmed(&Path::new("/sys/class/net").join(n).join("address"))
            .filter(|mac| mac != "00:00:00:00:00:00")
    })
}

pub fn detect(section: &RecorderSection) -> Hardware {
    Hardware {
        serial: configured(&section.serial).unwrap_or_else(machine_serial),
        mac: configured(&section.mac).or_else(first_mac),
        model: configured(&section.model)
            .or_else(|| read_trimmed(Path::new("/sys/class/dmi/id/product_name")))
            .unwrap_or_else(|| "unknown".to_string()),
        firmware: configured(&section.firmware),
    }
}

/// Largest NVR status forwarded, in bytes; larger output is reported, not sent.
pub const MAX_NVR_STATUS_BYTES: usize = 16 * 1024;
/// How long the NVR status command may run.
const NVR_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRETTY_NAME` from os-release(5): `/etc/os-release`, else `/usr/lib/os-release`.
/// Hand-parsed: one key is needed, and the crates that parse the file (`os-release`,
/// `etc-os-release`) are small and little maintained, or (`sysinfo`) pull in far more
/// than a recorder agent should carry.
fn os_name() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    pretty_name(&text)
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))
        .map(|v| {
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            unquoted.replace("\\\"", "\"").replace("\\\\", "\\")
        })
        .filter(|v| !v.is_empty())
}

// statvfs field types differ by platform (32-bit on some NVR SoCs), so the casts stay.
#[allow(clippy::unnecessary_cast)]
fn disk_usage(path: &Path) -> DiskUsage {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let unit = s.fragment_size() as u64;
            DiskUsage {
                path: path.display().to_string(),
                total_bytes: Some(s.blocks() as u64 * unit),
                available_bytes: Some(s.blocks_available() as u64 * unit),
                error: None,
            }
        }
        Err(e) => DiskUsage {
            path: path.display().to_string(),
            total_bytes: None,
            available_bytes: None,
            error: Some(e.desc().to_string()),
        },
    }
}

/// Parses what the NVR reported: JSON, at most [`MAX_NVR_STATUS_BYTES`].
fn parse_nvr(bytes: &[u8], what: &str) -> Result<serde_json::Value, String> {
    if bytes.len() > MAX_NVR_STATUS_BYTES {
        return Err(format!(
            "{what} is larger than {MAX_NVR_STATUS_BYTES} bytes"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("{what} is not JSON: {e}"))
}

async fn nvr_status(section: &RecorderSection) -> Option<Result<serde_json::Value, String>> {
    if let Some(path) = &section.status_file {
        let what = format!("status file {}", path.display());
        return Some(match tokio::fs::File::open(path).await {
            Err(e) => Err(format!("cannot read {what}: {e}")),
            Ok(file) => {
                use tokio::io::AsyncReadExt;
                let mut bytes = Vec::new();
                match file
                    .take(MAX_NVR_STATUS_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                {
                    Ok(_) => parse_nvr(&bytes, &what),
                    Err(e) => Err(format!("cannot read {what}: {e}")),
                }
            }
        });
    }
    let argv = section.status_command.as_ref()?;
    let what = format!("status command {}", argv[0]);
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    Some(
        match tokio::time::timeout(NVR_COMMAND_TIMEOUT, command.output()).await {
            Err(_) => Err(format!(
                "{what} did not finish within {} s",
                NVR_COMMAND_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("cannot run {what}: {e}")),
            Ok(Ok(out)) if !out.status.success() => Err(format!("{what} failed ({})", out.status)),
            Ok(Ok(out)) => parse_nvr(&out.stdout, &what),
        },
    )
}

/// The status sent with each heartbeat. A broken NVR source is reported in `nvr_error`,
/// never fatal.
pub async fn status(section: &RecorderSection) -> RecorderStatus {
    let uptime_secs = nix::sys::sysinfo::sysinfo()
        .ok()
        .map(|info| info.uptime().as_secs());
    let (nvr, nvr_error) = match nvr_status(section).await {
        None => (None, None),
        Some(Ok(value)) => (Some(value), None),
        Some(Err(e)) => (None, Some(e)),
    };
    RecorderStatus {
        uptime_secs,
        agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        firmware: configured(&section.firmware),
        os: os_name(),
        disks: section.volumes.iter().map(|v| disk_usage(v)).collect(),
        nvr,
        nvr_error,
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> RecorderSection {
        RecorderSection::default()
    }

    #[tokio::test]
    async fn status_reports_volumes_and_a_json_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nvr.json");
        fs::write(&file, r#"{"channels": 16, "recording": true}"#).unwrap();
        let s = RecorderSection {
            volumes: vec![dir.path().to_owned(), dir.path().join("missing")],
            status_file: Some(file),
            ..section()
        };
        let status = status(&s).await;
        assert_eq!(status.nvr.unwrap()["channels"], 16);
        assert!(status.nvr_error.is_none());
        assert!(status.disks[0].total_bytes.unwrap() > 0);
        assert!(status.disks[0].available_bytes.unwrap() <= status.disks[0].total_bytes.unwrap());
        assert!(status.disks[1].error.is_some());
        assert!(status.uptime_secs.is_some());
    }

    #[tokio::test]
    async fn a_broken_nvr_source_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nvr.json");
        fs::write(&file, "{not json").unwrap();
        let s = RecorderSection {
            status_file: Some(file.clone()),
            ..section()
        };
        let status = status(&s).await;
        assert!(status.nvr.is_none());
        assert!(status.nvr_error.unwrap().contains("not JSON"));

        fs::write(&file, format!("\"{}\"", "x".repeat(MAX_NVR_STATUS_BYTES))).unwrap();
        let status = super::status(&s).await;
        assert!(status.nvr_error.unwrap().contains("larger than"));

        let s = RecorderSection {
            status_command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo '{\"ok\": 1}'".into(),
            ]),
            ..section()
        };
        assert_eq!(super::status(&s).await.nvr.unwrap()["ok"], 1);
        let s = RecorderSection {
            status_command: Some(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]),
            ..section()
        };
        assert!(super::status(&s)
            .await
            .nvr_error
            .unwrap()
            .contains("failed"));
        let s = RecorderSection {
            status_command: Some(vec!["/nonexistent/nvr-status".into()]),
            ..section()
        };
        assert!(super::status(&s)
            .await
            .nvr_error
            .unwrap()
            .contains("cannot run"));
    }

    #[test]
    fn os_release_pretty_names_are_unquoted() {
        let table = [
            (
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                Some("Debian GNU/Linux 12 (bookworm)"),
            ),
            ("NAME=x\nPRETTY_NAME='Yocto 4.0'\n", Some("Yocto 4.0")),
            ("PRETTY_NAME=Plain\n", Some("Plain")),
            ("PRETTY_NAME=\"say \\\"hi\\\"\"\n", Some("say \"hi\"")),
            ("PRETTY_NAME=\"\"\n", None),
            ("NAME=x\n", None),
        ];
        for (text, want) in table {
            assert_eq!(pretty_name(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn configured_values_win_and_blank_ones_fall_back() {
        let section = RecorderSection {
            serial: Some("  NVR-1 ".into()),
            model: Some("".into()),
            mac: None,
            firmware: Some("4.2".into()),
            ..RecorderSection::default()
        };
        let hw = detect(&section);
        assert_eq!(hw.serial, "NVR-1");
        assert!(!hw.model.is_empty());
        assert_eq!(hw.firmware.as_deref(), Some("4.2"));
        let blank = detect(&RecorderSection::default());
        assert_eq!(blank.serial, machine_serial());
        assert!(!blank.serial.is_empty());
        if let Ok(id) = fs::read_to_string("/etc/machine-id") {
            assert!(
                !blank.serial.contains(id.trim()),
                "the machine id never leaves the machine"
            );
        }
    }
}
