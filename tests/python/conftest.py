"""Fixtures shared by the Python tests: the kvsteer binary, the model, and the reference.

The tests compare kvsteer with an independent implementation on a real model, so a missing binary
or model is a broken setup, not a reason to skip: every fixture here fails with the variable or
path to fix.
"""

from __future__ import annotations

import os
import sys

# One BLAS thread, set before numpy loads OpenBLAS: the reference's results then do not depend on
# the machine's core count, and on a loaded 2-core machine two threads ran the float64 forward
# pass 3x slower than one (measured: 300 tokens in 2.5 s vs 8.3 s).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from kvsteer_cli import Kvsteer  # noqa: E402
from required_env import required_path  # noqa: E402
from llama_reference import Gpt2BpeTokenizer, LlamaReference  # noqa: E402


def _required_file(var: str, hint: str) -> Path:
    return required_path(var, hint)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _required_file(
        "KVSTEER_SMOLLM2_GGUF",
        "point it at SmolLM2-135M-Instruct.Q4_1.gguf (scripts/setup_models.sh puts it in "
        "~/.cache/kvsteer/models/)",
    )


@pytest.fixture(scope="session")
def kvsteer(smollm2_gguf: Path) -> Kvsteer:
    binary = _required_file(
        "KVSTEER_CLI", "point it at the kvsteer binary (build/<preset>/tools/cli/kvsteer)"
    )
    if not os.access(binary, os.X_OK):
        pytest.fail(f"KVSTEER_CLI={binary} is not executable", pytrace=False)
    return Kvsteer(binary, smollm2_gguf)


@pytest.fixture(scope="session")
def reference(smollm2_gguf: Path) -> LlamaReference:
    return LlamaReference.load(smollm2_gguf)


@pytest.fixture(scope="session")
def tokenizer(smollm2_gguf: Path) -> Gpt2BpeTokenizer:
    return Gpt2BpeTokenizer(smollm2_gguf)
