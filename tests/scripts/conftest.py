"""Fixtures of the study scripts' tests that run the real CLI on the reasoning organism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))
from required_env import required_path  # noqa: E402


@pytest.fixture(scope="session")
def cli() -> Path:
    return required_path("KVSTEER_CLI", "the kvsteer binary (build/<preset>/tools/cli/kvsteer)")


@pytest.fixture(scope="session")
def organism() -> Path:
    return required_path("KVSTEER_ORGANISM_GGUF", "organism/model/organism.gguf")


@pytest.fixture(scope="session")
def organism_data(cli: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """Makes a folder of the organism's numeric arithmetic items: test.jsonl (n_test items) and
    traces.jsonl (n_traces training items, the traces of extraction and few-shot prompts)."""
    def make(n_test: int, n_traces: int) -> Path:
        d = tmp_path_factory.mktemp("data")
        recipe = ["--family", "arith", "--max-value", "39", "--max-operand", "9",
                  "--variant", "numeric"]
        for seed, n, split, name in ((1, n_test, "test", "test"), (2, n_traces, "train", "traces")):
            subprocess.run([str(cli), "organism", "gen", "--seed", str(seed), "--n", str(n),
                            "--split", split, *recipe, "--out", str(d / f"{name}.jsonl")],
                           check=True, stdout=subprocess.DEVNULL)
        return d
    return make
