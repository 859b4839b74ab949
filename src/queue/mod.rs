//! The durable queue: the only code that sees sled.
//!
//! A [`Store`] owns one sled database in the home directory. Every state change is one sled
//! transaction over all the trees it touches (the job, its indexes, its event), followed by a
//! `flush` before the caller is told it happened. Reads (`read.rs`) and state changes
//! (`write.rs`) are split; keys (`keys.rs`) and value encoding (`codec.rs`) are pure.

pub mod codec;
mod crashes;
mod history;
pub mod keys;
pub mod migrate;
mod models;
mod quarantine;
mod read;
pub mod trees;
mod tx;
mod write;

pub use quarantine::Quarantined;
pub use read::{Counts, JobFilter};
pub use write::{EnqueueOutcome, NewJob, TransitionOutcome};

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::job::{JobId, StateKind};

/// Errors of the store. No sled type crosses this boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {0} is in use by another qwen3q process")]
    Locked(PathBuf),
    #[error("the store at {path} cannot be opened: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the store at {path} was written by a newer qwen3q (schema {found}; this build reads up to {supported}); upgrade qwen3q"
    )]
    Newer {
        path: PathBuf,
        found: u8,
        supported: u8,
    },
    #[error("no space left on the device holding the store; free some space and try again")]
    DiskFull,
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("stored data is damaged: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("no job {0}")]
    NoSuchJob(JobId),
    #[error("job {id} is {from} and cannot become {to}")]
    IllegalTransition {
        id: JobId,
        from: StateKind,
        to: StateKind,
    },
}

/// Set once sled has failed to write in this process (disk full, I/O error). After that,
/// sled's flush on drop waits forever for a write that will never be stable, so a [`Store`]
/// being dropped leaks its database instead: the process can still report the error and exit,
/// and what was flushed before stays on disk.
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        if matches!(e, sled::Error::Io(_) | sled::Error::ReportableBug(_)) {
            WRITE_FAILED.store(true, Ordering::SeqCst);
        }
        match e {
            sled::Error::Io(io)
                if io.raw_os_error() == Some(libc::ENOSPC)
                    || io.kind() == std::io::ErrorKind::StorageFull
                    || io.to_string().contains("No space left") =>
            {
                StoreError::DiskFull
            }
            sled::Error::Io(io) => StoreError::Io(io.to_string()),
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                path: PathBuf::new(),
                reason: e.to_string(),
            },
            other => StoreError::Io(other.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// sled's page cache bound. Tens of MiB: the store must never crowd out a model.
    pub cache_bytes: u64,
    /// How long to retry while the lock is held. Right after a `Db` is dropped, sled's
    /// background thread may still hold the lock for a moment.
    pub lock_wait: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 32 * 1024 * 1024,
            lock_wait: Duration::from_secs(3),
        }
    }
}

/// The store. Cheap to share behind an `Arc`: sled is thread-safe.
pub struct Store {
    /// Kept for `flush`; the trees below do the work. Dropped by hand (see `WRITE_FAILED`).
    db: ManuallyDrop<sled::Db>,
    /// Every tree in the order of `trees::ALL`, so a transaction can span all of them.
    trees: Vec<sled::Tree>,
    /// Where the store lives, for messages.
    path: PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        if WRITE_FAILED.load(Ordering::SeqCst) {
            // Leak the trees too: each holds the database and would flush on drop.
            std::mem::forget(std::mem::take(&mut self.trees));
            return;
        }
        // SAFETY: dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.db) }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

impl Store {
    /// Open (or create) the store in directory `dir`, run pending migrations, and refuse a
    /// store from a newer version.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Store> {
        let started = Instant::now();
        let db = loop {
            let attempt = sled::Config::new()
                .path(dir)
                .cache_capacity(opts.cache_bytes)
                .mode(sled::Mode::LowSpace)
                .open();
            match attempt {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    if started.elapsed() >= opts.lock_wait {
                        return Err(StoreError::Locked(dir.to_path_buf()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(match StoreError::from(e) {
                        StoreError::Corrupt { reason, .. } | StoreError::Io(reason) => {
                            StoreError::Corrupt {
                                path: dir.to_path_buf(),
                                reason,
                            }
                        }
                        other => other,
                    })
                }
            }
        };
        private(dir);
        let trees = trees::ALL
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let store = Store {
            db: ManuallyDrop::new(db),
            trees,
            path: dir.to_path_buf(),
        };
        migrate::run(&store)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make everything written so far durable. Call before acknowledging anything.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, index: usize) -> &sled::Tree {
        &self.trees[index]
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// The store holds every document: its directory 0700, and its entries — files 0600,
/// directories 0700 — whatever the umask made of them (sled creates files 0644). Only the top
/// level: what lies inside a 0700 directory (sled's `blobs/`, one file a large value) is out
/// of others' reach already, and walking it would cost every open a stat a blob. Best effort:
/// a store on a file system without modes opens all the same.
fn private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        if let Ok(meta) = std::fs::symlink_metadata(p) {
            if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o777 != mode {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
            }
        }
    };
    set(dir, 0o700);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => set(&entry.path(), 0o700),
            Ok(t) if t.is_file() => set(&entry.path(), 0o600),
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), &OpenOptions::default()).unwrap();
        (dir, store)
    }

    /// A spec for a document named `name` on a model at `/m.gguf`.
    pub fn spec(name: &str) -> crate::job::JobSpec {
        crate::job::JobSpec {
            custom_id: name.into(),
            source: name.into(),
            doc_sha256: name.into(),
            doc_bytes: 1,
            task: crate::job::Task::Summarize,
            system: None,
            model: crate::job::ModelRef {
                name: "m".into(),
                path: "/m.gguf".into(),
                template: None,
            },
            params: crate::job::GenParams::qwen3_defaults(false),
            priority: 0,
            not_before: None,
            max_attempts: 3,
            extra_json: None,
            constraint: None,
            fallback: Vec::new(),
            auto: None,
        }
    }

    impl Store {
        /// Overwrite job `id`'s stored value with bytes that do not decode (a length that
        /// claims exabytes), as a damaged disk would.
        pub fn damage_job_for_tests(&self, id: JobId) {
            let garbage = [
                codec::SCHEMA_VERSION,
                2,
                253,
                255,
                255,
                255,
                255,
                255,
                255,
                255,
                31,
            ];
            self.tree(trees::t::JOBS)
                .insert(keys::job(id), &garbage[..])
                .unwrap();
        }
    }

    /// Enqueue `n` documents `d0`, `d1`, …; their ids.
    pub fn enqueue_n(store: &Store, n: usize) -> Vec<JobId> {
        let items: Vec<NewJob> = (0..n)
            .map(|i| NewJob {
                spec: spec(&format!("d{i}")),
                text: format!("text {i}"),
            })
            .collect();
        store
            .enqueue(&items, false, 1)
            .unwrap()
            .into_iter()
            .map(|o| match o {
                EnqueueOutcome::Queued(id) => id,
                other => panic!("{other:?}"),
            })
            .collect()
    }
}
