# test-case-name: tests.test_tls_process
"""The node's TLS as a service: the files are read when the node starts
(before the store opens or a port binds), and again on SIGHUP.

A file that cannot be used at start is a ``StartupError`` (one line: the
flag, the file and why). The SIGHUP handler is installed in ``startService``
(the main thread; only when TLS is configured: without it SIGHUP keeps its
default meaning) and removed in ``stopService``; the signal only schedules
``NodeTls.reload`` on the reactor.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service

from dkv.errors import StartupError
from dkv.tls.material import TlsError
from dkv.tls.node_tls import NodeTls

__all__ = ["TlsService"]


class TlsService(Service):
    def __init__(self, tls: NodeTls, reactor: Any) -> None:
        self.tls = tls
        self._reactor = reactor
        self._previous: Any = None
        self._installed = False

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted name
        super().privilegedStartService()
        try:
            self.tls.load()
        except TlsError as e:
            raise StartupError(str(e)) from None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self.tls.enabled:
            try:
                self._previous = signal.signal(signal.SIGHUP, self._on_sighup)
                self._installed = True
            except ValueError:  # not the main thread (an in-process test): no reload on SIGHUP
                pass

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous)
            self._installed = False

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.tls.reload)
