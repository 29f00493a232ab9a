//! The shipped configuration files document every key the agent's config parser accepts,
//! and no key it would reject. The accepted keys come from the parser itself: tracing the
//! `Deserialize` impl of `AgentConfig` (serde-reflection) lists every section and every
//! field, `Option` ones included, so a key added to `agent/src/config.rs` without a line
//! in `config/agent.toml` fails here by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use contera_agent::config::AgentConfig;
use serde_reflection::{ContainerFormat, Format, Tracer, TracerConfig};

/// Section name ("" for top-level keys) → keys.
type Keys = BTreeMap<String, BTreeSet<String>>;

/// Every key `AgentConfig`'s parser accepts, per section.
fn accepted_keys() -> Keys {
    let mut tracer = Tracer::new(TracerConfig::default());
    tracer
        .trace_simple_type::<AgentConfig>()
        .unwrap_or_else(|e| panic!("tracing AgentConfig: {e}: {}", e.explanation()));
    // Unchecked: enums (e.g. log_target's values) may be incompletely traced; only the
    // struct fields matter here.
    let registry = tracer.registry_unchecked();
    let fields = |name: &str| -> Vec<(String, Format)> {
        match registry.get(name) {
            Some(ContainerFormat::Struct(fields)) => fields
                .iter()
                .map(|f| (f.name.clone(), f.value.clone()))
                .collect(),
            other => panic!("{name} is not a struct with named fields: {other:?}"),
        }
    };
    let mut keys = Keys::new();
    for (name, format) in fields("AgentConfig") {
        match &format {
            // A table ([name]) whose fields are the keys.
            Format::TypeName(ty)
                if matches!(registry.get(ty), Some(ContainerFormat::Struct(_))) =>
            {
                let section = keys.entry(name).or_default();
                section.extend(fields(ty).into_iter().map(|(key, _)| key));
            }
            // A key outside any section.
            _ => {
                keys.entry(String::new()).or_default().insert(name);
            }
        }
    }
    keys
}

/// A line `key = value` or a commented-out `# key = value`; returns the key.
fn key_of(line: &str) -> Option<&str> {
    let line = line.strip_prefix("# ").unwrap_or(line);
    let (key, _) = line.split_once(" = ")?;
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    .then_some(key)
}

fn section_of(line: &str) -> Option<&str> {
    line.strip_prefix('[')?.strip_suffix(']')
}

/// Keys a file documents (set or commented out), per section; and the problems found:
/// a key without a comment explaining it, or listed twice.
fn documented_keys(text: &str) -> (Keys, Vec<String>) {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut keys = Keys::new();
    let mut problems = Vec::new();
    let mut section = String::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = section_of(line) {
            section = name.to_string();
            keys.entry(section.clone()).or_default();
            continue;
        }
        let Some(key) = key_of(line) else { continue };
        if !keys
            .entry(section.clone())
            .or_default()
            .insert(key.to_string())
        {
            problems.push(format!("[{section}] {key} is listed twice"));
        }
        // The comment explaining a key sits above it, above the group of keys it belongs
        // to, or right above the header of the section the group opens.
        let mut above = lines[..i].iter().rev().skip_while(|l| key_of(l).is_some());
        let explained = match above.next() {
            Some(l) if section_of(l).is_some() => above
                .next()
                .is_some_and(|l| l.starts_with('#') && key_of(l).is_none()),
            Some(l) => l.starts_with('#'),
            None => false,
        };
        if !explained {
            problems.push(format!(
                "[{section}] {key} (line {}) has no comment above it",
                i + 1
            ));
        }
    }
    (keys, problems)
}

fn diff(accepted: &Keys, documented: &Keys) -> Vec<String> {
    let sections: BTreeSet<&String> = accepted.keys().chain(documented.keys()).collect();
    let empty = BTreeSet::new();
    let mut problems = Vec::new();
    for section in sections {
        let want = accepted.get(section).unwrap_or(&empty);
        let have = documented.get(section).unwrap_or(&empty);
        let missing: Vec<&String> = want.difference(have).collect();
        let extra: Vec<&String> = have.difference(want).collect();
        if !accepted.contains_key(section) {
            problems.push(format!(
                "[{section}] is not a section the agent accepts (keys {extra:?})"
            ));
            continue;
        }
        if !missing.is_empty() {
            problems.push(format!("[{section}] is missing {missing:?}"));
        }
        if !extra.is_empty() {
            problems.push(format!(
                "[{section}] lists {extra:?}, which the agent does not accept"
            ));
        }
    }
    problems
}

fn check_file(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let accepted = accepted_keys();
    let (documented, mut problems) = documented_keys(&text);
    problems.extend(diff(&accepted, &documented));
    assert!(
        problems.is_empty(),
        "{} does not document the agent's config keys as parsed by agent/src/config.rs:\n  {}",
        path.display(),
        problems.join("\n  ")
    );
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[test]
fn the_tracer_sees_every_section_and_optional_keys() {
    // Guards the test itself: if tracing lost fields, the comparisons would be hollow.
    let keys = accepted_keys();
    for (section, key) in [
        ("server", "url"),
        ("server", "ca_file"),
        ("agent", "state_dir"),
        ("recorder", "status_command"),
        ("discovery", "enabled"),
        ("discovery", "browse_secs"),
        ("enrollment", "code"),
    ] {
        assert!(
            keys.get(section).is_some_and(|k| k.contains(key)),
            "[{section}] {key} not traced: {keys:?}"
        );
    }
}

#[test]
fn config_agent_toml_documents_every_accepted_key() {
    // Also what `contera-agent print-default-config` prints.
    check_file(&repo_file("config/agent.toml"));
}

#[test]
fn the_packaged_agent_toml_documents_every_accepted_key() {
    check_file(&repo_file("packaging/agent.toml"));
}

#[test]
fn a_missing_or_unknown_key_is_named() {
    let accepted = accepted_keys();
    let text = "[server]\n# The URL.\nurl = \"https://h\"\n# Typo.\n# ca_fiel = \"/x\"\n[agent]\nstate_dir = \"/x\"\n";
    let (documented, problems) = documented_keys(text);
    assert_eq!(
        problems,
        ["[agent] state_dir (line 7) has no comment above it"]
    );
    let problems = diff(&accepted, &documented).join("\n");
    for expected in [
        "[server] is missing [\"ca_file\"",
        "[server] lists [\"ca_fiel\"], which the agent does not accept",
        "[discovery] is missing [\"browse_secs\", \"enabled\"]",
        "[agent] is missing [\"control_socket\"",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not in:\n{problems}"
        );
    }
}

#[test]
fn the_keys_set_in_config_agent_toml_are_the_defaults() {
    // The file's header promises this: apart from the example url, every key that is set
    // shows its default. AgentConfig has no PartialEq, so its Debug text is compared.
    let path = repo_file("config/agent.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = AgentConfig::parse(&text, &path).unwrap();
    let url = shipped
        .server
        .url
        .clone()
        .expect("config/agent.toml sets [server] url");
    let minimal = AgentConfig::parse(
        &format!("[server]\nurl = {url:?}\n"),
        Path::new("minimal.toml"),
    )
    .unwrap();
    assert_eq!(format!("{shipped:#?}"), format!("{minimal:#?}"));
}
