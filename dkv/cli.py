# test-case-name: tests.test_process
"""The ``dkv`` command: run one node in the foreground, configured like the
Go project it succeeds (``DKV_*`` variables) or with the same flags as
``twistd dkv``. Logs go to stdout; SIGINT/SIGTERM stop the node cleanly. A
node that cannot start prints one line (``dkv: reason``) and exits 1.

``dkv restore FILE ...`` creates a member's db from a backup instead
(``dkv.restore_cli``); any other first argument is the node's."""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.logger import globalLogBeginner
from twisted.python import usage

from dkv import logs, memory_debug
from dkv.errors import StartupError
from dkv.tap import Options, build  # dkv.tap installs the asyncio reactor first


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["restore"]:
        from dkv import restore_cli

        restore_cli.main(argv[1:])
        return
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.exit(f"dkv: {e}")

    from twisted.internet import reactor  # the asyncio reactor, installed by dkv.tap

    # Tests and soaks only (DKV_TRACEMALLOC): dumps beside the db on SIGUSR2.
    memory_debug.install(Path(options["config"].db_path).absolute())

    observer = logs.log_observer(options["config"].log_format, sys.stdout)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service = build(options["config"])
    try:
        service.privilegedStartService()
        service.startService()
    except StartupError as e:
        sys.exit(f"dkv: {e}")
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
