"""RTP port pairs from a configured range (pure bookkeeping; binding the sockets is the endpoint's job).

RTP takes an even port and RTCP the odd one above it (RFC 3550 §11), so the pool hands out even ports
``p`` with ``p + 1 <= max_port``. Allocation walks the range round-robin from where it last stopped, so a
port freed by a finished call is the last to be reused: stray packets of the old call then cannot land on
a new call's endpoint. A port the OS refused to bind (someone else owns it) is parked with
``mark_unusable`` and retried only after the whole range has been walked.
"""

from __future__ import annotations

from media.control import MediaError


class PortPool:
    __slots__ = ("_cursor", "_in_use", "_ports", "_unusable", "max_port", "min_port")

    def __init__(self, min_port: int, max_port: int) -> None:
        if not 1 <= min_port <= max_port <= 65535:
            raise ValueError(f"RTP port range {min_port}..{max_port} is invalid")
        first = min_port + (min_port % 2)
        self._ports = range(first, max_port, 2)  # p + 1 must stay inside the range
        if not self._ports:
            raise ValueError(f"RTP port range {min_port}..{max_port} holds no even/odd port pair")
        self.min_port = min_port
        self.max_port = max_port
        self._cursor = 0
        self._in_use: set[int] = set()
        self._unusable: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many RTP/RTCP pairs the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def free(self) -> int:
        return len(self._ports) - len(self._in_use)

    def acquire(self) -> int:
        """The next free even RTP port; :class:`MediaError` when the range is exhausted."""
        ports = self._ports
        count = len(ports)
        for skip_unusable in (True, False):
            for step in range(count):
                port = ports[(self._cursor + step) % count]
                if port in self._in_use or (skip_unusable and port in self._unusable):
                    continue
                self._cursor = (self._cursor + step + 1) % count
                self._in_use.add(port)
                self._unusable.discard(port)
                return port
        raise MediaError(
            f"no free RTP port: all {count} port pairs of {self.min_port}..{self.max_port} are in use"
        )

    def release(self, port: int) -> None:
        """Give ``port`` back; releasing a port that is not held is ignored (destroy may run twice)."""
        self._in_use.discard(port)

    def mark_unusable(self, port: int) -> None:
        """``port`` was acquired but could not be bound: release it and avoid it for a while."""
        self._in_use.discard(port)
        self._unusable.add(port)
