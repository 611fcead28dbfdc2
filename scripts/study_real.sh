#!/usr/bin/env bash
# The study on the real model, SmolLM2-135M-Instruct (scripts/study_real.py):
#   study_real.sh BUILD_DIR demo   the bounded main job (`make demo`, about 20 minutes on 2 cores)
#   study_real.sh BUILD_DIR full   the paper's protocol on four tasks with a selection split
#                                  (`make study-real`; hours to days on 2 cores, resumable: run the
#                                  same command again to continue)
# The study writes the HTML report as it goes; then this prints the tables and writes the
# committable results.
# Environment: KVSTEER_STUDY_OUT (default out/real-<mode>), KVSTEER_THREADS (2),
#   KVSTEER_STUDY_TASKS (full mode: a comma-separated subset of arc,gsm8k,csqa,piqa),
#   KVSTEER_SHARED (../shared), KVSTEER_STUDY_STATE (full mode: the committed state it goes on
#   from and writes back, results/smollm2-135m).
set -euo pipefail
build="$1"
mode="${2:-demo}"
here="$(cd "$(dirname "$0")/.." && pwd)"
kvsteer="$build/tools/cli/kvsteer"
prefix="$("$here/scripts/setup_llama.sh" 2>/dev/null)"
model="${KVSTEER_STUDY_MODEL:-$("$here/scripts/setup_models.sh" "$prefix" smollm2)}"
shared="${KVSTEER_SHARED:-$here/../shared}"
out="${KVSTEER_STUDY_OUT:-$here/out/real-$mode}"
threads="${KVSTEER_THREADS:-2}"
# The full study goes on from its committed state (results/smollm2-135m, scripts/study_state.py):
# a machine is lent for hours, the study takes days.
state=()
[[ "$mode" == full ]] && state=(--state "${KVSTEER_STUDY_STATE:-$here/results/smollm2-135m}")
python3 "$here/scripts/study_real.py" "$mode" --kvsteer "$kvsteer" --model "$model" \
  --shared "$shared" --out "$out" --threads "$threads" --tasks "${KVSTEER_STUDY_TASKS:-}" "${state[@]}"
echo
results=()
[[ "$mode" == full ]] && results=(--results "${KVSTEER_STUDY_STATE:-$here/results/smollm2-135m}")
python3 "$here/scripts/study_results.py" "$out" "${results[@]}" \
  --title "kvsteer on SmolLM2-135M-Instruct ($mode)"
echo
echo "== report: $out/report/report.md and $out/report/report.html"
