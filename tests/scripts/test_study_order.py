"""The full study's stages (scripts/study_real.py, run_full): every task's question on the first
QUESTION_PASS test items, then every method on the first FIRST_PASS task by task, then the whole
test sets method by method across the tasks (WHOLE_TEST_ORDER), so that a study stopped in its
days-long last stage has the same methods whole on every task. The runs themselves are recorded,
not answered: what is checked is which run each stage asks for, in which order, at which limit."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import study_real  # noqa: E402
from study_real import (FIRST_PASS, QUESTION_ORDER, QUESTION_PASS, WHOLE_TEST_ORDER,  # noqa: E402
                        Study, full_plans)


ENGINE_ONLY = """#!/usr/bin/env python3
import json, sys
assert sys.argv[1:] == ["info", "--engine"], sys.argv
print(json.dumps({"engine": {"cpu_features": "CPU : AVX2 = 1"}}))
"""


def new_study(tmp_path: Path) -> Study:
    """A full-mode study whose kvsteer only says which engine it is (the study asks first)."""
    fake = tmp_path / "kvsteer"
    fake.write_text(ENGINE_ONLY)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return Study(str(fake), "model.gguf", ROOT.parent / "shared", tmp_path / "out", 2, "full")


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A full-mode study whose steps append (task, run, limit) instead of running."""
    calls: list[tuple[str, str, int]] = []
    study = new_study(tmp_path)

    def run_eval(plan, method, args, selection=None, n_predict=None, name=None):
        calls.append((plan.name, name or method, plan.limit))

    def cache_paper(study, plan, v):
        calls.append((plan.name, "cache-paper", plan.limit))

    def fake_test_runs(study, plan):
        def step(name):
            return lambda: calls.append((plan.name, name, plan.limit))
        return [(name, step(name)) for name in WHOLE_TEST_ORDER]

    monkeypatch.setattr(study, "run_eval", run_eval)
    monkeypatch.setattr(study, "vectors", lambda plan, cot=True: {})
    monkeypatch.setattr(study_real, "cache_paper", cache_paper)
    monkeypatch.setattr(study_real, "diagnose", lambda *a, **k: None)
    monkeypatch.setattr(study_real, "test_runs", fake_test_runs)
    return study, calls


def test_the_stages_ask_for_every_run_in_order(recorded) -> None:
    study, calls = recorded
    plans = full_plans()
    study_real.run_full(study, plans)
    tasks = [p.name for p in plans]
    question = [(t, "baseline", QUESTION_PASS) for t in QUESTION_ORDER] + [
        (t, "cache-paper", QUESTION_PASS) for t in QUESTION_ORDER]
    comparison = [(t, run, FIRST_PASS) for t in tasks for run in WHOLE_TEST_ORDER]
    whole = [(t, run, 0) for run in WHOLE_TEST_ORDER for t in tasks]
    assert calls == question + comparison + whole
    # Stage 3 is method-major: every task's baseline before any task's paper setting.
    assert [c[0] for c in whole[:len(tasks)]] == tasks
    assert {c[1] for c in whole[:len(tasks)]} == {"baseline"}


def test_a_question_answered_earlier_is_not_asked_again(recorded, tmp_path: Path) -> None:
    study, calls = recorded
    for run in ("arc-baseline", "arc-cache-paper"):
        folder = study.out / "runs" / run
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"limit": {QUESTION_PASS}}}')
        (folder / "summary.json").write_text(f'{{"n": {QUESTION_PASS}}}')
    study_real.run_full(study, full_plans())
    stage1 = [c for c in calls if c[2] == QUESTION_PASS]
    assert ("arc", "cache-paper", QUESTION_PASS) not in stage1
    assert ("gsm8k", "cache-paper", QUESTION_PASS) in stage1


def test_stage_3_refuses_a_run_missing_from_its_order(recorded, monkeypatch) -> None:
    study, calls = recorded

    def one_more(study, plan):
        return [(name, lambda: None) for name in WHOLE_TEST_ORDER + ("cache-late",)]

    monkeypatch.setattr(study_real, "test_runs", one_more)
    with pytest.raises(RuntimeError, match="cache-late"):
        study_real.run_full(study, full_plans())
    assert not [c for c in calls if c[2] == 0]


def test_the_real_steps_are_those_stage_3_orders_and_read_the_limit_when_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = new_study(tmp_path)
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(study, "vectors", lambda plan, cot=True: {"last": Path("v.gguf")})
    monkeypatch.setattr(study, "run_eval",
                        lambda plan, method, args, **k: seen.append((method, plan.limit)))
    plan = full_plans()[0]
    plan.limit = FIRST_PASS
    steps = dict(study_real.test_runs(study, plan))
    assert list(steps) == list(WHOLE_TEST_ORDER)
    plan.limit = 0
    steps["baseline"]()
    assert seen == [("baseline", 0)]
