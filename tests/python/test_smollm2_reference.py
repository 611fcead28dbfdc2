"""kvsteer against an independent float64 reference (llama_reference.py) on SmolLM2-135M-Instruct.

What is compared, per layer: the cached K (post-RoPE) and V rows of prompt cells, the extracted
steering vector, and the offset token's logits after a steered edit of the last cell.

Where the error comes from, and why the bounds are what they are. kvsteer runs llama.cpp's CPU
path: before every matmul with a Q4_1 weight (all of SmolLM2's matrices but the embedding) the
activations are quantized to Q8_1, and to Q8_0 for the Q8_0 tied output; i.e. per block of 32
values ``d = max|x|/127`` (f16) and ``q = round(x/d)``, an error of up to ``d/2`` per value. The
reference keeps float64 activations. In addition flash attention (on by default on CPU) casts the
F32 cache to F16 before attending (llama-graph.cpp: "if (k->type == GGML_TYPE_F32) k =
ggml_cast(..., F16)"), ~3e-4 relative. Measured on the prompt below:

* layer 0 (K/V are one matmul of the normed embedding): 2.5e-3 (K) and 1.0e-2 (V) relative. With
  the reference's ``act_quant=True`` (the same Q8 rounding, in numpy) it drops to ~6e-5 and ~3e-4:
  ``test_layer0_error_is_activation_quantization`` checks this, so the bound stands on a measured
  cause rather than on tuning.
* deeper layers: each layer adds fresh rounding and the FFN's gating amplifies the inherited
  difference (a one-off comparison of kvsteer's captured graph tensors with the reference, layers
  0-2: ffn_out's relative error is 1.6-2.7x that of its input ffn_norm), so the error rises to
  1-2% (K) and 3-6% (V) by layer 3 and then stays there as the residual stream grows. The
  emulation cannot follow it bit for bit past layer 0: once the inputs differ, the two sides round
  different values differently (with it, layers 1-29 still differ by 0.4-2% (K), 1-6% (V)).

Each bound sits about 2x above its measured maximum (cosines: 1 − cos at least 2.4x above) and
far below the error of a real bug: the negative controls measure such bugs on the same data and
assert that each exceeds its bound at least 3x.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from kvsteer_cli import Kvsteer
from llama_reference import (
    ForwardResult,
    Gpt2BpeTokenizer,
    KvCache,
    LlamaReference,
    SteeringVector,
    cosine,
    rel_err,
    render_smollm2,
)

# A realistic user turn (118 tokens with SmolLM2's template): digits, punctuation, an apostrophe.
# Its last sentence makes the first answer token less of a toss-up, so that the steered logits'
# argmax is stable against the logit error (see test_steered_offset_logits_match_reference).
PROMPT = (
    "A farmer has 17 sheep and buys 5 more each week for 3 weeks, then sells 9 of them at the "
    "market. How many sheep does the farmer have now? Explain your reasoning step by step, and "
    "give the final number on its own line. Also tell me whether it's an odd or even number, and "
    "why that matters for splitting the flock into two equal groups. Start your answer with "
    "the word Answer."
)
MID_POS = 57  # a cell inside the user text
NEWLINE = 198  # "\n": the paper's offset token, decoded by id after the edit (method.md §1.4)
CACHE_F32 = ("--ctk", "f32", "--ctv", "f32")  # cache rounding must not mask the comparison

# Cached rows, per layer. Measured worst layer over the last and the middle cell: K rel 0.021,
# cos 0.99978; V rel 0.064, cos 0.99794. A V cosine of 0.999 is out of reach with Q8 activations.
K_REL, K_COS = 0.04, 0.999
V_REL, V_COS = 0.12, 0.995

# Steering vector, per layer: error relative to the rows' norm (measured max K 0.013, V 0.045),
# and the cosine where the vector is not small (measured min K 0.99913, V 0.9945); see
# test_steering_vector_matches_reference.
VEC_K_ERR, VEC_K_COS = 0.04, 0.995
VEC_V_ERR, VEC_V_COS = 0.10, 0.98

# Offset-token logits over the 49152-token vocabulary. Measured: rel 0.018 (unsteered), 0.018
# (c_v = 4), 0.037 (c_k = 8, c_v = 4); cos at least 0.99942. On an AMD EPYC (Zen 3, AVX2) with its
# own extracted vector: 0.013, 0.040 and 0.155 (cos 0.9911): the c_k = 8 edit makes the offset
# token's attention steep enough that the activations' Q8 rounding alone moves the reference's
# logits by 0.149 (the reference with ``act_quant=True`` against itself without), so a steered
# setting's bound also scales with that measured sensitivity (``rounding_sensitivity``).
LOGITS_REL, LOGITS_COS = 0.075, 0.998


def per_layer(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative error ``‖a−b‖/‖b‖`` and cosine of each layer's row; ``b`` is the reference."""
    return (
        np.array([rel_err(x, y) for x, y in zip(a, b)]),
        np.array([cosine(x, y) for x, y in zip(a, b)]),
    )


def check_rows(
    what: str,
    got: np.ndarray,
    want: np.ndarray,
    max_rel: float,
    min_cos: float,
    layers: np.ndarray | None = None,
) -> None:
    """Asserts the per-layer bounds (on ``layers`` only, if given), listing every failing layer."""
    layers = np.arange(len(want)) if layers is None else layers
    rel, cos = per_layer(got[layers], want[layers])
    bad = [int(il) for il, r, c in zip(layers, rel, cos) if r > max_rel or c < min_cos]
    assert not bad, (
        f"{what}: layers {bad} exceed rel {max_rel} / cos {min_cos}; "
        f"max rel {rel.max():.4g} (layer {layers[rel.argmax()]}), min cos {cos.min():.6f} "
        f"(layer {layers[cos.argmin()]})\nper-layer rel: {np.array2string(rel, precision=4)}"
    )


def max_rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(per_layer(got, want)[0].max())


@dataclasses.dataclass(frozen=True)
class Dump:
    """One ``kvsteer kv-dump``: the prompt's ids and one cell's rows ``[n_layer][n_embd_kv]``."""

    tokens: list[int]
    k: np.ndarray
    v: np.ndarray


def kv_dump(kvsteer: Kvsteer, *args: str) -> Dump:
    out = kvsteer.run_json("kv-dump", *CACHE_F32, "--json", *args)
    k = np.array([layer["k"] for layer in out["layers"]], dtype=np.float64)
    v = np.array([layer["v"] for layer in out["layers"]], dtype=np.float64)
    return Dump(out["prompt_tokens"], k, v)


def read_logits(path: Path, n_vocab: int) -> np.ndarray:
    logits = np.fromfile(path, dtype="<f4").astype(np.float64)
    assert logits.shape == (n_vocab,), f"{path}: {logits.size} floats, expected n_vocab {n_vocab}"
    return logits


# --- the prompt's cache ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: Gpt2BpeTokenizer) -> list[int]:
    return tokenizer.encode(render_smollm2([("user", PROMPT)]))


@pytest.fixture(scope="module")
def ref_prompt(reference: LlamaReference, prompt_ids: list[int]) -> ForwardResult:
    return reference.forward(prompt_ids)


@pytest.fixture(scope="module")
def last_dump(kvsteer: Kvsteer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dump, Path]:
    """The last cell, and (same run) the unsteered offset token's logits."""
    logits = tmp_path_factory.mktemp("logits") / "unsteered.f32"
    dump = kv_dump(kvsteer, "-p", PROMPT, "--offset-id", str(NEWLINE), "--logits-out", str(logits))
    return dump, logits


@pytest.fixture(scope="module")
def mid_dump(kvsteer: Kvsteer) -> Dump:
    return kv_dump(kvsteer, "-p", PROMPT, "--pos", str(MID_POS))


# Raw text that exercises the pre-tokenizer: runs of spaces and newlines, contractions, digit
# runs, punctuation clusters, underscores, a tab, a special token inside text, trailing spaces.
TRICKY_TEXT = (
    "Hello  world!\n\n  It's 2024-12-05, isn't it? x=3.14;y=42 ...<|im_end|> done\t tab   \n"
    "WE'LL see: ABCdef_ghi __init__() {a: [1,2]}  "
)


def test_tokenizer_and_template_match_kvsteer(
    kvsteer: Kvsteer,
    tokenizer: Gpt2BpeTokenizer,
    last_dump: tuple[Dump, Path],
    prompt_ids: list[int],
) -> None:
    """The reference's ids come from an independent tokenizer (llama_reference.Gpt2BpeTokenizer
    over the GGUF's vocabulary and merges) and SmolLM2's template written out in Python, with its
    default system message; kvsteer's must be the same, or nothing else here is comparable."""
    assert last_dump[0].tokens == prompt_ids
    assert 50 <= len(prompt_ids) <= 200
    assert kv_dump(kvsteer, "--raw", "-p", TRICKY_TEXT).tokens == tokenizer.encode(TRICKY_TEXT)


def test_kv_rows_match_reference(
    last_dump: tuple[Dump, Path], mid_dump: Dump, ref_prompt: ForwardResult
) -> None:
    """Post-RoPE K and V rows of the last and a middle cell, every layer (bounds: module
    docstring and the constants above)."""
    cache = ref_prompt.cache
    last = last_dump[0]
    check_rows("K, last cell", last.k, cache.k[:, -1], K_REL, K_COS)
    check_rows("V, last cell", last.v, cache.v[:, -1], V_REL, V_COS)
    check_rows(f"K, cell {MID_POS}", mid_dump.k, cache.k[:, MID_POS], K_REL, K_COS)
    check_rows(f"V, cell {MID_POS}", mid_dump.v, cache.v[:, MID_POS], V_REL, V_COS)


def test_layer0_error_is_activation_quantization(
    last_dump: tuple[Dump, Path],
    ref_prompt: ForwardResult,
    reference: LlamaReference,
    prompt_ids: list[int],
) -> None:
    """Layer 0's K/V are one Q4_1 matmul of the normed embedding; rounding the reference's
    activations to Q8_1 as llama.cpp does must explain nearly all of kvsteer's error there.
    Measured: K 2.5e-3 -> 6e-5, V 1.0e-2 -> 2.8e-4 (>= 35x)."""
    quantized = dataclasses.replace(reference, act_quant=True).forward(prompt_ids).cache
    last = last_dump[0]
    for name, got, exact, emulated in (
        ("K", last.k[0], ref_prompt.cache.k[0, -1], quantized.k[0, -1]),
        ("V", last.v[0], ref_prompt.cache.v[0, -1], quantized.v[0, -1]),
    ):
        assert rel_err(got, emulated) < rel_err(got, exact) / 10, (
            f"{name} layer 0: error vs Q8-emulating reference {rel_err(got, emulated):.3g}, "
            f"vs float64 reference {rel_err(got, exact):.3g}"
        )


def test_bounds_catch_real_bugs(
    last_dump: tuple[Dump, Path],
    ref_prompt: ForwardResult,
    reference: LlamaReference,
    prompt_ids: list[int],
) -> None:
    """Negative controls: a reference with a typical bug must miss kvsteer by far more than the
    bounds allow, so the bounds are tight enough to mean something.

    * NEOX RoPE (rotating (i, i+32) instead of (2i, 2i+1)): K is wrong from layer 0 on.
    * Positions off by one: K rotates by the wrong absolute angle. V does not change, because
      attention scores depend only on position differences; so only K can catch it.
    * The neighbouring cell (an off-by-one cell index) and reversed KV heads (a wrong head order
      inside the row) are checked on the reference's own rows.

    Measured worst layer (bound): NEOX K 1.27 (0.04), V 1.46 (0.12); positions + 1 K 0.23
    (0.04); previous cell K 1.54, V 1.69; heads reversed K 1.44, V 1.38.
    """
    last = last_dump[0]
    cache = ref_prompt.cache
    factor = 3.0  # each bug must exceed the bound at least this many times
    neox = dataclasses.replace(reference, rope_mode="neox").forward(prompt_ids).cache
    shifted = dataclasses.replace(reference, pos_shift=1).forward(prompt_ids).cache
    hp = reference.hp
    by_head = (hp.n_layer, -1, hp.n_head_kv, hp.head_dim)
    heads_reversed = (
        cache.k.reshape(by_head)[:, :, ::-1].reshape(cache.k.shape),
        cache.v.reshape(by_head)[:, :, ::-1].reshape(cache.v.shape),
    )
    errors = {
        "NEOX rope, K": (max_rel(last.k, neox.k[:, -1]), K_REL),
        "NEOX rope, V": (max_rel(last.v, neox.v[:, -1]), V_REL),
        "positions + 1, K": (max_rel(last.k, shifted.k[:, -1]), K_REL),
        "previous cell, K": (max_rel(last.k, cache.k[:, -2]), K_REL),
        "previous cell, V": (max_rel(last.v, cache.v[:, -2]), V_REL),
        "KV heads reversed, K": (max_rel(last.k, heads_reversed[0][:, -1]), K_REL),
        "KV heads reversed, V": (max_rel(last.v, heads_reversed[1][:, -1]), V_REL),
    }
    weak = {
        name: f"{err:.3g} (bound {bound})"
        for name, (err, bound) in errors.items()
        if err < factor * bound
    }
    assert not weak, f"these bugs would pass within {factor}x of the bounds: {weak}"


# --- the steering vector ----------------------------------------------------------------------

# Short traces of our own (generic task: question, steps, solution). Four rows, two shots.
TRACES = [
    {
        "question": "Tom has 3 apples and buys 4 more. How many apples does Tom have?",
        "steps": ["Tom starts with 3 apples.", "He buys 4 more, so 3 + 4 = 7."],
        "solution": "7",
    },
    {
        "question": "A train travels 60 miles in one hour. How far does it travel in 3 hours?",
        "steps": [
            "The train covers 60 miles each hour.",
            "In 3 hours it covers 60 * 3 = 180 miles.",
        ],
        "solution": "180",
    },
    {
        "question": "Which is heavier, a kilogram of feathers or a kilogram of iron?",
        "steps": ["Both weigh one kilogram.", "Equal masses weigh the same."],
        "solution": "neither",
    },
    {
        "question": "Sara reads 12 pages a day. How many pages does she read in a week?",
        "steps": ["A week has 7 days.", "She reads 12 * 7 = 84 pages."],
        "solution": "84",
    },
]
N_PAIRS, SHOTS = 4, 2


def lexical_neighbours(questions: list[str], k: int) -> list[list[int]]:
    """kvsteer's default neighbour choice (eval/contrastive.cpp, lexical_neighbours): rank the
    other rows by the Jaccard similarity of lower-cased alphanumeric word sets, ties to the lower
    index, keep k."""
    words = [set(re.findall(r"[a-z0-9]+", q.lower())) for q in questions]

    def jaccard(a: set[str], b: set[str]) -> float:
        return len(a & b) / len(a | b) if a or b else 0.0

    def ranked(i: int) -> list[int]:
        others = (j for j in range(len(words)) if j != i)
        return sorted(others, key=lambda j: (-jaccard(words[i], words[j]), j))

    return [ranked(i)[:k] for i in range(len(words))]


def contrastive_texts(rows: list[dict], k: int) -> list[tuple[str, str]]:
    """The positive and negative prompt of each row (method.md §1.2, eval/contrastive.cpp): k
    neighbours answered with steps + " The answer is X." or " The answer is X." (leading space
    kept by ChatML), then the target question and the generation prompt."""
    neighbours = lexical_neighbours([r["question"] for r in rows], k)
    pairs = []
    for i, row in enumerate(rows):
        texts = []
        for positive in (True, False):
            messages: list[tuple[str, str]] = []
            for j in neighbours[i]:
                answer = f" The answer is {rows[j]['solution']}."
                if positive:
                    answer = " ".join(rows[j]["steps"]) + answer
                messages += [("user", rows[j]["question"]), ("assistant", answer)]
            messages.append(("user", row["question"]))
            texts.append(render_smollm2(messages))
        pairs.append((texts[0], texts[1]))
    return pairs


def read_vector(path: Path, n_layer: int) -> tuple[np.ndarray, np.ndarray]:
    """``(S_k, S_v)``, each ``[n_layer][n_embd_kv]``, from a vector file (docs/vector-format.md)."""
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in GGUFReader(str(path)).tensors}
    k = np.stack([tensors[f"kvsteer.k.{il}"] for il in range(n_layer)])
    v = np.stack([tensors[f"kvsteer.v.{il}"] for il in range(n_layer)])
    return k, v


@dataclasses.dataclass(frozen=True)
class Extraction:
    pairs: list[tuple[list[int], list[int]]]  # reference token ids, (positive, negative)
    summary: dict  # what kvsteer extract prints
    path: Path  # the vector file
    k: np.ndarray  # kvsteer's vector, [n_layer][n_embd_kv]
    v: np.ndarray
    ref: SteeringVector


@pytest.fixture(scope="module")
def extraction(
    kvsteer: Kvsteer,
    reference: LlamaReference,
    tokenizer: Gpt2BpeTokenizer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Extraction:
    tmp = tmp_path_factory.mktemp("extract")
    traces = tmp / "traces.jsonl"
    traces.write_text("".join(json.dumps(row) + "\n" for row in TRACES))
    out = tmp / "vector.gguf"
    summary = kvsteer.run_json(
        "extract", *CACHE_F32, "--traces", str(traces), "--task", "generic",
        "-N", str(N_PAIRS), "-k", str(SHOTS), "-o", str(out),
    )  # fmt: skip
    texts = contrastive_texts(TRACES, SHOTS)
    pairs = [(tokenizer.encode(p), tokenizer.encode(n)) for p, n in texts]
    k, v = read_vector(out, reference.hp.n_layer)
    return Extraction(pairs, summary, out, k, v, reference.extract_vector(pairs))


def test_contrastive_prompts_match_kvsteer(kvsteer: Kvsteer, extraction: Extraction) -> None:
    """kvsteer does not print the ids of its contrastive prompts, so: the longest prompt's length
    must equal the summary's max_prompt_tokens, and kvsteer's tokenizer must give the reference's
    ids for the first pair's two rendered texts (kv-dump --raw)."""
    assert extraction.summary["n_pairs"] == N_PAIRS
    longest = max(len(ids) for pair in extraction.pairs for ids in pair)
    assert extraction.summary["max_prompt_tokens"] == longest
    positive, negative = contrastive_texts(TRACES, SHOTS)[0]
    for text, ids in ((positive, extraction.pairs[0][0]), (negative, extraction.pairs[0][1])):
        assert kv_dump(kvsteer, "--raw", "-p", text).tokens == ids


def vector_errors(
    k: np.ndarray, v: np.ndarray, ref: SteeringVector
) -> tuple[np.ndarray, np.ndarray]:
    """Per layer ``‖S − S_ref‖ / row norm`` for K and V, layers 1.. (layer 0 is never steered)."""
    err_k = np.linalg.norm(k - ref.k, axis=1) / ref.row_norm_k
    err_v = np.linalg.norm(v - ref.v, axis=1) / ref.row_norm_v
    return err_k[1:], err_v[1:]


def test_steering_vector_matches_reference(
    extraction: Extraction, reference: LlamaReference
) -> None:
    """kvsteer extract's mean(pos − neg) at the last token vs the reference's, per layer.

    Why the bound is not the rows' relative error: S = mean(pos − neg) is a difference of rows
    that are close where the two prompts' last tokens see similar contexts (V at layer 1 differs
    by 3% of the row norm), while each row carries its own 1-6% error (see the module docstring).
    ``‖ΔS‖/‖S‖`` therefore measures conditioning rather than kvsteer: measured 0.80 at V layer 1,
    where ‖S‖ is 2.7% of the row norm. The error is measured against the rows' own norm instead,
    where the rows' bounds apply (at most √2 times one row's error for a difference, less after
    averaging): measured max K 0.013, V 0.045 (4 pairs). The usual cosine is checked where the
    vector is not small (‖S‖ ≥ 0.3 of the row norm: every K layer, V layers 9 and 19-29):
    measured min K 0.99913, V 0.9945.

    V at layer 0 is exact on both sides: it is a function of the token alone (the last token is
    "\\n" in every prompt), so the difference is 0. Layer 0 is never steered; the error-to-row
    check skips it.
    """
    ref = extraction.ref
    np.testing.assert_array_equal(extraction.v[0], 0.0)
    np.testing.assert_array_equal(ref.v[0], 0.0)
    err_k, err_v = vector_errors(extraction.k, extraction.v, ref)
    assert err_k.max() <= VEC_K_ERR and err_v.max() <= VEC_V_ERR, (
        f"vector error / row norm, layers 1..: K max {err_k.max():.4g} (bound {VEC_K_ERR}), "
        f"V max {err_v.max():.4g} (bound {VEC_V_ERR})\nK {np.array2string(err_k, precision=3)}"
        f"\nV {np.array2string(err_v, precision=3)}"
    )
    k_layers = np.flatnonzero(np.linalg.norm(ref.k, axis=1) >= 0.3 * ref.row_norm_k)
    v_layers = np.flatnonzero(np.linalg.norm(ref.v, axis=1) >= 0.3 * ref.row_norm_v)
    assert len(k_layers) == reference.hp.n_layer and len(v_layers) >= 5
    check_rows("vector K", extraction.k, ref.k, np.inf, VEC_K_COS, k_layers)
    check_rows("vector V", extraction.v, ref.v, np.inf, VEC_V_COS, v_layers)


def test_vector_bounds_catch_real_bugs(extraction: Extraction, reference: LlamaReference) -> None:
    """Negative controls for extraction: reading the second-last cell, negative minus positive,
    and a sum instead of a mean must each exceed the bounds by a wide factor. Measured worst
    layer, K / V (bounds 0.04 / 0.10): position -2 0.48 / 0.51, neg − pos 1.16 / 1.07, sum
    1.75 / 1.60."""
    ref = extraction.ref
    factor = 3.0
    wrong_cell = reference.extract_vector(extraction.pairs, position=-2)
    controls = {
        "position -2": (wrong_cell.k, wrong_cell.v),
        "neg - pos": (-ref.k, -ref.v),
        "sum over pairs": (N_PAIRS * ref.k, N_PAIRS * ref.v),
    }
    weak = {}
    for name, (k, v) in controls.items():
        # kvsteer's vector against the buggy reference: the bug must show in K or in V.
        err_k, err_v = vector_errors(extraction.k, extraction.v, dataclasses.replace(ref, k=k, v=v))
        if err_k.max() < factor * VEC_K_ERR and err_v.max() < factor * VEC_V_ERR:
            weak[name] = f"K {err_k.max():.3g}, V {err_v.max():.3g}"
    assert not weak, f"these extraction bugs would pass within {factor}x of the bounds: {weak}"


# --- the steered continuation -----------------------------------------------------------------


def steered_logits(
    reference: LlamaReference, cache: KvCache, pos: int, s_k: np.ndarray, s_v: np.ndarray,
    c_k: float, c_v: float,
) -> np.ndarray:  # fmt: skip
    """The reference's offset-token logits after adding c·S to cell ``pos`` of layers >= 1
    (kvsteer's default ``--layers 1-``: layer 0 is never steered, method.md §1.4)."""
    delta_k, delta_v = c_k * s_k, c_v * s_v
    delta_k[0] = 0.0
    delta_v[0] = 0.0
    return reference.forward([NEWLINE], cache.with_cell_added(pos, delta_k, delta_v)).logits


def rounding_sensitivity(
    reference: LlamaReference, prompt_ids: list[int], s_k: np.ndarray, s_v: np.ndarray,
    c_k: float, c_v: float, want: np.ndarray,
) -> tuple[float, float]:  # fmt: skip
    """How far llama.cpp's activation rounding alone moves the steered logits of this setting: the
    reference run with the same Q8 rounding (``act_quant=True``, prompt and offset token) against
    the float64 reference, as (relative error, 1 − cosine). Small for a well-conditioned setting
    (0.015–0.037 at c_v 4 with c_k 0–5); 0.09–0.15 from c_k 6 on, where the edited key starts to
    capture the offset token's attention."""
    quantized = dataclasses.replace(reference, act_quant=True)
    cache = quantized.forward(prompt_ids).cache
    got = steered_logits(quantized, cache, cache.n_tokens - 1, s_k, s_v, c_k, c_v)
    return rel_err(got, want), 1.0 - cosine(got, want)


@pytest.mark.parametrize(("c_k", "c_v"), [(0.0, 4.0), (8.0, 4.0)], ids=["values", "keys+values"])
def test_steered_offset_logits_match_reference(
    c_k: float,
    c_v: float,
    kvsteer: Kvsteer,
    reference: LlamaReference,
    ref_prompt: ForwardResult,
    prompt_ids: list[int],
    last_dump: tuple[Dump, Path],
    extraction: Extraction,
    tmp_path: Path,
) -> None:
    """Edit the last prompt cell with kvsteer's extracted vector (the same vector on both sides,
    so that only the edit and the continuation are compared), decode "\\n", compare the logits.

    The logits inherit the final hidden state's error (module docstring; measured figures at
    LOGITS_REL), the largest single logit error being 0.55 (c_v = 4) and 1.04 (c_k = 8, c_v = 4).
    The argmax check needs a top-2 margin above that: c_v = 4 ("A", margin 1.33) and c_k = 8
    with c_v = 4 ("\\n", margin 1.61) have one; many other settings on this 135M model are near
    ties (unsteered: "A" by 0.00). The K edit at c_k = 8 matters on its own: it moves the argmax
    from "A" to "\\n".

    The bound of a steered setting grows with its measured rounding sensitivity
    (``rounding_sensitivity``): at c_k = 8 the Q8 rounding alone moved the reference's logits by
    0.149 on a Zen 3 machine, where kvsteer's gap was 0.155 (0.037 elsewhere, with that machine's
    own extracted vector).

    Controls: kvsteer's logits must miss, by 3x the well-conditioned bound, the reference without
    the edit, with the edit on the previous cell, and (with c_k) without the K half of the edit.
    Measured (3x the bound = 0.225; values / keys+values): no edit 0.51 / 0.58, previous cell
    0.49 / 0.51, K edit lost 0.46; the edit moves the reference's logits by 0.92 / 1.02, 27-51x
    the gap (Zen 3: 1.50 at c_k = 8, 9.7x its gap; at least 5x is asserted).
    """
    logits_file = tmp_path / "steered.f32"
    dump = kv_dump(
        kvsteer, "-p", PROMPT, "--steer", str(extraction.path), "--coef-k", str(c_k),
        "--coef-v", str(c_v), "--offset-id", str(NEWLINE), "--logits-out", str(logits_file),
    )  # fmt: skip
    hp = reference.hp
    got = read_logits(logits_file, hp.n_vocab)
    unsteered_kv = read_logits(last_dump[1], hp.n_vocab)

    # The edit itself, on kvsteer's side: the dumped cell is the unedited cell plus c·S on layers
    # 1.. (F32 cache: float32 rounding of the sum only) and untouched on layer 0.
    s_k, s_v = extraction.k, extraction.v
    unedited = last_dump[0]
    np.testing.assert_allclose(dump.k[1:], unedited.k[1:] + c_k * s_k[1:], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dump.v[1:], unedited.v[1:] + c_v * s_v[1:], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dump.k[0], unedited.k[0])
    np.testing.assert_array_equal(dump.v[0], unedited.v[0])

    cache = ref_prompt.cache
    last = cache.n_tokens - 1
    want = steered_logits(reference, cache, last, s_k, s_v, c_k, c_v)
    unsteered = reference.forward([NEWLINE], cache).logits
    gap, cos = rel_err(got, want), cosine(got, want)
    # kvsteer's rounding is another draw of the rounding the emulation measures: its gap may reach
    # twice the emulation's, never less than the well-conditioned bound.
    sens_rel, sens_cos = rounding_sensitivity(reference, prompt_ids, s_k, s_v, c_k, c_v, want)
    bound_rel = max(LOGITS_REL, 2.0 * sens_rel)
    bound_cos = min(LOGITS_COS, 1.0 - 2.0 * sens_cos)
    assert gap <= bound_rel and cos >= bound_cos, (
        f"steered logits: rel {gap:.4g}, cos {cos:.6f}; bounds {bound_rel:.4g}, {bound_cos:.6f} "
        f"(Q8 rounding moves the reference by rel {sens_rel:.4g})")
    assert int(got.argmax()) == int(want.argmax())
    assert rel_err(unsteered_kv, unsteered) <= LOGITS_REL, "the unsteered logits disagree"

    effect = rel_err(unsteered, want)
    assert effect >= 5 * gap, f"the edit moves the logits by {effect:.3g}, the gap is {gap:.3g}"
    controls = {
        "no edit": unsteered,
        "edit on the previous cell": steered_logits(reference, cache, last - 1, s_k, s_v, c_k, c_v),
    }
    if c_k != 0.0:
        controls["K edit lost"] = steered_logits(reference, cache, last, s_k, s_v, 0.0, c_v)
    factor = 3.0
    misses = {name: rel_err(got, x) for name, x in controls.items()}
    weak = {name: f"{err:.3g}" for name, err in misses.items() if err < factor * LOGITS_REL}
    assert not weak, f"kvsteer's logits fit these wrong edits within {factor}x the bound: {weak}"
