//! One claimed job in the batch: its chunk plan, which steps are done, decoding or still to
//! start, and how the chunk answers become the result (merge, or reduce prompts in rounds).
//!
//! A *step* is one generation: steps `0..total` are the document's chunks (checkpointed as
//! they end), later steps are reduce prompts (not checkpointed: they are cheap next to the map,
//! and a resumed job reduces again from its checkpoints). Several steps of one job may decode
//! at once, beside steps of other jobs. No store and no llama types here: the worker loop does
//! the writes; the engine is used only for its text operations (render, tokenize).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::engine::chunking::{self, chunk_budget, plan};
use crate::engine::templates::{reduce_messages, split_reasoning, task_messages, with_thinking};
use crate::engine::{Engine, EngineError, Generation, ModelInfo, Sampling};
use crate::job::{
    ChatMessage, ChunkOutput, Constraint, Job, JobResult, JobState, MergeKind, Millis, ModelRef,
    Task, Usage,
};

/// A generation to start.
#[derive(Debug, Clone)]
pub struct Work {
    pub step: u32,
    pub prompt: crate::engine::Prompt,
    pub sampling: Sampling,
    pub grammar: Option<Constraint>,
}

/// What a job wants next.
#[derive(Debug)]
pub enum Next {
    /// A step to start.
    Work(Work),
    /// Nothing to start until a step in flight ends.
    Busy,
    /// Everything ran: the result.
    Done(Box<JobResult>),
}

/// What an ended step gave.
#[derive(Debug)]
pub enum Ended {
    /// A chunk of the document: checkpoint it.
    Chunk(u32, ChunkOutput),
    /// A reduce step: nothing to store.
    Reduce,
}

/// A part of a reduce round: an answer at hand, or the step that will give it.
#[derive(Debug)]
enum Part {
    Text(String),
    Pending(u32),
}

/// A round of reduce prompts.
#[derive(Debug)]
struct Round {
    parts: Vec<Part>,
    /// Steps of this round not yet started.
    queue: VecDeque<(u32, Vec<ChatMessage>)>,
    /// The step whose answer is the job's answer (the round is the last).
    last: Option<u32>,
}

/// One job in the batch. See the module docs.
pub struct JobRun {
    pub job: Job,
    /// The model that runs the job: its own, or a fallback.
    model: ModelRef,
    /// Why that model (an `auto` pick, a fallback), for the result.
    pub choice: Option<String>,
    /// The model as loaded for this job (context per sequence, template facts).
    info: ModelInfo,
    /// Tokens kept free in the context beside prompt and answer.
    margin: u32,
    /// When this attempt began (the result's `started`).
    claimed_at: Millis,
    /// The document's chunks as texts.
    chunks: Vec<String>,
    pub total: u32,
    /// Finished chunks: checkpoints of earlier attempts and of this one.
    pub done: BTreeMap<u32, ChunkOutput>,
    /// Steps to start, first come first: chunks not done, and steps dropped by a failed batch.
    todo: VecDeque<Work>,
    /// Steps decoding now: what was started (to start it again if the batch fails) and when
    /// (the chunk time limit).
    in_flight: BTreeMap<u32, (Work, Instant)>,
    reduce: Option<Round>,
    /// The next reduce step's number (steps after the chunks).
    next_step: u32,
    /// The last reduce step's output.
    reduced: Option<ChunkOutput>,
    /// Usage of the reduce steps (chunk usage is in the checkpoints).
    reduce_usage: Usage,
    /// Prompt tokens of reduce rounds whose cells were reused.
    reduce_cached: u64,
    /// Generation time of the steps this attempt ran.
    generation_millis: u64,
}

/// A seed for a step: the job's own, or one derived from job id and step, so that a resumed or
/// retried job samples exactly as it would have.
pub fn seed_for(job: &Job, step: u32) -> u32 {
    job.spec.params.seed.unwrap_or_else(|| {
        let x = job.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (step as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (x ^ (x >> 31)) as u32
    })
}

fn sampling(job: &Job, step: u32) -> Sampling {
    let p = &job.spec.params;
    Sampling {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        min_p: p.min_p,
        seed: seed_for(job, step),
    }
}

fn render(
    engine: &mut dyn Engine,
    job: &Job,
    info: &ModelInfo,
    messages: &[ChatMessage],
) -> Result<crate::engine::Prompt, EngineError> {
    let rendered = engine.render(messages)?;
    Ok(with_thinking(
        rendered,
        job.spec.params.thinking,
        info.thinking_template,
    ))
}

/// The document's chunks as texts: token windows that leave room for the task's prompt and the
/// answer. A document that fits is one chunk, as is; a chat is never split.
pub fn chunk_texts(
    engine: &mut dyn Engine,
    job: &Job,
    info: &ModelInfo,
    margin: u32,
    text: &str,
) -> Result<Vec<String>, EngineError> {
    let spec = &job.spec;
    if let Task::Chat { turns } = &spec.task {
        crate::job::chat_messages(turns, text).map_err(EngineError::DamagedJob)?;
        return Ok(vec![text.to_string()]);
    }
    let empty = task_messages(&spec.task, spec.system.as_deref(), "");
    let overhead_prompt = render(engine, job, info, &empty)?;
    let overhead = engine.prompt_tokens(&overhead_prompt)?;
    let Some(budget) = chunk_budget(info.n_ctx, overhead, spec.params.max_tokens, margin) else {
        return Err(EngineError::ContextTooSmall {
            need: overhead + spec.params.max_tokens + margin + 32,
            have: info.n_ctx,
        });
    };
    let tokens = engine.tokenize(text)?;
    let ranges = plan(tokens.len(), budget, chunking::default_overlap(budget));
    if ranges.len() == 1 {
        return Ok(vec![text.to_string()]);
    }
    ranges
        .into_iter()
        .map(|r| engine.detokenize(&tokens[r]))
        .collect()
}

impl JobRun {
    /// A job whose document is split into `chunks`, with `done` the checkpoints that belong
    /// to this plan.
    pub fn new(
        job: Job,
        model: ModelRef,
        info: ModelInfo,
        margin: u32,
        claimed_at: Millis,
        chunks: Vec<String>,
        done: BTreeMap<u32, ChunkOutput>,
    ) -> Self {
        let total = chunks.len() as u32;
        JobRun {
            job,
            model,
            choice: None,
            info,
            margin,
            claimed_at,
            chunks,
            total,
            done,
            todo: VecDeque::new(),
            in_flight: BTreeMap::new(),
            reduce: None,
            next_step: total,
            reduced: None,
            reduce_usage: Usage::default(),
            reduce_cached: 0,
            generation_millis: 0,
        }
    }

    /// Steps decoding now.
    pub fn in_flight(&self) -> impl Iterator<Item = (u32, Instant)> + '_ {
        self.in_flight.iter().map(|(&s, (_, at))| (s, *at))
    }

    fn work(
        &self,
        engine: &mut dyn Engine,
        step: u32,
        messages: &[ChatMessage],
    ) -> Result<Work, EngineError> {
        Ok(Work {
            step,
            prompt: render(engine, &self.job, &self.info, messages)?,
            sampling: sampling(&self.job, step),
            grammar: self.job.spec.constraint.clone(),
        })
    }

    /// The next thing this job wants. A returned [`Next::Work`] counts as started: tell
    /// [`JobRun::ended`] or [`JobRun::dropped`] what became of it.
    pub fn next(&mut self, engine: &mut dyn Engine) -> Result<Next, EngineError> {
        let work = match self.todo.pop_front() {
            Some(w) => Some(w),
            None => self.next_chunk(engine)?,
        };
        let work = match work {
            Some(w) => Some(w),
            None if self.in_flight.is_empty() && self.done.len() as u32 == self.total => {
                self.next_merge(engine)?
            }
            None => None,
        };
        if let Some(w) = work {
            self.in_flight.insert(w.step, (w.clone(), Instant::now()));
            return Ok(Next::Work(w));
        }
        match self.try_finish() {
            Some(Ok(result)) => Ok(Next::Done(result)),
            Some(Err(e)) => Err(e),
            None => Ok(Next::Busy),
        }
    }

    /// The result, if every step ran; an error if the answer breaks the job's JSON schema.
    pub fn try_finish(&self) -> Option<Result<Box<JobResult>, EngineError>> {
        let all_ran = self.in_flight.is_empty()
            && self.todo.is_empty()
            && self.done.len() as u32 == self.total;
        let mut result = all_ran.then(|| self.result()).flatten()?;
        if let Some(Constraint::JsonSchema(_)) = &self.job.spec.constraint {
            match serde_json::from_str::<serde_json::Value>(result.answer.trim()) {
                Ok(v) => result.json = Some(v.to_string()),
                Err(e) => {
                    return Some(Err(EngineError::BadOutput(format!(
                        "the answer is not complete JSON ({e}); a larger --max-tokens may help"
                    ))))
                }
            }
        }
        Some(Ok(Box::new(result)))
    }

    /// How chunk answers combine. A constrained job reduces (its reduce prompt follows the
    /// same grammar) unless it extracts fields, which merge as JSON.
    fn merge_kind(&self) -> MergeKind {
        match (self.job.spec.task.merge_kind(), &self.job.spec.constraint) {
            (MergeKind::MergeJson, _) | (_, None) => self.job.spec.task.merge_kind(),
            (_, Some(_)) => MergeKind::Reduce,
        }
    }

    /// The first chunk neither done nor decoding.
    fn next_chunk(&mut self, engine: &mut dyn Engine) -> Result<Option<Work>, EngineError> {
        let Some(i) =
            (0..self.total).find(|i| !self.done.contains_key(i) && !self.in_flight.contains_key(i))
        else {
            return Ok(None);
        };
        let spec = &self.job.spec;
        let messages = task_messages(&spec.task, spec.system.as_deref(), &self.chunks[i as usize]);
        Ok(Some(self.work(engine, i, &messages)?))
    }

    /// With every chunk done: the next reduce step, if the task reduces.
    fn next_merge(&mut self, engine: &mut dyn Engine) -> Result<Option<Work>, EngineError> {
        if self.total == 1 || self.merge_kind() != MergeKind::Reduce {
            return Ok(None);
        }
        if self.reduce.is_none() && self.reduced.is_none() {
            let answers: Vec<String> = self.done.values().map(|c| c.text.clone()).collect();
            self.reduce = Some(self.round(engine, answers)?);
        }
        let Some(round) = self.reduce.as_mut() else {
            return Ok(None);
        };
        let Some((step, messages)) = round.queue.pop_front() else {
            return Ok(None);
        };
        Ok(Some(self.work(engine, step, &messages)?))
    }

    /// Plan a reduce round over `parts`: one prompt if they fit (the last round), else prompts
    /// over consecutive groups that fit.
    fn round(&mut self, engine: &mut dyn Engine, parts: Vec<String>) -> Result<Round, EngineError> {
        let spec = &self.job.spec;
        let max_tokens = spec.params.max_tokens;
        let messages = reduce_messages(&spec.task, spec.system.as_deref(), &parts);
        let prompt = render(engine, &self.job, &self.info, &messages)?;
        let need = engine.prompt_tokens(&prompt)? + max_tokens + self.margin;
        if need <= self.info.n_ctx || parts.len() == 1 {
            let step = self.take_step();
            return Ok(Round {
                parts: vec![Part::Pending(step)],
                queue: VecDeque::from([(step, messages)]),
                last: Some(step),
            });
        }
        // Each part costs its tokens plus its "Part N:" heading; the prompt around the parts
        // is measured, not guessed.
        let sizes = parts
            .iter()
            .map(|p| Ok(engine.tokenize(p)?.len() + 12))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let empty = reduce_messages(&spec.task, spec.system.as_deref(), &[]);
        let empty_prompt = render(engine, &self.job, &self.info, &empty)?;
        let overhead = engine.prompt_tokens(&empty_prompt)?;
        let budget = chunk_budget(self.info.n_ctx, overhead, max_tokens, self.margin).unwrap_or(64);
        let mut round = Round {
            parts: Vec::new(),
            queue: VecDeque::new(),
            last: None,
        };
        for g in chunking::groups_within(&sizes, budget) {
            if g.len() == 1 {
                // One part alone too big for a reduce: keep its head, short enough that two
                // such heads share the next round's prompt (so rounds always make progress).
                let tokens = engine.tokenize(&parts[g.start])?;
                let keep = tokens.len().min((budget / 2).saturating_sub(16).max(1));
                round
                    .parts
                    .push(Part::Text(engine.detokenize(&tokens[..keep])?));
                continue;
            }
            let step = self.take_step();
            let spec = &self.job.spec;
            let messages = reduce_messages(&spec.task, spec.system.as_deref(), &parts[g]);
            round.parts.push(Part::Pending(step));
            round.queue.push_back((step, messages));
        }
        if round.queue.is_empty() {
            // Every part was cut alone: reduce the cut parts.
            let parts = round
                .parts
                .into_iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    Part::Pending(_) => None,
                })
                .collect();
            return self.round(engine, parts);
        }
        Ok(round)
    }

    fn take_step(&mut self) -> u32 {
        self.next_step += 1;
        self.next_step
    }

    /// A step ended with `generation`.
    pub fn ended(
        &mut self,
        engine: &mut dyn Engine,
        step: u32,
        generation: Generation,
    ) -> Result<Ended, EngineError> {
        self.in_flight.remove(&step);
        let (reasoning, text) = split_reasoning(&generation.text);
        let usage = Usage {
            prompt_tokens: generation.prompt_tokens as u64,
            completion_tokens: generation.completion_tokens as u64,
        };
        self.generation_millis += generation.millis;
        let output = ChunkOutput {
            text,
            reasoning,
            usage,
            millis: generation.millis,
            n_ctx: self.info.n_ctx,
            chunks_total: self.total,
            model: self.model.path.clone(),
            cached_tokens: generation.cached_tokens as u64,
        };
        if step < self.total {
            self.done.insert(step, output.clone());
            return Ok(Ended::Chunk(step, output));
        }
        self.reduce_usage += usage;
        self.reduce_cached += output.cached_tokens;
        let Some(round) = self.reduce.as_mut() else {
            return Ok(Ended::Reduce);
        };
        if round.last == Some(step) {
            self.reduce = None;
            self.reduced = Some(output);
            return Ok(Ended::Reduce);
        }
        for p in &mut round.parts {
            if matches!(p, Part::Pending(s) if *s == step) {
                *p = Part::Text(output.text.clone());
            }
        }
        if round.parts.iter().all(|p| matches!(p, Part::Text(_))) {
            let parts = std::mem::take(&mut round.parts)
                .into_iter()
                .map(|p| match p {
                    Part::Text(t) => t,
                    Part::Pending(_) => unreachable!("all parts are texts"),
                })
                .collect();
            self.reduce = Some(self.round(engine, parts)?);
        }
        Ok(Ended::Reduce)
    }

    /// A step in flight was dropped (its batch failed): start it again later.
    pub fn dropped(&mut self, step: u32) {
        if let Some((work, _)) = self.in_flight.remove(&step) {
            self.todo.push_back(work);
        }
    }

    /// The batch now decodes `n_seq` sequences together (the result reports the B it finished
    /// at).
    pub fn set_n_seq(&mut self, n_seq: u32) {
        self.info.n_seq = n_seq;
    }

    /// Every step in flight was dropped.
    pub fn drop_all(&mut self) {
        let steps: Vec<u32> = self.in_flight.keys().copied().collect();
        for s in steps {
            self.dropped(s);
        }
    }

    /// The result, once every step ran.
    fn result(&self) -> Option<JobResult> {
        let spec = &self.job.spec;
        // Usage of chunks run by earlier attempts counts too: the result describes the job.
        let mut usage = Usage::default();
        for c in self.done.values() {
            usage += c.usage;
        }
        let answers: Vec<String> = self.done.values().map(|c| c.text.clone()).collect();
        let reasonings: Vec<String> = self
            .done
            .values()
            .filter_map(|c| c.reasoning.clone())
            .collect();
        let (answer, reasoning, reduced) = if self.total == 1 {
            (answers[0].clone(), reasonings.first().cloned(), false)
        } else {
            match self.merge_kind() {
                MergeKind::Reduce => {
                    let out = self.reduced.as_ref()?;
                    (out.text.clone(), out.reasoning.clone(), true)
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
        usage += self.reduce_usage;
        let reasoning =
            reasoning.or_else(|| (!reasonings.is_empty()).then(|| reasonings.join("\n\n")));
        let attempts = match self.job.state {
            JobState::Running { attempt, .. } => attempt,
            _ => self.job.attempts + 1,
        };
        Some(JobResult {
            answer,
            reasoning,
            usage,
            model: self.model.clone(),
            n_ctx: self.info.n_ctx,
            chunks: self.total,
            reduced,
            started: self.claimed_at,
            finished: 0, // the worker stamps it when it records the result
            generation_millis: self.generation_millis,
            attempts,
            n_seq: self.info.n_seq,
            json: None,
            choice: self.choice.clone(),
            provenance: Some(self.info.provenance.clone()),
            cached_tokens: self.done.values().map(|c| c.cached_tokens).sum::<u64>()
                + self.reduce_cached,
        })
    }
}
