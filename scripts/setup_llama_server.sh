#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` from the pinned tree that setup_llama.sh fetched, for the
# serving benchmark's comparison (scripts/bench_serve.py --llama-server). Not needed to build,
# test or use kvsteer: the library build leaves llama.cpp's tools off. Built once, in its own
# build folder beside the library's (about 10 minutes on 2 cores); prints the binary's path.
#
# Environment: KVSTEER_CACHE (default ~/.cache/kvsteer), KVSTEER_JOBS (default nproc).
set -euo pipefail
jobs="${KVSTEER_JOBS:-$(nproc)}"
die() { echo "setup_llama_server: error: $*" >&2; exit 1; }

prefix="$("$(dirname "$0")/setup_llama.sh")"
root="$(dirname "$prefix")"
[[ -d "$root/src" ]] || die "no llama.cpp source tree beside $prefix (KVSTEER_LLAMA_PREFIX points " \
                           "at a prefix built elsewhere; build llama-server there)"
# shellcheck source=llama_isa.sh
source "$(dirname "$0")/llama_isa.sh"
build="$root/build-server-$llama_isa"
binary="$build/bin/llama-server"
if [[ -x "$binary" && -f "$build/.complete" ]]; then
  echo "$binary"
  exit 0
fi
# The same engine settings as the library build (setup_llama.sh), so that the two servers run
# the same kernels; static, so the binary does not pick up a different libllama.
echo "setup_llama_server: building llama-server into $build (once)" >&2
cmake -S "$root/src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
  "${llama_isa_flags[@]}" -DGGML_CCACHE=OFF >"$build.configure.log" 2>&1 ||
  die "configure failed, see $build.configure.log"
cmake --build "$build" -j "$jobs" --target llama-server >"$build.log" 2>&1 ||
  die "build failed, see $build.log"
touch "$build/.complete"
echo "$binary"
