"""Log lines are JSON and carry call_id / correlation_id inside a bound call context."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from edge.logs import bind_call, configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging binds the stream it finds (capsys's, closed after the test): put back what was
    there, so later tests in the same process do not log into a closed file."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_call_identifiers(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = get_logger("test")
    with bind_call(call_id="c-123", correlation_id="corr-9"):
        log.info("leg answered", leg="b")
    log.info("outside any call")
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert lines[0]["event"] == "leg answered"
    assert lines[0]["call_id"] == "c-123"
    assert lines[0]["correlation_id"] == "corr-9"
    assert lines[0]["leg"] == "b"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert "call_id" not in lines[1]


def test_standard_library_loggers_share_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    with bind_call(call_id="c-7"):
        logging.getLogger("aiokafka").warning("broker gone")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "broker gone"
    assert line["call_id"] == "c-7"
    assert line["level"] == "warning"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json")
    get_logger("t").info("hidden")
    get_logger("t").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "shown" in err
