#!/usr/bin/env python3
"""Answers the first items of a study run again on this machine: how far another machine's
arithmetic moves the greedy answers (docs/real-model.md, "Another machine is another set of
answers"), measured rather than assumed, on any run the study has made.

  study_calibrate.py RUN [--limit N] [--out out/real-full] [--state results/smollm2-135m]

The run is made again from its own configuration (`kvsteer eval --like RUN`), which eval refuses
to begin when its files or this kvsteer would compute anything else (another vector, model,
setting or engine). The
answers go to <out>/calibration/<run>@<machine>/ (study_provenance names machines), which the
study's state keeps (study_state) and the results page compares with the run item by item
(study_results). One calibration per run and machine kind; an interrupted one resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import study_provenance as provenance
from study_results import write_results
from study_state import CALIBRATION, restore_state


def calibration_name(run: str, machine: str) -> str:
    return f"{run}@{machine}"


def calibrate(kvsteer: str, out: Path, run: str, limit: int, threads: int) -> Path:
    """Makes (or resumes) the calibration of `run` on this machine; returns its folder."""
    source = out / "runs" / run
    try:
        config = json.loads((source / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"study_calibrate: error: no run '{run}' in {out / 'runs'} ({e})")
    recorded = int(config["limit"])
    if limit <= 0 or (recorded and limit > recorded):
        raise SystemExit(f"study_calibrate: error: --limit must be in 1..{recorded or 'any'} (the "
                         f"run holds {'all' if not recorded else f'the first {recorded}'} items)")
    if config.get("vector") and not Path(config["vector"]).exists():
        raise SystemExit(f"study_calibrate: error: {run}: its vector {config['vector']} is not on "
                         "this machine (the study extracts a lost vector again when a run needs "
                         "it; calibrate the run after that)")
    if config.get("decoding") != "greedy":
        raise SystemExit(f"study_calibrate: error: {run}: the run was sampled (calibration "
                         "compares greedy answers)")
    machine = provenance.this_machine(kvsteer)
    dest = out / CALIBRATION / calibration_name(run, machine["machine"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    # eval --like takes every setting from the run's configuration and refuses to begin when its
    # files or this kvsteer would compute anything else.
    args = ["eval", "--like", str(source), "--limit", str(limit), "-t", str(threads),
            "--caa-cache", str(out / "caa"), "-o", str(dest)]
    provenance.note_machine(out, machine)
    print(f"study_calibrate: {run}: answering its first {limit} items again on "
          f"{machine['machine']} ({machine['cpu']}) into {dest}", flush=True)
    done = subprocess.run([kvsteer] + args)
    if done.returncode != 0:
        raise SystemExit(f"study_calibrate: error: kvsteer eval failed ({done.returncode}); the "
                         f"calibration in {dest} resumes when run again")
    # When: a later set-aside of the run (study_real's supersede) moves the answers compared here.
    provenance.append(out, {"calibrated": run, "machine": machine["machine"], "first": limit,
                            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run of the study, e.g. arc-baseline")
    ap.add_argument("--limit", type=int, default=160, help="first items answered again")
    ap.add_argument("--out", type=Path, default=Path("out/real-full"))
    ap.add_argument("--state", type=Path, default=Path("results/smollm2-135m"),
                    help="the committed state: restored from, and written back with the "
                         "calibration and the results page")
    ap.add_argument("--kvsteer", default="build/ci/tools/cli/kvsteer")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--title", default="kvsteer on SmolLM2-135M-Instruct (full)")
    a = ap.parse_args()
    for line in restore_state(a.state, a.out):
        print(f"study_calibrate: restored {line}")
    calibrate(a.kvsteer, a.out, a.run, a.limit, a.threads)
    write_results(a.out, a.state, a.title)
    print(f"study_calibrate: done; the comparison is on {a.state / 'README.md'}")


if __name__ == "__main__":
    sys.exit(main())
