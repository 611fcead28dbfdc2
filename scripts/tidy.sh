#!/usr/bin/env bash
# clang-tidy over the library (src/), the evaluation layer (eval/) and the tools (tools/: command
# line, server, organism trainer); config: .clang-tidy, warnings are errors. Usage: tidy.sh BUILD_DIR
set -uo pipefail
build="$1"
log=$(mktemp)
git ls-files 'src/*.cpp' 'eval/*.cpp' 'tools/*.cpp' | xargs -P "${KVSTEER_JOBS:-$(nproc)}" -n 1 clang-tidy -p "$build" --quiet \
  >"$log" 2>&1
rc=$?
grep -v 'warnings generated' "$log" || true
rm -f "$log"
exit $rc
