"""RTP load generator for ``bench/suites/rtp_relay.py``: N calls of G.711 (20 ms) both ways through a relay.

For call ``c`` it sends stream ``2c`` to the relay's endpoint A and stream ``2c+1`` to endpoint B, each
50 packets/s with send times spread evenly over the 20 ms period (as independent phones would be), and
receives what the relay forwards. Every payload carries a magic word, the call, the direction, a phase
(warm-up or measured), a sequence number and the send time (``time.monotonic_ns()``, a clock shared by
all processes of the machine), so the receiver checks integrity, counts loss per direction and measures
one-way latency without any state shared with the relay. Phones share ``--sockets`` UDP sockets (the
relay latches each endpoint onto its sender; which socket a stream uses does not matter to it). For a
relay that sends where the SDP says (rtpengine), ``--phone-port-base`` fixes the sockets' ports: stream
``s`` leaves port ``base + s % sockets``.

Prints ``start`` when the measured phase begins, ``stop`` when it ends, then one JSON line with the
results. Bounded: ``--warmup + --duration + --drain`` seconds.

Usage: ``python -m bench.peers.rtp_load --targets ports.json --duration 10``, where ``ports.json`` is
``{"address": "127.0.0.1", "calls": [[port_a, port_b], ...]}``. ``--direct`` sends each call's two
streams from one phone socket to the other without any relay (the loopback baseline).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import time
from typing import cast

MAGIC = 0x75634564  # "ucEd"
_PAYLOAD = struct.Struct("!IIBBIQ")  # magic, call, direction, phase, sequence, send time (ns)
_RTP = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")
PAYLOAD_SIZE = 160  # 20 ms of G.711
PACKET_SIZE = 12 + PAYLOAD_SIZE
PHASE_WARMUP = 0
PHASE_MEASURED = 1


def phone_count(calls: int, sockets: int, direct: bool) -> int:
    """How many phone sockets carry the streams: stream ``s`` leaves socket ``s % count``."""
    streams = 2 * calls
    return streams if direct else max(2, min(sockets, streams))


def run(
    address: str,
    calls: list[tuple[int, int]],
    *,
    sockets: int,
    warmup: float,
    duration: float,
    drain: float,
    ptime: float,
    direct: bool,
    phone_port_base: int = 0,
) -> dict[str, object]:
    streams = 2 * len(calls)
    count = phone_count(len(calls), sockets, direct)
    phones = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((address, phone_port_base + index if phone_port_base else 0))
        sock.setblocking(False)
        phones.append(sock)
    # stream -> (socket, destination, packet buffer)
    plan = []
    for index, (port_a, port_b) in enumerate(calls):
        for direction, port in ((0, port_a), (1, port_b)):
            stream = 2 * index + direction
            if direct:
                sock = phones[stream]
                destination = phones[stream ^ 1].getsockname()
            else:
                sock = phones[stream % count]
                destination = (address, port)
            packet = bytearray(PACKET_SIZE)
            _RTP.pack_into(packet, 0, 0x80, 0, 0, 0, 0x10000 + stream)
            plan.append((sock, destination, packet))
    selector = selectors.DefaultSelector()
    for sock in phones:
        selector.register(sock, selectors.EVENT_READ)
    received = [0] * streams
    sent_measured = [0] * streams
    corrupt = 0
    rtcp = 0
    latencies: list[int] = []
    buffer = bytearray(2048)
    view = memoryview(buffer)
    period_ns = int(ptime * 1e9)
    slot_ns = period_ns / streams
    begin = time.monotonic_ns() + 50_000_000
    measure_from = begin + int(warmup * 1e9)
    measure_until = measure_from + int(duration * 1e9)
    end = measure_until + int(drain * 1e9)
    started = stopped = False
    k = 0
    next_due = begin
    send_errors = 0
    now = time.monotonic_ns()
    while now < end:
        # send everything due
        while next_due <= now and next_due < measure_until:
            stream = k % streams
            frame = k // streams
            sock, destination, packet = plan[stream]
            phase = PHASE_MEASURED if next_due >= measure_from else PHASE_WARMUP
            _SEQ_TS.pack_into(packet, 2, frame & 0xFFFF, (frame * 160) & 0xFFFFFFFF)
            _PAYLOAD.pack_into(packet, 12, MAGIC, stream >> 1, stream & 1, phase, frame, time.monotonic_ns())
            try:
                sock.sendto(packet, destination)
                if phase:
                    sent_measured[stream] += 1
            except OSError:
                send_errors += 1
            k += 1
            next_due = (
                begin + frame * period_ns + int((stream + 1) * slot_ns)
                if stream + 1 < streams
                else begin + (frame + 1) * period_ns
            )
        if not started and now >= measure_from:
            started = True
            print("start", flush=True)
        if not stopped and now >= measure_until:
            stopped = True
            print("stop", flush=True)
        timeout = (
            max(0.0, min(next_due if next_due < measure_until else end, end) - time.monotonic_ns()) / 1e9
        )
        for key, _ in selector.select(min(timeout, 0.005)):
            sock = cast(socket.socket, key.fileobj)
            while True:
                try:
                    size = sock.recv_into(buffer)
                except BlockingIOError:
                    break
                arrival = time.monotonic_ns()
                if size >= 2 and 200 <= buffer[1] <= 204:
                    rtcp += 1  # the relay's RTCP reports (sent to RTP port + 1, another phone here)
                    continue
                if size != PACKET_SIZE:
                    corrupt += 1
                    continue
                magic, call, direction, phase, _, sent_at = _PAYLOAD.unpack_from(view, 12)
                if magic != MAGIC or call >= len(calls):
                    corrupt += 1
                    continue
                if phase:
                    # what endpoint A receives leaves through B: stream 2c arrives at phone 2c+1
                    received[2 * call + direction] += 1
                    latencies.append(arrival - sent_at)
        now = time.monotonic_ns()
    for sock in phones:
        sock.close()
    total_sent = sum(sent_measured)
    total_received = sum(received)
    latencies.sort()

    def quantile(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6

    return {
        "calls": len(calls),
        "sent": total_sent,
        "received": total_received,
        "loss_percent": 100.0 * (total_sent - total_received) / total_sent if total_sent else 100.0,
        "corrupt": corrupt,
        "rtcp_received": rtcp,
        "send_errors": send_errors,
        "streams_silent": sum(1 for s in range(streams) if sent_measured[s] and not received[s]),
        "latency_p50_ms": quantile(0.50),
        "latency_p99_ms": quantile(0.99),
        "latency_max_ms": quantile(1.0),
        "generator_cpu_s": time.process_time(),
        "packets_per_second": total_sent / duration if duration else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", required=True, help="JSON file: {address, calls: [[port_a, port_b]]}")
    parser.add_argument("--sockets", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=0.5)
    parser.add_argument("--ptime", type=float, default=0.02)
    parser.add_argument("--direct", action="store_true")
    parser.add_argument(
        "--phone-port-base",
        type=int,
        default=0,
        help="bind phone socket i to this port + i (a relay told the phones' addresses by SDP); 0: any",
    )
    args = parser.parse_args()
    with open(args.targets, encoding="utf-8") as handle:
        targets = json.load(handle)
    result = run(
        targets["address"],
        [tuple(pair) for pair in targets["calls"]],
        sockets=args.sockets,
        warmup=args.warmup,
        duration=min(args.duration, 300.0),
        drain=args.drain,
        ptime=args.ptime,
        direct=args.direct,
        phone_port_base=args.phone_port_base,
    )
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
