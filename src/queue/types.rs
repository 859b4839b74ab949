//! The values that cross the queue's interface, whatever backend holds them.

use crate::batch::NewBatch;
pub use crate::job::Counts;
use crate::job::{BatchId, JobId, JobSpec, Millis, StateKind};

/// Which jobs `list` returns.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct JobFilter {
    pub states: Vec<StateKind>,
    /// Only jobs changed at or after this time.
    pub since: Option<Millis>,
    /// A glob over custom ids (`*`, `?`, `[...]`).
    pub custom_id_glob: Option<String>,
    /// At most this many, oldest first (`None`: all).
    pub limit: Option<usize>,
    /// Only jobs after this one (by id): the next page after a page that ended with it.
    #[serde(default)]
    pub after: Option<JobId>,
    /// Only jobs of this batch (schema 9).
    #[serde(default)]
    pub batch: Option<BatchId>,
}

/// A document to enqueue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewJob {
    pub spec: JobSpec,
    /// The text, copied into the store so the source may vanish before the run.
    pub text: String,
}

/// Which batch an enqueue's jobs join.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatchTarget {
    /// None: a job of no batch (stores' own tests; jobs enqueued before schema 9 are such).
    #[default]
    None,
    /// A new batch, made with the first job the enqueue adds: none when every document is a
    /// job already (they stay in their first batch).
    New(NewBatch),
    /// A batch an earlier request of the same enqueue made (an enqueue is sent in parts).
    Add(BatchId),
}

/// What an enqueue did: each document's outcome, and the batch its new jobs joined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enqueued {
    pub outcomes: Vec<EnqueueOutcome>,
    pub batch: Option<BatchId>,
}

/// What enqueuing one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnqueueOutcome {
    Queued(JobId),
    /// The same document with the same task and model is already a job.
    Existing(JobId, StateKind),
}

/// What a person's request (cancel, retry) did to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TransitionOutcome {
    Done,
    /// Already in the wanted state.
    Unchanged(StateKind),
    /// Not possible from the state the job is in.
    Refused(StateKind),
    NotFound,
}

/// What is kept of a quarantined job (tree `quarantine`, schema 4).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// Why its value did not decode.
    pub error: String,
    pub at: Millis,
    /// The stored bytes, as they were.
    pub raw: Vec<u8>,
}
