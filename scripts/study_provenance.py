#!/usr/bin/env python3
"""Which machine answered which items of a study's runs (scripts/study_real.py).

llama.cpp built for other instruction sets gives other greedy answers: ggml's SIMD width sets the
order in which a dot product adds up, and greedy decoding turns a rounding difference into another
answer wherever two tokens are nearly tied. Measured on SmolLM2-135M-Instruct (docs/real-model.md,
"Machines fall into kinds"): the GSM8K baseline made with an AVX2 build differs from AVX-512
builds' answers in 146 of 160 records, while an AVX2 build on an AMD machine gives the AVX2
machine's answers (16 of 16) and AVX-512 builds on Intel and AMD agree with each other (160 of
160). setup_llama.sh therefore builds for one fixed instruction set (scripts/llama_isa.sh); a
study lent machines for hours still records, as it goes, the machine and the engine's
instruction sets of every stretch of every run in `provenance.jsonl` (kept in the committed
state):

  {"machine": ID, "cpu": "...", "isa": [...], "engine": "..."}
                                                        a machine, once (ID: vendor, family,
                                                        model, stepping, model name, ISA flags,
                                                        and the instruction sets libllama was
                                                        built with, `kvsteer info --engine`;
                                                        entries from builds for the machine
                                                        itself, before the fixed set, lack it)
  {"run": NAME, "items": N, "machine": ID, "at": TIME}  run NAME had N answers when ID took it on
  {"check": NAME, "machine": ID, "first": N, "differ": [i, ...]}
                                                        NAME's first N items answered again on ID
                                                        (Study.check_reproduces); the indices whose
                                                        records came out otherwise
  {"calibrated": NAME, "machine": ID, "first": N, "at": TIME}
                                                        NAME's first N items answered again on ID
                                                        into calibration/ (study_calibrate.py)
  {"superseded": NAME, "from": N, "to": FOLDER, "machine": ID, "why": "...", "at": TIME}
                                                        NAME's answers from item N on were set
                                                        aside into FOLDER on ID, to be answered
                                                        again with the study's engine
                                                        (Study.supersede)

A study reports each run as answered by one engine: answers another engine gave are set aside
(kept, and compared with their replacements on the results page) and answered again.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

LEDGER = "provenance.jsonl"
UNRECORDED = "unrecorded"  # the machine of answers given before the ledger knew their run
SUPERSEDED = "superseded"  # the folder of answers set aside (Study.supersede)
# The CPU features that may choose ggml's CPU kernels (the build's -march=native).
ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse", "ssse", "vnni", "bmi", "sve", "neon", "asimd")


# /proc/cpuinfo fields that name a processor's kind (x86 and Arm spellings).
KIND_FIELDS = ("vendor_id", "cpu family", "model", "stepping", "CPU implementer", "CPU variant",
               "CPU part", "CPU revision")


def machine_description(cpuinfo: str, engine: str = "") -> dict:
    """The CPU of /proc/cpuinfo's first processor: its model name and instruction-set features,
    with an ID that two machines share only when their processors are of one kind (vendor, family,
    model, stepping) with the same features. Finer than needed rather than coarser: two kinds
    that compute alike cost a reproduction check, one ID over two arithmetics would stop a study
    that is right (check_reproduces). `engine`: libllama's CPU features (kvsteer info --engine),
    part of the ID when given: the same processor with another build is another kind."""
    name, flags, kind = "unknown", [], {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name == "unknown":
            name = value.strip()
        if key in KIND_FIELDS and key not in kind:
            kind[key] = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = sorted({f for f in value.split() if f.startswith(ISA_PREFIXES)})
    signature = [name, sorted(kind.items()), flags] + ([engine] if engine else [])
    ident = hashlib.sha256(json.dumps(signature).encode()).hexdigest()[:12]
    described = name if not kind else f"{name} ({', '.join(f'{k} {v}' for k, v in kind.items())})"
    return {"machine": ident, "cpu": described, "isa": flags} | ({"engine": engine} if engine else {})


def engine_features(kvsteer: str) -> str:
    """The instruction sets the libllama behind `kvsteer` was built with."""
    try:
        done = subprocess.run([kvsteer, "info", "--engine"], capture_output=True, text=True,
                              check=True)
        return json.loads(done.stdout)["engine"]["cpu_features"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError) as e:
        raise SystemExit(f"study_provenance: error: cannot ask {kvsteer} for its engine's "
                         f"instruction sets (kvsteer info --engine): {e}")


def engine_isa(features: str) -> str:
    """The vector instruction sets among libllama's CPU features ("CPU : AVX = 1 | AVX2 = 1 |
    AVX512 = 0 | ..." -> "AVX, AVX2")."""
    on = []
    for part in features.split("|"):
        name, _, value = part.partition("=")
        name = name.split(":")[-1].strip()
        if value.strip() == "1" and name.startswith(("AVX", "AMX")):
            on.append(name)
    return ", ".join(on) or "no AVX"


def this_machine(kvsteer: str | None = None) -> dict:
    """This machine, and with `kvsteer` the engine that binary runs on."""
    engine = engine_features(kvsteer) if kvsteer else ""
    try:
        return machine_description(Path("/proc/cpuinfo").read_text(encoding="utf-8"), engine)
    except OSError:
        return machine_description("", engine)


def read_ledger(folder: Path) -> list[dict]:
    path = folder / LEDGER
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def append(folder: Path, record: dict) -> None:
    """One whole line (the ledger is small and written between steps, by one process)."""
    with open(folder / LEDGER, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def note_machine(folder: Path, machine: dict) -> None:
    if not any(r.get("machine") == machine["machine"] and "cpu" in r for r in read_ledger(folder)):
        append(folder, machine)


def note_run(folder: Path, run: str, items: int, machine: str) -> None:
    """Run `run` goes on from `items` answers on `machine`; a repeat of the last entry for the
    run is not written again."""
    last = [r for r in read_ledger(folder) if r.get("run") == run]
    if last and last[-1]["items"] == items and last[-1]["machine"] == machine:
        return
    append(folder, {"run": run, "items": items, "machine": machine,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def sweep_run(task: str, sweep: str) -> str:
    """A selection sweep's name in the ledger, beside the runs' folder names."""
    return f"selection/{task}/{sweep}"


def segments(folder: Path, run: str, total: int) -> list[tuple[str, int, int]]:
    """(machine, first item, end) of a run's `total` answers now, in the order they were given.
    An entry "run goes on from n answers" means that no answer from n on existed then (a restored
    state may hold fewer than a lost machine had given), so it cuts what came before at n, as a
    set-aside does; answers the ledger never saw given are UNRECORDED's."""
    segs: list[list] = []

    def cut(n: int) -> list[list]:
        return [[m, a, n if b is None else min(b, n)] for m, a, b in segs if a < n]

    for r in read_ledger(folder):
        if r.get("superseded") == run:
            segs = cut(r["from"])
        elif r.get("run") == run:
            n = r["items"]
            segs = cut(n)
            end = segs[-1][2] if segs else 0
            if end < n:
                segs.append([UNRECORDED, end, n])
            segs.append([r["machine"], n, None])
    segs = cut(total)
    end = segs[-1][2] if segs else 0
    if end < total:
        segs.append([UNRECORDED, end, total])
    merged: list[tuple[str, int, int]] = []
    for m, a, b in segs:
        if b <= a:
            continue
        if merged and merged[-1][0] == m and merged[-1][2] == a:
            merged[-1] = (m, merged[-1][1], b)
        else:
            merged.append((m, a, b))
    return merged


def stretches(folder: Path, run: str, total: int) -> list[tuple[str, int]]:
    """(machine, answers) of a run in the order they were given (segments)."""
    return [(m, b - a) for m, a, b in segments(folder, run, total)]


def first_machine(folder: Path, run: str, total: int) -> str | None:
    """The machine that answered a run's first items (UNRECORDED when the ledger does not know
    it), None for a run without answers."""
    parts = segments(folder, run, total)
    return parts[0][0] if parts else None


def machine_record(folder: Path, machine: str) -> dict | None:
    """The ledger's description of a machine (machine_description), None when it has none."""
    for r in read_ledger(folder):
        if r.get("machine") == machine and "cpu" in r:
            return r
    return None


def machine_engine(folder: Path, machine: str) -> str | None:
    """The libllama CPU features a machine of the ledger ran (kvsteer info --engine); None for a
    machine recorded before the engine was (libllama built for the machine itself) or not
    described."""
    record = machine_record(folder, machine)
    return record.get("engine") or None if record else None


def page_lines(folder: Path, totals: dict[str, int]) -> list[str]:
    """The results page's provenance section: the machines, the runs answered on more than one,
    and the reproduction checks. `totals`: each run's answers now."""
    ledger = read_ledger(folder)
    if not ledger:
        return []
    machines = {r["machine"]: r for r in ledger if "cpu" in r}
    described = []
    for m, d in machines.items():
        wide = ", ".join(f for f in d["isa"] if f.startswith(("avx512", "amx"))) or "no AVX-512"
        engine = "; kvsteer's engine built for " + (
            engine_isa(d["engine"]) if d.get("engine") else "this machine itself (-march=native)")
        described.append(f"`{m}` {d['cpu']} ({wide}{engine})")
    lines = ["Machines (greedy answers can differ from one kind of machine to another; "
             "`provenance.jsonl`): " + "; ".join(described) + ".", ""]
    mixed = []
    for run, total in sorted(totals.items()):
        parts = stretches(folder, run, total)
        if len(parts) > 1:
            mixed.append(f"- {run}: " + ", then ".join(
                f"{n} on {'a machine not recorded' if m == UNRECORDED else f'`{m}`'}"
                for m, n in parts))
    if mixed:
        lines += ["Runs answered on more than one machine:", ""] + mixed + [""]
    checks = [r for r in ledger if "check" in r]
    if checks:
        lines += ["Reproduction checks (a run's first answers made again before it goes on):", ""]
        lines += [f"- {r['check']} on `{r['machine']}`: "
                  + (f"{len(r['differ'])} of {r['first']} answers differ"
                     if r["differ"] else f"all {r['first']} answers reproduced") for r in checks]
        lines.append("")
    return lines
