"""Structured logs: JSON lines (or a readable console form in a TTY) carrying call_id / correlation_id.

Code binds the through-identifiers once with :func:`bind_call` (contextvars, so they follow the asyncio
task) and every line logged in that context carries them: operators grep ``call_id=…`` across nodes.

Binding is on the hot path of every SIP message of a call, logging mostly is not: :func:`bind_call` sets
one context variable (a ready-made dict, see :func:`call_context`), and a processor copies it into the
lines that are actually written.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

import structlog

_configured = False
_bound: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "uc_edge_log_call", default=None
)


def merge_call_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the identifiers bound with :func:`bind_call` (the line's own keys win)."""
    bound = _bound.get()
    if bound:
        for key, value in bound.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    global _configured
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_call_context,
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
                *shared[:4],
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


def call_context(
    call_id: str | None = None, correlation_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The values :func:`bind_call` binds (empty ones left out); build it once per call and reuse it."""
    values = {"call_id": call_id, "correlation_id": correlation_id, **extra}
    return {key: value for key, value in values.items() if value}


class bind_call:
    """Attach the call's identifiers to every log line emitted inside the block (nested blocks add to
    the outer one's): ``with bind_call(call_id, correlation_id): ...`` or ``with bind_call.of(values):``
    with a dict from :func:`call_context`."""

    __slots__ = ("_token", "_values")

    def __init__(self, call_id: str | None = None, correlation_id: str | None = None, **extra: Any) -> None:
        self._values: Mapping[str, Any] = call_context(call_id, correlation_id, **extra)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> bind_call:
        bound = cls.__new__(cls)
        bound._values = values
        return bound

    def __enter__(self) -> None:
        outer, values = _bound.get(), self._values
        self._token = _bound.set({**outer, **values} if outer and outer is not values else values)

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        _bound.reset(self._token)
