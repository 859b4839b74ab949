//! The durable queue: jobs, documents, checkpoints, results, events, the model registry and
//! the memory history.
//!
//! Callers see the interface (`interface.rs`: [`Queue`] and its groups of operations), the
//! values that cross it (`types.rs`), the job identity rule (`identity.rs`) and the versioned
//! value encoding (`codec.rs`) — and no backend type. The one backend today is sled
//! (`sled/`, the only code that sees sled): one database in the home directory, every state
//! change one transaction then a flush before the caller is told it happened. [`open`] picks
//! the backend.

pub mod codec;
pub mod identity;
mod interface;
pub(crate) mod sled;
mod types;

pub use interface::{
    Batches, Crashes, JobReads, JobWrites, MemoryHistory, ModelRecords, Quarantine, Queue, Uploads,
};
pub use types::{
    BatchTarget, Counts, EnqueueOutcome, Enqueued, JobFilter, NewJob, Quarantined,
    TransitionOutcome,
};

/// The traits at once, for code that holds a backend's own type (its tests): a `dyn Queue`
/// has every group's methods, a concrete store only those of the traits in scope.
pub mod prelude {
    pub use super::interface::{
        Batches, Crashes, JobReads, JobWrites, MemoryHistory, ModelRecords, Quarantine, Queue,
        Uploads,
    };
}

#[cfg(test)]
pub(crate) use self::sled::test_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::job::{JobId, StateKind};

/// Open (or create) the store in directory `dir`, migrated to this build's schema.
pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Arc<dyn Queue>> {
    Ok(Arc::new(self::sled::SledStore::open(dir, opts)?))
}

/// What the store in `dir` looks like on disk without opening it: each file the backend
/// writes, with its size, times and inode. Any write to the store changes it. `None` when the
/// directory cannot be read. (For the status card: `client::card`.)
pub fn fingerprint(dir: &Path) -> Option<Vec<FileStamp>> {
    self::sled::fingerprint(dir)
}

/// One file of a store's [`fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub name: String,
    pub len: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
}

/// Errors of the store, whatever the backend. No backend type crosses this boundary.
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
    #[error("no batch {0}")]
    NoSuchBatch(crate::job::BatchId),
    /// The job's stored document is damaged or gone: the job's error (no retry can help),
    /// not the store's.
    #[error("job {id}'s stored document cannot be read: {reason}")]
    DamagedDocument { id: JobId, reason: String },
    /// Reading the job's stored document failed this time (an I/O error, no descriptor
    /// free): the job's error, and a retry may pass.
    #[error("job {id}'s stored document could not be read now: {reason}")]
    UnreadableDocument { id: JobId, reason: String },
    #[error("job {id} is {from} and cannot become {to}")]
    IllegalTransition {
        id: JobId,
        from: StateKind,
        to: StateKind,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Options for [`open`].
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
