//! The inference seam: trait [`Engine`], implemented by llama.cpp (`llama.rs`, the only code
//! that sees llama-cpp-2) and by a deterministic fake (`fake.rs`) for fast unit tests.
//!
//! Pure helpers live beside it: `chunking` (token-counted chunks, merging chunk outputs),
//! `templates` (task prompts, Qwen3 thinking, reasoning split), `gguf` (reading a GGUF's
//! header without loading it) and `lru` (which models stay loaded; not yet wired in: the
//! worker holds one model until issue 3's engine uses it).

pub mod chunking;
pub mod fake;
pub mod gguf;
#[cfg(feature = "llama")]
pub mod llama;
pub mod lru;
pub mod templates;

use crate::job::{ChatMessage, ModelRef};

/// Why a generation was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The worker is shutting down: checkpoint what is done and stop.
    Shutdown,
    /// A person cancelled the job.
    Cancelled,
    /// The chunk ran past its time limit.
    Timeout,
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
    pub completion_tokens: u32,
    pub finish: FinishReason,
    pub millis: u64,
}

/// Facts about a loaded model that planning needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The context size the engine runs this model with.
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    /// The chat template knows Qwen3's `<think>` blocks.
    pub thinking_template: bool,
    /// Bytes of weights.
    pub size_bytes: u64,
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
    #[error("no room in the KV cache for the batch")]
    NoKvSlot,
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
        )
    }
}

/// An inference engine. One model is current at a time in this version; the engine keeps it
/// loaded across jobs and reloads only when a job names another model.
pub trait Engine: Send {
    /// Make `model` the current model, loading it if needed, with a context of `n_ctx` tokens
    /// (capped at what the model was trained for).
    fn load(&mut self, model: &ModelRef, n_ctx: u32) -> Result<ModelInfo, EngineError>;

    /// Tokens of plain text (no special tokens parsed, none added).
    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>, EngineError>;

    /// Text of tokens made by [`Engine::tokenize`].
    fn detokenize(&mut self, tokens: &[u32]) -> Result<String, EngineError>;

    /// The prompt for `messages` in the model's chat template, ending with the opening of the
    /// assistant's turn.
    fn render(&mut self, messages: &[ChatMessage]) -> Result<String, EngineError>;

    /// Count the tokens of a rendered prompt (special tokens parsed, BOS as the model wants).
    fn prompt_tokens(&mut self, prompt: &str) -> Result<u32, EngineError>;

    /// Generate from a rendered prompt. `control` is asked before each decode step and may
    /// stop the generation ([`EngineError::Interrupted`]).
    fn generate(
        &mut self,
        prompt: &str,
        sampling: &Sampling,
        control: &mut dyn FnMut() -> Control,
    ) -> Result<Generation, EngineError>;

    /// Unload the current model (idle, or to free memory).
    fn unload(&mut self);

    /// The loaded model, if any.
    fn loaded(&self) -> Option<&ModelRef>;
}
