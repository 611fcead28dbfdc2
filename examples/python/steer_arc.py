#!/usr/bin/env python3
"""Cache steering from Python, as in a notebook: extract a vector on SmolLM2-135M-Instruct from
the paper's ARC traces, steer a few ARC-Challenge questions with several c_v, and plot the mean
answer length against c_v.

    pip install matplotlib            # besides kvsteer (docs/python.md)
    python examples/python/steer_arc.py --out arc-length.png

Defaults are small (8 contrastive pairs of 3-shot prompts, 4 questions, 160 new tokens, c_v 0, 1,
2, 4, 6); the paper used 200 pairs of 10-shot prompts and c_v 6 for SmolLM2 on ARC. Measured here
with the defaults: mean answer length 69, 65, 147, 160, 160 tokens at c_v 0, 1, 2, 4, 6 (the
160-token limit from c_v 4 on); 14 minutes on 2 cores that another job was using, a few minutes
on idle ones. With 16 pairs, 6 questions and 192 tokens: 71 tokens (c_v 0), 167 (c_v 2), the
limit from c_v 4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import kvsteer

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"


def arc_questions(path: str, n: int) -> list[str]:
    """The user message of the first n ARC items, formatted as the reference (and kvsteer eval)."""
    out = []
    with open(path) as f:
        for line in f:
            item = json.loads(line)
            q = item["question"]
            choices = "\n".join(f"{c['label']}: {c['text']}" for c in q["choices"])
            out.append(f"{q['stem']}\n\nChoices:\n{choices}")
            if len(out) == n:
                break
    return out


def report(label: str):
    """A progress callback printing (done, total)."""

    tty = sys.stdout.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            print(f"\r{label}: {done}/{total}", end="\n" if done == total else "", flush=True)
        elif done == total:
            print(f"{label}: {done}/{total}", flush=True)

    return show


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.expanduser(
        "~/.cache/kvsteer/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--traces", default=str(SHARED / "paper_traces" / "traces" / "arc_oai.jsonl"))
    p.add_argument("--data", default=str(
        SHARED / "arc" / "ARC-Challenge" / "ARC-Challenge-Test.jsonl"))
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--n-predict", type=int, default=160)
    p.add_argument("--cv", default="0,1,2,4,6", help="c_v values, comma-separated")
    p.add_argument("--out", default="arc-length-vs-cv.png")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write a file; no display needed
    import matplotlib.pyplot as plt

    model = kvsteer.Model(args.model)
    print(model, model.fingerprint["n_layer"], "layers")

    # 1. The vector: the first N trace rows, each with k neighbours answered with and without
    #    steps (lexical neighbours here; the paper's lists: fewshot_map=.../fewshot_maps_...json).
    t = time.perf_counter()
    vec = kvsteer.extract(model, args.traces, task="arc", n_pairs=args.pairs, shots=args.shots,
                          progress=report("extract"))
    print(f"extracted in {time.perf_counter() - t:.1f} s: {vec}")
    v_norms = [float((row**2).sum() ** 0.5) for row in vec.values]  # zero-copy per-layer views
    print("V norm per layer:", " ".join(f"{n:.2f}" for n in v_norms))

    # 2. Steer the same questions with each c_v (c_k = 0, layers >= 1, offset "\n": the paper's).
    questions = arc_questions(args.data, args.questions)
    cvs = [float(x) for x in args.cv.split(",")]
    lengths, examples = [], {}
    for cv in cvs:
        outs = kvsteer.generate(model, questions, steer=vec, c_v=cv, c_k=0.0,
                                n_predict=args.n_predict, parallel=len(questions))
        n_tokens = [len(g.tokens) for g in outs]
        lengths.append(statistics.mean(n_tokens))
        examples[cv] = outs[0].text
        print(f"c_v {cv:5.1f}: mean answer length {lengths[-1]:6.1f} tokens "
              f"(per question: {n_tokens})")
    for cv in (cvs[0], cvs[-1]):
        print(f"\n--- question 1 at c_v {cv} ---\n{examples[cv][:400]}")

    # 3. The plot.
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(cvs, lengths, marker="o")
    ax.set_xlabel("c_v")
    ax.set_ylabel("mean answer length (tokens)")
    ax.set_title(f"SmolLM2-135M, {len(questions)} ARC questions, {args.pairs} pairs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
