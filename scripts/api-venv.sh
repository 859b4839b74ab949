#!/usr/bin/env bash
# A Python venv with the official `openai` package (tests/api/requirements.txt, pinned) for the
# HTTP API's tests, outside the clone: ${XDG_CACHE_HOME:-$HOME/.cache}/qwen3q/venv-api.
# Made once, and again when the requirements change. Prints the venv's python last.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reqs="$here/../tests/api/requirements.txt"
venv=${QWEN3Q_API_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen3q/venv-api}
say() { echo "api-venv: $*" >&2; }
# Portable to macOS, which has shasum but no sha256sum.
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }

want=$(sha256 "$reqs")
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  say "cached ($venv)"
else
  say "installing $(grep -v '^#' "$reqs" | tr '\n' ' ')into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2
  echo "$want" > "$venv/.requirements"
fi
echo "$venv/bin/python"
