#!/usr/bin/env bash
# Builds the pinned llama.cpp (v0.4.0, shipped inside the npm package node-llama-cpp@3.21.1 as a
# git bundle) once into a cache outside the checkout, and converts the stories260K test model with
# llama.cpp's own converter. Prints the install prefix on the last line of stdout.
#
# Environment:
#   KVSTEER_CACHE        cache root (default: ~/.cache/kvsteer)
#   KVSTEER_LLAMA_PREFIX use this llama.cpp install prefix instead of building one (must contain
#                        lib*/cmake/llama/llama-config.cmake); nothing is built then
#   KVSTEER_JOBS         parallel build jobs (default: nproc)
#   KVSTEER_LLAMA_NATIVE 1: build for this machine's instruction sets (scripts/llama_isa.sh)
set -euo pipefail

readonly NPM_PACKAGE="node-llama-cpp@3.21.1"
readonly PINNED_TAG="v0.4.0"
readonly PINNED_COMMIT="80fb11ac73e66d89eae2c6a91d8a77428fa733ed"

cache_root="${KVSTEER_CACHE:-$HOME/.cache/kvsteer}"
jobs="${KVSTEER_JOBS:-$(nproc)}"
log() { echo "setup_llama: $*" >&2; }
die() { echo "setup_llama: error: $*" >&2; exit 1; }

if [[ -n "${KVSTEER_LLAMA_PREFIX:-}" ]]; then
  ls "$KVSTEER_LLAMA_PREFIX"/lib*/cmake/llama/llama-config.cmake >/dev/null 2>&1 ||
    die "KVSTEER_LLAMA_PREFIX=$KVSTEER_LLAMA_PREFIX has no lib*/cmake/llama/llama-config.cmake; " \
        "build llama.cpp with -DLLAMA_BUILD_COMMON=OFF and run 'cmake --install' into that prefix"
  echo "$KVSTEER_LLAMA_PREFIX"
  exit 0
fi

# Debian packages, installed only when missing.
"$(dirname "$0")/install_deps.sh" llama

# shellcheck source=llama_isa.sh
source "$(dirname "$0")/llama_isa.sh"
# One source tree; a build and an install per instruction set.
root="$cache_root/llama.cpp-$PINNED_TAG-${PINNED_COMMIT:0:7}"
prefix="$root/install-$llama_isa"
build="$root/build-$llama_isa"
if [[ -f "$root/.complete-$llama_isa" ]]; then
  echo "$prefix"
  exit 0
fi
mkdir -p "$root"

if [[ ! -d "$root/src/.git" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "fetching $NPM_PACKAGE from the npm registry"
  (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null) || die "npm pack $NPM_PACKAGE failed"
  tar -xzf "$work"/node-llama-cpp-*.tgz -C "$work" package/llama/gitRelease.bundle \
    package/llama/llama.cpp.info.json
  tag=$(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' "$work/package/llama/llama.cpp.info.json")
  [[ "$tag" == "$PINNED_TAG" ]] || die "bundle is llama.cpp '$tag', expected $PINNED_TAG"
  rm -rf "$root/src"
  git clone --quiet "$work/package/llama/gitRelease.bundle" "$root/src.tmp"
  mv "$root/src.tmp" "$root/src"
fi
commit=$(git -C "$root/src" rev-parse HEAD)
[[ "$commit" == "$PINNED_COMMIT" ]] ||
  die "llama.cpp checkout is at $commit, expected $PINNED_COMMIT ($PINNED_TAG); delete $root and rerun"

# Release build of libllama + ggml (CPU). Common and the examples are built only for the
# llama2.c converter that makes the stories260K test model.
log "building llama.cpp $PINNED_TAG for $llama_isa into $prefix (once; about 10 minutes on 2 cores)"
cmake -S "$root/src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
  "${llama_isa_flags[@]}" -DGGML_CCACHE=OFF >"$build.configure.log" 2>&1 ||
  die "configure failed, see $build.configure.log"
cmake --build "$build" -j "$jobs" >"$build.log" 2>&1 || die "build failed, see $build.log"
cmake --install "$build" >"$build.install.log" 2>&1 || die "install failed, see $build.install.log"
touch "$root/.complete-$llama_isa"
log "llama.cpp installed in $prefix"
echo "$prefix"
