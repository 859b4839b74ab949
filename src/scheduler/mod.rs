//! The worker loop, as a short list of named steps (see [`Worker::run`]). It runs on its own OS
//! thread (inference blocks; a llama context is not `Sync`) and talks to the socket server only
//! through the store, a [`Signals`] value and the shared [`LiveStatus`].
//!
//! Continuous batching: up to `parallel` sequences decode together in one context. They come
//! from different jobs or from different chunks of one long document; a finished sequence's slot
//! takes the next step at once. One batch shares one model: while steps are in flight, only jobs
//! for the loaded model are claimed. Each job's bookkeeping is a [`jobrun::JobRun`].

mod adaptive;
pub mod admission;
mod batch;
pub mod batch_size;
pub mod chat;
pub mod choose;
mod claim;
pub mod interactive;
pub mod jobrun;
mod ladder;
mod record;
mod signals;
mod waits;

pub use signals::{Refused, Shutdown, Signals};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError, Interrupt};
use crate::job::{JobId, JobState, Millis};
use crate::queue::{Queue, StoreError};
use batch::Batch;
use jobrun::Next;
use record::Stop;

/// Settings of the loop that come from the configuration, not from the jobs.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Context per sequence asked of the engine (capped at the model's training context).
    pub n_ctx: u32,
    /// Sequences decoded together (B). Halved for the rest of the run when a batch does not
    /// fit in memory.
    pub parallel: u32,
    /// Longest a single step (chunk or reduce prompt) may take.
    pub chunk_timeout: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Tokens kept free in the context beside prompt and answer (tokenization of a chunk's
    /// text can differ slightly from the count of its window).
    pub margin: u32,
    /// How many ready jobs to look through for one that uses the batch's model.
    pub claim_scan: usize,
    /// How often memory pressure is read while the batch runs.
    pub pressure_interval: Duration,
    /// After shedding load, how long readings get to show its effect before the next shed.
    pub shed_interval: Duration,
    /// Claim only inside this window (`--window … --until …`), local time.
    pub window: Option<crate::schedule::Window>,
    /// Claim only on AC power (`--ac-only`).
    pub ac_only: bool,
    /// Let a controller set B (up to `parallel`) from throughput and memory readings.
    pub adaptive: bool,
    /// How often the controller takes readings.
    pub adapt_interval: Duration,
    /// Yield while a person touched the machine within this long (`yield_when_active`).
    pub yield_when_active: Option<(Duration, crate::service::presence::YieldTo)>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            n_ctx: 4096,
            parallel: 1,
            chunk_timeout: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            margin: 32,
            claim_scan: 256,
            pressure_interval: Duration::from_secs(1),
            shed_interval: Duration::from_secs(5),
            window: None,
            ac_only: false,
            adaptive: false,
            adapt_interval: Duration::from_secs(5),
            yield_when_active: None,
        }
    }
}

/// What the worker is doing, for `status`. Shared with the socket server.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LiveStatus {
    /// The worker's pid (its supervisor's: what a person stops).
    pub pid: u32,
    /// The process that runs inference (restarted by the supervisor after a crash).
    #[serde(default)]
    pub runner_pid: u32,
    pub started: Millis,
    /// Jobs in the batch, with their progress, in the order they were claimed.
    pub running: Vec<CurrentJob>,
    /// The batch's model.
    pub loaded_model: Option<String>,
    /// Every loaded model, with its bytes and when it was last used.
    pub models: Vec<crate::engine::cache::LoadedModel>,
    /// Sequences the batch decodes together now (B), and how many are in flight.
    pub parallel: u32,
    pub in_flight: u32,
    /// Jobs finished (any outcome) since the worker started.
    pub finished: u64,
    /// What the loop is waiting for, when it is not running a job.
    pub waiting: Option<String>,
    /// The admission gate's last refusal, until a job is admitted.
    pub memory_wait: Option<MemoryWait>,
    /// Load shed under critical pressure, most recent last (at most 20).
    pub sheds: Vec<(Millis, admission::Shed)>,
    /// Tokens generated since the worker started (the sampler derives tokens/s).
    pub generated_tokens: u64,
    /// An assertion against idle sleep is held (jobs are running).
    pub keep_awake: bool,
    /// On battery power (known only where the platform says).
    pub on_battery: Option<bool>,
    /// Interactive chats decoding now.
    #[serde(default)]
    pub chats: Vec<chat::ChatInFlight>,
    /// Chats answered since the worker started.
    #[serde(default)]
    pub chats_served: u64,
    /// Batch sequences that gave their slot to a chat (started again later) since the start.
    #[serde(default)]
    pub preempted: u64,
    /// Decode steps a chat that came stopped (decoded again after the chat's prompt).
    #[serde(default)]
    pub steps_stopped: u64,
    /// The batch's model and its context's shape, for the next start's warm load
    /// (`daemon::warm`); not part of `status`.
    #[serde(skip)]
    pub context: Option<Box<(crate::job::ModelRef, crate::engine::Shape)>>,
}

/// A job waits for memory: the gate refused its model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryWait {
    pub at: Millis,
    /// The model that could not load (the memory history counts its waits).
    pub model: String,
    /// "waiting for memory: needs 2.0 GiB, 1.0 GiB free"
    pub why: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CurrentJob {
    pub id: JobId,
    pub custom_id: String,
    pub started: Millis,
    pub chunks_done: u32,
    pub chunks_total: u32,
}

/// Everything the loop needs, passed in: store, engine, clock, settings, signals.
pub struct Worker {
    pub store: Arc<dyn Queue>,
    pub engine: Box<dyn Engine>,
    /// Memory readings for the admission gate and load shedding.
    pub probe: Box<dyn crate::monitor::MemoryProbe>,
    pub budget: admission::Budget,
    pub settings: RunSettings,
    /// Exit once nothing is ready to run (`worker --drain`).
    pub drain: bool,
    pub signals: Signals,
    pub status: Arc<Mutex<LiveStatus>>,
    /// Wall clock in ms; a parameter so tests can drive time.
    pub now: fn() -> Millis,
    /// Tells the supervisor, should this process crash, that chats were decoding beside the
    /// batch (no batch job was alone, see [`crate::crash`]).
    pub chat_witness: crate::supervise::ChatWitness,
}

/// How a worker run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was asked for (signal).
    Shutdown,
    /// `--drain`: nothing runnable is left. Delayed jobs (awaiting a retry) remain.
    Drained { delayed: usize },
    /// `--drain`: the jobs left wait for memory, and do not fit even with every model
    /// unloaded: the most one of them needs (if known) and what is free beyond the reserve.
    /// They stay queued; `delayed` jobs await a retry as well.
    NoMemory {
        jobs: Vec<JobId>,
        need: Option<u64>,
        free: u64,
        delayed: usize,
    },
}

impl Worker {
    /// The loop:
    /// 1. **recover** — jobs left Running by a dead worker go back to the queue (their
    ///    finished chunks stay, so they resume).
    /// 2. **stop?** — on shutdown, release the jobs in the batch (they resume after their last
    ///    finished chunk) and leave.
    /// 3. **steer** — cancel requests and step time limits of the jobs in the batch; under
    ///    critical memory pressure, shed load (shrink the batch, unload idle models, pause
    ///    claiming).
    /// 4. **serve chats** — interactive requests start ahead of batch work: in a free slot, in
    ///    the slot of the batch's youngest sequence, or, on another model, after the batch
    ///    yields its jobs back to the queue ([`interactive`]); none is claimed while one waits.
    /// 5. **fill** — every free slot gets a step: first from jobs in the batch (their next
    ///    chunk or reduce prompt), then from newly claimed jobs for the loaded model (unless
    ///    paused); a model loads only through the admission gate (its predicted need must fit
    ///    in free memory beyond the reserve) and down the fallback ladder, else the job waits.
    /// 6. **idle?** — with nothing in the batch: drain-exit, or sleep until woken or the next
    ///    delayed job is due.
    /// 7. **step** — one decode call for the whole batch; a batch that does not fit in memory
    ///    halves B and starts its steps again. A chat submitted meanwhile stops it (unless it
    ///    feeds a chat's prompt): it ends no sequence, what it had not finished is decoded
    ///    again later, and the loop goes round to start the chat.
    /// 8. **record** — checkpoint each finished chunk; record each job that ended (Succeeded,
    ///    Failed/Dead with backoff, Cancelled), flushed before the loop moves on; answer each
    ///    chat that ended, and stream what the others generated.
    /// 9. **heartbeat** — renew the leases of the jobs in the batch.
    pub fn run(mut self) -> Result<Exit, StoreError> {
        let now = self.now;
        self.engine.set_interrupt(self.signals.chat_flag());
        let recovered = self.store.recover(now())?;
        if !recovered.is_empty() {
            tracing::info!(
                count = recovered.len(),
                "recovered jobs left running by a dead worker"
            );
        }
        // Jobs an earlier worker deferred for memory go again now: memory may have freed, and
        // this worker (a `--drain` above all) has not tried them yet.
        let until = now().saturating_add(ladder::MEMORY_WAIT.as_millis() as u64 + 1000);
        for id in self.store.memory_deferred(until)? {
            self.store
                .wake(id, now(), "a new worker: trying again for memory")?;
        }
        let mut b = Batch::new(self.settings.parallel.max(1), self.settings.n_ctx);
        let mut last_beat = Instant::now();
        // Said once: how long after the worker's start its first token came (a restart's
        // cost beside the model's load, which its own line gives).
        let started = self.status.lock().map_or(now(), |s| s.started);
        let mut first_token = false;
        loop {
            if self.signals.shutdown.is_triggered() {
                self.end_chats(&mut b);
                self.chat_witness.decoding(false);
                self.release_all(&mut b)?;
                self.publish(&b);
                return Ok(Exit::Shutdown);
            }
            self.steer(&mut b)?;
            self.watch_pressure(&mut b)?;
            self.serve_chats(&mut b)?;
            // Before the chats just started decode.
            self.chat_witness.decoding(b.chats.decoding());
            self.fill(&mut b)?;
            b.waits.was_running |= !b.runs.is_empty();
            // Keep the machine awake while jobs or chats run; let it sleep when idle.
            if b.is_empty() {
                b.power.awake.release();
            } else {
                b.power.awake.hold();
            }
            self.publish(&b);
            if b.is_empty() && !b.pressure.claiming {
                // Claiming paused for critical pressure: look at memory again shortly.
                self.set_waiting(Some("claiming paused: critical memory pressure".into()));
                self.signals.wait(Some(Duration::from_secs(2)));
                continue;
            }
            if b.is_empty() && self.battery_holds(&mut b) {
                if self.drain {
                    let delayed = self.store.delayed_count()?;
                    return Ok(Exit::Drained { delayed });
                }
                self.set_waiting(Some("on battery: claiming paused (--ac-only)".into()));
                self.signals.wait(Some(Duration::from_secs(30)));
                continue;
            }
            if b.is_empty() {
                if let Some(exit) = self.idle(&mut b)? {
                    return Ok(exit);
                }
                continue;
            }
            if self.engine.active() == 0 && !b.chats.is_empty() {
                // Chats whose sequences a reshaped batch dropped start again at the next look.
                self.stream_chats(&mut b);
                continue;
            }
            if self.engine.active() == 0 {
                // Jobs without a step to run and none in flight: cannot happen, but never spin.
                for run in std::mem::take(&mut b.runs) {
                    let e = EngineError::Decode("internal: the job had no step to run".into());
                    self.record_stop(&mut b, run, Stop::Engine(e))?;
                }
                continue;
            }
            match self.engine.step() {
                Ok(done) => {
                    if !first_token && self.engine.generated_tokens() > 0 {
                        first_token = true;
                        tracing::info!(
                            after_ms = now().saturating_sub(started),
                            "first token since the worker started"
                        );
                    }
                    for d in done {
                        if b.chats.is_chat(d.tag) {
                            self.chat_ended(&mut b, d.tag, d.result);
                        } else {
                            self.record(&mut b, d)?;
                        }
                    }
                }
                Err(e) => self.batch_failed(&mut b, e.into())?,
            }
            self.stream_chats(&mut b);
            self.adapt(&mut b);
            if last_beat.elapsed() > self.settings.lease / 4 {
                last_beat = Instant::now();
                self.heartbeat(&b);
            }
        }
    }

    /// `--ac-only` and on battery: no claiming (power read at most every 30 s).
    fn battery_holds(&self, b: &mut Batch) -> bool {
        if !self.settings.ac_only {
            return false;
        }
        if b.power
            .read
            .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        {
            b.power.read = Some(Instant::now());
            let now = crate::service::power::on_battery();
            if now != b.power.on_battery {
                tracing::info!(on_battery = ?now, "power source changed");
            }
            b.power.on_battery = now;
        }
        b.power.on_battery == Some(true)
    }

    /// A person at the machine: no new claims (`pause`), or none while a job runs (`b1`).
    /// Their idle time is read at most every 5 s.
    fn person_holds(&self, b: &mut Batch) -> bool {
        let Some((threshold, to)) = self.settings.yield_when_active else {
            return false;
        };
        if b.presence
            .read
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            b.presence.read = Some(Instant::now());
            let was = b.presence.active;
            b.presence.active = match crate::service::presence::idle_ms((self.now)()) {
                Ok(idle) => crate::service::presence::active(idle, threshold.as_millis() as u64),
                Err(why) => {
                    if !b.presence.said_unsupported {
                        b.presence.said_unsupported = true;
                        tracing::warn!("yield_when_active is not supported here: {why}");
                        eprintln!("qwen3q: yield_when_active is not supported here ({why}); the worker does not yield");
                    }
                    false
                }
            };
            if was != b.presence.active {
                tracing::info!(active = b.presence.active, "a person at the machine");
            }
        }
        b.presence.active
            && match to {
                crate::service::presence::YieldTo::Pause => true,
                crate::service::presence::YieldTo::B1 => {
                    self.engine.active() > 0 || !b.runs.is_empty()
                }
            }
    }

    /// When the schedule window is closed now: when it opens (local time).
    fn window_closed(&self) -> Option<chrono::DateTime<chrono::Local>> {
        use chrono::TimeZone;
        let window = self.settings.window.as_ref()?;
        let now = chrono::Local
            .timestamp_millis_opt((self.now)() as i64)
            .single()?;
        match window.state(&now) {
            crate::schedule::WindowState::Closed { opens } => Some(opens),
            crate::schedule::WindowState::Open { .. } => None,
        }
    }

    /// Nothing in the batch: `Some` to leave (drained), else wait for work. Idle models are
    /// looked after meanwhile: the context of the last batch is given back (after a chat,
    /// [`chat::LINGER`] later), and models past their keep-alive are unloaded.
    fn idle(&mut self, b: &mut Batch) -> Result<Option<Exit>, StoreError> {
        let now = (self.now)();
        // Jobs not started by their batch's deadline expire even while claiming is paused.
        let expired = self.store.expire_due(now)?;
        if expired > 0 {
            tracing::info!(jobs = expired, "expired: their batch's deadline passed");
        }
        // Right after a chat (and with no job waiting for memory), the context stays for the
        // next one; else it is given back, with the models past their keep-alive.
        let lingering = b.chats.lingering().filter(|_| b.waits.jobs.is_empty());
        if lingering.is_none() {
            for name in self.engine.maintain(now) {
                tracing::info!(model = %name, "unloaded after its keep-alive");
            }
        }
        self.publish_models();
        if !b.waits.jobs.is_empty() {
            // Jobs wait for memory: after a batch (its context is gone now, and the ladder may
            // unload its model) all of them go again, else those that fit the memory free now.
            let wake = if std::mem::take(&mut b.waits.was_running) {
                waits::Wake::BatchEnded
            } else {
                waits::Wake::Fitting(self.budget.free(&self.probe.sample(now)))
            };
            let before = b.waits.jobs.len();
            self.wake_memory_waiters(b, wake)?;
            if b.waits.jobs.len() < before {
                return Ok(None);
            }
        }
        b.waits.was_running = false;
        // While models are loaded, look again within half a minute to unload expired ones;
        // while jobs wait for memory, every few seconds.
        let housekeeping = if !b.waits.jobs.is_empty() {
            Some(Duration::from_secs(5))
        } else if let Some(left) = lingering {
            Some(left)
        } else {
            (!self.engine.models().is_empty()).then_some(Duration::from_secs(30))
        };
        if self.store.paused()? {
            self.set_waiting(Some("paused".into()));
            self.signals.wait(housekeeping);
            return Ok(None);
        }
        if let Some(opens) = self.window_closed() {
            if self.drain {
                let delayed = self.store.delayed_count()?;
                return Ok(Some(Exit::Drained { delayed }));
            }
            // Sleep in steps of at most a minute, reading the wall clock each time: monotonic
            // time stops while a Mac sleeps.
            self.set_waiting(Some(format!(
                "outside the window {:?}; opens {}",
                self.settings
                    .window
                    .as_ref()
                    .map(|w| w.pattern())
                    .unwrap_or(""),
                opens.format("%a %Y-%m-%d %H:%M")
            )));
            self.signals.wait(Some(Duration::from_secs(60)));
            return Ok(None);
        }
        let next_due = self.store.next_due()?;
        if self.drain {
            if let Some(decided) = self.drain_memory_waiters(b)? {
                return Ok(decided);
            }
            let delayed = self.store.delayed_count()?;
            return Ok(Some(Exit::Drained { delayed }));
        }
        let due = next_due.map(|due| Duration::from_millis(due.saturating_sub(now) + 5));
        let wait = match (due, housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let why = match self.status.lock().unwrap().memory_wait.clone() {
            Some(w) => w.why,
            None => "idle: nothing queued".into(),
        };
        self.set_waiting(Some(why));
        self.signals.wait(wait);
        Ok(None)
    }

    fn publish_models(&self) {
        self.status.lock().unwrap().models = self.engine.models();
    }

    fn set_waiting(&self, why: Option<String>) {
        self.status.lock().unwrap().waiting = why;
    }

    /// Show the batch in [`LiveStatus`].
    fn publish(&self, b: &Batch) {
        let mut st = self.status.lock().unwrap();
        st.running = b
            .runs
            .iter()
            .map(|r| CurrentJob {
                id: r.job.id,
                custom_id: r.job.spec.custom_id.clone(),
                started: match r.job.state {
                    JobState::Running { started, .. } => started,
                    _ => 0,
                },
                chunks_done: r.done.len() as u32,
                chunks_total: r.total,
            })
            .collect();
        st.loaded_model = self.engine.loaded().map(|m| m.name.clone());
        st.context = (self.engine.loaded().cloned())
            .zip(self.engine.context())
            .map(Box::new);
        st.models = self.engine.models();
        st.parallel = b.n_seq;
        st.in_flight = self.engine.active() as u32;
        st.generated_tokens = self.engine.generated_tokens();
        st.keep_awake = b.power.awake.held();
        st.on_battery = b.power.on_battery;
        st.chats = b.chats.in_flight();
        st.chats_served = b.chats.served;
        st.preempted = b.preempted;
        st.steps_stopped = self.engine.stopped_steps();
        if !b.is_empty() {
            st.waiting = None;
        }
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }

    fn heartbeat(&self, b: &Batch) {
        for run in &b.runs {
            if let Err(e) = self
                .store
                .heartbeat(run.job.id, (self.now)(), self.lease_ms())
            {
                tracing::warn!(job = %run.job.id, "heartbeat failed: {e}");
            }
        }
    }

    /// Cancel requests and step time limits.
    fn steer(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        let mut i = 0;
        while i < b.runs.len() {
            let run = &b.runs[i];
            let limit = self.settings.chunk_timeout;
            let stop = if self.signals.is_cancelled(run.job.id) {
                Some(Stop::Engine(EngineError::Interrupted(Interrupt::Cancelled)))
            } else {
                run.in_flight()
                    .find(|(_, at)| at.elapsed() > limit)
                    .map(|(step, _)| Stop::Timeout { step, limit })
            };
            match stop {
                Some(stop) => {
                    let run = b.runs.remove(i);
                    self.record_stop(b, run, stop)?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Is there a slot for another step? (With no model loaded, a claim will load one.)
    fn has_room(&self) -> bool {
        self.engine.loaded().is_none() || self.engine.free_slots() > 0
    }

    /// Give every free slot a step: from the jobs in the batch, then from newly claimed jobs.
    fn fill(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        loop {
            self.feed_runs(b)?;
            if b.runs.is_empty() {
                // A suspect that ran alone has ended (or never joined): others may come.
                b.alone = false;
            }
            if !self.has_room()
                || !b.pressure.claiming
                || b.adaptive.grow_to.is_some()
                || self.window_closed().is_some()
                || self.battery_holds(b)
                || self.person_holds(b)
                || self.signals.shutdown.is_triggered()
                || b.chats.waiting()
                || self.store.paused()?
            {
                return Ok(());
            }
            let Some(job) = self.claim(b)? else {
                return Ok(());
            };
            self.prepare(b, job)?;
        }
    }

    /// Start the next steps of the jobs in the batch while slots are free; record the jobs
    /// that turn out to be done.
    fn feed_runs(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        if let Some(grow) = b.adaptive.grow_to {
            // A larger B needs a new context: start nothing until the sequences in flight end.
            if self.engine.active() > 0 {
                return Ok(());
            }
            b.adaptive.grow_to = None;
            self.grow(b, grow);
        }
        let mut i = 0;
        while i < b.runs.len() {
            if !self.has_room() {
                // Done jobs need no slot: record them even when the batch is full.
                if let Some(outcome) = b.runs[i].try_finish() {
                    let run = b.runs.remove(i);
                    self.record_end(b, run, outcome)?;
                    continue;
                }
                i += 1;
                continue;
            }
            match b.runs[i].next(self.engine.as_mut()) {
                Ok(Next::Work(w)) => {
                    let id = b.runs[i].job.id;
                    let request = b.request(id, w);
                    let tag = request.tag;
                    let step = b.tags[&tag].1;
                    match self.engine.start(request) {
                        Ok(()) => tracing::debug!(job = %id, step, tag, "step started"),
                        Err(e) => {
                            b.tags.remove(&tag);
                            let run = b.runs.remove(i);
                            self.record_stop(b, run, Stop::Engine(e))?;
                        }
                    }
                }
                Ok(Next::Busy) => i += 1,
                Ok(Next::Done(result)) => {
                    let run = b.runs.remove(i);
                    self.record_success(run, *result)?;
                }
                Err(e) => {
                    let run = b.runs.remove(i);
                    self.record_stop(b, run, Stop::Engine(e))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
