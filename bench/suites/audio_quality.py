"""audio-quality: PESQ (ITU-T P.862, narrowband MOS-LQO) of speech carried as real RTP over loopback.

Reference speech: Harvard sentences by espeak-ng, converted by sox to 8 kHz (and 16 kHz for the
wideband codec figure), active speech at -26 dBov (``bench/peers/audio_speech.py``). A sender paces
pre-encoded 20 ms frames as RTP; the receiver plays out what arrives through the media plane's jitter
buffer and the codec's decoder and PLC, as a phone would (``bench/peers/audio_rtp.py``); the result is
scored against the reference.

Scenarios (each beside its reference figure):

* ``codec_*`` — the codec's own round trip, no network: PCMU; Opus (8 kHz speech resampled to 48 kHz and
  back, plus a wideband 16 kHz figure); Opus then PCMU in tandem (what transcoding does to audio);
* ``direct_pcmu`` (sender → receiver, no server) vs ``relay_pcmu`` (sender → MediaPlane A → relay → B →
  receiver, PCMU both legs): target ``|relay - direct| <= 0.05``;
* ``transcode_opus_pcmu`` — Opus sender → A (Opus) → transcoding → B (PCMU) → PCMU receiver, beside the
  tandem codec figure;
* ``impaired_*`` — ``bench/peers/impairment.py`` (3 % loss, 0-30 ms uniform jitter, seeded) in front of
  the server for the PCMU relay and the Opus → PCMU transcoding, beside the same impairment (same seed,
  so the same packets are dropped and delayed) applied directly without the server: PCMU phone to PCMU
  phone, and Opus phone to Opus phone (whose output is also run through PCMU offline, the fair
  comparison for the transcoded path, whose PCMU leg adds its own quantisation).

The media plane (``media.plane.MediaPlane``, public API only) runs in this process's event loop,
codec work in its worker thread as in production. Repeats (full runs) use one seed each and the figures
are means over repeats.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from typing import Any

from bench.framework import Suite, SuiteContext, SuiteResult
from bench.peers import audio_speech as speech
from bench.peers.audio_rtp import RtpStream, open_socket, packetize, play_out, send_paced
from bench.peers.impairment import Impairment, ImpairmentProxy
from media.codecs import create_encoder
from media.codecs.base import Pcm
from media.codecs.opus import DEFAULT_EXPECTED_LOSS_PERCENT
from media.control import LocalMedia, PayloadFormat, StreamParams
from media.plane import MediaPlane

PCMU = PayloadFormat(0, "PCMU", 8000)
OPUS = PayloadFormat(111, "opus", 48000, 2)
RELAY_TOLERANCE = 0.05
DRAIN_SECONDS = 0.5  # after the last packet: proxy jitter + the plane's jitter buffer (transcoding)


@dataclass(frozen=True)
class NetworkScenario:
    name: str
    send: PayloadFormat  # what the sender phone sends
    receive: PayloadFormat  # what the receiver phone decodes
    via_plane: bool
    impaired: bool
    reference: str  # figure (without the pesq_ prefix) it is reported beside


NETWORK_SCENARIOS = (
    NetworkScenario("direct_pcmu", PCMU, PCMU, False, False, "codec_pcmu"),
    NetworkScenario("relay_pcmu", PCMU, PCMU, True, False, "direct_pcmu"),
    NetworkScenario("transcode_opus_pcmu", OPUS, PCMU, True, False, "codec_opus_pcmu_tandem"),
    NetworkScenario("impaired_direct_pcmu", PCMU, PCMU, False, True, "codec_pcmu"),
    NetworkScenario("impaired_relay_pcmu", PCMU, PCMU, True, True, "impaired_direct_pcmu"),
    NetworkScenario("impaired_direct_opus", OPUS, OPUS, False, True, "codec_opus"),
    NetworkScenario("impaired_transcode_opus_pcmu", OPUS, PCMU, True, True, "impaired_direct_opus_then_pcmu"),
)
OFFLINE_REFERENCES = {
    "codec_pcmu": "",
    "codec_opus": "",
    "codec_opus_wb": "",
    "codec_opus_pcmu_tandem": "codec_opus",
    "impaired_direct_opus_then_pcmu": "impaired_direct_opus",
}


def _stream(fmt: PayloadFormat) -> RtpStream:
    return RtpStream(fmt.payload_type, fmt.clock_rate)


def encode_reference(reference8k: Pcm, fmt: PayloadFormat) -> list[bytes]:
    """The payloads a phone sending ``fmt`` would produce from the 8 kHz reference (Opus: upsampled to
    48 kHz by the media plane's resampler first, as a narrowband source feeding a wideband codec)."""
    encoder = create_encoder(fmt.encoding)
    signal = speech.resample_stream(reference8k, 8000, encoder.sample_rate)
    return [encoder.encode(f) for f in speech.frames(signal, encoder.sample_rate)]


def _params(address: tuple[str, int], fmt: PayloadFormat) -> StreamParams:
    # rtcp-mux: the plane's RTCP goes to the phone's RTP socket (ignored there), never to port + 1,
    # which on loopback could be somebody else's socket.
    return StreamParams(address[0], address[1], fmt, (fmt,), rtcp_mux=True)


async def run_network_scenario(
    plane: MediaPlane,
    scenario: NetworkScenario,
    datagrams: list[bytes],
    impairment: Impairment,
    seed: int,
    call_id: str,
) -> tuple[Pcm, dict[str, Any]]:
    """One call: returns the receiver's played-out audio at 8 kHz and what happened on the way."""
    receiver = await open_socket()
    sender = await open_socket()
    proxy: ImpairmentProxy | None = None
    legs: list[LocalMedia] = []
    info: dict[str, Any] = {}
    try:
        if scenario.via_plane:
            a = await plane.create_endpoint(call_id, "a")
            b = await plane.create_endpoint(call_id, "b")
            legs = [a, b]
            entry = (a.address, a.rtp_port)
            await plane.configure(b.endpoint_id, _params(receiver.address, scenario.receive))
            if scenario.impaired:
                proxy = await ImpairmentProxy.start(entry, impairment, seed)
                source, target = proxy.address, proxy.address
            else:
                source, target = sender.address, entry
            await plane.configure(a.endpoint_id, _params(source, scenario.send))
            await plane.connect(a.endpoint_id, b.endpoint_id)
            info["mode"] = plane.connection_mode(a.endpoint_id)
        elif scenario.impaired:
            proxy = await ImpairmentProxy.start(receiver.address, impairment, seed)
            target = proxy.address
        else:
            target = receiver.address
        info["sender_worst_lateness_ms"] = 1000 * await send_paced(sender, datagrams, target)
        await asyncio.sleep(DRAIN_SECONDS)
        for leg, name in zip(legs, ("a", "b"), strict=False):
            snapshot = await plane.destroy(leg.endpoint_id)
            info[f"leg_{name}"] = {
                "received": snapshot.packets_received,
                "sent": snapshot.packets_sent,
                "loss_percent": round(snapshot.loss_percent, 2),
                "jitter_ms": round(snapshot.jitter_ms, 2),
                "emodel_mos": snapshot.mos,
            }
        legs = []
        if proxy is not None:
            info["proxy"] = {
                "received": proxy.received,
                "dropped": proxy.dropped,
                "forwarded": proxy.forwarded,
            }
    finally:
        for leg in legs:
            await plane.destroy(leg.endpoint_id)
        if proxy is not None:
            proxy.close()
        sender.close()
        receiver.close()
    pcm, stats = play_out(receiver.arrivals, scenario.receive.encoding, scenario.receive.payload_type)
    info["playout"] = {
        "packets": stats.packets,
        "played": stats.played,
        "concealed": stats.concealed,
        "concealed_with_fec": stats.concealed_with_fec,
        "catch_up_ticks": stats.catch_up_ticks,
        "late": stats.late,
        "lost": stats.lost,
        "reordered": stats.reordered,
        "target_delay_ms_max": round(max(stats.target_delay_ms, default=0.0), 1),
    }
    if scenario.receive.clock_rate != 8000:
        pcm = speech.resample_stream(pcm, 48000, 8000)
    return pcm, info


def _offline_figures(reference8k: Pcm, reference16k: Pcm) -> dict[str, float]:
    return {
        "codec_pcmu": speech.pesq_score(
            reference8k, speech.codec_round_trip(reference8k, 8000, "PCMU"), 8000
        ),
        "codec_opus": speech.pesq_score(
            reference8k, speech.codec_round_trip(reference8k, 8000, "opus"), 8000
        ),
        "codec_opus_wb": speech.pesq_score(
            reference16k, speech.codec_round_trip(reference16k, 16000, "opus"), 16000
        ),
        "codec_opus_pcmu_tandem": speech.pesq_score(reference8k, speech.tandem_opus_pcmu(reference8k), 8000),
    }


def table_lines(scores: dict[str, float], references: dict[str, str]) -> list[str]:
    """The scenario / PESQ / reference / delta table as text lines."""
    lines = [f"{'scenario':34} {'PESQ':>6}  {'reference figure':34} {'ref':>6} {'delta':>7}"]
    for name, score in scores.items():
        ref_name = references.get(name, "")
        if ref_name and ref_name in scores:
            ref = scores[ref_name]
            lines.append(f"{name:34} {score:6.3f}  {ref_name:34} {ref:6.3f} {score - ref:+7.3f}")
        else:
            lines.append(f"{name:34} {score:6.3f}  {'-':34} {'':>6} {'':>7}")
    return lines


async def run(ctx: SuiteContext) -> SuiteResult:
    repeats = ctx.param("repeats", 1 if ctx.quick else 3)
    sentences = ctx.param("sentences", speech.QUICK_SENTENCES if ctx.quick else len(speech.SENTENCES))
    seed = ctx.param("seed", 20261201)
    loss_percent = ctx.param("loss_percent", 3.0)
    jitter_ms = ctx.param("jitter_ms", 30.0)
    port_min = ctx.param("port_min", 46000)
    port_max = ctx.param("port_max", 46999)
    keep_audio = ctx.param("keep_audio", False)
    if repeats < 1 or not 1 <= sentences <= len(speech.SENTENCES):
        raise ValueError(f"need repeats >= 1 and 1 <= sentences <= {len(speech.SENTENCES)}")
    impairment = Impairment(loss=loss_percent / 100.0, max_jitter=jitter_ms / 1000.0)
    task = ctx.task("scenarios", total=1 + repeats * len(NETWORK_SCENARIOS))

    reference8k = speech.reference_speech(8000, ctx.workdir, sentences=sentences)
    reference16k = speech.reference_speech(16000, ctx.workdir, sentences=sentences)
    seconds = reference8k.shape[0] / 8000
    ctx.log(f"reference: {sentences} sentences, {seconds:.1f} s at 8 kHz (espeak-ng + sox, -26 dBov)")
    audio_dir = ctx.results_dir / "audio-quality-wav"
    if keep_audio:
        audio_dir.mkdir(parents=True, exist_ok=True)
        speech.write_wav(audio_dir / "reference-8k.wav", reference8k, 8000)

    scores: dict[str, float] = _offline_figures(reference8k, reference16k)
    task.advance()
    datagrams = {
        fmt.encoding: packetize(encode_reference(reference8k, fmt), _stream(fmt), seed)
        for fmt in (PCMU, OPUS)
    }
    runs: dict[str, list[float]] = {s.name: [] for s in NETWORK_SCENARIOS}
    runs["impaired_direct_opus_then_pcmu"] = []
    receiver_lost: dict[str, list[int]] = {s.name: [] for s in NETWORK_SCENARIOS}
    emodel: dict[str, list[float]] = {s.name: [] for s in NETWORK_SCENARIOS if s.via_plane}
    actual_loss: list[float] = []
    notes: list[str] = []
    plane = MediaPlane(rtp_port_min=port_min, rtp_port_max=port_max, media_timeout=0)
    try:
        for repeat in range(repeats):
            run_seed = seed + repeat
            for index, scenario in enumerate(NETWORK_SCENARIOS):
                pcm, info = await run_network_scenario(
                    plane,
                    scenario,
                    datagrams[scenario.send.encoding],
                    impairment,
                    run_seed,
                    f"aq-{repeat}-{index}",
                )
                if scenario.via_plane:
                    expected = "relay" if scenario.send == scenario.receive else "transcode"
                    if info.get("mode") != expected:
                        raise RuntimeError(
                            f"{scenario.name}: the plane chose {info.get('mode')}, not {expected}"
                        )
                score = speech.pesq_score(reference8k, pcm, 8000)
                runs[scenario.name].append(score)
                receiver_lost[scenario.name].append(info["playout"]["lost"] + info["playout"]["late"])
                mos = info.get("leg_a", {}).get("emodel_mos")
                if mos is not None:
                    emodel[scenario.name].append(mos)
                if "proxy" in info and info["proxy"]["received"]:
                    actual_loss.append(100.0 * info["proxy"]["dropped"] / info["proxy"]["received"])
                ctx.log(f"[{repeat + 1}/{repeats}] {scenario.name}: PESQ {score:.3f}  {info}")
                if keep_audio:
                    speech.write_wav(audio_dir / f"{scenario.name}-{repeat + 1}.wav", pcm, 8000)
                if scenario.name == "impaired_direct_opus":
                    then_pcmu = speech.codec_round_trip(pcm, 8000, "PCMU")
                    runs["impaired_direct_opus_then_pcmu"].append(
                        speech.pesq_score(reference8k, then_pcmu, 8000)
                    )
                task.advance()
    finally:
        await plane.close()

    for name, values in runs.items():
        scores[name] = statistics.fmean(values)
        if len(values) > 1:
            notes.append(
                f"{name}: {len(values)} repeats, PESQ {min(values):.3f}..{max(values):.3f} "
                f"(stdev {statistics.stdev(values):.3f})"
            )
    references = {s.name: s.reference for s in NETWORK_SCENARIOS}
    references.update({k: v for k, v in OFFLINE_REFERENCES.items() if v})
    lines = table_lines(scores, references)
    for line in lines:
        ctx.log(line)

    result = SuiteResult(x_label="scenario")
    for name, score in scores.items():
        result.figures[f"pesq_{name}"] = score
        result.units[f"pesq_{name}"] = "MOS-LQO"
    for name, ref_name in references.items():
        if name in scores and ref_name in scores:
            result.figures[f"delta_{name}"] = scores[name] - scores[ref_name]
            result.units[f"delta_{name}"] = "MOS delta"
    result.figures["abs_relay_minus_direct"] = abs(scores["relay_pcmu"] - scores["direct_pcmu"])
    result.units["abs_relay_minus_direct"] = "MOS delta"
    result.targets["abs_relay_minus_direct"] = RELAY_TOLERANCE
    result.lower_is_better.add("abs_relay_minus_direct")
    for name, counts in receiver_lost.items():
        result.figures[f"receiver_lost_packets_{name}"] = float(statistics.fmean(counts))
        result.units[f"receiver_lost_packets_{name}"] = "packets"
    for name, values in emodel.items():
        if values:
            result.figures[f"emodel_mos_leg_a_{name}"] = statistics.fmean(values)
            result.units[f"emodel_mos_leg_a_{name}"] = "MOS (E-model)"
    if actual_loss:
        result.figures["impairment_actual_loss_percent"] = statistics.fmean(actual_loss)
        result.units["impairment_actual_loss_percent"] = "%"
    result.notes.extend(notes)
    result.notes.append(
        "PESQ: ITU-T P.862 via the `pesq` package, narrowband (P.862.1 MOS-LQO) at 8 kHz; codec_opus_wb is "
        "wideband (P.862.2) at 16 kHz and is not comparable with the narrowband figures"
    )
    result.notes.append(
        f"impairment: {loss_percent:g} % loss and uniform 0-{jitter_ms:g} ms jitter per packet "
        f"(bench/peers/impairment.py, seed {seed} + repeat; direct and through-server runs of a repeat "
        "drop and delay the same packets), on the sender → server (or sender → phone) path; "
        "impairment_actual_loss_percent is what the seeded draws really dropped"
    )
    result.notes.append(
        "receiver_lost_packets_*: packets the receiving phone's jitter buffer never played (lost or late; "
        "on the transcoded path the server's jitter buffer conceals them before the PCMU leg); "
        "emodel_mos_leg_a_*: the media plane's own E-model estimate for the leg the sender feeds"
    )
    result.notes.append(
        "receiver: the media plane's JitterBuffer (defaults) + the codec's decoder/PLC, played out on an "
        "ideal 20 ms audio clock from the recorded arrival times; Opus: 32 kbit/s, FEC on (expected loss "
        f"{DEFAULT_EXPECTED_LOSS_PERCENT} %), complexity 10; a lost Opus frame is rebuilt from the next "
        "packet's in-band FEC when the jitter buffer already holds that packet, else concealed by Opus PLC "
        "(the phone's receiver and the server's transcoding path alike)"
    )
    result.notes.append("\n".join(["table:", *lines]))
    return result


SUITE = Suite(
    name="audio-quality",
    description="PESQ of speech as RTP: direct vs relay (±0.05), Opus→PCMU transcoding, 3 % loss + 30 ms "
    "jitter, each beside the codec's own figure",
    run=run,
    params={
        "repeats": "runs of every network scenario, one seed each; figures are means (default 3, quick 1)",
        "sentences": f"Harvard sentences in the reference, 1..{len(speech.SENTENCES)} (default all, quick 3)",
        "seed": "seed of the impairment and RTP headers (default 20261201)",
        "loss_percent": "impairment packet loss in % (default 3)",
        "jitter_ms": "impairment jitter: uniform 0..N ms per packet (default 30)",
        "port_min": "first RTP port of the media plane (default 46000)",
        "port_max": "last RTP port of the media plane (default 46999)",
        "keep_audio": "write the reference and every received signal as WAV under results/audio-quality-wav",
    },
    packages=("pesq", "numpy", "opuslib", "av"),
)
