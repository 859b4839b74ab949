//! The fallback ladder: what the worker does when a model or a batch does not fit in memory.

use std::time::Duration;

use super::batch::Batch;
use super::record::Stop;
use super::Worker;
use crate::engine::{EngineError, Shape};
use crate::job::Job;
use crate::queue::StoreError;

/// How a job that could not be loaded ends this time.
pub(super) enum Ladder {
    /// It cannot run: fail it (an error of the job, or no configuration fits the budget).
    Fail(EngineError),
    /// It could run when memory frees up: back to the queue for a while.
    Wait(EngineError),
}

/// How long a job waits for memory before it is tried again.
pub(super) const MEMORY_WAIT: Duration = Duration::from_secs(60);

/// The smallest context the fallback ladder shrinks to for `job`: room for its answer and a
/// useful piece of document, as a power of two.
fn min_context(job: &Job, margin: u32) -> u32 {
    (job.spec.params.max_tokens + margin + 512)
        .next_power_of_two()
        .max(1024)
}

impl Worker {
    /// Load a model for `job` within memory: its own model at the batch's shape, else, for
    /// lack of memory, down the ladder — (1) halve B, (2) halve the context down to what the
    /// job needs, (3) evict the other loaded models, (4) the job's fallback models in order,
    /// each from the top of the ladder. The model that loaded, and how.
    pub(super) fn load_with_fallback(
        &mut self,
        b: &mut Batch,
        job: &Job,
    ) -> Result<(crate::job::ModelRef, crate::engine::ModelInfo), Ladder> {
        let fresh = b.runs.is_empty();
        let min_ctx = min_context(job, self.settings.margin);
        let candidates =
            std::iter::once(job.spec.model.clone()).chain(job.spec.fallback.iter().cloned());
        let mut last = None;
        // Whether every model failed only because it cannot fit the budget even alone.
        let mut never_fits = true;
        for model in candidates {
            let mut shape = Shape {
                n_ctx: b.n_ctx,
                n_seq: b.n_seq,
            };
            let mut evicted = false;
            loop {
                match self.engine.load(&model, shape) {
                    Ok(info) => {
                        if fresh {
                            (b.n_seq, b.n_ctx) = (info.n_seq, info.n_ctx);
                        }
                        if model != job.spec.model {
                            tracing::warn!(job = %job.id, model = %model.name, "running on a fallback model");
                        }
                        return Ok((model, info));
                    }
                    Err(e) if e.is_memory() => {
                        if fresh && shape.n_seq > 1 {
                            shape.n_seq /= 2;
                            tracing::warn!(parallel = shape.n_seq, "{e}; trying fewer sequences");
                        } else if fresh && shape.n_ctx / 2 >= min_ctx {
                            shape.n_ctx /= 2;
                            tracing::warn!(n_ctx = shape.n_ctx, "{e}; trying a smaller context");
                        } else if !evicted && fresh && self.engine.free_memory(u64::MAX) > 0 {
                            evicted = true;
                            tracing::warn!("{e}; unloaded the other models");
                        } else {
                            never_fits &= matches!(e, EngineError::NoRoom { .. });
                            last = Some(e);
                            break;
                        }
                    }
                    Err(e) if model == job.spec.model => return Err(Ladder::Fail(e)),
                    Err(e) => {
                        // A fallback model that is gone or broken: the next one may do.
                        tracing::warn!(model = %model.name, "fallback model unusable: {e}");
                        never_fits = false;
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        let e = last.expect("at least the job's own model was tried");
        if never_fits {
            Err(Ladder::Fail(e))
        } else {
            Err(Ladder::Wait(e))
        }
    }

    /// The whole batch failed in a decode. For lack of memory: halve B and start the steps
    /// again, or at B = 1 put the jobs back to wait for memory; for another reason every job
    /// in it fails (and retries later).
    pub(super) fn batch_failed(&mut self, b: &mut Batch, e: EngineError) -> Result<(), StoreError> {
        b.tags.clear();
        if !e.is_memory() {
            for run in std::mem::take(&mut b.runs) {
                let e = EngineError::Decode(e.to_string());
                self.record_stop(b, run, Stop::Engine(e))?;
            }
            return Ok(());
        }
        if b.n_seq > 1 {
            b.n_seq = (b.n_seq / 2).max(1);
            tracing::warn!(parallel = b.n_seq, "{e}; decoding fewer sequences together");
            for run in &mut b.runs {
                run.drop_all();
            }
            let shape = Shape {
                n_ctx: b.n_ctx,
                n_seq: b.n_seq,
            };
            match self.engine.loaded().cloned() {
                Some(model) if self.engine.load(&model, shape).is_ok() => return Ok(()),
                _ => {}
            }
        }
        // Even one sequence does not fit now: the jobs wait for memory (their finished
        // chunks are kept), costing no attempt.
        let now = (self.now)();
        let until = now + MEMORY_WAIT.as_millis() as u64;
        for run in std::mem::take(&mut b.runs) {
            self.abort_steps(b, run.job.id);
            self.store.defer(
                run.job.id,
                now,
                until,
                &format!("waiting for memory ({e}); tries again in a minute"),
            )?;
        }
        Ok(())
    }
}
