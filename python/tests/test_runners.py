"""eval / sweep / diagnose return the records the CLI writes, and resume like it."""

from __future__ import annotations

import json
import subprocess

import pytest

import kvsteer

# Small and fast: stories260K with ChatML prompts on the example traces as GSM8K items.
COMMON = dict(prompt_family="chatml", limit=3, n_predict=8, parallel=2, n_threads=1,
              preset=False)


def test_eval_returns_summary_json(stories, gsm8k_items, traces, tmp_path):
    out = tmp_path / "run"
    calls = []
    summary = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), method="cache",
                           traces=str(traces), n_pairs=4, shots=2, c_v=2.0,
                           progress=lambda d, t: calls.append((d, t)), **COMMON)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["method"] == "cache"
    assert calls[-1] == (3, 3)
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 3
    # Resumed with the same arguments: nothing recomputed, same summary but for timings.
    again = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), method="cache",
                         traces=str(traces), n_pairs=4, shots=2, c_v=2.0, **COMMON)
    assert again["accuracy"] == summary["accuracy"]
    with pytest.raises(kvsteer.InvalidArgumentError):  # another configuration in the folder
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), method="cache",
                     traces=str(traces), n_pairs=4, shots=2, c_v=3.0, **COMMON)


def test_the_offset_token_by_id_is_the_offset_text_s_token(stories, gsm8k_items, traces,
                                                           tmp_path):
    out = tmp_path / "run"
    steer = dict(method="cache", traces=str(traces), n_pairs=4, shots=2, c_v=2.0, **COMMON)
    first = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), offset="\n", **steer)
    newline = json.loads((out / "config.json").read_text())["steering"]["offset_token"]
    assert newline == stories.tokenize("\n", add_special=False, parse_special=False)[0]
    # The run's configuration names the token by id: the same run goes on from it...
    again = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), offset_id=newline, **steer)
    assert again["accuracy"] == first["accuracy"]
    # ...and another id is another run.
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(out), offset_id=newline + 1, **steer)
    with pytest.raises(kvsteer.InvalidArgumentError, match="not both"):
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "other"), offset="\n",
                     offset_id=newline, **steer)


def test_eval_like_makes_a_run_again_from_its_configuration(stories, gsm8k_items, traces,
                                                           tmp_path):
    run = tmp_path / "run"
    first = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(run), method="cache",
                         traces=str(traces), n_pairs=4, shots=2, c_k=0.5, c_v=2.0, offset="\n",
                         **COMMON)
    again = kvsteer.eval_like(stories, str(run), str(tmp_path / "again"), n_threads=1)
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == \
        json.loads((run / "config.json").read_text())
    responses = [[json.loads(line)["response"] for line in (d / "items.jsonl").read_text()
                  .splitlines()] for d in (run, tmp_path / "again")]
    assert responses[0] == responses[1] and again["accuracy"] == first["accuracy"]
    grown = kvsteer.eval_like(stories, str(run), limit=4, n_threads=1)  # in place, extended
    assert grown["n"] == 4
    # A configuration it cannot make again, or none, is refused, and nothing is written.
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, decoding="sampling")))
    with pytest.raises(kvsteer.InvalidArgumentError, match="sampled"):
        kvsteer.eval_like(stories, str(run), str(tmp_path / "x"))
    (run / "config.json").write_text("{")
    with pytest.raises(kvsteer.FormatError, match="not a run configuration"):
        kvsteer.eval_like(stories, str(run), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_cpu_features_are_the_cli_s_and_every_summary_records_them(cli, stories, gsm8k_items,
                                                                   tmp_path):
    features = kvsteer.cpu_features()
    info = subprocess.run([str(cli.binary), "info", "--engine"], capture_output=True, text=True,
                          check=True)
    assert features == json.loads(info.stdout)["engine"]["cpu_features"]
    assert features.startswith("CPU : ") and " = 1" in features
    summary = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "run"), **COMMON)
    assert summary["engine_cpu_features"] == features


def test_eval_equals_the_cli(cli, stories, stories_gguf, gsm8k_items, tmp_path):
    cli.run("eval", "-m", str(stories_gguf), "--task", "gsm8k", "--data", str(gsm8k_items),
            "--prompt-family", "chatml", "--limit", "3", "--n-predict", "8", "--parallel", "2",
            "--no-preset", "-o", str(tmp_path / "cli"))
    kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "py"), **COMMON)
    read = lambda d: [json.loads(x) for x in (tmp_path / d / "items.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "ttft_ms"} for r in rows]
    assert strip(read("py")) == strip(read("cli"))


def test_sweep_and_diagnose(stories, gsm8k_items, traces, tmp_path):
    vec = tmp_path / "v.gguf"
    kvsteer.extract(stories, str(traces), n_pairs=4, shots=2, prompt_family="chatml",
                    n_threads=1).save(vec)
    sweep = kvsteer.sweep(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "s.json"),
                          vector=str(vec), cv_grid=[0.0, 4.0], **COMMON)
    assert sweep == json.loads((tmp_path / "s.json").read_text())
    assert [s["c_v"] for s in sweep["settings"]] == [0.0, 4.0]
    diag = kvsteer.diagnose(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "d.json"),
                            vector=str(vec), c_v=4.0, follow=2, scales=[4.0],
                            **dict(COMMON, limit=2))
    assert diag == json.loads((tmp_path / "d.json").read_text())
    assert diag["n_prompts"] == 2 and len(diag["layers"]) > 0


def test_caa_cache_keeps_the_directions_and_replaces_a_damaged_checkpoint(
        stories, gsm8k_items, traces, tmp_path):
    caa = dict(method="caa", traces=str(traces), n_pairs=4, shots=2, caa_layer=2, caa_c=4.0,
               caa_cache=str(tmp_path / "caa"), **COMMON)
    first = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "a"), **caa)
    (kept,) = (tmp_path / "caa").glob("caa-*.json")
    # A stale checkpoint beside finished directions is never read: they are found as they are.
    (tmp_path / "caa" / (kept.name + ".partial")).write_bytes(b"KVSRCKPT damaged")
    second = kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "b"), **caa)
    assert second["accuracy"] == first["accuracy"]
    # Without the directions, the damaged checkpoint is said and a whole extraction made.
    kept_bytes = kept.read_bytes()
    kept.unlink()
    with pytest.warns(RuntimeWarning, match="starting over"):
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "c"), **caa)
    assert kept.read_bytes() == kept_bytes
    assert not (tmp_path / "caa" / (kept.name + ".partial")).exists()
    read = lambda d: [json.loads(x)["response"]
                      for x in (tmp_path / d / "items.jsonl").read_text().splitlines()]
    assert read("c") == read("a") == read("b")


def test_runner_refusals(stories, gsm8k_items, tmp_path):
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.eval(stories, "nope", str(gsm8k_items), str(tmp_path / "a"), **COMMON)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "b"), method="magic",
                     **COMMON)
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.eval(stories, "gsm8k", str(tmp_path / "none.jsonl"), str(tmp_path / "c"),
                     **COMMON)
    with pytest.raises(kvsteer.InvalidArgumentError):  # cache steering needs traces or a vector
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "d"), method="cache",
                     **COMMON)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.sweep(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "e.json"),
                      cv_grid=[float("nan")], **COMMON)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "f"), c_v=float("nan"),
                     **COMMON)


def test_engine_arguments_reach_the_runs_and_bad_ones_raise(cli, stories, stories_gguf,
                                                            gsm8k_items, tmp_path):
    engine = ["--kv-streams", "per-sequence", "--cache-type-k", "f32", "--cache-type-v", "f32",
              "--flash-attn", "off"]
    cli.run("eval", "-m", str(stories_gguf), "--task", "gsm8k", "--data", str(gsm8k_items),
            "--prompt-family", "chatml", "--limit", "3", "--n-predict", "8", "--parallel", "2",
            "--no-preset", "-o", str(tmp_path / "cli"), *engine)
    kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "py"), kv_streams="per-sequence",
                 cache_type_k="f32", cache_type_v="f32", flash_attn="off", **COMMON)
    config = json.loads((tmp_path / "py" / "config.json").read_text())
    assert config["engine"] == {"cache_type_k": "f32", "cache_type_v": "f32", "flash_attn": "off",
                                "kv_streams": "per-sequence"}
    read = lambda d: [json.loads(x) for x in (tmp_path / d / "items.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "ttft_ms"} for r in rows]
    assert strip(read("py")) == strip(read("cli"))
    for bad in (dict(kv_streams="both"), dict(flash_attn="maybe"), dict(cache_type_v="f8"),
                dict(cache_type_v="q8_0", flash_attn="off")):
        with pytest.raises(kvsteer.InvalidArgumentError):
            kvsteer.eval(stories, "gsm8k", str(gsm8k_items), str(tmp_path / "bad"), **bad, **COMMON)
        assert not (tmp_path / "bad").exists()
