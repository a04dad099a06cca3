"""The I/O half of overload control: measures how long a SIP datagram waits for the node.

Every probe interval a small datagram goes from a socket of its own to the node's SIP UDP socket; the
hub hands it back here when it reads it (it checks the source port and address before anything else).
The time between is the wait in the socket queue plus the wait for the event loop: what a request waits.
Without a UDP listener, or if the first probe does not come back (a firewall on loopback, say), the
lateness of this module's own timer is the measure instead: the event loop's share of the wait.

The decisions and the numbers live in signaling/sip/overload.py; this module logs the episodes:
``overload: refusing a share of new calls`` when one starts and ``overload over`` with what it refused.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING

from edge.logs import get_logger
from signaling.sip.overload import OverloadControl

if TYPE_CHECKING:
    from signaling.transport.hub import SipTransportHub

log = get_logger("uc_edge.overload")

PROBE_MAGIC = b"\x00uc-edge load probe\x00"  # a NUL first: never a SIP message nor a keep-alive
_SEQUENCE = struct.Struct("!Q")
FIRST_PROBE_TIMEOUT = 2.0


def _probe_target(listen: tuple[str, int]) -> tuple[str, int]:
    host, port = listen
    if host == "0.0.0.0":
        return "127.0.0.1", port
    if host == "::":
        return "::1", port
    return host, port


class LoadProbe:
    """Sends probes to ``hub``'s UDP socket and reports them to ``control``."""

    def __init__(self, control: OverloadControl, hub: SipTransportHub) -> None:
        self.control = control
        self.hub = hub
        self.source: tuple[str, int] | None = None  # where probes come from, once the UDP probe works
        self.mode = "stopped"  # "datagram", "loop" (timer lateness) or "stopped"
        self._socket: socket.socket | None = None
        self._target: tuple[str, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._first: asyncio.Future[None] | None = None
        self._announced = False

    async def start(self) -> None:
        listen = self.hub.udp_address
        if listen is not None:
            target = _probe_target(listen)
            family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((target[0], 0))
            self._socket, self._target = sock, target
            self.source = sock.getsockname()[:2]
            self.hub.probe_port = self.source[1]
            self._first = self.hub.loop.create_future()
            self.mode = "datagram"
            self._send()
            try:
                await asyncio.wait_for(self._first, FIRST_PROBE_TIMEOUT)
            except TimeoutError:
                log.error(
                    "overload probe did not come back; measuring event-loop lateness only",
                    target=f"{target[0]}:{target[1]}",
                    waited_s=FIRST_PROBE_TIMEOUT,
                )
                self._close_socket()
            self._first = None
        if self._socket is None:
            self.mode = "loop"
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_socket()
        self.mode = "stopped"

    def is_probe(self, address: tuple[str | int, ...]) -> bool:
        source = self.source
        return source is not None and address[1] == source[1] and address[0] == source[0]

    def returned(self, data: bytes) -> None:
        """A datagram from the probe socket reached the hub."""
        if not data.startswith(PROBE_MAGIC) or len(data) != len(PROBE_MAGIC) + _SEQUENCE.size:
            return
        (sequence,) = _SEQUENCE.unpack_from(data, len(PROBE_MAGIC))
        self.control.probe_returned(sequence, self.hub.now())
        if self._first is not None and not self._first.done():  # start() waits for the first one
            self._first.set_result(None)

    # ------------------------------------------------------------------ internals

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self.source = None
            self.hub.probe_port = -1

    def _schedule(self) -> None:
        interval = self.control.config.probe_interval
        self._due = self.hub.now() + interval
        self._timer = self.hub.loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.hub.now()
        control = self.control
        if self._socket is None:
            control.sample(now - self._due, now)
        else:
            self._send()
        self._log_episodes(now)
        self._schedule()

    def _send(self) -> None:
        assert self._socket is not None and self._target is not None
        sequence = self.control.probe_sent(self.hub.now())
        try:
            self._socket.sendto(PROBE_MAGIC + _SEQUENCE.pack(sequence), self._target)
        except OSError:
            pass  # a full send buffer: the probe counts as out until a later one returns

    def _log_episodes(self, now: float) -> None:
        control = self.control
        episode = control.episode
        if episode is not None and not self._announced:
            self._announced = True
            log.warning(
                "overload: refusing a share of new calls",
                queue_delay_ms=round(control.delay(now) * 1000),
                refused_share=round(control.refusal_share(now), 2),
                target_ms=round(control.config.target_delay * 1000),
                limit_ms=round(control.config.limit_delay * 1000),
            )
        ended = control.ended_episode(now)
        if ended is not None:
            self._announced = False
            log.warning(
                "overload over",
                refused=ended.refused,
                admitted=ended.admitted,
                peak_delay_ms=round(ended.peak_delay * 1000),
                lasted_s=round(ended.last_refusal - ended.started, 1),
            )
