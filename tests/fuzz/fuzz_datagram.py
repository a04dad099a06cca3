"""atheris fuzz target for the SIP datagram entry point (``SipEndpoint.receive``).

    .venv/bin/python tests/fuzz/fuzz_datagram.py -atheris_runs=200000      # coverage-guided (atheris)
    .venv/bin/python tests/fuzz/fuzz_datagram.py --corpus-pass               # one pass, no atheris needed

The corpus is the RFC 4475 torture messages (tests/data/rfc4475). Any exception escaping ``receive``
or a transaction table above its bound is a bug; so is a transaction that never ends.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:  # the corpus pass still runs without it
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["signaling", "sipmessage"]):
        from signaling.sip.endpoint import SipEndpoint
        from signaling.sip.framing import FramingError, StreamFramer
        from signaling.sip.routing import TransportAddress
else:
    from signaling.sip.endpoint import SipEndpoint
    from signaling.sip.framing import FramingError, StreamFramer
    from signaling.sip.routing import TransportAddress
from tests.unit.sip.torture import expectations, load_message  # noqa: E402

SOURCE = TransportAddress("udp", "192.0.2.77", 5099)
MAX_TRANSACTIONS = 64
_endpoint = SipEndpoint(local_addresses={"udp": ("192.0.2.1", 5060)}, max_transactions=MAX_TRANSACTIONS)
_clock = [0.0]


def test_one_input(data: bytes) -> None:
    endpoint = _endpoint
    _clock[0] += 0.01
    endpoint.receive(data, SOURCE, _clock[0])
    while endpoint.next_event() is not None:
        pass
    endpoint.datagrams_to_send()
    if endpoint.active_transactions > MAX_TRANSACTIONS:
        raise AssertionError("transaction table over its bound")
    deadline = endpoint.get_timer()
    if deadline is not None and deadline <= _clock[0]:
        endpoint.handle_timer(_clock[0])
    # the stream framer sees the same bytes, split in two
    framer = StreamFramer(max_message_size=4096)
    try:
        framer.feed(data[: len(data) // 2])
        framer.feed(data[len(data) // 2 :])
    except FramingError:
        pass


def corpus() -> list[bytes]:
    return [load_message(name) for name in sorted(expectations())]


def corpus_pass() -> int:
    """Run every corpus entry (and each cut at every 7th byte) once; then drain all timers."""
    count = 0
    for data in corpus():
        test_one_input(data)
        count += 1
        for cut in range(0, len(data), 7):
            test_one_input(data[:cut])
            count += 1
    while (deadline := _endpoint.get_timer()) is not None:
        _endpoint.handle_timer(deadline)
        _endpoint.datagrams_to_send()
    if _endpoint.active_transactions:
        raise AssertionError("transactions left after every timer fired")
    return count


def main() -> None:
    if "--corpus-pass" in sys.argv:
        print(f"corpus pass: {corpus_pass()} inputs, stats {_endpoint.stats.as_dict()}")
        return
    if atheris is None:
        print("atheris is not installed: running one corpus pass instead")
        print(f"corpus pass: {corpus_pass()} inputs")
        return
    # libFuzzer adds what it finds to the first corpus directory: keep the seeds out of the tree.
    seed_dir = Path(tempfile.mkdtemp(prefix="fuzz_datagram_"))
    for index, data in enumerate(corpus()):
        (seed_dir / f"seed{index:03d}").write_bytes(data)
    atheris.Setup([*sys.argv, str(seed_dir)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
