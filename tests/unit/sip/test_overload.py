"""Overload control: the wait estimate from probes, the share of new calls refused, and the endpoint's
stateless 503 to them (no sockets; time passed by hand)."""

from __future__ import annotations

import pytest

from signaling.sip.endpoint import SipEndpoint
from signaling.sip.message import Response, parse_message, to_tag
from signaling.sip.overload import OverloadConfig, OverloadControl
from tests.unit.sip.support import ALICE, drain, make_request, sent_codes, wire

CONFIG = OverloadConfig(target_delay=0.1, limit_delay=0.4, probe_interval=0.05, window=0.5)


def measured(control: OverloadControl, wait: float, at: float) -> None:
    """One probe that waited ``wait`` and came back at ``at``."""
    sequence = control.probe_sent(at - wait)
    control.probe_returned(sequence, at)


def queue_stood(control: OverloadControl, wait: float, until: float) -> None:
    """A probe every 50 ms for longer than a window, each having waited ``wait``, the last at ``until``."""
    for step in range(12, -1, -1):
        measured(control, wait, at=until - step * 0.05)


def admitted_of(control: OverloadControl, count: int, now: float, prefix: str = "k") -> int:
    return sum(control.refusal_tag(f"{prefix}{n}", now) is None for n in range(count))


def test_the_wait_is_the_least_measured_within_the_window() -> None:
    control = OverloadControl(CONFIG)
    assert control.delay(0.0) == 0.0
    measured(control, 0.30, at=10.0)
    measured(control, 0.05, at=10.1)  # a moment without a queue within the window: no standing queue
    measured(control, 0.30, at=10.2)
    assert control.delay(10.2) == pytest.approx(0.05)
    assert control.refusal_share(10.2) == 0.0
    # Half a second later only the long waits are in the window: the queue stands.
    measured(control, 0.30, at=10.65)
    assert control.delay(10.65) == pytest.approx(0.30)
    assert control.refusal_share(10.65) == 0.0  # above the target since 10.2: not yet for a whole window
    measured(control, 0.30, at=10.7)
    assert control.standing(10.7)
    assert control.refusal_share(10.7) == pytest.approx((0.30 - 0.1) / (0.4 - 0.1))


def test_a_one_off_stall_refuses_nothing_once_the_queue_behind_it_drains() -> None:
    control = OverloadControl(CONFIG)
    queue_stood(control, 0.002, until=2.0)
    measured(control, 1.2, at=3.2)  # the loop stood still for 1.2 s; this probe was first in the queue
    assert control.delay(3.2) == pytest.approx(1.2)
    assert admitted_of(control, 20, now=3.2) == 20  # what queued behind the stall: admitted
    measured(control, 0.004, at=3.25)  # the queue has drained
    assert admitted_of(control, 20, now=3.3, prefix="later") == 20
    assert control.episode is None


def test_a_short_burst_refuses_nothing() -> None:
    """One probe held 200 ms by a garbage collection, the ones around it quick: no call is refused."""
    control = OverloadControl(CONFIG)
    for step in range(10):
        measured(control, 0.2 if step == 5 else 0.002, at=1.0 + step * 0.05)
    assert control.delay(1.5) == pytest.approx(0.002)
    assert admitted_of(control, 50, now=1.5) == 50
    assert control.episode is None


def test_a_probe_out_longer_than_the_window_counts_with_its_age_until_a_later_one_returns() -> None:
    control = OverloadControl(CONFIG)
    measured(control, 0.001, at=5.0)
    stuck = control.probe_sent(5.0)
    assert control.delay(5.4) == pytest.approx(0.001)  # out 0.4 s: within the window, not yet telling
    assert control.delay(5.9) == pytest.approx(0.9)
    assert control.refusal_share(5.9) == 1.0
    later = control.probe_sent(5.95)
    control.probe_returned(later, 6.0)  # the socket dropped ``stuck``; this one waited 50 ms
    assert control.outstanding_probes == 0 and control.probes_lost == 1
    control.probe_returned(stuck, 6.1)  # already retired: ignored
    assert control.delay(6.6) == pytest.approx(0.05)  # only the 50 ms wait is left within the window


@pytest.mark.parametrize(
    ("wait", "admitted"),
    [(0.05, 100), (0.1, 100), (0.175, 75), (0.25, 50), (0.325, 25), (0.4, 0), (1.5, 0)],
)
def test_the_share_refused_grows_with_the_wait_and_is_spread_evenly(wait: float, admitted: int) -> None:
    control = OverloadControl(CONFIG)
    queue_stood(control, wait, until=20.0)
    assert admitted_of(control, 100, now=20.0) == pytest.approx(admitted, abs=1)
    assert control.refused == pytest.approx(100 - admitted, abs=1)


def test_half_refused_means_every_other_call() -> None:
    control = OverloadControl(CONFIG)
    queue_stood(control, 0.25, until=20.0)
    decisions = [control.refusal_tag(n, 20.0) is None for n in range(8)]
    assert decisions in ([True, False] * 4, [False, True] * 4)


def test_a_refused_invite_is_refused_again_with_the_same_tag_for_64_t1_then_forgotten() -> None:
    control = OverloadControl(CONFIG)
    queue_stood(control, 1.0, until=30.0)
    tag = control.refusal_tag("branch-1", 30.0)
    assert tag is not None
    measured(control, 0.0, at=31.0)  # the queue is gone...
    assert control.refusal_tag("branch-1", 31.0) == tag  # ...but its retransmission still gets the 503
    assert control.refusal_tag("branch-2", 31.0) is None
    assert control.refusal_tag("branch-1", 30.0 + CONFIG.remember_refused + 0.1) is None
    assert control.remembered == 0


def test_the_memory_of_refused_invites_is_bounded() -> None:
    control = OverloadControl(OverloadConfig(max_remembered=100))
    queue_stood(control, 5.0, until=40.0)
    for n in range(1_000):
        assert control.refusal_tag(n, 40.0) is not None
    assert control.remembered <= 100


def test_an_episode_opens_with_the_first_refusal_and_ends_after_a_quiet_period() -> None:
    control = OverloadControl(CONFIG)
    measured(control, 0.01, at=50.0)
    assert admitted_of(control, 5, 50.0) == 5 and control.episode is None
    queue_stood(control, 0.5, until=51.0)
    assert admitted_of(control, 10, 51.0, prefix="a") == 0
    episode = control.episode
    assert episode is not None and episode.refused == 10 and episode.peak_delay == pytest.approx(0.5)
    measured(control, 0.01, at=52.0)
    assert admitted_of(control, 3, 52.0, prefix="b") == 3
    assert control.ended_episode(51.0 + CONFIG.quiet_period - 0.5) is None
    ended = control.ended_episode(51.0 + CONFIG.quiet_period + 0.1)
    assert ended is episode and ended.refused == 10 and ended.admitted == 3
    assert control.episode is None and control.ended_episode(100.0) is None


def test_loop_lateness_samples_drive_it_without_probes() -> None:
    control = OverloadControl(CONFIG)
    for step in range(12):
        control.sample(0.35, 60.0 + step * 0.05)
    assert control.delay(60.55) == pytest.approx(0.35)
    control.sample(-0.01, 60.6)  # a timer that fired early counts as no wait
    assert control.delay(60.6) == 0.0


def test_config_rejects_a_limit_below_the_target() -> None:
    with pytest.raises(ValueError, match="target < limit"):
        OverloadConfig(target_delay=0.5, limit_delay=0.2)
    with pytest.raises(ValueError, match="probe interval"):
        OverloadConfig(probe_interval=1.0, window=0.5)


# --- the endpoint --------------------------------------------------------------------------------------


def overloaded_endpoint(wait: float = 1.0) -> tuple[SipEndpoint, OverloadControl]:
    control = OverloadControl(OverloadConfig(retry_after=7))
    queue_stood(control, wait, until=100.0)
    return SipEndpoint(overload=control), control


def responses(endpoint: SipEndpoint) -> list[Response]:
    out = []
    for data, destination in endpoint.datagrams_to_send():
        message = parse_message(data)
        assert isinstance(message, Response)
        assert destination.host == ALICE.host
        out.append(message)
    return out


def test_an_overloaded_endpoint_answers_a_new_invite_503_without_a_transaction() -> None:
    endpoint, control = overloaded_endpoint()
    endpoint.receive(wire(make_request("INVITE", branch="z9hG4bKshed1")), ALICE, 100.0)
    [response] = responses(endpoint)
    assert response.code == 503
    assert response.headers.get("Retry-After") == "7"
    assert to_tag(response) is not None
    assert drain(endpoint) == []  # the TU never hears of it
    assert endpoint.active_transactions == 0
    assert endpoint.stats.invites_shed == 1 and control.refused == 1
    # Its retransmission, and the ACK for the 503, leave nothing behind either.
    endpoint.receive(wire(make_request("INVITE", branch="z9hG4bKshed1")), ALICE, 100.5)
    [again] = responses(endpoint)
    assert again.code == 503 and to_tag(again) == to_tag(response)
    ack = make_request("ACK", branch="z9hG4bKshed1", to_tag=to_tag(response))
    endpoint.receive(wire(ack), ALICE, 100.6)
    assert endpoint.active_transactions == 0
    assert endpoint.stats.invites_shed == 2 and control.refused == 1


def test_overload_leaves_in_dialog_requests_and_other_methods_alone() -> None:
    endpoint, _control = overloaded_endpoint()
    reinvite = make_request("INVITE", branch="z9hG4bKre1", to_tag="totag", cseq=2)
    endpoint.receive(wire(reinvite), ALICE, 100.0)
    bye = make_request("BYE", branch="z9hG4bKbye1", to_tag="totag", cseq=3)
    endpoint.receive(wire(bye), ALICE, 100.0)
    options = make_request("OPTIONS", branch="z9hG4bKopt1", call_id="other@test")
    endpoint.receive(wire(options), ALICE, 100.0)
    assert [event.request.method for event in drain(endpoint)] == ["INVITE", "BYE", "OPTIONS"]
    assert sent_codes(endpoint) == [100]  # the re-INVITE's 100 Trying; nothing refused
    assert endpoint.stats.invites_shed == 0


def test_a_new_invite_goes_through_when_the_wait_is_short() -> None:
    endpoint, _control = overloaded_endpoint(wait=0.01)
    endpoint.receive(wire(make_request("INVITE", branch="z9hG4bKok1")), ALICE, 100.0)
    assert [event.request.method for event in drain(endpoint)] == ["INVITE"]
    assert sent_codes(endpoint) == [100]
    assert endpoint.stats.invites_shed == 0
