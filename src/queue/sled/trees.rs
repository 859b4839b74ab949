//! Tree names in one place, and the layout of each (schema version 9; see `migrations/`).

/// Store-wide settings and counters: `schema_version`, `next_job_id`, `event_seq`, `paused`,
/// `document_file_bytes`, `jobs_in<state>`.
pub const META: &str = "meta";
/// job id → `Job` (spec, state, attempts).
pub const JOBS: &str = "jobs";
/// (priority descending, deadline ascending (none last; schema 9), job id) → (). Jobs that
/// may be claimed now.
pub const READY: &str = "ready";
/// (due time, job id) → (). Queued jobs with a not-before time, and Failed jobs awaiting retry.
pub const DELAYED: &str = "delayed";
/// (state byte, job id) → (). Listing by state and crash recovery scan one prefix.
pub const BY_STATE: &str = "by_state";
/// `identity::dedupe_key` (document, task, system, model, parameters; a batch request's id) →
/// job id. Enqueuing the same work returns the job.
pub const DEDUPE: &str = "dedupe";
/// (custom_id bytes, 0x00, job id) → (). Lookup by the user's own name.
pub const CUSTOM_IDS: &str = "custom_ids";
/// (job id, part) → text, at most 64 KiB a part. The document as enqueued, when it fits in one
/// part (schema 6; larger ones: [`DOCUMENT_FILES`]) or was stored by schema 5 or earlier.
pub const DOCUMENTS: &str = "documents";
/// (job id, chunk) → `ChunkOutput`. A finished chunk; removed once the job succeeds.
pub const CHECKPOINTS: &str = "checkpoints";
/// job id → `JobResult`.
pub const RESULTS: &str = "results";
/// (job id, sequence) → `Event`. Append-only log of every state change, with time and reason.
pub const EVENTS: &str = "events";

/// model name → `RegisteredModel` (schema 2). The model registry.
pub const MODELS: &str = "models";
/// (model path, 0x00, n_ctx u32, n_seq u32) → `MemoryRecord` (schema 2). What a real load took.
pub const MODEL_MEMORY: &str = "model_memory";

/// sample time ms `u64` → `Sample` (schema 2). Memory history at full resolution (24 h).
pub const MEMORY_SAMPLES: &str = "memory_samples";
/// minute start ms `u64` → `Sample` (schema 2). One-minute averages of older samples (30 days).
pub const MEMORY_MINUTES: &str = "memory_minutes";

/// (model path, 0x00, n_ctx u32) → `Calibration` (schema 3). Throughput by B, measured by
/// `qwen3q calibrate`.
pub const CALIBRATIONS: &str = "calibrations";

/// job id → `CrashRecord` (schema 4). Jobs in flight when the worker crashed: suspects to run
/// alone, and the crashes charged to them.
pub const CRASHES: &str = "crashes";

/// job id → `Quarantined` (schema 4): the bytes of a job whose value no longer decodes, with
/// the error; a dead stand-in takes its place in `jobs`.
pub const QUARANTINE: &str = "quarantine";

/// job id → `DocFile` (schema 6): where the text of a document larger than one part lives,
/// in a file of `documents/` (see `files.rs`). Such a job has no entry in [`DOCUMENTS`].
pub const DOCUMENT_FILES: &str = "document_files";

/// batch id → `BatchRecord` (schema 9): what an enqueue asked for at once.
pub const BATCHES: &str = "batches";
/// (batch id, job id) → () (schema 9): a batch's jobs, in enqueue order.
pub const BATCH_JOBS: &str = "batch_jobs";
/// batch id → `Counts` (schema 9): the batch's jobs per state, moved in the transaction that
/// moves a job (`Tx::index`), so a batch's status reads one value however many jobs it has.
/// Pruning a job leaves it counted: the batch remembers what happened.
pub const BATCH_COUNTS: &str = "batch_counts";
/// batch id → () (schema 9): batches not finished (`batch::is_open`), which `status` shows.
pub const OPEN_BATCHES: &str = "open_batches";

/// (deadline, job id) → () (schema 9): queued and failed jobs of a batch with a deadline, by
/// it, so that those not started by then expire without a scan.
pub const DEADLINES: &str = "deadlines";

/// file id → `StoredUpload` (schema 9): a file uploaded through the HTTP API; its text lives
/// in `documents/` as a large document's does.
pub const UPLOADS: &str = "uploads";

/// Every tree the store opens, in the order of [`T`]'s indexes.
pub const ALL: [&str; 25] = [
    META,
    JOBS,
    READY,
    DELAYED,
    BY_STATE,
    DEDUPE,
    CUSTOM_IDS,
    DOCUMENTS,
    CHECKPOINTS,
    RESULTS,
    EVENTS,
    MODELS,
    MODEL_MEMORY,
    MEMORY_SAMPLES,
    MEMORY_MINUTES,
    CALIBRATIONS,
    CRASHES,
    QUARANTINE,
    DOCUMENT_FILES,
    BATCHES,
    BATCH_JOBS,
    BATCH_COUNTS,
    OPEN_BATCHES,
    DEADLINES,
    UPLOADS,
];

/// Indexes into [`ALL`] (and into a transaction's tree list).
pub mod t {
    pub const META: usize = 0;
    pub const JOBS: usize = 1;
    pub const READY: usize = 2;
    pub const DELAYED: usize = 3;
    pub const BY_STATE: usize = 4;
    pub const DEDUPE: usize = 5;
    pub const CUSTOM_IDS: usize = 6;
    pub const DOCUMENTS: usize = 7;
    pub const CHECKPOINTS: usize = 8;
    pub const RESULTS: usize = 9;
    pub const EVENTS: usize = 10;
    pub const MODELS: usize = 11;
    pub const MODEL_MEMORY: usize = 12;
    pub const MEMORY_SAMPLES: usize = 13;
    pub const MEMORY_MINUTES: usize = 14;
    pub const CALIBRATIONS: usize = 15;
    pub const CRASHES: usize = 16;
    pub const QUARANTINE: usize = 17;
    pub const DOCUMENT_FILES: usize = 18;
    pub const BATCHES: usize = 19;
    pub const BATCH_JOBS: usize = 20;
    pub const BATCH_COUNTS: usize = 21;
    pub const OPEN_BATCHES: usize = 22;
    pub const DEADLINES: usize = 23;
    pub const UPLOADS: usize = 24;
}

/// Keys in [`META`].
pub mod meta {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const NEXT_JOB_ID: &[u8] = b"next_job_id";
    pub const EVENT_SEQ: &[u8] = b"event_seq";
    pub const PAUSED: &[u8] = b"paused";
    /// Bytes of the document files jobs name (schema 6): `status` reads it, never the files.
    pub const DOCUMENT_FILE_BYTES: &[u8] = b"document_file_bytes";
    /// The next uploaded file's number (schema 9).
    pub const NEXT_FILE_ID: &[u8] = b"next_file_id";
    /// The next batch's number (schema 9).
    pub const NEXT_BATCH_ID: &[u8] = b"next_batch_id";
    /// How many batches `open_batches` holds (schema 9): `status` says how many more than
    /// it lists without counting them.
    pub const OPEN_BATCH_COUNT: &[u8] = b"open_batch_count";

    /// How many jobs are in state `kind` (schema 7): `jobs_in` and the state's byte → `u64`.
    /// Moved in the same transaction as the job's `by_state` entry, so `status` reads six keys
    /// however many jobs the store holds.
    pub fn jobs_in(kind: crate::job::StateKind) -> [u8; 8] {
        let mut k = *b"jobs_in\0";
        k[7] = kind as u8;
        k
    }
}

/// The largest value a document part may hold; a document larger than one part lives in a
/// file (schema 6).
pub const DOCUMENT_PART_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_names() {
        assert_eq!(ALL[t::META], META);
        assert_eq!(ALL[t::JOBS], JOBS);
        assert_eq!(ALL[t::READY], READY);
        assert_eq!(ALL[t::DELAYED], DELAYED);
        assert_eq!(ALL[t::BY_STATE], BY_STATE);
        assert_eq!(ALL[t::DEDUPE], DEDUPE);
        assert_eq!(ALL[t::CUSTOM_IDS], CUSTOM_IDS);
        assert_eq!(ALL[t::DOCUMENTS], DOCUMENTS);
        assert_eq!(ALL[t::DOCUMENT_FILES], DOCUMENT_FILES);
        assert_eq!(ALL[t::CHECKPOINTS], CHECKPOINTS);
        assert_eq!(ALL[t::RESULTS], RESULTS);
        assert_eq!(ALL[t::EVENTS], EVENTS);
        assert_eq!(ALL[t::CALIBRATIONS], CALIBRATIONS);
        assert_eq!(ALL[t::CRASHES], CRASHES);
        assert_eq!(ALL[t::QUARANTINE], QUARANTINE);
        assert_eq!(ALL[t::BATCHES], BATCHES);
        assert_eq!(ALL[t::BATCH_JOBS], BATCH_JOBS);
        assert_eq!(ALL[t::BATCH_COUNTS], BATCH_COUNTS);
        assert_eq!(ALL[t::OPEN_BATCHES], OPEN_BATCHES);
        assert_eq!(ALL[t::DEADLINES], DEADLINES);
        assert_eq!(ALL[t::UPLOADS], UPLOADS);
    }
}
