# test-case-name: tests.test_peer_transport
"""The native peer protocol's handshake: who dials whom, in which cluster,
speaking which version.

The dialler's first frame is a ``PeerHello`` (version, cluster id, its own
id, the id it means to reach); the listener answers with its own hello, with
``error`` set when it refuses (another cluster, another version, the wrong
node), then closes. Both sides log a refusal in one line. The checks are
pure functions so both sides and the tests share them.
"""

from __future__ import annotations

from dkv.pb import raft_pb2
from dkv.transport.peer_frames import HELLO, frame

__all__ = ["VERSION", "answer_refusal", "hello_frame", "hello_refusal"]

#: The protocol's version; nodes speaking different versions refuse each other.
VERSION = 1


def hello_frame(cluster_id: str, frm: str, to: str, error: str = "") -> bytes:
    hello = raft_pb2.PeerHello(version=VERSION, cluster_id=cluster_id, to=to, error=error)
    setattr(hello, "from", frm)
    return frame(HELLO, hello.SerializeToString())


def _common_refusal(hello: raft_pb2.PeerHello, cluster_id: str) -> str:
    if hello.version != VERSION:
        return f"it speaks peer protocol version {hello.version}, this node version {VERSION}"
    if hello.cluster_id != cluster_id:
        return f"it belongs to cluster {hello.cluster_id!r}, this node to {cluster_id!r}"
    return ""


def hello_refusal(hello: raft_pb2.PeerHello, *, cluster_id: str, node_id: str) -> str:
    """Why the listener refuses a dialler's hello ("" if it does not)."""
    if not getattr(hello, "from"):
        return "its hello names no sender"
    if hello.to != node_id:
        return f"it means to reach node {hello.to!r}, this is node {node_id!r}"
    return _common_refusal(hello, cluster_id)


def answer_refusal(answer: raft_pb2.PeerHello, *, cluster_id: str, peer_id: str) -> str:
    """Why the dialler gives up on the listener's answer ("" if it does not)."""
    if answer.error:
        return f"it refused us: {answer.error}"
    if getattr(answer, "from") != peer_id:
        return f"it is node {getattr(answer, 'from')!r}, not {peer_id!r}"
    return _common_refusal(answer, cluster_id)
