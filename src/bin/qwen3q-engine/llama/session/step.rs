//! One step of a [`Session`]: the batch it builds, the decode, what is sampled after it, and
//! what a stopped decode takes back.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use super::super::decode_err;
use super::Session;
use qwen3q::engine::{EngineError, FinishReason, Generation, SeqDone};

impl Session {
    /// One decode of the batch; `prompt_cap`: at most this many prompt tokens of batch
    /// sequences in it; `interrupt`: a flag that, raised while the decode runs, stops it (see
    /// [`Session::undo`]) unless the step feeds a person's prompt. `None` for a stopped step.
    pub(crate) fn step(
        &mut self,
        model: &LlamaModel,
        prompt_cap: Option<u32>,
        interrupt: Option<&Arc<AtomicBool>>,
    ) -> Result<Option<Vec<SeqDone>>, EngineError> {
        self.adopt()?;
        self.batch.clear();
        let mut fed = Vec::new();
        let add_err =
            |e: llama_cpp_2::llama_batch::BatchAddError| EngineError::Decode(e.to_string());
        let mut feeding: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .as_ref()
                    .is_some_and(|s| s.copy_from.is_none() && s.fed < s.prompt.len())
            })
            .collect();
        // While a person's prompt is fed, the step carries only what a person waits for (that
        // prompt, and chats already answering): its first token comes as soon as its own
        // prompt is decoded. Batch sequences wait one step, their next token kept.
        let urgent = |i: &usize| self.slots[*i].as_ref().is_some_and(|s| s.urgent);
        let person_first = feeding.iter().any(urgent);
        if person_first {
            feeding.retain(urgent);
        }
        // 1. One token for every decoding sequence.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if person_first && !slot.urgent {
                continue;
            }
            if let Some(t) = slot.next.take() {
                fed.push(Fed::Token {
                    slot: i,
                    token: t,
                    pos: slot.pos,
                });
                self.batch
                    .add(t, slot.pos, &[i as i32], true)
                    .map_err(add_err)?;
                slot.logits_at = Some(self.batch.n_tokens() - 1);
                slot.pos += 1;
            }
        }
        // 2. Prompt pieces with the room left, first come first served (a batch prompt's
        //    within the cap).
        feeding.sort_by_key(|&i| self.slots[i].as_ref().map(|s| s.arrival));
        let mut capped = prompt_cap.map_or(usize::MAX, |c| c.max(1) as usize);
        for i in feeding {
            let room = self.n_batch - self.batch.n_tokens() as usize;
            let slot = self.slots[i].as_mut().expect("feeding slot exists");
            let room = if slot.urgent { room } else { room.min(capped) };
            if room == 0 {
                break;
            }
            let take = room.min(slot.prompt.len() - slot.fed);
            if !slot.urgent {
                capped -= take;
            }
            for k in slot.fed..slot.fed + take {
                let last = k + 1 == slot.prompt.len();
                self.batch
                    .add(slot.prompt[k], k as i32, &[i as i32], last)
                    .map_err(add_err)?;
                if last {
                    slot.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
            fed.push(Fed::Prompt {
                slot: i,
                from: slot.fed,
            });
            slot.fed += take;
            slot.pos = slot.fed as i32;
        }
        if self.batch.n_tokens() == 0 {
            return Ok(Some(Vec::new()));
        }
        // 3. Decode (a step that feeds no person's prompt may be stopped by a chat that comes,
        //    if what it stops can be taken back exactly).
        let stoppable = interrupt.filter(|_| !person_first && self.undoable(&fed));
        if stoppable.is_some() != self.stoppable {
            self.ctx.set_abort_flag(stoppable.cloned());
            self.stoppable = stoppable.is_some();
        }
        let decoding = Instant::now();
        let decoded =
            qwen3q::engine::quiet::stoppable(stoppable, || self.ctx.decode(&mut self.batch));
        match decoded {
            Ok(()) => {}
            Err(DecodeError::Unknown(ABORTED)) => {
                self.undo(&fed);
                tracing::trace!(
                    tokens = self.batch.n_tokens(),
                    ms = decoding.elapsed().as_millis() as u64,
                    "decode stopped for a chat"
                );
                return Ok(None);
            }
            Err(e) => {
                self.free_all();
                return Err(decode_err(e));
            }
        }
        tracing::trace!(
            tokens = self.batch.n_tokens(),
            person_first,
            ms = decoding.elapsed().as_millis() as u64,
            "decoded"
        );
        // 4. Sample, and end the sequences that are done.
        let vocab = model.vocab();
        let n_ctx = self.shape.n_ctx as i32;
        let mut done = Vec::new();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            let Some(at) = slot.logits_at.take() else {
                continue;
            };
            let finish = if slot.max_tokens == 0 {
                Some(FinishReason::Length)
            } else {
                let token = if slot.argmax {
                    argmax(self.ctx.get_logits_ith(at))
                } else {
                    slot.sampler.sample(&self.ctx, at)
                };
                if vocab.is_eog(token) {
                    Some(FinishReason::Stop)
                } else {
                    slot.generated += 1;
                    self.generated += 1;
                    let before = slot.out.len();
                    vocab.token_to_piece_into(token, &mut slot.out, false, None);
                    if let Some(at) = qwen3q::engine::stops::find(&slot.out, &slot.stop, before) {
                        slot.out.truncate(at);
                        Some(FinishReason::Stop)
                    } else if slot.generated >= slot.max_tokens {
                        Some(FinishReason::Length)
                    } else if slot.pos >= n_ctx {
                        Some(FinishReason::ContextFull)
                    } else {
                        slot.next = Some(token);
                        None
                    }
                }
            };
            if let Some(finish) = finish {
                let slot = self.free(i).expect("slot exists");
                done.push(SeqDone {
                    tag: slot.tag,
                    result: Ok(Generation {
                        text: String::from_utf8_lossy(&slot.out).into_owned(),
                        prompt_tokens: slot.prompt.len() as u32,
                        cached_tokens: slot.cached as u32,
                        completion_tokens: slot.generated,
                        finish,
                        millis: slot.started.elapsed().as_millis() as u64,
                    }),
                });
            }
        }
        Ok(Some(done))
    }
}

/// What a step put in its batch for one slot: what [`Session::undo`] takes back.
enum Fed {
    /// The token the slot sampled last, at `pos`.
    Token {
        slot: usize,
        token: LlamaToken,
        pos: i32,
    },
    /// Prompt tokens from `from` (the slot's `fed` before the step).
    Prompt { slot: usize, from: usize },
}

impl Fed {
    fn slot(&self) -> usize {
        match *self {
            Fed::Token { slot, .. } | Fed::Prompt { slot, .. } => slot,
        }
    }
}

/// What `llama_decode` returns when its abort callback stopped it.
const ABORTED: std::ffi::c_int = 2;

impl Session {
    /// Whether a stop of this step can be taken back so that the answers are the ones an
    /// uninterrupted decode gives, bit for bit (with batch-invariant kernels): always for a
    /// model without sliding-window layers, else while every sequence of the step stays below
    /// [`Session::window_ring`].
    ///
    /// A sliding-window layer keeps a ring of cells per sequence; once a sequence's positions
    /// pass its size, new cells go over old ones that the window no longer sees. Removing
    /// cells moves llama.cpp's search start back to the lowest cell freed (`seq_rm`), and to
    /// the ring's start when few cells are in use (`find_slot`): cells taken back from past
    /// the ring's end would be written again elsewhere in it, and the attention, which sums
    /// over cells in their order, would round differently than where they would otherwise
    /// have gone (read in llama.cpp's sources; `tests/interactive.rs` stays below the ring).
    /// Below the ring's size no cell is ever reused: position p sits in cell p, and what is
    /// taken back is the ring's tail, written again in the same cells. A longer sequence's
    /// steps run to their end: a chat that comes then waits for the step in progress.
    fn undoable(&self, fed: &[Fed]) -> bool {
        self.window_ring.is_none_or(|ring| {
            fed.iter().all(|f| {
                self.slots[f.slot()]
                    .as_ref()
                    .is_some_and(|s| s.pos.max(0) as usize <= ring)
            })
        })
    }

    /// A decode was stopped (a chat came): every slot goes back to where the step found it,
    /// its cells to what they held before it, and the next steps decode the same tokens again.
    ///
    /// llama.cpp splits a step into ubatches (with `kv_unified = false`, consecutive sequence
    /// ids with the same number of tokens each), computes them in turn, and on the abort
    /// removes the positions of the one it stopped; those before stay in the cache, and no
    /// logits of the call can be read. So each slot drops what the step added to its cells
    /// (from its sequence's end, never before a position this step fed, and only in steps
    /// [`Session::undoable`] lets stop, so they are written again in the same cells with the
    /// same values). Keeping the prompt tokens of an earlier ubatch would save a few, but it
    /// was seen to change a batch answer's last token in `tests/interactive.rs` (two runs in
    /// three, against none in three when they are dropped; why, llama.cpp's sources did not
    /// tell): dropped, at the cost of one token per stopped prompt piece.
    fn undo(&mut self, fed: &[Fed]) {
        for f in fed {
            let i = f.slot();
            let slot = self.slots[i].as_mut().expect("a slot fed in this step");
            slot.logits_at = None;
            let keep = match *f {
                Fed::Token { token, pos, .. } => {
                    slot.next = Some(token);
                    slot.pos = pos;
                    pos as usize
                }
                Fed::Prompt { from, .. } => {
                    slot.fed = from;
                    slot.pos = from as i32;
                    from
                }
            };
            // What the step wrote from `keep` on, in the ubatches before the stopped one (a
            // slot with nothing there loses nothing: `seq_rm` frees no cell, moves no head).
            self.clear(i, keep);
        }
    }
}

/// The first index of the largest logit. Two passes over the row: the largest value in 16
/// lanes (which the compiler turns into vector max instructions: this runs once per sequence
/// per step over the whole vocabulary, 262k floats for gemma), then its first position.
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(rest) {
        if x > max {
            max = x;
        }
    }
    LlamaToken(logits.iter().position(|&x| x == max).unwrap_or(0) as i32)
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_the_largest() {
        let mut v: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        let naive = |v: &[f32]| {
            let mut best = 0;
            for (i, &x) in v.iter().enumerate() {
                if x > v[best] {
                    best = i;
                }
            }
            best as i32
        };
        assert_eq!(argmax(&v).0, naive(&v));
        v[999] = 500.0; // in the remainder
        assert_eq!(argmax(&v).0, 999);
        v[3] = 500.0; // a tie: the first wins
        assert_eq!(argmax(&v).0, 3);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 5]).0, 0);
    }
}
