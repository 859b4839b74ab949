//! Recording how steps and jobs end: checkpoints, results, failures, cancels, releases.

use std::time::Duration;

use super::admission::Refusal;
use super::batch::Batch;
use super::jobrun::{Ended, JobRun};
use super::Worker;
use crate::engine::{EngineError, Interrupt, SeqDone};
use crate::job::{Job, JobId, JobState, Millis};
use crate::queue::StoreError;

/// Why a job in the batch stops before its result.
#[derive(Debug)]
pub(super) enum Stop {
    Engine(EngineError),
    /// The memory gate refused it, in a way waiting does not mend.
    Refused(Refusal),
    /// Its stored document could not be read this time: it fails and is retried later.
    Unreadable(String),
    /// A step ran past the time limit.
    Timeout {
        step: u32,
        limit: Duration,
    },
}

fn jitter(id: JobId, now: Millis) -> f64 {
    let x = (id.0 ^ now).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A store write about a job that is no longer the worker's to write (a person moved it
/// meanwhile: the store refuses the transition) is logged and skipped: the job's new state
/// stands, and the worker goes on. Any other store error stops the worker.
fn unless_moved<T>(id: JobId, r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ StoreError::IllegalTransition { .. }) => {
            tracing::warn!(job = %id, "not recorded: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Worker {
    /// A claimed job that never joined the batch stops (it has no steps to abort).
    pub(super) fn fail_claimed(&mut self, job: Job, stop: Stop) -> Result<(), StoreError> {
        self.record_outcome(job.id, stop)
    }

    /// A sequence ended.
    pub(super) fn record(&mut self, b: &mut Batch, done: SeqDone) -> Result<(), StoreError> {
        let Some((id, step)) = b.tags.remove(&done.tag) else {
            return Ok(()); // a sequence of a job that already stopped
        };
        tracing::debug!(job = %id, step, tag = done.tag, "step ended");
        let Some(i) = b.runs.iter().position(|r| r.job.id == id) else {
            return Ok(());
        };
        let ended = done
            .result
            .and_then(|g| b.runs[i].ended(self.engine.as_mut(), step, g));
        match ended {
            Ok(Ended::Chunk(chunk, output)) => {
                let (now, lease) = ((self.now)(), self.lease_ms());
                let saved = self.store.save_checkpoint(id, chunk, &output, now, lease);
                if unless_moved(id, saved)?.is_none() {
                    let run = b.runs.remove(i);
                    self.abort_steps(b, run.job.id);
                    return Ok(());
                }
            }
            Ok(Ended::Reduce) => {}
            Err(e) => {
                let run = b.runs.remove(i);
                return self.record_stop(b, run, Stop::Engine(e));
            }
        }
        if let Some(outcome) = b.runs[i].try_finish() {
            let run = b.runs.remove(i);
            self.record_end(b, run, outcome)?;
        }
        Ok(())
    }

    pub(super) fn record_end(
        &mut self,
        b: &mut Batch,
        run: JobRun,
        outcome: Result<Box<crate::job::JobResult>, EngineError>,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(result) => self.record_success(run, *result),
            Err(e) => self.record_stop(b, run, Stop::Engine(e)),
        }
    }

    pub(super) fn record_success(
        &mut self,
        run: JobRun,
        mut result: crate::job::JobResult,
    ) -> Result<(), StoreError> {
        let now = (self.now)();
        result.finished = now;
        if unless_moved(run.job.id, self.store.complete(run.job.id, &result, now))?.is_none() {
            return Ok(());
        }
        tracing::info!(job = %run.job.id, "succeeded");
        self.status.lock().unwrap().finished += 1;
        Ok(())
    }

    /// Drop the job's sequences in flight.
    pub(super) fn abort_steps(&mut self, b: &mut Batch, id: JobId) {
        for tag in b.tags_of(id) {
            self.engine.abort(tag);
            b.tags.remove(&tag);
        }
    }

    /// A job leaves the batch without a result: cancelled, failed, or released for shutdown.
    pub(super) fn record_stop(
        &mut self,
        b: &mut Batch,
        run: JobRun,
        stop: Stop,
    ) -> Result<(), StoreError> {
        self.abort_steps(b, run.job.id);
        self.record_outcome(run.job.id, stop)
    }

    /// Record in the store how a job ended without a result.
    fn record_outcome(&mut self, id: JobId, stop: Stop) -> Result<(), StoreError> {
        let now = (self.now)();
        let (msg, permanent) = match stop {
            Stop::Engine(EngineError::Interrupted(
                why @ (Interrupt::Shutdown | Interrupt::Yield),
            )) => {
                let reason = match why {
                    Interrupt::Yield => {
                        "yielded to an interactive request on another model; resumes after its last finished chunk"
                    }
                    _ => "worker shutting down; resumes after its last finished chunk",
                };
                unless_moved(id, self.store.release(id, now, reason))?;
                tracing::info!(job = %id, "released: {why:?}");
                return Ok(());
            }
            Stop::Engine(EngineError::Interrupted(Interrupt::Cancelled)) => {
                unless_moved(id, self.store.cancel(id, now))?;
                self.signals.forget_cancel(id);
                tracing::info!(job = %id, "cancelled");
                self.status.lock().unwrap().finished += 1;
                return Ok(());
            }
            Stop::Timeout { step, limit } => (
                format!(
                    "step {} ran past its time limit of {} s",
                    step + 1,
                    limit.as_secs()
                ),
                false,
            ),
            Stop::Refused(r) => (r.to_string(), false),
            Stop::Unreadable(why) => (why, false),
            Stop::Engine(e) => (e.to_string(), e.is_permanent()),
        };
        let failed = self.store.fail(id, &msg, permanent, now, jitter(id, now));
        match unless_moved(id, failed)? {
            Some(JobState::Dead { .. }) => tracing::warn!(job = %id, "dead: {msg}"),
            Some(_) => tracing::warn!(job = %id, "failed, will retry: {msg}"),
            None => return Ok(()),
        }
        self.status.lock().unwrap().finished += 1;
        Ok(())
    }

    /// Shutdown: every job in the batch goes back to the queue.
    pub(super) fn release_all(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        for run in std::mem::take(&mut b.runs) {
            self.record_stop(
                b,
                run,
                Stop::Engine(EngineError::Interrupted(Interrupt::Shutdown)),
            )?;
        }
        Ok(())
    }
}
