# test-case-name: tests.test_faults
"""The git commit of the dkv package a fault run tested."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_version"]


def code_version() -> str:
    """The git commit of the dkv package being tested, with "+dirty" when
    files under dkv/ differ from it (other people edit the tree meanwhile);
    "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "dkv"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
