# test-case-name: tests.compat.test_dkvctl_stream,tests.client.test_ctl_stream
"""``dkvctl``'s long-running commands, on ``dkv.client`` and a reactor:

    dkvctl watch KEY [END] [--prefix] [--rev N] [--prev-kv]
        every event as etcdctl prints it: PUT or DELETE, then (with
        --prev-kv, when there was one) the previous key and value, then the
        key and value, a line each. Runs until interrupted; survives a node
        going away (the watch resumes on the next endpoint from the last
        revision seen + 1).
    dkvctl lock NAME [--ttl N] [-- COMMAND ARGS...]
        acquire etcd's lock NAME (interoperates with ``etcdctl lock``) on a
        session lease of N seconds (default 10, as etcdctl). With a command:
        run it holding the lock, with ETCD_LOCK_KEY and ETCD_LOCK_REV in
        its environment, release, and exit with its status. Without: print
        the lock's key and value and hold it until SIGINT or SIGTERM.

Exit status (differences from etcdctl are listed in README): 0 after an
interrupt (SIGINT, SIGTERM) or, for lock, the command's own status (128 +
N when a signal N ended it); 1 when the cluster refused or the watch was
cancelled (a compacted start revision) or the lock's session expired; 2 when
no endpoint could be reached. SIGINT and SIGTERM during ``lock -- COMMAND``
are passed on to the command; the lock is released when it exits. If the
session expires while the command runs, the command is sent SIGTERM
(etcdctl lets it run on without the lock).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

from dkv.client import Client, ClientTls, DkvClientError, Lock, Unreachable, WatchClosed
from dkv.client.values import PUT, Event, KeyValue, b64
from dkv.ctl_etcd import show
from dkv.ctl_requests import to_bytes
from dkv.ctl_transport import REFUSED, UNREACHABLE

#: etcdctl lock's default session TTL (seconds).
LOCK_TTL = 10


def add_watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("key")
    p.add_argument("end", nargs="?", help="watch [KEY, END) instead of one key")
    p.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    p.add_argument("--rev", type=int, default=0, help="start at revision N (default: now)")
    p.add_argument("--prev-kv", action="store_true", help="show each key's previous value")


def add_lock_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--ttl", type=int, default=LOCK_TTL, help="session lease TTL in seconds (default 10)")
    p.add_argument("exec_command", nargs="*", metavar="-- COMMAND ARGS", help="a command to run while holding the lock")


def event_lines(event: Event, is_b64: bool) -> list[str]:
    """One event as etcdctl's simple format prints it."""

    def kv_lines(kv: KeyValue) -> list[str]:
        return [show(b64(kv.key), is_b64), show(b64(kv.value), is_b64)]

    lines = [event.type if event.type != PUT else "PUT"]
    if event.prev_kv is not None:
        lines += kv_lines(event.prev_kv)
    return lines + kv_lines(event.kv)


def _error_exit(error: DkvClientError, err: TextIO) -> int:
    err.write(f"dkvctl: {error.message}\n")
    err.flush()
    return UNREACHABLE if isinstance(error, Unreachable) else REFUSED


async def watch_command(
    client: Client, args: argparse.Namespace, out: TextIO, err: TextIO, interrupted: defer.Deferred[None]
) -> int:
    """Print every event until interrupted fires: the exit status."""
    key = to_bytes(args.key, args.b64)
    end = to_bytes(args.end, args.b64, "range end") if args.end is not None else None
    if end is not None and args.prefix:
        err.write("dkvctl: `range_end` and `--prefix` are mutually exclusive\n")
        return REFUSED
    watch = client.watch(key, end, prefix=args.prefix, start_revision=args.rev, prev_kv=args.prev_kv)
    interrupted.addCallback(lambda _: watch.close())
    try:
        while True:
            event = await watch.next()
            out.write("\n".join(event_lines(event, args.b64)) + "\n")
            out.flush()
    except WatchClosed:
        return 0
    except DkvClientError as e:
        return _error_exit(e, err)


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[int] = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        self.ended.callback(128 + sig if code is None and sig else (code or 0))


async def lock_command(
    client: Client,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    interrupted: defer.Deferred[None],
    reactor: Any,
    signalled: Callable[[Callable[[int], None]], None] = lambda _: None,
) -> int:
    """Hold lock args.name, running args.command (if any) meanwhile: the exit status."""
    command = list(args.exec_command)
    executable = shutil.which(command[0]) if command else None
    if command and executable is None:
        err.write(f"dkvctl: {command[0]}: command not found\n")
        return 127
    lock = Lock(client, to_bytes(args.name, args.b64, "name"), ttl=args.ttl)
    acquiring = defer.ensureDeferred(lock.acquire())
    interrupted.addCallback(lambda _: acquiring.cancel())
    try:
        await acquiring
    except defer.CancelledError:
        err.write("dkvctl: interrupted before the lock was acquired\n")
        return REFUSED
    except DkvClientError as e:
        return _error_exit(e, err)
    assert lock.key is not None and lock.session is not None and lock.header is not None
    lost = lock.session.lost
    try:
        if command:
            env = dict(os.environ, ETCD_LOCK_KEY=lock.key.decode("utf-8", "replace"))
            env["ETCD_LOCK_REV"] = str(lock.header.revision)
            out.flush()
            child = _Child()
            process = reactor.spawnProcess(child, executable, command, env=env, childFDs={0: 0, 1: 1, 2: 2})

            def pass_on(signum: int) -> None:
                if not child.ended.called:
                    process.signalProcess(signum)

            signalled(pass_on)

            def session_lost(reason: DkvClientError) -> None:
                if not child.ended.called:
                    err.write(f"dkvctl: lock lost ({reason.message}); stopping the command\n")
                    err.flush()
                    process.signalProcess("TERM")

            lost.addCallback(session_lost)
            return await child.ended
        kv = await client.get(lock.key)
        if kv is None:
            err.write("dkvctl: lock lost on init\n")
            return REFUSED
        out.write("\n".join([show(b64(kv.key), args.b64), show(b64(kv.value), args.b64)]) + "\n")
        out.flush()
        done: defer.Deferred[str] = defer.Deferred()

        def end(why: str) -> None:
            if not done.called:
                done.callback(why)

        interrupted.addCallback(lambda _: end("interrupted"))
        lost.addCallback(lambda _: end("lost"))
        if await done == "lost":
            err.write("dkvctl: session expired\n")
            return REFUSED
        return 0
    finally:
        try:
            await lock.release()
        except DkvClientError as e:
            err.write(f"dkvctl: releasing the lock: {e.message}\n")


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """dkvctl's --cacert/--cert/--key for dkv.client (None without them)."""
    files = (getattr(args, "tls_cacert", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None))
    return ClientTls(*files) if any(files) else None


def run(args: argparse.Namespace) -> None:
    """Run watch or lock on the global reactor until done; exits the process."""
    endpoints = args.endpoints
    tls = _client_tls(args)
    if tls is not None:  # as dkvctl's other commands: no scheme means https with TLS files
        endpoints = [e if "://" in e else f"https://{e}" for e in endpoints]

    async def main(reactor: Any) -> None:
        client = Client(endpoints, reactor=reactor, timeout=args.timeout, tls=tls)
        interrupted: defer.Deferred[None] = defer.Deferred()
        forward: list[Callable[[int], None]] = []

        def on_signal(signum: int, frame: Any) -> None:
            def handle() -> None:
                for hook in forward:
                    hook(signum)
                if not forward and not interrupted.called:
                    interrupted.callback(None)

            reactor.callFromThread(handle)

        def install() -> None:
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)

        install()
        if args.command == "watch":
            code = await watch_command(client, args, sys.stdout, sys.stderr, interrupted)
        else:
            code = await lock_command(client, args, sys.stdout, sys.stderr, interrupted, reactor, forward.append)
        await client.close()
        raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(_after_startup(reactor, main)))


async def _after_startup(reactor: Any, main: Callable[[Any], Any]) -> None:
    # The reactor installs its own SIGINT/SIGTERM handlers when it starts;
    # ours go in after that.
    await task.deferLater(reactor, 0, lambda: None)
    await main(reactor)
