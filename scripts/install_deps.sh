#!/usr/bin/env bash
# Installs the Debian packages kvsteer needs, only those that are missing.
# Usage: install_deps.sh [llama|build|fuzz|python|all]   (default: all)
set -euo pipefail
what="${1:-all}"
llama_pkgs=(build-essential cmake ninja-build git pkg-config)
build_pkgs=(libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libfmt-dev
            libcpp-httplib-dev nettle-dev clang-format clang-tidy gnuplot-nox)
# libFuzzer and the sanitizer runtimes of Debian's clang (`make fuzz`, fuzz/README.md).
fuzz_pkgs=(clang-14 libclang-rt-14-dev)
python_pkgs=(python3 python3-venv python3-pip python3-dev)
case "$what" in
  llama) pkgs=("${llama_pkgs[@]}") ;;
  python) pkgs=("${python_pkgs[@]}") ;;
  build) pkgs=("${llama_pkgs[@]}" "${build_pkgs[@]}") ;;
  fuzz) pkgs=("${fuzz_pkgs[@]}") ;;
  all) pkgs=("${llama_pkgs[@]}" "${build_pkgs[@]}" "${fuzz_pkgs[@]}") ;;
  *) echo "install_deps: unknown set '$what' (expected llama, build, fuzz, python or all)" >&2
     exit 2 ;;
esac
missing=()
# npm may come with a nodejs that is not Debian's (it then conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || missing+=(npm)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "install_deps: installing ${missing[*]}" >&2
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq >&2
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
