//! Predicting what a model needs in memory for a context shape, from its GGUF header alone.
//! Pure: the measured figures that replace a prediction after a real load live in the store.
//!
//! The parts, as llama.cpp allocates them (CPU backend, f16 KV cache, `kv_unified = false`,
//! SWA cache not full, `n_batch = n_ubatch`):
//! - weights: the tensor data (mapped from the file);
//! - KV cache: per cell and layer `kv_heads × (key + value length) × 2` bytes; full-attention
//!   layers hold `n_ctx` cells per sequence, sliding-window layers `min(n_ctx, window + n_ubatch)`
//!   cells per sequence (rounded up to 256, llama.cpp's padding);
//! - compute buffer: the graph's worst case, dominated by the logits of a whole ubatch
//!   (`n_ubatch × n_vocab × 4` bytes) plus activations of the ubatch.

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

    /// Bytes of llama.cpp's compute buffer for ubatches of `n_ubatch` tokens.
    pub fn compute_bytes(&self, n_ubatch: u64) -> u64 {
        let vocab = self.vocab_size.unwrap_or(0);
        let embd = self.embedding.unwrap_or(0);
        // Logits of the ubatch, plus a few activation rows per token.
        product(&[n_ubatch, vocab, 4]).saturating_add(product(&[n_ubatch, embd, 4, 8]))
    }

    /// What `n_seq` sequences of `n_ctx` tokens need. The compute part includes the output
    /// buffer (one row of logits per sequence).
    pub fn predict(&self, n_ctx: u64, n_seq: u64, n_ubatch: u64) -> Prediction {
        let output = product(&[n_seq, self.vocab_size.unwrap_or(0), 4]);
        Prediction {
            weights: self.weight_bytes,
            kv_cache: self.kv_cache_bytes(n_ctx, n_ubatch, n_seq),
            compute: self.compute_bytes(n_ubatch).saturating_add(output),
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

    #[test]
    fn compute_is_dominated_by_the_ubatch_logits() {
        let g = gemma();
        let c = g.compute_bytes(512);
        assert!((512 * 262_144 * 4..540 * 1024 * 1024).contains(&c), "{c}");
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
        let p = g.predict(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(p.total(), u64::MAX);
    }
}
