"""Fixtures of the kvsteer package tests: models, the CLI to compare with, small data files.

Like tests/python, a missing model or binary is a broken setup and fails (never skips). ctest
(`make test`, label python) sets the variables and puts the built package on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from required_env import required_path  # noqa: E402
TRACES = ROOT / "examples" / "arithmetic_traces.jsonl"


def _required_file(var: str, hint: str) -> Path:
    return required_path(var, hint)


@pytest.fixture(scope="session")
def stories_gguf() -> Path:
    return _required_file("KVSTEER_STORIES_GGUF", "scripts/setup_models.sh makes stories260K.gguf")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _required_file(
        "KVSTEER_SMOLLM2_GGUF", "scripts/setup_models.sh fetches SmolLM2-135M-Instruct.Q4_1.gguf"
    )


@pytest.fixture(scope="session")
def stories(stories_gguf: Path):
    import kvsteer

    return kvsteer.Model(stories_gguf)


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path):
    import kvsteer

    return kvsteer.Model(smollm2_gguf)


class Cli:
    """The kvsteer binary, one thread (as the package calls below use n_threads=1)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str) -> str:
        cmd = [str(self.binary), *args, "-t", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli(_required_file("KVSTEER_CLI", "point it at build/<preset>/tools/cli/kvsteer"))


@pytest.fixture(scope="session")
def traces() -> Path:
    return TRACES


@pytest.fixture(scope="session")
def gsm8k_items(tmp_path_factory) -> Path:
    """The example traces as a GSM8K-format test file (question, answer with '#### n')."""
    path = tmp_path_factory.mktemp("data") / "test.jsonl"
    with open(TRACES) as f, open(path, "w") as out:
        for line in f:
            row = json.loads(line)
            answer = " ".join(row["steps"]) + "\n#### " + row["solution"]
            out.write(json.dumps({"question": row["query"], "answer": answer}) + "\n")
    return path


@pytest.fixture(scope="session")
def stories_vector(stories):
    """A small vector on stories260K (ChatML prompts: the model has no template)."""
    import kvsteer

    return kvsteer.extract(
        stories, str(TRACES), n_pairs=4, shots=2, prompt_family="chatml", n_threads=1
    )
