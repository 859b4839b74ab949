//! The llama.cpp engine: the only code that sees llama-cpp-2 types.
//!
//! One `LlamaBackend` per process (llama.cpp's global state), with llama.cpp's logs sent to
//! tracing. A model stays loaded across jobs; a context is made for each generation (this
//! version decodes one sequence at a time).
//!
//! Two llama.cpp traps handled here: a decode with more tokens than `n_batch` aborts the
//! whole process (an assertion, not an error), so prompts are fed in slices of `n_batch`; and
//! a prompt that does not fit the context is refused before any decode.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{send_logs_to_tracing, DecodeError, LogOptions};

use super::{
    gguf, templates, Control, Engine, EngineError, FinishReason, Generation, ModelInfo, Sampling,
};
use crate::job::{ChatMessage, ModelRef};

/// llama.cpp's process-wide backend, initialised once.
fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        send_logs_to_tracing(LogOptions::default());
        LlamaBackend::init().expect("llama.cpp backend initialises once per process")
    })
}

/// Settings of the engine itself (not of a job).
#[derive(Debug, Clone)]
pub struct LlamaSettings {
    /// Threads for decoding; 0 means all cores.
    pub threads: u32,
    /// Most tokens in one decode call.
    pub n_batch: u32,
}

impl Default for LlamaSettings {
    fn default() -> Self {
        LlamaSettings {
            threads: 0,
            n_batch: 512,
        }
    }
}

/// A loaded model with what generation needs of it.
struct Loaded {
    model: LlamaModel,
    /// Which model this is, to reuse it when the next job names the same one.
    model_ref: ModelRef,
    template: LlamaChatTemplate,
    info: ModelInfo,
}

/// The real engine. See the module docs.
pub struct LlamaEngine {
    settings: LlamaSettings,
    loaded: Option<Loaded>,
}

impl LlamaEngine {
    pub fn new(settings: LlamaSettings) -> Self {
        backend();
        LlamaEngine {
            settings,
            loaded: None,
        }
    }

    fn threads(&self) -> i32 {
        if self.settings.threads > 0 {
            self.settings.threads as i32
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as i32)
                .unwrap_or(2)
        }
    }

    fn current(&self) -> Result<&Loaded, EngineError> {
        self.loaded
            .as_ref()
            .ok_or_else(|| EngineError::ModelMissing("no model loaded".into()))
    }

    fn tokens_of_prompt(&self, prompt: &str) -> Result<Vec<LlamaToken>, EngineError> {
        Ok(self
            .current()?
            .model
            .vocab()
            .tokenize(prompt.as_bytes(), true, true))
    }
}

fn to_u32(t: LlamaToken) -> u32 {
    t.0 as u32
}

fn decode_err(e: DecodeError) -> EngineError {
    match e {
        DecodeError::NoKvCacheSlot => EngineError::NoKvSlot,
        other => EngineError::Decode(other.to_string()),
    }
}

fn sampler(s: &Sampling) -> LlamaSampler {
    if s.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let mut chain = Vec::new();
    if s.top_k > 0 {
        chain.push(LlamaSampler::top_k(s.top_k));
    }
    if s.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(s.top_p, 1));
    }
    if s.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(s.min_p, 1));
    }
    chain.push(LlamaSampler::temp(s.temperature));
    chain.push(LlamaSampler::dist(s.seed));
    LlamaSampler::chain_simple(chain)
}

impl Engine for LlamaEngine {
    fn load(&mut self, model_ref: &ModelRef, n_ctx: u32) -> Result<ModelInfo, EngineError> {
        if let Some(l) = &mut self.loaded {
            if l.model_ref == *model_ref {
                l.info.n_ctx = n_ctx.min(l.info.n_ctx_train);
                return Ok(l.info.clone());
            }
        }
        self.loaded = None; // free the old model before loading the next
        let path = Path::new(&model_ref.path);
        if !path.exists() {
            return Err(EngineError::ModelMissing(model_ref.path.clone()));
        }
        let header = gguf::inspect(path).map_err(|e| EngineError::BadModel {
            path: model_ref.path.clone(),
            reason: e.to_string(),
        })?;
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
            .map_err(|_| EngineError::LoadFailed {
                path: model_ref.path.clone(),
            })?;
        let (template, thinking_template) = match model.chat_template(None) {
            Ok(t) => {
                let thinking =
                    templates::template_knows_thinking(&t.to_string().unwrap_or_default());
                (t, thinking)
            }
            Err(_) => match &model_ref.template {
                Some(name) => (
                    LlamaChatTemplate::new(name)
                        .map_err(|e| EngineError::Template(e.to_string()))?,
                    false,
                ),
                None => return Err(EngineError::NoTemplate(model_ref.path.clone())),
            },
        };
        let n_ctx_train = model.n_ctx_train().max(1);
        let info = ModelInfo {
            n_ctx: n_ctx.min(n_ctx_train),
            n_ctx_train,
            thinking_template,
            size_bytes: model.size(),
        };
        tracing::info!(
            model = %model_ref.path,
            arch = header.architecture().unwrap_or("?"),
            bytes = info.size_bytes,
            millis = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        self.loaded = Some(Loaded {
            model,
            model_ref: model_ref.clone(),
            template,
            info: info.clone(),
        });
        Ok(info)
    }

    fn tokenize(&mut self, text: &str) -> Result<Vec<u32>, EngineError> {
        let l = self.current()?;
        Ok(l.model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .into_iter()
            .map(to_u32)
            .collect())
    }

    fn detokenize(&mut self, tokens: &[u32]) -> Result<String, EngineError> {
        if tokens.is_empty() {
            return Ok(String::new());
        }
        let l = self.current()?;
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
        let bytes = l.model.vocab().detokenize(&tokens, false, false);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn render(&mut self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let l = self.current()?;
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Template(e.to_string()))?;
        l.model
            .apply_chat_template(&l.template, &chat, true)
            .map_err(|e| EngineError::Template(e.to_string()))
    }

    fn prompt_tokens(&mut self, prompt: &str) -> Result<u32, EngineError> {
        Ok(self.tokens_of_prompt(prompt)?.len() as u32)
    }

    fn generate(
        &mut self,
        prompt: &str,
        sampling: &Sampling,
        control: &mut dyn FnMut() -> Control,
    ) -> Result<Generation, EngineError> {
        let started = Instant::now();
        let tokens = self.tokens_of_prompt(prompt)?;
        tracing::debug!(prompt, tokens = ?tokens.iter().map(|t| t.0).collect::<Vec<_>>(), "generating");
        let threads = self.threads();
        let n_batch = self.settings.n_batch.max(1);
        let l = self.current()?;
        let n_ctx = l.info.n_ctx;
        if tokens.len() as u32 >= n_ctx {
            return Err(EngineError::ContextTooSmall {
                need: tokens.len() as u32 + 1,
                have: n_ctx,
            });
        }
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = l
            .model
            .new_context(backend(), params)
            .map_err(|_| EngineError::ContextFailed { n_ctx })?;
        let vocab = l.model.vocab();

        // Feed the prompt in slices of at most n_batch tokens.
        let mut batch = LlamaBatch::new(n_batch as usize, 1);
        let last = tokens.len() - 1;
        for (slice_no, slice) in tokens.chunks(n_batch as usize).enumerate() {
            if let Control::Stop(why) = control() {
                return Err(EngineError::Interrupted(why));
            }
            batch.clear();
            for (j, &t) in slice.iter().enumerate() {
                let pos = slice_no * n_batch as usize + j;
                batch
                    .add(t, pos as i32, &[0], pos == last)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            ctx.decode(&mut batch).map_err(decode_err)?;
        }

        let mut sampler = sampler(sampling);
        let mut out = Vec::new();
        let mut n_cur = tokens.len() as u32;
        let mut generated = 0u32;
        let finish = loop {
            if generated >= sampling.max_tokens {
                break FinishReason::Length;
            }
            if n_cur >= n_ctx {
                break FinishReason::ContextFull;
            }
            if let Control::Stop(why) = control() {
                return Err(EngineError::Interrupted(why));
            }
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break FinishReason::Stop;
            }
            generated += 1;
            let piece = vocab.token_to_piece(token, false, None);
            tracing::trace!(token = token.0, piece = %String::from_utf8_lossy(&piece), "sampled");
            out.extend(piece);
            batch.clear();
            batch
                .add(token, n_cur as i32, &[0], true)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            n_cur += 1;
            ctx.decode(&mut batch).map_err(decode_err)?;
        };
        Ok(Generation {
            text: String::from_utf8_lossy(&out).into_owned(),
            prompt_tokens: tokens.len() as u32,
            completion_tokens: generated,
            finish,
            millis: started.elapsed().as_millis() as u64,
        })
    }

    fn unload(&mut self) {
        self.loaded = None;
    }

    fn loaded(&self) -> Option<&ModelRef> {
        self.loaded.as_ref().map(|l| &l.model_ref)
    }
}
