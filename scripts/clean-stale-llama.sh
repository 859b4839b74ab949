#!/usr/bin/env bash
# llama-cpp-sys-2 asks cargo to rebuild llama.cpp when a GGML_* variable it saw at its last
# build changes, but not when one appears that was absent then: a target directory that built
# llama.cpp before .cargo/config.toml set GGML_LLAMAFILE would keep llamafile's sgemm, and the
# worker's batch-invariant kernels would refuse to start. Clean such a build once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
want=$(sed -n 's/^GGML_LLAMAFILE *= *"\(.*\)"/\1/p' .cargo/config.toml)
for cache in "$target"/*/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
  [ -e "$cache" ] || continue
  if ! grep -q "^GGML_LLAMAFILE:BOOL=$want\$" "$cache"; then
    echo "clean-stale-llama: $cache was configured without GGML_LLAMAFILE=$want; rebuilding llama.cpp" >&2
    cargo clean --quiet -p llama-cpp-sys-2
    break
  fi
done
