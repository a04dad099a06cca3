"""Bodies and headers call control reads or writes: SIP INFO DTMF, REFER's Refer-To, NOTIFY sipfrag."""

from __future__ import annotations

from dataclasses import dataclass

from signaling.sip.dialog import uri_of
from signaling.sip.message import URI, Request, reason_phrase

DTMF_DIGITS = frozenset("0123456789*#ABCD")
DEFAULT_DTMF_MS = 100
MAX_DTMF_MS = 5000
MIN_DTMF_MS = 40
SIPFRAG_TYPE = "message/sipfrag;version=2.0"


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    duration_ms: int


def parse_dtmf_info(request: Request) -> DtmfDigit | None:
    """The digit of an INFO with ``application/dtmf-relay`` (``Signal=5``/``Duration=160``) or
    ``application/dtmf`` (``5``); None when the INFO carries no DTMF. ValueError for a bad body."""
    content_type = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type not in ("application/dtmf-relay", "application/dtmf"):
        return None
    if len(request.body) > 1024:
        raise ValueError("DTMF INFO body is too long")
    try:
        text = request.body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("DTMF INFO body is not ASCII") from None
    signal: str | None = None
    duration = DEFAULT_DTMF_MS
    if content_type == "application/dtmf":
        signal = text.strip()
    else:
        for line in text.splitlines():
            name, _, value = line.partition("=")
            key, value = name.strip().lower(), value.strip()
            if key == "signal":
                signal = value
            elif key == "duration":
                if not value.isdigit() or len(value) > 6:
                    raise ValueError(f"DTMF duration {value!r} is not a number")
                duration = int(value)
    if signal is None:
        raise ValueError("DTMF INFO without Signal")
    signal = signal.upper()
    if signal == "10":
        signal = "*"
    elif signal == "11":
        signal = "#"
    if signal not in DTMF_DIGITS:
        raise ValueError(f"DTMF signal {signal!r} is not a digit")
    return DtmfDigit(signal, min(max(duration, MIN_DTMF_MS), MAX_DTMF_MS))


def refer_target(request: Request) -> URI:
    """The URI of Refer-To (RFC 3515); ValueError when missing, repeated or not a SIP URI."""
    values = request.headers.getlist("Refer-To")
    if len(values) != 1:
        raise ValueError("REFER needs exactly one Refer-To")
    uri = uri_of(values[0])
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise ValueError("Refer-To is not a sip: URI")
    return uri


def sipfrag(status_code: int) -> bytes:
    """The ``message/sipfrag`` body of a REFER NOTIFY: the status line of the referred call."""
    return f"SIP/2.0 {status_code} {reason_phrase(status_code)}\r\n".encode()
