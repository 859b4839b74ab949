//! Where qwen3q keeps its data: one home directory holding the store, the socket, the config
//! and the logs.
//!
//! macOS: `~/Library/Application Support/qwen3q`; Linux: `$XDG_DATA_HOME/qwen3q` (else
//! `~/.local/share/qwen3q`). `--home DIR` and `QWEN3Q_HOME` override. Created with mode 0700.

use std::path::{Path, PathBuf};

/// The home directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

/// Longest socket path the platform accepts (`sun_path`, less the terminating NUL).
#[cfg(target_os = "macos")]
const SOCKET_PATH_MAX: usize = 103;
#[cfg(not(target_os = "macos"))]
const SOCKET_PATH_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("no home directory: set QWEN3Q_HOME or pass --home")]
    NoHome,
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("the socket path {0} is longer than the {SOCKET_PATH_MAX} bytes the OS allows; use a shorter --home")]
    SocketPathTooLong(PathBuf),
}

/// The platform default, before overrides.
pub fn default_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    #[cfg(target_os = "macos")]
    {
        home.map(|h| h.join("Library/Application Support/qwen3q"))
    }
    #[cfg(not(target_os = "macos"))]
    {
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(x) => Some(PathBuf::from(x).join("qwen3q")),
            None => home.map(|h| h.join(".local/share/qwen3q")),
        }
    }
}

impl Home {
    /// Resolve: the flag, else `QWEN3Q_HOME`, else the platform default. Does not create it.
    pub fn resolve(flag: Option<&Path>) -> Result<Home, HomeError> {
        let dir = match flag {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("QWEN3Q_HOME").filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => default_dir().ok_or(HomeError::NoHome)?,
            },
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| HomeError::Create(dir.clone(), e))?
                .join(dir)
        };
        Ok(Home { dir })
    }

    /// Create the directory (0700) if it does not exist.
    pub fn ensure(&self) -> Result<(), HomeError> {
        use std::os::unix::fs::DirBuilderExt;
        if self.socket().as_os_str().len() > SOCKET_PATH_MAX {
            return Err(HomeError::SocketPathTooLong(self.socket()));
        }
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| HomeError::Create(self.dir.clone(), e))?;
        }
        // A home made by hand (or by an older qwen3q) may be open to others: it holds every
        // document and the worker's socket. Tighten it, and say so.
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&self.dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                let tightened = std::fs::Permissions::from_mode(0o700);
                match std::fs::set_permissions(&self.dir, tightened) {
                    Ok(()) => tracing::warn!(
                        "{} was open to other users (mode {mode:o}): now 0700",
                        self.dir.display()
                    ),
                    Err(e) => tracing::warn!(
                        "{} is open to other users (mode {mode:o}) and cannot be tightened: {e}",
                        self.dir.display()
                    ),
                }
            }
        }
        Ok(())
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("qwen3q.sock")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The HTTP API's key (0600), made at the first `worker --http`.
    pub fn api_key(&self) -> PathBuf {
        self.dir.join("api-key")
    }
    /// Present while the runner decodes interactive chats ([`crate::supervise::ChatWitness`]).
    pub fn chats_decoding(&self) -> PathBuf {
        self.dir.join("chats-decoding")
    }
    /// The cache of models already checked (`validated.rs`).
    pub fn validated_models(&self) -> PathBuf {
        self.dir.join("validated-models.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// A small file of the home (a cache, a hint, a card) parsed as JSON: `None` when it is
/// missing, unreadable, larger than `cap` bytes (not read whole: such a file is not ours) or not
/// the JSON of a `T`.
pub fn read_small_json<T: serde::de::DeserializeOwned>(path: &Path, cap: u64) -> Option<T> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > cap {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Replace a file of the home whole with `value` as JSON: written beside it (0600, this
/// process's own temporary name), then renamed over it, so a reader sees the old file or the
/// new one.
pub fn replace_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_paths_live_inside() {
        let h = Home::resolve(Some(Path::new("/tmp/q3h"))).unwrap();
        assert_eq!(h.dir, PathBuf::from("/tmp/q3h"));
        assert_eq!(h.socket(), PathBuf::from("/tmp/q3h/qwen3q.sock"));
        assert_eq!(h.store(), PathBuf::from("/tmp/q3h/store"));
    }

    #[test]
    fn ensure_creates_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let h = Home::resolve(Some(&t.path().join("a/b"))).unwrap();
        h.ensure().unwrap();
        let mode = std::fs::metadata(&h.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_open_home_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Home { dir: dir.clone() }.ensure().unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn too_long_socket_paths_are_refused() {
        let long = PathBuf::from("/tmp").join("x".repeat(120));
        let h = Home { dir: long };
        assert!(matches!(h.ensure(), Err(HomeError::SocketPathTooLong(_))));
    }
}
