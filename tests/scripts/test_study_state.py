"""The study's committed state (scripts/study_state.py) carries a run across machines: exported
without any text, restored into an empty output folder, and resumed by kvsteer eval into the
answers an uninterrupted run gives. Real runs of the CLI on the reasoning organism."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from study_state import _replace_whole, export_state, restore_state, write_atomic  # noqa: E402

N_ITEMS = 16


@pytest.fixture(scope="module")
def data(organism_data) -> Path:
    return organism_data(N_ITEMS, 80)


def eval_run(cli: Path, organism: Path, data: Path, out: Path, limit: int) -> dict:
    subprocess.run([str(cli), "eval", "-m", str(organism), "-t", "1", "--parallel", "4",
                    "--n-predict", "48", "--no-preset", "--pairs", "20", "--shots", "3",
                    "--offset", "\n", "--task", "organism-numeric", "--data", str(data / "test.jsonl"),
                    "--traces", str(data / "traces.jsonl"), "--method", "cache", "--cv", "4",
                    "--limit", str(limit), "-o", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    return json.loads((out / "summary.json").read_text())


def records(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines() if line]
    return {r["index"]: r for r in rows}


NUMBERS = ("correct", "extracted", "n_tokens", "n_steps", "reasoning", "forced")


def test_a_run_goes_on_from_its_exported_state(cli: Path, organism: Path, data: Path,
                                               tmp_path: Path) -> None:
    whole = eval_run(cli, organism, data, tmp_path / "whole", N_ITEMS)

    # A study interrupted on one machine: its run holds 8 answers and no summary; a finished
    # sweep, a running sweep's journal and a vector lie beside it.
    first = tmp_path / "first" / "runs" / "t-cache"
    eval_run(cli, organism, data, first, 8)
    (first / "summary.json").unlink()  # killed before its summary
    sel = tmp_path / "first" / "selection" / "t"
    sel.mkdir(parents=True)
    (sel / "done.json").write_text('{"kind": "kvsteer-sweep"}\n')
    header = {"kind": "kvsteer-sweep-items", "version": 1, "config": {}, "grid": []}
    item = {"setting": 0, **records(first)[0]}
    (sel / "running.json.items.jsonl").write_text(json.dumps(header) + "\n" + json.dumps(item) +
                                                  "\n" + '{"setting": 0, "ind')  # torn line
    (tmp_path / "first" / "vectors").mkdir()
    (tmp_path / "first" / "vectors" / "t-last.gguf").write_bytes(b"GGUF vector bytes")
    (tmp_path / "first" / "vectors" / "t-cot.tmp.gguf").write_bytes(b"half an extraction")

    state = tmp_path / "state"
    export_state(tmp_path / "first", state)
    kept = (state / "t-cache.items.jsonl").read_text()
    assert len(kept.splitlines()) == 8
    for line in kept.splitlines() + (state / "selection/t/running.json.items.jsonl").read_text().splitlines():
        assert "prompt" not in json.loads(line) and "response" not in json.loads(line)
    assert all("answer_first" in json.loads(line) for line in kept.splitlines())
    assert len((state / "selection/t/running.json.items.jsonl").read_text().splitlines()) == 2
    assert not (state / "vectors" / "t-cot.tmp.gguf").exists()

    # Another machine: an empty output folder, the state restored, the run resumed to 16.
    second = tmp_path / "second"
    restored = restore_state(state, second)
    assert "run t-cache: 8 items, unfinished" in restored
    assert (second / "vectors" / "t-last.gguf").read_bytes() == b"GGUF vector bytes"
    assert (second / "selection/t/done.json").exists()
    resumed = eval_run(cli, organism, data, second / "runs" / "t-cache", N_ITEMS)
    for key in ("n", "correct", "accuracy", "reasoning_rate", "lengths"):
        assert resumed[key] == whole[key], key
    want, got = records(tmp_path / "whole"), records(second / "runs" / "t-cache")
    assert sorted(got) == list(range(N_ITEMS))
    for i in range(N_ITEMS):
        assert {k: got[i][k] for k in NUMBERS} == {k: want[i][k] for k in NUMBERS}, i
        assert ("response" in got[i]) == (i >= 8), i

    # Restoring never overwrites what the output folder already holds.
    (second / "vectors" / "t-last.gguf").write_bytes(b"extracted here")
    assert restore_state(state, second) == []
    assert (second / "vectors" / "t-last.gguf").read_bytes() == b"extracted here"


def test_a_finished_sweep_keeps_its_compact_journal_in_the_state(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    sel = out / "selection" / "t"
    sel.mkdir(parents=True)
    header = '{"kind": "kvsteer-sweep-items"}\n'
    answer = {"setting": 0, "index": 0, "id": "q0", "correct": True, "response": "B: because"}
    (sel / "s.json.items.jsonl").write_text(header + json.dumps(answer) + "\n")
    export_state(out, state)
    kept = state / "selection/t/s.json.items.jsonl"
    assert len(kept.read_text().splitlines()) == 2
    # The sweep answers one more item and finishes: the state's journal follows it to the end,
    # still without texts.
    (sel / "s.json.items.jsonl").write_text(header + json.dumps(answer) + "\n" +
                                           json.dumps({**answer, "index": 1, "id": "q1"}) + "\n")
    (sel / "s.json").write_text('{"kind": "kvsteer-sweep"}\n')
    export_state(out, state)
    lines = kept.read_text().splitlines()
    assert len(lines) == 3
    assert all("response" not in json.loads(line) for line in lines)
    assert json.loads(lines[2])["answer_first"] is True
    assert (state / "selection/t/s.json").exists()
    shutil.rmtree(out)
    assert restore_state(state, out) == ["selection/t/s.json", "selection/t/s.json.items.jsonl"]


def extract(cli: Path, organism: Path, data: Path, out: Path, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), "extract", "-m", str(organism), "-t", "1", "--task",
                           "generic", "--traces", str(data / "traces.jsonl"), "-N", "12",
                           "-k", "3", "--parallel", "2", "--checkpoint-every", "0", "-o", str(out)],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "passive", **(env or {})})


def test_an_extraction_goes_on_from_its_exported_checkpoint(cli: Path, organism: Path, data: Path,
                                                             tmp_path: Path) -> None:
    whole = tmp_path / "whole.gguf"
    assert extract(cli, organism, data, whole).returncode == 0
    # Killed on one machine after 5 of 12 pairs, as the study names its vectors.
    first = tmp_path / "first"
    (first / "vectors").mkdir(parents=True)
    tmp = first / "vectors" / "t-last.gguf.tmp.gguf"
    killed = extract(cli, organism, data, tmp, {"KVSTEER_TEST_EXIT_AFTER_CHECKPOINTS": "5"})
    assert killed.returncode == 137, killed.stderr
    state = tmp_path / "state"
    export_state(first, state)
    assert (state / "vectors" / "t-last.gguf.tmp.gguf.partial").exists()
    assert not (state / "vectors" / "t-last.gguf.tmp.gguf").exists()

    # Another machine: the checkpoint is restored, and the extraction goes on from pair 5.
    second = tmp_path / "second"
    assert restore_state(state, second) == ["extraction checkpoint t-last.gguf.tmp.gguf.partial"]
    resumed = extract(cli, organism, data, second / "vectors" / "t-last.gguf.tmp.gguf")
    assert resumed.returncode == 0, resumed.stderr
    assert "5 of 12 pairs done" in resumed.stderr
    assert (second / "vectors" / "t-last.gguf.tmp.gguf").read_bytes() == whole.read_bytes()

    # Finished (the study renames the vector): the state drops the checkpoint, and a restore
    # into a folder that has the vector brings back no stale checkpoint.
    (second / "vectors" / "t-last.gguf.tmp.gguf").rename(second / "vectors" / "t-last.gguf")
    export_state(second, state)
    assert not (state / "vectors" / "t-last.gguf.tmp.gguf.partial").exists()
    assert (state / "vectors" / "t-last.gguf").read_bytes() == whole.read_bytes()
    (state / "vectors" / "t-last.gguf.tmp.gguf.partial").write_bytes(b"stale")
    assert restore_state(state, second) == []


def caa_run(cli: Path, organism: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), "eval", "-m", str(organism), "-t", "1", "--parallel", "4",
                           "--n-predict", "32", "--no-preset", "--pairs", "12", "--shots", "3",
                           "--task", "organism-numeric", "--data", str(data / "test.jsonl"),
                           "--traces", str(data / "traces.jsonl"), "--method", "caa",
                           "--caa-layer", "3", "--caa-c", "4", "--limit", "4",
                           "--caa-cache", str(out / "caa"), "-o", str(out / "runs" / "t-caa")],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "passive"})


def test_activation_directions_travel_with_the_state(cli: Path, organism: Path, data: Path,
                                                     tmp_path: Path) -> None:
    first, state, second = tmp_path / "first", tmp_path / "state", tmp_path / "second"
    assert caa_run(cli, organism, data, first).returncode == 0
    (directions,) = (first / "caa").glob("caa-*.json")
    export_state(first, state)
    assert (state / "caa" / directions.name).read_bytes() == directions.read_bytes()
    assert f"activation directions {directions.name}" in restore_state(state, second)
    # The restored file is what the next run uses: with its directions zeroed, it is unsteered.
    kept = json.loads((second / "caa" / directions.name).read_text())
    kept["directions"] = [[0.0] * len(row) for row in kept["directions"]]
    (second / "caa" / directions.name).write_text(json.dumps(kept))
    shutil.rmtree(second / "runs")
    assert caa_run(cli, organism, data, second).returncode == 0
    base = second / "base"
    subprocess.run([str(cli), "eval", "-m", str(organism), "-t", "1", "--parallel", "4",
                    "--n-predict", "32", "--no-preset", "--task", "organism-numeric", "--data",
                    str(data / "test.jsonl"), "--method", "baseline", "--limit", "4", "-o",
                    str(base)], check=True, capture_output=True,
                   env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    responses = [r["response"] for _, r in sorted(records(second / "runs" / "t-caa").items())]
    assert responses == [r["response"] for _, r in sorted(records(base).items())]
    assert responses != [r["response"] for _, r in sorted(records(first / "runs" / "t-caa").items())]


def test_the_report_draws_the_finished_runs_and_sweeps_as_the_study_goes(
        cli: Path, organism: Path, data: Path, tmp_path: Path) -> None:
    from study_real import Study  # noqa: E402  (imports study_results, which needs scripts/)
    out, state = tmp_path / "out", tmp_path / "state"
    eval_run(cli, organism, data, out / "runs" / "t-cache", 4)
    # The selection split's baseline is the results page's, not the report's: given both, the
    # report would refuse two runs of one task, method and label.
    eval_run(cli, organism, data, out / "runs" / "t-selection-baseline", 4)
    selection = out / "selection" / "t"
    selection.mkdir(parents=True)
    subprocess.run([str(cli), "sweep", "-m", str(organism), "-t", "1", "--parallel", "8",
                    "--n-predict", "32", "--no-preset", "--pairs", "20", "--shots", "3",
                    "--offset", "\n", "--task", "organism-numeric", "--data",
                    str(data / "test.jsonl"), "--traces", str(data / "traces.jsonl"),
                    "--method", "cache", "--ck-grid", "0", "--cv-grid", "-2,4", "--limit", "4",
                    "-o", str(selection / "cache-cv.json")],
                   check=True, capture_output=True, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
    # The selection folder also holds records of chosen settings, and a sweep still running has
    # only its journal: neither is a sweep the report may be given.
    (selection / "chosen-cache.json").write_text(json.dumps({"method": "cache", "chosen": {}}))
    (selection / "paper-cache.json").write_text(json.dumps({"setting": {"c_v": 6}}))
    header = (selection / "cache-cv.json.items.jsonl").read_text().splitlines()[0]
    (selection / "caa.json.items.jsonl").write_text(header + "\n")
    study = Study(str(cli), str(organism), ROOT.parent / "shared", out, 1, "full", state=state,
                  title="T")
    study.checkpoint()
    report = (out / "report" / "report.md").read_text()
    assert "## Stability" in report and "c_k=0, c_v=" in report
    assert "| runs/t-cache/summary.json | summary |" in report and str(out) not in report
    figure = out / "report" / "stability-organism-numeric.svg"
    assert "Cache steering: reasoning vs c_v" in figure.read_text()
    # The committed results carry the report's text and figures.
    assert (state / "report" / "report.md").read_text() == report
    assert (state / "report" / "stability-organism-numeric.svg").exists()

    # A report that cannot be drawn is logged while the study runs, and fails it at its end.
    broken = tmp_path / "kvsteer-broken"
    broken.write_text("#!/bin/sh\necho 'kvsteer: error: no gnuplot' >&2\nexit 3\n")
    broken.chmod(0o755)
    study.kvsteer = str(broken)
    study.checkpoint()
    assert "# report not written: kvsteer: error: no gnuplot" in study.log.read_text()
    with pytest.raises(SystemExit, match="kvsteer report failed: kvsteer: error: no gnuplot"):
        study.checkpoint(strict=True)


def test_a_residual_checkpoint_is_kept_while_its_extraction_runs(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    (out / "caa").mkdir(parents=True)
    partial = out / "caa" / "caa-0123.json.partial"
    partial.write_bytes(b"KVSRCKPT running sums")
    (out / "caa" / ".caa-0123.json.partial.tmp").write_bytes(b"half")
    export_state(out, state)
    assert sorted(f.name for f in (state / "caa").iterdir()) == ["caa-0123.json.partial"]
    fresh = tmp_path / "fresh"
    assert restore_state(state, fresh) == ["activation directions caa-0123.json.partial"]
    assert (fresh / "caa" / partial.name).read_bytes() == partial.read_bytes()
    # Finished: kvsteer wrote the directions and removed the checkpoint; the state follows, and a
    # stale checkpoint never comes back beside finished directions.
    partial.unlink()
    (out / "caa" / "caa-0123.json").write_text('{"kind": "kvsteer-caa-directions"}\n')
    export_state(out, state)
    assert sorted(f.name for f in (state / "caa").iterdir()) == ["caa-0123.json"]
    (state / "caa" / partial.name).write_bytes(b"stale")
    (fresh / "caa" / partial.name).unlink()
    (fresh / "caa" / "caa-0123.json").write_text("{}")
    assert restore_state(state, fresh) == []
    assert not (fresh / "caa" / partial.name).exists()


def test_a_finished_run_is_exported_again_only_when_it_changes(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    run = out / "runs" / "t-x"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"limit": 1}\n')
    record = {"index": 0, "correct": True, "prompt": "p", "response": "A: yes"}
    (run / "items.jsonl").write_text(json.dumps(record) + "\n")
    (run / "summary.json").write_text('{"n": 1}\n')
    export_state(out, state)
    kept = state / "t-x.items.jsonl"
    first = kept.stat().st_ino  # every write replaces the file (a new inode)
    assert json.loads(kept.read_text())["answer_first"] is True
    export_state(out, state)
    assert kept.stat().st_ino == first  # finished and unchanged: not rewritten
    # Extended to 2 items: a new summary, so the records are exported again.
    (run / "items.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "index": 1}) + "\n")
    (run / "summary.json").write_text('{"n": 2}\n')
    export_state(out, state)
    assert len(kept.read_text().splitlines()) == 2


def test_two_writers_of_one_file_never_write_into_each_other(tmp_path: Path) -> None:
    # The study exports its state every few minutes and a person may export it by hand meanwhile.
    dest = tmp_path / "run.summary.json"

    def slow_writer(tmp: Path) -> None:
        tmp.write_text("slow", encoding="utf-8")
        write_atomic(dest, "fast")  # the other export, finished while this one writes
        assert tmp.read_text(encoding="utf-8") == "slow"

    _replace_whole(dest, slow_writer)
    assert dest.read_text(encoding="utf-8") == "slow"
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "run.summary.json"
    write_atomic(dest, "old")

    def failing(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _replace_whole(dest, failing)
    assert dest.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]
