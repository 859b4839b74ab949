//! The requests and responses the CLI and the worker exchange over the Unix socket, one JSON
//! object per line. The same enums drive the CLI's direct mode (no worker), so every verb
//! means the same either way.

use serde::{Deserialize, Serialize};

use crate::batch::{BatchView, LineError, NewBatch};
use crate::job::{BatchId, Event, Job, JobId, JobResult, Millis};
use crate::queue::{BatchTarget, Counts, Enqueued, JobFilter, NewJob, TransitionOutcome};
use crate::registry::{Calibration, MemoryRecord, RegisteredModel};
use crate::scheduler::LiveStatus;
use crate::upload::{FileId, FileInfo};

/// Bumped on any change to [`Request`] or [`Response`] (4: results carry provenance and cached
/// tokens; 5: batches). A mismatch is refused with a message
/// telling which side to restart or upgrade.
pub const PROTOCOL_VERSION: u32 = 5;

/// The longest request line the worker reads. A longer one is answered with an error and the
/// connection closed, so a client cannot make the worker buffer without bound. Enqueue
/// batches stay far below it (a few MiB each); one document may come near it only at the
/// largest `max_file_bytes`.
pub const MAX_REQUEST_BYTES: usize = 256 << 20;

/// One request line: the version, then the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

/// How a person names a job: its number or its custom id; or every job of a batch
/// (`--batch ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Id(JobId),
    CustomId(String),
    Batch(BatchId),
}

impl Selector {
    /// A number is a job id (`17`, `#17`); anything else a custom id.
    pub fn parse(s: &str) -> Selector {
        match s.parse::<JobId>() {
            Ok(id) => Selector::Id(id),
            Err(_) => Selector::CustomId(s.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Enqueue {
        items: Vec<NewJob>,
        force: bool,
        /// The batch the new jobs join (the first request of an enqueue makes it).
        batch: BatchTarget,
    },
    /// The enqueue that made this batch has sent all its requests.
    SealBatch(BatchId),
    /// Batches, newest first: a page of `limit` before `before`.
    Batches {
        before: Option<BatchId>,
        limit: usize,
    },
    /// One batch.
    Batch(BatchId),
    /// A batch the HTTP API fills from an uploaded file (then `Enqueue` into it, then
    /// `SealBatch`).
    CreateBatch(NewBatch),
    /// The batch's input failed validation.
    FailBatch {
        id: BatchId,
        errors: Vec<LineError>,
    },
    /// Keep an uploaded file (checked by `upload::check`).
    UploadAdd {
        filename: String,
        purpose: String,
        text: String,
        lines: u64,
    },
    UploadGet(FileId),
    /// Uploads, newest first: a page of `limit` after `after`.
    Uploads {
        after: Option<FileId>,
        limit: usize,
    },
    UploadText(FileId),
    UploadRemove(FileId),
    Status,
    List(JobFilter),
    /// Jobs with events and results.
    Show(Vec<Selector>),
    /// Jobs with their results; an empty selector list means every job.
    Results(Vec<Selector>),
    Cancel(Vec<Selector>),
    Retry {
        selectors: Vec<Selector>,
        all_failed: bool,
    },
    Pause,
    Resume,
    Prune {
        before: Millis,
    },
    /// Register (or replace) a model.
    ModelAdd(RegisteredModel),
    ModelList,
    /// Forget a registered model by name.
    ModelRemove(String),
    /// A registered model by name.
    ModelGet(String),
    /// Measured memory of real loads of the model at this path.
    ModelMemory(String),
    /// Keep a measured throughput-by-B curve of the model at `path`, and the loads measured
    /// on the way (`qwen3q calibrate`).
    RecordCalibration {
        path: String,
        calibration: Calibration,
        memory: Vec<MemoryRecord>,
    },
    /// Every calibration curve of the model at this path.
    Calibrations(String),
    /// The memory history from this time on.
    MemoryHistory {
        since: Millis,
    },
}

/// A job and what it produced, for `results` and `show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub job: Job,
    pub result: Option<JobResult>,
    /// Filled by `show` only.
    pub events: Vec<Event>,
    /// Crashes of the worker this job was in flight at (`show` only).
    #[serde(default)]
    pub crash: Option<crate::crash::CrashRecord>,
    /// Ready jobs ahead of it, for a queued job that is ready (`show` only).
    #[serde(default)]
    pub ahead: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub counts: Counts,
    /// `None` when no worker is running.
    pub worker: Option<LiveStatus>,
    pub paused: bool,
    pub store_path: String,
    pub store_bytes: u64,
    /// When the earliest delayed job (retry, not-before) comes due.
    pub next_due: Option<Millis>,
    /// Jobs whose stored value was damaged, kept apart (they count as dead).
    #[serde(default)]
    pub quarantined: usize,
    /// The newest open batches (at most [`STATUS_BATCHES`]), and how many are open in all.
    #[serde(default)]
    pub open_batches: Vec<BatchView>,
    #[serde(default)]
    pub open_batch_count: u64,
    /// Generated tokens a second while the worker generated, over the last
    /// [`RATE_WINDOW_MS`] of the memory history: what a batch's rest is estimated at.
    #[serde(default)]
    pub tokens_per_sec: Option<f64>,
}

/// The window of history the rate in `status` is measured over.
pub const RATE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// How many open batches `status` shows.
pub const STATUS_BATCHES: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Enqueued(Enqueued),
    Batches(Vec<BatchView>),
    Files(Vec<FileInfo>),
    Text(String),
    Status(Box<StatusReport>),
    Jobs(Vec<Job>),
    Views {
        views: Vec<JobView>,
        /// Selectors that matched no job.
        missing: Vec<String>,
    },
    Transitions {
        outcomes: Vec<(JobId, TransitionOutcome)>,
        missing: Vec<String>,
    },
    Done,
    Pruned(usize),
    Models(Vec<RegisteredModel>),
    Model(Option<RegisteredModel>),
    Removed(bool),
    Memory(Vec<MemoryRecord>),
    Calibrations(Vec<Calibration>),
    History(Vec<crate::monitor::history::Sample>),
    /// What the request names (a batch, a job, a file) does not exist.
    NotFound(String),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_numbers_as_ids() {
        assert_eq!(Selector::parse("17"), Selector::Id(JobId(17)));
        assert_eq!(Selector::parse("#3"), Selector::Id(JobId(3)));
        assert_eq!(
            Selector::parse("notes.txt"),
            Selector::CustomId("notes.txt".into())
        );
    }

    #[test]
    fn envelopes_are_one_json_line() {
        let e = Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Cancel(vec![Selector::CustomId("a\nb".into())]),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let back: Envelope = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.request, Request::Cancel(_)));
    }
}
