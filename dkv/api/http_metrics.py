# test-case-name: tests.test_metrics
"""The REST port's request metrics: which route an answered request took,
and its labels in ``dkv_http_requests_total{api,route,code}`` and
``dkv_http_request_duration_seconds{api,route}``.

The front door (``dkv.api.front_door``) calls ``HttpMeter.answered`` once
per request, when its answer's last byte is handed to the transport, for
fast routes and Klein-rendered ones alike. ``route`` is the route's name in
the table (``dkv.api.routes``); a request the front door did not route
itself is matched against the table here (werkzeug, as Klein matches);
one that matches no route is labelled ``unknown``. ``api`` is ``v0`` for
``/v0/...``, ``v3`` for etcd's gateway under ``/v3/...``, and ``other``
for the rest (``/health``, ``/metrics``, ``/version``...).
"""

from __future__ import annotations

from collections.abc import Sequence

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, PathConverter, RequestRedirect, Rule

from dkv.api.routes import REST_OF_PATH, Route
from dkv.metrics import RequestMeter

UNKNOWN = "unknown"


class _RestOfPath(PathConverter):
    regex = ".+"
    part_isolating = False


def api_of(pattern: str) -> str:
    """The ``api`` label of a route pattern."""
    if pattern.startswith("/v0/"):
        return "v0"
    if pattern.startswith("/v3/"):
        return "v3"
    return "other"


class HttpMeter:
    """Labels answered requests of a route table and counts them in meter."""

    def __init__(self, meter: RequestMeter, routes: Sequence[Route]) -> None:
        self._meter = meter
        self._keys = {route.name: (api_of(route.pattern), route.name) for route in routes}
        self._unknown = ("other", UNKNOWN)
        url_map = Map(merge_slashes=False, converters={REST_OF_PATH: _RestOfPath})
        for route in routes:
            url_map.add(Rule(route.pattern, endpoint=route.name, methods=list(route.methods)))
        self._matcher = url_map.bind("localhost")

    def answered(self, route: Route | None, method: bytes, target: bytes, status: int, seconds: float) -> None:
        """A request was answered with status after seconds; route is the
        fast route that served it, or None (then method and the request
        target's path tell)."""
        key = self._keys.get(route.name) if route is not None else self._match(method, target.partition(b"?")[0])
        self._meter.observe(key or self._unknown, _CODES.get(status) or str(status), seconds)

    def _match(self, method: bytes, path: bytes) -> tuple[str, str]:
        try:
            name, _ = self._matcher.match(path.decode("latin-1"), method=method.decode("latin-1"))
        except (HTTPException, RequestRedirect):
            return self._unknown
        return self._keys.get(name, self._unknown)


_CODES = {code: str(code) for code in range(100, 600)}
