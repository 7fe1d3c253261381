# test-case-name: tests.test_cluster_view
"""How many requests this node has answered, as plain counters.

``Node`` holds one ``RequestCounts`` (shared by its keyed copies) and counts
each read it answers: a ``/v0`` get and an etcd Range (gateway or gRPC),
linearizable or serializable, counted once its answer is ready. The status
page derives reads per second from two samples of ``reads``.
"""

from __future__ import annotations

import attrs


@attrs.define
class RequestCounts:
    #: Reads answered (a value, "key not found", a range), not the ones refused.
    reads: int = 0

    def read(self) -> None:
        self.reads += 1
