"""``dkv.api.http_common.call_handler``: a write the front door admitted is
vouched for only while the handler runs in the same call as the check."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

from dkv.api.http_common import Call, call_handler


@attrs.define
class TokenNode:
    """A node whose token check may have to wait (``Node.token_ready``)."""

    wait: Deferred[None] | None = None

    def with_token(self, token: str) -> TokenNode:
        return self

    def token_ready(self) -> Deferred[None] | None:
        return self.wait


def _seen(node: Any, call: Call) -> list[bool]:
    """``call.admitted`` as the handler sees it, once it has run."""
    seen: list[bool] = []
    call_handler(lambda _node, c: seen.append(c.admitted), node, call)
    return seen


def test_a_handler_run_in_the_checking_call_keeps_the_vouch() -> None:
    call = Call(b"{}", {}, {}, authorization=b"Bearer t", admitted=True)
    assert _seen(TokenNode(), call) == [True]


def test_a_handler_that_waits_for_its_token_is_checked_again() -> None:
    wait: Deferred[None] = Deferred()
    call = Call(b"{}", {}, {}, authorization=b"Bearer t", admitted=True)
    seen = _seen(TokenNode(wait), call)
    assert seen == []
    wait.callback(None)
    assert seen == [False]
