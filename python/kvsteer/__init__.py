"""kvsteer: KV cache steering (Belitsky et al., 2025) on GGUF models, from Python.

The engine is kvsteer's C++ library on llama.cpp; this package calls it directly
(no second implementation). Typical use::

    import kvsteer
    model = kvsteer.Model("SmolLM2-135M-Instruct.Q4_1.gguf")
    vec = kvsteer.extract(model, "arc_oai.jsonl", task="arc", n_pairs=50, shots=3)
    out = kvsteer.generate(model, ["Question ..."], steer=vec, c_v=6)

Decoding releases the GIL; Ctrl-C stops a call with KeyboardInterrupt. Errors are
kvsteer.Error subclasses (InvalidArgumentError is also a ValueError, NotFoundError a
FileNotFoundError, IoError an OSError). See docs/python.md.
"""

from ._errors import (
    BackendError,
    CancelledError,
    Error,
    FormatError,
    InvalidArgumentError,
    IoError,
    NotFoundError,
    UnsupportedError,
)
from ._interop import load_npz, load_safetensors, save_npz, save_safetensors
from ._kvsteer import (
    Generation,
    KvCell,
    Model,
    Session,
    SteeringVector,
    cpu_features,
    diagnose,
    eval,
    eval_like,
    extract,
    generate,
    kv_cell,
    set_log_level,
    sweep,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CancelledError",
    "Error",
    "FormatError",
    "Generation",
    "InvalidArgumentError",
    "IoError",
    "KvCell",
    "Model",
    "NotFoundError",
    "Session",
    "SteeringVector",
    "UnsupportedError",
    "cpu_features",
    "diagnose",
    "eval",
    "eval_like",
    "extract",
    "generate",
    "kv_cell",
    "load_npz",
    "load_safetensors",
    "save_npz",
    "save_safetensors",
    "set_log_level",
    "sweep",
]
