//! The worker's batch: the jobs with steps to run, and which engine sequence is which step.

use std::collections::HashMap;

use super::jobrun::{JobRun, Work};
use crate::engine::SeqRequest;
use crate::job::JobId;

pub(super) struct Batch {
    /// Jobs with steps to run or in flight, in the order they were claimed (earlier jobs get
    /// free slots first, so documents finish in order rather than all at the end).
    pub runs: Vec<JobRun>,
    /// Engine sequence tag → the job and step it runs.
    pub tags: HashMap<u64, (JobId, u32)>,
    /// Tags are never reused, so a late report of an aborted sequence cannot be mistaken.
    next_tag: u64,
    /// Sequences decoded together now: the configured `parallel`, halved by memory failures.
    pub n_seq: u32,
    /// Context per sequence now: the configured `n_ctx`, shrunk by the fallback ladder.
    pub n_ctx: u32,
    /// False while claiming is paused for critical memory pressure (not the person's pause).
    pub claiming: bool,
    /// When memory was last read, and load last shed (readings need time to show a shed).
    pub last_reading: Option<std::time::Instant>,
    pub last_shed: Option<std::time::Instant>,
    /// The assertion against idle sleep, held while jobs run.
    pub awake: crate::service::power::KeepAwake,
    /// On battery (`--ac-only` pauses claiming then), and when that was last read.
    pub on_battery: Option<bool>,
    pub power_read: Option<std::time::Instant>,
    /// The adaptive batch size (`--adaptive`): a controller per model (by path; each starts at
    /// its calibrated knee and keeps what it learned across batches), its last reading (time,
    /// tokens generated), an allocation failure since, and a larger B waiting for the
    /// sequences in flight to end.
    pub controllers: HashMap<String, super::batch_size::Controller>,
    pub adapt_read: Option<(std::time::Instant, u64)>,
    /// The batch was resized: its first interval is a warm-up, not a reading.
    pub adapt_warmup: bool,
    pub alloc_failed: bool,
    pub grow_to: Option<u32>,
    /// Jobs this worker deferred for lack of memory (see [`super::waits`]).
    pub waits: MemoryWaiters,
    /// The batch runs a suspect of a crash alone (B = 1): nothing else is claimed until it
    /// ends.
    pub alone: bool,
    /// What each `--model auto` quality picks now (model path), and when that was worked
    /// out: such jobs join a running batch when they pick its model.
    pub auto_picks: Option<(std::time::Instant, HashMap<crate::job::Quality, String>)>,
}

impl Batch {
    pub fn new(n_seq: u32, n_ctx: u32) -> Self {
        Batch {
            runs: Vec::new(),
            tags: HashMap::new(),
            next_tag: 0,
            n_seq,
            n_ctx,
            claiming: true,
            last_reading: None,
            last_shed: None,
            awake: Default::default(),
            on_battery: None,
            power_read: None,
            controllers: HashMap::new(),
            adapt_read: None,
            adapt_warmup: false,
            alloc_failed: false,
            grow_to: None,
            auto_picks: None,
            waits: Default::default(),
            alone: false,
        }
    }

    /// The engine request for job `id`'s step `work`, under a fresh tag.
    pub fn request(&mut self, id: JobId, work: Work) -> SeqRequest {
        self.next_tag += 1;
        self.tags.insert(self.next_tag, (id, work.step));
        SeqRequest {
            tag: self.next_tag,
            prompt: work.prompt,
            sampling: work.sampling,
            grammar: work.grammar,
        }
    }

    /// Tags of job `id`'s sequences in flight.
    pub fn tags_of(&self, id: JobId) -> Vec<u64> {
        self.tags
            .iter()
            .filter(|(_, (j, _))| *j == id)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// The jobs this worker deferred for lack of memory, and what `--drain` tried for them.
#[derive(Debug, Default)]
pub(super) struct MemoryWaiters {
    /// Each job with the bytes it needed (`u64::MAX`: unknown, retried on time only): woken
    /// early when a batch ends or memory frees.
    pub jobs: Vec<(JobId, u64)>,
    /// Whether the batch had jobs at the last look (its end may let a waiter fit).
    pub was_running: bool,
    /// `--drain`: the count of finished jobs when everything loaded was last unloaded for the
    /// waiters to try once more. Another such try only after more jobs finish, so the drain ends.
    pub last_try: Option<u64>,
}
