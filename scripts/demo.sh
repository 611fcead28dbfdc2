#!/usr/bin/env bash
# The mechanics on a tiny story model (stories260K, `make demo-mechanics`): extract a steering
# vector from contrastive prompts, then generate with and without it. It shows the mechanics, not
# reasoning (`make demo` is the study on a real model).
# Usage: demo.sh BUILD_DIR
set -euo pipefail
build="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$("$here/scripts/setup_llama.sh" 2>/dev/null)"
model="${KVSTEER_DEMO_MODEL:-$("$here/scripts/setup_models.sh" "$prefix" stories)}"
kvsteer="$build/tools/cli/kvsteer"
out="${KVSTEER_DEMO_OUT:-$here/out/demo}"
mkdir -p "$out"

echo "== model: $model"
echo "== 1. extract: 8 contrastive pairs (reasoning vs direct answers), 2 shots each"
"$kvsteer" extract -m "$model" --traces "$here/examples/arithmetic_traces.jsonl" -N 8 -k 2 \
  --chat-template chatml --ctk f32 --ctv f32 -o "$out/vector.gguf" >"$out/extract.json"
cat "$out/extract.json"
question="Anna has 4 dolls. She gets 5 more. How many dolls does Anna have?"
common=(-m "$model" -p "$question" --chat-template chatml --ctk f32 --ctv f32 -n 48 --json)
echo "== 2. generate without steering"
"$kvsteer" generate "${common[@]}" | tee "$out/plain.json"
echo "== 3. generate with the vector (c_k = 0, c_v = 20, layers >= 1, offset token)"
"$kvsteer" generate "${common[@]}" --vector "$out/vector.gguf" --cv 20 | tee "$out/steered.json"
echo "== 4. edit cost against context length (one-cell vs full-sequence route)"
"$kvsteer" bench -m "$model" --contexts 100 1000 4000 --repeats 20 | tee "$out/bench.json"
echo "== outputs in $out"
