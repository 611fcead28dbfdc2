#!/usr/bin/env bash
# clang-tidy over src/ (config: .clang-tidy, warnings are errors). Usage: tidy.sh BUILD_DIR
set -uo pipefail
build="$1"
log=$(mktemp)
git ls-files 'src/*.cpp' | xargs -P "${KVSTEER_JOBS:-$(nproc)}" -n 1 clang-tidy -p "$build" --quiet \
  >"$log" 2>&1
rc=$?
grep -v 'warnings generated' "$log" || true
rm -f "$log"
exit $rc
