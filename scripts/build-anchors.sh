#!/usr/bin/env bash
# Build llama.cpp's own tools that the benchmarks measure qwen3q against (issue 10): the real
# `llama-batched-bench` and `llama-server`, never an imitation of them.
#
# llama-cpp-sys-2 vendors llama.cpp without the tools' sources, so they come from the
# llama-cpp-python sdist on PyPI, whose vendor/llama.cpp tree is complete. Built with the flags
# the crate gives its own llama.cpp (Release, GGML_NATIVE=OFF, no CPU features beyond the Rust
# target's: the same kernels as the worker) and without the server's web page or TLS.
#
# Everything lives outside the clone, under ~/.cache/qwen3q/anchors (QWEN3Q_ANCHORS), so a
# second run only prints the paths. Prints `name=path` for each tool on stdout.
set -euo pipefail

version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${QWEN3Q_ANCHORS:-$HOME/.cache/qwen3q/anchors}
mkdir -p "$cache"
cd "$cache"

sdist=llama_cpp_python-$version.tar.gz
if [ ! -f "$sdist" ]; then
    python3 -m pip download "llama-cpp-python==$version" --no-binary :all: --no-deps -d . >&2
fi
src=llama_cpp_python-$version/vendor/llama.cpp
if [ ! -f "$src/tools/batched-bench/batched-bench.cpp" ]; then
    tar xzf "$sdist"
fi

build=build-$version
bin=$build/bin
if [ ! -x "$bin/llama-batched-bench" ] || [ ! -x "$bin/llama-server" ]; then
    cmake -S "$src" -B "$build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF >&2
    cmake --build "$build" -j "$(nproc)" --target llama-batched-bench llama-server >&2
fi

echo "llama_cpp_python=$version"
echo "llama-batched-bench=$cache/$bin/llama-batched-bench"
echo "llama-server=$cache/$bin/llama-server"
