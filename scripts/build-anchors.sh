#!/usr/bin/env bash
# Build llama.cpp's own tools that the benchmarks measure qwen3q against (issue 10): the real
# `llama-batched-bench` and `llama-server`, never an imitation of them.
#
# Two builds:
# - `llama-batched-bench-crate`: the worker's own llama.cpp, the sources llama-cpp-sys-2
#   vendors (its copy in vendor/, whose patch changes no kernel llama.cpp picks by default:
#   vendor/README.md), with the tool's two source files from the llama-cpp-python sdist (the
#   crate leaves tools out; the sdist's batched-bench compiles against the crate's llama.cpp
#   unchanged). Same flags as the crate's build: Release (-O3; vendor/README.md says why the
#   vendored build script no longer picks RelWithDebInfo), -march=x86-64 with AVX, AVX2, FMA,
#   F16C, BMI2 (the Rust target's), OpenMP, llamafile sgemm and CPU repacking on (the crate's
#   defaults). The worker ÷ this tool is the speed of qwen3q's own loop.
# - `llama-batched-bench` and `llama-server` from the llama-cpp-python sdist's complete
#   vendor/llama.cpp (the crate's copy leaves the server out; the sdist's is a llama.cpp of the
#   same weeks, a few commits behind the crate's: BENCHMARKS.md), in Release, GGML_NATIVE=OFF,
#   without the server's web page or TLS.
#
# Everything lives outside the clone, under ~/.cache/qwen3q/anchors (QWEN3Q_ANCHORS), so a
# second run only prints the paths. Prints `name=path` for each tool on stdout.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

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

# The worker's own llama.cpp, with the sdist's batched-bench sources.
sys_version=$(awk '/^name = "llama-cpp-sys-2"/ {getline; gsub(/"/, "", $3); print $3}' \
    "$root/Cargo.lock")
crate_src=$root/vendor/llama-cpp-sys-2/llama.cpp
crate=crate-$sys_version-O3
if [ ! -x "$crate/bin/llama-batched-bench" ]; then
    rm -rf "$crate/src"
    mkdir -p "$crate"
    cp -r "$crate_src" "$crate/src"
    chmod -R u+w "$crate/src"
    cp "$src"/tools/batched-bench/{CMakeLists.txt,batched-bench.cpp,main.cpp} "$crate/src/tools/batched-bench/"
    printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(batched-bench)\n' \
        > "$crate/src/tools/CMakeLists.txt"
    flags="-ffunction-sections -fdata-sections -fPIC -m64 -march=x86-64"
    cmake -S "$crate/src" -B "$crate/build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_BMI2=ON -DGGML_SSE42=ON -DGGML_OPENMP=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_MTMD=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >&2
    cmake --build "$crate/build" -j "$(nproc)" --target llama-batched-bench >&2
    mkdir -p "$crate/bin"
    cp "$crate/build/bin/llama-batched-bench" "$crate/bin/"
    rm -rf "$crate/build" "$crate/src"
fi

echo "llama_cpp_python=$version"
echo "llama-cpp-sys-2=$sys_version"
echo "llama-batched-bench-crate=$cache/$crate/bin/llama-batched-bench"
echo "llama-batched-bench=$cache/$bin/llama-batched-bench"
echo "llama-server=$cache/$bin/llama-server"
