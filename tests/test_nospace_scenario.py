"""The pure parts of ``dkv.testing.nospace_scenario`` (the steps themselves
run in ``tests/compat/test_etcdctl_nospace.py``)."""

from __future__ import annotations

import pytest

from dkv.testing.nospace_scenario import STEPS, StepResult, assert_passed, main, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 << 20), ("768KiB", 768 << 10), ("1048576", 1 << 20), ("2gib", 2 << 30), ("10MB", 10_000_000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1MiB", "12XB", "1.5MiB"])
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_a_bad_quota_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--quota", "lots"])
    assert e.value.code == 2 and "not a size: 'lots'" in capsys.readouterr().err


def test_every_step_must_pass() -> None:
    passed = [StepResult(name, True, "ok", 0.1) for name, _ in STEPS]
    assert_passed(passed)
    with pytest.raises(AssertionError, match="FAIL  deletes work"):
        assert_passed([*passed[:3], StepResult("deletes work", False, "deleted 0", 0.1)])
    with pytest.raises(AssertionError):
        assert_passed(passed[:-1])  # a step that did not run did not pass
