//! The data directory's files: durable writes (a crash or power cut leaves either the old
//! file or the new one) and owner-only permissions (it holds the CA keys and the database).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};

/// Mode of the data directory and its `tls/` subdirectory: only the server's user may enter.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of every file in them: the database, its WAL and shared memory, keys, certificates.
pub const DATA_FILE_MODE: u32 = 0o600;

/// Why the data directory could not be made private.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}

/// Sets the process umask to 0o077 so whatever the process creates later (SQLite's
/// database, WAL and shared-memory files, which it opens with 0644, keys, temp files) is
/// owner-only whatever umask the caller had; the packaged unit sets the same, a shell
/// usually has 022. Process-wide, so call it once at startup, before creating anything.
pub fn restrict_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

/// Creates the data directory with mode 0700, or tightens an existing one to 0700, and
/// tightens the files directly in it and in its `tls/` subdirectory (and `tls/` itself) to
/// owner-only, so a directory made by an older version or under a loose umask stops leaking
/// the database and keys. Logs and returns each path it tightened. Symlinks and other
/// non-regular entries are left alone: chmod would follow a link out of the directory.
pub fn prepare_data_dir(path: &Path) -> Result<Vec<PathBuf>, DataDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(path)
        .map_err(io("create data directory", path))?;
    let mut tightened = Vec::new();
    tighten_dir(path, &mut tightened)?;
    let tls = path.join("tls");
    match fs::symlink_metadata(&tls) {
        Ok(meta) if meta.is_dir() => tighten_dir(&tls, &mut tightened)?,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", &tls)(e)),
    }
    for path in &tightened {
        log::warn!(
            "tightened permissions of {} to owner-only (it was readable by others)",
            path.display()
        );
    }
    Ok(tightened)
}

/// Makes `dir` 0700 and each regular file directly in it 0600 when others had any access;
/// owner-only modes are left as they are (tightening must never widen the owner's).
fn tighten_dir(dir: &Path, tightened: &mut Vec<PathBuf>) -> Result<(), DataDirError> {
    let meta = fs::metadata(dir).map_err(io("inspect", dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, Permissions::from_mode(DATA_DIR_MODE))
            .map_err(io("restrict permissions of", dir))?;
        tightened.push(dir.to_owned());
    }
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let path = entry.path();
        // DirEntry::metadata does not follow symlinks.
        let meta = entry.metadata().map_err(io("inspect", &path))?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&path, Permissions::from_mode(DATA_FILE_MODE))
                .map_err(io("restrict permissions of", &path))?;
            tightened.push(path);
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temp file in the same directory: write, `fsync`,
/// rename over the target, then `fsync` the directory so the rename itself is durable.
/// `mode` applies from creation, so a key is never readable by others, even briefly.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn prepare_data_dir_creates_a_private_directory() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("a").join("data");
        assert_eq!(prepare_data_dir(&data).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(mode(&data), 0o700);
    }

    #[test]
    fn prepare_data_dir_tightens_an_existing_directory_and_its_files() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("data");
        let tls = data.join("tls");
        fs::create_dir_all(&tls).unwrap();
        let outside = parent.path().join("outside.txt");
        for (path, mode) in [
            (&data, 0o755),
            (&tls, 0o755),
            (&data.join("contera.db"), 0o644),
            (&data.join("contera.db-wal"), 0o640),
            (&data.join("private"), 0o600),
            (&tls.join("ca.key"), 0o604),
            (&tls.join("ca.pem"), 0o644),
            (&outside, 0o644),
        ] {
            if !path.exists() {
                fs::write(path, b"x").unwrap();
            }
            fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();

        let mut tightened = prepare_data_dir(&data).unwrap();
        tightened.sort();
        let mut expected = vec![
            data.clone(),
            data.join("contera.db"),
            data.join("contera.db-wal"),
            tls.clone(),
            tls.join("ca.key"),
            tls.join("ca.pem"),
        ];
        expected.sort();
        assert_eq!(tightened, expected);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&tls), 0o700);
        for file in &expected[..] {
            if file.is_file() {
                assert_eq!(mode(file), 0o600, "{}", file.display());
            }
        }
        assert_eq!(mode(&data.join("private")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a symlink's target is left alone");
        assert_eq!(prepare_data_dir(&data).unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn prepare_data_dir_refuses_a_file() {
        let parent = tempfile::tempdir().unwrap();
        let file = parent.path().join("data");
        fs::write(&file, b"x").unwrap();
        assert!(prepare_data_dir(&file).is_err());
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
