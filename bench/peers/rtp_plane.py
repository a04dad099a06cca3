"""Host a MediaPlane relaying N G.711 calls, for ``bench/suites/rtp_relay.py`` (run it pinned to one core).

Prints one JSON line ``{"calls": [[rtp_port_a, rtp_port_b], ...], "address": ...}`` once every call is
connected, then answers commands on stdin, one per line:

* ``cpu``  → ``{"cpu": <process CPU seconds>, "wall": <monotonic seconds>, "stats": {...}}``
* ``quit`` → destroys every endpoint, prints ``{"quality": {...}}`` (mean loss/jitter/MOS), exits.

Usage: ``python -m bench.peers.rtp_plane --calls 500 --port-min 36000 --port-max 45999``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time

from edge.server import tune_gc
from media.control import PayloadFormat, StreamParams
from media.plane import MediaPlane

PCMU = PayloadFormat(0, "PCMU", 8000)
TELEPHONE_EVENT = PayloadFormat(101, "telephone-event", 8000)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def _reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(calls: int, port_min: int, port_max: int, address: str, socket_pool: int) -> None:
    _raise_fd_limit(4 * calls + 2 * socket_pool + 256)
    plane = MediaPlane(
        rtp_port_min=port_min,
        rtp_port_max=port_max,
        bind_address=address,
        media_timeout=0,
        codec_thread=False,
        rtp_socket_pool=socket_pool,
    )
    await plane.start()
    params = StreamParams(None, None, PCMU, (PCMU,), TELEPHONE_EVENT)
    pairs = []
    for index in range(calls):
        a = await plane.create_endpoint(f"bench-{index}", "a")
        b = await plane.create_endpoint(f"bench-{index}", "b")
        await plane.configure(a.endpoint_id, params)
        await plane.configure(b.endpoint_id, params)
        await plane.connect(a.endpoint_id, b.endpoint_id)
        pairs.append((a, b))
    tune_gc()  # the node's collector settings
    _reply({"calls": [[a.rtp_port, b.rtp_port] for a, b in pairs], "address": address})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "cpu":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            _reply(
                {
                    "cpu": time.process_time(),
                    "user": usage.ru_utime,
                    "system": usage.ru_stime,
                    "wall": time.monotonic(),
                    "stats": plane.stats(),
                }
            )
        elif command in ("quit", ""):
            break
    snapshots = []
    for a, b in pairs:
        snapshots.append(await plane.destroy(a.endpoint_id))
        snapshots.append(await plane.destroy(b.endpoint_id))
    received = [s for s in snapshots if s.packets_received]
    quality = {
        "legs": len(snapshots),
        "legs_receiving": len(received),
        "loss_percent_mean": statistics.fmean(s.loss_percent for s in received) if received else 0.0,
        "jitter_ms_mean": statistics.fmean(s.jitter_ms for s in received) if received else 0.0,
        "mos_mean": statistics.fmean(s.mos or 0.0 for s in received) if received else 0.0,
    }
    await plane.close()
    _reply({"quality": quality, "stats": plane.stats()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--port-min", type=int, default=36000)
    parser.add_argument("--port-max", type=int, default=45999)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--socket-pool", type=int, default=256, help="pre-opened RTP/RTCP pairs")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner = asyncio.Runner()
    if args.loop == "uvloop":
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(serve(args.calls, args.port_min, args.port_max, args.address, args.socket_pool))


if __name__ == "__main__":
    main()
