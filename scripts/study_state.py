#!/usr/bin/env python3
"""A study's resumable state, kept where it survives the machine: a repository folder.

A study takes days on 2 cores and a machine is lent for hours, with nothing under out/ carried to
the next one. What a study needs to go on is small once the texts are left out, and the texts may
not be committed (prompts hold the paper's traces): kvsteer eval and sweep resume from item records
without prompt or response (eval/runner.h, ItemResult::has_text). So:

  export_state(out, state)   every eval run (finished or not) as <name>.config.json and compact
                             <name>.items.jsonl (+ <name>.summary.json when finished); every sweep
                             journal, running or finished, compacted; the finished sweeps, selection
                             records and diagnoses; the vectors (numbers only: their metadata are
                             hashes and the extraction's command line), the activation directions,
                             the ledger of which machine answered what (study_provenance)
                             and the checkpoints of extractions still running (running sums of
                             cached K and V, or of block outputs); the calibrations (runs
                             answered again on another machine, study_calibrate.py) the same way
                             as runs, under calibration/, and the answers set aside to be
                             answered again with the study's engine (study_real's supersede,
                             with their superseded.json) under superseded/.
  restore_state(state, out)  the reverse, for whatever out/ lacks: a run, sweep or vector already
                             in out/ is never overwritten, so a study that ran further here wins.

A restored run resumes item by item; with a stream per sequence an item's answer does not depend on
its batch-mates (docs/DESIGN.md "Cache layout"), so the items answered after a restore are those an
uninterrupted study would have given, on a machine of the same kind: machines of other kinds give
other greedy answers (study_provenance, which records which machine answered what).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from study_provenance import LEDGER, SUPERSEDED

CALIBRATION = "calibration"  # runs answered again on another machine (study_calibrate.py)
# Files a run folder may hold beside config.json, items.jsonl and summary.json, kept as
# <name>.<file> in the state: what a set-aside run's answers are and why (study_real's supersede).
SIDE_FILES = ("superseded.json",)

# A response that opens with an option ("B: ...", "**C.**", "Answer: A)") answers before it reasons:
# the mode cache steering is meant to move the model out of, visible whatever the accuracy.
ANSWER_FIRST = re.compile(r"\s*(\*\*)?(the answer is:?\s*|answer:?\s*)?\(?[A-E][:.)]", re.I)
TEXT_KEYS = ("prompt", "response")


def answer_first(record: dict) -> bool:
    """Whether an item record's response opens with an option letter; a compact record carries
    the answer, computed when its text was still there."""
    if "response" in record:
        return ANSWER_FIRST.match(record["response"]) is not None
    return bool(record.get("answer_first", False))


def compact_line(line: str) -> str:
    """An eval or sweep item record without its texts, with the answer-first flag they gave."""
    r = json.loads(line)
    if "index" not in r:  # a sweep journal's header
        return line
    flag = answer_first(r)
    for key in TEXT_KEYS:
        r.pop(key, None)
    r["answer_first"] = flag
    return json.dumps(r)


def whole_lines(path: Path) -> list[str]:
    """The complete lines of a journal another process may be appending to (a torn last line is
    left out, as kvsteer's own reader does)."""
    text = path.read_text(encoding="utf-8")
    return [line for line in text[: text.rfind("\n") + 1].split("\n") if line.strip()]


def _replace_whole(dest: Path, fill) -> None:
    """Writes dest whole or not at all: a kill never leaves half a file that a resumed study would
    take as done. The temporary name is unique, so two exports at once (the study's own and one by
    hand) never write into each other's file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600), and these are the user's results.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    _replace_whole(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_atomic(src: Path, dest: Path) -> None:
    _replace_whole(dest, lambda tmp: shutil.copyfile(src, tmp))


def export_compact(src: Path, dest: Path) -> None:
    write_atomic(dest, "".join(compact_line(line) + "\n" for line in whole_lines(src)))


def exported_unchanged(run: Path, state: Path) -> bool:
    """Whether a finished run is in the state as it is now: its summary is written last and
    changes whenever the run does (an extension removes it first), so the same summary bytes mean
    the same records."""
    summary, kept = run / "summary.json", state / f"{run.name}.summary.json"
    return (summary.exists() and kept.exists() and (state / f"{run.name}.items.jsonl").exists()
            and summary.read_bytes() == kept.read_bytes())


def export_runs(runs: Path, state: Path) -> None:
    """Every eval run folder under `runs` as <name>.config.json, .items.jsonl (compact) and
    .summary.json (when finished) in `state`."""
    for run in sorted(runs.glob("*/")) if runs.exists() else []:
        if run.name.startswith("."):  # a folder being written (restore_runs, supersede)
            continue
        if not (run / "config.json").exists() or not (run / "items.jsonl").exists():
            continue
        if exported_unchanged(run, state):
            continue
        copy_atomic(run / "config.json", state / f"{run.name}.config.json")
        export_compact(run / "items.jsonl", state / f"{run.name}.items.jsonl")
        if (run / "summary.json").exists():
            copy_atomic(run / "summary.json", state / f"{run.name}.summary.json")
        else:
            (state / f"{run.name}.summary.json").unlink(missing_ok=True)
        for side in SIDE_FILES:
            if (run / side).exists():
                copy_atomic(run / side, state / f"{run.name}.{side}")


def drop_runs_set_aside(out: Path, state: Path) -> None:
    """A run whose answers were all set aside (study_real's supersede from item 0) has left
    out/runs; its copy in the state goes too, or a restore would bring the set-aside answers back
    as the run. Its answers stay in the state under superseded/."""
    for record in sorted((out / SUPERSEDED).glob("*/superseded.json")) \
            if (out / SUPERSEDED).exists() else []:
        r = json.loads(record.read_text(encoding="utf-8"))
        if r["from"] == 0 and not (out / "runs" / r["superseded"]).exists():
            for part in ("config.json", "items.jsonl", "summary.json"):
                (state / f"{r['superseded']}.{part}").unlink(missing_ok=True)


def export_state(out: Path, state: Path) -> None:
    export_runs(out / SUPERSEDED, state / SUPERSEDED)
    drop_runs_set_aside(out, state)
    export_runs(out / "runs", state)
    # Runs answered again on another machine (scripts/study_calibrate.py; their configurations
    # hold the selection records they were made with).
    export_runs(out / CALIBRATION, state / CALIBRATION)
    for sub in ("selection", "diagnose"):
        src = out / sub
        for f in sorted(src.rglob("*")) if src.exists() else []:
            if not f.is_file() or f.name.endswith(".tmp"):
                continue
            dest = state / sub / f.relative_to(src)
            if f.name.endswith(".json.items.jsonl"):
                # A sweep's journal is kept after the sweep has finished: its JSON holds the
                # settings' totals only, and the paired comparison of a setting with the baseline
                # on the same selection items needs the answers item by item. A journal is
                # compacted again only when it has grown since (a finished one never does).
                if not dest.exists() or dest.stat().st_mtime <= f.stat().st_mtime:
                    export_compact(f, dest)
            elif f.suffix in (".json", ".txt"):
                copy_atomic(f, dest)
    vectors = out / "vectors"
    for f in sorted(vectors.glob("*.gguf")) if vectors.exists() else []:
        if not f.name.endswith(".tmp.gguf"):
            copy_atomic(f, state / "vectors" / f.name)
    # A running extraction's checkpoint (kvsteer extract --checkpoint) is replaced whole by
    # kvsteer, so a copy is one whole version of it; once the extraction has finished and removed
    # it, the state drops it too.
    for f in sorted((state / "vectors").glob("*.partial")) if (state / "vectors").exists() else []:
        if not (vectors / f.name).exists():
            f.unlink()
    for f in sorted(vectors.glob("*.partial")) if vectors.exists() else []:
        copy_atomic(f, state / "vectors" / f.name)
    # Activation directions (kvsteer eval --caa-cache: numbers and a key) and the checkpoint of
    # one being extracted, which kvsteer removes once the directions are written.
    caa = out / "caa"
    for f in sorted((state / "caa").glob("*.partial")) if (state / "caa").exists() else []:
        if not (caa / f.name).exists():
            f.unlink()
    for f in sorted(caa.glob("caa-*.json*")) if caa.exists() else []:
        if f.name.endswith((".json", ".json.partial")):
            copy_atomic(f, state / "caa" / f.name)
    for name in ("bench.json", LEDGER):
        if (out / name).exists():
            copy_atomic(out / name, state / name)


def restore_runs(state: Path, runs: Path, what: str) -> list[str]:
    """The reverse of export_runs for the runs `runs` lacks."""
    done: list[str] = []
    for config in sorted(state.glob("*.config.json")):
        name = config.name[: -len(".config.json")]
        run = runs / name
        items = state / f"{name}.items.jsonl"
        if run.exists() or not items.exists():
            continue
        tmp = runs / f".{name}.restoring"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(config, tmp / "config.json")
        shutil.copyfile(items, tmp / "items.jsonl")
        if (state / f"{name}.summary.json").exists():
            shutil.copyfile(state / f"{name}.summary.json", tmp / "summary.json")
        for side in SIDE_FILES:
            if (state / f"{name}.{side}").exists():
                shutil.copyfile(state / f"{name}.{side}", tmp / side)
        os.replace(tmp, run)
        n = len(whole_lines(run / "items.jsonl"))
        done.append(f"{what} {name}: {n} items" +
                    ("" if (run / "summary.json").exists() else ", unfinished"))
    return done


def restore_state(state: Path, out: Path) -> list[str]:
    """Restores into out what it lacks; returns what was restored, one line each."""
    done: list[str] = []
    if not state.exists():
        return done
    done += restore_runs(state, out / "runs", "run")
    done += restore_runs(state / CALIBRATION, out / CALIBRATION, "calibration")
    done += restore_runs(state / SUPERSEDED, out / SUPERSEDED, "answers set aside")
    for sub in ("selection", "diagnose"):
        src = state / sub
        for f in sorted(src.rglob("*")) if src.exists() else []:
            dest = out / sub / f.relative_to(src)
            if f.is_file() and not dest.exists():
                copy_atomic(f, dest)
                done.append(f"{sub}/{f.relative_to(src)}")
    for f in sorted((state / "vectors").glob("*.gguf")) if (state / "vectors").exists() else []:
        dest = out / "vectors" / f.name
        if not dest.exists():
            copy_atomic(f, dest)
            done.append(f"vector {f.name}")
    for f in sorted((state / "vectors").glob("*.partial")) if (state / "vectors").exists() else []:
        dest = out / "vectors" / f.name
        if not dest.exists() and not vector_of_checkpoint(dest).exists():
            copy_atomic(f, dest)
            done.append(f"extraction checkpoint {f.name}")
    if (state / LEDGER).exists() and not (out / LEDGER).exists():
        copy_atomic(state / LEDGER, out / LEDGER)
        done.append(LEDGER)
    for f in sorted((state / "caa").glob("caa-*.json*")) if (state / "caa").exists() else []:
        dest = out / "caa" / f.name
        finished = out / "caa" / f.name.removesuffix(".partial")
        if not dest.exists() and not finished.exists():
            copy_atomic(f, dest)
            done.append(f"activation directions {f.name}")
    return done


def vector_of_checkpoint(path: Path) -> Path:
    """The vector a checkpoint's extraction ends in: "x.gguf.tmp.gguf.partial" (the study
    extracts into a temporary name and renames it) and "x.gguf.partial" both end in "x.gguf"."""
    name = path.name[: -len(".partial")]
    return path.with_name(name[: -len(".tmp.gguf")] if name.endswith(".tmp.gguf") else name)
