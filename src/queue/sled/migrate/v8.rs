//! Schema 7 → 8 (`migrations/0008_provenance.md`): `JobResult` gains `provenance`, what
//! reproduces an answer (the model's identity, the template, the kernels, the engine), and
//! `cached_tokens`, the prompt tokens whose KV cells were reused; a checkpoint (`ChunkOutput`)
//! gains `cached_tokens` too. A result written before holds `None` (what ran it was not
//! recorded) and 0 (nothing was reused before schema 8). Every other value keeps its layout and
//! only changes its version byte ([`super::super::codec::READS_FROM`] becomes 8).
//!
//! Crash-safe without a transaction: a value already at version 8 is left alone, so a
//! migration cut short simply runs again (the stored version changes only at the end).

use serde::{Deserialize, Serialize};

use super::super::trees::t;
use super::super::{Result, SledStore};
use crate::job::{ChunkOutput, JobResult, Millis, ModelRef, Usage};
use crate::queue::Queue;

/// `JobResult` as schemas 3 to 7 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct ResultV7 {
    pub answer: String,
    pub reasoning: Option<String>,
    pub usage: Usage,
    pub model: ModelRef,
    pub n_ctx: u32,
    pub chunks: u32,
    pub reduced: bool,
    pub started: Millis,
    pub finished: Millis,
    pub generation_millis: u64,
    pub attempts: u32,
    pub n_seq: u32,
    pub json: Option<String>,
    pub choice: Option<String>,
}

/// `ChunkOutput` as schemas 3 to 7 wrote it.
#[derive(Deserialize, Serialize)]
pub(super) struct ChunkV7 {
    pub text: String,
    pub reasoning: Option<String>,
    pub usage: Usage,
    pub millis: u64,
    pub n_ctx: u32,
    pub chunks_total: u32,
    pub model: String,
}

fn chunk_v8(c: ChunkV7) -> ChunkOutput {
    ChunkOutput {
        text: c.text,
        reasoning: c.reasoning,
        usage: c.usage,
        millis: c.millis,
        n_ctx: c.n_ctx,
        chunks_total: c.chunks_total,
        model: c.model,
        cached_tokens: 0,
    }
}

fn result_v8(r: ResultV7) -> JobResult {
    JobResult {
        answer: r.answer,
        reasoning: r.reasoning,
        usage: r.usage,
        model: r.model,
        n_ctx: r.n_ctx,
        chunks: r.chunks,
        reduced: r.reduced,
        started: r.started,
        finished: r.finished,
        generation_millis: r.generation_millis,
        attempts: r.attempts,
        n_seq: r.n_seq,
        json: r.json,
        choice: r.choice,
        provenance: None,
        cached_tokens: 0,
    }
}

/// The versions whose values this step reads: 5 to 7 shared one layout.
const FROM: [u8; 3] = [5, 6, 7];

pub fn run(store: &SledStore) -> Result<()> {
    let others: Vec<usize> = super::VERSIONED
        .into_iter()
        .filter(|&tree| tree != t::RESULTS && tree != t::CHECKPOINTS)
        .collect();
    super::relabel(store, &others, &FROM, 8)?;
    super::rewrite(store, t::RESULTS, &FROM, 8, result_v8)?;
    super::rewrite(store, t::CHECKPOINTS, &FROM, 8, chunk_v8)?;
    store.flush()
}
