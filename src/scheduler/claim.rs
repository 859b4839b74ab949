//! Claiming: which ready job the worker takes next, and how it becomes a run in the batch —
//! a `--model auto` job's model chosen by the memory free now, the model loaded through the
//! gate and down the fallback ladder, the document split, earlier checkpoints taken up.

use super::admission::Refusal;
use super::batch::Batch;
use super::choose::Choice;
use super::jobrun::{chunk_texts, JobRun};
use super::ladder::Ladder;
use super::record::Stop;
use super::Worker;
use crate::engine::{EngineError, Shape};
use crate::job::Job;
use crate::queue::StoreError;

impl Worker {
    /// The next ready job: any, if the batch is empty, else one for the model the batch runs
    /// on (which may be a fallback of its jobs' own model).
    ///
    /// Suspects — jobs in flight when the worker crashed (see [`crate::crash`]) — run alone:
    /// one that is ready is claimed first, into an empty batch at B = 1, and nothing joins it;
    /// they never join another batch.
    pub(super) fn claim(&mut self, b: &mut Batch) -> Result<Option<Job>, StoreError> {
        let (now, lease) = ((self.now)(), self.lease_ms());
        if b.alone {
            return Ok(None);
        }
        let suspects = self.store.suspects()?;
        if b.is_empty() {
            for &id in &suspects {
                if let Some(job) = self.store.claim_job(id, now, lease)? {
                    tracing::warn!(job = %id, "a suspect of a crash: running it alone");
                    b.alone = true;
                    return Ok(Some(job));
                }
            }
        }
        let running = if b.is_empty() {
            None
        } else {
            self.engine.loaded().cloned()
        };
        let picks = match running {
            Some(_) => Some(self.auto_picks(b)?),
            None => None,
        };
        let scan = match running {
            Some(_) => self.settings.claim_scan,
            None => usize::MAX,
        };
        self.store.claim_matching(now, lease, scan, &|job| {
            if suspects.contains(&job.id) {
                return false;
            }
            let (Some(model), Some(picks)) = (&running, &picks) else {
                return true;
            };
            match job.spec.auto {
                Some(q) => picks.get(&q) == Some(&model.path),
                None => job.spec.model == *model,
            }
        })
    }

    /// Load the job's model (down the fallback ladder if it does not fit), split its document,
    /// and add it to the batch. A `--model auto` job gets its model chosen first.
    pub(super) fn prepare(&mut self, b: &mut Batch, mut job: Job) -> Result<(), StoreError> {
        let (now, lease) = ((self.now)(), self.lease_ms());
        let id = job.id;
        tracing::info!(job = %id, custom_id = %crate::job::printable(&job.spec.custom_id), "running");
        let fresh = b.is_empty();
        if fresh {
            // A new batch starts at the configured size (the adaptive one: the model's
            // controller's B, below; a suspect's: 1); the ladder shrinks it if need be.
            b.n_seq = if b.alone {
                1
            } else {
                self.settings.parallel.max(1)
            };
            b.n_ctx = self.settings.n_ctx;
            // A growth asked for while the last batch drained: the controller's B has it.
            b.adaptive.grow_to = None;
            // Readings start over: idle time is not throughput, and the first interval warms up.
            b.adaptive.read = None;
            b.adaptive.warmup = true;
        }
        let mut choice = None;
        if let Some(quality) = job.spec.auto {
            let shape = crate::engine::Shape {
                n_ctx: b.n_ctx,
                n_seq: b.n_seq,
            };
            match self.choose_model(quality, shape)? {
                None => return self.fail_claimed(job, Stop::Engine(EngineError::NoModels)),
                Some(Choice::Wait {
                    smallest_need,
                    free,
                }) => {
                    let e = Refusal::Wait {
                        need: smallest_need,
                        free,
                    };
                    return self.wait_for_memory(b, id, "auto", now, &e.into());
                }
                Some(Choice::Run {
                    model,
                    smaller,
                    reason,
                }) => {
                    tracing::info!(job = %id, "{reason}");
                    job.spec.model = model;
                    job.spec.fallback = smaller;
                    choice = Some(reason);
                }
            }
        }
        if fresh && !b.alone {
            if let Some(start) = self.adaptive_start(b, &job.spec.model) {
                b.n_seq = start;
            }
        }
        let (model, info) = match self.load_with_fallback(b, &job) {
            Ok(loaded) => loaded,
            Err(Ladder::Fail(e)) => return self.fail_claimed(job, e.into()),
            Err(Ladder::Wait(e)) => {
                let name = job.spec.model.name.clone();
                return self.wait_for_memory(b, id, &name, now, &e);
            }
        };
        self.status.lock().unwrap().memory_wait = None;
        if let (true, Some(c)) = (fresh, b.adaptive.controllers.get_mut(&model.path)) {
            // The ladder may have shrunk B: the controller goes on from what loaded.
            c.settle(info.n_seq);
        }
        if model != job.spec.model {
            let fell = format!(
                "fallback: {} did not fit in memory, ran on {}",
                job.spec.model.name, model.name
            );
            choice = Some(match choice {
                Some(c) => format!("{c}; {fell}"),
                None => fell,
            });
        }
        if let Some(record) = &info.memory {
            self.store.record_memory(&model.path, record)?;
        }
        let text = match self.store.document(id) {
            Ok(text) => text,
            // A document damaged or gone: this job cannot run (dead at once), the others can;
            // one that could not be read now fails and is retried later.
            Err(e @ StoreError::DamagedDocument { .. }) => {
                let e = EngineError::DamagedJob(e.to_string());
                return self.fail_claimed(job, Stop::Engine(e));
            }
            Err(e @ StoreError::UnreadableDocument { .. }) => {
                return self.fail_claimed(job, Stop::Unreadable(e.to_string()));
            }
            Err(e) => return Err(e),
        };
        let chunks = match chunk_texts(
            self.engine.as_mut(),
            &job,
            &info,
            self.settings.margin,
            &text,
        ) {
            Ok(c) => c,
            Err(e) => return self.fail_claimed(job, Stop::Engine(e)),
        };
        let total = chunks.len() as u32;
        self.store.set_plan(id, total, now, lease)?;
        let mut done = self.store.checkpoints(id)?;
        let other_plan = done
            .values()
            .any(|c| c.n_ctx != info.n_ctx || c.chunks_total != total);
        let other_model = done
            .values()
            .any(|c| !c.model.is_empty() && c.model != model.path);
        if other_plan || other_model {
            // Checkpoints of another plan (the worker's context size changed) do not line up
            // with these chunks; another model's answers must not be mixed with this one's.
            self.store.discard_checkpoints(
                id,
                now,
                if other_model {
                    "the checkpoints are another model's; starting over"
                } else {
                    "the chunk plan changed (another context size); starting over"
                },
            )?;
            done.clear();
        }
        let mut run = JobRun::new(job, model, info, self.settings.margin, now, chunks, done);
        run.choice = choice;
        b.runs.push(run);
        Ok(())
    }

    /// `--model auto`: the registered models as candidates, with what each would add now,
    /// and the memory free beyond the reserve (see [`super::choose`]). No candidates when
    /// nothing is registered.
    pub(super) fn auto_candidates(
        &mut self,
        shape: Shape,
    ) -> Result<(Vec<super::choose::Candidate>, u64), StoreError> {
        let candidates = self
            .store
            .models()?
            .into_iter()
            .map(|m| {
                let model = crate::job::ModelRef {
                    name: m.name,
                    path: m.path,
                    template: m.template,
                };
                super::choose::Candidate {
                    need: self.need_now(&model, shape),
                    model,
                    parameters: m.parameters,
                    file_bytes: m.file_bytes,
                }
            })
            .collect();
        let free = self.budget.free(&self.probe.sample((self.now)()));
        Ok((candidates, free))
    }

    /// `--model auto`: the registered model to run on now. `None` when nothing is registered.
    pub(super) fn choose_model(
        &mut self,
        quality: crate::job::Quality,
        shape: Shape,
    ) -> Result<Option<super::choose::Choice>, StoreError> {
        let (candidates, free) = self.auto_candidates(shape)?;
        if candidates.is_empty() {
            return Ok(None);
        }
        Ok(Some(super::choose::choose(&candidates, free, quality)))
    }

    /// While a batch runs: the path each `--model auto` quality would pick now, so that such
    /// jobs join the batch when they would pick its model. Worked out at most every 10 s
    /// (it reads every registered model's figures).
    pub(super) fn auto_picks(
        &mut self,
        b: &mut Batch,
    ) -> Result<std::collections::HashMap<crate::job::Quality, String>, StoreError> {
        use crate::job::Quality;
        if let Some((at, picks)) = &b.auto_picks {
            if at.elapsed() < std::time::Duration::from_secs(10) {
                return Ok(picks.clone());
            }
        }
        let shape = Shape {
            n_ctx: b.n_ctx,
            n_seq: b.n_seq,
        };
        let (candidates, free) = self.auto_candidates(shape)?;
        let mut picks = std::collections::HashMap::new();
        if !candidates.is_empty() {
            for q in [Quality::Low, Quality::Medium, Quality::High] {
                if let super::choose::Choice::Run { model, .. } =
                    super::choose::choose(&candidates, free, q)
                {
                    picks.insert(q, model.path);
                }
            }
        }
        b.auto_picks = Some((std::time::Instant::now(), picks.clone()));
        Ok(picks)
    }
}
