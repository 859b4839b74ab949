#!/usr/bin/env bash
# How many greedy answers of 14 documents (gemma 3 270M, 64 tokens) differ between --parallel 1
# and --parallel 4 / 8, for each kernels (BENCHMARKS.md, "Batch-invariant kernels"). Needs
# `cargo build --release --bins` and scripts/fetch-models.sh first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen3q/target}
q=$CARGO_TARGET_DIR/release/qwen3q
m=${QWEN3Q_MODEL_CACHE:-$HOME/.cache/qwen3q/models}/gemma-3-270m-q4_k_m.gguf
w=$(mktemp -d); mkdir "$w/docs"
python3 - "$w/docs" <<'PY'
import re, sys, glob
text = " ".join(open(f).read().strip() for f in sorted(glob.glob("examples/docs/*.txt")))
s = re.split(r"(?<=[.!?])\s+", text)
for i in range(14):
    n = 3 + i % 5
    open(f"{sys.argv[1]}/d{i:02}.txt", "w").write(" ".join(s[(i + j) % len(s)] for j in range(n * 2)))
PY
for k in batch-invariant fastest; do
  for p in 1 4 8; do
    h=$w/$k-$p
    QWEN3Q_HOME=$h $q enqueue "$w/docs" --model "$m" --temperature 0 --max-tokens 64 >/dev/null 2>&1
    QWEN3Q_HOME=$h $q worker --drain --parallel $p --kernels $k 2>/dev/null
    QWEN3Q_HOME=$h $q results --jsonl | python3 -c '
import sys, json
for r in map(json.loads, sys.stdin):
    assert r["state"] == "succeeded" and r["answer"], r
    print(r["custom_id"], json.dumps(r["answer"]))' | sort > "$w/$k-$p.txt"
  done
  for p in 4 8; do
    echo "$k: B=1 vs B=$p: $(diff "$w/$k-1.txt" "$w/$k-$p.txt" | grep -c '^<' || true) of $(wc -l < "$w/$k-1.txt") differ"
  done
done
rm -rf "$w"
