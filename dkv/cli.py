# test-case-name: tests.test_process
"""The ``dkv`` command: run one node in the foreground, configured like the
Go project it succeeds (``DKV_*`` variables) or with the same flags as
``twistd dkv``. Logs go to stdout; SIGINT/SIGTERM stop the node cleanly."""

from __future__ import annotations

import sys

from twisted.logger import globalLogBeginner
from twisted.python import usage


def main(argv: list[str] | None = None) -> None:
    from dkv import logs
    from dkv.tap import Options, makeService

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.exit(f"dkv: {e}")

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([logs.stream_observer(sys.stdout)], redirectStandardIO=False)
    service = makeService(options)
    service.privilegedStartService()  # SystemExit with one line on failure
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
