//! A deterministic engine for fast unit tests of the code around inference. One character is
//! one token; the "model" answers with a digest of its prompt. Never used by the binary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::{LoadedModel, ModelCache};
use super::lru::Limits;
use super::{
    Decoder, EngineError, FinishReason, Generation, ModelInfo, Piece, Prompt, Residency, SeqDone,
    SeqRequest, Shape, Text,
};
use crate::job::{ChatMessage, Kernels, Millis, ModelRef, Provenance};

/// See the module docs. Fields are knobs a test sets.
pub struct FakeEngine {
    /// The context size every model gets.
    pub n_ctx: u32,
    /// Prompts containing this text fail to decode.
    pub fail_on: Option<String>,
    /// Time per generated token, to make interruptions observable.
    pub token_delay: Duration,
    /// What the engine saw, shared so a test can read it after the worker took the engine.
    pub log: Arc<Mutex<FakeLog>>,
    /// Fail the next step as if the KV cache were full, this many times.
    pub fail_steps: u32,
    /// Fail this many loads of a model not loaded yet, as if memory were short.
    pub fail_loads: u32,
    /// Contexts of more sequences than this fail, as if memory were short.
    pub max_seqs_that_fit: Option<u32>,
    /// Called with the step's number before each step: tests trigger a shutdown or a cancel
    /// at a known point.
    pub on_step: Option<Box<dyn FnMut(u64) + Send>>,
    steps: u64,
    /// Bytes each model (by path) takes; 1 for models not named. With `cache` they drive
    /// the same LRU decisions as the real engine.
    pub model_bytes: HashMap<String, u64>,
    /// Loaded models under the budget.
    pub cache: ModelCache<()>,
    shape: Option<Shape>,
    /// Tokens generated so far.
    generated: u64,
    /// Sequences in flight: tag, the answer, characters produced so far, max tokens, prompt
    /// length, and whether the prompt has been "decoded" yet.
    seqs: Vec<FakeSeq>,
    /// The prompt cap asked (recorded per step; the fake decodes prompts at once anyway).
    prompt_cap: Option<u32>,
    /// Raised (by a test's `on_step`, or a chat submitted meanwhile) during a step that feeds
    /// no urgent prompt, it stops that step: nothing changes, as with llama.cpp's abort.
    interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What a [`FakeEngine`] saw.
#[derive(Debug, Default)]
pub struct FakeLog {
    /// Every prompt started, in order: tests count and inspect them.
    pub prompts: Vec<String>,
    /// The most sequences in flight in one step: tests see batching happen.
    pub max_in_flight: usize,
    /// For each step, the tags in flight: tests see slots reused.
    pub steps: Vec<Vec<u64>>,
    /// Every model load (not counting reuse of a loaded model), by name.
    pub loads: Vec<String>,
    /// Every new context shape, by its number of sequences.
    pub shapes: Vec<u32>,
    /// For each step, the prompt cap it ran under.
    pub prompt_caps: Vec<Option<u32>>,
    /// Steps stopped by the interrupt flag.
    pub stopped: usize,
}

#[derive(Debug)]
struct FakeSeq {
    tag: u64,
    answer: Vec<char>,
    produced: usize,
    max_tokens: usize,
    prompt_tokens: u32,
    prefilled: bool,
    /// A person waits for it: a step that feeds its prompt is not stopped.
    urgent: bool,
    /// Stop strings: the answer ends where one appears.
    stop: Vec<String>,
}

impl FakeSeq {
    fn text(&self) -> String {
        self.answer[..self.produced].iter().collect()
    }
}

impl FakeEngine {
    pub fn new(n_ctx: u32) -> Self {
        Self::with_limits(
            n_ctx,
            Limits {
                budget_bytes: u64::MAX,
                max_models: 2,
                keep_alive_ms: 300_000,
            },
        )
    }

    pub fn with_limits(n_ctx: u32, limits: Limits) -> Self {
        FakeEngine {
            n_ctx,
            fail_on: None,
            token_delay: Duration::ZERO,
            log: Arc::default(),
            fail_steps: 0,
            fail_loads: 0,
            max_seqs_that_fit: None,
            on_step: None,
            steps: 0,
            model_bytes: HashMap::new(),
            cache: ModelCache::new(limits, &[]),
            shape: None,
            generated: 0,
            seqs: Vec::new(),
            prompt_cap: None,
            interrupt: None,
        }
    }
}

impl Residency for FakeEngine {
    fn load(
        &mut self,
        model: &ModelRef,
        shape: Shape,
        now: Millis,
    ) -> Result<ModelInfo, EngineError> {
        if model.path.contains("missing") {
            return Err(EngineError::ModelMissing(model.path.clone()));
        }
        let shape = Shape {
            n_ctx: shape.n_ctx.min(self.n_ctx),
            n_seq: shape.n_seq.max(1),
        };
        if self
            .max_seqs_that_fit
            .is_some_and(|most| shape.n_seq > most)
        {
            return Err(EngineError::ContextFailed { n_ctx: shape.n_ctx });
        }
        if self.fail_loads > 0 && self.cache.current().map(|(r, _)| r) != Some(model) {
            self.fail_loads -= 1;
            return Err(EngineError::LoadFailed {
                path: model.path.clone(),
            });
        }
        let switching = self.cache.current().map(|(r, _)| r) != Some(model);
        if switching || self.shape != Some(shape) {
            self.seqs.clear();
            self.log.lock().unwrap().shapes.push(shape.n_seq);
        }
        let bytes = self.model_bytes.get(&model.path).copied().unwrap_or(1);
        let log = self.log.clone();
        self.cache.make_current(model, bytes, now, || {
            log.lock().unwrap().loads.push(model.name.clone());
            Ok(((), bytes))
        })?;
        self.shape = Some(shape);
        Ok(ModelInfo {
            n_ctx: shape.n_ctx,
            n_seq: shape.n_seq,
            n_ctx_train: self.n_ctx,
            thinking_template: true,
            size_bytes: bytes,
            memory: None,
            provenance: Provenance {
                model: format!("fake:{}", model.path),
                template: "fake".into(),
                kernels: Kernels::BatchInvariant,
                engine: "fake".into(),
            },
        })
    }

    fn unload(&mut self, now: Millis) {
        self.seqs.clear();
        self.cache.clear(now);
    }

    fn loaded(&self) -> Option<&ModelRef> {
        self.cache.current().map(|(r, _)| r)
    }

    fn context(&self) -> Option<Shape> {
        self.cache.current().and(self.shape)
    }

    fn maintain(&mut self, now: Millis) -> Vec<String> {
        if self.seqs.is_empty() {
            self.cache.release_current(now);
        }
        self.cache.expire(now)
    }

    fn free_memory(&mut self, bytes: u64) -> u64 {
        self.cache.free(bytes)
    }

    fn models(&self) -> Vec<LoadedModel> {
        self.cache.loaded()
    }

    fn graph(&self) -> super::memory::Graph {
        super::memory::Graph::default()
    }
}

impl Text for FakeEngine {
    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(text.chars().map(|c| c as u32).collect())
    }

    fn detokenize(&mut self, tokens: &[u32]) -> Result<String, EngineError> {
        Ok(tokens.iter().filter_map(|&t| char::from_u32(t)).collect())
    }

    fn render(&mut self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        let mut out = Prompt::default();
        for m in messages {
            out.push_template(&format!("<{}>", m.role));
            out.pieces.push(Piece::Text(m.content.clone()));
            out.push_template(&format!("</{}>", m.role));
        }
        out.push_template("<assistant>");
        Ok(out)
    }

    fn prompt_tokens(&mut self, prompt: &Prompt) -> Result<u32, EngineError> {
        Ok(prompt.text().chars().count() as u32)
    }
}

impl Decoder for FakeEngine {
    fn start(&mut self, request: SeqRequest) -> Result<(), EngineError> {
        let shape = self
            .shape
            .ok_or_else(|| EngineError::ModelMissing("no model loaded".into()))?;
        if self.seqs.len() >= shape.n_seq as usize {
            return Err(EngineError::NoFreeSlot(shape.n_seq));
        }
        let prompt_tokens = self.prompt_tokens(&request.prompt)?;
        let prompt = &request.prompt.text();
        if prompt_tokens >= shape.n_ctx {
            return Err(EngineError::ContextTooSmall {
                need: prompt_tokens + 1,
                have: shape.n_ctx,
            });
        }
        if let Some(f) = &self.fail_on {
            if prompt.contains(f.as_str()) {
                return Err(EngineError::Decode(format!("fake failure on {f:?}")));
            }
        }
        self.log.lock().unwrap().prompts.push(prompt.clone());
        let digest = prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        self.seqs.push(FakeSeq {
            tag: request.tag,
            // 11 to 23 characters, so that sequences end at different steps.
            answer: format!("answer-{digest:016x}")
                .chars()
                .take(11 + (digest % 13) as usize)
                .collect(),
            produced: 0,
            max_tokens: request.sampling.max_tokens as usize,
            prompt_tokens,
            prefilled: false,
            urgent: request.urgent,
            stop: request.stop,
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Vec<SeqDone>, EngineError> {
        if self.seqs.is_empty() {
            return Ok(Vec::new());
        }
        if self.fail_steps > 0 {
            self.fail_steps -= 1;
            self.seqs.clear();
            return Err(EngineError::NoKvSlot);
        }
        self.steps += 1;
        if let Some(hook) = self.on_step.as_mut() {
            hook(self.steps);
        }
        {
            let mut log = self.log.lock().unwrap();
            log.max_in_flight = log.max_in_flight.max(self.seqs.len());
            log.steps.push(self.seqs.iter().map(|s| s.tag).collect());
            log.prompt_caps.push(self.prompt_cap);
        }
        if !self.token_delay.is_zero() {
            std::thread::sleep(self.token_delay);
        }
        let raised = self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
        if raised && !self.seqs.iter().any(|s| s.urgent && !s.prefilled) {
            self.log.lock().unwrap().stopped += 1;
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.seqs.len() {
            let s = &mut self.seqs[i];
            if !s.prefilled {
                s.prefilled = true;
            } else {
                s.produced += 1;
                self.generated += 1;
            }
            let text = s.text();
            let stopped = super::stops::find(text.as_bytes(), &s.stop, 0);
            let finish = if stopped.is_some() {
                Some(FinishReason::Stop)
            } else if s.produced >= s.max_tokens {
                Some(FinishReason::Length)
            } else if s.produced >= s.answer.len() {
                Some(FinishReason::Stop)
            } else {
                None
            };
            match finish {
                None => i += 1,
                Some(finish) => {
                    let s = self.seqs.remove(i);
                    let mut text = text;
                    text.truncate(stopped.unwrap_or(text.len()));
                    done.push(SeqDone {
                        tag: s.tag,
                        result: Ok(Generation {
                            text,
                            prompt_tokens: s.prompt_tokens,
                            // The fake keeps no KV cells to reuse.
                            cached_tokens: 0,
                            completion_tokens: s.produced as u32,
                            finish,
                            millis: 0,
                        }),
                    });
                }
            }
        }
        Ok(done)
    }

    fn abort(&mut self, tag: u64) {
        self.seqs.retain(|s| s.tag != tag);
    }

    fn active(&self) -> usize {
        self.seqs.len()
    }

    fn generated_tokens(&self) -> u64 {
        self.generated
    }

    fn longest_prompt(&self) -> u32 {
        self.seqs.iter().map(|s| s.prompt_tokens).max().unwrap_or(0)
    }

    fn free_slots(&self) -> usize {
        self.shape
            .map_or(0, |s| (s.n_seq as usize).saturating_sub(self.seqs.len()))
    }

    fn set_prompt_cap(&mut self, cap: Option<u32>) {
        self.prompt_cap = cap;
    }

    fn set_interrupt(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.interrupt = Some(flag);
    }

    fn stopped_steps(&self) -> u64 {
        self.log.lock().unwrap().stopped as u64
    }

    fn partial(&self, tag: u64, from: usize) -> Option<Vec<u8>> {
        let s = self.seqs.iter().find(|s| s.tag == tag)?;
        Some(s.text().as_bytes().get(from..).unwrap_or_default().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> ModelRef {
        ModelRef {
            name: name.into(),
            path: format!("/{name}.gguf"),
            template: None,
        }
    }

    /// The keep-alive counts on the worker's clock, passed in: a fake reading the wall clock
    /// would date `a`'s last use to today and never let it expire at these times.
    #[test]
    fn the_keep_alive_runs_on_the_clock_passed_in() {
        let mut e = FakeEngine::new(4096); // keep-alive 300 s
        let shape = Shape {
            n_ctx: 1024,
            n_seq: 1,
        };
        e.load(&model("a"), shape, 1_000).unwrap();
        e.load(&model("b"), shape, 2_000).unwrap(); // `a` idle from 2 s on
        assert!(
            e.maintain(301_999).is_empty(),
            "a keeps its last millisecond"
        );
        assert_eq!(e.maintain(302_000), vec!["a".to_string()]);
        assert_eq!(e.models().len(), 1, "b stays: idle only since 301.999 s");
        e.unload(302_001);
        assert!(e.models().is_empty());
    }
}
