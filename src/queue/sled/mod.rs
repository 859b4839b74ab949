//! The sled backend of the queue: the only code that sees sled.
//!
//! A [`SledStore`] owns one sled database in the home directory, and beside it, in
//! `documents/`, the files of documents larger than one part (`files.rs`). Every state change is one sled
//! transaction over all the trees it touches (the job, its indexes, its event), followed by a
//! `flush` before the caller is told it happened. Reads (`read.rs`) and state changes
//! (`write.rs`) are split, each implementing its part of the [`Queue`] interface; keys
//! (`keys.rs`, big-endian so that sled's order is the queue's) are pure.

mod batches;
mod crashes;
pub(crate) mod files;
mod history;
pub mod keys;
pub mod migrate;
mod models;
mod quarantine;
mod read;
pub mod trees;
mod tx;
mod uploads;
mod write;

use super::{codec, OpenOptions, Queue, Result, StoreError};

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set once sled has failed to write in this process (disk full, I/O error). After that,
/// sled's flush on drop waits forever for a write that will never be stable, so a [`SledStore`]
/// being dropped leaks its database instead: the process can still report the error and exit,
/// and what was flushed before stays on disk.
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        if matches!(e, sled::Error::Io(_) | sled::Error::ReportableBug(_)) {
            WRITE_FAILED.store(true, Ordering::SeqCst);
        }
        match e {
            sled::Error::Io(io) => io_error(io),
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                path: PathBuf::new(),
                reason: e.to_string(),
            },
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// The store. Cheap to share behind an `Arc`: sled is thread-safe.
pub struct SledStore {
    /// Kept for `flush`; the trees below do the work. Dropped by hand (see `WRITE_FAILED`).
    db: ManuallyDrop<sled::Db>,
    /// Every tree in the order of `trees::ALL`, so a transaction can span all of them.
    trees: Vec<sled::Tree>,
    /// Where the store lives, for messages.
    path: PathBuf,
    /// The files of documents larger than one part (`files.rs`).
    files: files::DocFiles,
    /// Enqueues hold it shared from writing their documents' files to committing the jobs that
    /// name them; the sweep of orphan files holds it alone, so it never takes a file about to
    /// be named.
    doc_writes: std::sync::RwLock<()>,
}

/// The files sled writes in `dir` (its data file, its config, its snapshots), stamped: see
/// [`super::fingerprint`]. The document files (`documents/`) change only with the data file.
pub fn fingerprint(dir: &Path) -> Option<Vec<super::FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    let mut stamps = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name == "db" || name == "conf" || name.starts_with("snap.")) {
            continue;
        }
        let meta = entry.metadata().ok()?;
        stamps.push(super::FileStamp {
            name,
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
        });
    }
    if !stamps.iter().any(|s| s.name == "db") {
        return None;
    }
    stamps.sort_by(|a, b| a.name.cmp(&b.name));
    Some(stamps)
}

impl Drop for SledStore {
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

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

/// An I/O error of the store (sled's, or the document files'): a full disk or quota is
/// [`StoreError::DiskFull`] (sled sometimes passes it on as a message only).
fn io_error(e: std::io::Error) -> StoreError {
    let full = [libc::ENOSPC, libc::EDQUOT];
    if e.raw_os_error().is_some_and(|c| full.contains(&c))
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.to_string().contains("No space left")
    {
        StoreError::DiskFull
    } else {
        StoreError::Io(e.to_string())
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

impl SledStore {
    /// Open (or create) the store in directory `dir`, run pending migrations, and refuse a
    /// store from a newer version.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<SledStore> {
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
        let files = files::DocFiles::open(dir).map_err(io_error)?;
        private(dir);
        let trees = trees::ALL
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let store = SledStore {
            db: ManuallyDrop::new(db),
            trees,
            path: dir.to_path_buf(),
            files,
            doc_writes: std::sync::RwLock::new(()),
        };
        migrate::run(&store)?;
        Ok(store)
    }

    fn tree(&self, index: usize) -> &sled::Tree {
        &self.trees[index]
    }
}

impl Queue for SledStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        let files = match self
            .tree(trees::t::META)
            .get(trees::meta::DOCUMENT_FILE_BYTES)?
        {
            Some(v) => codec::decode::<u64>(&v)?,
            None => 0,
        };
        Ok(self.db.size_on_disk()?.saturating_add(files))
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
    use crate::job::JobId;
    use crate::queue::{EnqueueOutcome, JobWrites, NewJob};

    pub fn temp_store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store"), &OpenOptions::default()).unwrap();
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

    /// A value that does not decode, as a damaged disk would leave it: today's version byte,
    /// then a length that claims exabytes.
    const GARBAGE: [u8; 11] = [
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

    impl SledStore {
        /// Overwrite job `id`'s stored value with [`GARBAGE`].
        pub fn damage_job_for_tests(&self, id: JobId) {
            self.tree(trees::t::JOBS)
                .insert(keys::job(id), &GARBAGE[..])
                .unwrap();
        }

        /// Overwrite the first stored part of job `id`'s document with [`GARBAGE`].
        pub fn damage_document_for_tests(&self, id: JobId) {
            self.tree(trees::t::DOCUMENTS)
                .insert(keys::job_part(id, 0), &GARBAGE[..])
                .unwrap();
        }
    }

    /// A result for `job`, finished at `now`, with a few tokens generated.
    pub fn result_for(job: &crate::job::Job, now: u64) -> crate::job::JobResult {
        crate::job::JobResult {
            answer: "ok".into(),
            reasoning: None,
            usage: crate::job::Usage {
                prompt_tokens: 5,
                completion_tokens: 1 + job.id.0 % 7,
            },
            model: job.spec.model.clone(),
            n_ctx: 512,
            chunks: 1,
            reduced: false,
            started: now,
            finished: now,
            generation_millis: 0,
            attempts: 1,
            n_seq: 1,
            json: None,
            choice: None,
            provenance: None,
            cached_tokens: 0,
        }
    }

    /// Enqueue `n` documents `d0`, `d1`, …; their ids.
    pub fn enqueue_n(store: &SledStore, n: usize) -> Vec<JobId> {
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
