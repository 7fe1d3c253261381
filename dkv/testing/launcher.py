# test-case-name: tests.test_launcher
"""One real ``dkv`` node as a process: its ports, its command line, its
environment, starting it and waiting until it serves.

    [(rpc, rest)] = free_node_ports(1)     # rpc + 2, its peer port, is free too
    config = NodeConfig(node_id="a", rpc_port=rpc, rest_port=rest, db_path=tmp / "a.db",
                        cluster=f"a@127.0.0.1:{rpc}")
    node = NodeProcess.from_config(config, tmp / "a.log")   # python -m dkv.cli --node-id a ...
    node.start()
    node.wait_ready()
    ...
    node.close()

A ``NodeConfig`` is rendered as ``dkv`` flags, as ``DKV_*`` variables (the
README's form) or as a ``twistd dkv`` command line; the node is the same.
A ``NodeProcess`` can also run any argv and environment given verbatim, for
tests of the command line itself. Children get this test's environment
without its ``DKV_*`` variables and with this ``dkv`` package first on the
path (``child_env``), so they run the code under test.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

import dkv
from dkv.config import PEER_PORT_OFFSET
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import Process
from dkv.testing.rest_client import http_request

#: The directory holding the ``dkv`` package the caller imported; children get
#: it on PYTHONPATH so they run the same code.
_PACKAGE_ROOT = str(Path(dkv.__file__).resolve().parent.parent)

#: How a ``NodeConfig`` reaches the node: its flags after ``dkv``, its
#: ``DKV_*`` variables, or its flags after ``twistd -n --pidfile= dkv``.
STYLES = ("flags", "env", "twistd")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free a moment ago (held together while
    chosen, so they differ from each other)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_node_ports(n: int, host: str = "127.0.0.1") -> list[tuple[int, int]]:
    """n (RPC port, REST port) pairs for nodes that derive their peer port
    (the default ``--peer-transport twisted`` without ``--peer-port``): every
    port, and every RPC port + ``PEER_PORT_OFFSET``, was free a moment ago,
    and all of them differ (held together while chosen)."""
    held: list[socket.socket] = []
    taken: set[int] = set()

    def bind(port: int) -> int | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            return None
        held.append(s)
        chosen: int = s.getsockname()[1]
        taken.add(chosen)
        return chosen

    pairs: list[tuple[int, int]] = []
    try:
        while len(pairs) < n:
            rpc = bind(0)
            # an RPC port whose peer port is taken stays held, so it is not offered again
            if rpc is None or rpc + PEER_PORT_OFFSET > 65535 or rpc + PEER_PORT_OFFSET in taken:
                continue
            if bind(rpc + PEER_PORT_OFFSET) is None:
                continue
            rest = bind(0)
            if rest is not None:
                pairs.append((rpc, rest))
        return pairs
    finally:
        for s in held:
            s.close()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a dkv child process: ours, without any ``DKV_*``
    variable, unbuffered (a SIGKILL loses no log line), with this ``dkv``
    package first on the path; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKV_")}
    env["PYTHONUNBUFFERED"] = "1"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


def _installed(script: str, module: str) -> list[str]:
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def dkv_command() -> list[str]:
    """The installed ``dkv`` script next to this interpreter, else ``python -m dkv.cli``."""
    return _installed("dkv", "dkv.cli")


def twistd_command() -> list[str]:
    """The installed ``twistd`` next to this interpreter, else its module."""
    return _installed("twistd", "twisted.scripts.twistd")


def _strings(args: Iterable[str]) -> tuple[str, ...]:
    return tuple(args)


@attrs.frozen(kw_only=True)
class NodeConfig:
    """What a node is told at start. None leaves a setting to the node's
    default (see the README's configuration table); ``extra_args`` are more
    flags, passed verbatim after the others in every style."""

    node_id: str
    rpc_port: int
    rest_port: int
    db_path: str = attrs.field(converter=str)
    #: ``ID@HOST:RPC_PORT,...``: bootstraps an empty db.
    cluster: str | None = None
    #: ``HOST:RPC_PORT`` of a member: join its cluster as a learner.
    join: str | None = None
    #: ``ID=HOST:PORT[/PEER_PORT],...``: dial these peers there (the fault proxies).
    peer_route: str | None = None
    #: ``--peer-transport``; None: the node's default (twisted).
    peer_transport: str | None = None
    #: ``--peer-port``; None: the node's default, its RPC port + 2.
    peer_port: int | None = None
    log_level: str | None = None
    tick_ms: int | None = None
    election_ticks: int | None = None
    heartbeat_ticks: int | None = None
    request_timeout: float | None = None
    auto_promote: bool = False
    extra_args: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    def settings(self) -> dict[str, str]:
        """Flag name (without ``--``) -> value, for every setting given, in
        a fixed order; ``auto-promote`` (a switch) is ``"true"`` when on."""
        values: dict[str, Any] = {
            "node-id": self.node_id,
            "cluster": self.cluster,
            "join": self.join,
            "rpc-port": self.rpc_port,
            "rest-port": self.rest_port,
            "db-path": self.db_path,
            "log-level": self.log_level,
            "tick-ms": self.tick_ms,
            "election-ticks": self.election_ticks,
            "heartbeat-ticks": self.heartbeat_ticks,
            "request-timeout": self.request_timeout,
            "peer-route": self.peer_route,
            "peer-transport": self.peer_transport,
            "peer-port": self.peer_port,
            "auto-promote": "true" if self.auto_promote else None,
        }
        return {name: str(value) for name, value in values.items() if value is not None}

    def flags(self) -> list[str]:
        """The settings as ``dkv`` flags, then ``extra_args``."""
        argv: list[str] = []
        for name, value in self.settings().items():
            argv += [f"--{name}"] if name == "auto-promote" else [f"--{name}", value]
        return argv + list(self.extra_args)

    def variables(self) -> dict[str, str]:
        """The settings as ``DKV_*`` variables (``extra_args`` not included)."""
        return {"DKV_" + name.upper().replace("-", "_"): value for name, value in self.settings().items()}

    def command(self, style: str = "flags", program: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
        """(argv, variables) that start this node: ``program`` (default
        ``python -m dkv.cli``, or ``twistd_command()`` for ``twistd``) with
        the flags, or with only ``extra_args`` and the ``DKV_*`` variables
        for style ``env``."""
        if style == "flags":
            return [*(program or [sys.executable, "-m", "dkv.cli"]), *self.flags()], {}
        if style == "env":
            return [*(program or [sys.executable, "-m", "dkv.cli"]), *self.extra_args], self.variables()
        if style == "twistd":
            return [*(program or twistd_command()), "-n", "--pidfile=", "dkv", *self.flags()], {}
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")


class NodeProcess(Process):
    """A ``dkv`` node (or any command) in its own session, its output
    appended to ``log_path``.

    ``argv`` and ``env`` are used for every (re)start; ``env`` is added to
    ``child_env()``. ``rest_port`` is where ``request``, ``try_status`` and
    ``wait_ready`` reach it. Built by ``from_config``, it keeps its config:
    ``reconfigure`` changes what the next start is told."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        rest_port: int | None = None,
        name: str = "node",
    ) -> None:
        super().__init__(argv, log_path, cwd=cwd, name=name)
        #: Variables added to ``child_env()``.
        self.env: dict[str, str] = dict(env or {})
        self.rest_port = rest_port
        self.config: NodeConfig | None = None
        self.style = "flags"
        self.program: list[str] | None = None
        self.extra_env: dict[str, str] = {}
        #: HTTPS for ``request`` (a node serving REST over TLS); None: HTTP.
        self.ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_config(
        cls,
        config: NodeConfig,
        log_path: str | Path,
        style: str = "flags",
        program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str | None = None,
    ) -> NodeProcess:
        """The node ``config`` describes, started in ``style`` (see
        ``NodeConfig.command``); ``env`` adds variables (e.g. GRPC_TRACE).
        Named by its node id unless ``name`` is given."""
        node = cls([], log_path, cwd=cwd, rest_port=config.rest_port, name=name or config.node_id)
        node.style = style
        node.program = None if program is None else list(program)
        node.extra_env = dict(env or {})
        node._configure(config)
        return node

    def _configure(self, config: NodeConfig) -> None:
        argv, variables = config.command(self.style, self.program)
        self.config = config
        self.argv = argv
        self.env = {**self.extra_env, **variables}
        self.rest_port = config.rest_port

    def reconfigure(self, **changes: Any) -> NodeConfig:
        """Change the config the next start uses (``attrs.evolve`` fields);
        the new config."""
        if self.config is None:
            raise RuntimeError(f"{self.name} was not built from a NodeConfig")
        self._configure(attrs.evolve(self.config, **changes))
        return self.config

    def add_env(self, variables: Mapping[str, str]) -> None:
        """Add variables to what every later (re)start of this node gets."""
        self.extra_env.update(variables)
        self.env.update(variables)

    def full_env(self) -> dict[str, str]:
        return child_env(self.env)

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name} pid={self.pid} rest={self.rest_port}>"

    # -- HTTP ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One REST request to the node: (status, decoded JSON body)."""
        if self.rest_port is None:
            raise RuntimeError(f"{self.name} has no REST port")
        return http_request(self.rest_port, method, path, body, timeout, context=self.ssl_context)

    def try_status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The node's /v0/status, or None if it does not answer (down, paused)."""
        if not self.alive or self.paused:
            return None
        try:
            code, body = self.request("GET", "/v0/status", timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None
        return body if code == 200 else None

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the REST API answers /v0/status (returned); fail at
        once, with the log's tail, if the process exits."""

        def ready() -> dict[str, Any] | None:
            if not self.alive:
                raise Timeout(f"{self.name} exited with status {self.returncode} while starting")
            return self.try_status(timeout=1.0)

        try:
            return wait_until(ready, timeout, f"{self.name} to answer on REST port {self.rest_port}")
        except Timeout as e:
            raise Timeout(f"{e}\nlog of {self.name}:\n{self.log_tail()}") from None
