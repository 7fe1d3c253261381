"""What the numbers were measured on: CPUs, memory, kernel, Python, the etcd
and wrk versions, the dkv commit and the filesystem of the data."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The checkout whose dkv is measured.
REPO = Path(__file__).resolve().parents[2]


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return ""


def machine_info(etcd: str | None, wrk: str | None, tmp_base: Path | None) -> dict[str, Any]:
    """What the numbers were measured on (the etcd and wrk versions only
    when their binaries are given)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    tmp = Path(tmp_base or tempfile.gettempdir()).resolve()
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "memory_mb": mem_kb // 1024,
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "dkv_commit": _git("rev-parse", "HEAD"),
        "dkv_code_modified": bool(_git("status", "--porcelain", "--", "dkv")),
        "data_dir_base": str(tmp),
        "data_dir_filesystem": _filesystem(tmp),
        "loadavg_start": os.getloadavg(),
    }
    if etcd is not None:
        info["etcd_version"] = _first_line([etcd, "--version"])
    if wrk is not None:
        info["wrk_version"] = _first_line([wrk, "-v"])
    return info


def _filesystem(path: Path) -> str:
    """The type of the filesystem path is on (from /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount, fstype = fields[1], fields[2]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except (OSError, IndexError):
        pass
    return kind
