#!/usr/bin/env bash
# The main job: the paper's study on the embedded reasoning organism (organism/model/). Generates
# held-out test problems and teacher traces, evaluates every method on both variants, runs the
# stability sweeps (cache steering over c_v, activation steering over layer x c), writes the
# report, prints the results table and a diagnose summary. About 6 minutes on 2 cores (measured
# 5 min 40 s with organism v2, about 5 minutes with v4).
# Usage: study.sh BUILD_DIR   (env: KVSTEER_STUDY_OUT, KVSTEER_STUDY_N, KVSTEER_THREADS)
set -euo pipefail
build="$1"
here="$(cd "$(dirname "$0")/.." && pwd)"
kvsteer="$build/tools/cli/kvsteer"
model="${KVSTEER_STUDY_MODEL:-$here/organism/model/organism.gguf}"
out="${KVSTEER_STUDY_OUT:-$here/out/study}"
n="${KVSTEER_STUDY_N:-200}"
threads="${KVSTEER_THREADS:-2}"
# The organism's recipe (organism/model/README.md): arithmetic problems, numbers up to 39, amounts
# up to 9.
recipe=(--family arith --max-value 39 --max-operand 9)
export OMP_WAIT_POLICY=passive
mkdir -p "$out/data" "$out/runs" "$out/sweeps"

echo "== model: $model"
for variant in numeric choice; do
  "$kvsteer" organism gen --seed 1 --n "$n" --split test --variant "$variant" "${recipe[@]}" \
    --out "$out/data/test-$variant.jsonl" >/dev/null
  "$kvsteer" organism gen --seed 2 --n 400 --split train --variant "$variant" "${recipe[@]}" \
    --out "$out/data/traces-$variant.jsonl" >/dev/null
done

# Steering settings for the organism (not a paper model, so no preset): 100 contrastive pairs of
# 3-shot prompts, the offset token "\n" for both variants (the organism was trained to take it,
# and it puts the edit on the token the vector was read from), layers >= 1. Activation steering
# uses the best setting of its sweep on organism v4 (layer 5, c = 0.25; v2's best was c = 0.5),
# as the paper chose its CAA settings by a grid on test items; no cache-steering setting helps
# (see the sweeps).
base=(-m "$model" -t "$threads" --parallel 32 --n-predict 128 --no-preset --pairs 100 --shots 3)
common=("${base[@]}" --offset $'\n')
for variant in numeric choice; do
  data=(--task "organism-$variant" --data "$out/data/test-$variant.jsonl"
        --traces "$out/data/traces-$variant.jsonl")
  for method in baseline cot fewshot caa cache cache+cot; do
    extra=()
    case "$method" in
      cache) extra=(--cv "${KVSTEER_STUDY_CV:-4}") ;;
      cache+cot) extra=(--cv "${KVSTEER_STUDY_CV_COT:-2}") ;;
      caa) extra=(--caa-layer "${KVSTEER_STUDY_CAA_LAYER:-5}" --caa-c "${KVSTEER_STUDY_CAA_C:-0.25}") ;;
    esac
    "$kvsteer" eval "${common[@]}" "${data[@]}" --method "$method" "${extra[@]}" \
      -o "$out/runs/$variant-${method/+/-}"
  done
  "$kvsteer" sweep "${common[@]}" "${data[@]}" --limit 100 --method cache \
    --ck-grid 0 --cv-grid 0,1,2,4,8,16 -o "$out/sweeps/$variant-cache.json" >/dev/null
  "$kvsteer" sweep "${common[@]}" "${data[@]}" --limit 100 --method caa \
    --caa-layers 1,3,5 --caa-coefs 0.1,0.25,0.5,1,2,4 -o "$out/sweeps/$variant-caa.json" >/dev/null
done

# The sign of the cache edit and the offset token (numeric): negative c_v with the paper's offset,
# and positive c_v without it (the edit then lands on the "assistant" cell).
mkdir -p "$out/sweeps-extra"
numeric=(--task organism-numeric --data "$out/data/test-numeric.jsonl"
         --traces "$out/data/traces-numeric.jsonl" --limit 100 --method cache --ck-grid 0)
"$kvsteer" sweep "${common[@]}" "${numeric[@]}" --cv-grid=-16,-8,-4,-2,-1 \
  -o "$out/sweeps-extra/numeric-cache-negative.json" >/dev/null
"$kvsteer" sweep "${base[@]}" "${numeric[@]}" --offset none --cv-grid 0,1,2,4,8,16 \
  -o "$out/sweeps-extra/numeric-cache-no-offset.json" >/dev/null

# Why cache steering acts (or not): edit size, attention on the steered cell per layer and head,
# V share of the head outputs and next-token KL, for the study's setting, larger coefficients and
# each layer alone (numeric variant, 30 questions).
"$kvsteer" diagnose "${common[@]}" --task organism-numeric --data "$out/data/test-numeric.jsonl" \
  --traces "$out/data/traces-numeric.jsonl" --limit 30 --cv "${KVSTEER_STUDY_CV:-4}" \
  --scales 4,16 --per-layer -o "$out/diagnose-numeric.json" > "$out/diagnose-numeric.txt"

"$kvsteer" report --out "$out/report" --title "kvsteer on the reasoning organism" \
  "$out"/runs/*/summary.json "$out"/sweeps/*.json >/dev/null
echo
echo "== results (accuracy %, 95 % interval; reasoning = answers with at least one step)"
python3 - "$out" <<'PY' 2>/dev/null || sed -n '1,40p' "$out/report/report.md"
import json, sys, glob, os
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "runs", "*", "summary.json"))):
    s = json.load(open(f))
    rows.setdefault(s["label"], {})[s["task"]] = s
tasks = ["organism-numeric", "organism-choice"]
print(f"{'method':<24}" + "".join(f"{t:>36}" for t in tasks))
for label, by_task in rows.items():
    cells = []
    for t in tasks:
        s = by_task.get(t)
        cells.append(f"{s['accuracy']:6.1f} [{s['ci95'][0]:5.1f},{s['ci95'][1]:5.1f}] r={s['reasoning_rate']:5.1f}" if s else "-")
    print(f"{label:<24}" + "".join(f"{c:>36}" for c in cells))
PY
echo
echo
echo "== why cache steering acts or not (numeric, c_v ${KVSTEER_STUDY_CV:-4}; ' = with the edit)"
cat "$out/diagnose-numeric.txt"
echo
echo "== report: $out/report/report.md and $out/report/report.html"
