#!/usr/bin/env python3
"""Overhead of the Python binding: kvsteer.generate against `kvsteer generate` on the
same prompt and settings, and the zero-copy numpy view of an F32 steering vector.

    PYTHONPATH=build/ci/python python bench/python_binding.py \
        --cli build/ci/tools/cli/kvsteer --model ~/.cache/kvsteer/models/SmolLM2-135M-Instruct.Q4_1.gguf

Decode speed is measured as the difference between a long and a 1-token generation (same
prompt, same steering edit, greedy, one thread), so that model loading, context creation and
prefill cancel out; runs alternate CLI / Python, and the medians are compared. Not a test:
timings on a shared 2-core machine vary by several percent from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import kvsteer

PROMPT = "Write a long story about a robot who learns to paint. Describe every day in detail."


def cli_seconds(cli: str, model: str, vector: str, n: int, threads: int) -> tuple[float, int]:
    cmd = [cli, "generate", "-m", model, "-p", PROMPT, "--steer", vector, "--coef-v", "4",
           "-n", str(n), "-t", str(threads), "--json"]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, len(json.loads(out)["tokens"])


def py_seconds(model_path: str, vector: str, n: int, threads: int) -> tuple[float, int]:
    # Model loading included, as in the CLI process (the difference of two runs removes it).
    t = time.perf_counter()
    model = kvsteer.Model(model_path)
    g = kvsteer.generate(model, PROMPT, steer=vector, c_v=4, n_predict=n, n_threads=threads)
    return time.perf_counter() - t, len(g.tokens)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cli", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--traces", default=os.path.join(os.path.dirname(__file__), "..", "examples",
                                                    "arithmetic_traces.jsonl"))
    p.add_argument("-n", type=int, default=256, help="new tokens of the long run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, default=1)
    args = p.parse_args()

    model = kvsteer.Model(args.model)
    vec = kvsteer.extract(model, args.traces, n_pairs=4, shots=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.gguf")
        vec.save(path)
        rates = {"cli": [], "python": []}
        for _ in range(args.repeat):
            for name in ("cli", "python"):
                run = (lambda n: cli_seconds(args.cli, args.model, path, n, args.threads)) \
                    if name == "cli" else (lambda n: py_seconds(args.model, path, n, args.threads))
                short_s, short_n = run(1)
                long_s, long_n = run(args.n)
                rates[name].append((long_n - short_n) / (long_s - short_s))
        cli_rate = statistics.median(rates["cli"])
        py_rate = statistics.median(rates["python"])
        print(f"decode tokens/s (median of {args.repeat}, {args.threads} thread(s), "
              f"{args.n} tokens): CLI {cli_rate:.1f}  Python {py_rate:.1f}  "
              f"ratio {py_rate / cli_rate:.3f}")
        print("  runs: CLI " + " ".join(f"{r:.1f}" for r in rates["cli"]) +
              " | Python " + " ".join(f"{r:.1f}" for r in rates["python"]))

    # Zero-copy: a vector's rows are float32 in C++; .keys / .values view them in place.
    layer = 1
    a, b = vec.keys[layer], vec.keys[layer]
    base = a.base
    print(f"\nF32 vector, layer {layer}: keys view dtype {a.dtype}, shape {a.shape}, "
          f"owns data: {a.flags.owndata}, address {a.__array_interface__['data'][0]:#x} "
          f"(second access {b.__array_interface__['data'][0]:#x}), "
          f"np.shares_memory: {np.shares_memory(a, b)}, base: {type(base).__name__}")
    before = float(vec.to_numpy()[0][layer, 0])
    a[0] += 1.0
    after = float(vec.to_numpy()[0][layer, 0])
    print(f"writing through the view changes the vector: {before:.6f} -> {after:.6f}")
    t = time.perf_counter()
    for _ in range(10000):
        vec.keys  # noqa: B018 (a list of n_layer views)
    views_us = (time.perf_counter() - t) / 10000 * 1e6
    t = time.perf_counter()
    for _ in range(10000):
        vec.to_numpy()
    copy_us = (time.perf_counter() - t) / 10000 * 1e6
    print(f"vec.keys (views of all {vec.n_layer} layers): {views_us:.1f} us; "
          f"vec.to_numpy() (a copy of K and V): {copy_us:.1f} us")


if __name__ == "__main__":
    main()
