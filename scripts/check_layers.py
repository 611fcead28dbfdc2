#!/usr/bin/env python3
"""Checks that every #include "..." in the repository follows the one-way layering of
docs/DESIGN.md ("Where things live"): a folder may include only the layers below it.

Usage: scripts/check_layers.py [REPO]    (exit 1 and one line per forbidden include)
       scripts/check_layers.py --self-test   (the checker on a small repository of known faults)

Layers, lowest first (each may include itself and those listed for it):
  base         src/base/, kvsteer/error.h, kvsteer/file_io.h   nothing else
  api          include/kvsteer/           base
  engine       src/                       api, base; libllama headers (llama.h only in src/llama/)
  eval         eval/                      api, base
  gen          organism/gen/              base
  trainer      organism/trainer/          base, libllama headers
  pipeline     organism/pipeline/         api, base, eval, gen, trainer
  server       tools/server/              api, base, eval
  tinymodel    tools/tinymodel/           api, base, libllama headers
  cli          tools/cli/                 api, base, eval, gen, pipeline, trainer, server
  python       python/                    api, base, eval
  leaves       tests/ bench/ fuzz/ examples/   anything (they test or measure the layers)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BASE_HEADERS = {"include/kvsteer/error.h", "include/kvsteer/file_io.h"}
LAYERS = [  # (name, folder prefix), most specific first
    ("base", "src/base/"),
    ("api", "include/kvsteer/"),
    ("engine", "src/"),
    ("eval", "eval/"),
    ("gen", "organism/gen/"),
    ("trainer", "organism/trainer/"),
    ("pipeline", "organism/pipeline/"),
    ("server", "tools/server/"),
    ("tinymodel", "tools/tinymodel/"),
    ("cli", "tools/cli/"),
    ("python", "python/"),
]
LEAVES = ("tests/", "bench/", "fuzz/", "examples/")
ALLOWED = {
    "base": {"base"},
    "api": {"api", "base"},
    "engine": {"api", "base", "engine", "libllama"},
    "eval": {"api", "base", "eval"},
    "gen": {"base", "gen"},
    "trainer": {"base", "trainer", "libllama"},
    "pipeline": {"api", "base", "eval", "gen", "trainer", "pipeline"},
    "server": {"api", "base", "eval", "server"},
    "tinymodel": {"api", "base", "tinymodel", "libllama"},
    "cli": {"api", "base", "eval", "gen", "trainer", "pipeline", "server", "cli"},
    "python": {"api", "base", "eval", "python"},
}
LIBLLAMA = re.compile(r"^(llama(-cpp)?|ggml(-[a-z]+)?|gguf)\.h$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
ROOTS = ["include", "src", ".", "tests"]


def layer_of(path: str) -> str | None:
    if path in BASE_HEADERS:
        return "base"
    for name, prefix in LAYERS:
        if path.startswith(prefix):
            return name
    return None


def resolve(repo: Path, including: str, target: str) -> str | None:
    """The repository file an include names, as the compiler would find it, or None."""
    for base in [str(Path(including).parent), *ROOTS]:
        candidate = (repo / base / target).resolve()
        if candidate.is_file() and candidate.is_relative_to(repo):
            return candidate.relative_to(repo).as_posix()
    return None


def check(repo: Path) -> list[str]:
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "*.cpp", "*.h"], check=True,
                           capture_output=True, text=True).stdout.split()
    problems = []
    for f in files:
        src = layer_of(f)
        if src is None:
            if not f.startswith(LEAVES):
                problems.append(f"{f}: in no layer (add its folder to scripts/check_layers.py)")
            continue
        text = (repo / f).read_text(errors="replace")
        for m in INCLUDE.finditer(text):
            target = m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            if LIBLLAMA.match(target):
                dst = "libllama"
                if src == "engine" and target.startswith("llama") and not f.startswith("src/llama/"):
                    problems.append(f"{f}:{line}: {target} outside src/llama/ (its one owner)")
                    continue
            else:
                path = resolve(repo, f, target)
                if path is None:
                    continue  # a third-party header on the system include path
                dst = layer_of(path)
                if dst is None:
                    problems.append(f"{f}:{line}: includes {path}, which is in no layer")
                    continue
            if dst not in ALLOWED[src]:
                problems.append(f"{f}:{line}: {src} includes {dst} ({target})")
    return problems


def self_test() -> int:
    """A checker that finds nothing would pass every tree: show that it finds planted faults."""
    import tempfile

    files = {
        "include/kvsteer/error.h": "",
        "include/kvsteer/model.h": '#include "kvsteer/error.h"\n',
        "src/llama/model.cpp": '#include "llama.h"\n#include "kvsteer/model.h"\n',
        "src/kv/blob.cpp": '#include "llama.h"\n',                  # fault: llama.h outside
        "eval/runner.h": '#include "kvsteer/model.h"\n',
        "organism/gen/vocab.h": '#include "kvsteer/error.h"\n',
        "organism/gen/bad.h": '#include "eval/runner.h"\n',         # fault: gen above eval
        "eval/bad.cpp": '#include "organism/gen/vocab.h"\n',        # fault: eval above gen
        "tests/any_test.cpp": '#include "organism/gen/vocab.h"\n#include "llama.h"\n',
        "stray/x.cpp": "",                                          # fault: in no layer
        "src/base/file_io.cpp": '#include "kvsteer/file_io.h"\n',
        "src/base/bad.cpp": '#include "kvsteer/model.h"\n',        # fault: base above the API
    }
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        for name, text in files.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
        found = sorted(p.split(":")[0] for p in check(repo))
    want = ["eval/bad.cpp", "organism/gen/bad.h", "src/base/bad.cpp", "src/kv/blob.cpp",
            "stray/x.cpp"]
    if found != want:
        print(f"self-test: found faults in {found}, expected {want}", file=sys.stderr)
        return 1
    print(f"self-test: the {len(want)} planted faults found, nothing else")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    problems = check(repo.resolve())
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} include(s) against the layering (docs/DESIGN.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
