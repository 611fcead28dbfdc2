"""Model: tokenizer, templates, fingerprint, and what it refuses."""

from __future__ import annotations

import pytest

import kvsteer


def test_tokenize_detokenize_round_trip(stories):
    ids = stories.tokenize("Once upon a time", add_special=False)
    assert ids and all(isinstance(t, int) for t in ids)
    # SentencePiece: the first word carries its leading space.
    assert stories.detokenize(ids).lstrip() == "Once upon a time"
    assert "".join(stories.token_to_piece(t) for t in ids).lstrip() == "Once upon a time"


def test_tokenize_prompt_puts_bos_first_once(stories):
    bos = stories.bos
    assert bos is not None
    ids = stories.tokenize_prompt("Once upon a time")
    assert ids[0] == bos and ids.count(bos) == 1


def test_fingerprint_describes_the_cache(stories):
    fp = stories.fingerprint
    assert fp["arch"] == "llama"
    assert fp["n_layer"] == stories.n_layer == 5
    assert fp["n_embd_k_gqa"] == fp["n_head_kv"] * fp["n_embd_head_k"]
    assert len(fp["vocab_hash"]) == 16


def test_chat_templates(smollm2):
    messages = [{"role": "user", "content": "Hi"}]
    text = smollm2.apply_chat_template(messages)
    assert text.endswith("<|im_start|>assistant\n")
    assert smollm2.apply_chat_template([("user", "Hi")], chat_template="chatml") == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # render_prompt is the text `kvsteer generate -p` decodes: SmolLM2's own system message.
    rendered = smollm2.render_prompt("Hi", cot_prefix="Let's think step by step.")
    assert "named SmolLM" in rendered
    assert rendered.endswith("<|im_start|>assistant\nLet's think step by step.")
    assert smollm2.render_prompt("Hi", raw=True) == "Hi"


def test_refusals(stories, tmp_path):
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.Model(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "bad.gguf"
    not_gguf.write_bytes(b"this is not a gguf file" * 10)
    with pytest.raises(kvsteer.FormatError):
        kvsteer.Model(not_gguf)
    with pytest.raises(kvsteer.InvalidArgumentError):
        stories.detokenize([stories.n_vocab])
    with pytest.raises(kvsteer.InvalidArgumentError):
        stories.is_eog(-1)
    with pytest.raises(kvsteer.InvalidArgumentError):
        stories.apply_chat_template([{"role": "user"}])
    with pytest.raises(kvsteer.InvalidArgumentError):  # the model has no template of its own
        stories.apply_chat_template([("user", "Hi")])
    with pytest.raises(kvsteer.InvalidArgumentError):
        stories.render_prompt("Hi", prompt_family="nope")
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        kvsteer.set_log_level("loud")


def test_vocab_only_model_has_no_session(stories_gguf):
    vocab = kvsteer.Model(stories_gguf, vocab_only=True)
    assert vocab.tokenize("Once") != []
    with pytest.raises(kvsteer.Error):
        kvsteer.Session(vocab)


def test_session_decode_logits_and_close(stories):
    with kvsteer.Session(stories, n_ctx=64, n_threads=1) as s:
        ids = stories.tokenize_prompt("Once upon a time")
        s.decode(ids)
        logits = s.logits()
        assert logits.shape == (stories.n_vocab,)
        assert s.next_pos() == len(ids)
        cell = s.read_cell(len(ids) - 1)
        assert cell.keys.shape == (5, stories.fingerprint["n_embd_k_gqa"])
        with pytest.raises(kvsteer.InvalidArgumentError):
            s.decode([0] * (s.n_ctx + 1))  # more than the cache holds (llama.cpp rounds n_ctx up)
        assert s.next_pos() == len(ids)
        with pytest.raises(kvsteer.InvalidArgumentError):
            s.decode(ids, seq=1)  # n_seq = 1
        with pytest.raises(kvsteer.InvalidArgumentError):
            s.decode([])
    assert s.closed
    with pytest.raises(kvsteer.InvalidArgumentError):
        s.decode(ids)


def test_session_with_a_stream_per_sequence(stories):
    # 512 cells: one stream holds them all for either sequence; two streams hold 256 each.
    tokens = [1] + [100] * 299
    with kvsteer.Session(stories, n_ctx=512, n_seq=2, n_threads=1) as s:
        s.decode(tokens, seq=0)
    with kvsteer.Session(stories, n_ctx=512, n_seq=2, n_threads=1, flash_attn="off",
                         kv_streams="per-sequence") as s:
        with pytest.raises(kvsteer.InvalidArgumentError):
            s.decode(tokens, seq=0)
        s.decode(tokens[:200], seq=0)
        s.decode(tokens[:200], seq=1)
        assert s.next_pos(0) == s.next_pos(1) == 200
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.Session(stories, kv_streams="many")
