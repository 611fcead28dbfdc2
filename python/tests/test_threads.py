"""The GIL is released while decoding, and Ctrl-C stops a call cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import kvsteer


def test_another_thread_runs_while_one_generates(stories):
    done = threading.Event()
    span = {}

    def work():
        try:
            span["start"] = time.perf_counter()
            kvsteer.generate(stories, ["Once upon a time"] * 4, raw=True, n_predict=200,
                             n_ctx=1024, n_threads=1, stop_at_eog=False)
            span["end"] = time.perf_counter()
        finally:
            done.set()

    ticks = []
    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    inside = [x for x in ticks if span["start"] < x < span["end"]]
    duration = span["end"] - span["start"]
    # With the GIL held for the whole call this thread could not run inside it at all.
    assert duration > 0.05
    assert len(inside) >= 0.3 * duration / 0.002, (len(inside), duration)


def test_two_threads_generate_at_once(stories):
    results = {}

    def work(i):
        results[i] = kvsteer.generate(stories, "Once upon a time", raw=True, n_predict=16,
                                      n_threads=1, type_k="f32", type_v="f32").tokens

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]


def _run_interrupted(script: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "interrupt.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


def test_ctrl_c_stops_generate(stories_gguf, tmp_path):
    proc = _run_interrupted(f"""
        import os, signal, threading, time, kvsteer
        m = kvsteer.Model({str(stories_gguf)!r})
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.perf_counter()
        try:
            kvsteer.generate(m, ["Once upon a time"] * 8, raw=True, n_predict=4000,
                             n_ctx=4096 * 8, stop_at_eog=False, n_threads=1)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted after", round(time.perf_counter() - t, 2))
        # The interpreter and the library still work, and Ctrl-C is Python's again.
        print(len(kvsteer.generate(m, "Once", raw=True, n_predict=3).tokens))
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0].startswith("interrupted after"), proc.stdout
    assert float(lines[0].split()[-1]) < 10
    assert lines[1:3] == ["3", "True"]


def test_ctrl_c_stops_eval_with_whole_files(stories_gguf, gsm8k_items, traces, tmp_path):
    out = tmp_path / "run"
    args = dict(prompt_family="chatml", n_predict=64, parallel=1, n_threads=1, preset=False)
    proc = _run_interrupted(f"""
        import os, signal, kvsteer
        m = kvsteer.Model({str(stories_gguf)!r})
        def progress(done, total):
            if done == 2:
                os.kill(os.getpid(), signal.SIGINT)
        try:
            kvsteer.eval(m, "gsm8k", {str(gsm8k_items)!r}, {str(out)!r}, progress=progress,
                         **{args!r})
            print("finished")
        except KeyboardInterrupt:
            print("interrupted")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interrupted"
    assert not (out / "summary.json").exists()
    lines = (out / "items.jsonl").read_text().splitlines()
    assert 2 <= len(lines) < 8 and all(json.loads(x)["response"] is not None for x in lines)
    # The same call resumes and finishes.
    m = kvsteer.Model(stories_gguf)
    summary = kvsteer.eval(m, "gsm8k", str(gsm8k_items), str(out), **args)
    assert summary["n"] == 8


def test_ctrl_c_stops_eval_inside_a_batch(stories_gguf, gsm8k_items, tmp_path):
    # One batch of 8 answers of 2 000 tokens (stories260K does not stop by itself): about 15-30 s
    # here. Ctrl-C after 1 s must stop it inside the batch, not at its end, and journal nothing.
    out = tmp_path / "run"
    proc = _run_interrupted(f"""
        import os, signal, threading, time, kvsteer
        m = kvsteer.Model({str(stories_gguf)!r})
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.perf_counter()
        try:
            kvsteer.eval(m, "gsm8k", {str(gsm8k_items)!r}, {str(out)!r}, prompt_family="chatml",
                         n_predict=2000, parallel=8, limit=8, n_threads=1, preset=False)
            print("finished after", round(time.perf_counter() - t, 2))
        except KeyboardInterrupt:
            print("interrupted after", round(time.perf_counter() - t, 2))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("interrupted after"), proc.stdout
    assert float(proc.stdout.split()[-1]) < 8, proc.stdout
    assert json.loads((out / "config.json").read_text())["n_predict"] == 2000
    items = out / "items.jsonl"
    assert not items.exists() or items.read_text() == ""
    assert not (out / "summary.json").exists()
