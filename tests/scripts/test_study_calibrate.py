"""A study run answered again from its own configuration (scripts/study_calibrate.py): the command
rebuilt from config.json computes what the run computed, kvsteer eval refuses to begin when it
would not, and the results page sets the two runs side by side. Real runs of the CLI on the
reasoning organism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import study_provenance as provenance  # noqa: E402
from study_calibrate import calibrate, calibration_name  # noqa: E402
from study_results import REPRODUCED, calibration_lines, load_items  # noqa: E402
from study_state import export_state, restore_state  # noqa: E402

ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}


@pytest.fixture(scope="module")
def data(organism_data) -> Path:
    return organism_data(8, 60)


# Runs the study could make, each through another part of the configuration: a cache edit with
# its offset token, in-run extraction, K and V coefficients and a selection record; activation
# steering with its directions' cache; the unsteered baseline.
METHODS = {
    "cache": ["--method", "cache", "--pairs", "16", "--shots", "2", "--ck", "0.2", "--cv", "4",
              "--offset", "\n"],
    "caa": ["--method", "caa", "--pairs", "16", "--shots", "2", "--caa-layer", "3", "--caa-c",
            "0.5"],
    "baseline": ["--method", "baseline"],
}


def make_run(cli: Path, organism: Path, data: Path, out: Path, method: str) -> Path:
    run = out / "runs" / f"t-{method}"
    out.mkdir(parents=True, exist_ok=True)
    args = [str(cli), "eval", "-m", str(organism), "-t", "1", "--parallel", "4", "--n-predict",
            "40", "--no-preset", "--task", "organism-numeric", "--data", str(data / "test.jsonl"),
            "--traces", str(data / "traces.jsonl"), "--limit", "8", "-o", str(run),
            "--kv-streams", "per-sequence", "--cache-type-k", "f32", "--cache-type-v", "f32",
            "--flash-attn", "off"] + METHODS[method]
    if method == "caa":
        args += ["--caa-cache", str(out / "caa")]
    if method == "cache":
        selection = out / "chosen.json"
        selection.write_text(json.dumps({"rule": "a stand-in record", "chosen": {"c_v": 4}}))
        args += ["--selection", str(selection)]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return run


@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_is_made_again_from_its_configuration(cli: Path, organism: Path, data: Path,
                                                   tmp_path: Path, method: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    out = tmp_path / "out"
    run = make_run(cli, organism, data, out, method)

    cal = calibrate(str(cli), out, run.name, 4, 1)

    machine = provenance.this_machine(str(cli))["machine"]
    assert cal == out / "calibration" / calibration_name(run.name, machine)
    recorded = json.loads((run / "config.json").read_text())
    again = json.loads((cal / "config.json").read_text())
    assert again.pop("limit") == 4 and recorded.pop("limit") == 8
    assert again == recorded  # the same computation, key by key (eval would have refused)
    first, repeated = load_items(run), load_items(cal)
    assert sorted(repeated) == [0, 1, 2, 3]
    # One machine, one engine with a stream per sequence: the very same answers.
    for i in repeated:
        assert ({k: repeated[i].get(k) for k in REPRODUCED} ==
                {k: first[i].get(k) for k in REPRODUCED})

    page = "\n".join(calibration_lines(out))
    assert f"| {run.name} | 4 | not recorded | `{machine}` | 4 | 4 |" in page

    # The committed state carries the calibration to another machine's output folder.
    state = tmp_path / "state"
    export_state(out, state)
    assert (state / "calibration" / f"{cal.name}.items.jsonl").exists()
    fresh = tmp_path / "fresh"
    restored = restore_state(state, fresh)
    assert any(line.startswith(f"calibration {cal.name}: 4 items") for line in restored)
    assert calibration_lines(fresh) == calibration_lines(out)


def test_a_calibration_that_would_compute_otherwise_is_refused_before_it_answers(
        cli: Path, organism: Path, data: Path, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run = make_run(cli, organism, data, out, "baseline")
    # The configuration names another model file than the one at its path now: the command
    # rebuilt from it would answer with another model.
    config = json.loads((run / "config.json").read_text())
    config["model_file"]["bytes"] += 1
    (run / "config.json").write_text(json.dumps(config))

    with pytest.raises(SystemExit, match="kvsteer eval failed"):
        calibrate(str(cli), out, run.name, 4, 1)
    assert "model_file would differ" in capfd.readouterr().err
    cal = out / "calibration" / calibration_name(run.name, provenance.this_machine(str(cli))["machine"])
    assert not (cal / "items.jsonl").exists() or not (cal / "items.jsonl").read_text()


def test_a_limit_beyond_the_run_a_missing_run_or_vector_is_one_error_line(
        cli: Path, organism: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = make_run(cli, organism, data, out, "baseline")
    with pytest.raises(SystemExit, match=r"--limit must be in 1\.\.8"):
        calibrate(str(cli), out, run.name, 9, 1)
    with pytest.raises(SystemExit, match="no run 't-none'"):
        calibrate(str(cli), out, "t-none", 4, 1)
    # A run whose vector this machine lacks (a machine's vectors are lost with it).
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, vector=str(tmp_path / "lost.gguf"))))
    with pytest.raises(SystemExit, match="its vector .*lost.gguf is not on this machine"):
        calibrate(str(cli), out, run.name, 4, 1)
    assert not (out / "calibration").exists()


@pytest.mark.parametrize("flags, message", [
    (["--offset", "\n", "--offset-id", "3"], "as text or by id, not both"),
    (["--offset-id", "99999999"], "token"),
])
def test_eval_refuses_an_ambiguous_or_unknown_offset_token(cli: Path, organism: Path, data: Path,
                                                          tmp_path: Path, flags: list[str],
                                                          message: str) -> None:
    done = subprocess.run([str(cli), "eval", "-m", str(organism), "-t", "1", "--task",
                           "organism-numeric", "--data", str(data / "test.jsonl"), "--method",
                           "cache", "--traces", str(data / "traces.jsonl"), "--limit", "2",
                           "-o", str(tmp_path / "run")] + flags,
                          capture_output=True, text=True, env=ENV)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "run" / "items.jsonl").exists()


def test_the_machine_of_a_run_s_first_items_is_read_from_the_ledger(tmp_path: Path) -> None:
    from study_results import machine_of_first

    def run(name: str, n: int) -> None:
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "items.jsonl").write_text("".join(f'{{"index": {i}}}\n' for i in range(n)))

    run("begun-unrecorded", 40)
    provenance.note_run(tmp_path, "begun-unrecorded", 24, "m-intel")
    run("begun-here", 40)
    provenance.note_run(tmp_path, "begun-here", 0, "m-amd")
    provenance.note_run(tmp_path, "begun-here", 16, "m-intel")
    run("never-noted", 8)
    assert machine_of_first(tmp_path, "begun-unrecorded", 16) == "not recorded"
    assert machine_of_first(tmp_path, "begun-unrecorded", 32) == "several"
    assert machine_of_first(tmp_path, "begun-here", 16) == "`m-amd`"
    assert machine_of_first(tmp_path, "begun-here", 17) == "several"
    assert machine_of_first(tmp_path, "never-noted", 8) == "not recorded"


@pytest.mark.parametrize("first, made", [(0, "set aside since: `superseded/t-baseline@0`"),
                                         (4, "not recorded")])
def test_a_calibration_stays_beside_the_answers_it_made_again_after_they_are_set_aside(
        cli: Path, organism: Path, data: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, first: int, made: str) -> None:
    """Set aside from item 0, the calibrated items (0-3) are among the answers set aside and the
    row names that; from item 4, they never were, and it names who answered them."""
    from study_real import Study
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    out = tmp_path / "out"
    run = make_run(cli, organism, data, out, "baseline")
    cal = calibrate(str(cli), out, run.name, 4, 1)
    machine = cal.name.rsplit("@", 1)[1]
    assert {"calibrated": run.name, "machine": machine, "first": 4} == {
        k: v for k, v in provenance.read_ledger(out)[-1].items() if k != "at"}
    # The run is set aside from `first` on and answered again otherwise.
    study = Study(str(cli), str(organism), ROOT.parent / "shared", out, 1, "full")
    study.supersede(run, first, "a test")
    run.mkdir(parents=True, exist_ok=True)
    old = load_items(out / "superseded" / f"{run.name}@{first}")
    with open(run / "items.jsonl", "a") as f:
        for r in old.values():
            f.write(json.dumps({**r, "correct": not r["correct"],
                                "n_tokens": r["n_tokens"] + 1}) + "\n")
    row = next(x for x in calibration_lines(out) if x.startswith(f"| {run.name} |"))
    # Beside the answers it made again: all four identical.
    assert f"| {run.name} | 4 | {made} | `{machine}` | 4 | 4 |" in row
