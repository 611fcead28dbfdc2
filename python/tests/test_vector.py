"""SteeringVector: extraction, files, numpy views and arrays, npz/safetensors, refusals."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import kvsteer


def test_extract_from_traces_fills_the_record(stories_vector, stories):
    v = stories_vector
    meta = v.metadata
    assert meta["model"] == stories.fingerprint
    assert meta["n_pairs"] == 4 and meta["n_shots"] == 2 and meta["position"] == -1
    assert meta["chat_template"] == "prompt family chatml"
    assert len(meta["traces_sha256"]) == 64
    assert meta["source"].startswith("kvsteer extract --task generic --n-pairs 4 --shots 2")
    assert len(v.keys) == len(v.values) == stories.n_layer
    assert v.keys[1].shape == (stories.fingerprint["n_embd_k_gqa"],)
    assert v.keys[1].dtype == np.float32
    assert np.abs(v.values[1]).sum() > 0


def test_extract_from_pairs_and_positions(stories):
    pos = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nStep one. Step two. 7"
    neg = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n7"
    ids = stories.tokenize_prompt(neg)
    vs = kvsteer.extract(stories, pairs=[(pos, neg), (pos, ids)], position=[-1, -2], n_threads=1)
    assert [v.metadata["position"] for v in vs] == [-1, -2]
    assert vs[0].metadata["n_pairs"] == 2
    one = kvsteer.extract(stories, pairs=[(pos, neg), (pos, ids)], position=-2, n_threads=1)
    np.testing.assert_array_equal(one.to_numpy()[1], vs[1].to_numpy()[1])


def test_an_interrupted_extraction_goes_on_from_its_checkpoint(stories, traces, tmp_path):
    settings = dict(n_pairs=6, shots=2, prompt_family="chatml", n_threads=1, parallel=2,
                    position=[-1, -2])
    whole = kvsteer.extract(stories, str(traces), **settings)
    checkpoint = tmp_path / "x.partial"

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt  # as Ctrl-C in a notebook

    with pytest.raises(KeyboardInterrupt):
        kvsteer.extract(stories, str(traces), checkpoint=checkpoint, checkpoint_every=0,
                        progress=stop_after_three, **settings)
    assert checkpoint.exists()
    seen: list[int] = []
    resumed = kvsteer.extract(stories, str(traces), checkpoint=checkpoint, checkpoint_every=0,
                              progress=lambda done, total: seen.append(done), **settings)
    assert seen == [4, 5, 6]  # pairs 1-3 came from the checkpoint
    assert not checkpoint.exists()
    for a, b in zip(resumed, whole):
        np.testing.assert_array_equal(a.to_numpy()[0], b.to_numpy()[0])
        np.testing.assert_array_equal(a.to_numpy()[1], b.to_numpy()[1])

    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="no KVSXCKPT magic"):
        again = kvsteer.extract(stories, str(traces), checkpoint=checkpoint, **settings)
    np.testing.assert_array_equal(again[0].to_numpy()[1], whole[0].to_numpy()[1])


def test_keys_are_zero_copy_views(stories_vector):
    v = stories_vector.clone()
    a, b = v.keys[2], v.keys[2]
    assert np.shares_memory(a, b)
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    a[0] = 123.0  # writing through the view changes the vector
    assert v.to_numpy()[0][2, 0] == np.float32(123.0)
    assert stories_vector.keys[2][0] != np.float32(123.0)  # clone() copied


def test_views_keep_the_vector_alive(stories_vector):
    view = stories_vector.clone().values[3]
    expected = stories_vector.values[3].copy()
    import gc

    gc.collect()
    np.testing.assert_array_equal(view, expected)


def test_save_load_round_trip(stories_vector, tmp_path):
    path = tmp_path / "v.gguf"
    stories_vector.save(path)
    back = kvsteer.SteeringVector.load(str(path))
    assert back.metadata == stories_vector.metadata
    for a, b in zip(back.to_numpy(), stories_vector.to_numpy()):
        np.testing.assert_array_equal(a, b)
    back.save(tmp_path / "again.gguf")
    assert (tmp_path / "again.gguf").read_bytes() == path.read_bytes()


def test_numpy_round_trip(stories_vector, stories):
    keys, values = stories_vector.to_numpy()
    assert keys.shape == (stories.n_layer, stories.fingerprint["n_embd_k_gqa"])
    back = kvsteer.SteeringVector.from_numpy(
        keys.astype(np.float64), values, model=stories, metadata=stories_vector.metadata
    )
    assert back.metadata == stories_vector.metadata
    np.testing.assert_array_equal(back.to_numpy()[0], keys)
    # A layer without a vector is a NaN row and comes back empty.
    keys[0] = np.nan
    partial = kvsteer.SteeringVector.from_numpy(keys, values, model=stories)
    assert partial.keys[0].shape == (0,)
    assert np.isnan(partial.to_numpy()[0][0]).all()


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_exchange_files_round_trip(stories_vector, stories, tmp_path, fmt):
    path = tmp_path / f"v.{fmt}"
    save = getattr(kvsteer, f"save_{fmt}")
    load = getattr(kvsteer, f"load_{fmt}")
    save(stories_vector, path)
    back = load(path)  # the fingerprint travels with the file
    assert back.metadata == stories_vector.metadata
    np.testing.assert_array_equal(back.to_numpy()[1], stories_vector.to_numpy()[1])
    assert load(path, model=stories).metadata == stories_vector.metadata


def test_safetensors_layout_is_standard(stories_vector, tmp_path):
    path = tmp_path / "v.safetensors"
    kvsteer.save_safetensors(stories_vector, path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["keys"]["dtype"] == "F32"
    assert header["keys"]["shape"] == list(stories_vector.to_numpy()[0].shape)
    begin, end = header["values"]["data_offsets"]
    values = np.frombuffer(data[8 + n + begin : 8 + n + end], "<f4").reshape(
        header["values"]["shape"]
    )
    np.testing.assert_array_equal(values, stories_vector.to_numpy()[1])
    assert json.loads(header["__metadata__"]["kvsteer"])["n_pairs"] == 4


def _write_foreign_safetensors(path, tensors):
    """What safetensors.torch.save_file writes (no metadata), for a vector made elsewhere."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_import_a_vector_made_elsewhere(stories, tmp_path):
    fp = stories.fingerprint
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((fp["n_layer"], fp["n_embd_k_gqa"])).astype(np.float32)
    values = rng.standard_normal((fp["n_layer"], fp["n_embd_v_gqa"])).astype(np.float16)
    path = tmp_path / "torch.safetensors"
    _write_foreign_safetensors(path, {"keys": ("F32", keys), "values": ("F16", values)})
    with pytest.raises(kvsteer.InvalidArgumentError):  # no fingerprint: a model is needed
        kvsteer.load_safetensors(path)
    v = kvsteer.load_safetensors(path, model=stories)
    np.testing.assert_array_equal(v.to_numpy()[1], values.astype(np.float32))
    out = kvsteer.generate(stories, "Once upon a time", raw=True, steer=v, c_v=0.5,
                           n_predict=4, n_threads=1)
    assert out.steered and len(out.tokens) == 4


def test_refusals(stories_vector, stories, tmp_path):
    keys, values = stories_vector.to_numpy()
    with pytest.raises(kvsteer.InvalidArgumentError, match="shape"):
        kvsteer.SteeringVector.from_numpy(keys[:, :-1], values, model=stories)
    with pytest.raises(kvsteer.InvalidArgumentError, match="shape"):
        kvsteer.SteeringVector.from_numpy(keys[1:], values, model=stories)
    bad = keys.copy()
    bad[2, 3] = np.inf
    with pytest.raises(kvsteer.InvalidArgumentError, match="non-finite"):
        kvsteer.SteeringVector.from_numpy(bad, values, model=stories)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.SteeringVector.from_numpy(keys, values)
    other = dict(stories_vector.metadata)
    other["model"] = dict(other["model"], vocab_hash="0000000000000000")
    with pytest.raises(kvsteer.FormatError, match="another model"):
        kvsteer.SteeringVector.from_numpy(keys, values, model=stories, metadata=other)
    foreign = kvsteer.SteeringVector.from_numpy(keys, values, metadata=other)
    with pytest.raises(kvsteer.FormatError):
        foreign.check(stories)
    with pytest.raises(kvsteer.FormatError):
        kvsteer.generate(stories, "Once", raw=True, steer=foreign, n_predict=2)
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.SteeringVector.load(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(kvsteer.FormatError):
        kvsteer.SteeringVector.load(junk)
    with pytest.raises(kvsteer.FormatError):
        kvsteer.load_safetensors(junk)
    np.savez(tmp_path / "x.npz", k=keys)
    with pytest.raises(kvsteer.FormatError):
        kvsteer.load_npz(tmp_path / "x.npz", model=stories)
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.load_npz(tmp_path / "none.npz")
    with pytest.raises(kvsteer.IoError):
        stories_vector.save(tmp_path / "no" / "such" / "dir.gguf")


def test_extract_refusals(stories, traces):
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories)  # neither traces nor pairs
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories, str(traces), n_pairs=1000, prompt_family="chatml")
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.extract(stories, "/no/such/traces.jsonl")
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories, pairs=[("a", "")])
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories, pairs=[("a", "b")], parallel=0)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories, pairs=[("a", [stories.n_vocab])])
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.extract(stories, pairs=[("a b c", "a b c")], position=-10)


def test_extract_from_conversation_pairs_equals_their_rendered_texts(stories):
    def chat(answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": "Tom has 2 apples and gets 3. How many?"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "Lily has 7 and gives 4 away. How many?"}]

    pairs = [(chat("2 + 3 = 5. The answer is 5."), chat("The answer is 5."))]
    v = kvsteer.extract(stories, pairs=pairs, prompt_family="chatml", n_threads=1)
    texts = [tuple(stories.render_prompt(side, prompt_family="chatml") for side in pair)
             for pair in pairs]
    assert texts[0][0].endswith("How many?<|im_end|>\n<|im_start|>assistant\n")
    w = kvsteer.extract(stories, pairs=texts, n_threads=1)
    for got, want in zip(v.to_numpy(), w.to_numpy()):
        np.testing.assert_array_equal(got, want)
