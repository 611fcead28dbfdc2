"""Starts `kvsteer serve` for the server tests and makes the vectors they name.

A missing binary, model or data folder is a broken setup, not a reason to skip: the fixtures fail
with the variable to fix.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from required_env import required_path  # noqa: E402


def _required(var: str) -> Path:
    return required_path(var, "make test sets it", kind="path")


@pytest.fixture(scope="session")
def cli() -> Path:
    return _required("KVSTEER_CLI")


@pytest.fixture(scope="session")
def model() -> Path:
    return _required("KVSTEER_SMOLLM2_GGUF")


@pytest.fixture(scope="session")
def shared() -> Path:
    return _required("KVSTEER_SHARED_DIR")


@pytest.fixture(scope="session")
def vectors(cli: Path, model: Path, shared: Path, tmp_path_factory) -> dict[str, Path]:
    """Two small ARC vectors of SmolLM2 (8 pairs of 1-shot prompts; different pairs)."""
    out = tmp_path_factory.mktemp("vectors")
    made = {}
    traces = shared / "data" / "paper_traces" / "traces" / "arc_oai.jsonl"
    for name, n in (("arc", 8), ("arc4", 4)):
        path = out / f"{name}.gguf"
        subprocess.run([str(cli), "extract", "-m", str(model), "-t", "2", "--task", "arc",
                        "--traces", str(traces), "-N", str(n), "-k", "1", "--parallel", "4",
                        "-o", str(path)], check=True, capture_output=True, text=True)
        made[name] = path
    return made


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_server(cli: Path, model: Path, vectors: dict[str, Path], *extra: str) -> Served:
    args = [str(cli), "serve", "-m", str(model), "-t", "2", "-c", "4096", "--port", "0"]
    for name, path in vectors.items():
        args += ["--vector", f"{name}={path}"]
    proc = subprocess.Popen(args + list(extra), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            served = Served(proc, int(m.group(1)), lines)
            # Keep reading stderr so the server never blocks on a full pipe.
            import threading
            threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
            return served
    proc.kill()
    pytest.fail("kvsteer serve did not start:\n" + "".join(lines), pytrace=False)


@pytest.fixture(scope="module")
def server(cli: Path, model: Path, vectors: dict[str, Path]):
    s = start_server(cli, model, vectors, "--parallel", "4", "--max-queue", "16")
    yield s
    assert s.stop() == 0, "".join(s.log)
