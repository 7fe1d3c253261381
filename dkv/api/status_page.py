# test-case-name: tests.test_cluster_view,tests.test_status_page
"""``GET /`` on the REST port: the status page, one self-contained HTML file
(``status_page.html`` beside this module: inline CSS and JavaScript, no
external assets, so it works on an air-gapped host).

The page polls ``GET /v0/cluster`` (``dkv.api.cluster_view``) every second
and keeps the history of its chart in the browser; the server keeps none.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from dkv.api.http_common import Call, RawAnswer
from dkv.node import Node

CONTENT_TYPE = b"text/html; charset=utf-8"


@cache
def html() -> bytes:
    """The page, read once from the package."""
    return files("dkv.api").joinpath("status_page.html").read_bytes()


def page(node: Node, call: Call) -> RawAnswer:
    return RawAnswer(200, html(), CONTENT_TYPE)
