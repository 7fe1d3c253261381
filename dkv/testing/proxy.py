# test-case-name: tests.test_proxy
"""A fault-injecting TCP proxy for one directed link, for process tests.

A ``ProxyHub`` owns one asyncio loop on a background thread; every ``Proxy``
it makes listens on a free loopback port and forwards each accepted
connection to one target port. The controls are plain synchronous methods,
safe to call from test code on any thread; each returns once the new mode is
in force (no chunk is forwarded under the old mode after it returns, except
bytes the kernel had already handed to the other side).

Modes:

``pass_through()``  forward everything (the default).
``blackhole()``     accept and keep connections, forward nothing in either
                    direction: bytes wait in the proxy and the kernel buffers,
                    as in a network partition (TCP would retransmit them). New
                    connections are accepted but not connected onwards. After
                    ``pass_through()`` held bytes flow again, unless an end
                    gave up in the meantime (gRPC keepalive does, after a few
                    seconds), which closes that connection.
``refuse()``        reset every current connection and reset new ones at once
                    (``reset()`` is the same), like a crashed host or a
                    firewall answering with RST.
``delay(s, jitter)``  deliver every chunk ``s`` seconds (plus a uniform
                    ``[-jitter, +jitter]``) after it arrived, keeping order.
``flaky(p)``        reset a connection with probability ``p`` at each chunk it
                    carries (TCP cannot lose single bytes without corrupting
                    the HTTP/2 stream inside it, so whole connections fail).

``delay`` and ``flaky`` combine with pass-through (and with each other);
``blackhole`` and ``refuse`` override them until ``pass_through()``, which
also clears delay and flakiness. Randomness comes from a seeded
``random.Random``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import deque
from typing import Any

PASS, BLACKHOLE, REFUSE = "pass", "blackhole", "refuse"
CHUNK = 64 * 1024


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One accepted connection and, once allowed, its upstream twin."""

    def __init__(self, proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        proxy = self.proxy
        try:
            await proxy._gate()  # blackhole: do not even connect onwards
            if self.closed:
                return
            try:
                up_reader, self.upstream_writer = await asyncio.open_connection(proxy.target_host, proxy.target_port)
            except OSError:
                self.reset()  # target down: the client sees a reset
                return
            if self.closed:
                _rst(self.upstream_writer)
                return
            self.tasks = [
                asyncio.ensure_future(self._pipe(self.client_reader, self.upstream_writer)),
                asyncio.ensure_future(self._pipe(up_reader, self.client_writer)),
            ]
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            self.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, in order, applying the proxy's mode per chunk."""
        proxy = self.proxy
        pending: deque[tuple[float, bytes]] = deque()
        arrived = asyncio.Event()
        drained = asyncio.Event()
        eof = False
        loop = asyncio.get_running_loop()

        async def read() -> None:
            nonlocal eof
            last_due = 0.0
            try:
                while True:
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    if proxy._flaky and proxy._rng.random() < proxy._flaky:
                        self.reset()
                        return
                    due = loop.time() + proxy._delay_for_chunk()
                    last_due = max(last_due, due)  # jitter never reorders
                    pending.append((last_due, data))
                    arrived.set()
                    # Backpressure: stop reading while much is held.
                    while len(pending) > 8 and not self.closed:
                        drained.clear()
                        await drained.wait()
            except OSError:
                self.reset()  # pass a reset on as a reset
                return
            finally:
                eof = True
                arrived.set()

        reading = asyncio.ensure_future(read())
        try:
            while True:
                if not pending:
                    if eof:
                        break
                    arrived.clear()
                    await arrived.wait()
                    continue
                due, data = pending[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await proxy._gate()
                pending.popleft()
                drained.set()
                writer.write(data)
                await writer.drain()
            # The sender closed its side: pass the half-close on.
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
        except (OSError, ConnectionError):
            self.reset()
        finally:
            reading.cancel()

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _rst(self.client_writer)
        _rst(self.upstream_writer)
        for task in self.tasks:
            task.cancel()
        self.proxy._connections.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client_writer.close()
        if self.upstream_writer is not None:
            self.upstream_writer.close()
        for task in self.tasks:
            task.cancel()
        self.proxy._connections.discard(self)


class Proxy:
    """One directed link: listens on ``host:port`` and forwards to ``target``.

    Made by ``ProxyHub.proxy``; every method is safe to call from any thread
    except the hub's own loop thread."""

    def __init__(self, hub: ProxyHub, target_port: int, target_host: str, name: str, seed: int) -> None:
        self.hub = hub
        self.name = name
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.mode = PASS
        self._delay = 0.0
        self._jitter = 0.0
        self._flaky = 0.0
        self._rng = random.Random(seed)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._open: asyncio.Event | None = None  # set while forwarding is allowed

    def __repr__(self) -> str:
        return f"<Proxy {self.name} :{self.port} -> :{self.target_port} {self.mode}>"

    # -- controls (thread-safe) --------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything again; clears delay and flakiness."""
        self.hub._call(self._set, PASS, 0.0, 0.0, 0.0)

    def blackhole(self) -> None:
        """Keep connections but forward nothing either way."""
        self.hub._call(self._set, BLACKHOLE, self._delay, self._jitter, self._flaky)

    def refuse(self) -> None:
        """Reset every connection and reset new ones at once."""
        self.hub._call(self._set, REFUSE, self._delay, self._jitter, self._flaky)

    reset = refuse

    def delay(self, seconds: float, jitter: float = 0.0) -> None:
        """Deliver each chunk ``seconds`` (+- uniform ``jitter``) late, in order."""
        if seconds < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        self.hub._call(self._set, PASS, seconds, jitter, self._flaky)

    def flaky(self, drop_probability: float) -> None:
        """Reset a connection with this probability at each chunk it carries."""
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError("drop_probability must be within [0, 1]")
        self.hub._call(self._set, PASS, self._delay, self._jitter, drop_probability)

    # -- on the loop -------------------------------------------------------------

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _set(self, mode: str, delay: float, jitter: float, flaky: float) -> None:
        assert self._open is not None
        self.mode, self._delay, self._jitter, self._flaky = mode, delay, jitter, flaky
        if mode == PASS:
            self._open.set()
        else:
            self._open.clear()
        if mode == REFUSE:
            for conn in list(self._connections):
                conn.reset()

    async def _gate(self) -> None:
        assert self._open is not None
        while not self._open.is_set():
            await self._open.wait()

    def _delay_for_chunk(self) -> float:
        if not self._delay and not self._jitter:
            return 0.0
        return max(0.0, self._delay + self._rng.uniform(-self._jitter, self._jitter))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == REFUSE:
            _rst(writer)
            return
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        # CancelledError too: the hub cancels what is left when it closes, and
        # asyncio would log a cancelled connection handler as an error.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await conn.run()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class ProxyPair:
    """Two proxies of one directed link under one control: with the native
    peer protocol a node reaches a peer at two ports (its peer port for Raft,
    its RPC port for forwarded calls), and a fault must cut both. ``port``
    is the first one's (the peer port's proxy)."""

    def __init__(self, first: Proxy, second: Proxy) -> None:
        self.first = first
        self.second = second
        self.name = first.name
        self.port = first.port

    def __repr__(self) -> str:
        return f"<ProxyPair {self.first!r} {self.second!r}>"

    @property
    def mode(self) -> str:
        return self.first.mode

    def pass_through(self) -> None:
        self.first.pass_through()
        self.second.pass_through()

    def blackhole(self) -> None:
        self.first.blackhole()
        self.second.blackhole()

    def refuse(self) -> None:
        self.first.refuse()
        self.second.refuse()

    reset = refuse

    def delay(self, seconds: float, jitter: float = 0.0) -> None:
        self.first.delay(seconds, jitter)
        self.second.delay(seconds, jitter)

    def flaky(self, drop_probability: float) -> None:
        self.first.flaky(drop_probability)
        self.second.flaky(drop_probability)


#: A directed link's control: one proxy, or a pair (``--peer-transport twisted``).
Link = Proxy | ProxyPair


class ProxyHub:
    """One background thread and asyncio loop for any number of proxies.

    Use as a context manager, or call ``close()``; closing stops every proxy,
    resets their connections and ends the thread."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self.proxies: list[Proxy] = []
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dkv-proxy-hub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        # Let cancelled tasks unwind before the loop goes away.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def _call(self, fn: Any, *args: Any, timeout: float = 10.0) -> Any:
        """Run fn(*args) (a function or coroutine function) on the loop and return its result."""
        if self._closed:
            raise RuntimeError("the proxy hub is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError("proxy controls must not be called from the hub's own loop")

        async def run() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def proxy(self, target_port: int, target_host: str = "127.0.0.1", name: str = "") -> Proxy:
        """A new proxy listening on a free loopback port, forwarding to target."""
        p = Proxy(self, target_port, target_host, name or f"->{target_port}", self._rng.getrandbits(32))
        self._call(p._start)
        self.proxies.append(p)
        return p

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._call(self._close_all)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    async def _close_all(self) -> None:
        await asyncio.gather(*(p._close() for p in self.proxies), return_exceptions=True)

    def __enter__(self) -> ProxyHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
