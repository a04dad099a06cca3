"""Outbound registration client (sans-IO): challenge, 423, refresh timing, backoff, unregister, bad answers.

The registrar here is a small fake that answers with real builders, and checks credentials with the real
server-side :class:`DigestAuthenticator`; the clock is moved by hand.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.sip.dialog import LocalAddress
from signaling.sip.digest import Credentials, DigestAuthenticator, ha1
from signaling.sip.errors import LocalProtocolError
from signaling.sip.message import Request, Response, build_response, cseq_of, parse_message, serialize
from signaling.sip.outbound_registration import (
    RegistrationClient,
    RegistrationConfig,
    RegistrationState,
    SendRegister,
    StatusChanged,
)
from signaling.sip.routing import TransportAddress

T0 = 1000.0
REALM = "carrier.example"
PASSWORD = "s3cret"
CONTACT = "<sip:edge@192.0.2.1:5060>"
TRUNK = TransportAddress("udp", "198.51.100.7", 5060)


def make_config(**overrides: object) -> RegistrationConfig:
    values: dict[str, object] = {
        "name": "carrier",
        "registrar_uri": "sip:carrier.example",
        "aor": "sip:edge@carrier.example",
        "contact": CONTACT,
        "destination": TRUNK,
        "local": LocalAddress("UDP", "192.0.2.1", 5060),
        "username": "edge",
        "password": PASSWORD,
    }
    values.update(overrides)
    return RegistrationConfig(**values)  # type: ignore[arg-type]


def make_client(*, fraction: float = 1.0, **overrides: object) -> RegistrationClient:
    tokens = itertools.count()
    return RegistrationClient(
        make_config(**overrides), random_fraction=lambda: fraction, new_token=lambda: f"cn{next(tokens)}"
    )


def sent(client: RegistrationClient) -> list[SendRegister]:
    """Drain the actions; the REGISTERs sent, round-tripped through bytes as the network would."""
    out = []
    while (action := client.next_action()) is not None:
        if isinstance(action, SendRegister):
            assert action.destination == TRUNK
            request = parse_message(serialize(action.request))
            assert isinstance(request, Request)
            out.append(SendRegister(request, action.destination))
        else:
            assert isinstance(action, StatusChanged)
    return out


def only(client: RegistrationClient) -> Request:
    requests = sent(client)
    assert len(requests) == 1, requests
    return requests[0].request


def reply(request: Request, code: int, *headers: tuple[str, str]) -> Response:
    response = parse_message(serialize(build_response(request, code, headers=headers)))
    assert isinstance(response, Response)
    return response


def granted(request: Request, expires: int | None = None, *others: str) -> Response:
    """A registrar's 200 listing our contact (with ``expires``) and ``others``."""
    asked = int(request.headers["Expires"])
    contact = f"{CONTACT};expires={asked if expires is None else expires}"
    return reply(request, 200, *[("Contact", value) for value in (*others, contact)])


class Registrar:
    """Verifies credentials like a real registrar (digest, nonce-count replay)."""

    def __init__(self, *, proxy: bool = False) -> None:
        self.auth = DigestAuthenticator(REALM, b"registrar-secret-0123456789")
        self.proxy = proxy

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Response:
        code = 407 if self.proxy else 401
        return reply(request, code, *self.auth.challenge_headers(now, stale=stale, proxy=self.proxy))

    def verify(self, request: Request, now: float) -> bool:
        value = request.headers.get("Proxy-Authorization" if self.proxy else "Authorization")
        if value is None:
            return False
        credentials = Credentials.parse(value)
        result = self.auth.verify(
            credentials,
            method="REGISTER",
            request_uri=str(request.uri),
            ha1_value=ha1("edge", REALM, PASSWORD, credentials.algorithm),
            now=now,
        )
        return result.ok


def register(
    client: RegistrationClient, registrar: Registrar, now: float, expires: int | None = None
) -> None:
    """Start and complete an authenticated registration."""
    client.start(now)
    first = only(client)
    assert not registrar.verify(first, now)
    client.receive_response(registrar.challenge(first, now), now)
    second = only(client)
    assert registrar.verify(second, now)
    client.receive_response(granted(second, expires), now)
    assert client.state is RegistrationState.REGISTERED


# ---- the REGISTER ---------------------------------------------------------------------------------


def test_first_register_names_the_aor_our_contact_and_the_expiry() -> None:
    client = make_client(expires=600)
    client.start(T0)
    request = only(client)
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:carrier.example"
    assert request.headers["To"] == "<sip:edge@carrier.example>"
    assert request.headers["From"].startswith("<sip:edge@carrier.example>;tag=")
    assert request.headers["Contact"] == CONTACT
    assert request.headers["Expires"] == "600"
    assert request.headers["Via"].startswith("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK")
    assert cseq_of(request).sequence == 1 and cseq_of(request).method == "REGISTER"
    assert request.headers.get("Authorization") is None
    assert client.state is RegistrationState.REGISTERING
    assert client.get_timer() is None  # the transaction layer times the request out, not us


def test_start_twice_is_our_bug() -> None:
    client = make_client()
    client.start(T0)
    with pytest.raises(LocalProtocolError, match="already started"):
        client.start(T0)


def test_challenge_is_answered_with_credentials_the_registrar_accepts() -> None:
    client, registrar = make_client(), Registrar()
    client.start(T0)
    first = only(client)
    client.receive_response(registrar.challenge(first, T0), T0)
    second = only(client)
    assert registrar.verify(second, T0)
    assert second.headers["Call-ID"] == first.headers["Call-ID"]
    assert cseq_of(second).sequence == cseq_of(first).sequence + 1
    assert second.headers["Via"] != first.headers["Via"]  # a new transaction
    assert client.state is RegistrationState.REGISTERING
    client.receive_response(granted(second), T0 + 0.1)
    assert client.state is RegistrationState.REGISTERED
    assert client.stats.challenges_answered == 1 and client.stats.registrations == 1


def test_proxy_challenge_is_answered_with_proxy_authorization() -> None:
    client, registrar = make_client(), Registrar(proxy=True)
    register(client, registrar, T0)
    assert client.stats.challenges_answered == 1


def test_refresh_reuses_the_challenge_with_the_next_nonce_count() -> None:
    client, registrar = make_client(expires=600), Registrar()
    register(client, registrar, T0)
    refresh_at = client.get_timer()
    assert refresh_at is not None
    client.handle_timer(refresh_at)
    refresh = only(client)
    credentials = Credentials.parse(refresh.headers["Authorization"])
    assert credentials.nc == 2
    assert registrar.verify(refresh, refresh_at)  # not a replay: nc went up
    client.receive_response(granted(refresh), refresh_at)
    assert client.state is RegistrationState.REGISTERED
    assert client.stats.attempts == 2 and client.stats.challenges_answered == 1


def test_refresh_with_an_expired_nonce_is_challenged_stale_and_answered_again() -> None:
    client, registrar = make_client(expires=600), Registrar()
    register(client, registrar, T0)
    refresh_at = client.get_timer()
    assert refresh_at is not None
    client.handle_timer(refresh_at)
    refresh = only(client)
    client.receive_response(registrar.challenge(refresh, refresh_at, stale=True), refresh_at)
    again = only(client)
    assert registrar.verify(again, refresh_at)
    client.receive_response(granted(again), refresh_at)
    assert client.state is RegistrationState.REGISTERED


def test_refresh_challenged_without_stale_is_answered_once() -> None:
    """The kept challenge may simply be old at a registrar that never says stale: one fresh answer."""
    client, registrar = make_client(expires=600), Registrar()
    register(client, registrar, T0)
    refresh_at = client.get_timer()
    assert refresh_at is not None
    client.handle_timer(refresh_at)
    client.receive_response(registrar.challenge(only(client), refresh_at), refresh_at)
    again = only(client)
    client.receive_response(granted(again), refresh_at)
    assert client.state is RegistrationState.REGISTERED


def test_wrong_password_fails_after_one_answer_and_backs_off() -> None:
    client, registrar = make_client(password="wrong"), Registrar()
    client.start(T0)
    client.receive_response(registrar.challenge(only(client), T0), T0)
    second = only(client)
    assert not registrar.verify(second, T0)
    client.receive_response(registrar.challenge(second, T0), T0)
    assert sent(client) == []
    assert client.state is RegistrationState.FAILED
    status = client.status()
    assert status.last_status == 401 and status.last_reason == "credentials rejected"
    assert client.get_timer() == T0 + 30.0
    # the next attempt starts without the rejected challenge
    client.handle_timer(T0 + 30.0)
    assert only(client).headers.get("Authorization") is None
    assert client.state is RegistrationState.REGISTERING


def test_challenge_without_configured_credentials_fails() -> None:
    client, registrar = make_client(username=None, password=None), Registrar()
    client.start(T0)
    client.receive_response(registrar.challenge(only(client), T0), T0)
    assert client.state is RegistrationState.FAILED
    assert "no" in client.status().last_reason and sent(client) == []


def test_challenge_we_cannot_answer_fails() -> None:
    for header in (
        'Digest realm="x", nonce="n", qop="auth-int"',  # auth-int only
        'Digest realm="x", nonce="n", algorithm=SHA-1',  # unknown algorithm
        'Basic realm="x"',
    ):
        client = make_client()
        client.start(T0)
        request = only(client)
        client.receive_response(reply(request, 401, ("WWW-Authenticate", header)), T0)
        assert client.state is RegistrationState.FAILED, header
        assert client.status().last_reason == "no usable digest challenge in the 401"


def test_the_first_usable_of_several_challenges_is_answered() -> None:
    client = make_client()
    client.start(T0)
    request = only(client)
    client.receive_response(
        reply(
            request,
            401,
            ("WWW-Authenticate", 'Digest realm="x", nonce="n1", algorithm=SHA-1'),
            ("WWW-Authenticate", 'Digest realm="x", nonce="n2", algorithm=SHA-256, qop="auth"'),
        ),
        T0,
    )
    answered = Credentials.parse(only(client).headers["Authorization"])
    assert answered.nonce == "n2" and answered.algorithm.value == "SHA-256"


def test_endless_stale_challenges_end_in_failure() -> None:
    client, registrar = make_client(), Registrar()
    client.start(T0)
    request = only(client)
    for _ in range(10):
        client.receive_response(registrar.challenge(request, T0, stale=True), T0)
        following = sent(client)
        if not following:
            break
        request = following[0].request
    assert client.state is RegistrationState.FAILED
    assert client.stats.challenges_answered == 3


# ---- 423 Interval Too Brief -------------------------------------------------------------------------


def test_interval_too_brief_is_resent_with_min_expires_and_kept_for_refreshes() -> None:
    client = make_client(expires=60)
    client.start(T0)
    first = only(client)
    client.receive_response(reply(first, 423, ("Min-Expires", "900")), T0)
    second = only(client)
    assert second.headers["Expires"] == "900"
    assert cseq_of(second).sequence == 2
    client.receive_response(granted(second), T0)
    assert client.state is RegistrationState.REGISTERED and client.expires == 900
    refresh_at = client.get_timer()
    assert refresh_at == T0 + 600  # 900 - 300 s margin
    client.handle_timer(refresh_at)
    assert only(client).headers["Expires"] == "900"


@pytest.mark.parametrize("min_expires", [None, "", "sixty", "60", "30"])
def test_interval_too_brief_without_a_larger_min_expires_fails(min_expires: str | None) -> None:
    client = make_client(expires=60)
    client.start(T0)
    headers = [] if min_expires is None else [("Min-Expires", min_expires)]
    client.receive_response(reply(only(client), 423, *headers), T0)
    assert client.state is RegistrationState.FAILED
    assert client.status().last_status == 423 and sent(client) == []


def test_min_expires_rising_without_end_fails() -> None:
    client = make_client(expires=60)
    client.start(T0)
    request = only(client)
    for minimum in (120, 240, 480):
        client.receive_response(reply(request, 423, ("Min-Expires", str(minimum))), T0)
        following = sent(client)
        if not following:
            break
        request = following[0].request
    assert client.state is RegistrationState.FAILED
    assert client.status().last_reason == "Min-Expires keeps rising"


# ---- refresh timing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted_seconds", "refresh_after"),
    [(3600, 3300.0), (600, 300.0), (120, 60.0), (60, 30.0), (1, 1.0)],
)
def test_refresh_is_due_at_half_or_the_margin_before_expiry_whichever_is_later(
    granted_seconds: int, refresh_after: float
) -> None:
    client, registrar = make_client(), Registrar()
    register(client, registrar, T0, expires=granted_seconds)
    assert client.get_timer() == T0 + refresh_after
    status = client.status()
    assert status.expires == granted_seconds and status.expires_at == T0 + granted_seconds


def test_nothing_is_sent_before_the_refresh_is_due() -> None:
    client, registrar = make_client(), Registrar()
    register(client, registrar, T0, expires=600)
    client.handle_timer(T0 + 299.9)
    assert sent(client) == [] and client.get_timer() == T0 + 300.0


def test_granted_expiry_comes_from_our_contact_among_others() -> None:
    client, registrar = make_client(), Registrar()
    client.start(T0)
    client.receive_response(registrar.challenge(only(client), T0), T0)
    request = only(client)
    # another device's binding first; ours with URI parameters added by the registrar
    response = reply(
        request,
        200,
        ("Contact", "<sip:edge@203.0.113.9:5060>;expires=3000"),
        ("Contact", '<sip:edge@192.0.2.1;ob>;expires=120;received="sip:192.0.2.1:5060"'),
        ("Expires", "3600"),
    )
    client.receive_response(response, T0)
    assert client.status().expires == 120


def test_granted_expiry_falls_back_to_expires_header_then_to_the_request() -> None:
    registrar = Registrar()
    for headers, expected in (([("Expires", "1200")], 1200), ([], 3600)):
        client = make_client()
        client.start(T0)
        client.receive_response(registrar.challenge(only(client), T0), T0)
        client.receive_response(reply(only(client), 200, *headers), T0)
        assert client.status().expires == expected


def test_a_200_that_does_not_list_our_contact_is_a_failure() -> None:
    client = make_client()
    client.start(T0)
    request = only(client)
    client.receive_response(reply(request, 200, ("Contact", "<sip:other@203.0.113.9>;expires=60")), T0)
    assert client.state is RegistrationState.FAILED
    assert client.get_timer() == T0 + 30.0


def test_a_200_granting_zero_seconds_is_a_failure() -> None:
    client = make_client()
    client.start(T0)
    client.receive_response(granted(only(client), 0), T0)
    assert client.state is RegistrationState.FAILED


# ---- failures and backoff ---------------------------------------------------------------------------


def fail_by_timeout(client: RegistrationClient, now: float) -> None:
    client.request_failed(only(client), "no final response (Timer F)", now)


def test_timeouts_back_off_exponentially_up_to_the_cap() -> None:
    client = make_client(retry_base=30.0, retry_max=300.0)
    client.start(T0)
    now = T0
    delays = []
    for _ in range(7):
        fail_by_timeout(client, now)
        assert client.state is RegistrationState.RETRYING
        deadline = client.get_timer()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        client.handle_timer(now)
    assert delays == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0]
    assert client.stats.failures == 7 and client.status().consecutive_failures == 7


def test_jitter_waits_between_half_and_all_of_the_backoff() -> None:
    client = make_client(fraction=0.0)
    client.start(T0)
    fail_by_timeout(client, T0)
    assert client.get_timer() == T0 + 15.0


def test_success_resets_the_backoff() -> None:
    client, registrar = make_client(expires=600), Registrar()
    client.start(T0)
    fail_by_timeout(client, T0)
    client.handle_timer(T0 + 30)
    fail_by_timeout(client, T0 + 30)
    assert client.get_timer() == T0 + 90
    client.handle_timer(T0 + 90)
    client.receive_response(registrar.challenge(only(client), T0 + 90), T0 + 90)
    client.receive_response(granted(only(client)), T0 + 90)
    assert client.status().consecutive_failures == 0
    refresh_at = client.get_timer()
    assert refresh_at is not None
    client.handle_timer(refresh_at)
    fail_by_timeout(client, refresh_at)
    assert client.get_timer() == refresh_at + 30.0


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (408, RegistrationState.RETRYING),
        (480, RegistrationState.RETRYING),
        (500, RegistrationState.RETRYING),
        (503, RegistrationState.RETRYING),
        (302, RegistrationState.FAILED),
        (403, RegistrationState.FAILED),
        (404, RegistrationState.FAILED),
        (489, RegistrationState.FAILED),
        (603, RegistrationState.FAILED),
    ],
)
def test_final_failures_are_retried_and_classified(code: int, state: RegistrationState) -> None:
    client = make_client()
    client.start(T0)
    client.receive_response(reply(only(client), code), T0)
    assert client.state is state
    assert client.status().last_status == code
    assert client.get_timer() == T0 + 30.0
    client.handle_timer(T0 + 30.0)
    assert len(sent(client)) == 1


def test_retry_after_lengthens_the_wait_but_not_beyond_the_cap() -> None:
    client = make_client(retry_max=600.0)
    client.start(T0)
    client.receive_response(reply(only(client), 503, ("Retry-After", "120 (maintenance);duration=60")), T0)
    assert client.get_timer() == T0 + 120.0
    client.handle_timer(T0 + 120.0)
    client.receive_response(reply(only(client), 503, ("Retry-After", "86400")), T0 + 120.0)
    assert client.get_timer() == T0 + 120.0 + 600.0


def test_a_failed_refresh_keeps_the_binding_end_and_retries() -> None:
    client, registrar = make_client(expires=600), Registrar()
    register(client, registrar, T0)
    refresh_at = client.get_timer()
    assert refresh_at == T0 + 300.0
    client.handle_timer(refresh_at)
    assert client.state is RegistrationState.REGISTERED  # still bound while the refresh is in flight
    fail_by_timeout(client, refresh_at + 32)
    assert client.state is RegistrationState.RETRYING
    assert client.status().expires_at == T0 + 600
    client.handle_timer(refresh_at + 62)
    client.receive_response(granted(only(client)), refresh_at + 62)
    assert client.state is RegistrationState.REGISTERED


def test_transport_error_on_a_timer_never_leaves_the_client_stuck() -> None:
    client = make_client()
    client.start(T0)
    client.request_failed(only(client), "connect failed", T0)
    assert client.get_timer() is not None


# ---- answers that are not ours ----------------------------------------------------------------------


def test_responses_to_other_requests_are_counted_and_dropped() -> None:
    client = make_client()
    client.start(T0)
    request = only(client)
    other_cseq = reply(request, 200)
    other_cseq.headers.set("CSeq", "7 REGISTER")
    other_call = reply(request, 200)
    other_call.headers.set("Call-ID", "someone-else")
    other_method = reply(request, 200)
    other_method.headers.set("CSeq", "1 OPTIONS")
    broken = reply(request, 200)
    broken.headers.set("CSeq", "not a cseq")
    for response in (other_cseq, other_call, other_method, broken):
        client.receive_response(response, T0)
    assert client.stats.stray_responses == 4
    assert client.state is RegistrationState.REGISTERING and sent(client) == []
    client.receive_response(reply(request, 100), T0)  # provisional: ignored, not stray
    assert client.stats.stray_responses == 4
    client.request_failed(other_cseq_request(request), "late", T0)
    assert client.state is RegistrationState.REGISTERING


def other_cseq_request(request: Request) -> Request:
    copy = parse_message(serialize(request))
    assert isinstance(copy, Request)
    copy.headers.set("CSeq", "99 REGISTER")
    return copy


def test_a_late_answer_to_a_superseded_request_changes_nothing() -> None:
    client, registrar = make_client(), Registrar()
    client.start(T0)
    first = only(client)
    client.receive_response(registrar.challenge(first, T0), T0)
    second = only(client)
    client.receive_response(reply(first, 403), T0)  # first's transaction is long gone
    assert client.stats.stray_responses == 1
    client.receive_response(granted(second), T0)
    assert client.state is RegistrationState.REGISTERED


# ---- unregister -------------------------------------------------------------------------------------


def test_unregister_sends_expires_zero_with_credentials_and_stops() -> None:
    client, registrar = make_client(), Registrar()
    register(client, registrar, T0)
    client.unregister(T0 + 10)
    request = only(client)
    assert request.headers["Expires"] == "0" and request.headers["Contact"] == CONTACT
    assert registrar.verify(request, T0 + 10)
    assert client.state is RegistrationState.UNREGISTERING and client.get_timer() is None
    client.receive_response(reply(request, 200), T0 + 10)
    assert client.state is RegistrationState.STOPPED
    assert client.get_timer() is None and client.status().expires_at is None
    assert client.stats.unregistrations == 1
    client.unregister(T0 + 11)  # idempotent
    assert sent(client) == []


def test_unregister_answers_a_challenge_then_stops() -> None:
    client, registrar = make_client(), Registrar()
    register(client, registrar, T0)
    client.unregister(T0 + 10)
    client.receive_response(registrar.challenge(only(client), T0 + 10, stale=True), T0 + 10)
    again = only(client)
    assert again.headers["Expires"] == "0"
    client.receive_response(reply(again, 200), T0 + 10)
    assert client.state is RegistrationState.STOPPED and client.stats.unregistrations == 1


@pytest.mark.parametrize("outcome", ["timeout", "403", "401-rejected"])
def test_unregister_stops_whatever_the_registrar_says(outcome: str) -> None:
    client, registrar = make_client(), Registrar()
    register(client, registrar, T0)
    client.unregister(T0 + 10)
    request = only(client)
    if outcome == "timeout":
        client.request_failed(request, "no final response (Timer F)", T0 + 42)
    elif outcome == "403":
        client.receive_response(reply(request, 403), T0 + 10)
    else:
        client.receive_response(registrar.challenge(request, T0 + 10), T0 + 10)
        again = only(client)
        client.receive_response(registrar.challenge(again, T0 + 10), T0 + 10)
    assert client.state is RegistrationState.STOPPED and client.get_timer() is None
    assert sent(client) == [] and client.stats.unregistrations == 0


def test_unregister_without_any_binding_sends_nothing() -> None:
    client = make_client()
    client.unregister(T0)  # never started
    assert client.state is RegistrationState.STOPPED and sent(client) == []
    client = make_client()
    client.start(T0)
    client.receive_response(reply(only(client), 403), T0)
    client.unregister(T0 + 1)  # only refusals: nothing can be bound
    assert client.state is RegistrationState.STOPPED and sent(client) == []


def test_unregister_after_a_lost_answer_removes_what_may_be_bound() -> None:
    client = make_client()
    client.start(T0)
    fail_by_timeout(client, T0 + 32)
    client.unregister(T0 + 40)
    assert only(client).headers["Expires"] == "0"


def test_unregister_while_a_register_is_in_flight_supersedes_it() -> None:
    client = make_client()
    client.start(T0)
    first = only(client)
    client.unregister(T0 + 1)
    unregister = only(client)
    assert cseq_of(unregister).sequence == cseq_of(first).sequence + 1
    client.receive_response(granted(first), T0 + 1)  # the old answer arrives late: ignored
    assert client.state is RegistrationState.UNREGISTERING
    client.receive_response(reply(unregister, 200), T0 + 1)
    assert client.state is RegistrationState.STOPPED


# ---- status, config ---------------------------------------------------------------------------------


def test_status_as_dict_reports_times_relative_to_now() -> None:
    client, registrar = make_client(expires=600), Registrar()
    register(client, registrar, T0)
    assert client.status().as_dict(T0 + 100) == {
        "name": "carrier",
        "state": "registered",
        "aor": "sip:edge@carrier.example",
        "registrar": "sip:carrier.example",
        "last_status": 200,
        "last_reason": "registered for 600 s",
        "expires": 600,
        "expires_in": 500.0,
        "next_attempt_in": 200.0,
        "consecutive_failures": 0,
    }


def test_every_state_change_is_announced() -> None:
    client, registrar = make_client(), Registrar()
    client.start(T0)
    states = []

    def drain() -> list[SendRegister]:
        requests = []
        while (action := client.next_action()) is not None:
            if isinstance(action, StatusChanged):
                states.append(action.status.state)
            else:
                assert isinstance(action, SendRegister)
                requests.append(action)
        return requests

    first = drain()[0].request
    client.receive_response(registrar.challenge(first, T0), T0)
    client.receive_response(granted(drain()[0].request), T0)
    client.unregister(T0)
    client.receive_response(reply(drain()[0].request, 200), T0)
    drain()
    assert states == [
        RegistrationState.REGISTERING,
        RegistrationState.REGISTERED,
        RegistrationState.UNREGISTERING,
        RegistrationState.STOPPED,
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"username": "edge", "password": None}, "both username and password"),
        ({"expires": 0}, "expires must be at least 1"),
        ({"retry_base": 0.0}, "retry_base"),
        ({"retry_base": 60.0, "retry_max": 30.0}, "retry_base <= retry_max"),
        ({"refresh_margin": -1.0}, "refresh_margin"),
        ({"aor": "edge at carrier"}, "aor"),
        ({"contact": "<sip:edge@"}, "contact"),
        ({"name": ""}, "needs a name"),
    ],
)
def test_config_is_validated(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


# ---- never stuck ------------------------------------------------------------------------------------

CODES = [100, 200, 202, 302, 401, 403, 407, 408, 423, 480, 500, 503, 603]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(CODES), st.none()), min_size=1, max_size=30), st.booleans())
def test_any_sequence_of_answers_leaves_a_request_in_flight_or_a_timer(
    answers: list[int | None], stop_at_end: bool
) -> None:
    """Whatever the registrar says (None: the transaction timed out), the client either waits for an
    answer or has a timer set; after unregister it ends STOPPED once answered."""
    registrars = {401: Registrar(), 407: Registrar(proxy=True)}
    client = make_client(expires=120)
    now = T0
    client.start(now)
    in_flight: Request | None = only(client)
    for code in answers:
        now += 1.0
        if in_flight is None:
            deadline = client.get_timer()
            assert deadline is not None and deadline >= now - 1.0
            now = max(now, deadline)
            client.handle_timer(now)
            in_flight = only(client)
            continue
        if code is None:
            client.request_failed(in_flight, "timeout", now)
        elif code in (401, 407):
            client.receive_response(registrars[code].challenge(in_flight, now), now)
        elif code == 423:
            client.receive_response(reply(in_flight, 423, ("Min-Expires", "3600")), now)
        elif 200 <= code < 300:
            client.receive_response(granted(in_flight), now)
        else:
            client.receive_response(reply(in_flight, code), now)
        following = sent(client)
        assert len(following) <= 1
        if code == 100:
            continue
        in_flight = following[0].request if following else None
        if in_flight is None:
            assert client.get_timer() is not None
    if stop_at_end:
        client.unregister(now)
        following = sent(client)
        if following:
            client.receive_response(reply(following[0].request, 200), now)
        assert client.state is RegistrationState.STOPPED
