# test-case-name: tests.test_systemd_notify
"""systemd's service notification protocol (``sd_notify(3)``), spoken
directly: one datagram of ``NAME=value`` lines to the ``AF_UNIX`` socket named
by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket).

``SystemdNotify`` is the node's Twisted service for it, the last child of the
node's tree, so it starts when every other part has started and stops first:

- ``READY=1`` (with a ``STATUS=`` line) once the node serves: the store is
  open and its state recovered, the REST port listens and the gRPC server
  (clients and peers) has started. It does not wait for a leader: nodes of a
  cluster start one by one, and a node without a quorum still answers (503,
  retryable), so ``systemctl start`` of the first node returns at once.
- ``STATUS=`` lines after that, whenever the node's role, term or leader
  changes (checked every few seconds; ``systemctl status`` shows the latest).
- ``STOPPING=1`` when the node starts to stop (SIGTERM, ``systemctl stop``).
- ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` when systemd asked for it
  (``WatchdogSec=`` in the unit sets ``WATCHDOG_USEC``; ``WATCHDOG_PID``, if
  set, must be this process). The pings are sent from the reactor, so a
  reactor that is stuck stops pinging and systemd restarts the node.

Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) all of
this is a no-op. A failure to send is logged once and never stops the node.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall

from dkv.logs import logger

log = logger("dkv.systemd")

__all__ = ["Notifier", "SystemdNotify", "notifier_from_env", "watchdog_interval"]

#: Seconds between checks of the node's status line (sent only on a change).
STATUS_INTERVAL = 5.0


def socket_address(value: str | None) -> str | None:
    """The ``AF_UNIX`` address ``$NOTIFY_SOCKET`` names: a path as is,
    ``@name`` as the abstract address ``\\0name``; None for an unset or empty
    variable or a form dkv does not speak (systemd's ``vsock:``)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, or
    None when systemd did not ask for pings (unset, not a positive number, or
    ``WATCHDOG_PID`` names another process)."""
    usec = environ.get("WATCHDOG_USEC", "")
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    try:
        micros = int(usec)
    except ValueError:
        return None
    if micros <= 0:
        return None
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    return micros / 1_000_000 / 2


@attrs.define
class Notifier:
    """Sends notification datagrams to ``address`` (None: sends nothing)."""

    address: str | None
    _failed: bool = attrs.field(default=False, init=False)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send the lines as one datagram; True if it was sent. A failure is
        logged (once, until a send succeeds again) and returns False."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as e:
            if not self._failed:
                log.warn("cannot notify systemd at {address!r}: {why}", address=self.address, why=e)
            self._failed = True
            return False
        self._failed = False
        return True


def notifier_from_env(environ: Mapping[str, str] | None = None) -> Notifier:
    """The notifier ``$NOTIFY_SOCKET`` asks for (a no-op one when unset)."""
    env = os.environ if environ is None else environ
    return Notifier(socket_address(env.get("NOTIFY_SOCKET")))


@attrs.define(eq=False, slots=False)
class SystemdNotify(Service):
    """Tells systemd the node's life (see the module docstring).

    ``ready`` returns a Deferred that fires when the node serves (called in
    ``startService``, after every earlier sibling started); ``status`` is the
    one-line status text; ``clock`` runs the pings and the status checks."""

    notifier: Notifier
    clock: Any
    ready: Callable[[], Deferred[Any] | None]
    status: Callable[[], str]
    watchdog: float | None = None
    status_interval: float = STATUS_INTERVAL
    _loops: list[LoopingCall] = attrs.field(factory=list, init=False)
    _last_status: str | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        Service.__init__(self)

    def startService(self) -> None:
        super().startService()
        if not self.notifier.enabled:
            return
        if self.watchdog is not None:
            self._every(self.watchdog, lambda: self.notifier.send("WATCHDOG=1"), now=True)
        maybeDeferred(self.ready).addCallbacks(self._serving, self._not_serving)

    def _serving(self, _: object) -> None:
        if self._stopping:
            return
        self._last_status = self.status()
        self.notifier.send("READY=1", f"STATUS={self._last_status}", f"MAINPID={os.getpid()}")
        log.info("told systemd the node is ready")
        self._every(self.status_interval, self._status_changed, now=False)

    def _not_serving(self, failure: Any) -> None:
        log.failure("the node did not come to serve; not telling systemd it is ready", failure)

    def _status_changed(self) -> None:
        text = self.status()
        if text != self._last_status:
            self._last_status = text
            self.notifier.send(f"STATUS={text}")

    def _every(self, seconds: float, action: Callable[[], object], now: bool) -> None:
        loop = LoopingCall(action)
        loop.clock = self.clock
        loop.start(seconds, now=now).addErrback(lambda f: log.failure("systemd notification loop", f))
        self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        self._stopping = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.notifier.send("STOPPING=1", "STATUS=stopping")
