//! Batches (schema 9): every enqueue that adds at least one job makes one, as OpenAI's Batch
//! API does for an input file. A batch is what a person asked for at once — its name, its
//! metadata, its deadline — and the jobs it added; its status is derived here from the number
//! of its jobs in each state, which the store keeps in the transaction that moves a job. Pure:
//! no store, no clock (times come in as arguments).

use serde::{Deserialize, Serialize};

use crate::job::{BatchId, Counts, Millis};
use crate::upload::FileId;

/// At most this many metadata pairs, as OpenAI limits them.
pub const MAX_METADATA: usize = 16;
/// Longest metadata key and value, in characters (OpenAI's limits).
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;
/// Longest batch name, in characters.
pub const MAX_NAME: usize = 256;

/// What the enqueue that makes a batch says of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBatch {
    /// `--name`: for people (`batches`, `status`).
    pub name: Option<String>,
    /// `--meta key=value`, in the order given (OpenAI's `metadata`).
    pub metadata: Vec<(String, String)>,
    /// `--by 07:00` or `--within 8h`, resolved to a time: jobs not started by then expire.
    pub deadline: Option<Millis>,
    /// Where the requests came from (`--batch night.jsonl`, `3 paths`), for people.
    pub source: String,
    /// Made through the HTTP API: from which file, for which endpoint.
    pub api: Option<ApiOrigin>,
}

impl NewBatch {
    /// Refuse what OpenAI would refuse, and a name or source that would forge lines on a
    /// terminal.
    pub fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.name {
            check_text("the batch name", name, MAX_NAME)?;
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(format!(
                "{} metadata pairs (at most {MAX_METADATA})",
                self.metadata.len()
            ));
        }
        // Any text, as OpenAI takes it (a terminal shows it escaped: `job::printable`).
        for (i, (k, v)) in self.metadata.iter().enumerate() {
            check_length("a metadata key", k, MAX_METADATA_KEY)?;
            if self.metadata[..i].iter().any(|(earlier, _)| earlier == k) {
                return Err(format!("metadata key {k:?} is given twice"));
            }
            check_length(&format!("metadata {k:?}"), v, MAX_METADATA_VALUE)?;
        }
        check_text("the batch's source", &self.source, 4096)
    }
}

fn check_length(what: &str, s: &str, max_chars: usize) -> Result<(), String> {
    let n = s.chars().count();
    if n > max_chars {
        return Err(format!("{what} has {n} characters (at most {max_chars})"));
    }
    Ok(())
}

fn check_text(what: &str, s: &str, max_chars: usize) -> Result<(), String> {
    check_length(what, s, max_chars)?;
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("{what} contains the control character {c:?}"));
    }
    Ok(())
}

/// The longest completion window: 999,999 days (the six digits the API's document allows;
/// any such deadline fits the clock's type).
pub const MAX_WINDOW_MS: Millis = 999_999 * 86_400_000;

/// OpenAI's `completion_window` (`24h`; here any `N` + `s`, `m`, `h` or `d`, N of at most
/// six digits) in milliseconds.
pub fn parse_window(s: &str) -> Result<Millis, String> {
    let bad = || format!("completion_window {s:?}: a duration such as 24h, 90m or 2d");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= MAX_WINDOW_MS => Ok(ms),
        _ => Err(format!("completion_window {s:?}: from 1s to 999999d")),
    }
}

/// `key=value` as given to `--meta`.
pub fn parse_metadata_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("--meta {s:?}: expected key=value")),
    }
}

/// A batch made through the HTTP API: what `POST /v1/batches` named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiOrigin {
    /// The uploaded file the requests came from.
    pub input_file_id: FileId,
    /// OpenAI's `endpoint` (`/v1/chat/completions`).
    pub endpoint: String,
    /// OpenAI's `completion_window` as given (`24h`); the deadline is resolved from it.
    pub completion_window: String,
}

/// A line of an input file that failed validation (OpenAI's `BatchError`): the batch failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: u64,
    pub code: String,
    pub message: String,
}

/// A stored batch (tree `batches`). Its jobs and their counts are kept beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: BatchId,
    pub created: Millis,
    /// What the enqueue asked for.
    pub spec: NewBatch,
    /// When the enqueue that made it ended (every request of it was added): until then it is
    /// `validating`, as OpenAI's batch is while its file is read. A worker that starts seals
    /// what a dead enqueue left open.
    pub sealed: Option<Millis>,
    /// When a person asked to cancel it: `cancelling` while jobs of it still run, then
    /// `cancelled`. A retry of the batch clears it.
    pub cancel_requested: Option<Millis>,
    /// When it last stopped being open (`is_open`): its jobs all ended. Cleared when a retry
    /// opens it again.
    pub ended: Option<Millis>,
    /// Why its input failed validation (then it has no jobs and is `failed`).
    pub errors: Vec<LineError>,
}

impl BatchRecord {
    pub fn new(id: BatchId, spec: &NewBatch, now: Millis) -> BatchRecord {
        BatchRecord {
            id,
            created: now,
            spec: spec.clone(),
            sealed: None,
            cancel_requested: None,
            ended: None,
            errors: Vec::new(),
        }
    }
}

/// A batch's status, OpenAI's names for it (the ones this build reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Its input failed validation: nothing of it was enqueued.
    Failed,
    /// Its enqueue is still adding requests (jobs already added may run).
    Validating,
    /// Some of its jobs are queued, running, or failed and waiting to be retried.
    InProgress,
    /// A person cancelled it; jobs of it still run, or wait to be stopped.
    Cancelling,
    /// Cancelled, and none of its jobs is active any more (finished ones keep their results).
    Cancelled,
    /// Its deadline passed before some of its jobs started: they expired, the rest finished
    /// (their results are kept).
    Expired,
    /// Every job is finished: succeeded, dead (its error is in the error file) or cancelled
    /// one by one.
    Completed,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Failed => "failed",
            BatchStatus::Validating => "validating",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
            BatchStatus::Expired => "expired",
            BatchStatus::Completed => "completed",
        }
    }

    /// Nothing more will happen to the batch unless a person asks (retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Cancelled
                | BatchStatus::Expired
                | BatchStatus::Completed
        )
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a batch whose jobs stand at `counts`.
pub fn status(record: &BatchRecord, counts: &Counts) -> BatchStatus {
    let active = counts.active();
    if !record.errors.is_empty() {
        return BatchStatus::Failed;
    }
    if record.cancel_requested.is_some() {
        return if active > 0 {
            BatchStatus::Cancelling
        } else {
            BatchStatus::Cancelled
        };
    }
    if record.sealed.is_none() {
        return BatchStatus::Validating;
    }
    if active > 0 {
        BatchStatus::InProgress
    } else if counts.expired > 0 {
        BatchStatus::Expired
    } else {
        BatchStatus::Completed
    }
}

/// Whether a batch stays among the open ones (`status` lists them): its enqueue has not ended,
/// or some of its jobs are active.
pub fn is_open(record: &BatchRecord, counts: &Counts) -> bool {
    record.sealed.is_none() || counts.active() > 0
}

/// OpenAI's `request_counts`: every request, those that succeeded, those that failed for good
/// (dead) or expired. Cancelled requests are neither, as with OpenAI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

impl RequestCounts {
    pub fn of(counts: &Counts) -> RequestCounts {
        RequestCounts {
            total: counts.total(),
            completed: counts.succeeded,
            failed: counts.dead + counts.expired,
        }
    }
}

/// Tokens of a batch's jobs, kept with its counts (moved in the same transactions): what its
/// unfinished jobs may still generate, and what its finished ones generated of what they were
/// allowed — from which [`BatchTokens::expected_left`] estimates the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTokens {
    /// `max_tokens` summed over the active jobs (queued, running, failed).
    pub active_max: u64,
    /// `max_tokens` summed over the succeeded jobs…
    pub done_max: u64,
    /// …and the tokens they generated (all their chunks and reduce rounds).
    pub done_completion: u64,
}

impl BatchTokens {
    /// The tokens its active jobs are expected to generate: their `max_tokens`, scaled by how
    /// much of theirs the batch's finished jobs used (all of it until one has finished).
    pub fn expected_left(&self) -> u64 {
        if self.done_max == 0 {
            return self.active_max;
        }
        let ratio = self.done_completion as f64 / self.done_max as f64;
        (self.active_max as f64 * ratio).round() as u64
    }

    /// How long the rest takes at `tokens_per_sec` generated tokens a second (a measured
    /// rate, prompts' time included in it), in milliseconds.
    pub fn eta_ms(&self, tokens_per_sec: f64) -> Option<Millis> {
        if !(tokens_per_sec.is_finite() && tokens_per_sec > 0.0) {
            return None;
        }
        Some((self.expected_left() as f64 / tokens_per_sec * 1000.0).round() as Millis)
    }
}

/// What the store keeps beside a batch's record (tree `batch_counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTally {
    pub counts: Counts,
    pub tokens: BatchTokens,
}

/// A batch as the store answers for it: the record and its jobs per state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    pub record: BatchRecord,
    pub counts: Counts,
    #[serde(default)]
    pub tokens: BatchTokens,
}

impl BatchView {
    pub fn status(&self) -> BatchStatus {
        status(&self.record, &self.counts)
    }

    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts::of(&self.counts)
    }

    /// Past its deadline with jobs not finished.
    pub fn late(&self, now: Millis) -> bool {
        self.record.spec.deadline.is_some_and(|d| now > d) && self.counts.active() > 0
    }

    /// Will it miss its deadline: its rest, at this rate, ends after it (`late` once past).
    pub fn will_miss(&self, now: Millis, tokens_per_sec: f64) -> bool {
        match (
            self.record.spec.deadline,
            self.tokens.eta_ms(tokens_per_sec),
        ) {
            (Some(d), Some(eta)) => self.counts.active() > 0 && now.saturating_add(eta) > d,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StateKind;

    fn record() -> BatchRecord {
        BatchRecord::new(BatchId(1), &NewBatch::default(), 10)
    }

    fn counts(pairs: &[(StateKind, u64)]) -> Counts {
        let mut c = Counts::default();
        for &(k, n) in pairs {
            *c.slot(k) = n;
        }
        c
    }

    #[test]
    fn batch_ids_print_and_parse_as_openai_names_them() {
        assert_eq!(BatchId(17).to_string(), "batch_17");
        assert_eq!("batch_17".parse::<BatchId>(), Ok(BatchId(17)));
        assert_eq!("17".parse::<BatchId>(), Ok(BatchId(17)));
        assert!("batch_x".parse::<BatchId>().is_err());
        assert!("batch_-1".parse::<BatchId>().is_err());
    }

    #[test]
    fn the_status_follows_the_jobs_and_the_requests() {
        use StateKind::*;
        let mut r = record();
        assert_eq!(status(&r, &counts(&[(Queued, 3)])), BatchStatus::Validating);
        r.sealed = Some(11);
        assert_eq!(status(&r, &counts(&[(Queued, 3)])), BatchStatus::InProgress);
        // A failed job waits for its retry: still in progress.
        let waiting = counts(&[(Succeeded, 2), (Failed, 1)]);
        assert_eq!(status(&r, &waiting), BatchStatus::InProgress);
        let done = counts(&[(Succeeded, 2), (Dead, 1), (Cancelled, 1)]);
        assert_eq!(status(&r, &done), BatchStatus::Completed);
        let expired = counts(&[(Succeeded, 2), (Expired, 3)]);
        assert_eq!(status(&r, &expired), BatchStatus::Expired);
        assert_eq!(RequestCounts::of(&expired).failed, 3);
        assert_eq!(
            RequestCounts::of(&done),
            RequestCounts {
                total: 4,
                completed: 2,
                failed: 1
            }
        );
        r.cancel_requested = Some(12);
        assert_eq!(
            status(&r, &counts(&[(Running, 1), (Cancelled, 2)])),
            BatchStatus::Cancelling
        );
        assert_eq!(status(&r, &done), BatchStatus::Cancelled);
        // Cancelled before its enqueue ended: cancelled all the same.
        r.sealed = None;
        assert_eq!(status(&r, &done), BatchStatus::Cancelled);
        // An input that failed validation: failed, whatever else.
        r.errors.push(LineError {
            line: 3,
            code: "invalid_request".into(),
            message: "no messages".into(),
        });
        assert_eq!(status(&r, &Counts::default()), BatchStatus::Failed);
    }

    #[test]
    fn a_batch_is_open_while_its_enqueue_runs_or_a_job_is_active() {
        use StateKind::*;
        let mut r = record();
        assert!(is_open(&r, &Counts::default()));
        r.sealed = Some(11);
        assert!(!is_open(&r, &Counts::default()));
        assert!(is_open(&r, &counts(&[(Running, 1)])));
        assert!(!is_open(&r, &counts(&[(Succeeded, 1), (Dead, 1)])));
    }

    #[test]
    fn late_means_past_the_deadline_with_work_left() {
        let mut r = record();
        r.spec.deadline = Some(100);
        let v = |c: Counts| BatchView {
            record: r.clone(),
            counts: c,
            tokens: BatchTokens::default(),
        };
        assert!(!v(counts(&[(StateKind::Queued, 1)])).late(100));
        assert!(v(counts(&[(StateKind::Queued, 1)])).late(101));
        assert!(!v(counts(&[(StateKind::Succeeded, 1)])).late(101));
    }

    #[test]
    fn completion_windows_are_durations_of_up_to_six_digits() {
        assert_eq!(parse_window("24h"), Ok(86_400_000));
        assert_eq!(parse_window("90m"), Ok(5_400_000));
        assert_eq!(parse_window("2d"), Ok(172_800_000));
        assert_eq!(parse_window("999999d"), Ok(MAX_WINDOW_MS));
        for bad in [
            "",
            "24",
            "h",
            "24 h",
            "0h",
            "1000000d",
            "99999999999999999999d",
            "-1h",
            "1w",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rest_is_estimated_from_what_the_finished_jobs_used() {
        let mut t = BatchTokens {
            active_max: 1_000,
            ..BatchTokens::default()
        };
        assert_eq!(t.expected_left(), 1_000, "nothing finished: all it may use");
        t.done_max = 400;
        t.done_completion = 100;
        assert_eq!(t.expected_left(), 250);
        assert_eq!(t.eta_ms(50.0), Some(5_000));
        assert_eq!(t.eta_ms(0.0), None);
        assert_eq!(t.eta_ms(f64::NAN), None);
        let mut r = record();
        r.spec.deadline = Some(10_000);
        let v = BatchView {
            record: r,
            counts: counts(&[(StateKind::Queued, 4)]),
            tokens: t,
        };
        assert!(!v.will_miss(5_000, 50.0), "ends at 10,000: on time");
        assert!(v.will_miss(5_001, 50.0));
        assert!(!v.will_miss(5_001, 0.0), "no rate: no guess");
    }

    #[test]
    fn metadata_is_held_to_openais_limits() {
        let ok = NewBatch {
            metadata: (0..16).map(|i| (format!("k{i}"), "v".into())).collect(),
            ..NewBatch::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let mut over = ok.clone();
        over.metadata.push(("k16".into(), "v".into()));
        assert!(over.check().unwrap_err().contains("at most 16"));
        let twice = NewBatch {
            metadata: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..NewBatch::default()
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        let long = NewBatch {
            metadata: vec![("k".repeat(65), "v".into())],
            ..NewBatch::default()
        };
        assert!(long.check().unwrap_err().contains("at most 64"));
        let anything = NewBatch {
            metadata: vec![(String::new(), "\u{96}x\n".into())],
            ..NewBatch::default()
        };
        assert_eq!(anything.check(), Ok(()), "any text, as OpenAI takes it");
        let forged = NewBatch {
            name: Some("night\n\u{1b}[2J".into()),
            ..NewBatch::default()
        };
        assert!(forged.check().unwrap_err().contains("control character"));
        assert_eq!(
            parse_metadata_pair("team=ops=1"),
            Ok(("team".into(), "ops=1".into()))
        );
        assert!(parse_metadata_pair("=x").is_err());
        assert!(parse_metadata_pair("novalue").is_err());
    }
}
