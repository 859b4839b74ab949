#!/usr/bin/env bash
# Install qwen3q and run its main job on the small model: enqueue the sample documents,
# drain the queue with a worker, print the results. Re-running is fast and harmless (the
# same documents are the same jobs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen3q/target}
scripts/ensure-deps.sh
models=$(scripts/fetch-models.sh)

echo "quickstart: building and installing qwen3q (the first build compiles llama.cpp, 5-11 min of it on 2 cores)" >&2
cargo install --locked --quiet --path . --root "$HOME/.local"
export PATH="$HOME/.local/bin:$PATH"

qwen3q enqueue examples/docs --model "$models/gemma-3-270m-q4_k_m.gguf" --max-tokens 96
qwen3q worker --drain
qwen3q results
echo >&2
echo "quickstart: qwen3q is in $HOME/.local/bin; try: qwen3q status, qwen3q results --jsonl" >&2
