"""media-core: the pure per-packet work of the media plane, without sockets.

What one RTP packet costs on its way through the relay (header parse, latching check, sequence and
timestamp rewrite), a full RTP parse and serialise, receive statistics, RTCP compound packets and the
jitter buffer. A relay of 500 G.711 calls both ways handles 50,000 packets/s, so that is the target for
the relay hot path on one core.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from pathlib import Path

from bench.framework import Suite, SuiteContext, SuiteResult
from media.jitterbuffer import JitterBuffer
from media.latching import Latch
from media.rtcp import parse_rtcp, serialize_rtcp
from media.rtp import RtpPacket, SequenceRewriter, parse_header
from media.stats import ReceiveStatistics

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "rtp"
RELAY_TARGET = 50_000.0  # packets/s: 500 calls x 2 directions x 50 packets/s


def _rate(work: Callable[[], object], number: int, repeats: int) -> float:
    best = min(timeit.repeat(work, number=number, repeat=repeats))
    return number / best


def run(ctx: SuiteContext) -> SuiteResult:
    number = ctx.param("packets", 20_000 if ctx.quick else 200_000)
    repeats = ctx.param("repeats", 2 if ctx.quick else 5)
    pcmu = (DATA / "pcmu_marker.bin").read_bytes()
    opus = (DATA / "opus_csrc_ext_padding.bin").read_bytes()
    rtcp = (DATA / "rtcp_rr_sdes_bye.bin").read_bytes()

    latch = Latch([0])
    source = ("192.0.2.1", 4000)
    rewriter = SequenceRewriter(5, 8000)

    def relay_path() -> object:
        header = parse_header(pcmu)
        if latch.accept(source, header, 1.0):
            return rewriter.rewrite_bytes(pcmu, 1.0)
        return None

    statistics = ReceiveStatistics(1, 8000, probation=0)
    counter = [0]

    def update_stats() -> None:
        n = counter[0] = counter[0] + 1
        statistics.update(n & 0xFFFF, (n * 160) & 0xFFFFFFFF, n * 0.02)

    workloads: dict[str, tuple[Callable[[], object], int]] = {
        "relay hot path": (relay_path, number),
        "rtp parse+serialise pcmu": (lambda: bytes(RtpPacket.parse(pcmu)), number),
        "rtp parse+serialise opus ext": (lambda: bytes(RtpPacket.parse(opus)), number),
        "receive statistics": (update_stats, number),
        "rtcp compound parse+serialise": (lambda: serialize_rtcp(parse_rtcp(rtcp)), max(1000, number // 4)),
    }
    task = ctx.task("workloads", total=len(workloads) + 1)
    figures: dict[str, float] = {}
    for name, (work, count) in workloads.items():
        figures[name] = round(_rate(work, count, repeats))
        ctx.log(f"{name}: {figures[name]:,.0f} packets/s")
        task.advance()

    packets = [RtpPacket(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 1, b"") for i in range(number // 2)]

    def jitter_buffer_run() -> None:
        buffer = JitterBuffer(8000)
        for i, packet in enumerate(packets):
            buffer.put(packet, i * 0.02)
            buffer.get(i * 0.02)

    best = min(timeit.repeat(jitter_buffer_run, number=1, repeat=repeats))
    figures["jitter buffer put+get"] = round(len(packets) / best)
    task.advance()
    return SuiteResult(
        figures=figures,
        units=dict.fromkeys(figures, "packets/s"),
        targets={"relay hot path": RELAY_TARGET},
        notes=[
            "pure Python per-packet work, no sockets: best of repeats, one core",
            "relay hot path = parse the 12-byte header, latching check, SSRC/seq/timestamp rewrite",
        ],
    )


SUITE = Suite(
    name="media-core",
    description="per-packet cost of the pure media code: relay path, RTP/RTCP, statistics, jitter buffer",
    run=run,
    params={"packets": "packets per workload (default 200000, quick 20000)", "repeats": "timing repeats"},
)
