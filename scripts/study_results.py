#!/usr/bin/env python3
"""Tables of a real-model study (scripts/study_real.py): accuracy with 95 % Wilson intervals, the
paired difference to the baseline on the same items (exact McNemar test), reasoning rate and answer
lengths per task and method; the selection-split curves; the diagnosis. Prints them and, with
--results, writes what may be committed: the study's resumable state without any text
(scripts/study_state.py: run configurations, summaries, per-item records with index, id, extracted
answer, correct, tokens, steps and whether the response opened with an option letter; sweeps and
running sweep journals, selection records, diagnoses, vectors), plus a markdown page with the
tables.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from collections import Counter
from pathlib import Path

import study_provenance as provenance
from study_state import CALIBRATION, answer_first, export_state, whole_lines, write_atomic

METHODS = ["baseline", "cot", "fewshot", "caa", "caa-paper", "cache", "cache-paper", "cache+cot"]
LABELS = {"baseline": "baseline", "cot": "CoT prompt", "fewshot": "few-shot CoT",
          "caa": "activation steering", "caa-paper": "activation steering, paper's setting",
          "cache": "cache steering",
          "cache-paper": "cache steering, paper's setting", "cache+cot": "cache steering + CoT"}
TASKS = ["arc", "gsm8k", "csqa", "piqa"]
MULTIPLE_CHOICE = {"arc", "csqa", "piqa"}
SELECTION_BASELINE = "selection-baseline"  # run name suffix of the baseline on the selection split
# The fields of an item record that a reproduction must match (study_real's check_reproduces,
# calibration_lines): the answer, its scoring, and its length to the token.
REPRODUCED = ("extracted", "correct", "n_tokens", "n_steps", "reasoning", "forced")


def shape_columns(task: str, run: Path, items: dict[int, dict]) -> str:
    """Answer-first share and the commonest answer with its share (multiple choice only), and the
    share of answers cut at the token limit. A weak model's accuracy on multiple choice is mostly
    its letter preference times the gold letters' distribution: the commonest answer says so."""
    n_predict = json.loads((run / "config.json").read_text()).get("n_predict", 0)
    n = max(len(items), 1)
    capped = 100 * sum(1 for r in items.values() if n_predict and r["n_tokens"] >= n_predict) / n
    first = commonest = ""
    if task in MULTIPLE_CHOICE:
        first = f"{100 * sum(1 for r in items.values() if answer_first(r)) / n:.0f}"
        counts = Counter(r.get("extracted") or "none" for r in items.values())
        if counts:
            letter, k = counts.most_common(1)[0]
            commonest = f"{letter} {100 * k / n:.0f}"
    return f"{first} | {commonest} | {capped:.0f}"


def constant_answers(task: str, out: Path) -> str:
    """What answering one letter on every item scores on the baseline's items: the reference a
    letter-biased model's accuracy is read against."""
    run = out / "runs" / f"{task}-baseline"
    if task not in MULTIPLE_CHOICE or not (run / "summary.json").exists():
        return ""
    items = load_items(run)
    gold = Counter(r["target"] for r in items.values() if "target" in r)
    if not gold:
        return ""
    n = len(items)
    return (f"Always the same letter on these {n} items: " + ", ".join(
        f"{letter} {100 * k / n:.1f} %" for letter, k in sorted(gold.items())) + ".")


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test: b and c are the discordant counts."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_diff(a: list[bool], b: list[bool]) -> tuple[float, float, float, float]:
    """Accuracy difference b - a in points with a 95 % interval (paired, normal approximation)
    and the exact McNemar p-value."""
    n = len(a)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    d = (only_b - only_a) / n
    var = ((only_b + only_a) / n - d * d) / n
    half = 1.959963984540054 * math.sqrt(max(var, 0.0))
    return 100 * d, 100 * (d - half), 100 * (d + half), mcnemar_p(only_b, only_a)


def load_items(run: Path) -> dict[int, dict]:
    """A run's item records by index (a torn last line of a running run is left out)."""
    return {r["index"]: r for r in map(json.loads, whole_lines(run / "items.jsonl"))}


def read_journal(journal: Path, n_settings: int | None = None) -> tuple[dict, list[list[dict]]]:
    """A sweep journal (kvsteer sweep's <out>.items.jsonl): its header and its item records per
    setting (n_settings: the grid's size, read from the header when not given)."""
    lines = whole_lines(journal)
    head = json.loads(lines[0])
    per: list[list[dict]] = [[] for _ in range(n_settings or len(head["grid"]))]
    for r in map(json.loads, lines[1:]):
        if 0 <= r["setting"] < len(per):
            per[r["setting"]].append(r)
    return head, per


def method_table(out: Path, task: str) -> list[str]:
    rows: list[str] = []
    base_run = out / "runs" / f"{task}-baseline"
    base = load_items(base_run) if (base_run / "summary.json").exists() else None
    for m in METHODS:
        run = out / "runs" / f"{task}-{m.replace('+', '-')}"
        if not (run / "summary.json").exists():
            partial = run / "items.jsonl"
            if partial.exists():
                n = sum(1 for line in open(partial, encoding="utf-8") if line.strip())
                rows.append(f"| {LABELS[m]} | running: {n} items done | | | | | | | |")
            continue
        s = json.loads((run / "summary.json").read_text())
        label = s.get("label", m)
        diff = ""
        items = load_items(run)
        if base is not None and m != "baseline":
            common = sorted(set(items) & set(base))
            d, lo, hi, p = paired_diff([base[i]["correct"] for i in common],
                                       [items[i]["correct"] for i in common])
            diff = f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], p = {p:.2g}"
        rows.append(f"| {label} | {s['accuracy']:.1f} [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}] | "
                    f"{diff} | {s['reasoning_rate']:.1f} | {s['mean_tokens']:.0f} / "
                    f"{s['median_tokens']:.0f} | {shape_columns(task, run, items)} | {s['n']} |")
    return rows


def selection_baseline_line(out: Path, task: str) -> list[str]:
    """The baseline on the selection items: what the sweeps' numbers are read against."""
    run = out / "runs" / f"{task}-{SELECTION_BASELINE}"
    if (run / "summary.json").exists():
        s = json.loads((run / "summary.json").read_text())
        return [f"- baseline ({s['n']} selection items, the sweeps' reference): "
                f"{s['accuracy']:.1f} % [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}] / reasoning "
                f"{s['reasoning_rate']:.0f} % / {s['mean_tokens']:.0f} tok"]
    if (run / "items.jsonl").exists():
        n = sum(1 for line in open(run / "items.jsonl", encoding="utf-8") if line.strip())
        return [f"- baseline on the selection items (**running**: {n} items done)"]
    return []


# -- choosing settings ------------------------------------------------------------------------------

def choose(candidates: list[dict], paper: dict) -> dict:
    """The rule, fixed before any test item is run: the candidate with the highest selection
    accuracy; ties go to the paper's setting when it is among them, else to the candidate listed
    first (candidates are listed from the paper's setting outwards)."""
    best = max(c["accuracy"] for c in candidates)
    tied = [c for c in candidates if c["accuracy"] == best]
    for c in tied:
        if all(c["setting"].get(k) == v for k, v in paper.items()):
            return c
    return tied[0]


def candidate_answers(out: Path, task: str, candidates: list[dict]) -> list[dict[str, bool]] | None:
    """Each candidate of a selection record (chosen-<method>.json) answered item by item, from the
    sweep journals of the task: a cache candidate is found by its offset token (none or one),
    the cell its vector was read at and (c_k, c_v); an activation candidate by (layer, c). None
    when a candidate has no journal here (sweeps made before journals were kept)."""
    found: dict[str, dict[str, bool]] = {}
    for journal in sorted((out / "selection" / task).glob("*.json.items.jsonl")):
        head, per = read_journal(journal)
        config = head.get("config", {})
        offset = config.get("steering", {}).get("offset_token")
        cell = "second_last" if str(config.get("vector", "")).endswith("-second-last.gguf") else "last"
        for grid, rows in zip(head["grid"], per):
            if "layer" in grid:
                key = json.dumps({"layer": grid["layer"], "c": float(grid["c"])})
            else:
                key = json.dumps({"c_k": float(grid["c_k"]), "c_v": float(grid["c_v"]),
                                  "offset": offset is not None, "vector_cell": cell})
            found[key] = {item_key(r): bool(r["correct"]) for r in rows}
    answers = []
    for c in candidates:
        s = c["setting"]
        key = (json.dumps({"layer": s["layer"], "c": float(s["c"])}) if "layer" in s else
               json.dumps({"c_k": float(s["c_k"]), "c_v": float(s["c_v"]),
                           "offset": s["offset"] is not None, "vector_cell": s["vector_cell"]}))
        if key not in found:
            return None
        answers.append(found[key])
    return answers


def selection_stability(out: Path, record: dict, task: str, resamples: int = 2000) -> str:
    """How firmly the selection split chose: the rule (choose) applied to bootstrap resamples of
    the selection items, every candidate scored on the same resample; the share of resamples
    each setting wins. Empty when the candidates' answers are not all here."""
    candidates = record["candidates"]
    answers = candidate_answers(out, task, candidates)
    if not answers:
        return ""
    items = sorted(set.intersection(*(set(a) for a in answers)))
    if not items:
        return ""
    rng = random.Random(0)  # the same figures on every page
    wins: Counter = Counter()
    for _ in range(resamples):
        sample = [rng.choice(items) for _ in items]
        scored = [{"setting": c["setting"], "accuracy": sum(a[k] for k in sample)}
                  for c, a in zip(candidates, answers)]
        wins[json.dumps(choose(scored, record["paper_setting"])["setting"])] += 1
    chosen = json.dumps(record["chosen"])
    paper = json.dumps(next((c["setting"] for c in candidates
                             if all(c["setting"].get(k) == v
                                    for k, v in record["paper_setting"].items())), None))
    top = ", ".join(f"`{s}` {100 * n / resamples:.0f} %" for s, n in wins.most_common(3))
    return (f"  selection stability ({resamples} bootstrap resamples of the {len(items)} selection "
            f"items, the rule applied to each): the chosen setting wins {100 * wins[chosen] / resamples:.0f} %, "
            f"the paper's {100 * wins[paper] / resamples:.0f} %; most often: {top}")


def sweep_lines(out: Path, task: str) -> list[str]:
    lines = selection_baseline_line(out, task)
    for f in sorted((out / "selection" / task).glob("*.json")) if (out / "selection" / task).exists() else []:
        j = json.loads(f.read_text())
        if j.get("kind") != "kvsteer-sweep":
            continue
        cfg = j["config"]
        offset = cfg.get("steering", {}).get("offset_token")
        head = f"- `{f.stem}` ({j['n_items']} selection items"
        if j["method"] != "caa":
            head += f", offset token {offset if offset is not None else 'none'}"
        paired = paired_with_selection_baseline(out, task, f.with_name(f.name + ".items.jsonl"),
                                                len(j["settings"]))
        lines.append(head + "): " + "; ".join(
            (f"L{s['layer']} c {s['c']:g}" if "layer" in s else f"c_k {s['c_k']:g} c_v {s['c_v']:g}") +
            f": {s['accuracy']:.1f} % / reasoning {s['reasoning_rate']:.0f} % / "
            f"{s['mean_tokens']:.0f} tok{vs}" for s, vs in zip(j["settings"], paired)))
    for f in sorted((out / "selection" / task).glob("*.json.items.jsonl")) if (out / "selection" / task).exists() else []:
        if not f.with_name(f.name[: -len(".items.jsonl")]).exists():
            lines.append(partial_sweep_line(f))
    # Journals moved into a subfolder were superseded (e.g. made with another engine) and are
    # kept for the record; the subfolder's name says why.
    for f in sorted((out / "selection" / task).glob("*/*.json.items.jsonl")) if (out / "selection" / task).exists() else []:
        lines.append(partial_sweep_line(f, f"superseded, `{f.parent.name}`"))
    for f in sorted((out / "selection" / task).glob("chosen-*.json")) if (out / "selection" / task).exists() else []:
        j = json.loads(f.read_text())
        lines.append(f"- chosen for {j['method']}: `{json.dumps(j['chosen'])}` "
                     f"(paper: `{json.dumps(j['paper_setting'])}`)")
        stability = selection_stability(out, j, task)
        if stability:
            lines.append(stability)
    return lines


def item_key(record: dict) -> str:
    """An item's identity across runs and sweeps: its dataset id where the record has one."""
    return str(record.get("id", record["index"]))


def paired_with_selection_baseline(out: Path, task: str, journal: Path,
                                   n_settings: int) -> list[str]:
    """Per setting of a finished sweep, its paired accuracy difference to the baseline on the same
    selection items (" (vs baseline +4.7 [-7.1, +16.5], p 0.61)"), from the sweep's journal; empty
    strings where the journal or the finished baseline is missing."""
    base_run = out / "runs" / f"{task}-{SELECTION_BASELINE}"
    if not journal.exists() or not (base_run / "summary.json").exists():
        return [""] * n_settings
    base = {item_key(r): r["correct"] for r in load_items(base_run).values()}
    texts = []
    for rows in read_journal(journal, n_settings)[1]:
        answers = {item_key(r): r["correct"] for r in rows}
        common = sorted(set(answers) & set(base))
        if not common:
            texts.append("")
            continue
        d, lo, hi, p = paired_diff([base[k] for k in common], [answers[k] for k in common])
        items = "" if len(common) == len(answers) == len(base) else f", {len(common)} items"
        texts.append(f" (vs baseline {d:+.1f} [{lo:+.1f}, {hi:+.1f}], p {p:.2g}{items})")
    return texts


def partial_sweep_line(journal: Path, state: str = "**running**") -> str:
    """A sweep still running (or superseded), from its journal (kvsteer sweep's
    <out>.items.jsonl)."""
    head, per = read_journal(journal)
    grid = head["grid"]
    name = journal.name[: -len(".json.items.jsonl")]
    parts = []
    for g, rows in zip(grid, per):
        label = f"L{g['layer']} c {g['c']:g}" if "layer" in g else f"c_k {g['c_k']:g} c_v {g['c_v']:g}"
        if not rows:
            parts.append(f"{label}: not run yet")
            continue
        n = len(rows)
        acc = 100 * sum(r["correct"] for r in rows) / n
        rr = 100 * sum(r["reasoning"] for r in rows) / n
        tok = sum(r["n_tokens"] for r in rows) / n
        parts.append(f"{label}: {acc:.1f} % / reasoning {rr:.0f} % / {tok:.0f} tok (n {n})")
    return f"- `{name}` ({state}, partial): " + "; ".join(parts)


def diagnosis_lines(out: Path, task: str) -> list[str]:
    f = out / "diagnose" / f"{task}.txt"
    return f.read_text().rstrip("\n").splitlines() if f.exists() else []


def study_state(out: Path) -> list[str]:
    """Where the study stands, from its log: the steps finished and the one running (a study
    that takes days is committed as it goes)."""
    log = out / "study.log"
    if not log.exists():
        return []
    steps = [line[2:].strip() for line in log.read_text(encoding="utf-8").splitlines()
             if line.startswith("# [") and "] restored from " not in line]
    if not steps:
        return []
    if steps[-1].endswith("] done"):
        return ["State: the study has run to its end.", ""]
    seen: list[str] = []
    for step in steps:  # a resumed study logs again only the steps it still had to run
        text = step.split("] ", 1)[-1]
        if text in seen:
            seen.remove(text)
        seen.append(text)
    return ["State: **in progress** (resumable: `make study-real` continues it). Steps started, "
            "in order; the last is running or was interrupted:", ""] + [
            f"{i + 1}. {t}" for i, t in enumerate(seen)] + [""]


def engine_lines(out: Path) -> list[str]:
    """How the study's sweeps and runs held the cache (config "engine"; absent: the library's
    defaults), so that results of different engines are not read as one (docs/real-model.md)."""
    seen: dict[str, list[str]] = {}
    configs = [(f, json.loads(f.read_text())) for f in sorted(out.glob("runs/*/config.json"))]
    for f in sorted(out.glob("selection/*/*.json.items.jsonl")):
        with open(f, encoding="utf-8") as journal:
            configs.append((f, json.loads(journal.readline())["config"]))
    for f, config in configs:
        engine = config.get("engine")
        key = ("F16 cache, flash attention auto, one unified stream (the defaults)" if engine is None
               else f"{engine['cache_type_k'].upper()} cache, flash attention {engine['flash_attn']}, "
                    f"{engine['kv_streams']} streams")
        seen.setdefault(key, []).append(str(f.relative_to(out)).split("/config.json")[0])
    if not seen:
        return []
    return ["Engine: " + "; ".join(f"{k} ({len(v)} runs/sweeps)" for k, v in seen.items()) + ".", ""]


def machine_of_first(out: Path, run: str, n: int) -> str:
    """Which machine answered a run's first n items, as the ledger knows it."""
    parts = provenance.stretches(out, run, len(load_items(out / "runs" / run)))
    machine = parts[0][0] if parts and parts[0][1] >= n else None
    if machine is None:
        return "several" if parts else "not recorded"
    return "not recorded" if machine == provenance.UNRECORDED else f"`{machine}`"


def compared_cells(first: dict[int, dict], again: dict[int, dict], common: list[int]) -> str:
    """Two answerings of the same items side by side: identical records, same answer, both
    accuracies, the paired difference with its McNemar p, reasoning and length."""
    n = len(common)
    a = [bool(first[i]["correct"]) for i in common]
    b = [bool(again[i]["correct"]) for i in common]
    identical = sum(all(first[i].get(k) == again[i].get(k) for k in REPRODUCED) for i in common)
    same = sum(first[i].get("extracted") == again[i].get("extracted") for i in common)
    d, lo, hi, p = paired_diff(a, b)
    reasoning = [100 * sum(bool(x[i].get("reasoning")) for i in common) / n for x in (first, again)]
    tokens = [sum(x[i]["n_tokens"] for i in common) / n for x in (first, again)]
    return (f"{identical} | {same} | {100 * sum(a) / n:.1f} / {100 * sum(b) / n:.1f} | "
            f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], p = {p:.2g} | "
            f"{reasoning[0]:.0f} / {reasoning[1]:.0f} | {tokens[0]:.0f} / {tokens[1]:.0f} |")


def compared_table(intro: str, columns: str, names: tuple[str, str], rows: list[str]) -> list[str]:
    """A table of compared_cells rows after four columns of their own (`columns`); `names`: what
    the two answerings are called in the header. Nothing without rows."""
    if not rows:
        return []
    a, b = names
    header = (f"{columns}identical records | same answer | accuracy % {a} / {b} | {b} - {a}, "
              "points [95 % CI], McNemar p | reasoning % | mean tokens |")
    return [intro, "", header, "|---|---|---|---|---|---|---|---|---|---|"] + rows + [""]


def answers_when_calibrated(out: Path, run: str, machine: str,
                            items: set[int]) -> tuple[dict[int, dict], list[str]]:
    """The answers of `run` on `items` that its calibration on `machine` was made against: the
    run as it is, with what was set aside of those items after the calibration (study_real's
    supersede) put back, the oldest set-aside last so that its answers win; and those
    set-asides' folders. A calibration the ledger does not know was made before any set-aside."""
    ledger = provenance.read_ledger(out)
    made = max((i for i, r in enumerate(ledger)
                if r.get("calibrated") == run and r.get("machine") == machine), default=-1)

    def of_items(run_folder: Path) -> dict[int, dict]:
        if not (run_folder / "items.jsonl").exists():
            return {}
        return {i: a for i, a in load_items(run_folder).items() if i in items}

    answers = of_items(out / "runs" / run)
    aside = []
    for r in reversed([r for r in ledger[made + 1:] if r.get("superseded") == run]):
        put_back = of_items(out / r["to"])
        if put_back:
            answers.update(put_back)
            aside.insert(0, r["to"])
    return answers, aside


def calibration_lines(out: Path) -> list[str]:
    """Each calibration (scripts/study_calibrate.py: a run's first items answered again on another
    machine) beside the run on the same items: the noise floor of a paired comparison between two
    runs answered on different machines."""
    rows: list[str] = []
    for cal in sorted((out / CALIBRATION).glob("*@*/")) if (out / CALIBRATION).exists() else []:
        name, machine = cal.name.rsplit("@", 1)
        if not (cal / "items.jsonl").exists():
            continue
        again = load_items(cal)
        first, aside = answers_when_calibrated(out, name, machine, set(again))
        common = sorted(set(first) & set(again))
        if not common:
            continue
        made = (f"set aside since: `{'`, `'.join(aside)}`" if aside
                else machine_of_first(out, name, len(common)))
        rows.append(f"| {name} | {len(common)} | {made} | `{machine}` | "
                    + compared_cells(first, again, common))
    return compared_table(
        "Machines compared (`scripts/study_calibrate.py`: a run's first items answered again on "
        "another machine with the run's own configuration; a paired difference between two runs "
        "answered on different machines is read against these):",
        "| run | items | first answered on | again on | ", ("first", "again"), rows)


def superseded_lines(out: Path) -> list[str]:
    """The answers a study set aside to answer them again with its engine (study_real's
    supersede), each beside the answers that replaced it on the items both have: what mixing
    the two engines would have put into the comparisons."""
    root = out / provenance.SUPERSEDED
    rows: list[str] = []
    for folder in sorted(root.glob("*@*/")) if root.exists() else []:
        if folder.name.startswith(".") or not (folder / "superseded.json").exists():
            continue
        record = json.loads((folder / "superseded.json").read_text())
        old = load_items(folder)
        run = out / "runs" / record["superseded"]
        new = load_items(run) if (run / "items.jsonl").exists() else {}
        common = sorted(set(old) & set(new))
        span = f"{min(old)}-{max(old)}" if old else "none"
        cells = compared_cells(old, new, common) if common else " | | | | | |"
        rows.append(f"| {record['superseded']} | {span} ({len(old)}) | {record['why']} | "
                    f"{len(common)} | " + cells)
    return compared_table(
        "Answers set aside (`superseded/`): every run is reported as answered by the study's "
        "engine, and answers another engine gave are answered again; each is compared here with "
        "its replacement on the items answered again so far:",
        "| run | items set aside | why | answered again | ", ("set aside", "again"), rows)


def answers_so_far(out: Path) -> dict[str, int]:
    """Each run's and sweep's answers now, by the names the provenance ledger uses."""
    totals = {run.name: len(whole_lines(run / "items.jsonl"))
              for run in sorted(out.glob("runs/*/")) if (run / "items.jsonl").exists()}
    for journal in sorted(out.glob("selection/*/*.json.items.jsonl")):
        name = provenance.sweep_run(journal.parent.name, journal.name[: -len(".json.items.jsonl")])
        totals[name] = max(len(whole_lines(journal)) - 1, 0)
    return totals


def page(out: Path, title: str) -> str:
    """The results page of a study's output folder (markdown)."""
    md: list[str] = [f"# {title}", ""]
    bench = out / "bench.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        pre = [e["prefill_tok_per_s"] for e in b["edit"]["one-cell"]]
        engine = (f", engine built for {provenance.engine_isa(b['engine_cpu_features'])}"
                  if b.get("engine_cpu_features") else "")
        md += [f"Speed ({b.get('threads', '?')} threads{engine}): prefill "
               f"{min(pre):.0f}-{max(pre):.0f} tok/s, decode {b['decode_tok_per_s']['unsteered']:.1f} tok/s (one sequence).", ""]
    md += engine_lines(out)
    md += provenance.page_lines(out, answers_so_far(out))
    md += calibration_lines(out)
    md += superseded_lines(out)
    md += study_state(out)
    for task in TASKS:
        rows = method_table(out, task)
        sweeps = sweep_lines(out, task)
        diag = diagnosis_lines(out, task)
        if not rows and not sweeps and not diag:
            continue
        md += [f"## {task}", ""]
        if rows:
            md += ["| method | accuracy % [95 % CI] | vs baseline, points [95 % CI], McNemar p | "
                   "reasoning % | tokens mean / median | answer first % | commonest answer % | "
                   "at token limit % | n |",
                   "|---|---|---|---|---|---|---|---|---|"] + rows + [""]
            constant = constant_answers(task, out)
            if constant:
                md += [constant, ""]
        if sweeps:
            md += ["Selection split:", ""] + sweeps + [""]
        if diag:
            md += ["Diagnosis (`kvsteer diagnose`):", "", "```"] + diag + ["```", ""]
    return "\n".join(md)


def write_results(out: Path, res: Path, title: str) -> str:
    """Writes the committable results and the study's state into `res`; returns the page."""
    text = page(out, title)
    res.mkdir(parents=True, exist_ok=True)
    export_state(out, res)
    report = out / "report"  # kvsteer report's tables and figures (no item text)
    if (report / "report.md").exists():
        (res / "report").mkdir(exist_ok=True)
        for f in [report / "report.md", *sorted(report.glob("*.svg"))]:
            shutil.copyfile(f, res / "report" / f.name)
        text += "\nFigures: [report/report.md](report/report.md).\n"
    write_atomic(res / "README.md", text + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path, help="the study's output folder")
    ap.add_argument("--results", type=Path, help="folder for the committable results")
    ap.add_argument("--title", default="kvsteer on SmolLM2-135M-Instruct")
    a = ap.parse_args()
    print(write_results(a.out, a.results, a.title) if a.results else page(a.out, a.title))


if __name__ == "__main__":
    main()
