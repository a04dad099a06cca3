"""The audio-quality bench's pure parts: RTP packetizing, phone playout through the jitter buffer and
PLC from recorded arrival times, delay alignment before PESQ, and the suite's registration. No sockets."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest

from bench.framework import discover_suites
from bench.peers.audio_rtp import RtpStream, count_reordered, packetize, play_out
from bench.peers.audio_speech import align, codec_round_trip, frames, set_speech_level
from bench.suites.audio_quality import NETWORK_SCENARIOS, table_lines
from media.codecs import create_encoder
from media.codecs.base import Pcm

PCMU_STREAM = RtpStream(0, 8000)


def tone(seconds: float, rate: int = 8000, frequency: float = 440.0) -> Pcm:
    t = np.arange(int(seconds * rate)) / rate
    return (6000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def noise(seconds: float, rate: int = 8000, seed: int = 4) -> Pcm:
    """Not periodic, so the delay found by cross-correlation is unambiguous (a tone's is not)."""
    return np.random.default_rng(seed).normal(0, 3000, int(seconds * rate)).astype(np.int16)


def pcmu_datagrams(signal: Pcm) -> list[bytes]:
    encoder = create_encoder("PCMU")
    return packetize([encoder.encode(f) for f in frames(signal, 8000)], PCMU_STREAM, seed=9)


def header(datagram: bytes) -> tuple[int, int, int, int, int]:
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", datagram)
    return first, second, sequence, timestamp, ssrc


def test_packetize_numbers_packets_consecutively_with_a_marker_on_the_first() -> None:
    datagrams = packetize([b"\xff" * 160] * 5, PCMU_STREAM, seed=1)
    headers = [header(d) for d in datagrams]
    assert all(h[0] == 0x80 for h in headers)
    assert [h[1] for h in headers] == [0x80, 0, 0, 0, 0]
    assert len({h[4] for h in headers}) == 1
    for previous, current in itertools.pairwise(headers):
        assert current[2] == (previous[2] + 1) & 0xFFFF
        assert current[3] == (previous[3] + 160) & 0xFFFFFFFF
    assert packetize([b"\xff"] * 3, PCMU_STREAM, seed=1) == packetize([b"\xff"] * 3, PCMU_STREAM, seed=1)


def test_opus_stream_advances_960_per_frame() -> None:
    datagrams = packetize([b"x", b"y"], RtpStream(111, 48000), seed=2)
    assert header(datagrams[1])[3] - header(datagrams[0])[3] in (960, 960 - (1 << 32))
    assert header(datagrams[0])[1] == 0x80 | 111


def test_count_reordered_counts_packets_behind_the_highest_seen() -> None:
    datagrams = pcmu_datagrams(tone(0.2))
    assert count_reordered(datagrams) == 0
    swapped = [datagrams[0], datagrams[2], datagrams[1], *datagrams[3:]]
    assert count_reordered(swapped) == 1


def test_in_order_arrivals_play_out_bit_exact_after_the_jitter_buffer_delay() -> None:
    signal = noise(1.0)
    datagrams = pcmu_datagrams(signal)
    arrivals = [(100.0 + 0.02 * i, d) for i, d in enumerate(datagrams)]
    played, stats = play_out(arrivals, "PCMU", 0)
    decoded = codec_round_trip(signal, 8000, "PCMU")
    assert stats.played == len(datagrams)
    assert stats.lost == 0
    assert stats.late == 0
    aligned, delay = align(decoded, played)
    assert delay == 0  # the playout delay is when audio starts, not silence inside it
    assert np.array_equal(aligned, decoded)


def test_a_missing_packet_is_concealed_in_its_slot_and_the_timing_kept() -> None:
    signal = noise(1.0)
    datagrams = pcmu_datagrams(signal)
    arrivals = [(100.0 + 0.02 * i, d) for i, d in enumerate(datagrams) if i != 20]
    played, stats = play_out(arrivals, "PCMU", 0)
    assert stats.lost == 1
    assert stats.played == len(datagrams) - 1
    decoded = codec_round_trip(signal, 8000, "PCMU")
    aligned, delay = align(decoded, played)
    assert delay == 0
    # Everything but the lost frame (samples 3200-3359) and the cross-fade into the next one (8 ms after
    # a 20 ms loss) is the decoded signal.
    assert np.array_equal(aligned[:3200], decoded[:3200])
    assert np.array_equal(aligned[3360 + 64 :], decoded[3360 + 64 :])
    # PLC repeats the last pitch period: the concealed frame is not silence.
    assert np.abs(aligned[3200:3360].astype(np.int32)).max() > 1000


def test_jittered_and_reordered_arrivals_within_the_buffer_delay_lose_nothing() -> None:
    signal = noise(1.0)
    datagrams = pcmu_datagrams(signal)
    # Every other packet 25 ms late: it arrives after its successor (reordering), within the 60 ms delay.
    arrivals = [(100.0 + 0.02 * i + (0.025 if i % 2 else 0.0), d) for i, d in enumerate(datagrams)]
    played, stats = play_out(arrivals, "PCMU", 0)
    assert stats.reordered > 0
    assert stats.concealed <= 5  # only the tail after the last packet
    assert stats.lost == 0
    decoded = codec_round_trip(signal, 8000, "PCMU")
    aligned, _ = align(decoded, played)
    assert np.array_equal(aligned, decoded)


def test_play_out_ignores_other_payload_types_and_garbage() -> None:
    datagrams = pcmu_datagrams(tone(0.2))
    noise = [(100.0, b"\x00\x01"), (100.001, struct.pack("!BBHII", 0x80, 101, 1, 1, 1) + b"\x00" * 4)]
    _, stats = play_out(noise + [(100.0 + 0.02 * i, d) for i, d in enumerate(datagrams)], "PCMU", 0)
    assert stats.foreign == 2
    assert stats.played == len(datagrams)


def test_nothing_received_plays_nothing() -> None:
    played, stats = play_out([], "PCMU", 0)
    assert played.shape[0] == 0
    assert stats.packets == 0


def test_align_finds_the_delay_and_pads_to_the_reference_length() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 3000, 4000).astype(np.int16)
    delayed = np.concatenate((np.zeros(777, np.int16), reference[:3000]))
    aligned, delay = align(reference, delayed)
    assert delay == 777
    assert aligned.shape == reference.shape
    assert np.array_equal(aligned[:3000], reference[:3000])
    assert not aligned[3000:].any()


def test_speech_level_puts_the_active_part_at_minus_26_dbov() -> None:
    loud = np.concatenate((np.zeros(8000, np.int16), tone(1.0) * 4))
    levelled = set_speech_level(loud, 8000)
    active = levelled[8000:].astype(np.float64)
    rms_dbov = 20 * np.log10(np.sqrt(np.mean(active * active)) / 32768)
    assert rms_dbov == pytest.approx(-26.0, abs=0.1)
    assert not levelled[:8000].any()


def test_every_scenario_reference_is_a_reported_figure() -> None:
    names = {s.name for s in NETWORK_SCENARIOS}
    offline = {"codec_pcmu", "codec_opus", "codec_opus_pcmu_tandem", "impaired_direct_opus_then_pcmu"}
    assert all(s.reference in names | offline for s in NETWORK_SCENARIOS)
    relay = next(s for s in NETWORK_SCENARIOS if s.name == "relay_pcmu")
    assert relay.reference == "direct_pcmu"
    assert relay.via_plane and not relay.impaired


def test_table_lines_show_score_reference_and_delta() -> None:
    lines = table_lines(
        {"direct_pcmu": 4.0, "relay_pcmu": 3.98, "codec_opus_wb": 4.1}, {"relay_pcmu": "direct_pcmu"}
    )
    relay = next(line for line in lines if line.startswith("relay_pcmu"))
    assert "3.980" in relay and "direct_pcmu" in relay and "-0.020" in relay
    assert next(line for line in lines if line.startswith("codec_opus_wb")).rstrip().endswith("-")


def test_suite_is_discovered_with_its_parameters() -> None:
    suite = discover_suites().suites["audio-quality"]
    assert {"repeats", "sentences", "seed", "loss_percent", "jitter_ms"} <= set(suite.params)
