"""Runs the kvsteer CLI for the tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest


class Kvsteer:
    """Runs the kvsteer CLI and turns a failure into a test failure that shows its stderr."""

    def __init__(self, binary: Path, model: Path) -> None:
        self.binary = binary
        self.model = model

    def run(self, *args: str) -> str:
        """Runs ``kvsteer <args>`` on one thread (deterministic, and the machine has two cores)."""
        cmd = [str(self.binary), args[0], "-m", str(self.model), "-t", "1", *args[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(
                f"kvsteer exited with {proc.returncode}: {' '.join(cmd)}\n{proc.stderr}",
                pytrace=False,
            )
        return proc.stdout

    def run_json(self, *args: str) -> Any:
        return json.loads(self.run(*args))
