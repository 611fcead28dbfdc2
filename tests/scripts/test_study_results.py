"""The study's results page (scripts/study_results.py) reads a weak model's multiple-choice
accuracy against its letter preference: the commonest answer per run and what answering one
letter everywhere would score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from study_results import page  # noqa: E402


def write_run(out: Path, name: str, answers: str, gold: str) -> None:
    run = out / "runs" / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"n_predict": 768, "limit": len(gold)}))
    items = [{"index": i, "extracted": a, "target": g, "correct": a == g, "n_tokens": 20,
              "n_steps": 0, "reasoning": False, "forced": False, "answer_first": True}
             for i, (a, g) in enumerate(zip(answers, gold))]
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    acc = 100 * sum(r["correct"] for r in items) / len(items)
    (run / "summary.json").write_text(json.dumps({
        "accuracy": acc, "ci95": [0.0, 100.0], "reasoning_rate": 0.0, "mean_tokens": 20.0,
        "median_tokens": 20.0, "n": len(items)}))


def table_rows(text: str) -> list[str]:
    """The header and body rows of the page's tables (not their rules)."""
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_the_page_shows_the_commonest_answer_and_the_constant_answer_reference(tmp_path: Path):
    gold = "ABCDEABCDA"
    write_run(tmp_path, "csqa-baseline", "AAAAAAAAEA", gold)
    write_run(tmp_path, "csqa-cache-paper", "AAAAAAAAAA", gold)
    text = page(tmp_path, "t")
    rows = table_rows(text)
    assert "commonest answer %" in rows[0]
    assert rows[1].split(" | ")[6] == "A 90"  # baseline: nine A of ten
    assert rows[2].split(" | ")[6] == "A 100"
    assert ("Always the same letter on these 10 items: A 30.0 %, B 20.0 %, C 20.0 %, D 20.0 %, "
            "E 10.0 %.") in text


def test_the_selection_baseline_is_the_sweeps_reference_not_a_test_row(tmp_path: Path):
    gold = "ABCDEABCDA"
    write_run(tmp_path, "csqa-baseline", "AAAAAAAAEA", gold)
    write_run(tmp_path, "csqa-selection-baseline", "ABCDAAAAAA", gold)
    text = page(tmp_path, "t")
    rows = table_rows(text)
    assert len(rows) == 2  # the header and the test baseline: no selection row
    assert rows[1].split(" | ")[1] == "30.0 [0.0, 100.0]"
    assert ("- baseline (10 selection items, the sweeps' reference): 60.0 % [0.0, 100.0] / "
            "reasoning 0 % / 20 tok") in text
    assert text.index("Selection split:") < text.index("- baseline (10 selection items")


def test_a_finished_sweep_is_compared_with_the_selection_baseline_item_by_item(tmp_path: Path):
    gold = "ABCDEABCDA"
    write_run(tmp_path, "arc-selection-baseline", "ABCDAAAAAA", gold)  # right on 0-3, 5, 9
    sel = tmp_path / "selection" / "arc"
    sel.mkdir(parents=True)
    grid = [{"layer": 8, "c": 1.0}, {"layer": 8, "c": 3.0}]
    settings = [{**g, "accuracy": 0.0, "reasoning_rate": 0.0, "mean_tokens": 20.0} for g in grid]
    (sel / "caa.json").write_text(json.dumps({
        "kind": "kvsteer-sweep", "method": "caa", "n_items": 10, "config": {},
        "settings": settings}))
    header = {"kind": "kvsteer-sweep-items", "version": 1, "config": {}, "grid": grid}
    # Setting 0 answers as the baseline does; setting 1 gains items 4, 6, 7, 8 and loses none.
    # The journal lists items in another order than the baseline, as batches of a sweep do.
    journal = [header]
    for setting, answers in ((0, "ABCDAAAAAA"), (1, "ABCDEABCDA")):
        for i in reversed(range(10)):
            journal.append({"setting": setting, "index": i, "id": f"q{i}", "extracted": answers[i],
                            "target": gold[i], "correct": answers[i] == gold[i], "n_tokens": 20})
    (sel / "caa.json.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in journal))
    base = tmp_path / "runs" / "arc-selection-baseline" / "items.jsonl"
    rows = [json.loads(line) for line in base.read_text().splitlines()]
    base.write_text("".join(json.dumps({**r, "id": f"q{r['index']}"}) + "\n" for r in rows))
    text = page(tmp_path, "t")
    line = next(x for x in text.splitlines() if x.startswith("- `caa`"))
    assert "L8 c 1: 0.0 % / reasoning 0 % / 20 tok (vs baseline +0.0 [+0.0, +0.0], p 1)" in line
    # Four discordant items, all gained: +40 points, exact McNemar p = 2 * 0.5^4 = 0.125.
    assert "L8 c 3: 0.0 % / reasoning 0 % / 20 tok (vs baseline +40.0 [+9.6, +70.4], p 0.12)" in line


def write_sweep_journal(sel: Path, name: str, config: dict, grid: list[dict],
                        answers: list[str], gold: str) -> None:
    header = {"kind": "kvsteer-sweep-items", "version": 1, "config": config, "grid": grid}
    rows = [header] + [{"setting": s, "index": i, "id": f"q{i}", "correct": a[i] == gold[i],
                        "n_tokens": 20, "reasoning": False}
                       for s, a in enumerate(answers) for i in range(len(gold))]
    (sel / f"{name}.json.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_page_says_how_firmly_the_selection_split_chose(tmp_path: Path):
    gold = "AAAAAAAAAAAAAAAAAAAA"  # 20 selection items
    sel = tmp_path / "selection" / "csqa"
    sel.mkdir(parents=True)
    last = {"vector": "/v/csqa-last.gguf", "steering": {"offset_token": 198}}
    cells = {"vector": "/v/csqa-second-last.gguf", "steering": {"offset_token": None}}
    # c_v 6 (the paper's) right on 10 items, c_v -6 on 11 of them (one more), the no-offset
    # protocol at the second-last cell on 2: a one-item lead, which resampling overturns often.
    write_sweep_journal(sel, "cache-cv", last, [{"c_k": 0.0, "c_v": -6.0}, {"c_k": 0.0, "c_v": 6.0}],
                        ["A" * 11 + "B" * 9, "A" * 10 + "B" * 10], gold)
    write_sweep_journal(sel, "cache-offset-none-second_last", cells, [{"c_k": 0.0, "c_v": 6.0}],
                        ["A" * 2 + "B" * 18], gold)
    paper = {"c_k": 0.0, "c_v": 6.0, "offset": "\n", "vector_cell": "last"}
    candidates = [{"setting": {"c_k": 0.0, "c_v": -6.0, "offset": "\n", "vector_cell": "last"},
                   "accuracy": 55.0}, {"setting": paper, "accuracy": 50.0},
                  {"setting": {"c_k": 0.0, "c_v": 6.0, "offset": None,
                               "vector_cell": "second_last"}, "accuracy": 10.0}]
    record = {"method": "cache", "candidates": candidates, "chosen": candidates[0]["setting"],
              "paper_setting": paper}
    (sel / "chosen-cache.json").write_text(json.dumps(record))
    line = next(x for x in page(tmp_path, "t").splitlines() if "selection stability" in x)
    share = {name: int(line.split(f"the {name} ")[1].split(" %")[0].split()[-1])
             for name in ("chosen setting wins", "paper's")}
    # c_v -6 answers right wherever c_v 6 does, and on one item more: in a resample it loses only
    # where that item is drawn no time (tied: the paper's setting wins), (19/20)^20 = 36 %.
    assert 60 <= share["chosen setting wins"] <= 68 and share["chosen setting wins"] + share["paper's"] == 100
    assert "2000 bootstrap resamples of the 20 selection items" in line
    # A candidate whose answers are not here (a sweep made before journals were kept): no line.
    (sel / "cache-offset-none-second_last.json.items.jsonl").unlink()
    assert "selection stability" not in page(tmp_path, "t")
