"""Structured logs: JSON lines (or a readable console form in a TTY) carrying call_id / correlation_id.

Code binds the through-identifiers once with :func:`bind_call` (contextvars, so they follow the asyncio
task) and every line logged in that context carries them: operators grep ``call_id=…`` across nodes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    global _configured
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: route them to the same stream and format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                *shared[:3],
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level == "DEBUG" else level)
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


@contextmanager
def bind_call(call_id: str | None = None, correlation_id: str | None = None, **extra: Any) -> Iterator[None]:
    """Attach the call's identifiers to every log line emitted inside the block."""
    values = {k: v for k, v in {"call_id": call_id, "correlation_id": correlation_id, **extra}.items() if v}
    with structlog.contextvars.bound_contextvars(**values):
        yield
