"""kvsteer eval --like RUN: a run made again, or continued, from its own config.json, on the
organism. Made again elsewhere it gives the run's very answers; flags that would change the
computation cannot stand beside it, and a file that changed since is refused before anything is
written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}
# Every number of an item record that the computation decides.
ANSWER = ("index", "response", "extracted", "correct", "n_tokens", "n_steps", "reasoning", "forced")


@pytest.fixture(scope="module")
def data(organism_data) -> Path:
    return organism_data(8, 40)


def kvsteer(cli: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), *args], capture_output=True, text=True, env=ENV)


def items(run: Path) -> list[dict]:
    return [{k: r.get(k) for k in ANSWER}
            for r in map(json.loads, (run / "items.jsonl").read_text().splitlines())]


def steered_run(cli: Path, organism: Path, data: Path, where: Path) -> Path:
    """A cache-steered run with a vector file, an offset token by text and a selection record."""
    vector = where / "v.gguf"
    done = kvsteer(cli, "extract", "-m", str(organism), "-t", "1", "--task", "generic",
                   "--traces", str(data / "traces.jsonl"), "-N", "12", "-k", "2", "-o",
                   str(vector))
    assert done.returncode == 0, done.stderr
    selection = where / "chosen.json"
    selection.write_text(json.dumps({"rule": "a stand-in record", "chosen": {"c_v": 4}}))
    run = where / "run"
    done = kvsteer(cli, "eval", "-m", str(organism), "-t", "1", "--task", "organism-numeric",
                   "--data", str(data / "test.jsonl"), "--traces", str(data / "traces.jsonl"),
                   "--method", "cache", "--no-preset", "--pairs", "12", "--shots", "2",
                   "--vector", str(vector), "--ck", "0.3", "--cv", "4", "--layers", "2-",
                   "--offset", "\n", "--selection", str(selection), "--limit", "4",
                   "--n-predict", "32", "--parallel", "2", "--kv-streams", "per-sequence",
                   "-o", str(run))
    assert done.returncode == 0, done.stderr
    return run


def test_a_run_made_again_elsewhere_gives_its_answers_and_its_configuration(
        cli: Path, organism: Path, data: Path, tmp_path: Path) -> None:
    run = steered_run(cli, organism, data, tmp_path)
    again = tmp_path / "again"
    done = kvsteer(cli, "eval", "--like", str(run), "-o", str(again), "-t", "1")
    assert done.returncode == 0, done.stderr
    assert items(again) == items(run)
    assert (json.loads((again / "config.json").read_text()) ==
            json.loads((run / "config.json").read_text()))


def test_a_run_is_continued_in_place_with_a_larger_limit(
        cli: Path, organism: Path, data: Path, tmp_path: Path) -> None:
    run = steered_run(cli, organism, data, tmp_path)
    first = items(run)
    done = kvsteer(cli, "eval", "--like", str(run), "--limit", "6", "-t", "1")
    assert done.returncode == 0, done.stderr
    grown = items(run)
    assert len(grown) == 6 and grown[:4] == first
    assert json.loads((run / "config.json").read_text())["limit"] == 6
    # Fewer items than the run holds is refused, as a resumed eval refuses it.
    done = kvsteer(cli, "eval", "--like", str(run), "--limit", "2")
    assert done.returncode == 2 and "may raise --limit" in done.stderr


@pytest.mark.parametrize("flags", [["--cv", "3"], ["-m", "MODEL"], ["--method", "baseline"],
                                   ["--parallel", "4"], ["--kv-streams", "unified"]])
def test_a_setting_beside_like_is_refused(cli: Path, organism: Path, data: Path,
                                          tmp_path: Path, flags: list[str]) -> None:
    run = steered_run(cli, organism, data, tmp_path)
    flags = [str(organism) if f == "MODEL" else f for f in flags]  # the run's own model, even
    done = kvsteer(cli, "eval", "--like", str(run), "-o", str(tmp_path / "x"), *flags)
    assert done.returncode == 2
    assert "cannot be given beside it (only -o, --limit, -t and --caa-cache can)" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_a_file_changed_since_or_a_configuration_it_cannot_make_is_refused(
        cli: Path, organism: Path, data: Path, tmp_path: Path) -> None:
    run = steered_run(cli, organism, data, tmp_path)
    keep = tmp_path / "v.kept"
    shutil.copyfile(tmp_path / "v.gguf", keep)
    done = kvsteer(cli, "extract", "-m", str(organism), "-t", "1", "--task", "generic",
                   "--traces", str(data / "traces.jsonl"), "-N", "8", "-k", "2", "-o",
                   str(tmp_path / "v.gguf"))
    assert done.returncode == 0, done.stderr
    done = kvsteer(cli, "eval", "--like", str(run), "-o", str(tmp_path / "x"))
    assert done.returncode == 2 and "vector_file would differ" in done.stderr
    assert not (tmp_path / "x").exists()
    shutil.copyfile(keep, tmp_path / "v.gguf")

    config = json.loads((run / "config.json").read_text())
    for change, message in (({"decoding": "sampling"}, "the run was sampled"),
                            ({"steering": dict(config["steering"], layers_v="1-")},
                             "K and V in different layers"),
                            ({"task": 3}, "not a run configuration"),
                            ({"model": str(tmp_path / "gone.gguf")},
                             f"{run}: the run's model: model file")):
        (run / "config.json").write_text(json.dumps(dict(config, **change)))
        done = kvsteer(cli, "eval", "--like", str(run), "-o", str(tmp_path / "x"))
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and not (tmp_path / "x").exists()
    (run / "config.json").unlink()
    done = kvsteer(cli, "eval", "--like", str(run))
    assert done.returncode != 0 and "config.json" in done.stderr
    done = kvsteer(cli, "eval", "--task", "arc", "--data", "d.jsonl", "-o", str(tmp_path / "x"))
    assert done.returncode == 2 and "--model is required (or --like RUN_DIR)" in done.stderr
