# test-case-name: tests.test_launcher
"""Child processes that are never left behind.

A ``Process`` runs in its own session (its own process group), so a
terminal's Ctrl-C does not reach it directly and every signal goes to the
whole group. Its output is appended to a log file (or captured, or
dropped). Every ``Process`` started, and every owner registered with
``track`` (a cluster), is closed -- its processes killed -- on ``close()``,
at interpreter exit (``atexit``), and on SIGTERM to this process while one
is open (when nobody else handles SIGTERM). ``detach()`` gives a process up
on purpose: it then outlives this interpreter, and ``terminate(pids)``
stops it from a later one.

Synchronous on purpose: callers drive processes with plain calls and poll
with deadlines (``dkv.testing.poll``); nothing here needs a reactor.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import attrs

from dkv.testing.poll import Timeout, wait_until

# -- cleanup of everything started -----------------------------------------------


class Closable(Protocol):
    def close(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_live_lock = threading.Lock()
_previous_sigterm: Any = None


def close_all() -> None:
    """Close every tracked owner now (kill every process not closed yet)."""
    for owner in list(_live):
        with contextlib.suppress(Exception):
            owner.close()


atexit.register(close_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    close_all()
    raise SystemExit(128 + signum)


def track(owner: Closable) -> None:
    """Close owner at interpreter exit or on SIGTERM, unless ``untrack``ed
    first. The first owner installs the SIGTERM handler, if SIGTERM has its
    default disposition and this is the main thread."""
    global _previous_sigterm
    with _live_lock:
        _live.add(owner)
        if (
            _previous_sigterm is None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        ):
            _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)


def untrack(owner: Closable) -> None:
    """Forget owner; the last one gone restores the previous SIGTERM handler."""
    global _previous_sigterm
    with _live_lock:
        _live.discard(owner)
        if (
            not _live
            and _previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _on_sigterm
        ):
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None


# -- small helpers -----------------------------------------------------------------


def tail(path: str | Path, lines: int = 40) -> str:
    """The last lines of a text file (at most its last 64 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def signal_group(pid: int, sig: int) -> None:
    """Send sig to the process group pid leads; nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def pid_gone(pid: int) -> bool:
    """Whether pid no longer runs: no such process, or a zombie (dead, not
    yet reaped by a parent that is not us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def terminate(pids: Iterable[int], timeout: float = 10.0) -> None:
    """Stop processes that lead their own process group but are not our
    children (detached by an earlier run): SIGTERM every group, poll until
    all are gone, SIGKILL the groups still there after ``timeout``."""
    pids = list(pids)
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    try:
        wait_until(lambda: all(pid_gone(p) for p in pids), timeout, f"processes {pids} to stop", interval=0.1)
    except Timeout:
        for pid in pids:
            if not pid_gone(pid):
                signal_group(pid, signal.SIGKILL)


@attrs.frozen
class Exited:
    """How a command that ran to its end ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_to_exit(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 10.0,
    stdin: str | bytes | None = None,
) -> Exited:
    """Run a command that must exit by itself (in its own session; ``env``
    is its whole environment, None: ours; ``stdin`` what it reads, else
    nothing) and capture its output. If it is still running after
    ``timeout`` seconds, its whole group is killed and Timeout names what it
    had printed."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv), env=None if env is None else dict(env), cwd=cwd,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise Timeout(
            f"{list(argv)} did not exit within {timeout}s; stderr: {err[-2000:]!r}, stdout tail: {out[-500:]!r}"
        ) from None
    finally:
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - start
    return Exited(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), seconds)


# -- one process ---------------------------------------------------------------------


class Process:
    """A child in its own session; ``argv`` and the environment are used for
    every (re)start.

    Output: appended to ``log_path`` (each start and each signal noted there
    by a ``=== harness:`` line), or kept in a pipe for ``output()`` when
    ``capture``, or dropped. ``env`` is the whole environment (None: ours).
    Signals go to the whole process group."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str = "process",
        capture: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.log_path = None if log_path is None else Path(log_path)
        self.environment = None if env is None else dict(env)
        self.cwd = str(cwd) if cwd is not None else None
        self.name = name
        self.capture = capture
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def full_env(self) -> dict[str, str] | None:
        """The environment the process starts with (None: ours)."""
        return self.environment

    def start(self) -> None:
        """Start the process; it must not be running."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        track(self)
        self.starts += 1
        out: IO[bytes] | int = subprocess.PIPE if self.capture else subprocess.DEVNULL
        log: IO[bytes] | None = None
        if self.log_path is not None and not self.capture:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = out = open(self.log_path, "ab")  # noqa: SIM115 - closed once the child has it
            log.write(f"=== harness: start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.full_env(), cwd=self.cwd, start_new_session=True,
            )  # fmt: skip
        finally:
            if log is not None:
                log.close()
        self.paused = False

    def signal(self, sig: int) -> None:
        """Send sig to the process group, if the process runs."""
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.paused = False
        self._note(f"killed (exit {self.proc.returncode})")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM; SIGKILL if still running after timeout. The exit status."""
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._note(f"did not stop within {timeout}s of SIGTERM; killing")
            self.kill()
        self._note(f"stopped (exit {self.proc.returncode})")
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing."""
        self.signal(signal.SIGSTOP)
        self.paused = True
        self._note("paused (SIGSTOP)")

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)
        self.paused = False
        self._note("resumed (SIGCONT)")

    def output(self, timeout: float) -> str:
        """For a ``capture`` process: wait until it exits and return what it
        printed. Raises subprocess.TimeoutExpired if it runs on."""
        if self.proc is None or not self.capture:
            raise RuntimeError(f"{self.name} was not started with capture")
        out, _ = self.proc.communicate(timeout=timeout)
        return out.decode(errors="replace")

    def close(self) -> None:
        """Kill the process if it runs, and stop tracking it."""
        if self.alive:
            self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        untrack(self)

    def detach(self) -> int:
        """Give the running process up: it outlives this interpreter (stop it
        later with ``terminate``). Its pid."""
        if self.proc is None or not self.alive:
            raise RuntimeError(f"{self.name} is not running")
        pid = self.proc.pid
        untrack(self)
        self.proc = None
        return pid

    def _note(self, text: str) -> None:
        if self.log_path is None or self.capture:
            return
        with contextlib.suppress(OSError), open(self.log_path, "ab") as log:
            log.write(f"=== harness: {self.name} {text}\n".encode())

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        return "(no log)" if self.log_path is None else tail(self.log_path, lines)

    def log_text(self) -> str:
        """The whole log ("" if there is none)."""
        try:
            return "" if self.log_path is None else self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
