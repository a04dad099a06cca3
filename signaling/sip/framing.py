"""Message framing for stream transports (TCP/TLS): RFC 3261 §18.3 Content-Length framing and the
RFC 5626 §4.4.1 CRLF keep-alive (a "\\r\\n\\r\\n" ping is answered with a "\\r\\n" pong).

Sans-IO: ``feed(data)`` returns the complete messages found so far; partial input stays buffered.
A stream that cannot be framed (no end of headers within the limit, a bad or duplicated
Content-Length, a message over the limit) raises :class:`FramingError`: the connection must be closed,
since nothing after the broken message can be trusted.
"""

from __future__ import annotations

import re

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]{1,10}")


class FramingError(ValueError):
    """The byte stream cannot be split into SIP messages; close the connection."""


class StreamFramer:
    def __init__(self, max_message_size: int = 65_536) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self.pings = 0
        """Keep-alive pings seen and not yet answered; the transport sends one CRLF per ping."""

    @property
    def buffered(self) -> int:
        """Bytes of a message still incomplete (lets the transport time out slow peers)."""
        return len(self._buffer)

    def take_pongs(self) -> int:
        pings, self.pings = self.pings, 0
        return pings

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        while buffer:
            if buffer[0:1] == b"\r":
                if buffer.startswith(b"\r\n\r\n"):
                    self.pings += 1
                    del buffer[:4]
                    continue
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    break  # maybe the start of a ping
                if buffer.startswith(b"\r\n"):
                    del buffer[:2]  # a pong or stray CRLF between messages
                    continue
                raise FramingError("stray CR between messages")
            head_end = buffer.find(b"\r\n\r\n", 0, self.max_message_size)
            if head_end < 0:
                if len(buffer) >= self.max_message_size:
                    raise FramingError(f"no end of headers within {self.max_message_size} bytes")
                break
            length = self._content_length(bytes(buffer[:head_end]))
            total = head_end + 4 + length
            if total > self.max_message_size:
                raise FramingError(f"message of {total} bytes exceeds {self.max_message_size}")
            if len(buffer) < total:
                break
            messages.append(bytes(buffer[:total]))
            del buffer[:total]
        return messages

    @staticmethod
    def _content_length(head: bytes) -> int:
        values = {value.strip() for value in _CONTENT_LENGTH.findall(head)}
        if not values:
            return 0  # §18.3 requires it on streams; a message without body framed as empty is safest
        if len(values) > 1:
            raise FramingError("conflicting Content-Length headers")
        (value,) = values
        if _DIGITS.fullmatch(value) is None:
            raise FramingError("Content-Length is not a number")
        return int(value)
