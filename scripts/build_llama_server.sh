#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the llama.cpp tree vendored in the PyPI sdist of
# llama-cpp-python (fetched and checked by fetch_assets.sh), once, into
# ${HABITS_CACHE:-~/.cache/habits}/bin/llama-server. Needs cmake and a C++ compiler
# (Debian: apt-get install cmake g++). Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HABITS_CACHE:-$HOME/.cache/habits}"
version="0.3.36"
bin="$cache/bin/llama-server"
stamp="$cache/bin/.llama-server-$version"
if [ -x "$bin" ] && [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
command -v cmake >/dev/null || { echo "error: cmake is needed to build llama-server (Debian: apt-get install cmake)" >&2; exit 1; }
assets="$("$here/fetch_assets.sh" llama-cpp-python)"
src="$cache/build/llama_cpp_python-$version"
if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
  rm -rf "$src"
  mkdir -p "$cache/build"
  tar -xzf "$assets/llama_cpp_python-$version.tar.gz" -C "$cache/build"
fi
echo "building llama-server (about 13 minutes on 2 cores) ..." >&2
cmake -S "$src/vendor/llama.cpp" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
  -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$src/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$cache/bin"
cp "$src/build/bin/llama-server" "$bin.tmp"
mv "$bin.tmp" "$bin"
touch "$stamp"
echo "$bin"
