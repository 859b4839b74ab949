//! A deterministic engine for fast unit tests of the code around inference. One character is
//! one token; the "model" answers with a digest of its prompt. Never used by the binary.

use std::time::Duration;

use super::{Control, Engine, EngineError, FinishReason, Generation, ModelInfo, Sampling};
use crate::job::{ChatMessage, ModelRef};

/// See the module docs. Fields are knobs a test sets.
#[derive(Debug, Default)]
pub struct FakeEngine {
    /// The context size every model gets.
    pub n_ctx: u32,
    /// Prompts containing this text fail to decode.
    pub fail_on: Option<String>,
    /// Time per generated token, to make interruptions observable.
    pub token_delay: Duration,
    /// Every prompt generated from, in order: tests count and inspect them.
    pub prompts: Vec<String>,
    loaded: Option<ModelRef>,
}

impl FakeEngine {
    pub fn new(n_ctx: u32) -> Self {
        FakeEngine {
            n_ctx,
            ..Default::default()
        }
    }
}

impl Engine for FakeEngine {
    fn load(&mut self, model: &ModelRef, n_ctx: u32) -> Result<ModelInfo, EngineError> {
        if model.path.contains("missing") {
            return Err(EngineError::ModelMissing(model.path.clone()));
        }
        self.loaded = Some(model.clone());
        Ok(ModelInfo {
            n_ctx: n_ctx.min(self.n_ctx),
            n_ctx_train: self.n_ctx,
            thinking_template: true,
            size_bytes: 1,
        })
    }

    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(text.chars().map(|c| c as u32).collect())
    }

    fn detokenize(&mut self, tokens: &[u32]) -> Result<String, EngineError> {
        Ok(tokens.iter().filter_map(|&t| char::from_u32(t)).collect())
    }

    fn render(&mut self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let mut out = String::new();
        for m in messages {
            out.push_str(&format!("<{}>{}</{}>", m.role, m.content, m.role));
        }
        out.push_str("<assistant>");
        Ok(out)
    }

    fn prompt_tokens(&mut self, prompt: &str) -> Result<u32, EngineError> {
        Ok(prompt.chars().count() as u32)
    }

    fn generate(
        &mut self,
        prompt: &str,
        sampling: &Sampling,
        control: &mut dyn FnMut() -> Control,
    ) -> Result<Generation, EngineError> {
        let prompt_tokens = self.prompt_tokens(prompt)?;
        if prompt_tokens > self.n_ctx {
            return Err(EngineError::ContextTooSmall {
                need: prompt_tokens,
                have: self.n_ctx,
            });
        }
        if let Some(f) = &self.fail_on {
            if prompt.contains(f.as_str()) {
                return Err(EngineError::Decode(format!("fake failure on {f:?}")));
            }
        }
        self.prompts.push(prompt.to_string());
        let digest = prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let answer = format!("answer-{digest:016x}");
        let mut text = String::new();
        for c in answer.chars().take(sampling.max_tokens as usize) {
            if let Control::Stop(why) = control() {
                return Err(EngineError::Interrupted(why));
            }
            if !self.token_delay.is_zero() {
                std::thread::sleep(self.token_delay);
            }
            text.push(c);
        }
        let finish = if text.len() < answer.len() {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        Ok(Generation {
            completion_tokens: text.chars().count() as u32,
            text,
            prompt_tokens,
            finish,
            millis: 0,
        })
    }

    fn unload(&mut self) {
        self.loaded = None;
    }

    fn loaded(&self) -> Option<&ModelRef> {
        self.loaded.as_ref()
    }
}
