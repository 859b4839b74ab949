#!/usr/bin/env python3
"""Write a tiny GGUF of the real `qwen3` architecture, for fast tests of the real llama.cpp path.

Random weights (fixed seed, so the file is byte-for-byte reproducible), but the real Qwen2/Qwen3
BPE tokenizer (151,936 tokens) and Qwen3's own chat template, so prompts are rendered and
tokenized exactly as for a real Qwen3 GGUF. Two layers of width 64: it loads in a blink and
generates hundreds of tokens per second on two cores; greedy output is deterministic.

usage: make_tiny_qwen3.py VOCAB_GGUF TEMPLATE_JINJA OUT_GGUF
  VOCAB_GGUF      llama.cpp's models/ggml-vocab-qwen2.gguf
  TEMPLATE_JINJA  llama.cpp's models/templates/Qwen-Qwen3-0.6B.jinja
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType, TokenType

# Qwen3's added tokens after <|endoftext|> (151643), <|im_start|> (151644), <|im_end|> (151645),
# as in Qwen3's tokenizer_config.json. The <|...|> ones are control tokens; the others are
# plain added ("user defined") tokens, as llama.cpp's converter marks them.
ADDED = [
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
    "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
FIRST_ADDED = 151646
IM_END = 151645
ENDOFTEXT = 151643

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_FF = 128
N_CTX_TRAIN = 40960


def field(reader, key):
    return reader.fields[key].contents()


def main():
    vocab_path, template_path, out_path = sys.argv[1:4]
    vocab = GGUFReader(vocab_path)
    tokens = list(field(vocab, "tokenizer.ggml.tokens"))
    types = list(field(vocab, "tokenizer.ggml.token_type"))
    merges = list(field(vocab, "tokenizer.ggml.merges"))
    assert len(tokens) == 151936, len(tokens)
    for i, tok in enumerate(ADDED):
        tid = FIRST_ADDED + i
        tokens[tid] = tok
        types[tid] = TokenType.CONTROL if tok.startswith("<|") else TokenType.USER_DEFINED
    with open(template_path, encoding="utf-8") as f:
        template = f.read()

    w = GGUFWriter(out_path, "qwen3")
    w.add_name("qwen3-tiny-random")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(1)  # mostly F16
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(IM_END)
    w.add_pad_token_id(ENDOFTEXT)
    w.add_bos_token_id(ENDOFTEXT)
    w.add_add_bos_token(False)
    w.add_chat_template(template)

    rng = np.random.RandomState(20260101)

    def mat(rows, cols, scale=0.08):
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float16)

    def ones(n):
        return np.ones((n,), dtype=np.float32)

    w.add_tensor("token_embd.weight", mat(len(tokens), N_EMBD, 0.5), raw_dtype=GGMLQuantizationType.F16)
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    # An untied output matrix: with tied embeddings a random model only repeats its last
    # input token; untied, what it writes depends on the whole prompt.
    w.add_tensor("output.weight", mat(len(tokens), N_EMBD, 0.5), raw_dtype=GGMLQuantizationType.F16)
    for layer in range(N_LAYER):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "attn_q.weight", mat(N_HEAD * HEAD_DIM, N_EMBD), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "attn_k.weight", mat(N_HEAD_KV * HEAD_DIM, N_EMBD), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "attn_v.weight", mat(N_HEAD_KV * HEAD_DIM, N_EMBD), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "attn_output.weight", mat(N_EMBD, N_HEAD * HEAD_DIM), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "attn_q_norm.weight", ones(HEAD_DIM))
        w.add_tensor(p + "attn_k_norm.weight", ones(HEAD_DIM))
        w.add_tensor(p + "ffn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD), raw_dtype=GGMLQuantizationType.F16)
        w.add_tensor(p + "ffn_down.weight", mat(N_EMBD, N_FF), raw_dtype=GGMLQuantizationType.F16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
