"""The study extracts a vector when a command that names it first runs, never for a step whose
runs are already done (scripts/study_real.py, Study.vectors / Study.ensure_vectors). The commands
go to a stand-in for kvsteer that records them and writes the -o files: what is tested is which
commands the study runs, in which order."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from study_real import Study, full_plans  # noqa: E402

RECORDER = """#!/bin/sh
if [ "$1" = "info" ]; then echo '{{"engine": {{"cpu_features": "CPU : AVX2 = 1"}}}}'; exit 0; fi
echo "$*" >> "{log}"
while [ $# -gt 0 ]; do
  if [ "$1" = "-o" ]; then shift; mkdir -p "$(dirname "$1")"; : > "$1"; fi
  shift
done
"""


def study(tmp_path: Path) -> tuple[Study, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "commands.txt"
    fake = tmp_path / "kvsteer"
    fake.write_text(RECORDER.format(log=log))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return Study(str(fake), "model.gguf", ROOT.parent / "shared", tmp_path / "out", 2, "full",
                 state=tmp_path / "state"), log


def commands(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_vectors_are_extracted_when_first_named(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    v = s.vectors(arc)
    assert commands(log) == []  # naming the vectors runs nothing
    s.ensure_vectors(["eval", "--vector", str(v["second_last"])])
    # One extraction makes both cells; the committed state holds them as soon as they exist
    # (not after the next step: a machine lost in between would lose the vector).
    assert commands(log) == ["extract"]
    assert v["last"].exists() and v["second_last"].exists()
    assert (tmp_path / "state" / "vectors" / "arc-last.gguf").exists()
    s.run(["eval", "--vector", str(v["second_last"])])
    assert commands(log) == ["extract", "eval"]
    assert not Path(str(v["last"]) + ".tmp.gguf").exists()
    s.run(["eval", "--vector", str(v["last"])])
    assert commands(log) == ["extract", "eval", "eval"]
    s.run(["eval", "--vector", str(v["cot"])])
    assert commands(log) == ["extract", "eval", "eval", "extract", "eval"]
    assert "--cot-prefix" in log.read_text().splitlines()[3]


def test_a_step_already_done_needs_no_vector(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    v = s.vectors(full_plans()[0])
    done = tmp_path / "sweep.json"
    done.write_text("{}")
    s.run(["sweep", "--vector", str(v["last"])], done=done)
    assert commands(log) == []
    # Vectors restored from the committed state are used as they are.
    s2, log2 = study(tmp_path / "again")
    (s2.out / "vectors").mkdir(parents=True)
    for name in ("arc-last.gguf", "arc-second-last.gguf", "arc-cot.gguf"):
        (s2.out / "vectors" / name).write_text("restored")
    v2 = s2.vectors(full_plans()[0])
    s2.run(["eval", "--vector", str(v2["last"]), "--vector", str(v2["cot"])])
    assert commands(log2) == ["eval"]


def test_the_log_names_an_extraction_before_the_step_that_needs_it(tmp_path: Path) -> None:
    s, _ = study(tmp_path)
    arc = full_plans()[0]
    v = s.vectors(arc)
    s.run_eval(arc, "cache", ["--vector", str(v["last"])], name="cache-paper")
    steps = [line.split("] ", 1)[1] for line in s.log.read_text().splitlines()
             if line.startswith("# [")]
    assert steps[0].startswith("arc: extracting the cache-steering vector")
    assert steps[1].startswith("arc: cache-paper on")


def test_the_selection_baseline_runs_on_the_selection_items(tmp_path: Path) -> None:
    from study_real import SELECTION_BASELINE  # noqa: E402
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    out = s.run_eval(arc, "baseline", [], name=SELECTION_BASELINE, on_selection_split=True)
    assert out == s.out / "runs" / "arc-selection-baseline"
    args = log.read_text().split()
    assert args[0] == "eval"
    assert args[args.index("--data") + 1] == str(s.out / "data" / "selection-arc.jsonl")
    assert args[args.index("--limit") + 1] == str(arc.selection_n)
    assert "selection items" in s.log.read_text()


def test_the_papers_activation_setting_runs_on_test_beside_the_selected_one(tmp_path: Path) -> None:
    import json  # noqa: E402
    from study_real import caa_paper  # noqa: E402
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    selected = {"paper_setting": {"layer": 14, "c": 3.0}, "chosen": {"layer": 8, "c": 3.0}}
    caa_paper(s, arc, selected)
    args = log.read_text().split()
    assert args[0] == "eval"
    assert args[args.index("--caa-layer") + 1] == "14" and args[args.index("--caa-c") + 1] == "3"
    assert args[args.index("-o") + 1] == str(s.out / "runs" / "arc-caa-paper")
    assert args[args.index("--n-predict") + 1] == str(arc.caa_n_predict)
    record = json.loads((s.out / "selection" / "arc" / "paper-caa.json").read_text())
    assert record["setting"] == {"layer": 14, "c": 3.0}
    # When the rule chose the paper's setting, its test run already is that run.
    s2, log2 = study(tmp_path / "same")
    caa_paper(s2, arc, {"paper_setting": {"layer": 14, "c": 3.0}, "chosen": {"layer": 14, "c": 3.0}})
    assert commands(log2) == []
