"""Session timers (RFC 4028): header values, the UAS negotiation and the refresh/expiry deadlines.

Pure helpers for :mod:`signaling.sip.invite`. Roles: the ``refresher`` parameter is ``uac`` or
``uas`` relative to the transaction that carries it; :class:`ActiveSessionTimer` stores the
outcome from our point of view (``we_refresh``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from signaling.sip.message import Request, SipMessage, split_header_values

__all__ = [
    "ABSOLUTE_MIN_SE",
    "ActiveSessionTimer",
    "IntervalTooSmall",
    "SessionExpires",
    "SessionTimerSettings",
    "has_option",
    "min_se_of",
    "negotiate_as_uas",
    "session_expires_of",
]

ABSOLUTE_MIN_SE = 90
"""RFC 4028 §4: no Session-Expires or Min-SE below 90 seconds."""

Refresher = Literal["uac", "uas"]
_DELTA_RE = re.compile(r"[0-9]{1,10}")


@dataclasses.dataclass(frozen=True, slots=True)
class SessionTimerSettings:
    """Our policy. ``refresher`` is who we ask to refresh when the choice is ours as UAS
    (``None``: the UAC when it supports timers, as RFC 4028 §9 suggests)."""

    session_expires: int = 1800
    min_se: int = ABSOLUTE_MIN_SE
    refresher: Refresher | None = None

    def __post_init__(self) -> None:
        if self.min_se < ABSOLUTE_MIN_SE:
            raise ValueError(f"Min-SE must be at least {ABSOLUTE_MIN_SE} seconds")
        if self.session_expires < self.min_se:
            raise ValueError("Session-Expires must not be below Min-SE")


@dataclasses.dataclass(frozen=True, slots=True)
class SessionExpires:
    interval: int
    refresher: Refresher | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        parts = [part.strip() for part in value.split(";")]
        if not parts or _DELTA_RE.fullmatch(parts[0]) is None:
            raise ValueError(f"Session-Expires {value!r} is not a delta-seconds value")
        refresher: Refresher | None = None
        for parameter in parts[1:]:
            name, _, raw = parameter.partition("=")
            if name.strip().lower() == "refresher":
                text = raw.strip().lower()
                if text == "uac":
                    refresher = "uac"
                elif text == "uas":
                    refresher = "uas"
                else:
                    raise ValueError(f"refresher {raw!r} is neither uac nor uas")
        return cls(int(parts[0]), refresher)

    def __str__(self) -> str:
        return f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)


@dataclasses.dataclass(frozen=True, slots=True)
class ActiveSessionTimer:
    """The negotiated timer from our side. Deadlines are relative to the last refresh."""

    interval: int
    we_refresh: bool

    @property
    def refresh_after(self) -> float:
        """The refresher refreshes at half the interval (RFC 4028 §10)."""
        return self.interval / 2

    @property
    def expire_after(self) -> float:
        """The other side sends BYE if no refresh arrived by then (RFC 4028 §10)."""
        return self.interval - min(32.0, self.interval / 3)


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalTooSmall:
    """The request's Session-Expires is below our Min-SE: answer 422 with ``min_se``."""

    min_se: int


def has_option(message: SipMessage, header: str, option: str) -> bool:
    """Whether option tag ``option`` is listed in ``header`` (Supported/Require/Unsupported...)."""
    wanted = option.lower()
    return any(
        item.strip().lower() == wanted
        for value in message.headers.getlist(header)
        for item in split_header_values(value)
    )


def session_expires_of(message: SipMessage) -> SessionExpires | None:
    """The Session-Expires of a message; ``ValueError`` when present but invalid."""
    value = message.headers.get("Session-Expires")
    return None if value is None else SessionExpires.parse(value)


def min_se_of(message: SipMessage) -> int | None:
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    text = value.split(";", 1)[0].strip()
    if _DELTA_RE.fullmatch(text) is None:
        raise ValueError(f"Min-SE {value!r} is not a delta-seconds value")
    return int(text)


def negotiate_as_uas(
    request: Request, settings: SessionTimerSettings
) -> tuple[ActiveSessionTimer | None, list[tuple[str, str]]] | IntervalTooSmall:
    """RFC 4028 §9 for a session refresh request we answer with a 2xx.

    Returns the timer (``None`` when no timer is used) and the headers for our 2xx, or
    :class:`IntervalTooSmall` when a 422 is due. ``ValueError`` for unreadable headers (400).
    """
    requested = session_expires_of(request)
    request_min_se = min_se_of(request) or ABSOLUTE_MIN_SE
    peer_supports = has_option(request, "Supported", "timer")
    if requested is not None and requested.interval < settings.min_se:
        return IntervalTooSmall(settings.min_se)
    floor = max(request_min_se, settings.min_se)
    if requested is None:
        interval = max(settings.session_expires, floor)
        refresher: Refresher = "uas"
        if peer_supports and settings.refresher == "uac":
            refresher = "uac"
    else:
        interval = max(min(requested.interval, settings.session_expires), floor)
        if requested.refresher is not None:
            refresher = requested.refresher
        elif not peer_supports:
            refresher = "uas"
        else:
            refresher = settings.refresher or "uac"
    headers = [("Session-Expires", str(SessionExpires(interval, refresher)))]
    if refresher == "uac":
        headers.append(("Require", "timer"))
    return ActiveSessionTimer(interval, we_refresh=refresher == "uas"), headers
