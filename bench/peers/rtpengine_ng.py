"""A small rtpengine NG-protocol client (bencode over UDP) and the daemon's start/stop, for ``rtp-relay``.

The NG protocol: each request is ``<cookie> <bencoded dictionary>`` in one UDP datagram, and the answer
repeats the cookie before its own dictionary. Only what the bench needs is here: ``ping``, ``offer``
(the caller's SDP in, the SDP for the callee out), ``answer`` (the callee's SDP in, the SDP for the caller
out) and ``delete``. :func:`relay_calls` sets up N calls of PCMU between the load generator's phone
sockets and returns the rtpengine port each stream must be sent to, in the targets format of
``bench/peers/rtp_load.py``.

:class:`Rtpengine` runs Debian's ``rtpengine`` in the foreground in userspace-only mode (``--table=-1``:
no kernel module, every packet through its own threads), optionally pinned to one CPU, and stops it by
its PID.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

Bencodable = bytes | str | int | list["Bencodable"] | dict[str, "Bencodable"]


class NgError(Exception):
    """rtpengine refused a command, answered garbage, or did not answer."""


# --- bencode ---------------------------------------------------------------------------------------------


def bencode(value: Bencodable) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((key.encode(), item) for key, item in value.items())
        return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> object:
    """Decode one bencoded value (strings stay bytes; dictionary keys become str)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the bencoded value")
    return value


def _decode(data: bytes, at: int) -> tuple[object, int]:
    if at >= len(data):
        raise ValueError("bencoded value is truncated")
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind == b"l":
        items: list[object] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at)
            items.append(item)
        return items, at + 1
    if kind == b"d":
        mapping: dict[str, object] = {}
        at += 1
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at)
            if not isinstance(key, bytes):
                raise ValueError("bencoded dictionary key is not a string")
            mapping[key.decode()], at = _decode(data, at)
        return mapping, at + 1
    if kind.isdigit():
        colon = data.index(b":", at)
        size = int(data[at:colon])
        start = colon + 1
        if start + size > len(data):
            raise ValueError("bencoded string is truncated")
        return data[start : start + size], start + size
    raise ValueError(f"unexpected byte {kind!r} at {at}")


# --- the client ------------------------------------------------------------------------------------------


class NgClient:
    """Blocking request/answer over one UDP socket (the bench sets calls up before the load starts)."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0, retries: int = 3) -> None:
        self._address = (host, port)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.settimeout(timeout)
        self._retries = retries
        self._cookies = itertools.count(1)
        # rtpengine caches answers by cookie (retransmissions): cookies must be unique per client.
        self._prefix = f"{os.getpid()}_{secrets.token_hex(4)}_"

    def close(self) -> None:
        self._socket.close()

    def request(self, command: str, **fields: Bencodable) -> dict[str, object]:
        cookie = f"{self._prefix}{next(self._cookies)}".encode()
        message = cookie + b" " + bencode({"command": command, **fields})
        for _ in range(self._retries):
            self._socket.sendto(message, self._address)
            deadline = time.monotonic() + (self._socket.gettimeout() or 2.0)
            while time.monotonic() < deadline:
                try:
                    answer = self._socket.recv(65535)
                except TimeoutError:
                    break
                got_cookie, _, body = answer.partition(b" ")
                if got_cookie != cookie:
                    continue  # a late answer to an earlier try
                reply = bdecode(body)
                if not isinstance(reply, dict):
                    raise NgError(f"{command}: answer is not a dictionary: {body[:80]!r}")
                result = reply.get("result")
                if result not in (b"ok", b"pong"):
                    reason = reply.get("error-reason", b"")
                    raise NgError(f"{command}: {result!r} {reason!r}")
                return reply
        raise NgError(f"{command}: no answer from rtpengine at {self._address} after {self._retries} tries")

    def ping(self) -> None:
        self.request("ping")

    def offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        return _sdp_of(self.request("offer", **{"call-id": call_id, "from-tag": from_tag, "sdp": sdp}))

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        fields: dict[str, Bencodable] = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag}
        return _sdp_of(self.request("answer", sdp=sdp, **fields))

    def delete(self, call_id: str, from_tag: str) -> None:
        self.request("delete", **{"call-id": call_id, "from-tag": from_tag})


def _sdp_of(reply: dict[str, object]) -> str:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise NgError("answer carries no SDP")
    return sdp.decode()


def pcmu_sdp(address: str, port: int, session: int) -> str:
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN IP4 {address}\r\n"
        "s=bench\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    )


_MEDIA_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)


def media_port(sdp: str) -> int:
    found = _MEDIA_PORT.search(sdp)
    if found is None:
        raise NgError(f"no m=audio line in rtpengine's SDP: {sdp[:200]!r}")
    return int(found.group(1))


def relay_calls(
    client: NgClient, calls: int, address: str, phone_ports: Sequence[int], tag: str
) -> list[tuple[int, int]]:
    """Set up ``calls`` calls; stream ``2c`` leaves phone ``2c % len(phone_ports)``, ``2c+1`` the next.

    Returns, per call, the rtpengine port where stream ``2c`` (caller → callee) must be sent and the one
    for ``2c+1`` (callee → caller): the ports of the SDPs given to the caller and to the callee.
    """
    count = len(phone_ports)
    ports = []
    for index in range(calls):
        call_id = f"{tag}-{index}"
        caller_port = phone_ports[(2 * index) % count]
        callee_port = phone_ports[(2 * index + 1) % count]
        to_callee = client.offer(call_id, "caller", pcmu_sdp(address, caller_port, index))
        to_caller = client.answer(call_id, "caller", "callee", pcmu_sdp(address, callee_port, index))
        ports.append((media_port(to_caller), media_port(to_callee)))
    return ports


def delete_calls(client: NgClient, calls: int, tag: str) -> None:
    for index in range(calls):
        client.delete(f"{tag}-{index}", "caller")


# --- the daemon ------------------------------------------------------------------------------------------


class Rtpengine:
    """``rtpengine`` in the foreground, userspace only, NG on ``127.0.0.1:ng_port``; ``stop()`` by PID."""

    def __init__(
        self,
        *,
        ng_port: int,
        port_min: int,
        port_max: int,
        cpu: str | None = None,
        address: str = "127.0.0.1",
        threads: int = 1,
    ) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise FileNotFoundError("rtpengine is not installed (Debian: apt-get install rtpengine-daemon)")
        self.ng_port = ng_port
        self._workdir = Path(tempfile.mkdtemp(prefix="uc-rtpengine-"))
        config = self._workdir / "rtpengine.conf"
        config.write_text("[rtpengine]\n")  # nothing from /etc/rtpengine/rtpengine.conf
        args = [
            binary,
            f"--config-file={config}",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            "--table=-1",
            f"--interface={address}",
            f"--listen-ng={address}:{ng_port}",
            f"--port-min={port_min}",
            f"--port-max={port_max}",
            f"--num-threads={threads}",
            "--no-redis-required",
            "--delete-delay=0",
            "--timeout=60",
        ]
        taskset = shutil.which("taskset")
        if cpu is not None and taskset:
            args = [taskset, "-c", cpu, *args]
        self._log = (self._workdir / "rtpengine.log").open("wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = NgClient(address, ng_port, timeout=0.5, retries=1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NgError(f"rtpengine exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self.client.ping()
                return
            except NgError:
                time.sleep(0.1)
        raise NgError(f"rtpengine did not answer ping within {limit} s: {self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the daemon (all its threads), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def cpu_split(self) -> tuple[float, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    def log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = (self._workdir / "rtpengine.log").read_text(errors="replace").splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
