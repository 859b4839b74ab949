//! The anchor for the worker's throughput: a raw batched decode in the method of llama.cpp's
//! `llama-batched-bench`, on the same llama.cpp build and with the same context settings the
//! worker uses (one KV stream per sequence, `n_batch = n_ubatch`, SWA cache not full).
//!
//! For B sequences: one decode feeds every sequence's `pp` prompt tokens (in `n_batch` slices),
//! then `tg` decode calls each add one token per sequence. Like `llama-batched-bench` it does
//! not sample (the token fed is fixed); the times are the decode calls' own.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::session::Session;
use super::{backend, decode_err};
use crate::engine::{EngineError, Shape};

/// What one raw run measured.
#[derive(Debug, Clone, Copy)]
pub struct AnchorRun {
    /// Seconds spent decoding the prompts, and generating.
    pub pp_secs: f64,
    pub tg_secs: f64,
    /// Tokens decoded: B × pp and B × tg.
    pub pp_tokens: u64,
    pub tg_tokens: u64,
}

/// A loaded model for repeated raw runs.
pub struct Anchor {
    model: Arc<LlamaModel>,
    n_batch: u32,
    threads: i32,
}

impl Anchor {
    pub fn load(path: &Path, n_batch: u32, threads: u32) -> Result<Anchor, EngineError> {
        let model = LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
            .map_err(|_| EngineError::LoadFailed {
                path: path.display().to_string(),
            })?;
        let threads = if threads > 0 {
            threads as i32
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
        };
        Ok(Anchor {
            model: Arc::new(model),
            n_batch,
            threads,
        })
    }

    /// One run of B = `shape.n_seq` sequences of `pp` prompt and `tg` generated tokens.
    pub fn run(&self, shape: Shape, pp: u32, tg: u32) -> Result<AnchorRun, EngineError> {
        let mut s = Session::new(self.model.clone(), shape, self.n_batch, self.threads)?;
        let b = shape.n_seq as usize;
        let n_batch = self.n_batch as usize;
        let mut batch = LlamaBatch::new(n_batch, 1);
        let add_err =
            |e: llama_cpp_2::llama_batch::BatchAddError| EngineError::Decode(e.to_string());
        // Prompts: B × pp tokens, every sequence's last token asking for logits.
        let token = LlamaToken(0); // as llama-batched-bench feeds
        let started = Instant::now();
        let all: Vec<(usize, u32)> = (0..b).flat_map(|j| (0..pp).map(move |p| (j, p))).collect();
        for slice in all.chunks(n_batch) {
            batch.clear();
            for &(j, p) in slice {
                batch
                    .add(token, p as i32, &[j as i32], p + 1 == pp)
                    .map_err(add_err)?;
            }
            s.ctx_mut().decode(&mut batch).map_err(decode_err)?;
        }
        s.ctx_mut().synchronize();
        let pp_secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for i in 0..tg {
            batch.clear();
            for j in 0..b {
                batch
                    .add(token, (pp + i) as i32, &[j as i32], true)
                    .map_err(add_err)?;
            }
            s.ctx_mut().decode(&mut batch).map_err(decode_err)?;
        }
        s.ctx_mut().synchronize();
        Ok(AnchorRun {
            pp_secs,
            tg_secs: started.elapsed().as_secs_f64(),
            pp_tokens: (b as u64) * pp as u64,
            tg_tokens: (b as u64) * tg as u64,
        })
    }
}
