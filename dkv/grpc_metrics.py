# test-case-name: tests.test_metrics
"""gRPC server metrics as go-grpc-prometheus names them (etcd uses it), with
``grpc_`` -> ``dkv_grpc_``: ``dkv_grpc_server_started_total``,
``dkv_grpc_server_handled_total{grpc_type,grpc_service,grpc_method,
grpc_code}`` and ``dkv_grpc_server_handling_seconds{grpc_type,grpc_service,
grpc_method}``.

``MetricsInterceptor`` wraps every method handler of the RPC port once (the
wrapped handlers are kept per method), so a call pays one wrapper: a clock
read at its start and one at its end, and a few dict operations. A
streaming call is counted when it ends. The code is the one the handler
set or aborted with (``context.code()``), OK when it returned normally,
CANCELLED when the client went away, and UNKNOWN when it raised anything
else (as gRPC answers then).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from dkv.metrics import NodeMetrics

_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
_BEHAVIOURS = {
    (False, False): "unary_unary",
    (True, False): "stream_unary",
    (False, True): "unary_stream",
    (True, True): "stream_stream",
}


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "OK" if code is None else "UNKNOWN"


class MetricsInterceptor(aio.ServerInterceptor):
    """Counts and times the calls of an ``aio.Server`` in metrics."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self._handlers: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # gRPC answers UNIMPLEMENTED
            wrapped = self._handlers[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        service, _, name = method.lstrip("/").rpartition("/")
        shape = (bool(handler.request_streaming), bool(handler.response_streaming))
        key = (_TYPES[shape], service or "unknown", name)
        field = _BEHAVIOURS[shape]
        behaviour = getattr(handler, field)
        if behaviour is None:
            return handler
        metrics = self._metrics
        meter = metrics.grpc

        def done(context: Any, started: float, error: BaseException | None) -> None:
            if error is None:
                code = _code_name(context.code())
            elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
                code = "CANCELLED"
            else:
                set_code = context.code()
                code = _code_name(set_code) if set_code is not None else "UNKNOWN"
            meter.observe(key, code, time.perf_counter() - started)

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Any) -> Any:
                metrics.grpc_started_inc(key)
                started = time.perf_counter()
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as e:
                    done(context, started, e)
                    raise
                done(context, started, None)

            return handler._replace(**{field: streaming})

        async def call(request: Any, context: Any) -> Any:
            metrics.grpc_started_inc(key)
            started = time.perf_counter()
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as e:
                done(context, started, e)
                raise
            done(context, started, None)
            return result

        return handler._replace(**{field: call})
