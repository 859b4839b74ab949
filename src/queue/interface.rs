//! The queue's interface: every operation the handler, the scheduler and the CLI use, with
//! no backend type in it. sled implements it today (`queue::sled`); a second store (PostgreSQL)
//! implements the same traits, and nothing above the queue changes. One driver interface,
//! several databases behind it, as River's `riverdriver` does it.
//!
//! The operations are grouped by concern, each group a trait a backend implements in a file of
//! its own; [`Queue`] is all of them at once and is what callers hold (`Arc<dyn Queue>`).

use std::collections::BTreeMap;

use super::{
    BatchTarget, Counts, EnqueueOutcome, Enqueued, JobFilter, NewJob, Quarantined, Result,
    TransitionOutcome,
};
use crate::batch::{BatchView, LineError, NewBatch};
use crate::crash::{CrashRecord, Verdict};
use crate::job::{BatchId, ChunkOutput, Event, Job, JobId, JobResult, JobState, Millis, StateKind};
use crate::monitor::history::Sample;
use crate::registry::{Calibration, MemoryRecord, RegisteredModel};
use crate::upload::{FileId, FileInfo};

/// A store: every group of operations, plus what concerns the store as a whole.
pub trait Queue:
    JobReads
    + JobWrites
    + Batches
    + Uploads
    + Crashes
    + MemoryHistory
    + ModelRecords
    + Quarantine
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Where the store lives, for messages (a directory; a database URL without password).
    fn location(&self) -> String;

    /// Make everything written so far durable (the writes that say so already are).
    fn flush(&self) -> Result<()>;

    /// Bytes the store takes on disk, its documents' files included (a maintained figure:
    /// nothing is walked).
    fn size_on_disk(&self) -> Result<u64>;
}

/// Queries. None scans every job unless asked to list every job.
pub trait JobReads {
    /// Job `id`; one whose stored value is damaged comes back as its quarantined dead
    /// stand-in (see [`Quarantine`]).
    fn job(&self, id: JobId) -> Result<Option<Job>>;

    /// Jobs whose custom id is exactly `custom_id`, oldest first.
    fn find_custom_id(&self, custom_id: &str) -> Result<Vec<JobId>>;

    fn ids_in_state(&self, kind: StateKind) -> Result<Vec<JobId>>;

    fn counts(&self) -> Result<Counts>;

    /// Jobs matching the filter, in id (enqueue) order.
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// The document as enqueued. A document damaged or gone is
    /// [`StoreError::DamagedDocument`](super::StoreError::DamagedDocument), one that could not
    /// be read this time [`StoreError::UnreadableDocument`](super::StoreError::UnreadableDocument):
    /// the job's errors, never a reason to stop.
    fn document(&self, id: JobId) -> Result<String>;

    /// Finished chunks of a job that has not succeeded yet, by chunk number.
    fn checkpoints(&self, id: JobId) -> Result<BTreeMap<u32, ChunkOutput>>;

    /// Job `id`'s result. A damaged one is reported in the log and read as none: one value
    /// must not stop `results` for every job.
    fn result(&self, id: JobId) -> Result<Option<JobResult>>;

    /// Job `id`'s events; a damaged one is skipped (and logged).
    fn events(&self, id: JobId) -> Result<Vec<Event>>;

    fn paused(&self) -> Result<bool>;

    /// How many ready jobs a queued, ready job has ahead of it in the claim order (priority,
    /// deadline, age); `None` for any other job. Reads the keys before it: for `show`, not for
    /// listings.
    fn ahead_of(&self, id: JobId) -> Result<Option<u64>>;

    /// When the earliest delayed job (backoff or not-before) comes due, or a job not started
    /// reaches its deadline.
    fn next_due(&self) -> Result<Option<Millis>>;

    /// Jobs due before `until` whose last event says they wait for memory (deferred by the
    /// admission gate, of this worker or one before it).
    fn memory_deferred(&self, until: Millis) -> Result<Vec<JobId>>;

    /// Jobs waiting for a time: retries after backoff, and not-before times.
    fn delayed_count(&self) -> Result<usize>;
}
/// State changes. Each is atomic over everything it touches (the job, its indexes, its
/// event) and durable before it returns, unless its line says otherwise.
pub trait JobWrites {
    /// Enqueue documents, atomically, into the batch `target` names (a new one is made with
    /// the first job added, in the same transaction). The same work already queued comes
    /// back as [`EnqueueOutcome::Existing`] unless `force`, and stays in its first batch.
    fn enqueue_in(
        &self,
        items: &[NewJob],
        force: bool,
        now: Millis,
        target: &BatchTarget,
    ) -> Result<Enqueued>;

    /// [`JobWrites::enqueue_in`] no batch.
    fn enqueue(&self, items: &[NewJob], force: bool, now: Millis) -> Result<Vec<EnqueueOutcome>> {
        Ok(self
            .enqueue_in(items, force, now, &BatchTarget::None)?
            .outcomes)
    }

    /// Move jobs whose time has come from the delayed index to the ready one: Queued jobs
    /// past their not-before time, Failed jobs past their backoff. Returns how many moved.
    fn promote_due(&self, now: Millis) -> Result<usize>;

    /// Jobs whose batch's deadline passed before they started (queued, or failed and waiting
    /// for a retry) become Expired; finished work is kept. Returns how many expired.
    fn expire_due(&self, now: Millis) -> Result<usize>;

    /// Claim the next ready job (highest priority, then the earliest deadline, then oldest);
    /// what expired by now first expires.
    fn claim(&self, now: Millis, lease_ms: u64) -> Result<Option<Job>>;

    /// Claim the first of the next `scan` ready jobs that `wanted` accepts (the worker fills
    /// a batch with jobs for the model it holds, and leaves suspects of a crash out). Jobs
    /// passed over stay ready.
    fn claim_matching(
        &self,
        now: Millis,
        lease_ms: u64,
        scan: usize,
        wanted: &dyn Fn(&Job) -> bool,
    ) -> Result<Option<Job>>;

    /// Claim job `id` if it is ready now (a suspect the worker runs alone).
    fn claim_job(&self, id: JobId, now: Millis, lease_ms: u64) -> Result<Option<Job>>;

    /// Record the number of chunks the document was split into.
    fn set_plan(&self, id: JobId, total: u32, now: Millis, lease_ms: u64) -> Result<()>;

    /// Extend a running job's lease. Not flushed: a lost heartbeat costs nothing.
    fn heartbeat(&self, id: JobId, now: Millis, lease_ms: u64) -> Result<()>;

    /// Store a finished chunk (the checkpoint) and the job's progress, atomically.
    fn save_checkpoint(
        &self,
        id: JobId,
        chunk: u32,
        output: &ChunkOutput,
        now: Millis,
        lease_ms: u64,
    ) -> Result<()>;

    /// Drop a running job's checkpoints (their plan no longer applies), with an event.
    fn discard_checkpoints(&self, id: JobId, now: Millis, reason: &str) -> Result<()>;

    /// The job succeeded: store its result, drop its checkpoints.
    fn complete(&self, id: JobId, result: &JobResult, now: Millis) -> Result<()>;

    /// The running attempt failed: Failed with a backoff, or Dead after the last attempt (or
    /// at once when `permanent`: no retry can help). `jitter` in [0, 1) spreads retries.
    /// Checkpoints stay, so a retry resumes.
    fn fail(
        &self,
        id: JobId,
        error: &str,
        permanent: bool,
        now: Millis,
        jitter: f64,
    ) -> Result<JobState>;

    /// Put a running job back in the queue without counting the attempt (shutdown, or a
    /// worker that died). It resumes after its last checkpoint.
    fn release(&self, id: JobId, now: Millis, reason: &str) -> Result<()>;

    /// A running job that cannot run now (no memory for it yet) goes back to the queue, to be
    /// claimed again from `until` on. No attempt is counted: waiting is not failing.
    fn defer(&self, id: JobId, now: Millis, until: Millis, reason: &str) -> Result<()>;

    /// A job deferred for memory may be tried now (memory freed, a batch ended): its wait
    /// ends at `now`. Nothing happens to a job that is no longer waiting. Whether it was.
    fn wake(&self, id: JobId, now: Millis, reason: &str) -> Result<bool>;

    /// At worker start: every job left Running by a dead worker goes back to the queue, and
    /// what a dead writer left half done (document files no job names) goes.
    fn recover(&self, now: Millis) -> Result<Vec<JobId>>;

    /// The worker cancels a job it runs (a person asked it to).
    fn cancel(&self, id: JobId, now: Millis) -> Result<TransitionOutcome>;

    /// A person's cancel: Queued and Failed jobs, and Running ones when no worker runs (left
    /// over from one that died). While a worker runs, it owns its Running jobs: `Refused`
    /// (Running), and the cancel goes through the worker.
    fn person_cancel(&self, id: JobId, now: Millis, worker_runs: bool)
        -> Result<TransitionOutcome>;

    /// A person's retry: Failed, Dead, Cancelled or Succeeded jobs are queued again with their
    /// attempts reset; a Running one only when no worker runs (it is left over).
    fn retry(&self, id: JobId, now: Millis, worker_runs: bool) -> Result<TransitionOutcome>;

    /// Stop (true) or resume (false) claiming; kept across restarts.
    fn set_paused(&self, paused: bool) -> Result<()>;

    /// Delete finished jobs (succeeded, dead, cancelled) last changed before `before`, with
    /// their documents, results and events. Returns how many went.
    fn prune(&self, before: Millis) -> Result<usize>;
}
/// Batches (schema 9): what one enqueue asked for at once, with its jobs per state (kept by
/// the transactions that move the jobs, so nothing here counts jobs).
pub trait Batches {
    fn batch(&self, id: BatchId) -> Result<Option<BatchView>>;

    /// Up to `limit` batches, newest first, from the one before `before` on (a page).
    fn batches(&self, before: Option<BatchId>, limit: usize) -> Result<Vec<BatchView>>;

    /// The newest `limit` open batches (`batch::is_open`), and how many are open in all.
    fn open_batches(&self, limit: usize) -> Result<(Vec<BatchView>, u64)>;

    /// The batch's jobs in enqueue order, after `after`, at most `limit` (`None`: all). A
    /// pruned job is not among them (its batch still counts it).
    fn batch_jobs(
        &self,
        id: BatchId,
        after: Option<JobId>,
        limit: Option<usize>,
    ) -> Result<Vec<JobId>>;

    /// The enqueue that made the batch has ended. Whether it was still open to requests.
    fn seal_batch(&self, id: BatchId, now: Millis) -> Result<bool>;

    /// A person cancels the batch (`Some(now)`: its status becomes cancelling, then
    /// cancelled, as the caller cancels its jobs) or retries it (`None`). Whether it exists.
    fn set_batch_cancel(&self, id: BatchId, requested: Option<Millis>, now: Millis)
        -> Result<bool>;

    /// An empty batch, open and validating: the HTTP API makes one before it reads the input
    /// file (its requests join with `BatchTarget::Add`, then it is sealed).
    fn create_batch(&self, spec: &NewBatch, now: Millis) -> Result<BatchView>;

    /// The batch's input failed validation: it holds no jobs, and is failed with `errors`.
    fn fail_batch(&self, id: BatchId, errors: &[LineError], now: Millis) -> Result<()>;
}

/// Files uploaded through the HTTP API (schema 9): batch input files, kept until deleted.
pub trait Uploads {
    /// Keep `text` (checked by `upload::check`: `lines` are its requests), durable before
    /// its record is.
    fn add_upload(
        &self,
        filename: &str,
        purpose: &str,
        text: &str,
        lines: u64,
        now: Millis,
    ) -> Result<FileInfo>;

    fn upload(&self, id: FileId) -> Result<Option<FileInfo>>;

    /// Up to `limit` uploads, newest first, from the one before `after` on (a page).
    fn uploads(&self, after: Option<FileId>, limit: usize) -> Result<Vec<FileInfo>>;

    /// The text as uploaded, checked against what was written.
    fn upload_text(&self, id: FileId) -> Result<Option<String>>;

    /// Forget an upload and its text. Whether it was there.
    fn remove_upload(&self, id: FileId) -> Result<bool>;
}

/// Crash records: the jobs in flight when the worker killed itself (see `crash.rs`).
pub trait Crashes {
    /// A job's crash record, if it has one.
    fn crash_record(&self, id: JobId) -> Result<Option<CrashRecord>>;

    /// Suspects (jobs to run alone), oldest id first.
    fn suspects(&self) -> Result<Vec<JobId>>;

    /// The process running inference died by `signal`, a death it inflicted on itself: judge
    /// the jobs it had in flight (those left Running; `chats`: interactive chats decoded beside
    /// them), record the verdicts, and put the jobs back in the queue (a job charged
    /// `max_crashes` times is dead). Returns the verdicts.
    fn record_crash(
        &self,
        chats: bool,
        signal: &str,
        now: Millis,
        max_crashes: u32,
    ) -> Result<Vec<(JobId, Verdict)>>;
}
/// The memory history: samples, folded into minutes as they age.
pub trait MemoryHistory {
    fn record_sample(&self, sample: &Sample) -> Result<()>;

    /// Samples from `since` on, in time order: minute averages where only they remain, then
    /// full resolution.
    fn samples_since(&self, since: Millis) -> Result<Vec<Sample>>;

    /// Retention: samples older than `full_ms` become one-minute averages; averages older
    /// than `keep_ms` go. Returns (samples folded, minutes dropped).
    fn compact_history(&self, now: Millis, full_ms: u64, keep_ms: u64) -> Result<(usize, usize)>;
}
/// The model registry and what was measured of each model.
pub trait ModelRecords {
    /// Register (or replace) a model under its name.
    fn add_model(&self, model: &RegisteredModel) -> Result<()>;

    /// Registered models, by name.
    fn models(&self) -> Result<Vec<RegisteredModel>>;

    fn model(&self, name: &str) -> Result<Option<RegisteredModel>>;

    /// Forget a model (its file stays). Whether it was registered.
    fn remove_model(&self, name: &str) -> Result<bool>;

    /// Record what a real load of the model at `path` took for one shape (the latest wins).
    fn record_memory(&self, path: &str, record: &MemoryRecord) -> Result<()>;

    /// Every measured shape of the model at `path`.
    fn memory_of(&self, path: &str) -> Result<Vec<MemoryRecord>>;

    /// Keep a throughput-by-B curve of the model at `path` (replacing one of the same context
    /// size).
    fn record_calibration(&self, path: &str, c: &Calibration) -> Result<()>;

    /// Every curve measured for the model at `path`, by context size.
    fn calibrations_of(&self, path: &str) -> Result<Vec<Calibration>>;

    /// The curve measured for the model at `path` with `n_ctx` per sequence, if any.
    fn calibration(&self, path: &str, n_ctx: u32) -> Result<Option<Calibration>>;
}
/// Stored jobs whose values no longer decode, kept apart with a dead stand-in in their place.
pub trait Quarantine {
    /// Jobs quarantined so far.
    fn quarantined_count(&self) -> usize;

    /// What was kept of quarantined job `id`.
    fn quarantined(&self, id: JobId) -> Result<Option<Quarantined>>;
}
