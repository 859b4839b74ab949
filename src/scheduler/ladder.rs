//! The fallback ladder: what the worker does when a model or a batch does not fit in memory.

use std::time::Duration;

use super::admission::{admit_shares, pressure, shed, Need, Pool, Refusal, Shed, Sheddable};
use super::batch::Batch;
use super::record::Stop;
use super::Worker;
use crate::engine::{gguf, EngineError, Shape};
use crate::job::Job;
use crate::monitor::Pressure;
use crate::queue::StoreError;

/// Why a model could not be loaded (or a batch go on): the memory gate refused it, or the
/// engine failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error(transparent)]
    Gate(#[from] Refusal),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl LoadError {
    /// For lack of memory: a smaller configuration, or waiting, may do.
    pub(super) fn is_memory(&self) -> bool {
        match self {
            LoadError::Gate(_) => true,
            LoadError::Engine(e) => e.is_memory(),
        }
    }
}

impl From<LoadError> for Stop {
    fn from(e: LoadError) -> Stop {
        match e {
            LoadError::Engine(e) => Stop::Engine(e),
            LoadError::Gate(r) => Stop::Refused(r),
        }
    }
}

/// How a job that could not be loaded ends this time.
pub(super) enum Ladder {
    /// It cannot run: fail it (an error of the job, or no configuration fits the budget).
    Fail(LoadError),
    /// It could run when memory frees up: back to the queue for a while.
    Wait(LoadError),
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
    /// The admission gate: may `model` with a context of `shape` load now? Its predicted
    /// need (the measured figures of an earlier load first) must fit in the memory available
    /// beyond the reserve. A model already loaded needs only its context; the batch's own model
    /// with its context in place (a batch going on, or a new one at the shape of the context
    /// still held) needs nothing.
    pub(super) fn gate(
        &mut self,
        model: &crate::job::ModelRef,
        shape: Shape,
        fresh: bool,
    ) -> Result<(), Refusal> {
        if self.engine.loaded() == Some(model) && (!fresh || self.engine.context() == Some(shape)) {
            return Ok(());
        }
        let need = self.need_by_pool(model, shape);
        let others = self.others_loaded(model);
        let snapshot = self.probe.sample((self.now)());
        admit_shares(&snapshot, need, others, &self.budget)
    }

    /// Bytes the loaded models other than `model` hold (what the models' share already has).
    pub(super) fn others_loaded(&self, model: &crate::job::ModelRef) -> u64 {
        self.engine
            .models()
            .iter()
            .filter(|m| m.path != model.path)
            .map(|m| m.bytes)
            .sum()
    }

    /// What `model` with a context of `shape` would add now, by pool: a loaded model needs
    /// only its context, and the current model less what its context now holds (the load
    /// drops that one first; the reading counts what of it is resident).
    pub(super) fn need_by_pool(&self, model: &crate::job::ModelRef, shape: Shape) -> Need {
        let (total, weights) = self.predicted_need(model, shape);
        let loaded = self.engine.models().iter().any(|m| m.path == model.path);
        let held = match self.engine.context() {
            Some(old) if old != shape && self.engine.loaded() == Some(model) => self
                .store
                .memory_of(&model.path)
                .ok()
                .and_then(|r| {
                    r.into_iter()
                        .find(|m| (m.n_ctx, m.n_seq) == (old.n_ctx, old.n_seq))
                })
                .map_or(0, |m| m.context_resident),
            _ => 0,
        };
        Need {
            weights: if loaded { 0 } else { weights },
            context: total.saturating_sub(weights).saturating_sub(held),
            n_seq: shape.n_seq,
        }
    }

    /// The bytes `model` with a context of `shape` would add now.
    pub(super) fn need_now(&self, model: &crate::job::ModelRef, shape: Shape) -> u64 {
        let need = self.need_by_pool(model, shape);
        need.weights + need.context
    }

    /// What `model` takes with a context of `shape`, and its weights: as measured by an
    /// earlier load of that shape, else as predicted from its header (0 when unreadable: the
    /// load itself will say what is wrong).
    pub(super) fn predicted_need(&self, model: &crate::job::ModelRef, shape: Shape) -> (u64, u64) {
        let measured = self.store.memory_of(&model.path).ok().and_then(|records| {
            records
                .into_iter()
                .find(|m| m.n_ctx == shape.n_ctx && m.n_seq == shape.n_seq)
        });
        if let Some(m) = measured {
            return (m.total(), m.weights);
        }
        let predicted = gguf::facts_of(std::path::Path::new(&model.path))
            .ok()
            .map(|f| f.predict(shape.n_ctx as u64, shape.n_seq as u64, self.engine.graph()));
        predicted.map_or((0, 0), |p| (p.total(), p.weights))
    }

    /// Load a model for `job` within memory: its own model at the batch's shape, else, for
    /// lack of memory, down the ladder — (1) halve B, (2) halve the context down to what the
    /// job needs, (3) evict the other loaded models, (4) the job's fallback models in order,
    /// each from the top of the ladder. The model that loaded, and how.
    pub(super) fn load_with_fallback(
        &mut self,
        b: &mut Batch,
        job: &Job,
    ) -> Result<(crate::job::ModelRef, crate::engine::ModelInfo), Ladder> {
        let fresh = b.is_empty();
        let min_ctx = min_context(job, self.settings.margin);
        let candidates =
            std::iter::once(job.spec.model.clone()).chain(job.spec.fallback.iter().cloned());
        // The job's own model's last error (the one reported: its need is the one to wait
        // for), and the last of any model.
        let (mut own, mut last) = (None, None);
        // Whether waiting could help: some model failed for memory that may free up (not
        // only because it cannot fit the budget even alone, or because llama.cpp refuses it).
        let mut may_fit_later = false;
        for model in candidates {
            let mut shape = Shape {
                n_ctx: b.n_ctx,
                n_seq: b.n_seq,
            };
            let mut evicted = false;
            loop {
                let attempt = match self.gate(&model, shape, fresh) {
                    Ok(()) => self
                        .engine
                        .load(&model, shape, (self.now)())
                        .map_err(LoadError::from),
                    Err(refused) => Err(LoadError::from(refused)),
                };
                match attempt {
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
                        // Loading the weights does not depend on the shape: after a failed
                        // load only unloading the other models is left to try.
                        let weights =
                            matches!(e, LoadError::Engine(EngineError::LoadFailed { .. }));
                        if fresh && shape.n_seq > 1 && !weights {
                            shape.n_seq /= 2;
                            tracing::warn!(parallel = shape.n_seq, "{e}; trying fewer sequences");
                        } else if fresh && shape.n_ctx / 2 >= min_ctx && !weights {
                            shape.n_ctx /= 2;
                            tracing::warn!(n_ctx = shape.n_ctx, "{e}; trying a smaller context");
                        } else if !evicted && fresh && self.engine.free_memory(u64::MAX) > 0 {
                            evicted = true;
                            tracing::warn!("{e}; unloaded the other models");
                        } else {
                            let e = match e {
                                // The gate found room for it, alone at the smallest shape, and
                                // llama.cpp still failed: memory is ruled out.
                                LoadError::Engine(EngineError::LoadFailed { path }) => {
                                    LoadError::Engine(EngineError::Refused { path })
                                }
                                e => e,
                            };
                            // Too big for the budget or the models' share even alone, or
                            // refused by llama.cpp: waiting will not help.
                            may_fit_later |= !matches!(
                                e,
                                LoadError::Engine(
                                    EngineError::NoRoom { .. } | EngineError::Refused { .. }
                                ) | LoadError::Gate(Refusal::OverShare {
                                    pool: Pool::Models,
                                    ..
                                })
                            );
                            if model == job.spec.model {
                                own = Some(e);
                            } else {
                                last = Some(e);
                            }
                            break;
                        }
                    }
                    Err(e) if model == job.spec.model => return Err(Ladder::Fail(e)),
                    Err(e) => {
                        // A fallback model that is gone or broken: the next one may do; it
                        // is no reason to wait.
                        tracing::warn!(model = %model.name, "fallback model unusable: {e}");
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        let e = own
            .or(last)
            .expect("at least the job's own model was tried");
        if may_fit_later {
            Err(Ladder::Wait(e))
        } else {
            Err(Ladder::Fail(e))
        }
    }

    /// The whole batch failed in a decode. For lack of memory: halve B and start the steps
    /// again, or at B = 1 put the jobs back to wait for memory; for another reason every job
    /// in it fails (and retries later).
    pub(super) fn batch_failed(&mut self, b: &mut Batch, e: LoadError) -> Result<(), StoreError> {
        b.tags.clear();
        if !e.is_memory() {
            for run in std::mem::take(&mut b.runs) {
                let e = EngineError::Decode(e.to_string());
                self.record_stop(b, run, Stop::Engine(e))?;
            }
            return Ok(());
        }
        b.adaptive.alloc_failed = true;
        if b.n_seq > 1 {
            let half = b.n_seq / 2;
            tracing::warn!(parallel = half, "{e}; decoding fewer sequences together");
            if self.resize(b, half) {
                return Ok(());
            }
        }
        // Even one sequence does not fit now: the jobs wait for memory (their finished
        // chunks are kept), costing no attempt.
        let now = (self.now)();
        for run in std::mem::take(&mut b.runs) {
            self.abort_steps(b, run.job.id);
            let model = self
                .engine
                .loaded()
                .map_or_else(String::new, |m| m.name.clone());
            self.wait_for_memory(b, run.job.id, &model, now, &e)?;
        }
        Ok(())
    }

    /// Under critical pressure shed load, one step at a time, each recorded: shrink the batch,
    /// unload idle models, pause claiming. Claiming resumes once pressure is normal again.
    /// Memory is read at most every `pressure_interval`, and after a shed the next waits
    /// `shed_interval`.
    pub(super) fn watch_pressure(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        let now_i = std::time::Instant::now();
        let every = self.settings.pressure_interval;
        if b.pressure
            .last_reading
            .is_some_and(|t| now_i.duration_since(t) < every)
        {
            return Ok(());
        }
        b.pressure.last_reading = Some(now_i);
        let now = (self.now)();
        let level = pressure(&self.probe.sample(now), &self.budget);
        if level == Pressure::Normal && !b.pressure.claiming {
            b.pressure.claiming = true;
            tracing::info!("memory pressure is normal again: claiming resumes");
        }
        let wait = self.settings.shed_interval;
        if b.pressure
            .last_shed
            .is_some_and(|t| now_i.duration_since(t) < wait)
        {
            return Ok(());
        }
        let idle_models = self.engine.models().iter().filter(|m| !m.current).count();
        let can = Sheddable {
            batch: b.n_seq,
            idle_models,
            claiming: b.pressure.claiming,
        };
        let Some(step) = shed(level, can) else {
            return Ok(());
        };
        b.pressure.last_shed = Some(now_i);
        tracing::warn!(?step, "critical memory pressure: shedding load");
        {
            let mut st = self.status.lock().unwrap();
            st.sheds.push((now, step));
            let excess = st.sheds.len().saturating_sub(20);
            st.sheds.drain(..excess);
        }
        match step {
            Shed::ShrinkBatch => {
                let e = Refusal::Wait { need: 0, free: 0 };
                self.batch_failed(b, e.into())?;
            }
            Shed::UnloadIdle => {
                self.engine.free_memory(u64::MAX);
            }
            Shed::PauseClaiming => b.pressure.claiming = false,
        }
        Ok(())
    }
}
