//! The worker loop, as a short list of named steps (see [`Worker::run`]). It runs on its own OS
//! thread (inference blocks; a llama context is not `Sync`) and talks to the socket server only
//! through the store, a [`Signals`] value and the shared [`LiveStatus`].

pub mod runner;
mod signals;

pub use signals::{Shutdown, Signals};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{Engine, Interrupt};
use crate::job::{JobId, JobState, Millis};
use crate::queue::{Store, StoreError};
use runner::{run_job, RunEnv, RunError, RunSettings};

/// What the worker is doing, for `status`. Shared with the socket server.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LiveStatus {
    pub pid: u32,
    pub started: Millis,
    /// The job being run, with its progress.
    pub current: Option<CurrentJob>,
    /// The model the engine holds.
    pub loaded_model: Option<String>,
    /// Jobs finished (any outcome) since the worker started.
    pub finished: u64,
    /// What the loop is waiting for, when it is not running a job.
    pub waiting: Option<String>,
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
    pub store: Arc<Store>,
    pub engine: Box<dyn Engine>,
    pub settings: RunSettings,
    /// Exit once nothing is ready to run (`worker --drain`).
    pub drain: bool,
    pub signals: Signals,
    pub status: Arc<Mutex<LiveStatus>>,
    /// Wall clock in ms; a parameter so tests can drive time.
    pub now: fn() -> Millis,
}

/// How a worker run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was asked for (signal).
    Shutdown,
    /// `--drain`: nothing runnable is left. Delayed jobs (awaiting a retry) remain.
    Drained { delayed: usize },
}

fn jitter(id: JobId, now: Millis) -> f64 {
    let x = (id.0 ^ now).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Worker {
    /// The loop:
    /// 1. **recover** — jobs left Running by a dead worker go back to the queue (their
    ///    finished chunks stay, so they resume).
    /// 2. **stop?** — on shutdown, leave.
    /// 3. **paused?** — while paused, wait for a wake-up.
    /// 4. **claim** — the next ready job (promoting delayed jobs that came due); with none,
    ///    drain-exit or sleep until woken or the next delayed job is due.
    /// 5. **run** — chunk, generate, checkpoint each chunk.
    /// 6. **record** — Succeeded with its result, Failed/Dead with backoff, Cancelled, or
    ///    back to Queued on shutdown; each flushed before the loop moves on.
    pub fn run(mut self) -> Result<Exit, StoreError> {
        let now = self.now;
        let recovered = self.store.recover(now())?;
        if !recovered.is_empty() {
            tracing::info!(
                count = recovered.len(),
                "recovered jobs left running by a dead worker"
            );
        }
        loop {
            if self.signals.shutdown.is_triggered() {
                return Ok(Exit::Shutdown);
            }
            if self.store.paused()? {
                self.set_waiting(Some("paused".into()));
                self.signals.wait(None);
                continue;
            }
            let lease_ms = self.settings.lease.as_millis() as u64;
            let Some(job) = self.store.claim(now(), lease_ms)? else {
                let next_due = self.store.next_due()?;
                if self.drain {
                    let delayed = self.store.delayed_count()?;
                    return Ok(Exit::Drained { delayed });
                }
                let wait = next_due.map(|due| Duration::from_millis(due.saturating_sub(now()) + 5));
                self.set_waiting(Some("idle: nothing queued".into()));
                self.signals.wait(wait);
                continue;
            };
            self.set_waiting(None);
            self.run_one(job.clone())?;
        }
    }

    fn set_waiting(&self, why: Option<String>) {
        self.status.lock().unwrap().waiting = why;
    }

    fn run_one(&mut self, job: crate::job::Job) -> Result<(), StoreError> {
        let now = self.now;
        let id = job.id;
        tracing::info!(job = %id, custom_id = %job.spec.custom_id, "running");
        self.status.lock().unwrap().current = Some(CurrentJob {
            id,
            custom_id: job.spec.custom_id.clone(),
            started: now(),
            chunks_done: 0,
            chunks_total: 0,
        });
        let signals = self.signals.clone();
        let stop = move || {
            if signals.shutdown.is_triggered() {
                Some(Interrupt::Shutdown)
            } else if signals.is_cancelled(id) {
                Some(Interrupt::Cancelled)
            } else {
                None
            }
        };
        let status = self.status.clone();
        let model_name = job.spec.model.name.clone();
        // Called once the model is loaded and the document planned, then after each chunk.
        let progress = move |done: u32, total: u32| {
            let mut st = status.lock().unwrap();
            st.loaded_model = Some(model_name.clone());
            if let Some(c) = st.current.as_mut() {
                c.chunks_done = done;
                c.chunks_total = total;
            }
        };
        let env = RunEnv {
            store: &self.store,
            settings: &self.settings,
            now: &now,
            stop: &stop,
            progress: &progress,
        };
        let outcome = run_job(&env, self.engine.as_mut(), &job);
        {
            let mut st = self.status.lock().unwrap();
            st.current = None;
            st.loaded_model = self.engine.loaded().map(|m| m.name.clone());
        }
        match outcome {
            Ok(result) => {
                self.store.complete(id, &result, now())?;
                tracing::info!(job = %id, "succeeded");
            }
            Err(e) => match e.interrupt() {
                Some(Interrupt::Shutdown) => {
                    self.store.release(
                        id,
                        now(),
                        "worker shutting down; resumes after its last finished chunk",
                    )?;
                    tracing::info!(job = %id, "released for shutdown");
                    return Ok(());
                }
                Some(Interrupt::Cancelled) => {
                    self.store.cancel(id, now())?;
                    self.signals.forget_cancel(id);
                    tracing::info!(job = %id, "cancelled");
                }
                _ => {
                    let permanent = match e {
                        // The store itself failed: stop the worker rather than run blind.
                        RunError::Store(se) => return Err(se),
                        RunError::Engine(ref ee) => ee.is_permanent(),
                    };
                    let msg = e.to_string();
                    match self
                        .store
                        .fail(id, &msg, permanent, now(), jitter(id, now()))?
                    {
                        JobState::Dead { .. } => tracing::warn!(job = %id, "dead: {msg}"),
                        _ => tracing::warn!(job = %id, "failed, will retry: {msg}"),
                    }
                }
            },
        }
        self.status.lock().unwrap().finished += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
