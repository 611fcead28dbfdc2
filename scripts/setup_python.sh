#!/usr/bin/env bash
# Creates the Python environment of the tests (tests/python/requirements.txt) once, in the cache
# outside the checkout, keyed by the requirements' hash so that a change builds a new one. Prints
# the environment's python on stdout. Environment: KVSTEER_CACHE (default ~/.cache/kvsteer).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
req="$here/tests/python/requirements.txt"
cache_root="${KVSTEER_CACHE:-$HOME/.cache/kvsteer}"
die() { echo "setup_python: error: $*" >&2; exit 1; }
key=$(sha256sum "$req" | cut -c1-12)
venv="$cache_root/venv-$key"
if [[ ! -f "$venv/.complete" ]]; then
  command -v python3 >/dev/null || die "python3 is missing"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    "$here/scripts/install_deps.sh" python
  fi
  rm -rf "$venv"
  echo "setup_python: creating $venv" >&2
  python3 -m venv "$venv" >&2 || die "python3 -m venv failed"
  "$venv/bin/python" -m pip install --quiet -r "$req" >"$cache_root/pip-$key.log" 2>&1 ||
    die "could not install $req from the Python package index, see $cache_root/pip-$key.log"
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
