//! The inference seam: trait [`Engine`], implemented by llama.cpp (`llama/` of the
//! `qwen3q-engine` binary, the only code that sees llama-cpp-2) and by a deterministic fake
//! (`fake.rs`) for fast unit tests. It is
//! three groups of operations: [`Residency`] (loads, unloads, keep-alive; time passed in),
//! [`Text`] (tokens, the chat template) and [`Decoder`] (sequences stepped together).
//!
//! Beside it: `cache` (the loaded models of an engine, kept by the pure `lru`: budget, count,
//! keep-alive, pins), `memory` (what a model needs for a context shape, predicted from its GGUF
//! header), `gguf` (reading that header without loading the model), `release` (the page cache
//! and freed heap given back after a load or an unload), `chunking` (token-counted chunks,
//! merging chunk outputs), `templates` (task prompts, chats from their documents, Qwen3
//! thinking, reasoning split), `calibrate` (`qwen3q calibrate`'s sweep of B) and `quiet`
//! (llama.cpp's lines about a decode a chat stopped, kept out of the log).

pub mod cache;
pub mod calibrate;
pub mod chunking;
pub mod fake;
pub mod gguf;
pub mod lru;
pub mod memory;
pub mod prefix;
pub mod quiet;
pub mod reasoning;
pub mod release;
pub mod stops;
pub mod templates;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::job::{ChatMessage, Constraint, Millis, ModelRef};
use lru::Limits;

pub use crate::job::{Kernels, Provenance};

/// Settings of the inference engine itself (not of a job): what the worker and `calibrate`
/// give the engine they make.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Threads for decoding; 0 means all cores.
    pub threads: u32,
    /// Most tokens in one decode call.
    pub n_batch: u32,
    /// What may stay loaded: byte budget, model count, keep-alive.
    pub limits: Limits,
    /// Model paths kept loaded whatever their idle time.
    pub pins: Vec<String>,
    /// Whether a sequence's result may depend on what else is in the batch (see [`Kernels`]).
    pub kernels: Kernels,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            threads: 0,
            n_batch: 512,
            limits: Limits {
                budget_bytes: u64::MAX,
                max_models: 2,
                keep_alive_ms: 300_000,
            },
            pins: Vec::new(),
            kernels: Kernels::default(),
        }
    }
}

/// Why a generation was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The worker is shutting down: checkpoint what is done and stop.
    Shutdown,
    /// A person cancelled the job.
    Cancelled,
    /// The chunk ran past its time limit.
    Timeout,
    /// An interactive request needs the machine (another model): the job goes back to the
    /// queue and resumes after its last finished chunk.
    Yield,
}

/// Answer of the control callback, asked once per decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop(Interrupt),
}

/// Why generation ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
}

/// Sampling settings for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    pub seed: u32,
}

/// What one generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text as the model wrote it (thinking included, if any).
    pub text: String,
    pub prompt_tokens: u32,
    /// Of the prompt tokens, those whose KV cells were reused rather than decoded.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    pub finish: FinishReason,
    pub millis: u64,
}

/// Facts about a loaded model that planning needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The context per sequence the engine runs this model with.
    pub n_ctx: u32,
    /// Sequences the context decodes together.
    pub n_seq: u32,
    pub n_ctx_train: u32,
    /// The chat template knows Qwen3's `<think>` blocks.
    pub thinking_template: bool,
    /// Bytes of weights.
    pub size_bytes: u64,
    /// What creating this context took, measured: set by the `load` that created it (the
    /// worker stores it beside the prediction).
    pub memory: Option<crate::registry::MemoryRecord>,
    /// What a result of this model records to be reproduced.
    pub provenance: Provenance,
}

/// Errors of an engine. No llama-cpp-2 type crosses this boundary.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0}")]
    ModelMissing(String),
    #[error("{path} is not a usable GGUF model: {reason}")]
    BadModel { path: String, reason: String },
    #[error("llama.cpp could not load {path} (out of memory or unsupported model)")]
    LoadFailed { path: String },
    #[error("llama.cpp refused {path} with memory enough for it (alone, at the smallest shape): an unsupported architecture or damaged tensors; the worker's log has llama.cpp's reason")]
    Refused { path: String },
    #[error("llama.cpp could not create a context of {n_ctx} tokens (out of memory?)")]
    ContextFailed { n_ctx: u32 },
    #[error(
        "{0} has no chat template; name a built-in one with --template (e.g. gemma, chatml, llama3)"
    )]
    NoTemplate(String),
    #[error("chat template failed: {0}")]
    Template(String),
    #[error("the prompt needs {need} tokens but the context holds {have}")]
    ContextTooSmall { need: u32, have: u32 },
    #[error("the grammar is not valid GBNF: {0}")]
    Grammar(String),
    #[error("{0}")]
    BadOutput(String),
    /// The job's stored document does not have the shape its record says (a chat's turns).
    #[error("{0}")]
    DamagedJob(String),
    #[error("no free sequence slot (all {0} are busy)")]
    NoFreeSlot(u32),
    #[error("the model needs {} MiB with its context but at most {} MiB of the model budget can be made free", needed / 1048576, available / 1048576)]
    NoRoom { needed: u64, available: u64 },
    #[error("no room in the KV cache for the batch")]
    NoKvSlot,
    #[error("--model auto: no model is registered to choose from (qwen3q models add FILE, or models scan --add)")]
    NoModels,
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("interrupted: {0:?}")]
    Interrupted(Interrupt),
    #[error("this qwen3q was built without the llama feature; no inference engine is available")]
    Unavailable,
}

impl EngineError {
    /// Errors that no retry can fix, because they follow from the job itself (its prompt
    /// does not fit the context; the model has no usable template): the job is dead at once
    /// instead of waiting through its backoffs. A missing or damaged model file is not among
    /// them: a person may put the file right meanwhile.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            EngineError::ContextTooSmall { .. }
                | EngineError::NoTemplate(_)
                | EngineError::Template(_)
                | EngineError::Grammar(_)
                | EngineError::BadOutput(_)
                | EngineError::DamagedJob(_)
                | EngineError::NoRoom { .. }
        )
    }

    /// Errors that a smaller configuration (fewer sequences, a smaller context, fewer loaded
    /// models) may avoid: the fallback ladder's cue.
    pub fn is_memory(&self) -> bool {
        matches!(
            self,
            EngineError::LoadFailed { .. }
                | EngineError::ContextFailed { .. }
                | EngineError::NoKvSlot
                | EngineError::NoRoom { .. }
        )
    }
}

/// How a context is laid out: tokens of context per sequence, and sequences decoded together
/// (the batch size B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Context per sequence (capped at the model's training context).
    pub n_ctx: u32,
    /// Sequences decoded together, each in its own slot.
    pub n_seq: u32,
}

/// A rendered prompt, in pieces: the chat template's own text, whose markers (`<|im_start|>`,
/// `<start_of_turn>`…) are special tokens, and the text people gave (documents, messages,
/// prompts), which is only ever text. A document that contains `<|im_end|>` does not close its
/// turn: it is tokenized as the characters it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    pub pieces: Vec<Piece>,
}

/// One piece of a [`Prompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The template's text: special tokens are parsed in it.
    Template(String),
    /// Text from outside: never special tokens.
    Text(String),
}

impl Prompt {
    /// A prompt that is all template text (a trusted prompt written by qwen3q or a tool).
    pub fn trusted(text: &str) -> Prompt {
        Prompt {
            pieces: vec![Piece::Template(text.to_string())],
        }
    }

    /// The whole prompt as one string (for logs, and engines without special tokens).
    pub fn text(&self) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Template(t) | Piece::Text(t) => t.as_str(),
            })
            .collect()
    }

    /// More template text at the end.
    pub fn push_template(&mut self, text: &str) {
        match self.pieces.last_mut() {
            Some(Piece::Template(t)) => t.push_str(text),
            _ => self.pieces.push(Piece::Template(text.to_string())),
        }
    }
}

/// A sequence to start in a free slot.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    /// The caller's name for the sequence; [`SeqDone`] and [`Decoder::abort`] use it.
    pub tag: u64,
    /// The rendered prompt.
    pub prompt: Prompt,
    pub sampling: Sampling,
    /// A JSON schema or GBNF grammar the output must follow.
    pub grammar: Option<Constraint>,
    /// Strings that end the generation where they appear (cut from its text; see [`stops`]).
    pub stop: Vec<String>,
    /// A person waits for it (an interactive request): its prompt is fed before the prompts
    /// of batch sequences that came earlier, and alone (the steps that feed it carry no other
    /// prompt: its first token comes as soon as its own prompt is decoded).
    pub urgent: bool,
}

/// A sequence that ended, with its generation or why it failed.
#[derive(Debug)]
pub struct SeqDone {
    pub tag: u64,
    pub result: Result<Generation, EngineError>,
}

/// An inference engine: the three groups of operations below at once. One current model with
/// a context of [`Shape`] in which up to `n_seq` sequences decode together (continuous
/// batching). The caller starts sequences in free slots ([`Decoder::start`]) and calls
/// [`Decoder::step`]: one decode call of at most `n_batch` tokens that carries one generated
/// token of every decoding sequence and, with the room left, pieces of newcomers' prompts. A
/// sequence that ends frees its slot at once.
///
/// Both engines keep their loaded models in a [`cache::ModelCache`] (the pure [`lru`] decides)
/// and read no clock: the worker passes `now` to whatever the keep-alive depends on.
pub trait Engine: Residency + Text + Decoder + Send {}

impl<T: Residency + Text + Decoder + Send> Engine for T {}

/// Which models are in memory, and the current one's context: loads, unloads, keep-alive and
/// the memory gate's lever.
pub trait Residency {
    /// Make `model` the current model, loading it if needed (evicting idle ones as the LRU
    /// says), with a context of `shape`; `now` is when it was used, for the keep-alive. A new
    /// shape (or model) drops the sequences in flight: call it when none are.
    fn load(
        &mut self,
        model: &ModelRef,
        shape: Shape,
        now: Millis,
    ) -> Result<ModelInfo, EngineError>;

    /// Unload every model.
    fn unload(&mut self, now: Millis);

    /// The current model (the batch's), if any.
    fn loaded(&self) -> Option<&ModelRef>;

    /// The shape of the current model's context while it has one: loading that model at that
    /// shape again reuses it and takes no more memory.
    fn context(&self) -> Option<Shape>;

    /// Housekeeping while the worker is idle: with no sequence in flight the current model's
    /// context is dropped (its memory given back) and it becomes idle; idle models past their
    /// keep-alive are unloaded. Returns the names of the models unloaded.
    fn maintain(&mut self, now: Millis) -> Vec<String>;

    /// Unload idle models until `bytes` are freed (the memory gate's lever); bytes freed.
    fn free_memory(&mut self, bytes: u64) -> u64;

    /// The loaded models, most recently used first.
    fn models(&self) -> Vec<cache::LoadedModel>;

    /// How this engine builds its contexts' graphs (ubatch, flash attention): what predicting
    /// their memory needs ([`memory`]).
    fn graph(&self) -> memory::Graph;
}

/// Text operations of the current model: tokens and its chat template.
pub trait Text {
    /// Tokens of plain text (no special tokens parsed, none added).
    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>, EngineError>;

    /// Text of tokens made by [`Text::tokenize`].
    fn detokenize(&mut self, tokens: &[u32]) -> Result<String, EngineError>;

    /// The prompt for `messages` in the model's chat template, ending with the opening of the
    /// assistant's turn: the template's text apart from the messages' contents.
    fn render(&mut self, messages: &[ChatMessage]) -> Result<Prompt, EngineError>;

    /// Count the tokens of a rendered prompt (special tokens parsed in its template pieces
    /// only, BOS as the model wants), as [`Decoder::start`] will feed it.
    fn prompt_tokens(&mut self, prompt: &Prompt) -> Result<u32, EngineError>;
}

/// Decoding: sequences in the current model's context, stepped together.
pub trait Decoder {
    /// Start a sequence in a free slot. Errors concern this sequence only (its prompt does not
    /// fit, its grammar is invalid, no slot is free).
    fn start(&mut self, request: SeqRequest) -> Result<(), EngineError>;

    /// One decode call; returns the sequences that ended in it. An error concerns the whole
    /// batch: every sequence in flight is dropped (start them again, perhaps smaller).
    fn step(&mut self) -> Result<Vec<SeqDone>, EngineError>;

    /// Drop a sequence in flight (cancelled, timed out, shutting down); its slot is free at
    /// once. Unknown tags are ignored.
    fn abort(&mut self, tag: u64);

    /// Sequences in flight.
    fn active(&self) -> usize;

    /// Tokens generated since the engine started (for tokens/s readings).
    fn generated_tokens(&self) -> u64;

    /// The longest prompt among the sequences in flight, in tokens (long inputs lower the
    /// adaptive batch size's ceiling).
    fn longest_prompt(&self) -> u32;

    /// Slots free for [`Decoder::start`].
    fn free_slots(&self) -> usize;

    /// At most `cap` prompt tokens of batch sequences in one step from now on (`None`: as many
    /// as fit). Short steps while a person is chatting: a chat's tokens after its first wait
    /// for the steps they share with batch work.
    fn set_prompt_cap(&mut self, cap: Option<u32>);

    /// A flag that, raised by another thread while [`Decoder::step`] decodes, stops that
    /// decode (within one operation of its graph) unless the step feeds an urgent prompt: the
    /// step then returns no ended sequence, and every sequence is where the step found it, so
    /// the next steps decode what this one did not finish.
    /// A chat that comes does not wait for a long step of batch prompts. The engine only reads
    /// the flag: who raises it lowers it (while it stays raised, every stoppable step stops).
    fn set_interrupt(&mut self, flag: Arc<AtomicBool>);

    /// Steps the interrupt stopped since the engine started.
    fn stopped_steps(&self) -> u64;

    /// The bytes a sequence in flight generated so far, from byte `from` on (streaming an
    /// interactive answer); `None` for a tag not in flight. Bytes, not text: a token may end
    /// inside a UTF-8 character.
    fn partial(&self, tag: u64, from: usize) -> Option<Vec<u8>>;

    /// Generate one sequence alone, from start to end: the B=1 path for tools and examples.
    /// `control` is asked before each decode step and may stop it. Other sequences must not be
    /// in flight.
    fn generate(
        &mut self,
        prompt: &Prompt,
        sampling: &Sampling,
        control: &mut dyn FnMut() -> Control,
    ) -> Result<Generation, EngineError> {
        const TAG: u64 = u64::MAX;
        if self.active() > 0 {
            return Err(EngineError::Decode(
                "generate() needs an idle engine; sequences are in flight".into(),
            ));
        }
        self.start(SeqRequest {
            tag: TAG,
            prompt: prompt.clone(),
            sampling: sampling.clone(),
            grammar: None,
            stop: Vec::new(),
            urgent: false,
        })?;
        loop {
            if let Control::Stop(why) = control() {
                self.abort(TAG);
                return Err(EngineError::Interrupted(why));
            }
            if let Some(done) = self.step()?.into_iter().find(|d| d.tag == TAG) {
                return done.result;
            }
        }
    }
}
