"""Every test run the study reports is answered by its engine (scripts/study_real.py,
Study.one_engine). Before it uses a run that another process began, it answers the run's first
batch again (Study.check_reproduces) and records which answers came out otherwise in its provenance
ledger (scripts/study_provenance.py). A run that a machine with this engine began and that does not
reproduce stops the study (its vector, extracted again after a machine was lost, or kvsteer
differs); the answers of an unrecorded machine that do not reproduce, and every stretch a machine
of another engine answered, are set aside (kept, compared on the results page) and answered again.
The commands go to a stand-in for kvsteer whose answers are the text of the vector file it is
given, so a changed vector changes the answers."""

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
    if not (out / "config.json").exists():
        (out / "config.json").write_text(json.dumps({{"limit": int(value("--limit"))}}))
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


def finish(run: Path) -> None:
    """A summary as eval writes one when a run is through."""
    (run / "summary.json").write_text(json.dumps({
        "accuracy": 0.0, "ci95": [0.0, 0.0], "reasoning_rate": 0.0, "mean_tokens": 9.0,
        "median_tokens": 9.0, "n": len((run / "items.jsonl").read_text().splitlines())}))


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


def test_every_test_run_an_unrecorded_machine_began_is_checked_finished_or_not(
        tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    begun_elsewhere(s, "arc-baseline", "B", 160, vector_file=False)
    finished = begun_elsewhere(s, "arc-cot", "B", 320, vector_file=False)
    finish(finished)
    s.run_eval(arc, "baseline", [])
    s.run_eval(arc, "cot", [])  # finished, and still checked: its answers are reported
    assert evals(log) == ["checks/arc-baseline", "runs/arc-baseline", "checks/arc-cot"]
    # A run whose configuration identifies its vector file is left to eval's own check.
    s2, log2 = study(tmp_path / "again")
    v = s2.vectors(arc)
    (s2.out / "vectors").mkdir(parents=True, exist_ok=True)
    for path in v.values():
        path.write_text("A")
    begun_elsewhere(s2, "arc-cache", "A", 40, vector_file=True)
    provenance.note_machine(s2.out, s2.machine)
    provenance.note_run(s2.out, "arc-cache", 0, s2.machine["machine"])
    s2.run_eval(arc, "cache", ["--vector", str(v["last"])])
    assert evals(log2) == ["runs/arc-cache"]


def other_cpu_same_engine(s: Study) -> str:
    """Another processor in the ledger whose libllama is built as this machine's."""
    other = provenance.machine_description("vendor_id : GenuineIntel\nflags : avx avx2\n",
                                           s.machine["engine"])
    provenance.note_machine(s.out, other)
    return other["machine"]


def test_the_first_run_another_cpu_with_this_engine_began_is_checked_and_must_agree(
        tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    other = other_cpu_same_engine(s)
    for name in ("arc-baseline", "arc-cot"):
        begun_elsewhere(s, name, "B", 40, vector_file=False)
        provenance.note_run(s.out, name, 0, other)
    s.run_eval(arc, "baseline", [])
    s.run_eval(arc, "cot", [])  # the engines agreed once: no second check
    assert evals(log) == ["checks/arc-baseline", "runs/arc-baseline", "runs/arc-cot"]
    # Answers another processor gave with this engine that come out otherwise stop the study:
    # one engine should compute alike, and which answers to keep is not for the study to guess.
    s2, _ = study(tmp_path / "again")
    other = other_cpu_same_engine(s2)
    run = begun_elsewhere(s2, "arc-baseline", "D", 40, vector_file=False)
    provenance.note_run(s2.out, "arc-baseline", 0, other)
    with pytest.raises(SystemExit, match="two machines of one engine compute otherwise"):
        s2.run_eval(arc, "baseline", [])
    assert len((run / "items.jsonl").read_text().splitlines()) == 40
    assert not (s2.out / provenance.SUPERSEDED).exists()


def test_answers_an_unrecorded_machine_gave_otherwise_are_set_aside_and_answered_again(
        tmp_path: Path) -> None:
    from study_state import export_state, restore_state
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    run = begun_elsewhere(s, "arc-baseline", "D", 160, vector_file=False)  # answered D elsewhere
    finish(run)
    state = tmp_path / "state"
    export_state(s.out, state)
    s.state = state
    s.run_eval(arc, "baseline", [])
    assert evals(log) == ["checks/arc-baseline", "runs/arc-baseline"]
    answers = [json.loads(line)["extracted"]
               for line in (run / "items.jsonl").read_text().splitlines()]
    assert answers == ["B"] * 320  # all of it answered here, none of the other engine's kept
    aside = s.out / provenance.SUPERSEDED / "arc-baseline@0"
    assert len((aside / "items.jsonl").read_text().splitlines()) == 160
    assert (aside / "summary.json").exists() and (aside / "config.json").exists()
    me = s.machine["machine"]
    ledger = provenance.read_ledger(s.out)
    assert {"check": "arc-baseline", "machine": me, "first": 16, "differ": list(range(16))} in ledger
    record = next(r for r in ledger if r.get("superseded") == "arc-baseline")
    assert record["from"] == 0 and record["to"] == "superseded/arc-baseline@0"
    assert provenance.segments(s.out, "arc-baseline", 320) == [(me, 0, 320)]
    assert ("160 answers from item 0 on set aside into superseded/arc-baseline@0"
            in s.log.read_text())
    text = page(s.out, "t")
    assert "| arc-baseline | 0-159 (160) | 16 of its first 16 answers came out otherwise" in text
    assert "| 160 | 0 | 0 | 0.0 / 0.0 |" in text  # 160 answered again, none identical
    # The committed state holds the set-aside answers apart from the run, which a restore on
    # another machine brings back as answered here.
    restored = tmp_path / "restored"
    s.checkpoint()
    assert "answers set aside arc-baseline@0: 160 items" in restore_state(state, restored)
    assert len((restored / "runs/arc-baseline/items.jsonl").read_text().splitlines()) == 320
    assert (restored / provenance.SUPERSEDED / "arc-baseline@0/superseded.json").exists()


def test_a_run_set_aside_whole_leaves_the_state_until_answered_again(tmp_path: Path) -> None:
    from study_state import export_state, restore_state
    s, _ = study(tmp_path)
    run = begun_elsewhere(s, "arc-cot", "D", 40, vector_file=False)
    state = tmp_path / "state"
    export_state(s.out, state)
    s.supersede(run, 0, "a test")  # as if the study were taken back before answering again
    export_state(s.out, state)
    assert not (state / "arc-cot.items.jsonl").exists()
    restored = tmp_path / "restored"
    restore_state(state, restored)
    assert not (restored / "runs/arc-cot").exists()  # not brought back as the run
    assert len((restored / "superseded/arc-cot@0/items.jsonl").read_text().splitlines()) == 40


def test_a_stretch_another_engine_answered_is_set_aside_from_its_first_item(
        tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    arc.limit = 320
    run = begun_elsewhere(s, "arc-caa-paper", "B", 320, vector_file=False)
    finish(run)
    native = provenance.machine_description("vendor_id : GenuineIntel\nflags : avx avx2 avx512f\n")
    provenance.note_machine(s.out, native)  # no engine: libllama built for the machine itself
    provenance.note_run(s.out, "arc-caa-paper", 176, native["machine"])
    s.run_eval(arc, "caa", [], name="caa-paper")
    # The unrecorded first stretch reproduces and is kept; the other engine's is answered again.
    assert evals(log) == ["checks/arc-caa-paper", "runs/arc-caa-paper"]
    aside = s.out / provenance.SUPERSEDED / "arc-caa-paper@176"
    moved = [json.loads(line)["index"] for line in (aside / "items.jsonl").read_text().splitlines()]
    assert moved == list(range(176, 320))
    me = s.machine["machine"]
    assert provenance.segments(s.out, "arc-caa-paper", 320) == [
        (provenance.UNRECORDED, 0, 176), (me, 176, 320)]
    why = json.loads((aside / "superseded.json").read_text())["why"]
    assert why == (f"answered on `{native['machine']}` with libllama built for that machine "
                   "itself (-march=native)")
    # Done: the next process finds nothing to set aside, and the check's result in the ledger.
    s2 = Study(s.kvsteer, s.model, s.shared, s.out, 2, "full")
    s2.run_eval(arc, "caa", [], name="caa-paper")
    assert evals(log) == ["checks/arc-caa-paper", "runs/arc-caa-paper"]


def test_the_selection_split_s_baseline_is_checked_but_never_set_aside(tmp_path: Path) -> None:
    s, log = study(tmp_path)
    arc = full_plans()[0]
    run = begun_elsewhere(s, "arc-selection-baseline", "D", 40, vector_file=False)
    (run / "config.json").write_text(json.dumps({"limit": 64}))
    s.run_eval(arc, "baseline", [], name="selection-baseline", on_selection_split=True)
    assert evals(log) == ["checks/arc-selection-baseline", "runs/arc-selection-baseline"]
    assert not (s.out / provenance.SUPERSEDED).exists()
    assert "16 of its first 16 answers differ on this machine" in s.log.read_text()


def test_the_ledger_splits_a_run_into_the_stretches_each_machine_answered(tmp_path: Path) -> None:
    for record in ({"machine": "m1", "cpu": "one", "isa": ["avx2"]},
                   {"run": "r", "items": 0, "machine": "m1", "at": ""},
                   {"run": "r", "items": 48, "machine": "m2", "at": ""},
                   {"run": "r", "items": 96, "machine": "m2", "at": ""},
                   {"run": "r", "items": 112, "machine": "m1", "at": ""}):
        provenance.append(tmp_path, record)
    assert provenance.stretches(tmp_path, "r", 150) == [("m1", 48), ("m2", 64), ("m1", 38)]
    assert provenance.first_machine(tmp_path, "r", 150) == "m1"
    assert provenance.first_machine(tmp_path, "r", 0) is None
    provenance.note_run(tmp_path, "r", 112, "m1")  # the same entry again is not written twice
    assert len(provenance.read_ledger(tmp_path)) == 5
    # Answers set aside from item 60 on, then answered again on m3.
    provenance.append(tmp_path, {"superseded": "r", "from": 60, "to": "superseded/r@60",
                                 "machine": "m3", "why": "", "at": ""})
    # Answers given since without the ledger (a run continued by hand) are nobody's it knows.
    assert provenance.segments(tmp_path, "r", 150) == [("m1", 0, 48), ("m2", 48, 60),
                                                       (provenance.UNRECORDED, 60, 150)]
    provenance.note_run(tmp_path, "r", 60, "m3")
    assert provenance.segments(tmp_path, "r", 150) == [("m1", 0, 48), ("m2", 48, 60),
                                                       ("m3", 60, 150)]
    # A run the ledger learns of midway was begun on a machine it does not know; answers lost
    # with a machine (a state restored from before them) are not counted as given.
    provenance.note_run(tmp_path, "q", 40, "m1")
    provenance.note_run(tmp_path, "q", 24, "m2")
    assert provenance.segments(tmp_path, "q", 50) == [(provenance.UNRECORDED, 0, 24),
                                                      ("m2", 24, 50)]


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
    assert provenance.first_machine(again, "arc-baseline", 10) == "m1"


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
