"""Audio through real calls: baresip A calls baresip B through ``uc-edge serve`` (both registered with
digest auth), each sends its own tone and records what it receives; the received audio is checked for
frequency and level in both directions — same codec (PCMU relay) and Opus ↔ PCMU (transcoding).

The helpers here (``Phone``, ``CallRecords``) are shared with ``test_calls_features.py``.
After each call the rows in uc_calls / uc_cdr and the events in Kafka (call-events, cdr-events) are
checked and every event is validated against its schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from media.codecs.g711 import pcmu_decoder, pcmu_encoder
from storage.events.validation import validate_event
from tests.e2e import audio
from tests.e2e.conftest import (
    DATA,
    DOMAIN,
    ROOT,
    Server,
    SipUsers,
    free_port,
    free_port_pair,
    kill_group,
    require_binary,
    run_bounded,
)
from tests.e2e.test_calls_sipp import register_directly

pytestmark = pytest.mark.e2e

# The server's RTP ports stay apart from the phones' (picked free at run time).
SERVER_ENV = {"UC_EDGE_RTP_PORT_MIN": "31000", "UC_EDGE_RTP_PORT_MAX": "31999"}
PASSWORD = "e2e-audio-secret"
CALLS_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_calls"
CDR_DSN = "postgresql://uc_edge:uc_edge@127.0.0.1:5432/uc_cdr"
KAFKA = "127.0.0.1:9092"
RATE = 48000  # baresip's ausrc_srate / auplay_srate in the config template
CALL_SECONDS = 6.0
LEVEL_FLOOR = 500.0  # RMS of int16 samples; a 0.5-amplitude tone is ~11,600, silence/comfort noise < 100


# --- baresip under control ----------------------------------------------------------------------------------


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free UDP ports (baresip's rtp_ports range)."""
    for _ in range(100):
        start = free_port()
        if start + size > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(start, start + size):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return start
    raise RuntimeError("no free port block")


@dataclass
class Phone:
    """One baresip process, driven through ctrl_tcp (netstring JSON); its events are collected."""

    user: str
    directory: Path
    process: subprocess.Popen[bytes]
    ctrl: socket.socket
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @property
    def log(self) -> Path:
        return self.directory / "baresip.log"

    @property
    def recordings(self) -> Path:
        return self.directory / "rec"

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._read, name=f"ctrl-{self.user}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.ctrl.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                length, colon, rest = buffer.partition(b":")
                if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                    break
                size = int(length)
                message = json.loads(rest[:size])
                buffer = rest[size + 1 :]
                with self._lock:
                    (self.events if message.get("event") else self.responses).append(message)

    def command(self, command: str, params: str = "") -> dict[str, Any]:
        token = uuid.uuid4().hex[:8]
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.ctrl.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                for response in self.responses:
                    if response.get("token") == token:
                        return response
            time.sleep(0.05)
        raise AssertionError(f"baresip {self.user}: no answer to {command} {params}: {self.log_tail()}")

    def event_types(self) -> list[str]:
        with self._lock:
            return [str(e.get("type")) for e in self.events]

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if event.get("type") == kind:
                        return event
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"baresip {self.user}: no {kind} within {timeout}s, got {self.event_types()}: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def received_audio(self) -> tuple[audio.Samples, int]:
        """What the phone decoded from the network (sndfile's dump-*-dec.wav of its only call)."""
        files = sorted(self.recordings.glob("dump-*-dec.wav"))
        assert files, f"baresip {self.user} wrote no received audio: {list(self.recordings.iterdir())}"
        return audio.read_wav(files[-1])

    def codec_used(self) -> str:
        """The audio encoder baresip settled on in its last call (e.g. ``PCMU``, ``opus``)."""
        found = re.findall(r"audio: Set audio encoder: (\S+)", self.log.read_text(errors="replace"))
        assert found, f"baresip {self.user} set no audio encoder: {self.log_tail()}"
        return str(found[-1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.ctrl.close()
        kill_group(self.process)


def write_phone_config(
    directory: Path, *, user: str, server: Server, source: Path, codecs: str, answermode: str
) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rec").mkdir(exist_ok=True)
    rtp_min = free_port_block(10)
    values: dict[str, Any] = {
        "sip_port": free_port_pair(),
        "ctrl_port": free_port(),
        "rtp_min": rtp_min,
        "rtp_max": rtp_min + 9,
        "user": user,
        "password": PASSWORD,
        "server_port": server.sip_port,
        "audio_source": source,
        "snd_path": directory / "rec",
        "codecs": codecs,
        "answermode": answermode,
    }
    for name in ("config", "accounts"):
        template = Template((DATA / "baresip_call" / f"{name}.template").read_text())
        (directory / name).write_text(template.substitute(values))
    return values


def start_phone(
    directory: Path,
    *,
    user: str,
    server: Server,
    source: Path,
    codecs: str,
    answermode: str = "manual",
    sip_trace: bool = False,
) -> Phone:
    """baresip registered as ``user`` (waits for REGISTER_OK), sending ``source`` in calls; with
    ``sip_trace`` every SIP message it sends and receives goes to its log."""
    binary = require_binary("baresip")
    values = write_phone_config(
        directory, user=user, server=server, source=source, codecs=codecs, answermode=answermode
    )
    with open(directory / "baresip.log", "w") as output:
        process = subprocess.Popen(
            [binary, "-f", str(directory), *(["-s"] if sip_trace else [])],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ctrl: socket.socket | None = None
    deadline = time.monotonic() + 10
    while ctrl is None:
        try:
            ctrl = socket.create_connection(("127.0.0.1", values["ctrl_port"]), timeout=1)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                kill_group(process)
                raise AssertionError(
                    f"baresip {user}: ctrl_tcp never listened: {(directory / 'baresip.log').read_text()}"
                ) from None
            time.sleep(0.1)
    ctrl.settimeout(None)
    phone = Phone(user, directory, process, ctrl)
    phone.start_reading()
    try:
        wait_registered(phone, 15)
    except BaseException:
        phone.stop()
        raise
    return phone


def wait_registered(phone: Phone, timeout: float) -> None:
    """Until baresip's registration is 200 OK (its REGISTER_OK may precede our ctrl_tcp connection, so
    the account table of ``reginfo`` is read)."""
    deadline = time.monotonic() + timeout
    info = ""
    while time.monotonic() < deadline and phone.process.poll() is None:
        if "REGISTER_OK" in phone.event_types():
            return
        info = str(phone.command("reginfo").get("data", ""))
        if "\x1b[32mOK" in info or "\u001b[32mOK" in info.lower():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"baresip {phone.user} did not register: {info!r} {phone.event_types()} {phone.log_tail()}"
    )


@contextlib.contextmanager
def phones(*started: Phone) -> Iterator[tuple[Phone, ...]]:
    try:
        yield started
    finally:
        for phone in started:
            phone.stop()


def tone_file(path: Path, frequency: float, seconds: float = 60.0) -> Path:
    if not path.exists():
        audio.write_wav(path, audio.tone(frequency, seconds, RATE), RATE)
    return path


# --- rows and events of a call ------------------------------------------------------------------------------


@dataclass
class CallRecords:
    session: asyncpg.Record
    legs: list[asyncpg.Record]
    routing: list[asyncpg.Record]
    cdr: asyncpg.Record | None


async def call_rows(caller: str, callee: str, *, ended: bool = True, within: float = 15.0) -> CallRecords:
    """The one call from ``caller`` to ``callee`` with its legs, routing attempts and CDR (waits until the
    call has ended and its CDR is written)."""
    calls = await asyncpg.connect(CALLS_DSN)
    cdrs = await asyncpg.connect(CDR_DSN)
    try:
        deadline = time.monotonic() + within
        while True:
            sessions = await calls.fetch(
                "SELECT * FROM call_sessions WHERE from_uri LIKE $1 AND to_uri LIKE $2",
                f"%{caller}@%",
                f"%{callee}%",
            )
            cdr = None
            if len(sessions) == 1:
                cdr = await cdrs.fetchrow(
                    "SELECT * FROM cdr_records WHERE call_id = $1", sessions[0]["call_id"]
                )
            done = len(sessions) == 1 and (
                not ended or (sessions[0]["status"] in ("ended", "failed") and cdr is not None)
            )
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(sessions) == 1, f"expected one call {caller} → {callee}, found {len(sessions)}"
        session = sessions[0]
        legs = await calls.fetch(
            "SELECT * FROM call_legs WHERE call_id = $1 ORDER BY started_at", session["call_id"]
        )
        routing = await calls.fetch(
            "SELECT * FROM call_routing WHERE call_id = $1 ORDER BY step", session["call_id"]
        )
        return CallRecords(session, list(legs), list(routing), cdr)
    finally:
        await calls.close()
        await cdrs.close()


async def call_events(
    session: asyncpg.Record, required: Sequence[str], within: float = 30.0
) -> list[dict[str, Any]]:
    """Every event of the call of ``session`` (its call_sessions row) on call-events and cdr-events, once
    all ``required`` types are there."""
    since = session["started_at"].timestamp() - 60  # clock skew between broker and database
    return (await events_of_calls([session["call_id"]], required, within, since))[str(session["call_id"])]


async def _seek_to_recent(consumer: AIOKafkaConsumer, topics: Sequence[str], since: float) -> None:
    """Assign every partition of ``topics`` and start at the first record at or after ``since`` (epoch
    seconds); where the broker cannot say, from the beginning. The topics are shared by every test and
    benchmark on the machine: reading each from offset 0 takes longer with every run."""
    await consumer.topics()  # metadata
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    assert partitions, f"no partitions for {topics}"
    consumer.assign(partitions)
    try:
        offsets = await consumer.offsets_for_times({tp: int(since * 1000) for tp in partitions})
    except Exception:  # a broker without ListOffsets by time: read everything
        await consumer.seek_to_beginning(*partitions)
        return
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        found = offsets.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])


async def events_of_calls(
    call_ids: Sequence[uuid.UUID], required: Sequence[str], within: float = 30.0, since: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """call id → its events on call-events and cdr-events (a consumer group of its own, from records
    written since ``since`` — default: the last 10 minutes) once every call has all ``required`` types;
    each event is validated against its schema."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        group_id=f"e2e-calls-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, list[dict[str, Any]]] = {str(call_id): [] for call_id in call_ids}
    needles = [key.encode() for key in found]

    def complete() -> bool:
        return all(set(required) <= {e["type"] for e in events} for events in found.values())

    deadline = time.monotonic() + within
    try:
        await _seek_to_recent(consumer, ("call-events", "cdr-events"), since or time.time() - 600)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    value = record.value
                    if value is None or not any(needle in value for needle in needles):
                        continue  # other calls' events, and other tests' junk records
                    envelope = json.loads(value)
                    if envelope.get("call_id") in found:
                        validate_event(envelope)
                        found[envelope["call_id"]].append(envelope)
            if complete():
                break
    finally:
        await consumer.stop()
    for call_id, events in found.items():
        types = [e["type"] for e in events]
        assert set(required) <= set(types), (
            f"call {call_id}: events {types}, missing {set(required) - set(types)}"
        )
    return found


async def check_answered_call(caller: str, callee: str) -> CallRecords:
    """Rows and events of a call that was answered and hung up normally."""
    records = await call_rows(caller, callee)
    session = records.session
    assert session["status"] == "ended", dict(session)
    assert session["termination_cause"] == "normal_clearing", dict(session)
    assert session["answered_at"] is not None and session["ended_at"] >= session["answered_at"]
    assert session["answered_leg_id"] in {leg["leg_id"] for leg in records.legs}
    assert {leg["direction"] for leg in records.legs} == {"inbound", "outbound"}
    assert all(leg["status"] == "terminated" for leg in records.legs), [dict(leg) for leg in records.legs]
    assert records.routing and records.routing[-1]["result"] == "answered", [dict(r) for r in records.routing]
    assert records.cdr is not None
    assert records.cdr["correlation_id"] == session["correlation_id"]
    assert records.cdr["termination_cause"] == "normal_clearing"
    assert records.cdr["duration_seconds"] >= 1
    events = await call_events(session, ("call.started", "call.answered", "call.ended", "cdr.created"))
    assert {e["correlation_id"] for e in events} == {str(session["correlation_id"])}
    return records


# --- tone checks --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToneFigures:
    frequency: float
    level: float
    purity: float


def received_tone(phone: Phone, expected: float) -> ToneFigures:
    """Dominant frequency, RMS and share of energy near ``expected`` of what ``phone`` received."""
    samples, rate = phone.received_audio()
    active = audio.active_span(samples, rate, LEVEL_FLOOR)
    assert active.size >= rate, (
        f"baresip {phone.user} received {active.size / rate:.2f}s of audio above the floor "
        f"(of {samples.size / rate:.2f}s recorded): {phone.log_tail()}"
    )
    # skip the first half second (jitter buffer fill, codec start-up) of the audible part
    steady = active[rate // 2 :]
    return ToneFigures(
        audio.dominant_frequency(steady, rate),
        audio.rms(steady),
        audio.band_energy_fraction(steady, rate, expected),
    )


def talk(caller: Phone, callee: Phone, seconds: float) -> None:
    """caller dials callee, callee answers (auto-answer), they talk ``seconds``, caller hangs up."""
    caller.command("dial", f"sip:{callee.user}@127.0.0.1")
    caller.wait_event("CALL_ESTABLISHED", 15)
    callee.wait_event("CALL_ESTABLISHED", 5)
    time.sleep(seconds)
    caller.command("hangup")
    caller.wait_event("CALL_CLOSED", 10)
    callee.wait_event("CALL_CLOSED", 10)


async def tone_call(
    server: Server, users: SipUsers, tmp_path: Path, caller_codecs: str, callee_codecs: str
) -> tuple[ToneFigures, ToneFigures, tuple[str, str]]:
    """A (1000 Hz) calls B (600 Hz, auto-answer); returns the tone figures heard by B and by A, and the
    codecs A and B used."""
    caller, callee = await users.create(2, PASSWORD, label="tone")
    tones = tmp_path / "tones"
    tones.mkdir(exist_ok=True)
    tone_a, tone_b = tone_file(tones / "a1000.wav", 1000), tone_file(tones / "b600.wav", 600)
    a = start_phone(tmp_path / "a", user=caller, server=server, source=tone_a, codecs=caller_codecs)
    with phones(a):
        b = start_phone(
            tmp_path / "b", user=callee, server=server, source=tone_b, codecs=callee_codecs, answermode="auto"
        )
        with phones(b):
            await asyncio.to_thread(talk, a, b, CALL_SECONDS)
    heard_by_b, heard_by_a = received_tone(b, 1000), received_tone(a, 600)
    await check_answered_call(caller, callee)
    assert server.alive(), server.stderr_tail()
    return heard_by_b, heard_by_a, (a.codec_used(), b.codec_used())


def assert_tone(figures: ToneFigures, expected: float, who: str) -> None:
    assert abs(figures.frequency - expected) <= 15, f"{who} heard {figures}"
    assert figures.level > LEVEL_FLOOR * 4, f"{who} heard {figures}"
    assert figures.purity > 0.8, f"{who} heard {figures}"


async def test_pcmu_call_carries_each_tone_to_the_other_side(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    heard_by_b, heard_by_a, codecs = await tone_call(server, sip_users, tmp_path, "PCMU", "PCMU")
    assert codecs == ("PCMU", "PCMU")
    print(f"PCMU↔PCMU: B heard {heard_by_b}, A heard {heard_by_a}")
    assert_tone(heard_by_b, 1000, "B")
    assert_tone(heard_by_a, 600, "A")


async def test_opus_to_pcmu_call_is_transcoded_both_ways(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    heard_by_b, heard_by_a, codecs = await tone_call(server, sip_users, tmp_path, "opus/48000/2", "PCMU")
    assert codecs == ("opus", "PCMU")  # so the server transcodes
    print(f"opus↔PCMU: B heard {heard_by_b}, A heard {heard_by_a}")
    assert_tone(heard_by_b, 1000, "B (PCMU)")
    assert_tone(heard_by_a, 600, "A (opus)")


# --- echo test: speech in, speech back, PESQ beside the codec's own round trip ----------------------------

SPEECH_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish."
)
ECHO_MARGIN = 0.5  # PESQ points the echo may lose against PCMU's own encode/decode


def speech_source(tmp_path: Path) -> tuple[Path, audio.Samples]:
    """espeak-ng speech at 48 kHz followed by silence (the aufile source must outlast the call), and the
    speech alone at 8 kHz as the PESQ reference."""
    workdir = tmp_path / "speech"
    workdir.mkdir(exist_ok=True)
    speech48 = audio.speech(workdir / "speech48k.wav", SPEECH_TEXT, RATE, workdir)
    speech8 = audio.speech(workdir / "speech8k.wav", SPEECH_TEXT, 8000, workdir)
    lead_in = np.zeros(RATE // 2, dtype=np.int16)
    tail = np.zeros(RATE * 30, dtype=np.int16)
    source = audio.write_wav(workdir / "source48k.wav", np.concatenate([lead_in, speech48, tail]), RATE)
    return source, speech8


def codec_round_trip(reference: audio.Samples) -> audio.Samples:
    """The reference through PCMU encode → decode, as the server's own codec does it."""
    frame = 160
    usable = reference[: reference.size // frame * frame]
    encoder, decoder = pcmu_encoder(), pcmu_decoder()
    frames = [decoder.decode(encoder.encode(usable[i : i + frame])) for i in range(0, usable.size, frame)]
    return np.concatenate(frames).astype(np.int16)


async def test_echo_returns_speech_with_codec_quality(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    (caller,) = await sip_users.create(1, PASSWORD, label="echo")
    source, reference = speech_source(tmp_path)
    speech_seconds = reference.size / 8000
    phone = start_phone(tmp_path / "a", user=caller, server=server, source=source, codecs="PCMU")
    with phones(phone):

        def call_echo() -> None:
            phone.command("dial", "sip:echo@127.0.0.1")
            phone.wait_event("CALL_ESTABLISHED", 15)
            time.sleep(speech_seconds + 2.0)
            phone.command("hangup")
            phone.wait_event("CALL_CLOSED", 10)

        await asyncio.to_thread(call_echo)
    received, rate = phone.received_audio()
    returned = audio.resample(received, rate, 8000)
    ref, echoed, lag = audio.align(reference, returned, max_lag=8000 * 3)
    echo_score = audio.pesq_nb(ref, echoed)
    codec_score = audio.pesq_nb(reference, codec_round_trip(reference))
    print(
        f"echo: PESQ {echo_score:.2f} (PCMU alone {codec_score:.2f}), "
        f"offset {lag / 8:.0f} ms (0.5 s lead-in), "
        f"{echoed.size / 8000:.1f}s compared"
    )
    assert echoed.size >= reference.size * 0.9, "the echo came back cut short"
    assert echo_score >= codec_score - ECHO_MARGIN

    records = await call_rows(caller, "echo")
    assert records.session["status"] == "ended" and records.session["termination_cause"] == "normal_clearing"
    assert records.cdr is not None
    await call_events(records.session, ("call.started", "call.answered", "call.ended", "cdr.created"))


# --- SIPp UAC → uc-edge → SIPp UAS with RTP from a pcap ---------------------------------------------------

SIPP_CALLS = 20
UAC_PCAP_SCENARIO = ROOT / "bench" / "peers" / "call_uac_auth_pcap.xml"
UAS_PCMA_SCENARIO = ROOT / "bench" / "peers" / "uas_pcma.xml"


def run_pcap_calls(sipp: str, server: Server, csv: Path, uas_port: int, workdir: Path) -> None:
    """The SIPp UAS (answering PCMA, echoing RTP) in the background, the UAC in front; all calls succeed."""
    with open(workdir / "uas.out", "w") as output:
        uas = subprocess.Popen(
            [
                *(sipp, "-sf", str(UAS_PCMA_SCENARIO), "-i", "127.0.0.1", "-p", str(uas_port)),
                *("-m", str(SIPP_CALLS), "-rtp_echo", "-mi", "127.0.0.1", "-mp", str(free_port_block(4))),
                *("-nostdin", "-timeout", "100"),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        result = run_bounded(
            [
                *(sipp, "-sf", str(UAC_PCAP_SCENARIO), "-inf", str(csv), f"127.0.0.1:{server.sip_port}"),
                *(
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(free_port()),
                    "-mi",
                    "127.0.0.1",
                    "-mp",
                    str(free_port_block(4)),
                ),
                *("-m", str(SIPP_CALLS), "-r", "5", "-l", str(SIPP_CALLS), "-nostdin", "-timeout", "90"),
                *("-trace_err", "-trace_stat", "-stf", "stat.csv"),
            ],
            120,
            cwd=workdir,
        )
    finally:
        kill_group(uas, grace=2)
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*errors.log"))
    assert result.returncode == 0, result.stdout[-3000:] + errors + server.stderr_tail()
    stats = (workdir / "stat.csv").read_text().splitlines()
    header, last = stats[0].split(";"), stats[-1].split(";")
    assert int(last[header.index("SuccessfulCall(C)")]) == SIPP_CALLS
    assert int(last[header.index("FailedCall(C)")]) == 0


async def test_sipp_calls_with_pcap_rtp_all_succeed(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    """20 authenticated calls, each playing 7 s of A-law speech and a DTMF digit that the UAS echoes back:
    every call succeeds and the server relays the RTP both ways."""
    sipp = require_binary("sipp")
    caller, callee = await sip_users.create(2, PASSWORD, label="pcap")
    uas_port = free_port()
    await register_directly(callee, uas_port)
    csv = tmp_path / "calls.csv"
    csv.write_text(
        f"SEQUENTIAL\n{caller};{callee};{DOMAIN};[authentication username={caller} password={PASSWORD}]\n"
    )
    await asyncio.to_thread(run_pcap_calls, sipp, server, csv, uas_port, tmp_path)

    calls = await asyncpg.connect(CALLS_DSN)
    try:
        deadline = time.monotonic() + 15
        while True:  # the last calls' rows are written just after their BYE
            rows = await calls.fetch(
                "SELECT call_id, status, termination_cause FROM call_sessions WHERE from_uri LIKE $1",
                f"%{caller}@%",
            )
            ids = [r["call_id"] for r in rows]
            # A leg's quality is stored only when its endpoint received RTP: one row per leg proves the
            # UAC's packets reached leg A and the UAS's echo reached leg B, for every call.
            quality = await calls.fetch(
                "SELECT call_id, leg_id, packets_lost, packet_loss_fraction, jitter_ms FROM call_quality"
                " WHERE call_id = ANY($1::uuid[])",
                ids,
            )
            settled = all(r["status"] == "ended" for r in rows) and len(quality) >= 2 * SIPP_CALLS
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        legs = await calls.fetchval("SELECT count(*) FROM call_legs WHERE call_id = ANY($1::uuid[])", ids)
    finally:
        await calls.close()
    assert len(rows) == SIPP_CALLS
    assert {(r["status"], r["termination_cause"]) for r in rows} == {("ended", "normal_clearing")}
    assert legs == 2 * SIPP_CALLS
    assert len({q["leg_id"] for q in quality}) == 2 * SIPP_CALLS, [dict(q) for q in quality]
    worst = max(q["packet_loss_fraction"] for q in quality)
    print(
        f"SIPp pcap calls: {SIPP_CALLS} ok, RTP on all {len(quality)} legs, worst loss {worst:.3%}, "
        f"max jitter {max(q['jitter_ms'] for q in quality):.1f} ms"
    )
    assert worst < 0.01
    await events_of_calls(
        [r["call_id"] for r in rows],
        ("call.started", "call.answered", "call.ended", "cdr.created"),
        within=60,
    )
