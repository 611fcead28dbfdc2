"""Before the study continues a run that another process began, it answers the run's first batch
again (scripts/study_real.py, Study.check_reproduces) and records which answers came out otherwise
in its provenance ledger (scripts/study_provenance.py). A run that this kind of machine began and
that does not reproduce stops the study (its vector, extracted again after a machine was lost, or
kvsteer differs); a run another CPU began goes on, its machines listed on the results page. The
commands go to a stand-in for kvsteer whose answers are the text of the vector file it is given,
so a changed vector changes the answers."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import study_provenance as provenance  # noqa: E402
from study_real import Study, full_plans  # noqa: E402
from study_results import page  # noqa: E402

STAND_IN = """#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["info", "--engine"]:
    print(json.dumps({{"engine": {{"cpu_features": "CPU : AVX2 = 1"}}}}))
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
if args[0] == "extract":
    for i, a in enumerate(args):
        if a == "-o":
            Path(args[i + 1]).write_text(os.environ.get("STAND_IN_VECTOR", "A"))
if args[0] == "eval":
    out = Path(value("-o"))
    out.mkdir(parents=True, exist_ok=True)
    answer = Path(value("--vector")).read_text() if value("--vector") else "B"
    items = out / "items.jsonl"
    done = len(items.read_text().splitlines()) if items.exists() else 0
    with open(items, "a") as f:
        for i in range(done, int(value("--limit"))):
            f.write(json.dumps({{"index": i, "extracted": answer, "correct": answer == "A",
                                "n_tokens": 9, "n_steps": 0, "reasoning": False,
                                "forced": False}}) + "\\n")
    (out / "summary.json").write_text(json.dumps({{
        "accuracy": 0.0, "ci95": [0.0, 0.0], "reasoning_rate": 0.0, "mean_tokens": 9.0,
        "median_tokens": 9.0, "n": int(value("--limit"))}}))
"""


def study(tmp_path: Path) -> tuple[Study, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "commands.txt"
    fake = tmp_path / "kvsteer"
    fake.write_text(STAND_IN.format(log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return Study(str(fake), "model.gguf", ROOT.parent / "shared", tmp_path / "out", 2, "full"), log


def begun_elsewhere(s: Study, name: str, answer: str, n: int, vector_file: bool) -> Path:
    """A run restored from the committed state: n items answered `answer`, no summary."""
    run = s.out / "runs" / name
    run.mkdir(parents=True)
    config = {"limit": 320, **({"vector_file": {"bytes": 1}} if vector_file else {})}
    (run / "config.json").write_text(json.dumps(config))
    (run / "items.jsonl").write_text("".join(json.dumps(
        {"index": i, "extracted": answer, "correct": answer == "A", "n_tokens": 9, "n_steps": 0,
         "reasoning": False, "forced": False}) + "\n" for i in range(n)))
    return run


def evals(log: Path) -> list[str]:
    """The -o folder of every eval the study ran, in order."""
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [Path(a[a.index("-o") + 1]).parent.name + "/" + Path(a[a.index("-o") + 1]).name
            for a in lines if a[0] == "eval"]


def cache_run_whose_vector_was_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    extracted_here: str):
    """ARC's cache run at the paper's setting, 40 answers made with a vector "A" that was lost
    with its machine; the extraction here gives `extracted_here`."""
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    v = s.vectors(arc)
    run = begun_elsewhere(s, "arc-cache-paper", "A", 40, vector_file=False)
    monkeypatch.setenv("STAND_IN_VECTOR", extracted_here)
    return s, log, arc, v, run


def test_a_vector_extracted_again_that_answers_otherwise_stops_the_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, log, arc, v, run = cache_run_whose_vector_was_lost(tmp_path, monkeypatch, "C")
    provenance.note_run(s.out, "arc-cache-paper", 0, s.machine["machine"])  # begun on this kind
    with pytest.raises(SystemExit) as stop:
        s.run_eval(arc, "cache", ["--vector", str(v["last"])], name="cache-paper")
    assert ("run arc-cache-paper does not reproduce on the kind of machine that began it"
            in str(stop.value))
    assert "items 0, 1, 2" in str(stop.value)
    assert evals(log) == ["checks/arc-cache-paper"]  # the run itself was not continued
    assert len((run / "items.jsonl").read_text().splitlines()) == 40


def test_a_run_that_reproduces_goes_on_and_is_checked_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, log, arc, v, run = cache_run_whose_vector_was_lost(tmp_path, monkeypatch, "A")
    s.run_eval(arc, "cache", ["--vector", str(v["last"])], name="cache-paper")
    assert evals(log) == ["checks/arc-cache-paper", "runs/arc-cache-paper"]
    assert len((run / "items.jsonl").read_text().splitlines()) == 320
    assert not (s.out / "checks" / "arc-cache-paper").exists()
    assert "arc-cache-paper: its first 16 items reproduce here" in s.log.read_text()
    (run / "summary.json").unlink()
    arc.limit = 0  # the extension of stage 3: nothing to check again in this process
    s.run_eval(arc, "cache", ["--vector", str(v["last"])], name="cache-paper")
    assert evals(log) == ["checks/arc-cache-paper", "runs/arc-cache-paper", "runs/arc-cache-paper"]


def test_the_machine_is_checked_on_the_first_run_begun_elsewhere_only(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    begun_elsewhere(s, "arc-baseline", "B", 160, vector_file=False)
    begun_elsewhere(s, "arc-cot", "B", 5, vector_file=False)
    s.run_eval(arc, "baseline", [])
    s.run_eval(arc, "cot", [])  # no vector, the machine already checked: no second check
    assert evals(log) == ["checks/arc-baseline", "runs/arc-baseline", "runs/arc-cot"]
    # A run whose configuration identifies its vector file is left to eval's own check.
    s2, log2 = study(tmp_path / "again")
    s2.machine_checked = True
    v = s2.vectors(arc)
    (s2.out / "vectors").mkdir(parents=True, exist_ok=True)
    for path in v.values():
        path.write_text("A")
    begun_elsewhere(s2, "arc-cache", "A", 40, vector_file=True)
    s2.run_eval(arc, "cache", ["--vector", str(v["last"])])
    assert evals(log2) == ["runs/arc-cache"]


def test_a_run_another_machine_began_goes_on_and_its_machines_are_listed(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    run = begun_elsewhere(s, "arc-baseline", "D", 160, vector_file=False)  # answered D elsewhere
    s.run_eval(arc, "baseline", [])
    assert evals(log) == ["checks/arc-baseline", "runs/arc-baseline"]
    assert len((run / "items.jsonl").read_text().splitlines()) == 320
    me = s.machine["machine"]
    ledger = provenance.read_ledger(s.out)
    assert {"check": "arc-baseline", "machine": me, "first": 16, "differ": list(range(16))} in ledger
    assert "16 of its first 16 answers differ on this machine" in s.log.read_text()
    text = page(s.out, "t")
    assert f"- arc-baseline: 160 on a machine not recorded, then 160 on `{me}`" in text
    assert f"- arc-baseline on `{me}`: 16 of 16 answers differ" in text
    assert f"`{me}` {s.machine['cpu']}" in text
    # The next process on this kind of machine continues a run this machine began unchecked.
    s2, log2 = study(tmp_path / "again")
    begun_elsewhere(s2, "arc-cot", "B", 40, vector_file=False)
    provenance.note_run(s2.out, "arc-cot", 0, s2.machine["machine"])
    s2.run_eval(arc, "cot", [])
    assert evals(log2) == ["runs/arc-cot"]


def test_the_ledger_splits_a_run_into_the_stretches_each_machine_answered(tmp_path: Path) -> None:
    for record in ({"machine": "m1", "cpu": "one", "isa": ["avx2"]},
                   {"run": "r", "items": 0, "machine": "m1", "at": ""},
                   {"run": "r", "items": 48, "machine": "m2", "at": ""},
                   {"run": "r", "items": 96, "machine": "m2", "at": ""},
                   {"run": "r", "items": 112, "machine": "m1", "at": ""}):
        provenance.append(tmp_path, record)
    assert provenance.stretches(tmp_path, "r", 150) == [("m1", 48), ("m2", 64), ("m1", 38)]
    assert provenance.first_machine(tmp_path, "r") == "m1"
    provenance.note_run(tmp_path, "r", 112, "m1")  # the same entry again is not written twice
    assert len(provenance.read_ledger(tmp_path)) == 5


def test_machines_share_an_id_only_with_one_processor_kind_and_features() -> None:
    def cpu(model: str, flags: str) -> dict:
        return provenance.machine_description(
            f"vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {model}\n"
            f"model name\t: Xeon\nstepping\t: 8\nflags\t\t: {flags}\n")
    a = cpu("143", "fpu avx2 fma avx512f ht")
    assert a["isa"] == ["avx2", "avx512f", "fma"]
    assert a["cpu"] == "Xeon (vendor_id GenuineIntel, cpu family 6, model 143, stepping 8)"
    assert cpu("143", "fpu avx2 fma avx512f ht pti")["machine"] == a["machine"]  # not an ISA flag
    assert cpu("143", "fpu avx2 fma ht")["machine"] != a["machine"]
    assert cpu("106", "fpu avx2 fma avx512f ht")["machine"] != a["machine"]


def test_the_ledger_travels_with_the_committed_state(tmp_path: Path) -> None:
    from study_state import export_state, restore_state  # noqa: E402
    out, state = tmp_path / "out", tmp_path / "state"
    out.mkdir()
    provenance.note_run(out, "arc-baseline", 0, "m1")
    export_state(out, state)
    again = tmp_path / "again"
    assert "provenance.jsonl" in restore_state(state, again)
    assert provenance.first_machine(again, "arc-baseline") == "m1"


def test_a_run_smaller_than_a_batch_is_answered_again_as_it_was_batched(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    s.parallel = 20  # the demo's
    gsm8k = next(p for p in full_plans() if p.name == "gsm8k")
    gsm8k.limit = 15
    run = begun_elsewhere(s, "gsm8k-baseline", "B", 12, vector_file=False)
    (run / "config.json").write_text(json.dumps({"limit": 15}))
    s.run_eval(gsm8k, "baseline", [])
    check = next(line.split() for line in log.read_text().splitlines() if "checks/" in line)
    assert check[check.index("--limit") + 1] == "15"  # one batch of 15, as the run had
    assert {"check": "gsm8k-baseline", "machine": s.machine["machine"], "first": 12,
            "differ": []} in provenance.read_ledger(s.out)


def test_a_run_checked_on_this_kind_of_machine_before_is_not_checked_again(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    begun_elsewhere(s, "arc-baseline", "D", 160, vector_file=False)
    provenance.append(s.out, {"check": "arc-baseline", "machine": s.machine["machine"],
                              "first": 16, "differ": list(range(16))})
    s.run_eval(arc, "baseline", [])
    assert evals(log) == ["runs/arc-baseline"]


def test_the_engine_s_instruction_sets_make_another_kind_of_machine() -> None:
    cpu = "vendor_id : AuthenticAMD\ncpu family : 25\nmodel : 17\nflags : avx avx2 avx512f fma\n"
    bare = provenance.machine_description(cpu)
    avx2 = provenance.machine_description(cpu, "CPU : AVX2 = 1 | AVX512 = 0")
    native = provenance.machine_description(cpu, "CPU : AVX2 = 1 | AVX512 = 1")
    # One processor, two builds of libllama: two arithmetics, two kinds.
    assert len({bare["machine"], avx2["machine"], native["machine"]}) == 3
    assert avx2["engine"] == "CPU : AVX2 = 1 | AVX512 = 0" and "engine" not in bare
    # Entries written before the engine was recorded keep their IDs.
    assert bare == provenance.machine_description(cpu, "")


def test_the_results_page_says_what_each_machine_s_engine_was_built_for(tmp_path: Path) -> None:
    cpu = "vendor_id : AuthenticAMD\ncpu family : 25\nflags : avx avx2 avx512f fma\n"
    provenance.note_machine(tmp_path, provenance.machine_description(cpu))
    provenance.note_machine(tmp_path, provenance.machine_description(
        cpu, "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 | OPENMP = 1"))
    line = provenance.page_lines(tmp_path, {})[0]
    assert line.count("kvsteer's engine built for this machine itself (-march=native)") == 1
    assert "kvsteer's engine built for AVX, AVX2)" in line
