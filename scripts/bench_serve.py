#!/usr/bin/env python3
"""Throughput of `kvsteer serve` with per-request steering, beside llama.cpp's own llama-server
(a benchmark: prints figures, asserts nothing).

Starts `kvsteer serve --parallel N` and, with --llama-server, two llama-server processes of the
same pinned llama.cpp with the same engine settings: one plain, one with a global control vector
(`--control-vector`, the only steering llama-server has: every request gets it). Then runs rounds
of N concurrent streamed completion requests in each mode, the modes interleaved (their order
reversed every other round) so that drift on a shared machine hits all alike:
  unsteered          kvsteer serve, no steering field
  one                kvsteer serve, every request steered by the same vector (c_v 4)
  different          kvsteer serve, every request with its own vector name and coefficient
  llama-server       llama-server, no control vector
  llama-server-cvec  llama-server, a control vector on every layer from 1 on
Every request asks for the same prompt length and runs to max_tokens (`ignore_eos`): steering
changes how long answers are, and every mode must do the same work to compare speeds. Per mode:
aggregate generated tokens/s (tokens / wall time of the round), time to first token p50/p99, the
ratio to kvsteer's unsteered mode in the same round (median and range over rounds: drift between
rounds cancels); for kvsteer the edits and their mean time (from /metrics).

Without --vector, a vector is extracted for the model from four built-in pairs (its content does
not matter for speed: the edit is one cell whatever it holds), so random benchmark models
(`kvsteer-make-tiny-models --only bench-smollm2-360m`) work too, though not with --llama-server:
llama-server (v0.4.0) ends a stream with a 500 ("does not match the expected Content-only
format") once a random model emits control characters or bytes that are no UTF-8.
--llama-server needs the `gguf` package (the project's venv has it) to write the control vector.
Usage:
  bench_serve.py --kvsteer build/release/tools/cli/kvsteer --model M.gguf [--vector V.gguf]
                 [--llama-server "$(scripts/setup_llama_server.sh)"] [--parallel 16]
                 [--max-tokens 64] [--rounds 3] [--threads 2] [--fa auto]
                 [--kv-streams unified|per-sequence] [--json OUT]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

KVSTEER_MODES = ("unsteered", "one", "different")
# Four generic pairs for the self-made vector: short, so extraction takes seconds on any model.
PAIRS = [
    {"query": "What is 2 + 3?", "steps": ["2 + 3 adds three to two.", "That gives 5."],
     "solution": "5"},
    {"query": "Is a cat an animal?", "steps": ["A cat is a living mammal.", "Mammals are animals."],
     "solution": "yes"},
    {"query": "What colour is the sky?", "steps": ["On a clear day sunlight scatters.",
                                                   "Blue light scatters most."], "solution": "blue"},
    {"query": "How many legs has a dog?", "steps": ["A dog is a quadruped.", "Quadrupeds have four."],
     "solution": "4"},
]


@dataclass
class Server:
    name: str
    modes: tuple[str, ...]
    proc: subprocess.Popen
    port: int = 0
    log: list[str] = field(default_factory=list)


def die(msg: str) -> None:
    sys.exit(f"bench_serve: error: {msg}")


def wait_listening(server: Server, pattern: str) -> None:
    """Reads the server's stderr until it says where it listens, then drains it in the
    background (a full pipe would block the server)."""
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.log.append(line)
        m = re.search(pattern, line)
        if m:
            if not server.port:
                server.port = int(m.group(1))
            threading.Thread(target=lambda: [server.log.append(x) for x in server.proc.stderr],
                             daemon=True).start()
            return
    die(f"{server.name} did not start:\n" + "".join(server.log[-20:]))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_info(args) -> dict:
    out = subprocess.run([args.kvsteer, "info", "-m", args.model], capture_output=True, text=True)
    if out.returncode != 0:
        die(f"kvsteer info failed: {out.stderr.strip()}")
    return json.loads(out.stdout)["model"]


def make_vector(args, info: dict, tmp: Path) -> str:
    traces = tmp / "pairs.jsonl"
    traces.write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    out = tmp / "bench-vector.gguf"
    proc = subprocess.run([args.kvsteer, "extract", "-m", args.model, "-t", str(args.threads),
                           "--traces", str(traces), "-N", "4", "-k", "1", "-o", str(out)] +
                          ([] if info.get("chat_template") else ["--chat-template", "chatml"]),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"extracting a vector failed: {proc.stderr.strip()}")
    return str(out)


def make_control_vector(shape: dict, tmp: Path) -> str:
    """A llama.cpp control vector (tensors direction.L, L >= 1) of unit-norm random directions:
    llama-server adds it to every layer's output for every token of every request."""
    try:
        import gguf
        import numpy as np
    except ImportError:
        die("--llama-server needs the gguf and numpy packages (run this script with the "
            "project's venv python)")
    n_embd, n_layer = int(shape["n_embd"]), int(shape["n_layer"])
    rng = np.random.default_rng(0)
    path = tmp / "control-vector.gguf"
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", n_layer - 1)
    for layer in range(1, n_layer):
        d = rng.standard_normal(n_embd).astype(np.float32)
        w.add_tensor(f"direction.{layer}", d / np.linalg.norm(d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def start_kvsteer(args, vector: str) -> Server:
    cmd = [args.kvsteer, "serve", "-m", args.model, "-t", str(args.threads), "-c", str(args.ctx),
           "--parallel", str(args.parallel), "--port", "0", "--fa", args.fa, "--kv-streams",
           args.kv_streams]
    # One file under many names: a different vector per request costs what a different file
    # would (the edit is one cell either way); the coefficients differ too.
    for i in range(args.parallel):
        cmd += ["--vector", f"v{i}={vector}"]
    s = Server("kvsteer serve", KVSTEER_MODES,
               subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace"))
    wait_listening(s, r"listening on http://127\.0\.0\.1:(\d+)")
    return s


def start_llama_server(args, name: str, extra: list[str]) -> Server:
    port = free_port()
    # The engine as kvsteer serve holds it: one context of --ctx cells shared by --parallel
    # sequences (kv-unified, or a stream per sequence with --kv-streams per-sequence), F16 cache, the same flash-attention setting, no web UI. llama-server
    # reuses a slot's cached prompt prefix by default; the prompts here share only "Story ".
    # --no-repack: the weights stay in their file layout, as kvsteer loads them
    # (ModelParams::use_extra_bufts): the AMX kernels of this llama.cpp crash on machines that
    # have AMX, and the two servers then run the same matmul kernels.
    cmd = [args.llama_server, "-m", args.model, "-t", str(args.threads), "-tb", str(args.threads),
           "-c", str(args.ctx), "-np", str(args.parallel),
           "--kv-unified" if args.kv_streams == "unified" else "--no-kv-unified", "-fa", args.fa,
           "-ctk", "f16", "-ctv", "f16", "--no-repack", "--host", "127.0.0.1", "--port",
           str(port), "--no-webui"] + extra
    s = Server(name, (name,),
               subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace"), port)
    wait_listening(s, r"listening on http://127\.0\.0\.1:(\d+)")
    # Loaded is not yet ready: poll /health.
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return s
        except OSError:
            pass
        time.sleep(0.1)
    die(f"{name} never became healthy")
    return s


def one_request(port: int, body: dict, out: list, i: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        out[i] = RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
        return
    ttft = None
    finish = None
    buf = b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            data = json.loads(event[6:])
            if "error" in data:
                out[i] = RuntimeError(str(data["error"]))
                return
            choice = data["choices"][0] if data.get("choices") else {}
            if choice.get("text") and ttft is None:
                ttft = time.perf_counter() - t0
            finish = choice.get("finish_reason") or finish
    conn.close()
    out[i] = (ttft or 0.0, time.perf_counter() - t0, finish)


def round_(server: Server, mode: str, args, round_no: int) -> dict:
    bodies = []
    for i in range(args.parallel):
        body = {"prompt": f"Story {round_no}-{i}: Once upon a time", "max_tokens": args.max_tokens,
                "temperature": 0.8, "seed": 1000 * round_no + i, "stream": True,
                "ignore_eos": True}
        if mode.startswith("llama-server"):
            # The same distribution as kvsteer samples (OpenAI's parameters: temperature, top_p
            # 1): llama-server's defaults would add top-k 40 and min-p 0.05, which sample from a
            # few dozen tokens instead of the whole vocabulary.
            body.update({"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0})
        elif mode == "one":
            body["steering"] = {"vector": "v0", "c_v": 4}
        elif mode == "different":
            body["steering"] = {"vector": f"v{i}", "c_v": 1 + 0.25 * i}
        bodies.append(body)
    is_kvsteer = mode in KVSTEER_MODES
    before = metrics(server.port) if is_kvsteer else {}
    out: list = [None] * len(bodies)
    threads = [threading.Thread(target=one_request, args=(server.port, b, out, i))
               for i, b in enumerate(bodies)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    failed = [o for o in out if not isinstance(o, tuple)]
    if failed:
        die(f"{mode}: {len(failed)} request(s) failed: {failed[0]}")
    short = [o for o in out if o[2] != "length"]
    if short:
        die(f"{mode}: {len(short)} request(s) ended before max_tokens ({short[0][2]}); the "
            "modes would not do the same work")
    tokens = args.parallel * args.max_tokens
    row = {"mode": mode, "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall,
           "ttft_s": [o[0] for o in out]}
    if is_kvsteer:
        after = metrics(server.port)
        generated = after["kvsteer_generated_tokens_total"] - before["kvsteer_generated_tokens_total"]
        if generated != tokens:
            die(f"{mode}: the server counted {generated:.0f} generated tokens, expected {tokens}")
        row["edits"] = after["kvsteer_edits_total"] - before["kvsteer_edits_total"]
        row["edit_s"] = after["kvsteer_edit_seconds_total"] - before["kvsteer_edit_seconds_total"]
    return row


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
    ap.add_argument("--vector", help="steering vector (default: one extracted from 4 built-in pairs)")
    ap.add_argument("--llama-server", help="llama-server binary (scripts/setup_llama_server.sh)")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--fa", choices=["on", "off", "auto"], default="auto")
    ap.add_argument("--kv-streams", choices=["unified", "per-sequence"], default="unified")
    ap.add_argument("--json")
    args = ap.parse_args()
    for path, what in ((args.kvsteer, "--kvsteer"), (args.model, "--model"),
                       (args.vector, "--vector"), (args.llama_server, "--llama-server")):
        if path is not None and not os.path.isfile(path):
            die(f"{what} {path}: no such file")
    info = model_info(args)
    shape = info["fingerprint"]
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmpdir:
        tmp = Path(tmpdir)
        vector = args.vector or make_vector(args, info, tmp)
        try:
            servers.append(start_kvsteer(args, vector))
            if args.llama_server:
                cvec = make_control_vector(shape, tmp)
                servers.append(start_llama_server(args, "llama-server", []))
                servers.append(start_llama_server(args, "llama-server-cvec",
                                                  ["--control-vector", cvec]))
            slots = [(s, m) for s in servers for m in s.modes]
            results: dict[str, list[dict]] = {m: [] for _, m in slots}
            for s in servers:
                round_(s, s.modes[0], args, -1)  # warm-up: first-touch of weights and cache
            for r in range(args.rounds):
                for s, m in (slots if r % 2 == 0 else slots[::-1]):
                    results[m].append(round_(s, m, args, r))
        finally:
            for s in servers:
                s.proc.terminate()
            for s in servers:
                try:
                    s.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
    base = statistics.median(x["tok_per_s"] for x in results["unsteered"])
    summary = {"parallel": args.parallel, "max_tokens": args.max_tokens, "rounds": args.rounds,
               "threads": args.threads, "ctx": args.ctx, "flash_attn": args.fa,
               "kv_streams": args.kv_streams,
               "model": os.path.basename(args.model), "n_layer": shape.get("n_layer"),
               "n_embd": shape.get("n_embd"), "vector": "given" if args.vector else "built-in pairs",
               "modes": {}}
    print(f"{summary['model']} ({shape.get('n_layer')} layers, n_embd {shape.get('n_embd')}): "
          f"{args.parallel} concurrent streamed requests x {args.max_tokens} tokens, "
          f"{args.rounds} interleaved rounds, {args.threads} threads, flash attention {args.fa}, "
          f"cache {args.kv_streams}")
    for _, m in slots:
        tps = [x["tok_per_s"] for x in results[m]]
        ttft = [t for x in results[m] for t in x["ttft_s"]]
        # Each round runs every mode back to back, so the ratio within a round cancels the
        # drift between rounds; its median and range say what the modes cost.
        paired = [t / u["tok_per_s"] for t, u in zip(tps, results["unsteered"])]
        row = {"tok_per_s_median": statistics.median(tps), "tok_per_s": tps,
               "ratio_to_unsteered": statistics.median(tps) / base,
               "paired_ratio_median": statistics.median(paired),
               "paired_ratio_min": min(paired), "paired_ratio_max": max(paired),
               "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99)}
        line = (f"  {m:18s} {row['tok_per_s_median']:7.1f} tok/s (rounds "
                f"{min(tps):.1f}-{max(tps):.1f})  ratio per round {row['paired_ratio_median']:.3f} "
                f"[{min(paired):.3f}, {max(paired):.3f}]  TTFT p50 {row['ttft_p50_s'] * 1e3:.0f} ms "
                f"p99 {row['ttft_p99_s'] * 1e3:.0f} ms")
        if m in KVSTEER_MODES:
            edits = sum(x["edits"] for x in results[m])
            row["edits"] = edits
            row["edit_ms_mean"] = 1e3 * sum(x["edit_s"] for x in results[m]) / max(edits, 1)
            line += f"  edits {edits:.0f} ({row['edit_ms_mean']:.2f} ms each)"
        summary["modes"][m] = row
        print(line)
    if args.json:
        tmp_json = args.json + ".tmp"
        with open(tmp_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.replace(tmp_json, args.json)


if __name__ == "__main__":
    main()
