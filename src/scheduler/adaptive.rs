//! The adaptive batch size in the worker (`--adaptive`): where each model's controller starts
//! (its calibrated knee, else what memory allows), the readings it gets, and resizing the
//! batch's context when it decides. The decisions themselves are [`super::batch_size`]'s.

use super::admission::{self, pressure};
use super::batch::Batch;
use super::batch_size;
use super::Worker;
use crate::engine::Shape;

impl Worker {
    /// `--adaptive`: the B a new batch on `model` starts at, from the model's controller —
    /// made on first use, starting at the knee of the model's calibration curve for this
    /// context size (`qwen3q calibrate`), else at the estimate: the largest B whose predicted
    /// need fits in free memory and keeps use under the warning threshold.
    pub(super) fn adaptive_start(
        &mut self,
        b: &mut Batch,
        model: &crate::job::ModelRef,
    ) -> Option<u32> {
        if !self.settings.adaptive {
            return None;
        }
        if let Some(c) = b.adaptive.controllers.get(&model.path) {
            return Some(c.b());
        }
        let max = self.settings.parallel.max(1);
        let n_ctx = self.settings.n_ctx;
        let knee = self
            .store
            .calibration(&model.path, n_ctx)
            .ok()
            .flatten()
            .and_then(|c| c.knee());
        let start = match knee {
            Some(k) => {
                let start = k.min(max);
                tracing::info!(model = %model.name, knee = k, start, "batch size: starting at the calibrated knee");
                start
            }
            None => {
                let start = self.memory_estimate(model, max);
                tracing::info!(model = %model.name, start, "batch size: no calibration (qwen3q calibrate); starting at what memory allows");
                start
            }
        };
        let c = batch_size::Controller::new(start, max, self.budget.warn_percent);
        b.adaptive.controllers.insert(model.path.clone(), c);
        Some(start)
    }

    /// The largest B up to `max` that the memory gate would admit for `model` now (free
    /// memory, the budget's shares) and that leaves use under the warning threshold; at
    /// least 1.
    pub(super) fn memory_estimate(&mut self, model: &crate::job::ModelRef, max: u32) -> u32 {
        let snapshot = self.probe.sample((self.now)());
        let total = snapshot.effective_total().max(1);
        let used = total.saturating_sub(snapshot.effective_available());
        let others = self.others_loaded(model);
        (1..=max)
            .rev()
            .find(|&n_seq| {
                let shape = crate::engine::Shape {
                    n_ctx: self.settings.n_ctx,
                    n_seq,
                };
                let need = self.need_by_pool(model, shape);
                let after = (used + need.weights + need.context) as f64 / total as f64 * 100.0;
                admission::admit_shares(&snapshot, need, others, &self.budget).is_ok()
                    && after < self.budget.warn_percent
            })
            .unwrap_or(1)
    }

    /// The adaptive batch size: every `adapt_interval`, readings (memory use and pressure,
    /// generated tokens/s, an allocation failure) go to the controller; a smaller B applies at
    /// once (the steps in flight start again), a larger one once the sequences in flight end.
    pub(super) fn adapt(&mut self, b: &mut Batch) {
        let Some(path) = self.engine.loaded().map(|m| m.path.clone()) else {
            return;
        };
        if !b.adaptive.controllers.contains_key(&path) || b.adaptive.grow_to.is_some() {
            // While the batch drains for a larger B its throughput says nothing about either B.
            return;
        }
        let generated = self.engine.generated_tokens();
        // The worker's clock, not the machine's: a test's clock makes the readings exact.
        let now = (self.now)();
        let Some((since, before)) = b.adaptive.read else {
            b.adaptive.read = Some((now, generated));
            return;
        };
        let elapsed_ms = now.saturating_sub(since);
        if elapsed_ms < self.settings.adapt_interval.as_millis() as u64 {
            return;
        }
        if std::mem::take(&mut b.adaptive.warmup) {
            // The first interval after a resize is the new slots' prompts filling in: not
            // the steady rate of this B. Measure from here.
            b.adaptive.read = Some((now, generated));
            return;
        }
        let snapshot = self.probe.sample(now);
        let reading = super::batch_size::Reading {
            used_percent: snapshot.used_percent(),
            pressure: pressure(&snapshot, &self.budget),
            tokens_per_sec: generated.saturating_sub(before) as f64
                / (elapsed_ms as f64 / 1000.0).max(1e-3),
            alloc_failure: std::mem::take(&mut b.adaptive.alloc_failed),
            longest_input: self.engine.longest_prompt(),
        };
        b.adaptive.read = Some((now, generated));
        let Some(controller) = b.adaptive.controllers.get_mut(&path) else {
            return;
        };
        let next = controller.update(&reading);
        tracing::debug!(?reading, b = next, "batch size controller");
        if next < b.n_seq {
            tracing::info!(from = b.n_seq, to = next, "batch size: shrinking");
            self.resize(b, next);
        } else if next > b.n_seq && b.adaptive.grow_to.is_none() {
            tracing::info!(
                from = b.n_seq,
                to = next,
                "batch size: growing once the sequences in flight end"
            );
            b.adaptive.grow_to = Some(next);
        }
    }

    /// The controller asked for a larger B: the bigger context must pass the memory gate
    /// first (the loaded model needs only it); refused, B stays and the controller holds.
    pub(super) fn grow(&mut self, b: &mut Batch, n_seq: u32) {
        let Some(model) = self.engine.loaded().cloned() else {
            return;
        };
        let shape = Shape {
            n_ctx: b.n_ctx,
            n_seq,
        };
        if let Err(e) = self.gate(&model, shape, true) {
            tracing::info!(from = b.n_seq, to = n_seq, "batch size stays: {e}");
            if let Some(c) = b.adaptive.controllers.get_mut(&model.path) {
                c.refused(b.n_seq);
            }
            return;
        }
        self.resize(b, n_seq);
    }

    /// Decode `n_seq` sequences together from now on: the steps in flight start again in the
    /// new context. Whether the context is ready.
    pub(super) fn resize(&mut self, b: &mut Batch, n_seq: u32) -> bool {
        b.n_seq = n_seq.max(1);
        // The next reading measures the new size only, after a warm-up interval.
        b.adaptive.read = None;
        b.adaptive.warmup = true;
        for run in &mut b.runs {
            run.drop_all();
            run.set_n_seq(b.n_seq);
        }
        for tag in b.tags.keys().copied().collect::<Vec<_>>() {
            self.engine.abort(tag);
        }
        b.tags.clear();
        let Some(model) = self.engine.loaded().cloned() else {
            return false;
        };
        let shape = Shape {
            n_ctx: b.n_ctx,
            n_seq: b.n_seq,
        };
        match self.engine.load(&model, shape, (self.now)()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("resizing the batch: {e}");
                b.adaptive.alloc_failed = true;
                false
            }
        }
    }
}
