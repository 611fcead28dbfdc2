"""The one rule of every pytest suite here (tests/python, tests/server, python/tests): a path the
tests need comes from an environment variable that ctest sets, and a missing one is a broken setup
that fails with the variable to fix, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def required_path(var: str, hint: str, *, kind: str = "file") -> Path:
    """The path in environment variable `var`; fails the test run when it is unset or is not an
    existing `kind` ("file" or "path": a file or a folder)."""
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"environment variable {var} is not set; {hint}", pytrace=False)
    path = Path(value)
    exists = path.is_file() if kind == "file" else path.exists()
    if not exists:
        pytest.fail(f"{var}={value} is not an existing {kind}; {hint}", pytrace=False)
    return path
