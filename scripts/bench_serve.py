#!/usr/bin/env python3
"""Throughput of `kvsteer serve` with per-request steering (a benchmark: prints figures, asserts
nothing). Starts the server with --parallel N, then runs rounds of N concurrent streamed requests in
three modes, interleaved so that drift on a shared machine hits all alike:
  unsteered   no steering field
  one         every request steered by the same vector (c_v 4)
  different   every request with its own vector name and coefficient
Per mode: aggregate generated tokens/s (sum of tokens / wall time of the round), time to first
token p50/p99, and the ratios to unsteered. Usage:
  bench_serve.py --kvsteer build/release/tools/cli/kvsteer --model M.gguf --vector V.gguf
                 [--parallel 16] [--max-tokens 64] [--rounds 3] [--threads 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time


def start(args) -> tuple[subprocess.Popen, int]:
    cmd = [args.kvsteer, "serve", "-m", args.model, "-t", str(args.threads), "-c",
           str(args.ctx), "--parallel", str(args.parallel), "--port", "0"]
    # One file under many names: a different vector per request costs what a different file
    # would (the edit is one cell either way); the coefficients differ too.
    for i in range(args.parallel):
        cmd += ["--vector", f"v{i}={args.vector}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
    sys.exit("bench_serve: the server did not start")


def one_request(port: int, body: dict, out: list, i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    ttft = None
    pieces = 0
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            data = json.loads(event[6:])
            if "error" in data:
                raise RuntimeError(data["error"])
            if data["choices"][0]["text"] and ttft is None:
                ttft = time.perf_counter() - t0
            pieces += 1
    conn.close()
    out[i] = (ttft or 0.0, time.perf_counter() - t0)


def round_(port: int, mode: str, args, round_no: int) -> dict:
    bodies = []
    for i in range(args.parallel):
        body = {"prompt": f"Story {round_no}-{i}: Once upon a time", "max_tokens": args.max_tokens,
                "temperature": 0.8, "seed": 1000 * round_no + i, "stream": True,
                # Every request runs to max_tokens: steering changes how long answers are, and
                # the modes must do the same work to compare their speed.
                "ignore_eos": True}
        if mode == "one":
            body["steering"] = {"vector": "v0", "c_v": 4}
        elif mode == "different":
            body["steering"] = {"vector": f"v{i}", "c_v": 1 + 0.25 * i}
        bodies.append(body)
    before = metrics(port)
    out: list = [None] * len(bodies)
    threads = [threading.Thread(target=one_request, args=(port, b, out, i))
               for i, b in enumerate(bodies)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = metrics(port)
    tokens = after["kvsteer_generated_tokens_total"] - before["kvsteer_generated_tokens_total"]
    return {"mode": mode, "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall,
            "ttft_s": [o[0] for o in out],
            "edits": after["kvsteer_edits_total"] - before["kvsteer_edits_total"],
            "edit_s": after["kvsteer_edit_seconds_total"] - before["kvsteer_edit_seconds_total"]}


def metrics(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(kvsteer_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kvsteer", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--vector", required=True)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--json")
    args = ap.parse_args()
    proc, port = start(args)
    modes = ["unsteered", "one", "different"]
    results = {m: [] for m in modes}
    try:
        round_(port, "unsteered", args, -1)  # warm-up
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for m in order:
                results[m].append(round_(port, m, args, r))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = statistics.median(x["tok_per_s"] for x in results["unsteered"])
    summary = {"parallel": args.parallel, "max_tokens": args.max_tokens, "rounds": args.rounds,
               "threads": args.threads, "model": args.model, "modes": {}}
    print(f"kvsteer serve, {args.parallel} concurrent streamed requests x {args.max_tokens} tokens, "
          f"{args.rounds} interleaved rounds, {args.threads} threads")
    for m in modes:
        tps = [x["tok_per_s"] for x in results[m]]
        ttft = [t for x in results[m] for t in x["ttft_s"]]
        edits = sum(x["edits"] for x in results[m])
        edit_ms = 1e3 * sum(x["edit_s"] for x in results[m]) / max(edits, 1)
        row = {"tok_per_s_median": statistics.median(tps), "tok_per_s": tps,
               "ratio_to_unsteered": statistics.median(tps) / base,
               "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99),
               "edits": edits, "edit_ms_mean": edit_ms}
        summary["modes"][m] = row
        print(f"  {m:10s} {row['tok_per_s_median']:7.1f} tok/s (rounds {', '.join(f'{t:.1f}' for t in tps)})"
              f"  ratio {row['ratio_to_unsteered']:.3f}  TTFT p50 {row['ttft_p50_s'] * 1e3:.0f} ms"
              f" p99 {row['ttft_p99_s'] * 1e3:.0f} ms  edits {edits} ({edit_ms:.2f} ms each)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
