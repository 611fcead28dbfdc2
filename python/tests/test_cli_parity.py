"""The package and the CLI run the same code: same settings, same bytes and tokens."""

from __future__ import annotations

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
