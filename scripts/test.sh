#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this). On a fresh machine it installs what is
# missing (build tools, the test models), then checks formatting and lints, runs the unit and
# integration tests on the real llama.cpp, and type-checks the macOS build.
#
# Cargo's target directory and the model cache live outside the clone (under ~/.cache/qwen3q),
# so a second run is fast.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/qwen3q/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

scripts/ensure-deps.sh
QWEN3Q_MODEL_CACHE=$(scripts/fetch-models.sh)
export QWEN3Q_MODEL_CACHE
# The official `openai` Python package (pinned), for the HTTP API's tests.
QWEN3Q_API_PYTHON=$(scripts/api-venv.sh)
export QWEN3Q_API_PYTHON

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

# macOS code must at least type-check (llama.cpp itself cannot be cross-built here).
rustup target add aarch64-apple-darwin >/dev/null 2>&1
cargo check --locked --target aarch64-apple-darwin --no-default-features --all-targets

# Unit tests (lib and binary), then the one integration-test binary on the real llama.cpp.
# The examples (benchmark drivers) were compiled by clippy above.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --lib --bins --test main 2>&1 | tee "$log"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
