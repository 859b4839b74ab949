#!/usr/bin/env bash
# Install what building llama.cpp needs and a fresh machine lacks: cmake, a C/C++ compiler and
# libclang (for bindgen). Debian/Ubuntu: apt-get (as root, or with sudo). macOS: Homebrew's
# cmake, and the Xcode command line tools. Does nothing when everything is there.
set -euo pipefail

have_libclang() {
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* \
     /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

case "$(uname -s)" in
  Linux)
    if command -v cmake >/dev/null && command -v c++ >/dev/null && have_libclang; then
      exit 0
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "ensure-deps: installing cmake, g++, libclang-dev with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake g++ libclang-dev python3-venv >/dev/null
    ;;
  Darwin)
    command -v cmake >/dev/null || {
      command -v brew >/dev/null || { echo "ensure-deps: install Homebrew, then: brew install cmake" >&2; exit 1; }
      brew install cmake
    }
    xcode-select -p >/dev/null 2>&1 || { echo "ensure-deps: run xcode-select --install" >&2; exit 1; }
    ;;
esac
