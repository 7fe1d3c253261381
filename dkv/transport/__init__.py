"""How Raft messages travel between nodes, behind one small interface.

``GrpcTransport`` (``dkv.transport.grpc_peer``) is the real one; the core's
simulation tests use an in-memory network instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from dkv.raft.messages import Message


class Transport(Protocol):
    def send(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Queue messages for their recipients; never blocks, may drop, never
        delivers a message twice (a forwarded client proposal delivered twice
        would be appended twice: Raft tolerates duplicates of its own
        messages, not of client payloads).

        Returns the messages (of this call, or queued by an earlier one) it
        dropped before writing any byte of them: certainly never delivered
        (no link to the peer, the link not up, or its bound reached). A
        message written and then lost with its connection is not among them:
        whether it arrived is unknown."""

    def set_peers(self, addresses: Mapping[str, str]) -> None:
        """The peers (id -> address) of the latest configuration."""
