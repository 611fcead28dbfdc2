#!/usr/bin/env bash
# Converts the stories260K test model (../shared/models/stories260K, llama2.c format) to GGUF with
# llama.cpp's own converter, once. Prints the GGUF path on stdout.
# Usage: setup_models.sh LLAMA_PREFIX
set -euo pipefail
prefix="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVSTEER_SHARED:-$here/../shared}"
cache_root="${KVSTEER_CACHE:-$HOME/.cache/kvsteer}"
src="$shared/models/stories260K"
out="$cache_root/models/stories260K.gguf"
die() { echo "setup_models: error: $*" >&2; exit 1; }

[[ -f "$src/stories260K.bin" && -f "$src/tok512.bin" ]] ||
  die "stories260K not found in $src (set KVSTEER_SHARED to the shared/ folder)"
if [[ ! -f "$out" ]]; then
  converter="$prefix/bin/llama-convert-llama2c-to-ggml"
  [[ -x "$converter" ]] || die "$converter is missing; build llama.cpp with scripts/setup_llama.sh"
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$converter" --llama2c-model "$src/stories260K.bin" --copy-vocab-from-model "$src/tok512.bin" \
    --llama2c-output-model "$tmp" >"$cache_root/models/convert.log" 2>&1 ||
    { rm -f "$tmp"; die "conversion failed, see $cache_root/models/convert.log"; }
  mv "$tmp" "$out"
fi
echo "$out"
