//! Predicting what a model needs in memory for a context shape, from its GGUF header alone.
//! Pure: the measured figures that replace a prediction after a real load live in the store.
//!
//! The parts, as llama.cpp allocates them (CPU backend, f16 KV cache, `kv_unified = false`,
//! SWA cache not full, `n_batch = n_ubatch`, `n_outputs_max = n_seq`):
//! - weights: the tensor data (mapped from the file);
//! - KV cache: per cell and layer `kv_heads × (key + value length) × 2` bytes; full-attention
//!   layers hold `n_ctx` cells per sequence, sliding-window layers `min(n_ctx, window + n_ubatch)`
//!   cells per sequence (rounded up to 256, llama.cpp's padding);
//! - compute buffer: the graph's worst case for a ubatch ([`Graph`]): its activations (the
//!   residual stream, Q/K/V, the feed-forward layer), its attention over `n_ctx` cells (only
//!   the f16 mask with flash attention; the f32 scores of every head and the mask without), and
//!   the logits of the tokens whose output is asked — one per sequence, as the engine sets
//!   llama.cpp's `n_outputs_max`; llama.cpp's default, every token of the ubatch, made the
//!   logits alone 512 MiB on a 262k vocabulary. The three are summed: llama.cpp reuses memory
//!   between them, so this stays above what it allocates (`compute_follows_what_llama_cpp_allocates`
//!   holds it within 2× of llama.cpp's own figures, and above them).

use super::gguf::ModelFacts;

/// How many layers in `pattern` use the sliding window, for architectures that interleave
/// sliding-window and full-attention layers (llama.cpp's `swa_pattern`): e.g. gemma3 has five
/// sliding layers, then one full one.
fn swa_pattern(architecture: &str) -> Option<u64> {
    match architecture {
        "gemma3" | "gemma3n" => Some(6),
        "gemma2" => Some(2),
        "cohere2" | "llama4" => Some(4),
        _ => None,
    }
}

fn pad(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

/// A product of header numbers (a hostile header's overflow saturates: such a model "needs"
/// more than any machine has, and the gate says so).
fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |a, &f| a.saturating_mul(f))
}

/// A prediction, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Prediction {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
}

impl Prediction {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.compute)
    }
}

impl ModelFacts {
    /// Bytes of the KV cache for `n_seq` sequences of `n_ctx` tokens each.
    pub fn kv_cache_bytes(&self, n_ctx: u64, n_ubatch: u64, n_seq: u64) -> u64 {
        let (Some(layers), Some(kv_heads), Some(head)) =
            (self.layers, self.kv_heads, self.head_size)
        else {
            return 0;
        };
        let per_cell_layer = product(&[kv_heads, head, 2, 2]);
        let full_cells = pad(n_ctx, 256);
        let (swa_layers, swa_cells) = match (self.sliding_window, swa_pattern(&self.architecture)) {
            (Some(window), Some(pattern)) if window > 0 => {
                // Of layers 0, 1, …, every pattern-th (il % pattern == pattern - 1) is a full
                // one: layers / pattern of them.
                let swa_layers = layers - layers / pattern;
                (
                    swa_layers,
                    pad(window.saturating_add(n_ubatch).min(n_ctx), 256).min(full_cells),
                )
            }
            _ => (0, 0),
        };
        let full_layers = layers - swa_layers;
        let cells =
            product(&[full_layers, full_cells]).saturating_add(product(&[swa_layers, swa_cells]));
        product(&[n_seq, per_cell_layer, cells])
    }

    /// Bytes of llama.cpp's compute buffer for `n_seq` sequences of `n_ctx` tokens (see the
    /// module docs).
    pub fn compute_bytes(&self, n_ctx: u64, n_seq: u64, graph: Graph) -> u64 {
        let vocab = self.vocab_size.unwrap_or(0);
        let embd = self.embedding.unwrap_or(0);
        let ff = self.feed_forward.unwrap_or(embd.saturating_mul(4));
        let heads = self.heads.unwrap_or(1);
        let qkv = product(&[
            heads.saturating_add(self.kv_heads.unwrap_or(heads).saturating_mul(2)),
            self.head_size.unwrap_or(0),
        ]);
        let per_token = product(&[embd, 4])
            .saturating_add(qkv)
            .saturating_add(product(&[ff, 3]));
        let activations = product(&[graph.n_ubatch, per_token, 4]);
        let cells = pad(n_ctx, 256);
        let attention = if graph.flash_attn {
            product(&[graph.n_ubatch, cells, 2])
        } else {
            product(&[graph.n_ubatch, cells, heads.saturating_add(1), 4])
        };
        let logits = product(&[graph.n_ubatch.min(n_seq).max(1), vocab, 4]);
        activations.saturating_add(attention).saturating_add(logits)
    }

    /// What `n_seq` sequences of `n_ctx` tokens need with contexts built as `graph`. The
    /// compute part includes the output buffer (one row of logits per sequence) and what a
    /// context takes beside its buffers ([`CONTEXT_OVERHEAD`]).
    pub fn predict(&self, n_ctx: u64, n_seq: u64, graph: Graph) -> Prediction {
        let output = product(&[n_seq, self.vocab_size.unwrap_or(0), 4]);
        Prediction {
            weights: self.weight_bytes,
            kv_cache: self.kv_cache_bytes(n_ctx, graph.n_ubatch, n_seq),
            compute: self
                .compute_bytes(n_ctx, n_seq, graph)
                .saturating_add(output)
                .saturating_add(CONTEXT_OVERHEAD),
        }
    }
}

/// What creating a context takes beyond llama.cpp's KV, compute and output buffers: the graph's
/// metadata, the CPU backend's scratch, and on the first context of a process its threads'
/// stacks and heap arenas. Measured as the process's growth in allocated memory less those
/// buffers (n_ubatch 512, 2 threads): 15–19 MiB with the tiny model, 27–37 MiB with gemma 3
/// (`models inspect` shows the measured totals beside the prediction).
pub const CONTEXT_OVERHEAD: u64 = 16 << 20;

/// How an engine builds a context's graph, as far as its compute buffer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graph {
    /// Tokens of one ubatch (the engine's `n_batch`).
    pub n_ubatch: u64,
    /// Flash attention: a ubatch's attention scores are never materialised, only its mask.
    pub flash_attn: bool,
}

impl Graph {
    /// llama.cpp's default ubatch (the engine's `n_batch`).
    pub const N_UBATCH: u64 = 512;
}

impl Default for Graph {
    /// llama.cpp's default ubatch, and flash attention ("auto", which the CPU backend
    /// supports) with either kernels: batch-invariant ones run ggml's reference form of it.
    fn default() -> Graph {
        Graph {
            n_ubatch: Self::N_UBATCH,
            flash_attn: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma() -> ModelFacts {
        ModelFacts {
            architecture: "gemma3".into(),
            name: None,
            parameters: 268_098_176,
            quantization: "Q4_K_M".into(),
            file_bytes: 253_000_000,
            weight_bytes: 250_000_000,
            layers: Some(18),
            embedding: Some(640),
            feed_forward: Some(2048),
            heads: Some(4),
            kv_heads: Some(1),
            head_size: Some(256),
            context_length: Some(32768),
            sliding_window: Some(512),
            vocab_size: Some(262_144),
            chat_template: false,
        }
    }

    #[test]
    fn gemma3_kv_matches_what_llama_cpp_allocates() {
        let g = gemma();
        // llama.cpp at n_ctx 4096, one sequence, n_ubatch 512: 12 MiB for the 3 full layers;
        // the 15 sliding layers hold 512 + 512 cells (60 MiB only with swa_full).
        let mib = 1024 * 1024;
        assert_eq!(g.kv_cache_bytes(4096, 512, 1), 12 * mib + 15 * mib);
        // n_ctx 1024, four sequences: 12 MiB full + 60 MiB sliding (its own log lines).
        assert_eq!(g.kv_cache_bytes(1024, 512, 4), 72 * mib);
    }

    fn tiny() -> ModelFacts {
        ModelFacts {
            architecture: "qwen3".into(),
            embedding: Some(64),
            feed_forward: Some(128),
            heads: Some(4),
            kv_heads: Some(2),
            head_size: Some(16),
            layers: Some(2),
            sliding_window: None,
            vocab_size: Some(151_936),
            ..gemma()
        }
    }

    #[test]
    #[allow(clippy::approx_constant)] // 3.14 MiB is llama.cpp's figure, not π
    fn compute_follows_what_llama_cpp_allocates() {
        // llama.cpp's "CPU compute buffer size" lines (llama-cpp-sys-2 0.1.161, n_ubatch 512,
        // n_outputs_max = n_seq; `RUST_LOG=llama-cpp-2=info qwen3q worker`), in MiB: model,
        // n_ctx, n_seq, flash attention, what llama.cpp allocated.
        let measured = [
            (gemma(), 2048, 4, true, 21.28),
            (gemma(), 4096, 1, true, 23.28),
            (gemma(), 4096, 4, true, 23.28),
            (gemma(), 4096, 8, true, 23.28),
            (gemma(), 8192, 4, true, 27.28),
            (gemma(), 2048, 4, false, 34.27),
            (gemma(), 8192, 4, false, 94.27),
            (tiny(), 2048, 4, true, 3.14),
            (tiny(), 4096, 1, true, 5.14),
            (tiny(), 4096, 4, true, 5.14),
            (tiny(), 4096, 8, true, 9.28),
            (tiny(), 8192, 4, true, 9.14),
            (tiny(), 2048, 4, false, 20.89),
            (tiny(), 8192, 4, false, 80.89),
        ];
        for (facts, n_ctx, n_seq, flash_attn, mib) in measured {
            let graph = Graph {
                n_ubatch: 512,
                flash_attn,
            };
            let predicted = facts.compute_bytes(n_ctx, n_seq, graph) as f64 / (1u64 << 20) as f64;
            let what = format!(
                "{} n_ctx {n_ctx} n_seq {n_seq} fa {flash_attn}: {predicted:.2} MiB predicted, {mib} allocated",
                facts.architecture
            );
            assert!(predicted >= mib, "under: {what}");
            assert!(predicted <= 2.0 * mib, "far over: {what}");
        }
        // The logits of a whole ubatch (llama.cpp's default n_outputs_max) are not reserved:
        // gemma's compute at four sequences is under a tenth of them.
        let c = gemma().compute_bytes(4096, 4, Graph::default());
        assert!(c < 512 * 262_144 * 4 / 10, "{c}");
    }

    #[test]
    fn a_hostile_header_saturates_the_prediction_at_once() {
        // Numbers a damaged or hostile header may hold: no overflow, no loop over 2^64 layers,
        // and a need no machine has (the gate then says so).
        let mut g = gemma();
        g.layers = Some(u64::MAX);
        g.kv_heads = Some(u64::MAX / 3);
        g.vocab_size = Some(u64::MAX);
        g.sliding_window = Some(u64::MAX);
        // (A loop over the layers would not end: the test would hang.)
        g.feed_forward = Some(u64::MAX);
        for flash_attn in [true, false] {
            let graph = Graph {
                n_ubatch: u64::MAX,
                flash_attn,
            };
            assert_eq!(g.predict(u64::MAX, u64::MAX, graph).total(), u64::MAX);
        }
        let p = g.predict(u64::MAX, u64::MAX, Graph::default());
        assert_eq!(p.total(), u64::MAX);
    }
}
