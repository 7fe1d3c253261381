# test-case-name: tests.watch.test_hub,tests.watch.test_session
"""etcd's Watch: a hub per node fed from its applied state (``hub``), the
watchers it keeps (``watcher``), and one stream's watchers as etcd's server
stream keeps them (``session``), which the gRPC, gateway and SSE transports
in ``dkv.api`` drive."""

from dkv.watch.hub import WatchHub, WatchSettings
from dkv.watch.session import WatchSession
from dkv.watch.watcher import Watcher, WatchTarget

__all__ = ["WatchHub", "WatchSession", "WatchSettings", "WatchTarget", "Watcher"]
