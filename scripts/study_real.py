#!/usr/bin/env python3
"""The paper's study on a real model (SmolLM2-135M-Instruct), as one resumable command.

Two modes:
  full  The paper's protocol with its SmolLM2 settings (method.md §2.1, §2.2, §3.5) on ARC-Challenge,
        GSM8K, CommonsenseQA and PIQA, every method. Every tuned setting (cache steering's c_v, c_k
        and offset protocol, the extraction cell, activation steering's layer and coefficient) is
        chosen on a selection split that shares no item with the test set, by a rule fixed here
        before any test item is run, and written into the test runs' configuration. Days on
        2 cores, so in three stages, each answering a question before the next spends hours:
          1. the question: does the paper's published edit (fixed before the study, not tuned)
             induce reasoning on test items? Every task's baseline, then every task's vector
             and the paper's setting, on the first QUESTION_PASS test items;
          2. the comparison: diagnosis, the baseline on the selection split (the sweeps'
             reference) and the selection sweeps, and every method on the first FIRST_PASS test
             items (cache and activation steering both at the selected setting and at the
             paper's);
          3. every run extended to the whole test set, method by method across the tasks
             (WHOLE_TEST_ORDER).
        Every step is skipped when its output exists, and `kvsteer eval` resumes item by item
        (and extends a run to a larger --limit), so the same command continues where an
        interrupted one stopped.
  demo  A bounded subset (ARC-Challenge and GSM8K test items, fewer contrastive pairs and shots,
        shorter answers) with the paper's SmolLM2 settings as published, nothing tuned; about 20
        minutes on 2 cores. Its output says what was reduced.

Outputs go under --out (not committed); what may be committed (the study's state without any
text, scripts/study_state.py, and a results page) is written into --state as the study goes.
The datasets and the paper's traces are read from ../shared and never copied into the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import study_provenance as provenance
from study_results import (REPRODUCED, SELECTION_BASELINE, choose, load_items, read_journal,
                           write_results)
from study_state import restore_state, whole_lines, write_atomic

COT_PREFIX = "Let's think step by step."
QUESTION_PASS = 160  # test items per task of the baseline and the paper's setting, stage 1
FIRST_PASS = 320  # test items per task and method, stage 2
CHECKPOINT_S = 600  # the state is written back this often while a step runs
# Stage 1's task order: cheapest extraction first (N x k x trace length), so that the most
# tasks have an answer when a session ends.
QUESTION_ORDER = ("arc", "gsm8k", "piqa", "csqa")


@dataclass
class TaskPlan:
    """One task of the study with the paper's SmolLM2 settings (method.md §2 and §3.5)."""

    name: str
    test: str  # test file, relative to the shared data folder
    traces: str  # teacher traces, relative to the shared folder
    n_pairs: int  # N, contrastive pairs (cache steering)
    shots: int  # k, in-context examples
    coef_v: float  # c_v of the paper's row
    offset: str | None  # offset text decoded after the edit ("\n"), None = no offset
    cot_n_pairs: int  # cache steering + CoT: N
    cot_shots: int
    cot_coef_v: float
    cot_offset: str | None
    caa_layer: int  # the paper's CAA layer for SmolLM2-360M (32 layers), reused as a candidate
    caa_coef: float = 3.0
    caa_n_predict: int = 512  # the paper's CAA runs used 512 new tokens (method.md §3.5)
    limit: int = 0  # test items (0: all)
    fewshot_shots: int = 0  # few-shot CoT examples (0: the same k as the contrastive prompts)
    selection_n: int = 64  # selection items


def full_plans() -> list[TaskPlan]:
    return [
        TaskPlan("arc", "data/arc/ARC-Challenge/ARC-Challenge-Test.jsonl",
                 "data/paper_traces/traces/arc_oai.jsonl", 300, 10, 6.0, "\n", 300, 10, 4.0, "\n", 14),
        TaskPlan("gsm8k", "data/gsm8k/test.jsonl", "data/paper_traces/traces/gsm8k_oai.jsonl",
                 200, 5, 1.0, None, 300, 5, 1.0, " ", 16),
        TaskPlan("csqa", "data/csqa/dev_rand_split.jsonl",
                 "data/paper_traces/traces/csqa_oai.jsonl", 400, 12, 6.0, "\n", 300, 10, 6.0, "\n",
                 15),
        TaskPlan("piqa", "data/piqa/valid.jsonl", "data/paper_traces/traces/piqa_oai.jsonl",
                 200, 10, 6.0, "\n", 200, 10, 10.0, "\n", 17),
    ]


def demo_plans() -> list[TaskPlan]:
    arc, gsm8k = full_plans()[0], full_plans()[1]
    # Sized for 20 minutes on a slow 2-core host (prefill ~210 tok/s): few-shot CoT prompts are
    # the longest, so one worked example; ARC items are most of the rest.
    for plan, limit in ((arc, 32), (gsm8k, 15)):
        plan.limit = limit
        plan.n_pairs = plan.cot_n_pairs = 12
        plan.shots = plan.cot_shots = 3
        plan.fewshot_shots = 1
    return [arc, gsm8k]


@dataclass
class Study:
    kvsteer: str
    model: str
    shared: Path
    out: Path
    threads: int
    mode: str
    parallel: int = 16
    n_predict: int = 768
    state: Path | None = None  # the committed state (scripts/study_state.py), kept current
    title: str = ""
    log: Path = field(init=False)
    # Vector path -> the extraction that makes it, for vectors named but not yet made (vectors()).
    pending: dict[str, Callable[[], None]] = field(default_factory=dict)
    # Runs this process has answered items of, or checked (check_reproduces): their records need
    # no further check here.
    vouched: set[str] = field(default_factory=set)
    machine_checked: bool = False  # a run another processor with this engine began was checked
    # This machine's CPU and instruction sets, and those of kvsteer's engine
    # (study_provenance.machine_description).
    machine: dict = field(init=False)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = self.out / "study.log"
        self.machine = provenance.this_machine(self.kvsteer)

    # -- running commands --------------------------------------------------------------------

    def run(self, args: list[str], done: Path | None = None, step: str = "") -> str:
        """Runs kvsteer with args unless `done` exists; returns stdout. Fails loudly. `step` names
        it in the log, after the extractions of the vectors it needs (steps of their own)."""
        if done is not None and done.exists():
            return ""
        self.ensure_vectors(args)
        if step:
            self.say(step)
        cmd = [self.kvsteer] + args
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            start = time.time()
            with tempfile.TemporaryFile("w+", encoding="utf-8") as stdout:
                proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, text=True)
                while True:
                    try:
                        proc.wait(timeout=CHECKPOINT_S)
                        break
                    except subprocess.TimeoutExpired:
                        self.checkpoint()
                stdout.seek(0)
                text = stdout.read()
            log.write(text)
            log.write(f"# rc {proc.returncode}, {time.time() - start:.0f} s\n")
        self.checkpoint()
        if proc.returncode != 0:
            sys.exit(f"study_real: error: kvsteer {args[0]} failed (rc {proc.returncode}); "
                     f"see {self.log}")
        return text

    def checkpoint(self, strict: bool = False) -> None:
        """Writes the report of what is finished and the committable state and results page
        (--state), so that a machine taken back mid-step loses at most CHECKPOINT_S of the study
        once they are committed. A report that cannot be drawn here is said in the log, not
        fatal (unless strict, as at the study's end): the study goes on."""
        self.report(strict)
        if self.state is not None:
            write_results(self.out, self.state, self.title)

    def report(self, strict: bool = True) -> None:
        """kvsteer report over the finished runs (runs/*/summary.json) and sweeps: the tables,
        the stability figures (accuracy, reasoning and answer length against the coefficient)
        and the answer lengths, in out/report. The selection folders also hold the chosen
        settings' records, which are not sweeps and are not given."""
        # The selection split's baseline is read on the results page beside the sweeps; the
        # report's tables and reference lines are the test runs'.
        # Paths relative to out/: the report lists its inputs, and the committed copy says where
        # they lie in the study's folder, not on the machine that drew it.
        inputs = [str(p.relative_to(self.out)) for p in sorted(self.out.glob("runs/*/summary.json"))
                  if SELECTION_BASELINE not in p.parent.name]
        inputs += [str(p.relative_to(self.out)) for p in sorted(self.out.glob("selection/*/*.json"))
                   if is_sweep(p)]
        if not inputs:
            return
        proc = subprocess.run([str(Path(self.kvsteer).resolve()), "report", "--out", "report",
                               "--title", self.title or "kvsteer study", *inputs],
                              cwd=self.out, capture_output=True, text=True)
        if proc.returncode == 0:
            return
        why = (proc.stderr.strip().splitlines() or [f"rc {proc.returncode}"])[-1]
        if strict:
            sys.exit(f"study_real: error: kvsteer report failed: {why}")
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"# report not written: {why}\n")

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"# [{stamp}] {text}\n")

    def base(self) -> list[str]:
        return ["-m", self.model, "-t", str(self.threads), "--prompt-family", "smollm2"]

    # -- data ----------------------------------------------------------------------------------

    def selection_file(self, plan: TaskPlan) -> Path:
        """The selection split of a task, in the task's test format (see make_selection)."""
        path = self.out / "data" / f"selection-{plan.name}.jsonl"
        if not path.exists():
            make_selection(plan, self.shared, path)
        return path

    # -- vectors -------------------------------------------------------------------------------

    def vectors(self, plan: TaskPlan, cot: bool = True) -> dict[str, Path]:
        """Cache-steering vectors of a task: at the last prompt cell (-1, the paper) and at the
        cell before it (-2, the cell the no-offset protocol edits), from one extraction; and,
        with `cot`, the CoT-prefixed vector of cache steering + CoT. Extracted when a command
        that names them first runs (Study.run), not here: a step whose runs are already done
        (restored from the committed state) needs no vector, and an extraction is an hour on
        2 cores."""
        vdir = self.out / "vectors"
        vdir.mkdir(exist_ok=True)
        v = {"last": vdir / f"{plan.name}-last.gguf", "second_last": vdir / f"{plan.name}-second-last.gguf",
             "cot": vdir / f"{plan.name}-cot.gguf"}
        traces = str(self.shared / plan.traces)
        common = self.base() + ["--task", plan.name, "--traces", traces, "--parallel", "4"]

        def extract_cells() -> None:
            fmap = fewshot_map(self.shared, plan.name, plan.n_pairs, plan.shots)
            self.run(["extract"] + common + ["-N", str(plan.n_pairs), "-k", str(plan.shots)] +
                     (["--fewshot-map", fmap] if fmap else []) +
                     ["--position", "-1", "--position", "-2", "-o", str(v["last"]) + ".tmp.gguf",
                      "-o", str(v["second_last"]) + ".tmp.gguf"],
                     step=f"{plan.name}: extracting the cache-steering vector "
                          f"(N={plan.n_pairs}, k={plan.shots}, cells -1 and -2)")
            for key in ("last", "second_last"):
                Path(str(v[key]) + ".tmp.gguf").rename(v[key])
            # run() wrote the state before the renames, without the checkpoint (removed by
            # kvsteer) and without the vectors (still temporary): write it again now.
            self.checkpoint()

        def extract_cot() -> None:
            fmap = fewshot_map(self.shared, plan.name, plan.cot_n_pairs, plan.cot_shots)
            self.run(["extract"] + common + ["-N", str(plan.cot_n_pairs), "-k", str(plan.cot_shots),
                                             "--cot-prefix", COT_PREFIX] +
                     (["--fewshot-map", fmap] if fmap else []) +
                     ["-o", str(v["cot"]) + ".tmp.gguf"],
                     step=f"{plan.name}: extracting the cache steering + CoT vector "
                          f"(N={plan.cot_n_pairs}, k={plan.cot_shots})")
            Path(str(v["cot"]) + ".tmp.gguf").rename(v["cot"])
            self.checkpoint()

        # The two cells come from one extraction, renamed together: either both exist or neither.
        if not v["second_last"].exists():
            self.pending[str(v["last"])] = self.pending[str(v["second_last"])] = extract_cells
        if cot and not v["cot"].exists():
            self.pending[str(v["cot"])] = extract_cot
        return v

    def ensure_vectors(self, args: list[str]) -> None:
        """Extracts the vectors a command names that do not exist yet (see vectors())."""
        for arg in args:
            make = self.pending.pop(arg, None)
            if make is not None and not Path(arg).exists():
                make()
                for path in [p for p, m in self.pending.items() if m is make]:
                    del self.pending[path]

    # -- evaluation ----------------------------------------------------------------------------

    def eval_args(self, plan: TaskPlan, data: Path, limit: int) -> list[str]:
        return self.base() + ["--task", plan.name, "--data", str(data), "--traces",
                              str(self.shared / plan.traces), "--limit", str(limit),
                              "--n-predict", str(self.n_predict), "--parallel",
                              str(self.parallel)] + self.engine

    @property
    def caa_cache(self) -> list[str]:
        """Activation directions are extracted once per task (20+ minutes) and found again by the
        run after the selection sweep."""
        return ["--caa-cache", str(self.out / "caa")]

    @property
    def engine(self) -> list[str]:
        """How eval and sweep hold the cache. The full study: a stream per sequence, F32, flash
        attention off (docs/DESIGN.md "Cache layout": 3x faster decode of 16 long answers than
        the default, and an answer does not depend on where its batch-mates' cells lie). The
        demo keeps the library's defaults, as its committed results were made with them."""
        if self.mode != "full":
            return []
        return ["--kv-streams", "per-sequence", "--cache-type-k", "f32", "--cache-type-v", "f32",
                "--flash-attn", "off"]

    def run_eval(self, plan: TaskPlan, method: str, extra: list[str],
                 selection: Path | None = None, n_predict: int | None = None,
                 name: str | None = None, on_selection_split: bool = False) -> Path:
        """A run on the first plan.limit test items, or with on_selection_split on the
        selection items. A test run is reported as answered by this study's engine: answers
        another engine gave are set aside and answered again first (one_engine)."""
        out = self.out / "runs" / f"{plan.name}-{(name or method).replace('+', '-')}"
        wanted, data, items = plan.limit, self.shared / plan.test, "test items"
        if on_selection_split:
            wanted, data, items = plan.selection_n, self.selection_file(plan), "selection items"

        def command() -> list[str]:
            # A run already started with a larger limit (an earlier stage, or a study
            # interrupted after an extension began) goes on to that limit: eval refuses to
            # shrink a run.
            limit = widest_limit(wanted, run_limit(out))
            args = ["eval"] + self.eval_args(plan, data, limit) + [
                "--method", method, "-o", str(out)] + extra
            if n_predict is not None:
                args[args.index("--n-predict") + 1] = str(n_predict)
            if selection is not None:
                args += ["--selection", str(selection)]
            return args

        if not on_selection_split:
            self.one_engine(out, command())
        args = command()
        limit = int(args[args.index("--limit") + 1])
        if (out / "summary.json").exists() and run_limit(out) == limit:
            return out
        if on_selection_split:
            self.check_reproduces(out, args, supersede=False)
        self.note_run(out.name, len(load_items(out)) if (out / "items.jsonl").exists() else 0)
        self.run(args, step=f"{plan.name}: {name or method} on {limit or 'all'} {items}")
        self.vouched.add(out.name)
        return out

    def note_run(self, run: str, items: int) -> None:
        """Records in the ledger that this machine takes the run on from `items` answers."""
        provenance.note_machine(self.out, self.machine)
        provenance.note_run(self.out, run, items, self.machine["machine"])

    def one_engine(self, run: Path, args: list[str]) -> None:
        """Sets aside the answers of a test run that another engine gave (supersede), so that
        every comparison the study reports is between runs of one arithmetic (study_provenance:
        builds for other instruction sets give other greedy answers): from the first stretch a
        machine of another recorded engine answered; and the whole run when its first answers
        come from a machine the ledger does not know and do not reproduce here
        (check_reproduces)."""
        if run.name in self.vouched or not (run / "items.jsonl").exists():
            return
        total = len(load_items(run))
        for machine, first, _ in provenance.segments(self.out, run.name, total):
            described = provenance.machine_record(self.out, machine)
            if machine == self.machine["machine"] or described is None:
                continue  # this engine, or one the ledger cannot tell (check_reproduces can)
            engine = described.get("engine") or None
            if engine != self.machine.get("engine"):
                self.supersede(run, first, f"answered on `{machine}` with libllama built for "
                               + (provenance.engine_isa(engine) if engine else
                                  "that machine itself (-march=native)"))
                break
        self.check_reproduces(run, args, supersede=True)

    def supersede(self, run: Path, first: int, why: str) -> None:
        """Moves a run's answers from item `first` on, with its configuration (and summary),
        into superseded/<run>@<first>, so that eval answers them again here; the results page
        compares them with their replacements. Written in an order that a kill at any point
        leaves recoverable: the copy first, then the run cut (a whole file), then the ledger;
        a run set aside from its first item leaves the run folder (its configuration may
        predate this kvsteer's) and the committed state (study_state.export_state)."""
        records = [json.loads(line) for line in whole_lines(run / "items.jsonl")]
        moved = [r for r in records if r["index"] >= first]
        kept = [r for r in records if r["index"] < first]
        root = self.out / provenance.SUPERSEDED
        name, k = f"{run.name}@{first}", 2
        while (root / name).exists():
            name, k = f"{run.name}@{first}-{k}", k + 1
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(run / "config.json", tmp / "config.json")
        if (run / "summary.json").exists():
            shutil.copyfile(run / "summary.json", tmp / "summary.json")
        (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in moved),
                                         encoding="utf-8")
        record = {"superseded": run.name, "from": first, "to": f"{provenance.SUPERSEDED}/{name}",
                  "machine": self.machine["machine"], "why": why,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(tmp / "superseded.json", record)
        os.replace(tmp, root / name)
        if kept:
            write_atomic(run / "items.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
            (run / "summary.json").unlink(missing_ok=True)
        else:
            shutil.rmtree(run)
        provenance.note_machine(self.out, self.machine)
        provenance.append(self.out, record)
        self.say(f"{run.name}: {len(moved)} answers from item {first} on set aside into "
                 f"{record['to']} ({why}); they are answered again with this study's engine")
        self.checkpoint()

    def check_reproduces(self, run: Path, args: list[str], supersede: bool) -> None:
        """Before the study goes on with a run that another process began, answers its first
        batch again in a scratch folder and records in the ledger (study_provenance) which
        records came out otherwise (REPRODUCED fields):
          - a run whose first answers an unrecorded machine gave, and the first run this process
            continues that another machine with this engine began: whether those answers are
            this engine's (machines with other builds of libllama compute otherwise:
            study_provenance);
          - a run whose configuration does not identify its vector file (made before eval
            recorded vector_file) and that names a vector, which may have been extracted again
            here after a machine was lost: eval cannot tell, the answers can.
        A run that a machine with this engine began and that does not reproduce stops the study:
        its vector or the code differs, or two processors compute one engine otherwise
        (study_provenance.machine_description errs towards telling kinds apart), and one run
        must not mix two. Otherwise, with `supersede` (test runs), the run's answers are set
        aside and answered again; without (the selection split's baseline, the sweeps'
        reference, answered with them), the difference is recorded and the run goes on. One
        batch costs a few minutes; each run is checked at most once per kind of machine."""
        if run.name in self.vouched or not (run / "items.jsonl").exists():
            return
        recorded = load_items(run)
        # The first batch: --parallel items, or all of a run smaller than that (the demo's).
        batch = min(self.parallel, run_limit(run) or self.parallel)
        first = sorted(i for i in recorded if i < batch)
        if not first:
            return
        try:
            identified = "vector_file" in json.loads((run / "config.json").read_text())
        except (OSError, ValueError):
            identified = False
        vector_unknown = "--vector" in args and not identified
        began = provenance.first_machine(self.out, run.name, len(recorded))
        same_machine = began == self.machine["machine"]
        same_engine = (began not in (None, provenance.UNRECORDED) and
                       provenance.machine_engine(self.out, began) == self.machine.get("engine"))
        if not vector_unknown and (same_machine or (same_engine and self.machine_checked)):
            return
        known: list[int] | None = None
        for r in provenance.read_ledger(self.out):
            if r.get("superseded") == run.name:
                known = None  # a check of answers since set aside
            elif r.get("check") == run.name and r["machine"] == self.machine["machine"]:
                known = r["differ"]
        scratch = self.out / "checks" / run.name
        if known is not None:
            # Answered again on this kind of machine by an earlier process: the result is known.
            differ = known
        else:
            self.ensure_vectors(args)
            shutil.rmtree(scratch, ignore_errors=True)
            again = list(args)
            again[again.index("-o") + 1] = str(scratch)
            again[again.index("--limit") + 1] = str(batch)
            self.run(again, step=f"{run.name}: answering its first {len(first)} items again "
                                 "before it goes on (does this machine and vector reproduce them?)")
            answered = load_items(scratch)
            differ = [i for i in first
                      if {k: answered.get(i, {}).get(k) for k in REPRODUCED} !=
                      {k: recorded[i].get(k) for k in REPRODUCED}]
            provenance.note_machine(self.out, self.machine)
            provenance.append(self.out, {"check": run.name, "machine": self.machine["machine"],
                                         "first": len(first), "differ": differ})
        if differ and (same_machine or same_engine):
            sys.exit(f"study_real: error: run {run.name} does not reproduce on the kind of machine "
                     f"that began it: items {', '.join(map(str, differ))} of its first "
                     f"{len(first)} are answered otherwise now (records: {run}/items.jsonl"
                     + (f" and {scratch}/items.jsonl" if scratch.exists() else
                        f", checked earlier: {self.out / provenance.LEDGER}")
                     + "): its vector or kvsteer differs from the one its "
                     "answers were made with (or two machines of one engine compute otherwise: "
                     f"see {self.out / provenance.LEDGER}); move the run folder aside to answer "
                     "it anew.")
        shutil.rmtree(scratch, ignore_errors=True)
        self.settle(run, differ, len(first), supersede)

    def settle(self, run: Path, differ: list[int], n: int, supersede: bool) -> None:
        """What a check of a run's first n answers decides (check_reproduces)."""
        self.vouched.add(run.name)
        self.machine_checked = True
        if not differ:
            self.say(f"{run.name}: its first {n} items reproduce here")
        elif supersede:
            self.supersede(run, 0, f"{len(differ)} of its first {n} answers came out otherwise "
                           f"on `{self.machine['machine']}` ({self.machine['cpu']})")
        else:
            self.say(f"{run.name}: {len(differ)} of its first {n} answers differ on this "
                     f"machine ({self.machine['cpu']}), which did not begin the run; it goes on, "
                     "and the results page lists the machines of its answers")

    def sweep(self, plan: TaskPlan, name: str, args: list[str], n_predict: int | None = None) -> dict:
        out = self.out / "selection" / plan.name / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        sel = self.selection_file(plan)
        full = ["sweep"] + self.eval_args(plan, sel, plan.selection_n) + args + ["-o", str(out)]
        if n_predict is not None:
            full[full.index("--n-predict") + 1] = str(n_predict)
        if not out.exists():
            journal = Path(str(out) + ".items.jsonl")
            done = sum(map(len, read_journal(journal)[1])) if journal.exists() else 0
            self.note_run(provenance.sweep_run(plan.name, name), done)
        self.run(full, done=out, step=f"{plan.name}: selection sweep '{name}'")
        return json.loads(out.read_text())


def is_sweep(path: Path) -> bool:
    """True for the JSON a finished `kvsteer sweep` writes."""
    try:
        return json.loads(path.read_text()).get("kind") == "kvsteer-sweep"
    except (OSError, ValueError, AttributeError):
        return False


def write_json(path: Path, value: dict) -> None:
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def run_limit(out: Path) -> int | None:
    """The --limit a run folder was last run with (eval extends a run to a larger limit)."""
    try:
        return int(json.loads((out / "config.json").read_text())["limit"])
    except (OSError, ValueError, KeyError):
        return None


def run_done(out: Path, limit: int) -> bool:
    """Whether a run folder holds a finished run of at least `limit` items (0: all)."""
    existing = run_limit(out)
    return ((out / "summary.json").exists() and existing is not None and
            widest_limit(limit, existing) == existing)


def widest_limit(wanted: int, existing: int | None) -> int:
    """The larger of two --limit values, where 0 means every item."""
    if existing is None:
        return wanted
    if wanted == 0 or existing == 0:
        return 0
    return max(wanted, existing)


def offset_args(offset: str | None) -> list[str]:
    return ["--offset", "none" if offset is None else offset]


def fewshot_map(shared: Path, task: str, n: int, k: int) -> str | None:
    """The reference's neighbour map when it covers (task, N, k); else None (lexical neighbours)."""
    path = shared / "data/paper_traces/fewshot_maps_from_results.json"
    maps = json.loads(path.read_text())
    for entry in maps.values():
        if (entry.get("task") == f"{task}-oai" and entry.get("n_contrastive_samples") == n and
                entry.get("num_fewshot_examples") == k):
            return str(path)
    return None


# -- selection splits ---------------------------------------------------------------------------

def make_selection(plan: TaskPlan, shared: Path, path: Path) -> None:
    """Writes the selection split of a task in its test-file format; no item is a test item or a
    trace row any extraction or few-shot prompt of the study can use:
      arc    ARC-Challenge Dev (the traces come from ARC train)
      csqa   CommonsenseQA train items whose question is not among the traces (all 7 310 rows)
      gsm8k  GSM8K train items whose question is not among the traces (all 6 347 rows)
      piqa   PIQA has no train questions here (only labels): trace rows from 400 on, which no
             extraction (N <= 300) or few-shot pool uses, rewritten as {goal, sol1, sol2} + labels
    The first `selection_n` items in file order (no shuffling)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = shared / "data"
    traces = [json.loads(line) for line in open(shared / plan.traces, encoding="utf-8") if line.strip()]
    n = plan.selection_n
    rows: list[str] = []
    labels: list[str] = []
    if plan.name == "arc":
        for line in open(data / "arc/ARC-Challenge/ARC-Challenge-Dev.jsonl", encoding="utf-8"):
            if line.strip():
                rows.append(line.rstrip("\n"))
    elif plan.name == "csqa":
        used = {t["query"].split("\n\nChoices:")[0].removeprefix("Question: ").strip() for t in traces}
        for line in open(data / "csqa/train_rand_split.jsonl", encoding="utf-8"):
            if line.strip() and json.loads(line)["question"]["stem"].strip() not in used:
                rows.append(line.rstrip("\n"))
    elif plan.name == "gsm8k":
        used = {t["query"].strip() for t in traces}
        for line in open(data / "gsm8k/train.jsonl", encoding="utf-8"):
            if line.strip() and json.loads(line)["question"].strip() not in used:
                rows.append(line.rstrip("\n"))
    elif plan.name == "piqa":
        for t in traces[400:]:
            goal, rest = t["question"].split("\n\nChoices:\nA: ", 1)
            sol1, sol2 = rest.split("\nB: ", 1)
            rows.append(json.dumps({"goal": goal, "sol1": sol1, "sol2": sol2}))
            labels.append("0" if t["solution"] == "A" else "1")
    else:
        raise ValueError(plan.name)
    if len(rows) < n:
        sys.exit(f"study_real: error: only {len(rows)} selection items for {plan.name}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(rows[:n]) + "\n", encoding="utf-8")
    if labels:
        lab = path.parent / (path.stem + "-labels.lst")
        lab.write_text("\n".join(labels[:n]) + "\n", encoding="utf-8")
    tmp.rename(path)


# -- choosing settings ---------------------------------------------------------------------------

def select_cache(study: Study, plan: TaskPlan, v: dict[str, Path]) -> dict:
    """Cache steering on the selection split: the c_v curve (both signs) with the paper's
    protocol, c_k at the paper's c_v, the other offset protocol with the vector read at the last
    prompt cell (as the paper) and at the cell that protocol edits."""
    paper_offset = plan.offset
    other_offset = "\n" if paper_offset is None else None
    # With the paper's protocol the edit lands on the cell the vector was read from when an
    # offset token follows (-1), and on the cell before it when none does (-2).
    aligned = "last" if paper_offset is not None else "second_last"
    misaligned = "second_last" if aligned == "last" else "last"
    # The reference the selection numbers are read against; the rule below does not use it.
    study.run_eval(plan, "baseline", [], name=SELECTION_BASELINE, on_selection_split=True)
    curve = study.sweep(plan, "cache-cv", ["--method", "cache", "--vector", str(v["last"]),
                                           "--ck-grid", "0", "--cv-grid",
                                           "-6,-2,1,2,4,6,8,10"] + offset_args(paper_offset))
    ck = study.sweep(plan, "cache-ck", ["--method", "cache", "--vector", str(v["last"]),
                                        "--ck-grid", "0.2,0.4", "--cv-grid",
                                        f"{plan.coef_v:g}"] + offset_args(paper_offset))
    other = {}
    for which in ("last", "second_last"):
        other[which] = study.sweep(plan, f"cache-offset-{'none' if other_offset is None else 'newline'}-{which}",
                                   ["--method", "cache", "--vector", str(v[which]), "--ck-grid", "0",
                                    "--cv-grid", f"{plan.coef_v:g}"] + offset_args(other_offset))
    candidates = []
    for sweep, vector, offset in ((curve, "last", paper_offset), (ck, "last", paper_offset),
                                  (other["last"], "last", other_offset),
                                  (other["second_last"], "second_last", other_offset)):
        for s in sweep["settings"]:
            candidates.append({
                "setting": {"c_k": s["c_k"], "c_v": s["c_v"], "offset": offset,
                            "vector_cell": vector},
                "accuracy": s["accuracy"], "ci95": s["ci95"], "reasoning_rate": s["reasoning_rate"],
                "mean_tokens": s["mean_tokens"]})
    paper = paper_setting(plan)
    chosen = choose(candidates, paper)
    return {"method": "cache", "rule": choose.__doc__.strip(), "paper_setting": paper,
            "aligned_cell_with_paper_protocol": aligned, "misaligned_cell": misaligned,
            "candidates": candidates, "chosen": chosen["setting"]}


def select_caa(study: Study, plan: TaskPlan) -> dict:
    """Activation steering on the selection split: the paper's SmolLM2 layer for the task and
    shallower and deeper blocks, at the paper's coefficient and at 1 (method.md §3.5: N 200, k 5,
    512 new tokens)."""
    layers = sorted({8, plan.caa_layer, 20})
    sweep = study.sweep(plan, "caa", ["--method", "caa", "--pairs", "200", "--shots", "5",
                                      "--caa-layers", ",".join(map(str, layers)),
                                      "--caa-coefs", f"1,{plan.caa_coef:g}"] + study.caa_cache,
                        n_predict=plan.caa_n_predict)
    candidates = [{"setting": {"layer": s["layer"], "c": s["c"]}, "accuracy": s["accuracy"],
                   "ci95": s["ci95"], "reasoning_rate": s["reasoning_rate"],
                   "mean_tokens": s["mean_tokens"]} for s in sweep["settings"]]
    paper = {"layer": plan.caa_layer, "c": plan.caa_coef}
    chosen = choose(candidates, paper)
    return {"method": "caa", "rule": choose.__doc__.strip(), "paper_setting": paper,
            "candidates": candidates, "chosen": chosen["setting"]}


def write_selection(study: Study, plan: TaskPlan, record: dict) -> Path:
    record = {"split": str(study.selection_file(plan).relative_to(study.out)),
              "split_rule": make_selection.__doc__.strip(), "n_items": plan.selection_n,
              "n_predict": study.n_predict, **record}
    path = study.out / "selection" / plan.name / f"chosen-{record['method']}.json"
    write_json(path, record)
    return path


# -- the study -------------------------------------------------------------------------------------

def test_runs(study: Study, plan: TaskPlan) -> list[tuple[str, Callable[[], None]]]:
    """The task's test runs, every method, in the order stage 2 answers them: the study's
    question (baseline, the paper's cache setting) first, then each setting chosen on the
    selection split, its sweeps run (once, the first time) just before its first test run.
    Each is a run's name and the step that answers it up to plan.limit, read when it runs."""
    v = study.vectors(plan)
    chosen: dict[str, tuple[dict, Path]] = {}

    selectors: dict[str, tuple[str, Callable[[], dict]]] = {
        "cache": ("cache", lambda: select_cache(study, plan, v)),
        "caa": ("activation-steering", lambda: select_caa(study, plan)),
    }

    def selected(method: str) -> tuple[dict, Path]:
        if method not in chosen:
            what, select = selectors[method]
            sel = select()
            chosen[method] = sel, write_selection(study, plan, sel)
            study.say(f"{plan.name}: chosen {what} setting on the selection split: "
                      f"{sel['chosen']}")
        return chosen[method]

    def cache() -> None:
        sel, record = selected("cache")
        ch = sel["chosen"]
        study.run_eval(plan, "cache", pairs(plan) + [
            "--vector", str(v[ch["vector_cell"]]), "--ck", f"{ch['c_k']:g}", "--cv",
            f"{ch['c_v']:g}"] + offset_args(ch["offset"]), selection=record)

    def caa() -> None:
        sel, record = selected("caa")
        study.run_eval(plan, "caa", caa_args(study, sel["chosen"]), selection=record,
                       n_predict=plan.caa_n_predict)

    return [
        ("baseline", lambda: study.run_eval(plan, "baseline", [])),
        ("cache-paper", lambda: cache_paper(study, plan, v)),
        ("cache", cache),
        ("caa", caa),
        ("caa-paper", lambda: caa_paper(study, plan, selected("caa")[0])),
        ("cot", lambda: study.run_eval(plan, "cot", [])),
        ("cache+cot", lambda: study.run_eval(plan, "cache+cot", pairs(plan, cot=True) + [
            "--vector", str(v["cot"]), "--cv", f"{plan.cot_coef_v:g}"] +
            offset_args(plan.cot_offset))),
        ("fewshot", lambda: study.run_eval(plan, "fewshot", fewshot(plan))),
    ]


# Stage 3's order: method by method across the tasks, the study's question first, so that a
# study stopped partway (stage 3 is days on 2 cores) has whole test sets for the same methods
# on every task rather than every method on some tasks. Fixed before any stage-3 answer.
WHOLE_TEST_ORDER = ("baseline", "cache-paper", "cache", "caa", "caa-paper", "cot", "cache+cot",
                    "fewshot")


def run_full(study: Study, plans: list[TaskPlan]) -> None:
    """The full mode's three stages (module doc); every step is skipped or resumed when its
    output exists, and eval keeps a run's answered items when a later stage extends it.
    QUESTION_PASS and FIRST_PASS are multiples of --parallel: an extension's batches are then
    the ones an uninterrupted run would have decoded."""
    ordered = sorted(plans, key=lambda p: QUESTION_ORDER.index(p.name))
    # Every baseline first: minutes each and resumable item by item, while a vector is one
    # uninterrupted pass of 30-90 minutes that a machine taken back loses whole.
    for plan in ordered:
        plan.limit = QUESTION_PASS
        study.run_eval(plan, "baseline", [])
    for plan in ordered:
        # A question answered in an earlier session (restored runs) needs no vector yet.
        if not run_done(study.out / "runs" / f"{plan.name}-cache-paper", plan.limit):
            cache_paper(study, plan, study.vectors(plan, cot=False))
    for plan in plans:
        diagnose(study, plan, study.vectors(plan), 30)
        plan.limit = FIRST_PASS
        for _, step in test_runs(study, plan):
            step()
    for plan in plans:
        plan.limit = 0
    steps = {plan.name: dict(test_runs(study, plan)) for plan in plans}
    for task, runs in steps.items():
        if set(runs) != set(WHOLE_TEST_ORDER):
            raise RuntimeError(f"{task}: stage 3 would not extend {sorted(runs)} in the order "
                               f"{WHOLE_TEST_ORDER}")
    for name in WHOLE_TEST_ORDER:
        for plan in plans:
            steps[plan.name][name]()


def caa_args(study: Study, setting: dict) -> list[str]:
    """An activation-steering run's flags (method.md §3.5: N 200, k 5) for {layer, c}."""
    return ["--pairs", "200", "--shots", "5", "--caa-layer", str(setting["layer"]), "--caa-c",
            f"{setting['c']:g}"] + study.caa_cache


def paper_record(study: Study, plan: TaskPlan, method: str, setting: dict, why: str) -> Path:
    """Writes selection/<task>/paper-<method>.json, the record a paper-setting test run names
    with --selection (its config holds it, so its text must not change between sessions)."""
    record = study.out / "selection" / plan.name / f"paper-{method}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"method": method, "setting": setting, "why": why})
    return record


def caa_paper(study: Study, plan: TaskPlan, caa_sel: dict) -> None:
    """The plan's paper-derived activation setting (the paper's SmolLM2 layer and coefficient,
    fixed before the study) on test beside the selected one, as cache steering's paper setting
    runs beside its selected one: the selection rule picks by accuracy, which on this model is
    noise, and may pick a setting that does not induce the mode the method is meant to."""
    paper = caa_sel["paper_setting"]
    if paper == caa_sel["chosen"]:
        return
    record = paper_record(study, plan, "caa", paper,
                          "the plan's activation setting from the paper's SmolLM2 row "
                          "(method.md §3.5), run on test beside the setting chosen on the "
                          "selection split; not tuned")
    study.run_eval(plan, "caa", caa_args(study, paper), selection=record,
                   n_predict=plan.caa_n_predict, name="caa-paper")


def paper_setting(plan: TaskPlan) -> dict:
    """The paper's published SmolLM2 cache-steering setting for the task (method.md §3.5)."""
    return {"c_k": 0.0, "c_v": plan.coef_v, "offset": plan.offset, "vector_cell": "last"}


def cache_paper(study: Study, plan: TaskPlan, v: dict[str, Path]) -> None:
    """The study's first question on test items, beside the baseline: does the paper's
    published edit induce reasoning in this model as the paper reports for its SmolLM2 rows?
    The paper's setting was fixed before the study and is not tuned on anything, so it runs on
    test whatever the selection split later chooses."""
    paper = paper_setting(plan)
    record = paper_record(study, plan, "cache", paper,
                          "the paper's published SmolLM2 setting for this task (method.md §3.5), "
                          "run on test beside the setting chosen on the selection split; not tuned")
    study.run_eval(plan, "cache", pairs(plan) + ["--vector", str(v["last"]), "--ck",
                                                 f"{paper['c_k']:g}", "--cv", f"{paper['c_v']:g}"] +
                   offset_args(paper["offset"]), selection=record, name="cache-paper")


def fewshot(plan: TaskPlan) -> list[str]:
    """Few-shot CoT (not in the paper): the k most similar of the first N trace rows."""
    return ["--pairs", str(plan.n_pairs), "--shots", str(plan.fewshot_shots or plan.shots)]


def pairs(plan: TaskPlan, cot: bool = False) -> list[str]:
    """--pairs/--shots of a run, so that its configuration names the vector's extraction."""
    n, k = (plan.cot_n_pairs, plan.cot_shots) if cot else (plan.n_pairs, plan.shots)
    return ["--pairs", str(n), "--shots", str(k)]


def run_task_demo(study: Study, plan: TaskPlan) -> None:
    v = study.vectors(plan)
    study.run_eval(plan, "baseline", [])
    study.run_eval(plan, "cot", [])
    study.run_eval(plan, "fewshot", fewshot(plan))
    study.run_eval(plan, "caa", pairs(plan) + ["--caa-layer", str(plan.caa_layer), "--caa-c",
                                               f"{plan.caa_coef:g}"])
    study.run_eval(plan, "cache", pairs(plan) + ["--vector", str(v["last"]), "--ck", "0", "--cv",
                                                 f"{plan.coef_v:g}"] + offset_args(plan.offset))
    study.run_eval(plan, "cache+cot", pairs(plan, cot=True) + [
        "--vector", str(v["cot"]), "--cv", f"{plan.cot_coef_v:g}"] + offset_args(plan.cot_offset))


def diagnose(study: Study, plan: TaskPlan, v: dict[str, Path], limit: int,
             detail: bool = True) -> None:
    out = study.out / "diagnose" / f"{plan.name}.json"
    txt = out.with_suffix(".txt")
    out.parent.mkdir(exist_ok=True)
    if out.exists() and txt.exists():
        return
    data = study.selection_file(plan) if study.mode == "full" else study.shared / plan.test
    text = study.run(["diagnose"] + study.base() + [
        "--task", plan.name, "--data", str(data), "--limit", str(limit), "--vector",
        str(v["last"]), "--ck", "0", "--cv", f"{plan.coef_v:g}", "-o", str(out)] +
        (["--scales", "4,16", "--per-layer"] if detail else []) + offset_args(plan.offset),
        step=f"{plan.name}: diagnose (paper setting, {limit} selection items)")
    write_atomic(txt, text)


def speed(study: Study) -> None:
    out = study.out / "bench.json"
    if not out.exists():
        text = study.run(["bench", "-m", study.model, "-t", str(study.threads), "--contexts",
                          "100", "1000", "--repeats", "10", "--n-decode", "64"],
                         step="measuring prefill and decode speed (kvsteer bench)")
        write_atomic(out, text)
    b = json.loads(out.read_text())
    pre = [e["prefill_tok_per_s"] for e in b["edit"]["one-cell"]]
    dec = b["decode_tok_per_s"]
    print(f"speed on this machine ({study.threads} threads): prefill "
          f"{min(pre):.0f}-{max(pre):.0f} tok/s, decode {dec['unsteered']:.1f} tok/s unsteered, "
          f"{dec['after_edit']:.1f} tok/s after an edit (one sequence)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["full", "demo"])
    ap.add_argument("--kvsteer", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--shared", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", default="", help="comma-separated subset, in this order")
    ap.add_argument("--state", type=Path,
                    help="a committed state to go on from (scripts/study_state.py): what --out "
                         "lacks of it is restored first, and it is written back as the study "
                         "goes (every step, and every CHECKPOINT_S while one runs)")
    ap.add_argument("--title",
                    help="the title of the report and of the results page written into --state "
                         "(default: kvsteer on SmolLM2-135M-Instruct (<mode>))")
    a = ap.parse_args()
    study = Study(a.kvsteer, a.model, a.shared, a.out, a.threads, a.mode, state=a.state,
                  title=a.title or f"kvsteer on SmolLM2-135M-Instruct ({a.mode})")
    if a.state is not None:
        restored = restore_state(a.state, a.out)
        if restored:
            study.say(f"restored from {a.state}: " + "; ".join(restored))
    plans = full_plans() if a.mode == "full" else demo_plans()
    if a.mode == "demo":
        study.n_predict = 128
        study.parallel = 20
        for p in plans:
            p.caa_n_predict = study.n_predict
    if a.tasks:
        wanted = a.tasks.split(",")
        plans = [p for name in wanted for p in plans if p.name == name]
    print(f"== kvsteer study on {Path(a.model).name}, mode {a.mode}")
    if a.mode == "demo":
        print("   reduced from the paper: " + "; ".join(
            f"{p.name} first {p.limit} test items" for p in plans) +
            f"; N = {plans[0].n_pairs} contrastive pairs, k = {plans[0].shots} shots; "
            f"{study.n_predict} new tokens (paper: 768); few-shot CoT with "
            f"{plans[0].fewshot_shots} example{'s' if plans[0].fewshot_shots != 1 else ''}; "
            "paper's SmolLM2 settings, nothing tuned")
    speed(study)
    if a.mode == "full":
        run_full(study, plans)
    else:
        for plan in plans:
            run_task_demo(study, plan)
            diagnose(study, plan, study.vectors(plan), 8, detail=False)
    study.checkpoint(strict=True)
    study.say("done")


if __name__ == "__main__":
    main()
