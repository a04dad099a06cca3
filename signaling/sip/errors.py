"""Errors of the SIP core, named after whose fault they are (h11's convention).

* :class:`LocalProtocolError` -- our own code asked for something the protocol forbids
  (responding twice with a final response, sending on a terminated transaction, ...).
  It is a bug in the caller; it is never caused by what a peer sent.
* :class:`RemoteProtocolError` -- a peer sent something broken. ``status_code`` is the
  response the RFC asks for (400, 416, 481, 482, 483, 505, ...) when one can be sent
  back, or ``None`` when the message must simply be dropped.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error raised by ``signaling.sip``."""


class LocalProtocolError(SipError):
    """Our side broke the protocol: a programming error in the caller."""


class RemoteProtocolError(SipError):
    """The peer broke the protocol; ``status_code`` is the answer to send, if any."""

    def __init__(self, reason: str, status_code: int | None = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
