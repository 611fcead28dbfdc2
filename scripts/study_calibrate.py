#!/usr/bin/env python3
"""Answers the first items of a study run again on this machine: how far another machine's
arithmetic moves the greedy answers (docs/real-model.md, "Another machine is another set of
answers"), measured rather than assumed, on any run the study has made.

  study_calibrate.py RUN [--limit N] [--out out/real-full] [--state results/smollm2-135m]

The run is made again from its own configuration (config.json): the calibration folder starts
with that configuration at the smaller limit, so `kvsteer eval` itself refuses to begin when the
command built here would compute anything else (another vector, model, setting or engine). The
answers go to <out>/calibration/<run>@<machine>/ (study_provenance names machines), which the
study's state keeps (study_state) and the results page compares with the run item by item
(study_results). One calibration per run and machine kind; an interrupted one resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import study_provenance as provenance
from study_results import write_results
from study_state import CALIBRATION, restore_state, write_atomic


def calibration_name(run: str, machine: str) -> str:
    return f"{run}@{machine}"


def eval_args(config: dict, limit: int, out: Path, threads: int, caa_cache: Path,
              selection: Path | None) -> list[str]:
    """The `kvsteer eval` arguments that make the run `config` describes again, at `limit`."""
    if config.get("decoding") != "greedy":
        raise ValueError("the run was sampled: config.json does not record its temperature, so it "
                         "cannot be made again (calibration compares greedy answers)")
    args = ["eval", "-m", config["model"], "-t", str(threads), "--task", config["task"],
            "--data", config["data"], "--limit", str(limit), "--method", config["method"],
            "--n-predict", str(config["n_predict"]), "--seed", str(config["seed"]),
            "--parallel", str(config["parallel"]), "-o", str(out)]
    if config.get("prompt_family", "model") != "model":
        args += ["--prompt-family", config["prompt_family"]]
    if config.get("chat_template"):
        args += ["--chat-template", config["chat_template"]]
    if config.get("traces"):
        args += ["--traces", config["traces"]]
    if config.get("fewshot_map"):
        args += ["--fewshot-map", config["fewshot_map"]]
    for key, flag in (("pairs", "--pairs"), ("shots", "--shots")):
        if key in config:
            args += [flag, str(config[key])]
    if config.get("vector"):
        args += ["--vector", config["vector"]]
    if "extract_position" in config:
        args += ["--extract-position", str(config["extract_position"])]
    steering = config.get("steering")
    if steering is not None:
        if steering["layers_k"] != steering["layers_v"]:
            raise ValueError("the run steered K and V in different layers, which eval's flags "
                             "cannot say")
        args += ["--ck", repr(float(steering["c_k"])), "--cv", repr(float(steering["c_v"])),
                 "--layers", steering["layers_k"]]
        offset = steering.get("offset_token")
        args += ["--offset", "none"] if offset is None else ["--offset-id", str(offset)]
    caa = config.get("caa")
    if caa is not None:
        args += ["--caa-layer", str(caa["layer_first"]), "--caa-c", repr(float(caa["c"])),
                 "--caa-cache", str(caa_cache)]
        if caa["layer_last"] != -1:
            args += ["--caa-layer-last", str(caa["layer_last"])]
    if selection is not None:
        args += ["--selection", str(selection)]
    engine = config.get("engine")
    if engine is not None:
        args += ["--cache-type-k", engine["cache_type_k"], "--cache-type-v",
                 engine["cache_type_v"], "--flash-attn", engine["flash_attn"],
                 "--kv-streams", engine["kv_streams"]]
    return args


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
    machine = provenance.this_machine(kvsteer)
    dest = out / CALIBRATION / calibration_name(run, machine["machine"])
    dest.mkdir(parents=True, exist_ok=True)
    selection = None
    if "selection" in config:
        selection = dest.with_name(dest.name + ".selection.json")
        write_atomic(selection, json.dumps(config["selection"], indent=2) + "\n")
    if not (dest / "config.json").exists():
        # The run's own configuration at the smaller limit: eval compares what it would compute
        # with it before it answers anything.
        write_atomic(dest / "config.json", json.dumps(dict(config, limit=limit), indent=2) + "\n")
    try:
        args = eval_args(config, limit, dest, threads, out / "caa", selection)
    except ValueError as e:
        raise SystemExit(f"study_calibrate: error: {run}: {e}")
    provenance.note_machine(out, machine)
    print(f"study_calibrate: {run}: answering its first {limit} items again on "
          f"{machine['machine']} ({machine['cpu']}) into {dest}", flush=True)
    done = subprocess.run([kvsteer] + args)
    if done.returncode != 0:
        raise SystemExit(f"study_calibrate: error: kvsteer eval failed ({done.returncode}); the "
                         f"calibration in {dest} resumes when run again")
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
