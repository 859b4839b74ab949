//! A context in which up to `n_seq` sequences decode together: the continuous batch.
//!
//! Each slot is one sequence id with its own KV stream (`kv_unified = false`), so a sequence's
//! attention runs over its own cells exactly as it would alone: greedy output does not depend on
//! who shares the batch. A step builds one `llama_batch` of at most `n_batch` tokens: first the
//! token each decoding sequence sampled last, then prompt pieces of newcomers in the order they
//! came. After the decode every sequence whose logits were asked samples with its own chain; a
//! sequence that ends frees its slot for the next one.
//!
//! A freed slot keeps the cells of its prompt: a new prompt skips what it shares with what a
//! slot holds (`engine::prefix`): its own slot's cells are kept, or another's copied, and only
//! the rest is decoded. The tokens skipped are the result's `cached_tokens`. With
//! batch-invariant kernels a cell's values do not depend on the batch that wrote it, so the
//! answer is the one a fresh decode gives (tested by `tests/prefix.rs`).

mod step;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::sampler;
use qwen3q::engine::prefix::{self, Holder, Start};
use qwen3q::engine::{EngineError, SeqRequest, Shape};
use qwen3q::job::Constraint;

/// One sequence in flight.
struct Slot {
    /// The caller's name for it.
    tag: u64,
    /// Order of arrival: prompts are fed first come, first served.
    arrival: u64,
    sampler: LlamaSampler,
    /// Greedy without a grammar: take the argmax of the logits directly instead of running
    /// the sampler, which would first copy all n_vocab candidates (for a 262k vocabulary that
    /// is a millisecond per token, a tenth of a small model's step at B = 4). Same token: the
    /// first of the largest logits, as llama.cpp's greedy sampler picks.
    argmax: bool,
    /// The prompt's tokens; `fed` of them are decoded (or copied from another slot).
    prompt: Vec<LlamaToken>,
    fed: usize,
    /// Prompt tokens not decoded for this sequence: its slot kept them, or they were copied.
    cached: usize,
    /// A copy to make before feeding: (donor slot, tokens), once the donor holds them.
    copy_from: Option<(usize, usize)>,
    /// The token sampled last, to decode next (None while the prompt is being fed).
    next: Option<LlamaToken>,
    /// Position of the next token to decode.
    pos: i32,
    /// Index in the current batch whose logits this slot samples after the decode.
    logits_at: Option<i32>,
    /// Bytes generated so far (pieces can split a UTF-8 character).
    out: Vec<u8>,
    /// Strings that end the generation (cut from `out`).
    stop: Vec<String>,
    /// A person waits for it: while its prompt is fed, no other prompt shares the step.
    urgent: bool,
    generated: u32,
    max_tokens: u32,
    started: Instant,
}

/// A context with its slots. The context borrows the model, which `_model` keeps alive.
pub(super) struct Session {
    // Fields drop in declaration order: the context (and the batch) before the model.
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    slots: Vec<Option<Slot>>,
    /// What each free slot's cells hold: the prompt of its last sequence (as far as it was
    /// fed). Empty for a slot in use, and for one whose cells were cleared.
    kept: Vec<Vec<LlamaToken>>,
    pub(super) shape: Shape,
    n_batch: usize,
    arrivals: u64,
    /// Tokens generated in this context.
    pub(super) generated: u64,
    /// The context's abort callback reads the interrupt flag (the last step was stoppable).
    stoppable: bool,
    /// For a model with sliding-window layers: the positions below which a sequence's cells
    /// in those layers are placed one after the other, never over older ones (see
    /// [`Session::undo`]); `None` for a model without them.
    window_ring: Option<usize>,
    _model: Arc<LlamaModel>,
}

impl Session {
    /// Make a context of `shape` for `model`.
    pub(super) fn new(
        model: Arc<LlamaModel>,
        shape: Shape,
        n_batch: u32,
        threads: i32,
        kernels: super::Kernels,
    ) -> Result<Self, EngineError> {
        let n_total = shape.n_ctx.saturating_mul(shape.n_seq);
        let params = llama_cpp_2::context::params::LlamaContextParams::default()
            // Flash attention where llama.cpp can (with batch-invariant kernels ggml runs its
            // reference form: one query row at a time over the whole KV range, BENCHMARKS.md).
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO)
            .with_n_ctx(std::num::NonZeroU32::new(n_total))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            // A step asks for the logits of one token per sequence at most (its decode token or
            // its prompt's last): llama.cpp then keeps logits for n_seq rows, not n_batch, in its
            // compute buffer (512 MiB less on gemma 3's 262k vocabulary).
            .with_n_outputs_max(shape.n_seq)
            .with_n_seq_max(shape.n_seq)
            .with_kv_unified(false)
            .with_swa_full(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        // SAFETY: the context borrows the model for as long as it lives. The model sits in an
        // Arc that this Session holds in `_model`, which is declared after `ctx` and `batch` and
        // so dropped after them; the reference never leaves the Session.
        let model_ref: &'static LlamaModel = unsafe { &*Arc::as_ptr(&model) };
        let ctx = {
            // ggml's CPU backend takes its `use_ref` switch (reference kernels: no llamafile
            // sgemm, no tiled product, no flash-attention tiling or KV split, no fused ops)
            // from a process-wide default when llama.cpp creates the context's backend, here
            // (a function the vendored llama-cpp-sys-2 adds: vendor/README.md). The lock keeps
            // two engines of one process from creating contexts with each other's choice.
            static CHOOSING: Mutex<()> = Mutex::new(());
            let _choosing = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: sets an atomic in ggml's CPU backend; read only when a backend is made.
            unsafe {
                llama_cpp_sys_2::ggml_cpu_set_default_use_ref(
                    kernels == super::Kernels::BatchInvariant,
                )
            };
            let ctx = model_ref.new_context(super::backend(), params);
            // Back to llama.cpp's default, so that nothing else that makes a CPU backend in
            // this process inherits the choice.
            // SAFETY: as above.
            unsafe { llama_cpp_sys_2::ggml_cpu_set_default_use_ref(false) };
            ctx.map_err(|_| EngineError::ContextFailed { n_ctx: n_total })?
        };
        Ok(Session {
            ctx,
            batch: LlamaBatch::new(n_batch as usize, 1),
            slots: (0..shape.n_seq).map(|_| None).collect(),
            kept: (0..shape.n_seq).map(|_| Vec::new()).collect(),
            shape,
            n_batch: n_batch as usize,
            arrivals: 0,
            generated: 0,
            stoppable: false,
            // llama.cpp sizes a sequence's sliding-window cache at n_swa + n_ubatch cells
            // (rounded up to 256, at most the context: `llama_kv_cache_iswa`).
            window_ring: match model.n_swa() {
                0 => None,
                n_swa => Some((n_swa as usize + n_batch as usize).min(shape.n_ctx as usize)),
            },
            _model: model,
        })
    }

    pub(super) fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub(super) fn longest_prompt(&self) -> u32 {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.prompt.len() as u32)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn free_slots(&self) -> usize {
        self.slots.len() - self.active()
    }

    pub(super) fn start(
        &mut self,
        model: &LlamaModel,
        request: SeqRequest,
    ) -> Result<(), EngineError> {
        if self.free_slots() == 0 {
            return Err(EngineError::NoFreeSlot(self.shape.n_seq));
        }
        let prompt = super::prompt::tokens(model, &request.prompt);
        // (Fields are built only when debug logging is on: the text is joined for it alone.)
        tracing::debug!(prompt = request.prompt.text(), tokens = ?prompt.iter().map(|t| t.0).collect::<Vec<_>>(), "generating");
        if prompt.is_empty() {
            return Err(EngineError::Decode("the prompt has no tokens".into()));
        }
        if prompt.len() as u32 >= self.shape.n_ctx {
            return Err(EngineError::ContextTooSmall {
                need: prompt.len() as u32 + 1,
                have: self.shape.n_ctx,
            });
        }
        let mut chain = Vec::new();
        if let Some(c) = &request.grammar {
            let gbnf = match c {
                Constraint::Grammar(g) => g.clone(),
                Constraint::JsonSchema(schema) => llama_cpp_2::json_schema_to_grammar(schema)
                    .map_err(|e| EngineError::Grammar(format!("JSON schema: {e}")))?,
            };
            chain.push(
                LlamaSampler::grammar(model, &gbnf, "root")
                    .map_err(|e| EngineError::Grammar(e.to_string()))?,
            );
        }
        chain.push(sampler(&request.sampling));
        let sampler = if chain.len() == 1 {
            chain.pop().expect("one sampler")
        } else {
            LlamaSampler::chain_simple(chain)
        };
        let argmax = request.sampling.temperature <= 0.0 && request.grammar.is_none();
        // A free slot, one whose cells no other sequence waits to copy if there is one, and
        // where in the prompt it starts.
        let free = self.pick_slot(&prompt)?;
        self.cancel_copies_from(free);
        let start = prefix::choose(&prompt, free, &self.holders());
        let (fed, copy_from) = match start {
            Start::Fresh => {
                self.clear(free, 0);
                (0, None)
            }
            Start::Own { len } => (self.keep_first(free, len), None),
            Start::Copy { donor, len } => (0, Some((donor, len))),
        };
        self.kept[free].clear();
        self.arrivals += 1;
        self.slots[free] = Some(Slot {
            argmax,
            tag: request.tag,
            arrival: self.arrivals,
            sampler,
            prompt,
            fed,
            cached: fed,
            copy_from,
            next: None,
            pos: fed as i32,
            logits_at: None,
            out: Vec::new(),
            stop: request.stop,
            urgent: request.urgent,
            generated: 0,
            max_tokens: request.sampling.max_tokens,
            started: Instant::now(),
        });
        Ok(())
    }

    pub(super) fn partial(&self, tag: u64, from: usize) -> Option<Vec<u8>> {
        let slot = self.slots.iter().flatten().find(|s| s.tag == tag)?;
        Some(slot.out.get(from..).unwrap_or_default().to_vec())
    }

    pub(super) fn abort(&mut self, tag: u64) {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.tag == tag))
        {
            self.free(i);
        }
    }

    /// The free slot a new prompt takes (see [`prefix::pick_slot`]): of those whose cells no
    /// sequence waits to copy, if there is one.
    fn pick_slot(&self, prompt: &[LlamaToken]) -> Result<usize, EngineError> {
        let awaited: Vec<usize> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| s.copy_from.map(|c| c.0))
            .collect();
        let free = |spare_awaited: bool| -> Vec<Holder<'_, LlamaToken>> {
            (0..self.slots.len())
                .filter(|&i| self.slots[i].is_none() && (!spare_awaited || !awaited.contains(&i)))
                .map(|i| Holder {
                    slot: i,
                    tokens: &self.kept[i],
                })
                .collect()
        };
        prefix::pick_slot(prompt, &free(true))
            .or_else(|| prefix::pick_slot(prompt, &free(false)))
            .ok_or(EngineError::NoFreeSlot(self.shape.n_seq))
    }

    /// Sequences waiting to copy slot `i`'s cells, which a new prompt now takes, feed their
    /// prompts from the start instead.
    fn cancel_copies_from(&mut self, i: usize) {
        for j in 0..self.slots.len() {
            if self.slots[j]
                .as_ref()
                .and_then(|s| s.copy_from)
                .map(|c| c.0)
                == Some(i)
            {
                self.clear(j, 0);
                self.slots[j].as_mut().expect("slot in use").copy_from = None;
            }
        }
    }

    /// What every slot holds or will hold: a free slot its kept cells, one in use its prompt
    /// (fed now, or soon). A slot that waits for a copy itself is no donor (no chains, no
    /// cycles).
    fn holders(&self) -> Vec<Holder<'_, LlamaToken>> {
        (0..self.slots.len())
            .filter_map(|i| match &self.slots[i] {
                Some(s) if s.copy_from.is_some() => None,
                Some(s) => Some(Holder {
                    slot: i,
                    tokens: &s.prompt,
                }),
                None => Some(Holder {
                    slot: i,
                    tokens: &self.kept[i],
                }),
            })
            .collect()
    }

    /// Keep slot `i`'s cells of positions `0..len`, if it still holds them all; the tokens it
    /// kept (0 when it did not: then it holds nothing). A model with sliding-window attention
    /// drops a layer's cells that fall out of its window as a sequence grows (llama.cpp's
    /// `swa_full = false`); a prompt may only start after cells that are all there.
    fn keep_first(&mut self, i: usize, len: usize) -> usize {
        self.clear(i, len);
        // The smallest position held in every layer (a sliding-window layer's, where it is
        // larger): 0 when the cells start at the prompt's start, -1 when a layer holds none.
        if len == 0 || self.ctx.kv_cache_seq_pos_min(i as i32) != 0 {
            self.clear(i, 0);
            return 0;
        }
        len
    }

    /// Drop slot `i`'s cells from position `from` on (all of them for 0).
    fn clear(&mut self, i: usize, from: usize) {
        // Removing cells of a valid sequence id cannot fail (it can only for recurrent models,
        // and only a part of a sequence).
        let from = (from > 0).then_some(from as u32);
        let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), from, None);
    }

    /// Free slot `i`; its cells keep the prompt as far as it was fed, for the next prompt
    /// that starts the same way.
    fn free(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots[i].take()?;
        let mut kept = slot.prompt.clone();
        // Fed, or waiting for a copy that never came (then nothing of it is in the cells).
        kept.truncate(if slot.copy_from.is_some() {
            0
        } else {
            slot.fed
        });
        self.kept[i] = kept;
        Some(slot)
    }

    /// Drop every sequence and every kept cell (after a failed decode the cache holds
    /// half-written cells).
    fn free_all(&mut self) {
        for i in 0..self.slots.len() {
            self.slots[i] = None;
            self.kept[i].clear();
            self.clear(i, 0);
        }
    }

    /// Make the copies whose donors now hold the tokens (a donor is never itself waiting:
    /// see [`Session::holders`]). A donor's slot that another prompt took since still serves if
    /// that prompt shares the tokens; otherwise the waiting sequence feeds from its start.
    fn adopt(&mut self) -> Result<(), EngineError> {
        for i in 0..self.slots.len() {
            let Some((slot_prompt, (donor, len))) = self.slots[i]
                .as_ref()
                .and_then(|s| s.copy_from.map(|c| (&s.prompt, c)))
            else {
                continue;
            };
            // What the donor's slot holds, how much of it is in its cells, and whether the rest
            // is still being fed (a sequence in use that waits for no copy of its own).
            let (held, fed, feeding) = match &self.slots[donor] {
                Some(d) if d.copy_from.is_none() => (&d.prompt, d.fed, true),
                Some(_) => (&self.kept[donor], 0, false),
                None => (&self.kept[donor], self.kept[donor].len(), false),
            };
            let shares = prefix::common_prefix(held, slot_prompt) >= len;
            if shares && fed >= len {
                // llama.cpp copies the donor's whole stream at the next decode, before that
                // decode's tokens are computed; the cells after `len` are dropped here.
                self.ctx
                    .copy_kv_cache_seq(donor as i32, i as i32, None, None)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
                let len = self.keep_first(i, len);
                let slot = self.slots[i].as_mut().expect("slot in use");
                slot.copy_from = None;
                slot.fed = len;
                slot.cached = len;
                slot.pos = len as i32;
            } else if !(shares && feeding) {
                self.clear(i, 0);
                self.slots[i].as_mut().expect("slot in use").copy_from = None;
            }
        }
        Ok(())
    }
}
