"""An independent float64 reference of a llama-architecture GGUF model and of KV cache steering.

It shares no code with kvsteer or libllama: the file is read with gguf-py's ``GGUFReader``, every
tensor is dequantized with gguf-py's own dequantizers, and the forward pass is plain numpy in
float64. The quantized weights are therefore the only thing the two implementations share, so any
difference beyond the rounding of llama.cpp's quantized matmul path (activations quantized to
Q8_0/Q8_1 before each dot product) points at a bug on one side.

What it mirrors from llama.cpp, on purpose:

* Cached keys are post-RoPE and a cache row is head-major (``[h0 d0..d63, h1 d0..d63, ...]``),
  which is how llama.cpp stores a cell (shared/docs/llama-internals.md §1.2, §2).
* RoPE rotates adjacent pairs ``(2i, 2i+1)`` ("normal" mode, LLAMA_ROPE_TYPE_NORM): the GGUF
  converter permuted the Hugging Face Q/K rows so that llama.cpp's layout is this one.
* Query head ``h`` reads KV head ``h // (n_head / n_head_kv)``, as ggml's broadcast in
  ``ggml_mul_mat`` does.

Steering (method.md §1.3-1.4): ``extract_vector`` is the mean over pairs of the positive minus
the negative prompt's last-token K and V rows; ``forward`` with ``past`` continues from a cache
that the caller may have edited, which is how the offset token sees a steered cell.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, quants

RopeMode = Literal["normal", "neox"]


@dataclass(frozen=True)
class Hparams:
    """Shapes and constants read from the GGUF metadata (``llama.*`` keys)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    rope_base: float
    rope_dims: int
    rms_eps: float

    @property
    def n_embd_kv(self) -> int:
        """Width of one cached K or V row."""
        return self.n_head_kv * self.head_dim


# The block type llama.cpp's CPU backend quantizes a matmul's activations to before the dot
# product with a weight of the given type (ggml-cpu's ``vec_dot_type``); float weights take the
# activations as they are here.
_VEC_DOT_TYPE: dict[GGMLQuantizationType, str | None] = {
    GGMLQuantizationType.F32: None,
    GGMLQuantizationType.Q4_0: "q8_0",
    GGMLQuantizationType.Q5_0: "q8_0",
    GGMLQuantizationType.Q8_0: "q8_0",
    GGMLQuantizationType.Q4_1: "q8_1",
    GGMLQuantizationType.Q5_1: "q8_1",
}


@dataclass(frozen=True)
class Matrix:
    """A weight matrix ``[out][in]``, float32 as gguf-py dequantizes it, and the activation
    block type llama.cpp's CPU matmul would use with it (``None``: float activations)."""

    w: np.ndarray
    vec_dot_type: str | None


@dataclass(frozen=True)
class Layer:
    """One block's weights."""

    attn_norm: np.ndarray
    w_q: Matrix
    w_k: Matrix
    w_v: Matrix
    w_o: Matrix
    ffn_norm: np.ndarray
    w_gate: Matrix
    w_up: Matrix
    w_down: Matrix


@dataclass(frozen=True)
class KvCache:
    """The cache of one sequence: ``k``, ``v`` are ``[n_layer][n_tokens][n_head_kv*head_dim]``.

    Row ``t`` holds position ``t``: the reference never compacts or reorders cells.
    """

    k: np.ndarray
    v: np.ndarray

    @property
    def n_tokens(self) -> int:
        return self.k.shape[1]

    def with_cell_added(self, pos: int, delta_k: np.ndarray, delta_v: np.ndarray) -> KvCache:
        """A copy with ``delta_k``/``delta_v`` (``[n_layer][n_embd_kv]``) added to cell ``pos``.

        A copy, so that the unsteered cache stays available for the comparison runs.
        """
        k, v = self.k.copy(), self.v.copy()
        k[:, pos] += delta_k
        v[:, pos] += delta_v
        return KvCache(k, v)


@dataclass(frozen=True)
class SteeringVector:
    """``k``, ``v``: ``[n_layer][n_embd_kv]``, the mean difference. ``row_norm_k``,
    ``row_norm_v``: ``[n_layer]``, the RMS over all prompts of the norm of the row the difference
    was taken from. A difference of nearly equal rows is small, while implementation error scales
    with the rows, so tests measure a vector's error against these norms."""

    k: np.ndarray
    v: np.ndarray
    row_norm_k: np.ndarray
    row_norm_v: np.ndarray


@dataclass(frozen=True)
class ForwardResult:
    """The cache after the forward pass (past cells first) and the last token's logits."""

    cache: KvCache
    logits: np.ndarray  # [n_vocab], float64


def _field(reader: GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    if field is None:
        raise KeyError(f"GGUF key '{key}' is missing; is this a llama-architecture model?")
    return field.contents()


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _quantize_q8(x: np.ndarray) -> np.ndarray:
    """``x`` rounded as ggml's Q8_0/Q8_1 store it: per block of 32 along the last axis,
    ``d = max|x|/127`` kept in f16 and ``q = round(x/d)`` (the same values for both types)."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    d = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    q = np.round(blocks * inv)
    return (q * d.astype(np.float16).astype(np.float64)).reshape(x.shape)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Weights:
    """A model's dequantized tensors; shared (never copied) by every reference variant."""

    hp: Hparams
    tok_embd: np.ndarray  # [n_vocab][n_embd]
    output_norm: np.ndarray
    output: Matrix  # [n_vocab][n_embd]; the token embedding when tied
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class LlamaReference:
    """Float64 llama forward pass over dequantized GGUF weights.

    The defaults give the exact float64 model. The other fields build variants for the tests'
    controls (``dataclasses.replace(ref, rope_mode="neox")``):

    * ``rope_mode="neox"`` and ``pos_shift=1`` are deliberate bugs (rotate the wrong pairs; rotate
      every token as if it sat one position later): a test shows that its bounds catch them.
    * ``act_quant=True`` quantizes every matmul's activations the way llama.cpp's CPU backend does
      (blocks of 32 to Q8_1 for Q4_1 weights, Q8_0 for Q8_0 weights: ``d = max|x|/127`` stored as
      f16, ``q = round(x/d)``). It shows where kvsteer's error comes from: at layer 0, where no
      earlier difference feeds in, the discrepancy drops ~40x, which a test checks. (Q8_1's
      block sum, which llama.cpp rounds to f16 on its own for the Q4_1 minimum term, is not
      emulated.)
    """

    weights: Weights
    rope_mode: RopeMode = "normal"
    pos_shift: int = 0
    act_quant: bool = False

    @classmethod
    def load(cls, path: str | Path) -> LlamaReference:
        return cls(load_weights(str(path)))

    @property
    def hp(self) -> Hparams:
        return self.weights.hp

    def _matmul(self, x: np.ndarray, m: Matrix) -> np.ndarray:
        """``x @ m.w.T`` in float64, optionally with llama.cpp's activation quantization."""
        if self.act_quant and m.vec_dot_type is not None:
            x = _quantize_q8(x)
        return x @ m.w.T

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotates ``x`` (``[n_tokens][n_heads][head_dim]``) by its positions.

        The angles are computed in float64 from ``base^(-2i/n_dims)``. llama.cpp accumulates the
        same powers by repeated float32 multiplication, which differs by ~1e-6 relative in the
        angle: negligible next to the quantized-matmul error.
        """
        hp = self.hp
        half = hp.rope_dims // 2
        inv_freq = hp.rope_base ** (-2.0 * np.arange(half) / hp.rope_dims)
        theta = (positions[:, None] + self.pos_shift) * inv_freq[None, :]  # [n_tokens][half]
        cos = np.cos(theta)[:, None, :]
        sin = np.sin(theta)[:, None, :]
        out = x.copy()
        if self.rope_mode == "normal":
            x0, x1 = x[..., 0 : hp.rope_dims : 2], x[..., 1 : hp.rope_dims : 2]
            out[..., 0 : hp.rope_dims : 2] = x0 * cos - x1 * sin
            out[..., 1 : hp.rope_dims : 2] = x0 * sin + x1 * cos
        else:
            x0, x1 = x[..., :half], x[..., half : hp.rope_dims]
            out[..., :half] = x0 * cos - x1 * sin
            out[..., half : hp.rope_dims] = x0 * sin + x1 * cos
        return out

    def forward(self, tokens: Sequence[int], past: KvCache | None = None) -> ForwardResult:
        """Runs ``tokens`` after the cells of ``past`` (positions continue from them).

        With ``past`` edited by ``KvCache.with_cell_added`` this is the paper's steered step: the
        new token attends to the edited cell, whose own hidden states were computed unsteered.
        """
        hp = self.hp
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"tokens must be a non-empty list of ids, got shape {ids.shape}")
        if ids.min() < 0 or ids.max() >= hp.n_vocab:
            raise ValueError(
                f"token ids must lie in [0, {hp.n_vocab}), got {ids.min()}..{ids.max()}"
            )
        n_past = 0 if past is None else past.n_tokens
        n_new = ids.size
        n_all = n_past + n_new
        positions = np.arange(n_past, n_all, dtype=np.float64)
        group = hp.n_head // hp.n_head_kv
        # Query i (absolute position n_past + i) sees cells 0 .. n_past + i; rows follow the
        # stacking of queries below (group-major, then token).
        causal = np.arange(n_all)[None, :] > (n_past + np.arange(n_new))[:, None]
        mask = np.tile(np.where(causal, -np.inf, 0.0), (group, 1))
        scale = 1.0 / np.sqrt(hp.head_dim)

        k_all = np.empty((hp.n_layer, n_all, hp.n_embd_kv))
        v_all = np.empty((hp.n_layer, n_all, hp.n_embd_kv))
        if past is not None:
            k_all[:, :n_past] = past.k
            v_all[:, :n_past] = past.v

        w = self.weights
        x = w.tok_embd[ids].astype(np.float64)
        for il, layer in enumerate(w.layers):
            h = _rms_norm(x, layer.attn_norm, hp.rms_eps)
            q = self._matmul(h, layer.w_q).reshape(n_new, hp.n_head, hp.head_dim)
            k = self._matmul(h, layer.w_k).reshape(n_new, hp.n_head_kv, hp.head_dim)
            k_all[il, n_past:] = self._rope(k, positions).reshape(n_new, hp.n_embd_kv)
            v_all[il, n_past:] = self._matmul(h, layer.w_v)
            q = self._rope(q, positions)

            # Grouped-query attention as one batched matmul per KV head: query head h reads KV
            # head h // group, so the group's queries are stacked as rows.
            q = q.reshape(n_new, hp.n_head_kv, group, hp.head_dim).transpose(1, 2, 0, 3)
            q = q.reshape(hp.n_head_kv, group * n_new, hp.head_dim)
            keys = k_all[il].reshape(n_all, hp.n_head_kv, hp.head_dim).transpose(1, 2, 0)
            values = v_all[il].reshape(n_all, hp.n_head_kv, hp.head_dim).transpose(1, 0, 2)
            scores = (q @ keys) * scale + mask  # [n_head_kv][group * n_new][n_all]
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = (probs @ values).reshape(hp.n_head_kv, group, n_new, hp.head_dim)
            attn = attn.transpose(2, 0, 1, 3).reshape(n_new, hp.n_embd)
            x = x + self._matmul(attn, layer.w_o)

            h = _rms_norm(x, layer.ffn_norm, hp.rms_eps)
            gate = _silu(self._matmul(h, layer.w_gate))
            x = x + self._matmul(gate * self._matmul(h, layer.w_up), layer.w_down)

        last = _rms_norm(x[-1:], w.output_norm, hp.rms_eps)
        logits = self._matmul(last, w.output)[0]
        return ForwardResult(KvCache(k_all, v_all), logits)

    def extract_vector(
        self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], position: int = -1
    ) -> SteeringVector:
        """Mean over pairs of the K and V rows at ``position`` (from the end; -1 = the last
        token), positive minus negative: method.md §1.3. Keys are post-RoPE, so the key
        difference mixes two absolute positions, exactly as the paper's code does."""
        if not pairs:
            raise ValueError("extract_vector needs at least one (positive, negative) pair")
        rows_k, rows_v = [], []  # [2 * n_pairs][n_layer][n_embd_kv], positive then negative
        for prompt in (ids for pair in pairs for ids in pair):
            cache = self.forward(prompt).cache
            rows_k.append(cache.k[:, position])
            rows_v.append(cache.v[:, position])
        k, v = np.array(rows_k), np.array(rows_v)
        return SteeringVector(
            k=(k[0::2] - k[1::2]).mean(axis=0),
            v=(v[0::2] - v[1::2]).mean(axis=0),
            row_norm_k=np.sqrt((np.linalg.norm(k, axis=-1) ** 2).mean(axis=0)),
            row_norm_v=np.sqrt((np.linalg.norm(v, axis=-1) ** 2).mean(axis=0)),
        )


@functools.lru_cache(maxsize=2)
def load_weights(path: str) -> Weights:
    """Reads and dequantizes a llama GGUF once per process (a few seconds for 135M parameters).

    Weights stay float32, the type gguf-py dequantizes to (``d*q + m`` of f16 scales and small
    integers is exact or within 1 ulp in float32); matmuls promote them to float64 per use, which
    halves the memory of keeping float64 copies.
    """
    reader = GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture '{arch}', expected 'llama'")
    tensors = {t.name: t for t in reader.tensors}

    def tensor(name: str) -> np.ndarray:
        if name not in tensors:
            raise KeyError(f"{path}: tensor '{name}' is missing")
        t = tensors[name]
        return np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

    def matrix(name: str) -> Matrix:
        w = tensor(name)
        qtype = tensors[name].tensor_type
        if qtype not in _VEC_DOT_TYPE:
            handled = sorted(t.name for t in _VEC_DOT_TYPE)
            raise ValueError(f"{path}: '{name}' is {qtype.name}; the reference has {handled}")
        return Matrix(w, _VEC_DOT_TYPE[qtype])

    if reader.get_field("llama.rope.scaling.type") is not None:
        raise ValueError(f"{path}: RoPE scaling is not implemented in the reference")
    n_embd = int(_field(reader, "llama.embedding_length"))
    n_head = int(_field(reader, "llama.attention.head_count"))
    head_dim = n_embd // n_head
    tok_embd = tensor("token_embd.weight")
    hp = Hparams(
        n_layer=int(_field(reader, "llama.block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=head_dim,
        n_vocab=tok_embd.shape[0],
        rope_base=float(_field(reader, "llama.rope.freq_base")),
        rope_dims=int(_field(reader, "llama.rope.dimension_count")),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
    )
    layers = tuple(
        Layer(
            attn_norm=tensor(f"blk.{il}.attn_norm.weight"),
            w_q=matrix(f"blk.{il}.attn_q.weight"),
            w_k=matrix(f"blk.{il}.attn_k.weight"),
            w_v=matrix(f"blk.{il}.attn_v.weight"),
            w_o=matrix(f"blk.{il}.attn_output.weight"),
            ffn_norm=tensor(f"blk.{il}.ffn_norm.weight"),
            w_gate=matrix(f"blk.{il}.ffn_gate.weight"),
            w_up=matrix(f"blk.{il}.ffn_up.weight"),
            w_down=matrix(f"blk.{il}.ffn_down.weight"),
        )
        for il in range(hp.n_layer)
    )
    # Tied output: the token embedding doubles as the output matrix (same array, same type).
    if "output.weight" in tensors:
        output = matrix("output.weight")
    else:
        output = Matrix(tok_embd, _VEC_DOT_TYPE[tensors["token_embd.weight"].tensor_type])
    return Weights(hp, tok_embd, tensor("output_norm.weight"), output, layers)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the vocabulary is written in it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Gpt2BpeTokenizer:
    """Byte-level BPE from the GGUF's vocabulary and merges, with the "smollm" pre-tokenizer.

    The pre-tokenizer is llama.cpp's for ``tokenizer.ggml.pre = smollm`` (the StarCoder one):
    every digit on its own, then GPT-2's word regex. Python's ``re`` has no ``\\p{L}``, so the
    regex here is exact for ASCII text only; ``encode`` refuses anything else rather than risk a
    silent mismatch. Control and user-defined tokens (``<|im_start|>`` ...) are matched in the
    text first, longest first, as llama.cpp does with ``parse_special``. No BOS is added:
    SmolLM2's ``add_bos_token`` is false, and the constructor refuses a vocabulary that wants one.
    """

    _WORD = re.compile(
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
    )
    _DIGIT = re.compile(r"([0-9])")

    def __init__(self, path: str | Path) -> None:
        reader = GGUFReader(str(path))
        if _field(reader, "tokenizer.ggml.model") != "gpt2":
            raise ValueError(f"{path}: tokenizer is not gpt2 BPE")
        if _field(reader, "tokenizer.ggml.pre") != "smollm":
            raise ValueError(f"{path}: pre-tokenizer is not 'smollm'; its regex is not implemented")
        add_bos = reader.get_field("tokenizer.ggml.add_bos_token")
        if add_bos is not None and add_bos.contents():
            raise ValueError(f"{path}: the vocabulary asks for BOS; not implemented")
        tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")  # type: ignore[assignment]
        types: list[int] = _field(reader, "tokenizer.ggml.token_type")  # type: ignore[assignment]
        merges: list[str] = _field(reader, "tokenizer.ggml.merges")  # type: ignore[assignment]
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.ranks: dict[tuple[str, str], int] = {
            tuple(m.split(" ", 1)): r for r, m in enumerate(merges)  # type: ignore[misc]
        }
        parsed = (3, 4)  # LLAMA_TOKEN_TYPE_CONTROL and _USER_DEFINED: matched as whole tokens
        specials = [t for t, ty in zip(tokens, types) if ty in parsed]
        specials.sort(key=len, reverse=True)
        self._special = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")")
        self._byte_map = _bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, word: str) -> list[int]:
        """Merges the lowest-ranked adjacent pair until none is in the merge list (leftmost first
        on ties, as llama.cpp's priority queue does)."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = zip(parts, parts[1:])
            ranked = [(self.ranks.get(pair, 1 << 30), i) for i, pair in enumerate(pairs)]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.vocab[p] for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens parsed, nothing added."""
        if not text.isascii():
            raise ValueError("Gpt2BpeTokenizer handles ASCII text only (see the class docstring)")
        ids: list[int] = []
        # split() with a capturing group puts the matched special tokens at odd indices.
        for index, fragment in enumerate(self._special.split(text)):
            if index % 2 == 1:
                ids.append(self.vocab[fragment])
                continue
            for chunk in self._DIGIT.split(fragment):
                for word in self._WORD.findall(chunk):
                    ids.extend(self._bpe("".join(self._byte_map[b] for b in word.encode())))
        return ids


SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def render_smollm2(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True) -> str:
    """SmolLM2's chat template (the GGUF's Jinja, written out): ChatML, content kept verbatim,
    and the default system message first unless the conversation starts with one (method.md §1.2).
    """
    out = ""
    for i, (role, content) in enumerate(messages):
        if i == 0 and role != "system":
            out += f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
        out += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``‖a − b‖ / ‖b‖``, with ``b`` the reference."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

