#!/usr/bin/env bash
# Benchmark of the evaluation methods on the organism: items/s and time to first token
# for baseline, zero-shot CoT, few-shot CoT, activation steering and cache steering, one sequence
# at a time and 32 in parallel; and the cost of a 4-setting cache-steering sweep against the same
# settings run separately. Prints a table; figures depend on the machine's load.
# Usage: bench_eval.sh BUILD_DIR [N_ITEMS]
set -euo pipefail
build="$1"
n="${2:-64}"
here="$(cd "$(dirname "$0")/.." && pwd)"
kvsteer="$build/tools/cli/kvsteer"
model="${KVSTEER_STUDY_MODEL:-$here/organism/model/organism.gguf}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=passive
"$kvsteer" organism gen --seed 1 --n "$n" --split test --variant numeric --family arith --max-value 39 \
  --max-operand 9 --out "$out/test.jsonl" >/dev/null
"$kvsteer" organism gen --seed 2 --n 200 --split train --variant numeric --family arith --max-value 39 \
  --max-operand 9 --out "$out/traces.jsonl" >/dev/null
common=(-m "$model" -t "${KVSTEER_THREADS:-2}" --task organism-numeric --data "$out/test.jsonl"
        --traces "$out/traces.jsonl" --no-preset --pairs 100 --shots 3 --n-predict 128)
# The offset token is cache steering's (eval refuses it for the other methods).
offset=(--offset $'\n')
printf '%-10s %9s %14s %16s %14s %16s\n' method tokens "items/s (np 1)" "TTFT ms (np 1)" \
  "items/s (np 32)" "TTFT ms (np 32)"
for method in baseline cot fewshot caa cache; do
  row=()
  for np in 1 32; do
    extra=()
    [[ "$method" == cache ]] && extra=("${offset[@]}")
    "$kvsteer" eval "${common[@]}" "${extra[@]}" --method "$method" --parallel "$np" \
      -o "$out/$method-$np" >/dev/null 2>&1
    row+=("$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['mean_tokens'], s['items_per_s'], s['mean_ttft_ms'])" "$out/$method-$np/summary.json")")
  done
  read -r len1 ips1 ttft1 <<<"${row[0]}"
  read -r _ ips32 ttft32 <<<"${row[1]}"
  printf '%-10s %9s %14s %16s %14s %16s\n' "$method" "$len1" "$ips1" "$ttft1" "$ips32" "$ttft32"
done
# items/s includes extracting the vector (caa, cache) once per run.
start=$(date +%s%N)
"$kvsteer" sweep "${common[@]}" "${offset[@]}" --parallel 32 --method cache --cv-grid 1,2,4,8 \
  -o "$out/sweep.json" >/dev/null 2>&1
sweep=$(( ($(date +%s%N) - start) / 1000000 ))
start=$(date +%s%N)
for cv in 1 2 4 8; do
  "$kvsteer" sweep "${common[@]}" "${offset[@]}" --parallel 32 --method cache --cv-grid "$cv" \
    -o "$out/single-$cv.json" >/dev/null 2>&1
done
separate=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'sweep of 4 cache settings x %s items: %s ms together (one prefill per question), %s ms as 4 separate runs\n' \
  "$n" "$sweep" "$separate"
