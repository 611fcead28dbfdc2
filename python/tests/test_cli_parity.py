"""The package and the CLI run the same code: same settings, same bytes and tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kvsteer


def test_extract_writes_the_cli_bytes(cli, stories, stories_gguf, traces, tmp_path):
    out = tmp_path / "cli.gguf"
    cli.run("extract", "-m", str(stories_gguf), "--traces", str(traces), "-N", "4", "-k", "2",
            "--prompt-family", "chatml", "-o", str(out))
    v = kvsteer.extract(stories, str(traces), n_pairs=4, shots=2, prompt_family="chatml",
                        n_threads=1)
    v.save(tmp_path / "py.gguf")
    assert (tmp_path / "py.gguf").read_bytes() == out.read_bytes()


def test_extract_on_the_real_model_writes_the_cli_bytes(cli, smollm2, smollm2_gguf, traces,
                                                          tmp_path):
    out = tmp_path / "cli.gguf"
    cli.run("extract", "-m", str(smollm2_gguf), "--traces", str(traces), "-N", "3", "-k", "2",
            "--position", "-1", "--position", "-2", "-o", str(out), "-o", str(tmp_path / "m2.gguf"))
    vs = kvsteer.extract(smollm2, str(traces), n_pairs=3, shots=2, position=[-1, -2], n_threads=1)
    vs[0].save(tmp_path / "py.gguf")
    vs[1].save(tmp_path / "py2.gguf")
    assert (tmp_path / "py.gguf").read_bytes() == out.read_bytes()
    assert (tmp_path / "py2.gguf").read_bytes() == (tmp_path / "m2.gguf").read_bytes()


@pytest.mark.parametrize("steered", [False, True])
def test_greedy_generation_equals_the_cli(cli, smollm2, smollm2_gguf, traces, tmp_path, steered):
    args = ["generate", "-m", str(smollm2_gguf), "-p", "Tom has 3 apples and buys 4. How many?",
            "-n", "24", "--json"]
    kwargs = {}
    if steered:
        path = tmp_path / "v.gguf"
        kvsteer.extract(smollm2, str(traces), n_pairs=3, shots=2, n_threads=1).save(path)
        args += ["--steer", str(path), "--coef-v", "4", "--coef-k", "0.5", "--layers", "2-"]
        kwargs = dict(steer=str(path), c_v=4, c_k=0.5, layers="2-")
    expected = cli.json(*args)
    got = kvsteer.generate(smollm2, "Tom has 3 apples and buys 4. How many?", n_predict=24,
                           n_threads=1, **kwargs)
    assert got.tokens == expected["tokens"]
    assert got.text == expected["text"]
    d = got.to_dict()
    for key in ("n_prompt", "n_generated", "stop_reason", "steered", "prompt_tokens"):
        assert d[key] == expected[key], key


def test_raw_generation_and_offset_equal_the_cli(cli, stories, stories_gguf):
    expected = cli.json("generate", "-m", str(stories_gguf), "-p", "Once upon a time", "--raw",
                        "--offset", "none", "-n", "16", "--json")
    got = kvsteer.generate(stories, "Once upon a time", raw=True, offset=None, n_predict=16,
                           n_threads=1)
    assert got.tokens == expected["tokens"] and got.text == expected["text"]


def test_kv_cell_equals_kv_dump(cli, stories, stories_gguf, stories_vector, tmp_path):
    path = tmp_path / "v.gguf"
    stories_vector.save(path)
    dump = cli.json("kv-dump", "-m", str(stories_gguf), "-p", "Once upon a time", "--raw",
                    "--pos", "-1", "--steer", str(path), "--coef-v", "2", "--json")
    cell = kvsteer.kv_cell(stories, "Once upon a time", -1, raw=True, steer=stories_vector,
                           c_v=2, n_threads=1)
    assert cell.prompt_tokens == dump["prompt_tokens"]
    assert cell.pos == dump["pos"] and cell.token == dump["token"]
    keys = np.array([layer["k"] for layer in dump["layers"]], dtype=np.float32)
    values = np.array([layer["v"] for layer in dump["layers"]], dtype=np.float32)
    np.testing.assert_array_equal(cell.keys, keys)
    np.testing.assert_array_equal(cell.values, values)


def test_extract_from_a_pairs_file_writes_the_cli_bytes(cli, smollm2, smollm2_gguf, tmp_path):
    def chat(style: str, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{style} What is the capital of France?"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "What colour is the sky?"}]

    rows = [{"positive": "Answer like a pirate. How many legs does a spider have?",
             "negative": "Answer plainly. How many legs does a spider have?"},
            {"positive": chat("Answer like a pirate.", "Arr, 'tis Paris, matey!"),
             "negative": chat("Answer plainly.", "Paris.")}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "cli.gguf"
    cli.run("extract", "-m", str(smollm2_gguf), "--pairs-file", str(pairs), "-o", str(out))
    v = kvsteer.extract(smollm2, pairs_file=pairs, n_threads=1)
    v.save(tmp_path / "py.gguf")
    assert (tmp_path / "py.gguf").read_bytes() == out.read_bytes()
    assert v.metadata["source"].startswith("kvsteer extract --pairs-file --parallel 4")
    assert v.metadata["chat_template"] == "prompt family smollm2"

    # Both kinds of side are rendered with SmolLM2's template as its Hugging Face tokenizer
    # renders them (default system message first), written out here by hand.
    def render(messages: list[dict[str, str]]) -> str:
        turns = [{"role": "system", "content": "You are a helpful AI assistant named SmolLM, "
                  "trained by Hugging Face"}] + messages
        return ("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns)
                + "<|im_start|>assistant\n")

    def side(value: str | list[dict[str, str]]) -> str:
        return render([{"role": "user", "content": value}] if isinstance(value, str) else value)

    texts = kvsteer.extract(smollm2, pairs=[(side(r["positive"]), side(r["negative"]))
                                            for r in rows], n_threads=1)
    for got, want in zip(v.to_numpy(), texts.to_numpy()):
        np.testing.assert_array_equal(got, want)
    assert np.abs(v.to_numpy()[1][1:]).max() > 0.01


def test_a_bad_pairs_file_is_refused_before_anything_is_decoded(smollm2, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"positive": "a"}\n')
    with pytest.raises(kvsteer.FormatError, match="line 1: no 'negative' side"):
        kvsteer.extract(smollm2, pairs_file=pairs)
    pairs.write_text('{"positive": [{"role": "user", "content": "a"}], "negative": "b"}\n')
    with pytest.raises(kvsteer.InvalidArgumentError, match="message list"):
        kvsteer.extract(smollm2, pairs_file=pairs, raw=True)
    with pytest.raises(kvsteer.InvalidArgumentError, match="n_pairs must be at least 1"):
        kvsteer.extract(smollm2, pairs_file=pairs, n_pairs=0)
    with pytest.raises(kvsteer.InvalidArgumentError, match="raw applies to pairs_file only"):
        kvsteer.extract(smollm2, pairs=[("a", "b")], raw=True)
    with pytest.raises(kvsteer.InvalidArgumentError, match="give one of"):
        kvsteer.extract(smollm2, pairs=[("a", "b")], pairs_file=pairs)
    with pytest.raises(kvsteer.InvalidArgumentError, match="shots applies to traces"):
        kvsteer.extract(smollm2, pairs_file=pairs, shots=3)
    with pytest.raises(kvsteer.InvalidArgumentError, match="^cot_prefix .* not to pairs$"):
        kvsteer.extract(smollm2, pairs=[("a", "b")], cot_prefix="Let's think step by step.")
    with pytest.raises(kvsteer.InvalidArgumentError, match="^task applies to traces"):
        kvsteer.extract(smollm2, pairs=[("a", "b")], task="arc")
