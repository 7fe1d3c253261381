# test-case-name: tests.test_process,tests.test_config
"""The ``twistd dkv`` plugin's module: ``Options`` and ``makeService``.

Importing it installs Twisted's asyncio reactor unless a reactor is installed
already (``twistd -r ...``; ``Options.postOptions`` then refuses any other):
the node's modules import the reactor (Klein does at import), so this must
come first. The service tree is built by ``dkv.node_tree``.
"""

from __future__ import annotations

from dkv import asyncio_reactor

asyncio_reactor.install()

import sys  # noqa: E402
from typing import Any  # noqa: E402

from twisted.application.service import IService, Service  # noqa: E402 - after the reactor
from twisted.logger import ILogObserver  # noqa: E402
from twisted.python.components import Componentized  # noqa: E402

from dkv.errors import StartupError  # noqa: E402
from dkv.logs import log_observer  # noqa: E402
from dkv.node_tree import NodeService, build  # noqa: E402
from dkv.options import Options  # noqa: E402

__all__ = ["Options", "build", "makeService"]


class _TwistdEntry(Service):
    """twistd prints a traceback for an exception from
    ``privilegedStartService``; this adapter, the plugin's entry and no part
    of the node, turns a StartupError into twistd's clean way out: one line
    and exit status 1."""

    def __init__(self, node: NodeService) -> None:
        self.node = node

    def setServiceParent(self, parent: Any) -> None:
        """twistd makes its Application the parent before it starts logging;
        ``--log-format json`` puts its observer on it, where twistd looks
        first (twistd's ``--logger`` still wins, ``--logfile`` does not)."""
        if self.node.config.log_format != "text" and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, log_observer(self.node.config.log_format, sys.stdout))
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self.node.privilegedStartService()
        except StartupError as e:
            raise SystemExit(f"dkv: {e}") from None

    def startService(self) -> None:
        super().startService()
        try:
            self.node.startService()
        except StartupError as e:
            raise SystemExit(f"dkv: {e}") from None

    def stopService(self) -> object:
        super().stopService()
        return self.node.stopService()


def makeService(options: Options) -> IService:  # noqa: N802 - twistd's name
    return _TwistdEntry(build(options["config"]))
