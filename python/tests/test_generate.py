"""generate(): batching, steering semantics, progress, refusals."""

from __future__ import annotations

import pytest

import kvsteer

PROMPT = "Once upon a time"


def greedy(model, prompts, **kw):
    return kvsteer.generate(model, prompts, raw=True, n_predict=12, n_threads=1, **kw)


def test_one_prompt_gives_one_generation_many_give_a_list(stories):
    one = greedy(stories, PROMPT)
    assert isinstance(one, kvsteer.Generation)
    assert one.n_prompt == len(stories.tokenize_prompt(PROMPT))
    many = greedy(stories, [PROMPT, "The cat", stories.tokenize_prompt("A dog")])
    assert isinstance(many, list) and len(many) == 3
    assert all(len(g.tokens) == 12 and g.stop_reason == "length" for g in many)
    ids = greedy(stories, stories.tokenize_prompt(PROMPT))  # token ids, used as they are
    assert ids.tokens == one.tokens


def test_batches_match_single_runs_on_f32(stories):
    # stories260K is F32 and so are these caches: batch composition changes nothing.
    prompts = [PROMPT, "The cat sat", "Lily and Ben", "One day"]
    kw = dict(type_k="f32", type_v="f32")
    batched = greedy(stories, prompts, parallel=3, **kw)
    for p, g in zip(prompts, batched):
        assert greedy(stories, p, **kw).tokens == g.tokens


def test_per_sequence_streams_give_each_prompt_its_answer_alone(stories, stories_vector):
    # A cache stream per prompt: each one's cells lie as they would alone, steered or not.
    prompts = [PROMPT, "The cat sat", "Lily and Ben", "One day"]
    kw = dict(type_k="f32", type_v="f32", flash_attn="off", kv_streams="per-sequence",
              steer=stories_vector, c_v=8.0)
    batched = greedy(stories, prompts, parallel=4, **kw)
    for p, g in zip(prompts, batched):
        assert g.steered
        assert greedy(stories, p, **kw).tokens == g.tokens
        # and what the unified cache gives the prompt alone
        unified = {k: v for k, v in kw.items() if k != "kv_streams"}
        assert greedy(stories, p, **unified).tokens == g.tokens
    with pytest.raises(kvsteer.InvalidArgumentError):
        greedy(stories, PROMPT, kv_streams="both")


def test_zero_coefficients_equal_unsteered(stories, stories_vector):
    plain = greedy(stories, PROMPT)
    zero = greedy(stories, PROMPT, steer=stories_vector, c_k=0.0, c_v=0.0)
    assert zero.steered and not plain.steered
    assert zero.tokens == plain.tokens


def test_a_large_edit_changes_the_output(stories, stories_vector):
    plain = greedy(stories, PROMPT)
    steered = greedy(stories, PROMPT, steer=stories_vector, c_v=200.0, c_k=50.0, layers="all")
    assert steered.tokens != plain.tokens


def test_stop_strings_and_sampling(stories):
    out = greedy(stories, PROMPT, stop=["park"])
    if out.stop_reason == "stop_string":
        assert not out.text.endswith("park")
    a = greedy(stories, PROMPT, temperature=0.8, top_k=40, top_p=0.9, seed=7)
    b = greedy(stories, PROMPT, temperature=0.8, top_k=40, top_p=0.9, seed=7)
    assert a.tokens == b.tokens


def test_progress_callable_and_tqdm_like(stories):
    calls = []
    greedy(stories, [PROMPT] * 5, parallel=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]

    class Bar:  # what kvsteer uses of a tqdm bar
        total = None
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    greedy(stories, [PROMPT] * 3, parallel=2, progress=bar)
    assert bar.total == 3 and bar.n == 3


def test_an_exception_in_progress_stops_the_call(stories):
    def boom(done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        greedy(stories, [PROMPT] * 4, parallel=1, progress=boom)
    assert greedy(stories, PROMPT).tokens  # still usable


def test_refusals(stories, stories_vector):
    bad = [
        dict(c_v=float("nan")),
        dict(c_k=float("inf")),
        dict(layers="x"),
        dict(steer=stories_vector, layers="99"),
        dict(offset_id=stories.n_vocab),
        dict(n_predict=0),
        dict(parallel=0),
        dict(temperature=-1.0),
        dict(top_p=2.0),
        dict(type_k="f8"),
        dict(flash_attn="maybe"),
        dict(n_ctx=4),
        dict(prompt_family="nope", raw=False),
    ]
    for kw in bad:
        raw = kw.pop("raw", True)
        with pytest.raises(kvsteer.InvalidArgumentError):
            kvsteer.generate(stories, PROMPT, raw=raw, n_predict=kw.pop("n_predict", 4), **kw)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.generate(stories, "", raw=True)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.generate(stories, [], raw=True)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.generate(stories, [[stories.n_vocab + 5]])
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.generate(stories, PROMPT, progress=42)
    with pytest.raises(kvsteer.NotFoundError):
        kvsteer.generate(stories, PROMPT, raw=True, steer="/no/such/vector.gguf")
    with pytest.raises(TypeError):
        kvsteer.generate(stories, PROMPT, c_v="six")
    # A coefficient or layer selection without a vector would run unsteered, looking steered.
    # Their defaults given explicitly too: the mistake is the missing vector, not the value.
    for kw in (dict(c_v=6.0), dict(c_k=0.5), dict(layers="2-"), dict(layers_v="3"),
               dict(c_v=1.0), dict(c_k=0.0), dict(layers="1-")):
        with pytest.raises(kvsteer.InvalidArgumentError, match="pass steer="):
            kvsteer.generate(stories, PROMPT, raw=True, n_predict=2, **kw)
    with pytest.raises(kvsteer.InvalidArgumentError, match="offset=None decodes none"):
        kvsteer.generate(stories, PROMPT, raw=True, n_predict=2, offset="")
    with pytest.raises(kvsteer.InvalidArgumentError, match="stop string 1 of 1 is empty"):
        kvsteer.generate(stories, PROMPT, raw=True, n_predict=2, stop=[""])
    for kw in (dict(c_v=4.0), dict(c_v=1.0)):
        with pytest.raises(kvsteer.InvalidArgumentError, match="c_v scales or places"):
            kvsteer.kv_cell(stories, PROMPT, raw=True, **kw)
    with pytest.raises(kvsteer.InvalidArgumentError):
        kvsteer.kv_cell(stories, PROMPT, 100, raw=True)


SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_a_conversation_is_one_prompt_rendered_with_the_models_template(smollm2):
    chat = [{"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"}]
    # SmolLM2's Hugging Face template, written out: its default system message first.
    want = (f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n"
            "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
            "<|im_start|>user\nAnother one?<|im_end|>\n<|im_start|>assistant\n")
    assert smollm2.render_prompt(chat) == want
    own_system = [{"role": "system", "content": "Be brief."}] + chat
    assert smollm2.render_prompt(own_system).startswith("<|im_start|>system\nBe brief.<|im_end|>")

    one = kvsteer.generate(smollm2, chat, n_predict=8, n_threads=1)
    assert isinstance(one, kvsteer.Generation)
    assert one.prompt_tokens == smollm2.tokenize_prompt(want)
    assert one.tokens == kvsteer.generate(smollm2, want, raw=True, n_predict=8, n_threads=1).tokens
    both = kvsteer.generate(smollm2, [chat, "Another one?"], n_predict=8, n_threads=1)
    assert [g.prompt_tokens for g in both] == [one.prompt_tokens,
                                              smollm2.tokenize_prompt(smollm2.render_prompt(
                                                  "Another one?"))]
    assert (kvsteer.kv_cell(smollm2, chat).values ==
            kvsteer.kv_cell(smollm2, want, raw=True).values).all()


def test_a_conversation_refuses_raw_system_and_malformed_messages(smollm2):
    chat = [{"role": "user", "content": "Hi"}]
    with pytest.raises(kvsteer.InvalidArgumentError, match="raw=True takes str prompts"):
        kvsteer.generate(smollm2, chat, raw=True, n_predict=2)
    with pytest.raises(kvsteer.InvalidArgumentError, match="put the system message in"):
        kvsteer.generate(smollm2, chat, system="Be brief.", n_predict=2)
    with pytest.raises(kvsteer.InvalidArgumentError, match="needs 'role' and 'content'"):
        kvsteer.generate(smollm2, [{"role": "user"}], n_predict=2)
    with pytest.raises(kvsteer.InvalidArgumentError, match="role and content must be str"):
        kvsteer.generate(smollm2, [{"role": "user", "content": 3}], n_predict=2)
    with pytest.raises(kvsteer.InvalidArgumentError, match="not 'users'"):
        kvsteer.kv_cell(smollm2, [{"role": "users", "content": "Hi"}])
