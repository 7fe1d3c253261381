"""``--log-format json``: one JSON object per line, with time, level, logger,
message and the event's simple fields; a failure's traceback in one field.
Observer-level tests, then real nodes (``dkv`` and ``twistd dkv``) whose
every output line parses."""

from __future__ import annotations

import io
import json
import signal
from datetime import datetime
from pathlib import Path

import pytest
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python.failure import Failure

from dkv.logs import json_line, json_observer, log_observer, predicate
from dkv.options import Options
from dkv.testing.launcher import NodeConfig, NodeProcess, free_node_ports


def emitted(emit) -> list[dict]:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    logger = Logger(namespace="dkv.test", observer=json_observer(stream))
    emit(logger)
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def test_an_event_is_one_line_with_time_level_logger_message_and_fields() -> None:
    [record] = emitted(lambda log: log.info("peer {peer} is back after {seconds}s", peer="b", seconds=2.5))
    assert record["level"] == "info"
    assert record["logger"] == "dkv.test"
    assert record["message"] == "peer b is back after 2.5s"
    assert record["peer"] == "b" and record["seconds"] == 2.5
    when = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert record["time"].endswith("Z") and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert not any(key.startswith("log_") for key in record)


def test_fields_that_are_not_simple_are_left_to_the_message() -> None:
    [record] = emitted(lambda log: log.warn("odd {thing} {n}", thing=object(), n=float("nan"), items=[1, 2]))
    assert record["level"] == "warn"
    assert "thing" not in record and "items" not in record
    assert record["n"] == "nan"
    assert record["message"].startswith("odd <object object")


def test_a_failure_is_one_line_with_its_traceback_in_one_field() -> None:
    def fail(log: Logger) -> None:
        try:
            raise ValueError("broken\non two lines")
        except ValueError:
            log.failure("applying entry {index} failed", index=7)

    records = emitted(fail)
    assert len(records) == 1
    [record] = records
    assert record["level"] == "critical"
    assert record["message"] == "applying entry 7 failed"
    assert record["index"] == 7
    assert record["exception_type"] == "ValueError"
    assert record["exception"] == "broken\non two lines"
    assert record["traceback"].startswith("Traceback")
    assert "ValueError: broken" in record["traceback"]


def test_a_legacy_error_keeps_its_traceback_out_of_the_message() -> None:
    stream = io.StringIO()
    observer = json_observer(stream)
    globalLogPublisher.addObserver(observer)
    try:
        legacy_log.err(Failure(RuntimeError("old style")), "Unhandled error in Deferred:")
    finally:
        globalLogPublisher.removeObserver(observer)
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "Unhandled error in Deferred:"
    assert record["level"] == "critical"
    assert record["exception"] == "old style"
    assert "RuntimeError: old style" in record["traceback"]


def test_time_is_rfc3339_utc() -> None:
    line = json_line({"log_time": 1700000000.25, "log_format": "x", "log_level": LogLevel.info})
    assert json.loads(line)["time"] == "2023-11-14T22:13:20.250000Z"


def test_log_level_filters_json_too() -> None:
    stream = io.StringIO()
    observer = log_observer("json", stream)
    logger = Logger(namespace="dkv.test", observer=observer)
    before = predicate.logLevelForNamespace("")
    predicate.setLogLevelForNamespace("", LogLevel.warn)
    try:
        logger.info("hidden")
        logger.warn("shown")
    finally:
        predicate.setLogLevelForNamespace("", before)
    assert [json.loads(x)["message"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_json_line_never_holds_a_newline() -> None:
    line = json_line({"log_format": "a\nb {x}", "x": "c\nd", "log_level": LogLevel.info, "log_namespace": "n"})
    assert "\n" not in line and json.loads(line)["message"] == "a\nb c\nd"


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        ([], {}, "text"),
        (["--log-format", "json"], {}, "json"),
        (["--log-format", "JSON"], {}, "json"),
        ([], {"DKV_LOG_FORMAT": "json"}, "json"),
        (["--log-format", "text"], {"DKV_LOG_FORMAT": "json"}, "text"),
    ],
)
def test_log_format_flag_and_variable(
    argv: list[str], env: dict[str, str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = Options()
    options.parseOptions(
        ["--node-id", "a", "--db-path", str(tmp_path / "a.db"), "--cluster", "a@127.0.0.1:7070", *argv]
    )
    assert options["config"].log_format == expected


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="log format 'xml'"):
        Options().parseOptions(["--node-id", "a", "--db-path", str(tmp_path / "a.db"), "--log-format", "xml"])


# -- real nodes ----------------------------------------------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("style", ["flags", "twistd"])
def test_a_node_logs_only_json_lines(style: str, tmp_path: Path) -> None:
    [(rpc, rest)] = free_node_ports(1)
    config = NodeConfig(
        node_id="a",
        rpc_port=rpc,
        rest_port=rest,
        db_path=tmp_path / "a.db",
        cluster=f"a@127.0.0.1:{rpc}",
        extra_args=["--log-format", "json"],
    )
    node = NodeProcess.from_config(config, tmp_path / "a.log", style=style)
    try:
        node.start()
        node.wait_ready(60)
        assert node.request("POST", "/v0/kv", {"key": "", "value": "eA=="})[0] == 400  # logged once
        node.signal(signal.SIGTERM)
        assert node.proc is not None
        assert node.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        node.close()
    lines = [line for line in node.log_text().splitlines() if not line.startswith("=== harness")]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("Z")
    starting = next(r for r in records if r["message"].startswith("dkv node a starting"))
    assert starting["logger"] == "dkv" and starting["level"] == "info" and starting["id"] == "a"
