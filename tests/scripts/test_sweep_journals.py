"""The results page reads the selection sweeps' journals (scripts/study_results.py: each setting's
paired difference to the selection baseline, and how firmly the selection rule chose). Its other
tests write journals by hand; this one has the real `kvsteer sweep` write them, on the organism,
so that the page and the CLI cannot drift apart unnoticed: every setting is found in its journal
and scores there what the sweep's own summary says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from study_results import (SELECTION_BASELINE, candidate_answers, choose,  # noqa: E402
                           selection_stability, sweep_lines)

ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}
TASK = "organism-numeric"
N_ITEMS = 6


@pytest.fixture(scope="module")
def data(organism_data) -> Path:
    return organism_data(N_ITEMS, 30)


def kvsteer(cli: Path, *args: str) -> None:
    done = subprocess.run([str(cli), *args], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def swept(cli: Path, organism: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with a cache sweep, an activation sweep and the selection baseline."""
    out = tmp_path_factory.mktemp("study")
    sel = out / "selection" / TASK
    sel.mkdir(parents=True)
    traces = str(data / "traces.jsonl")
    vector = out / "v.gguf"
    kvsteer(cli, "extract", "-m", str(organism), "-t", "1", "--task", "generic", "--traces",
            traces, "-N", "12", "-k", "2", "-o", str(vector))
    common = ["-m", str(organism), "-t", "1", "--task", TASK, "--data", str(data / "test.jsonl"),
              "--limit", str(N_ITEMS), "--n-predict", "24", "--parallel", "3", "--kv-streams",
              "per-sequence"]
    steered = common + ["--traces", traces, "--no-preset", "--pairs", "12", "--shots", "2"]
    kvsteer(cli, "sweep", *steered, "--method", "cache", "--vector", str(vector), "--ck-grid",
            "0", "--cv-grid", "-2,4", "--offset", "\n", "-o", str(sel / "cache-cv.json"))
    kvsteer(cli, "sweep", *steered, "--method", "caa", "--caa-layers", "2,4", "--caa-coefs",
            "1,3", "-o", str(sel / "caa.json"))
    kvsteer(cli, "eval", *common, "--method", "baseline", "-o",
            str(out / "runs" / f"{TASK}-{SELECTION_BASELINE}"))
    return out


def record(sweep: dict, setting, paper: dict) -> dict:
    """A selection record as study_real.select_cache / select_caa write it, from one sweep."""
    candidates = [{"setting": setting(s), "accuracy": s["accuracy"]} for s in sweep["settings"]]
    return {"candidates": candidates, "paper_setting": paper,
            "chosen": choose(candidates, paper)["setting"]}


@pytest.mark.parametrize("name", ["cache-cv", "caa"])
def test_every_candidate_scores_in_its_journal_what_its_sweep_says(swept: Path, name: str) -> None:
    sweep = json.loads((swept / "selection" / TASK / f"{name}.json").read_text())
    if name == "caa":
        rec = record(sweep, lambda s: {"layer": s["layer"], "c": s["c"]}, {"layer": 2, "c": 3.0})
    else:
        rec = record(sweep, lambda s: {"c_k": s["c_k"], "c_v": s["c_v"], "offset": "\n",
                                       "vector_cell": "last"},
                     {"c_k": 0.0, "c_v": 4.0, "offset": "\n", "vector_cell": "last"})
    answers = candidate_answers(swept, TASK, rec["candidates"])
    assert answers is not None
    assert len(answers) == len(sweep["settings"]) == (4 if name == "caa" else 2)
    for s, a in zip(sweep["settings"], answers):
        assert len(a) == N_ITEMS
        assert 100 * sum(a.values()) / N_ITEMS == pytest.approx(s["accuracy"], abs=0.01)
    line = selection_stability(swept, rec, TASK)
    assert f"of the {N_ITEMS} selection items" in line and "the chosen setting wins" in line


def test_every_sweep_setting_is_paired_with_the_selection_baseline(swept: Path) -> None:
    lines = sweep_lines(swept, TASK)
    text = "\n".join(lines)
    assert text.count("(vs baseline ") == 2 + 4, text
    assert "**running**" not in text
