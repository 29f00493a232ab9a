//! The agent's persistent state: one JSON file with a generation number, always replaced
//! atomically and durably, so a power cut leaves the old state or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use contera_protocol::v1::AccountRef;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const STATE_FILE: &str = "state.json";

/// What the agent remembers across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Incremented on every write, so a reader can tell which of two copies is newer.
    pub generation: u64,
    #[serde(default)]
    pub enrollment: Option<Enrollment>,
    /// Set when the server revoked this recorder; cleared by the next enrollment.
    #[serde(default)]
    pub revoked: Option<Revocation>,
    /// SHA-256 of every provisioned code already used, so none is used twice.
    #[serde(default)]
    pub consumed_codes: Vec<String>,
}

impl State {
    /// Recorder and account id, once enrolled: the identity every log line carries.
    pub fn identity(&self) -> Option<(String, String)> {
        self.enrollment
            .as_ref()
            .map(|e| (e.recorder_id.clone(), e.account.id.clone()))
    }
}

/// The credential and what it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub recorder_id: String,
    pub account: AccountRef,
    pub server_url: String,
    pub certificate_pem: String,
    pub ca_chain_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub certificate_not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub certificate_expires: OffsetDateTime,
    /// Picked once per certificate, between 70 % and 90 % of its lifetime.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_at: OffsetDateTime,
    pub heartbeat_interval_secs: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revoked recorder; `None` when a provisioned code met an already revoked key
    /// (no recorder id is known then). Stored as `""` so older agents still read it.
    #[serde(with = "empty_as_none")]
    pub recorder_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

mod empty_as_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let id = String::deserialize(d)?;
        Ok((!id.is_empty()).then_some(id))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {path} is not writable ({source}): make it writable for the user the agent runs as, or set [agent] state_dir")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads and writes `state.json` in the state directory.
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        StateFile {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) if needed and proves it is writable, so a read-only
    /// or foreign-owned directory is reported at start, not at the first enrollment.
    pub fn prepare(&self) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| StateError::NotWritable {
                path: self.dir.clone(),
                source,
            })?;
        let probe = self.dir.join(".write-test");
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"ok"));
        let _ = fs::remove_file(&probe);
        result.map_err(|source| StateError::NotWritable {
            path: self.dir.clone(),
            source,
        })
    }

    /// The previous good state, kept by every save as a fallback.
    pub fn previous_path(&self) -> PathBuf {
        self.dir.join(format!("{STATE_FILE}.prev"))
    }

    /// Loads the state. A missing file is a fresh agent. A file that is empty, torn or
    /// unparsable (a crash on a filesystem without atomic rename, a dying SD card, a hand
    /// edit) is moved aside as `state.json.broken` and the previous good copy is used; if
    /// there is none the agent starts unenrolled but keeps its key, so enrolling again
    /// restores the same recorder. Never an error that would make systemd restart-loop.
    pub fn load(&self) -> Result<State, StateError> {
        self.remove_stale_temp();
        let path = self.path();
        match read_state(&path) {
            Ok(Some(state)) => return Ok(self.newer_of(state)),
            Ok(None) => {}
            Err(ReadError::Io(source)) => {
                // A failing card: try the previous copy rather than give up.
                log::error!(
                    "cannot read {} ({source}); trying the previous copy",
                    path.display()
                );
            }
            Err(ReadError::Damaged(why)) => {
                let broken = self.dir.join(format!("{STATE_FILE}.broken"));
                log::error!(
                    "state file {} is damaged ({why}); moved it to {}",
                    path.display(),
                    broken.display()
                );
                fs::rename(&path, &broken).map_err(|source| StateError::Io {
                    action: "quarantine",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let previous = self.previous_path();
        match read_state(&previous) {
            Ok(Some(state)) => {
                log::warn!(
                    "using the previous good state {} (generation {})",
                    previous.display(),
                    state.generation
                );
                Ok(state)
            }
            Ok(None) => Ok(State::default()),
            Err(e) => {
                log::error!(
                    "the previous state {} is unusable too ({e}); starting unenrolled: enrolling again restores this recorder (its key is kept)",
                    previous.display()
                );
                Ok(State::default())
            }
        }
    }

    /// `current`, or the previous copy when that one has the higher generation (as
    /// after a hand restore of an old `state.json`): the generation says which is newer.
    fn newer_of(&self, current: State) -> State {
        match read_state(&self.previous_path()) {
            Ok(Some(previous)) if previous.generation > current.generation => {
                log::warn!(
                    "{} (generation {}) is newer than {} (generation {}); using it",
                    self.previous_path().display(),
                    previous.generation,
                    self.path().display(),
                    current.generation
                );
                previous
            }
            _ => current,
        }
    }

    /// Reads the state without repairing anything (for `status` while the daemon is
    /// down): a damaged file reads as "not enrolled" and is left for the daemon to handle.
    pub fn peek(&self) -> State {
        match read_state(&self.path()) {
            Ok(Some(state)) => match read_state(&self.previous_path()) {
                Ok(Some(previous)) if previous.generation > state.generation => previous,
                _ => state,
            },
            _ => match read_state(&self.previous_path()) {
                Ok(Some(state)) => state,
                _ => State::default(),
            },
        }
    }

    /// A temp file left by a crash mid-write (`.NAME.….tmp`, see [`write_atomic`]) is
    /// never the state or the key; remove it.
    fn remove_stale_temp(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let tmp = entry.path();
                if fs::remove_file(&tmp).is_ok() {
                    log::warn!("removed {} left by an interrupted write", tmp.display());
                }
            }
        }
    }

    /// Writes `state` with the next generation number, keeping the current file as
    /// `state.json.prev` (the first save writes both). On error (full or read-only disk) the old file is intact and
    /// `state` is unchanged.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        let mut next = state.clone();
        next.generation += 1;
        let json = serde_json::to_vec_pretty(&next).expect("state serialises");
        let io = |action: &'static str, path: PathBuf| {
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let path = self.path();
        if path.exists() {
            // prev is replaced atomically too: link the current file under a temp name,
            // then rename it over prev.
            let prev_tmp = self.dir.join(format!(".{STATE_FILE}.prev.tmp"));
            let _ = fs::remove_file(&prev_tmp);
            fs::hard_link(&path, &prev_tmp).map_err(io("keep a copy of", path.clone()))?;
            fs::rename(&prev_tmp, self.previous_path())
                .map_err(io("keep a copy of", path.clone()))?;
        } else {
            // The first state ever: its copy is itself, as a file of its own, so there
            // are two copies from the start.
            let previous = self.previous_path();
            write_atomic(&previous, &json, 0o600).map_err(io("write", previous.clone()))?;
        }
        write_atomic(&path, &json, 0o600).map_err(io("write", path.clone()))?;
        *state = next;
        Ok(())
    }
}

enum ReadError {
    Io(std::io::Error),
    Damaged(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => e.fmt(f),
            ReadError::Damaged(why) => f.write_str(why),
        }
    }
}

/// `Ok(None)` when the file does not exist.
fn read_state(path: &Path) -> Result<Option<State>, ReadError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return Err(ReadError::Damaged(e.to_string()))
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    if text.trim().is_empty() {
        return Err(ReadError::Damaged("empty".into()));
    }
    serde_json::from_str::<State>(&text)
        .map(Some)
        .map_err(|e| ReadError::Damaged(e.to_string()))
}

/// Writes through a temp file in the same directory: write, fsync, rename, fsync the
/// directory. `mode` applies from creation. The temp file (`.NAME.XXXXXX.tmp`, made with
/// `O_EXCL` by `tempfile`) is removed if anything fails; tempfile's `persist` is a plain
/// rename, so the two fsyncs that make it durable are done here.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment() -> Enrollment {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Enrollment {
            recorder_id: "r1".into(),
            account: AccountRef {
                id: "a1".into(),
                name: "Store 12".into(),
            },
            server_url: "https://127.0.0.1:1".into(),
            certificate_pem: "CERT".into(),
            ca_chain_pem: "CA".into(),
            certificate_not_before: t,
            certificate_expires: t,
            renew_at: t,
            heartbeat_interval_secs: 30,
            enrolled_at: t,
        }
    }

    /// A state file with one enrolled state saved in it.
    fn saved(dir: &Path) -> (StateFile, State) {
        let file = StateFile::new(dir);
        let mut state = State {
            enrollment: Some(enrollment()),
            ..State::default()
        };
        file.save(&mut state).unwrap();
        (file, state)
    }

    #[test]
    fn saves_round_trip_and_bump_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), State::default());
        let mut state = State {
            enrollment: Some(enrollment()),
            ..State::default()
        };
        file.save(&mut state).unwrap();
        file.save(&mut state).unwrap();
        assert_eq!(state.generation, 2);
        assert_eq!(file.load().unwrap(), state);
    }

    #[test]
    fn a_torn_or_empty_state_falls_back_to_the_previous_good_copy() {
        for damage in ["", "{\"generation\": 2, \"enrollm", "\u{0}\u{0}\u{0}"] {
            let dir = tempfile::tempdir().unwrap();
            let file = StateFile::new(dir.path());
            let mut state = State {
                enrollment: Some(enrollment()),
                ..State::default()
            };
            file.save(&mut state).unwrap();
            let good = state.clone();
            state.consumed_codes.push("x".into());
            file.save(&mut state).unwrap();
            fs::write(file.path(), damage).unwrap();
            assert_eq!(file.load().unwrap(), good, "damage {damage:?}");
            assert!(dir.path().join("state.json.broken").exists());
        }
    }

    #[test]
    fn loading_keeps_the_copy_with_the_higher_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut state) = saved(dir.path());
        state.consumed_codes.push("newer".into());
        file.save(&mut state).unwrap();
        // state.json is generation 2 and .prev generation 1; swap them, as a hand restore
        // of an old copy would.
        let (current, previous) = (file.path(), file.previous_path());
        let newer = fs::read(&current).unwrap();
        fs::copy(&previous, &current).unwrap();
        fs::write(&previous, newer).unwrap();
        assert_eq!(file.load().unwrap(), state);
        assert_eq!(file.peek(), state);
    }

    #[test]
    fn a_revocation_without_a_recorder_id_is_stored_as_before() {
        let r = Revocation {
            recorder_id: None,
            at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["recorder_id"], "");
        assert_eq!(serde_json::from_value::<Revocation>(json).unwrap(), r);
    }

    #[test]
    fn atomic_writes_apply_the_mode_and_leave_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_stale_temp_file_is_removed_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (file, state) = saved(dir.path());
        fs::write(dir.path().join(".state.json.tmp"), "{\"generation\": 99").unwrap();
        assert_eq!(file.load().unwrap(), state);
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_torn_state_file_is_quarantined_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = saved(dir.path());
        // Without a previous copy to fall back to (the first save writes one).
        assert!(file.previous_path().exists());
        fs::remove_file(file.previous_path()).unwrap();
        let text = fs::read_to_string(file.path()).unwrap();
        fs::write(file.path(), &text[..text.len() / 2]).unwrap();
        assert_eq!(file.load().unwrap(), State::default());
        assert!(dir.path().join("state.json.broken").exists());
        assert!(!file.path().exists());
    }

    #[test]
    fn a_read_only_directory_is_reported_at_prepare() {
        if running_as_root() {
            // root writes anywhere; the end-to-end test covers this with a path under a file.
            let dir = tempfile::tempdir().unwrap();
            let blocker = dir.path().join("file");
            fs::write(&blocker, b"x").unwrap();
            let err = StateFile::new(&blocker.join("state"))
                .prepare()
                .unwrap_err();
            assert!(err.to_string().contains("not writable"), "{err}");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let err = StateFile::new(dir.path()).prepare().unwrap_err();
        assert!(err.to_string().contains("not writable"), "{err}");
    }

    fn running_as_root() -> bool {
        fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }
}
