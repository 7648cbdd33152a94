//! The state directory (`$AGENTGATE_HOME`, default `./.agentgate`): CA, keys, tokens, databases.
//!
//! Secret files are created 0600 inside a 0700 directory, written atomically, and refused
//! at load time if anyone but the owner can read them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default state directory, relative to the working directory.
pub const DEFAULT_HOME: &str = ".agentgate";

/// A problem with the state directory or a file in it.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by other users (mode {mode:04o}); secrets must be private: run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

/// The resolved state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it (0700) if it does not exist.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let root: PathBuf = root.into();
        if !root.exists() {
            fs::create_dir_all(&root).map_err(io("create directory", &root))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
                .map_err(io("set permissions on", &root))?;
        }
        let root = root.canonicalize().map_err(io("resolve", &root))?;
        Ok(StateDir { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The interception CA certificate (public, PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The interception CA private key (0600, PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.path("ca.key")
    }
}

/// Writes a secret file atomically with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    write_atomic(path, contents, 0o600)
}

/// Writes a public file atomically with mode 0644.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    write_atomic(path, contents, 0o644)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(contents).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    Ok(())
}

/// Reads a secret file, refusing it if group or others have any access.
pub fn read_private(path: &Path) -> Result<Vec<u8>, StateError> {
    let meta = fs::metadata(path).map_err(io("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map_err(io("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_exposed_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let mode = fs::metadata(state.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key = state.ca_key();
        write_private(&key, b"secret").unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&key).unwrap(), b"secret");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&key).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
