//! The llama.cpp engine: the only code that sees llama-cpp-2 types.
//!
//! One `LlamaBackend` per process (llama.cpp's global state), with llama.cpp's logs sent to
//! tracing. A model stays loaded across jobs, with one context ([`session::Session`]) in
//! which up to `n_seq` sequences decode together.
//!
//! Two llama.cpp traps handled here: a decode with more tokens than `n_batch` aborts the
//! whole process (an assertion, not an error), so a step never adds more; and a prompt that
//! does not fit the context is refused before any decode.

pub mod anchor;
mod session;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{send_logs_to_tracing, DecodeError, LogOptions};

use super::cache::{LoadedModel, ModelCache};
use super::lru::Limits;
use super::{
    gguf, templates, Engine, EngineError, ModelInfo, Sampling, SeqDone, SeqRequest, Shape,
};
use crate::job::{ChatMessage, ModelRef};
use session::Session;

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
    /// What may stay loaded: byte budget, model count, keep-alive.
    pub limits: Limits,
    /// Model paths kept loaded whatever their idle time.
    pub pins: Vec<String>,
}

impl Default for LlamaSettings {
    fn default() -> Self {
        LlamaSettings {
            threads: 0,
            n_batch: 512,
            limits: Limits {
                budget_bytes: u64::MAX,
                max_models: 2,
                keep_alive_ms: 300_000,
            },
            pins: Vec::new(),
        }
    }
}

/// A loaded model with what generation needs of it.
struct Loaded {
    /// Shared with the session's context, which borrows it.
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    info: ModelInfo,
}

/// The real engine. See the module docs.
pub struct LlamaEngine {
    settings: LlamaSettings,
    /// Loaded models under the byte budget; the current one is the batch's.
    cache: ModelCache<Loaded>,
    /// The context of the current model, with its sequences in flight.
    session: Option<Session>,
}

impl LlamaEngine {
    pub fn new(settings: LlamaSettings) -> Self {
        backend();
        LlamaEngine {
            cache: ModelCache::new(settings.limits.clone(), &settings.pins),
            settings,
            session: None,
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
        self.cache
            .current()
            .map(|(_, l)| l)
            .ok_or_else(|| EngineError::ModelMissing("no model loaded".into()))
    }

    fn session_mut(&mut self) -> Result<&mut Session, EngineError> {
        self.session
            .as_mut()
            .ok_or_else(|| EngineError::ModelMissing("no model loaded".into()))
    }
}

/// Read the GGUF's header (refusing fake or truncated files before llama.cpp sees them).
fn facts_of(model_ref: &ModelRef) -> Result<(gguf::Header, gguf::ModelFacts), EngineError> {
    let path = Path::new(&model_ref.path);
    let bad = |e: &dyn std::fmt::Display| EngineError::BadModel {
        path: model_ref.path.clone(),
        reason: e.to_string(),
    };
    let file_bytes = std::fs::metadata(path)
        .map_err(|_| EngineError::ModelMissing(model_ref.path.clone()))?
        .len();
    let header = gguf::inspect(path).map_err(|e| bad(&e))?;
    let facts = header.facts(file_bytes);
    Ok((header, facts))
}

/// Load the weights and pick the chat template.
fn load_model(model_ref: &ModelRef, header: &gguf::Header) -> Result<Loaded, EngineError> {
    {
        let path = Path::new(&model_ref.path);
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
            n_ctx: n_ctx_train,
            n_seq: 1,
            n_ctx_train,
            thinking_template,
            size_bytes: model.size(),
            memory: None,
        };
        tracing::info!(
            model = %model_ref.path,
            arch = header.architecture().unwrap_or("?"),
            bytes = info.size_bytes,
            millis = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(Loaded {
            model: Arc::new(model),
            template,
            info,
        })
    }
}

fn to_u32(t: LlamaToken) -> u32 {
    t.0 as u32
}

/// llama.cpp's devices with their free and total memory (the CPU; Metal on Apple Silicon;
/// CUDA or Vulkan when built with them).
pub fn device_memory() -> Vec<crate::monitor::DeviceMemory> {
    backend();
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| crate::monitor::DeviceMemory {
            name: format!("{} ({})", d.name, d.backend),
            free: d.memory_free as u64,
            total: d.memory_total as u64,
        })
        .collect()
}

/// This process's (resident, virtual) memory in bytes.
fn own_memory() -> (u64, u64) {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(std::process::id());
    let Ok(mut sys) = System::new() else {
        return (0, 0);
    };
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid)
        .map_or((0, 0), |p| (p.memory(), p.virtual_memory()))
}

pub(super) fn decode_err(e: DecodeError) -> EngineError {
    match e {
        DecodeError::NoKvCacheSlot => EngineError::NoKvSlot,
        other => EngineError::Decode(other.to_string()),
    }
}

pub(super) fn sampler(s: &Sampling) -> LlamaSampler {
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
    fn load(&mut self, model_ref: &ModelRef, shape: Shape) -> Result<ModelInfo, EngineError> {
        let now = crate::now_ms();
        let n_batch = self.settings.n_batch.max(1);
        if self.cache.current().map(|(r, _)| r) != Some(model_ref) {
            // Free the old context before anything else: the next model may need its memory.
            self.session = None;
            let (header, facts) = facts_of(model_ref)?;
            let n_ctx = (shape.n_ctx as u64).min(facts.context_length.unwrap_or(u64::MAX));
            let predicted = facts
                .predict(n_ctx, shape.n_seq.max(1) as u64, n_batch as u64)
                .total();
            self.cache.make_current(model_ref, predicted, now, || {
                let l = load_model(model_ref, &header)?;
                let weights = l.model.size();
                Ok((l, weights))
            })?;
        }
        let threads = self.threads();
        let l = self.cache.current_mut().expect("made current above");
        let shape = Shape {
            n_ctx: shape.n_ctx.min(l.info.n_ctx_train).max(1),
            n_seq: shape.n_seq.max(1),
        };
        l.info.memory = None;
        if self.session.as_ref().map(|s| s.shape) != Some(shape) {
            self.session = None; // free the old context first
            let started = Instant::now();
            let before = own_memory();
            self.session = Some(Session::new(l.model.clone(), shape, n_batch, threads)?);
            let after = own_memory();
            let record = crate::registry::MemoryRecord {
                n_ctx: shape.n_ctx,
                n_seq: shape.n_seq,
                weights: l.model.size(),
                context_allocated: after.1.saturating_sub(before.1),
                context_resident: after.0.saturating_sub(before.0),
                at: crate::now_ms(),
            };
            tracing::info!(
                n_ctx = shape.n_ctx,
                n_seq = shape.n_seq,
                millis = started.elapsed().as_millis() as u64,
                allocated = record.context_allocated,
                resident = record.context_resident,
                "context ready"
            );
            l.info.memory = Some(record);
            let bytes = record.total();
            self.cache.resize_current(bytes);
        }
        let l = self.cache.current_mut().expect("made current above");
        l.info.n_ctx = shape.n_ctx;
        l.info.n_seq = shape.n_seq;
        Ok(l.info.clone())
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
        let l = self.current()?;
        Ok(l.model
            .vocab()
            .tokenize(prompt.as_bytes(), true, true)
            .len() as u32)
    }

    fn start(&mut self, request: SeqRequest) -> Result<(), EngineError> {
        let model = self.current()?.model.clone();
        self.session_mut()?.start(&model, request)
    }

    fn step(&mut self) -> Result<Vec<SeqDone>, EngineError> {
        let model = self.current()?.model.clone();
        self.session_mut()?.step(&model)
    }

    fn abort(&mut self, tag: u64) {
        if let Some(s) = self.session.as_mut() {
            s.abort(tag);
        }
    }

    fn active(&self) -> usize {
        self.session.as_ref().map_or(0, Session::active)
    }

    fn free_slots(&self) -> usize {
        self.session.as_ref().map_or(0, Session::free_slots)
    }

    fn unload(&mut self) {
        self.session = None;
        self.cache.clear(crate::now_ms());
    }

    fn loaded(&self) -> Option<&ModelRef> {
        self.cache.current().map(|(r, _)| r)
    }

    fn maintain(&mut self, now: crate::job::Millis) -> Vec<String> {
        if self.active() == 0 && self.session.is_some() {
            self.session = None;
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
}
