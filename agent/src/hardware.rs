//! What the recorder reports about itself: serial, model, MAC and firmware from the config,
//! falling back to what the machine says.

use std::fs;
use std::path::Path;

use contera_protocol::v1::{Hardware, RecorderStatus};

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

/// The machine's own serial: DMI product serial (readable by root), else the machine id.
pub fn machine_serial() -> String {
    read_trimmed(Path::new("/sys/class/dmi/id/product_serial"))
        .or_else(|| read_trimmed(Path::new("/etc/machine-id")))
        .unwrap_or_else(|| "unknown".to_string())
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

/// The status sent with each heartbeat.
pub fn status(section: &RecorderSection) -> RecorderStatus {
    let uptime_secs = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|f| f.parse::<f64>().ok())
        })
        .map(|f| f as u64);
    RecorderStatus {
        uptime_secs,
        agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        firmware: configured(&section.firmware),
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_values_win_and_blank_ones_fall_back() {
        let section = RecorderSection {
            serial: Some("  NVR-1 ".into()),
            model: Some("".into()),
            mac: None,
            firmware: Some("4.2".into()),
        };
        let hw = detect(&section);
        assert_eq!(hw.serial, "NVR-1");
        assert!(!hw.model.is_empty());
        assert_eq!(hw.firmware.as_deref(), Some("4.2"));
        let blank = detect(&RecorderSection::default());
        assert_eq!(blank.serial, machine_serial());
        assert!(!blank.serial.is_empty());
    }
}
