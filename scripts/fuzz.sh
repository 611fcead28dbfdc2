#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a fixed time each, starting from the committed
# seed corpus (fuzz/corpus/<target>, never modified here) and the target's dictionary, and prints
# one line per target: executions, executions per second, coverage, new corpus entries, crashes.
# A crash, leak, timeout or sanitizer report fails the run; its input is kept under
# $KVSTEER_FUZZ_OUT/<target>/ (default build/fuzz-runs) and the log's last lines are printed.
# Usage: fuzz.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]
set -uo pipefail
build=$(cd "$1" && pwd)
seconds="$2"
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(vector_file checkpoint seq_blob jsonl scoring prompts cli_grammar)
out="${KVSTEER_FUZZ_OUT:-$here/build/fuzz-runs}"
# Absolute: each target runs inside its own folder.
mkdir -p "$out" && out=$(cd "$out" && pwd)
# Leaks are findings too; a bad input must not take longer than 10 s or 2 GiB.
# The file-reading targets write their input to a scratch file per execution, and the savers
# sync every file they write: on a disk that caps a target at a few hundred executions a second,
# on a RAM file system it costs nothing.
if [[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]]; then
  export TMPDIR=/dev/shm
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=0
printf '%-12s %10s %8s %7s %7s %6s %s\n' target execs exec/s cov ft new result
for t in "${targets[@]}"; do
  bin="$build/fuzz/kvsteer-fuzz-$t"
  [[ -x "$bin" ]] || { echo "fuzz: $bin is missing (make fuzz builds it)" >&2; exit 2; }
  work="$out/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus"
  dict=()
  [[ -f "$here/fuzz/dict/$t.dict" ]] && dict=(-dict="$here/fuzz/dict/$t.dict")
  # New inputs go to the first folder (scratch); the committed seeds and the inputs of past
  # crashes (fuzz/regressions/<target>) are only read, and replayed first.
  seeds=("$here/fuzz/corpus/$t")
  [[ -d "$here/fuzz/regressions/$t" ]] && seeds+=("$here/fuzz/regressions/$t")
  (cd "$work" && "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$work/" "${dict[@]}" \
      "$work/corpus" "${seeds[@]}" >"$work/log" 2>&1)
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
  new=$(find "$work/corpus" -type f | wc -l)
  crashes=$(find "$work" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
      -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  result=ok
  if [[ $rc -ne 0 || $crashes -ne 0 ]]; then
    result="FAILED ($crashes input(s) in $work)"
    failed=1
  fi
  printf '%-12s %10s %8s %7s %7s %6s %s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" \
    "${ft:-?}" "$new" "$result"
  [[ $result == ok ]] || tail -n 30 "$work/log" >&2
done
exit $failed
