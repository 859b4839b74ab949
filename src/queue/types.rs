//! The values that cross the queue's interface, whatever backend holds them.

use crate::job::{JobId, JobSpec, Millis, StateKind};

/// Jobs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn get(&self, kind: StateKind) -> u64 {
        match kind {
            StateKind::Queued => self.queued,
            StateKind::Running => self.running,
            StateKind::Succeeded => self.succeeded,
            StateKind::Failed => self.failed,
            StateKind::Dead => self.dead,
            StateKind::Cancelled => self.cancelled,
        }
    }

    pub(crate) fn slot(&mut self, kind: StateKind) -> &mut u64 {
        match kind {
            StateKind::Queued => &mut self.queued,
            StateKind::Running => &mut self.running,
            StateKind::Succeeded => &mut self.succeeded,
            StateKind::Failed => &mut self.failed,
            StateKind::Dead => &mut self.dead,
            StateKind::Cancelled => &mut self.cancelled,
        }
    }

    pub fn total(&self) -> u64 {
        StateKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

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
}

/// A document to enqueue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewJob {
    pub spec: JobSpec,
    /// The text, copied into the store so the source may vanish before the run.
    pub text: String,
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
