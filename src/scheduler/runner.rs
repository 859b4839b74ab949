//! Running one claimed job through an engine: split the document into chunks, run each chunk
//! not yet checkpointed, checkpoint it, then merge or reduce the chunk outputs.

use std::time::{Duration, Instant};

use crate::engine::chunking::{self, chunk_budget, plan};
use crate::engine::templates::{reduce_messages, split_reasoning, task_messages, with_thinking};
use crate::engine::{Control, Engine, EngineError, Interrupt, ModelInfo, Sampling};
use crate::job::{
    ChatMessage, ChunkOutput, Job, JobResult, JobState, MergeKind, Millis, Task, Usage,
};
use crate::queue::{Store, StoreError};

/// Settings of a run that come from the configuration, not from the job.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Context size asked of the engine (capped at the model's training context).
    pub n_ctx: u32,
    /// Longest a single chunk (or reduce step) may take.
    pub chunk_timeout: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Tokens kept free in the context beside prompt and answer (tokenization of a chunk's
    /// text can differ slightly from the count of its window).
    pub margin: u32,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            n_ctx: 4096,
            chunk_timeout: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            margin: 32,
        }
    }
}

/// Why a run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    pub fn interrupt(&self) -> Option<Interrupt> {
        match self {
            RunError::Engine(EngineError::Interrupted(i)) => Some(*i),
            _ => None,
        }
    }
}

/// What the runner needs from the worker around it.
pub struct RunEnv<'a> {
    pub store: &'a Store,
    pub settings: &'a RunSettings,
    /// Wall clock, in milliseconds since the epoch.
    pub now: &'a dyn Fn() -> Millis,
    /// Asked often during generation: `Some` stops the run (shutdown, cancel).
    pub stop: &'a dyn Fn() -> Option<Interrupt>,
    /// Told the job's progress (chunks done, total) for `status`.
    pub progress: &'a dyn Fn(u32, u32),
}

/// A seed for a chunk: the job's own, or one derived from job id and chunk, so that a resumed
/// or retried job samples exactly as it would have.
fn seed_for(job: &Job, chunk: u32) -> u32 {
    job.spec.params.seed.unwrap_or_else(|| {
        let x = job.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (chunk as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (x ^ (x >> 31)) as u32
    })
}

fn sampling(job: &Job, chunk: u32) -> Sampling {
    let p = &job.spec.params;
    Sampling {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        min_p: p.min_p,
        seed: seed_for(job, chunk),
    }
}

struct Runner<'a, 'e> {
    env: &'a RunEnv<'a>,
    engine: &'e mut dyn Engine,
    job: &'a Job,
    info: ModelInfo,
    /// Chunks in the plan (0 until the document is split).
    planned: u32,
    usage: Usage,
    generation_millis: u64,
}

impl Runner<'_, '_> {
    fn prompt(&mut self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let rendered = self.engine.render(messages)?;
        Ok(with_thinking(
            rendered,
            self.job.spec.params.thinking,
            self.info.thinking_template,
        ))
    }

    /// Generate from messages with the job's settings, under the chunk time limit, with
    /// heartbeats.
    fn generate(&mut self, messages: &[ChatMessage], chunk: u32) -> Result<ChunkOutput, RunError> {
        let prompt = self.prompt(messages)?;
        let started = Instant::now();
        let env = self.env;
        let id = self.job.id;
        let mut last_beat = Instant::now();
        let mut control = || {
            if let Some(why) = (env.stop)() {
                return Control::Stop(why);
            }
            if started.elapsed() > env.settings.chunk_timeout {
                return Control::Stop(Interrupt::Timeout);
            }
            if last_beat.elapsed() > env.settings.lease / 4 {
                last_beat = Instant::now();
                let lease_ms = env.settings.lease.as_millis() as u64;
                if let Err(e) = env.store.heartbeat(id, (env.now)(), lease_ms) {
                    tracing::warn!(job = %id, "heartbeat failed: {e}");
                }
            }
            Control::Continue
        };
        let generation =
            match self
                .engine
                .generate(&prompt, &sampling(self.job, chunk), &mut control)
            {
                Err(EngineError::Interrupted(Interrupt::Timeout)) => {
                    return Err(EngineError::Decode(format!(
                        "chunk {} ran past its time limit of {} s",
                        chunk + 1,
                        env.settings.chunk_timeout.as_secs()
                    ))
                    .into())
                }
                other => other?,
            };
        let (reasoning, text) = split_reasoning(&generation.text);
        let usage = Usage {
            prompt_tokens: generation.prompt_tokens as u64,
            completion_tokens: generation.completion_tokens as u64,
        };
        self.usage += usage;
        self.generation_millis += generation.millis;
        Ok(ChunkOutput {
            text,
            reasoning,
            usage,
            millis: generation.millis,
            n_ctx: self.info.n_ctx,
            chunks_total: self.planned,
        })
    }

    /// Token windows of the document, as texts. A document that fits is one chunk, as is.
    fn chunk_texts(&mut self, text: &str) -> Result<Vec<String>, RunError> {
        let spec = &self.job.spec;
        if matches!(spec.task, Task::Chat { .. }) {
            return Ok(vec![text.to_string()]);
        }
        let empty = task_messages(&spec.task, spec.system.as_deref(), "");
        let overhead_prompt = self.prompt(&empty)?;
        let overhead = self.engine.prompt_tokens(&overhead_prompt)?;
        let Some(budget) = chunk_budget(
            self.info.n_ctx,
            overhead,
            spec.params.max_tokens,
            self.env.settings.margin,
        ) else {
            return Err(EngineError::ContextTooSmall {
                need: overhead + spec.params.max_tokens + self.env.settings.margin + 32,
                have: self.info.n_ctx,
            }
            .into());
        };
        let tokens = self.engine.tokenize(text)?;
        let ranges = plan(tokens.len(), budget, chunking::default_overlap(budget));
        if ranges.len() == 1 {
            return Ok(vec![text.to_string()]);
        }
        ranges
            .into_iter()
            .map(|r| Ok(self.engine.detokenize(&tokens[r])?))
            .collect()
    }

    /// Combine chunk answers with reduce prompts, in rounds when they do not fit in one.
    fn reduce(
        &mut self,
        mut parts: Vec<String>,
        first_chunk_no: u32,
    ) -> Result<ChunkOutput, RunError> {
        let spec = &self.job.spec;
        let (task, system) = (spec.task.clone(), spec.system.clone());
        let max_tokens = spec.params.max_tokens;
        let mut step = first_chunk_no;
        loop {
            let messages = reduce_messages(&task, system.as_deref(), &parts);
            let prompt = self.prompt(&messages)?;
            let need = self.engine.prompt_tokens(&prompt)? + max_tokens + self.env.settings.margin;
            if need <= self.info.n_ctx || parts.len() == 1 {
                return self.generate(&messages, step);
            }
            // Too long for one prompt: reduce consecutive groups that fit, then again.
            let sizes = parts
                .iter()
                .map(|p| Ok(self.engine.tokenize(p)?.len() + 8))
                .collect::<Result<Vec<_>, EngineError>>()?;
            let budget = chunk_budget(self.info.n_ctx, 64, max_tokens, self.env.settings.margin)
                .unwrap_or(64);
            let groups = chunking::groups_within(&sizes, budget);
            let mut next = Vec::with_capacity(groups.len());
            for g in groups {
                if g.len() == 1 {
                    // One part alone too big for a reduce: keep its head.
                    let tokens = self.engine.tokenize(&parts[g.start])?;
                    let keep = tokens.len().min(budget);
                    next.push(self.engine.detokenize(&tokens[..keep])?);
                    continue;
                }
                step += 1;
                let messages = reduce_messages(&task, system.as_deref(), &parts[g]);
                next.push(self.generate(&messages, step)?.text);
            }
            parts = next;
        }
    }
}

/// Run `job` (already claimed: Running) to its result. Finished chunks are checkpointed as
/// they end; chunks checkpointed by an earlier attempt are not run again.
pub fn run_job(env: &RunEnv, engine: &mut dyn Engine, job: &Job) -> Result<JobResult, RunError> {
    let started = (env.now)();
    let lease_ms = env.settings.lease.as_millis() as u64;
    let info = engine.load(&job.spec.model, env.settings.n_ctx)?;
    let mut runner = Runner {
        env,
        engine,
        job,
        info: info.clone(),
        planned: 0,
        usage: Usage::default(),
        generation_millis: 0,
    };
    let text = env.store.document(job.id)?;
    let chunks = runner.chunk_texts(&text)?;
    let total = chunks.len() as u32;
    runner.planned = total;
    env.store.set_plan(job.id, total, (env.now)(), lease_ms)?;
    let mut done = env.store.checkpoints(job.id)?;
    if done
        .values()
        .any(|c| c.n_ctx != info.n_ctx || c.chunks_total != total)
    {
        // Checkpoints of another plan (the worker's context size changed): their chunks do
        // not line up with these, so start the document over.
        env.store.discard_checkpoints(
            job.id,
            (env.now)(),
            "the chunk plan changed (another context size); starting over",
        )?;
        done.clear();
    }
    (env.progress)(done.len() as u32, total);
    let spec = &job.spec;
    for (i, chunk_text) in chunks.iter().enumerate() {
        let i = i as u32;
        if done.contains_key(&i) {
            continue;
        }
        let messages = task_messages(&spec.task, spec.system.as_deref(), chunk_text);
        let output = runner.generate(&messages, i)?;
        env.store
            .save_checkpoint(job.id, i, &output, (env.now)(), lease_ms)?;
        done.insert(i, output);
        (env.progress)(done.len() as u32, total);
    }
    // Usage of chunks run by earlier attempts counts too: the result describes the whole job.
    let mut usage = Usage::default();
    for c in done.values() {
        usage += c.usage;
    }
    let answers: Vec<String> = done.values().map(|c| c.text.clone()).collect();
    let reasonings: Vec<String> = done.values().filter_map(|c| c.reasoning.clone()).collect();
    let (answer, reasoning, reduced) = if total == 1 {
        (answers[0].clone(), reasonings.first().cloned(), false)
    } else {
        match spec.task.merge_kind() {
            MergeKind::Reduce => {
                let before = runner.usage;
                let out = runner.reduce(answers, total)?;
                let mut extra = runner.usage;
                extra.prompt_tokens -= before.prompt_tokens;
                extra.completion_tokens -= before.completion_tokens;
                usage += extra;
                (out.text, out.reasoning, true)
            }
            MergeKind::UnionLines => (chunking::merge_union_lines(&answers), None, false),
            MergeKind::Vote => {
                let labels = match &spec.task {
                    Task::Classify { labels } => labels.clone(),
                    _ => Vec::new(),
                };
                (chunking::merge_vote(&answers, &labels), None, false)
            }
            MergeKind::MergeJson => {
                let fields = match &spec.task {
                    Task::Extract { fields } => fields.clone(),
                    _ => Vec::new(),
                };
                (chunking::merge_json(&answers, &fields), None, false)
            }
        }
    };
    let reasoning = reasoning.or_else(|| (!reasonings.is_empty()).then(|| reasonings.join("\n\n")));
    let attempts = match job.state {
        JobState::Running { attempt, .. } => attempt,
        _ => job.attempts + 1,
    };
    Ok(JobResult {
        answer,
        reasoning,
        usage,
        model: spec.model.clone(),
        n_ctx: info.n_ctx,
        chunks: total,
        reduced,
        started,
        finished: (env.now)(),
        generation_millis: runner.generation_millis,
        attempts,
    })
}
