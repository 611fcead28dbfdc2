"""Vector exchange with numpy and PyTorch code: ``.npz`` and ``.safetensors`` files.

Both hold two float32 tensors, ``keys`` [n_layer, n_embd_k_gqa] and ``values``
[n_layer, n_embd_v_gqa] (a row of NaN: a layer without a vector), and the vector's
metadata (SteeringVector.metadata) as JSON, so a file written here can be read
back into kvsteer and checked against the model it was made for. Files are
written to a temporary name and renamed, like the library's own outputs.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, Optional

import numpy as np

from ._errors import FormatError, IoError, NotFoundError
from ._kvsteer import Model, SteeringVector

_FORMAT = "kvsteer-steering-vector"
# safetensors dtype names -> numpy dtypes (BF16 is handled separately).
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def _write_atomic(path: "os.PathLike[str] | str", write) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kvsteer-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise IoError(f"cannot write {path}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise NotFoundError(f"{path} does not exist")


def save_npz(vector: SteeringVector, path: "os.PathLike[str] | str") -> None:
    """Writes ``keys``, ``values`` and ``metadata`` (a JSON string) with numpy.savez."""
    keys, values = vector.to_numpy()
    meta = np.array(json.dumps(vector.metadata))
    _write_atomic(path, lambda f: np.savez(f, keys=keys, values=values, metadata=meta))


def load_npz(path: "os.PathLike[str] | str", model: Optional[Model] = None) -> SteeringVector:
    """Reads an .npz with ``keys`` and ``values`` (and optionally ``metadata``).

    The shapes are checked against ``model``, or against the fingerprint in the
    metadata when no model is given (SteeringVector.from_numpy).
    """
    path = os.fspath(path)
    _check_exists(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [n for n in ("keys", "values") if n not in f.files]
            if missing:
                raise FormatError(f"{path} has no {' or '.join(missing)} array (has {f.files})")
            keys, values = f["keys"], f["values"]
            meta = json.loads(str(f["metadata"])) if "metadata" in f.files else None
    except (ValueError, OSError) as e:
        raise FormatError(f"{path} is not a readable .npz file: {e}") from e
    return SteeringVector.from_numpy(keys, values, model=model, metadata=meta)


def save_safetensors(vector: SteeringVector, path: "os.PathLike[str] | str") -> None:
    """Writes ``keys`` and ``values`` as F32 safetensors; the metadata goes in ``__metadata__``.

    Readable with ``safetensors.torch.load_file(path)`` (no kvsteer needed).
    """
    keys, values = vector.to_numpy()
    tensors = {"keys": np.ascontiguousarray(keys, "<f4"), "values": np.ascontiguousarray(values, "<f4")}
    header: dict[str, Any] = {
        "__metadata__": {"format": _FORMAT, "kvsteer": json.dumps(vector.metadata)}
    }
    offset = 0
    for name, array in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned

    def write(f) -> None:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in tensors.values():
            f.write(array.tobytes())

    _write_atomic(path, write)


def _read_tensor(buf: bytes, info: dict, name: str, path: str) -> np.ndarray:
    dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
    count = int(np.prod(shape)) if shape else 1
    raw = buf[begin:end]
    if dtype == "BF16":
        if len(raw) != 2 * count:
            raise FormatError(f"{path}: tensor {name} has {len(raw)} bytes for shape {shape}")
        wide = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return wide.view(np.float32).reshape(shape)
    if dtype not in _DTYPES:
        raise FormatError(f"{path}: tensor {name} has dtype {dtype}; expected F32, F16, F64 or BF16")
    np_dtype = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    if len(raw) != np_dtype.itemsize * count:
        raise FormatError(f"{path}: tensor {name} has {len(raw)} bytes for shape {shape}")
    return np.frombuffer(raw, np_dtype).reshape(shape).astype(np.float32)


def load_safetensors(
    path: "os.PathLike[str] | str", model: Optional[Model] = None
) -> SteeringVector:
    """Reads ``keys`` and ``values`` (F32, F16, BF16 or F64) from a safetensors file.

    A file written by save_safetensors carries the fingerprint of its model; a file
    made elsewhere (e.g. ``safetensors.torch.save_file({"keys": K, "values": V}, path)``)
    needs ``model`` to check the shapes against.
    """
    path = os.fspath(path)
    _check_exists(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError) as e:
        raise FormatError(f"{path} is not a safetensors file: {e}") from e
    body = data[8 + n :]
    meta_text = header.get("__metadata__", {}) or {}
    missing = [name for name in ("keys", "values") if name not in header]
    if missing:
        names = [k for k in header if k != "__metadata__"]
        raise FormatError(f"{path} has no tensor {' or '.join(missing)} (has {names})")
    try:
        keys = _read_tensor(body, header["keys"], "keys", path)
        values = _read_tensor(body, header["values"], "values", path)
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: malformed tensor entry: {e}") from e
    meta = json.loads(meta_text["kvsteer"]) if "kvsteer" in meta_text else None
    return SteeringVector.from_numpy(keys, values, model=model, metadata=meta)
