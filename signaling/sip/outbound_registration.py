"""Outbound registration (RFC 3261 §10.2): keep this node's binding at a trunk's registrar (sans-IO).

    client = RegistrationClient(config)
    client.start(now)
    while (action := client.next_action()) is not None:
        ...  # SendRegister: send action.request to action.destination in a client transaction, then
             #   client.receive_response(response, now) or client.request_failed(action.request, why, now)
             # StatusChanged: a new state to log
    deadline = client.get_timer(); ...; client.handle_timer(deadline)
    client.unregister(now)   # shutdown: REGISTER with Expires: 0, then STOPPED

One client per trunk. It never reads a clock (``now`` comes in, any monotonic clock) and never touches
sockets; the transaction layer retransmits and times out, this class decides what to send next:

* REGISTER with To/From = the AOR, our Contact, ``Expires``; one Call-ID per client and an increasing
  CSeq (§10.2.4), so a registrar orders our requests.
* 401/407: answered with digest credentials (``signaling.sip.digest``); the challenge is kept and
  reused with an increasing nonce-count for later refreshes (RFC 7616 §3.4.5). A second challenge
  in one attempt that is not ``stale=true`` means the credentials were rejected.
* 423 Interval Too Brief: re-sent at once with the registrar's ``Min-Expires``, kept for refreshes.
* 2xx: the granted expiry is our Contact's ``expires`` parameter (else ``Expires``, else what we asked);
  the refresh is due at half of it or ``refresh_margin`` seconds before the end, whichever is later.
* Failures wait a capped exponential backoff with jitter (RFC 5626 §4.5: 50-100 % of
  ``min(retry_max, retry_base * 2**(n-1))``), longer if the registrar sent ``Retry-After``.
  Timeouts, transport errors, 408, 480 and 5xx are ``RETRYING``; other refusals are ``FAILED``
  (credentials or configuration must change) but are retried on the same schedule.
* :meth:`unregister` removes the binding (``Expires: 0``) and ends in ``STOPPED``, whatever the answer.

A response is only taken for the request in flight (same Call-ID and CSeq); others are counted and
dropped, so a late answer to a superseded request changes nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import random
import re
from collections.abc import Callable

from sipmessage import Address

from signaling.sip.dialog import LocalAddress
from signaling.sip.digest import Challenge, build_authorization
from signaling.sip.errors import LocalProtocolError
from signaling.sip.message import (
    URI,
    Request,
    Response,
    build_request,
    cseq_of,
    new_call_id,
    split_header_values,
)
from signaling.sip.routing import TransportAddress

__all__ = [
    "RegistrationAction",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationState",
    "RegistrationStats",
    "RegistrationStatus",
    "SendRegister",
    "StatusChanged",
]

MAX_CHALLENGES_PER_ATTEMPT = 3
MAX_INTERVAL_TOO_BRIEF_PER_ATTEMPT = 2
MIN_REFRESH_DELAY = 1.0
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")
_TRANSIENT_STATUSES = frozenset((408, 480))


class RegistrationState(enum.Enum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is in flight and no binding is known
    REGISTERED = "registered"  # the registrar granted the binding (a refresh may be in flight)
    RETRYING = "retrying"  # the last attempt failed for a reason that may go away by itself
    FAILED = "failed"  # the registrar refused: credentials or configuration must change (still retried)
    UNREGISTERING = "unregistering"  # REGISTER with Expires: 0 in flight
    STOPPED = "stopped"  # unregistered (or never registered) and done


_WAITING_STATES = frozenset(
    (RegistrationState.REGISTERED, RegistrationState.RETRYING, RegistrationState.FAILED)
)


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """One binding to keep. ``registrar_uri`` is the REGISTER Request-URI (``sip:domain``); ``aor`` goes
    in To and From; ``contact`` is our Contact header value; ``destination`` the next hop; ``local`` our
    Via. Durations in seconds."""

    name: str
    registrar_uri: str
    aor: str
    contact: str
    destination: TransportAddress
    local: LocalAddress
    username: str | None = None
    password: str | None = None
    expires: int = 3600
    refresh_margin: float = 300.0
    retry_base: float = 30.0
    retry_max: float = 1800.0
    user_agent: str | None = "uc-edge"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a registration needs a name")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"registration {self.name}: give both username and password, or neither")
        if self.expires < 1:
            raise ValueError(f"registration {self.name}: expires must be at least 1 second")
        if self.refresh_margin < 0:
            raise ValueError(f"registration {self.name}: refresh_margin must not be negative")
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError(f"registration {self.name}: need 0 < retry_base <= retry_max")
        for field_name in ("registrar_uri", "aor"):
            try:
                URI.parse(getattr(self, field_name))
            except ValueError:
                raise ValueError(
                    f"registration {self.name}: {field_name} {getattr(self, field_name)!r} is not a SIP URI"
                ) from None
        try:
            Address.parse(self.contact)
        except ValueError:
            raise ValueError(
                f"registration {self.name}: contact {self.contact!r} is not a Contact value"
            ) from None


class RegistrationAction:
    """Marker base class of what the client asks its shell to do."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SendRegister(RegistrationAction):
    """Send ``request`` to ``destination`` in a new client transaction; report its outcome back."""

    request: Request
    destination: TransportAddress


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """What the client knows, for logs, metrics and the node API. Times are on the caller's clock."""

    name: str
    state: RegistrationState
    aor: str
    registrar: str
    last_status: int | None
    last_reason: str
    expires: int | None  # granted by the registrar
    expires_at: float | None  # when the binding ends unless refreshed
    next_attempt_at: float | None  # refresh or retry
    consecutive_failures: int

    def as_dict(self, now: float) -> dict[str, object]:
        """JSON-friendly, with times relative to ``now``."""

        def seconds_from_now(when: float | None) -> float | None:
            return None if when is None else round(max(0.0, when - now), 1)

        return {
            "name": self.name,
            "state": self.state.value,
            "aor": self.aor,
            "registrar": self.registrar,
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "expires": self.expires,
            "expires_in": seconds_from_now(self.expires_at),
            "next_attempt_in": seconds_from_now(self.next_attempt_at),
            "consecutive_failures": self.consecutive_failures,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class StatusChanged(RegistrationAction):
    """The state or the outcome of an attempt changed (log it)."""

    status: RegistrationStatus


@dataclasses.dataclass(slots=True)
class RegistrationStats:
    """Monotonic counters for metrics export."""

    attempts: int = 0  # registrations or refreshes started (not counting auth / 423 re-sends)
    requests_sent: int = 0
    registrations: int = 0  # 2xx granting a binding
    failures: int = 0  # attempts that ended without a binding
    challenges_answered: int = 0
    interval_too_brief: int = 0
    unregistrations: int = 0
    stray_responses: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class _InFlight:
    cseq: int
    expires: int


class RegistrationClient:
    """Keeps one binding alive (see module docstring)."""

    def __init__(
        self,
        config: RegistrationConfig,
        *,
        random_fraction: Callable[[], float] = random.random,
        new_token: Callable[[], str] = lambda: os.urandom(8).hex(),
    ) -> None:
        self.config = config
        self.stats = RegistrationStats()
        self._random = random_fraction
        self._new_token = new_token
        self._state = RegistrationState.IDLE
        self._actions: collections.deque[RegistrationAction] = collections.deque()
        self._call_id = new_call_id(config.local.host)
        self._cseq = 0
        self._contact_uri = Address.parse(config.contact).uri
        self._expires = config.expires  # raised by 423 Min-Expires
        self._in_flight: _InFlight | None = None
        # header name -> (challenge, last nonce-count used with it)
        self._challenges: dict[str, tuple[Challenge, int]] = {}
        self._attempt_challenges = 0
        self._attempt_answered_fresh = False
        self._attempt_too_brief = 0
        self._may_be_bound = False
        self._last_status: int | None = None
        self._last_reason = ""
        self._granted: int | None = None
        self._expires_at: float | None = None
        self._next_attempt_at: float | None = None
        self._consecutive_failures = 0

    # ------------------------------------------------------------------ public surface

    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def expires(self) -> int:
        """What the next REGISTER asks for (the configured value, or the registrar's Min-Expires)."""
        return self._expires

    def status(self) -> RegistrationStatus:
        return RegistrationStatus(
            name=self.config.name,
            state=self._state,
            aor=self.config.aor,
            registrar=self.config.registrar_uri,
            last_status=self._last_status,
            last_reason=self._last_reason,
            expires=self._granted,
            expires_at=self._expires_at,
            next_attempt_at=self.get_timer(),
            consecutive_failures=self._consecutive_failures,
        )

    def next_action(self) -> RegistrationAction | None:
        return self._actions.popleft() if self._actions else None

    def get_timer(self) -> float | None:
        if self._in_flight is not None:
            return None
        return self._next_attempt_at if self._state in _WAITING_STATES else None

    def handle_timer(self, now: float) -> None:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        self._begin_attempt(now)

    def start(self, now: float) -> None:
        if self._state is not RegistrationState.IDLE:
            raise LocalProtocolError(f"registration {self.config.name} already started ({self._state.value})")
        self._begin_attempt(now)

    def unregister(self, now: float) -> None:
        """Remove our binding (Expires: 0); ``STOPPED`` at once when none can exist."""
        if self._state in (RegistrationState.UNREGISTERING, RegistrationState.STOPPED):
            return
        self._next_attempt_at = None
        if not self._may_be_bound and self._in_flight is None:
            self._stop(now, self._last_status, "stopped")
            return
        self._state = RegistrationState.UNREGISTERING
        self._reset_attempt()
        self._send(0, now)
        self._changed()

    def receive_response(self, response: Response, now: float) -> None:
        """A response to a REGISTER we sent (provisional ones are ignored)."""
        if response.code < 200:
            return
        in_flight = self._in_flight
        if in_flight is None or not self._answers(response, in_flight.cseq):
            self.stats.stray_responses += 1
            return
        self._in_flight = None
        code = response.code
        if code in (401, 407):
            self._challenged(response, in_flight, now)
        elif self._state is RegistrationState.UNREGISTERING:
            if 200 <= code < 300:
                self.stats.unregistrations += 1
                self._may_be_bound = False
                self._expires_at = None
                self._granted = None
            self._stop(now, code, response.phrase if code >= 300 else "unregistered")
        elif 200 <= code < 300:
            self._registered(response, in_flight, now)
        elif code == 423:
            self._too_brief(response, in_flight, now)
        else:
            self._failed(now, code, response.phrase or f"status {code}", retry_after=_retry_after(response))

    def request_failed(self, request: Request, reason: str, now: float) -> None:
        """The transaction of ``request`` ended without a final response (timeout, transport error)."""
        in_flight = self._in_flight
        try:
            cseq = cseq_of(request).sequence
        except ValueError:
            return
        if in_flight is None or in_flight.cseq != cseq or request.headers.get("Call-ID") != self._call_id:
            return
        self._in_flight = None
        if self._state is RegistrationState.UNREGISTERING:
            self._stop(now, None, f"unregister failed: {reason}")
            return
        if in_flight.expires > 0:
            self._may_be_bound = True  # the registrar may have bound us and its answer was lost
        self._failed(now, None, reason)

    # ------------------------------------------------------------------ outcomes

    def _registered(self, response: Response, in_flight: _InFlight, now: float) -> None:
        granted = self._granted_expires(response, in_flight.expires)
        if granted is None or granted <= 0:
            self._failed(now, response.code, "the registrar's answer does not list our contact")
            return
        self.stats.registrations += 1
        self._may_be_bound = True
        self._consecutive_failures = 0
        self._granted = granted
        self._expires_at = now + granted
        refresh_after = max(granted / 2, granted - self.config.refresh_margin)
        self._next_attempt_at = now + min(float(granted), max(MIN_REFRESH_DELAY, refresh_after))
        self._state = RegistrationState.REGISTERED
        self._last_status = response.code
        self._last_reason = f"registered for {granted} s"
        self._changed()

    def _challenged(self, response: Response, in_flight: _InFlight, now: float) -> None:
        code = response.code
        unregistering = self._state is RegistrationState.UNREGISTERING

        def give_up(reason: str) -> None:
            self._challenges.clear()
            if unregistering:
                self._stop(now, code, reason)
            else:
                self._failed(now, code, reason)

        config = self.config
        if config.username is None or config.password is None:
            give_up("the registrar asks for credentials and none are configured")
            return
        challenge_header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        challenge = _usable_challenge(response.headers.getlist(challenge_header))
        if challenge is None:
            give_up(f"no usable digest challenge in the {code}")
            return
        if self._attempt_answered_fresh and not challenge.stale:
            give_up("credentials rejected")
            return
        if self._attempt_challenges >= MAX_CHALLENGES_PER_ATTEMPT:
            give_up("too many challenges")
            return
        credentials_header = "Authorization" if code == 401 else "Proxy-Authorization"
        self._challenges[credentials_header] = (challenge, 0)
        self._attempt_challenges += 1
        self._attempt_answered_fresh = True
        self.stats.challenges_answered += 1
        self._send(in_flight.expires, now)

    def _too_brief(self, response: Response, in_flight: _InFlight, now: float) -> None:
        self.stats.interval_too_brief += 1
        raw = (response.headers.get("Min-Expires") or "").strip()
        minimum = int(raw) if _DELTA_SECONDS.fullmatch(raw) else None
        if minimum is None or minimum <= in_flight.expires:
            self._failed(now, 423, "423 without a usable Min-Expires")
            return
        if self._attempt_too_brief >= MAX_INTERVAL_TOO_BRIEF_PER_ATTEMPT:
            self._failed(now, 423, "Min-Expires keeps rising")
            return
        self._attempt_too_brief += 1
        self._expires = minimum
        self._send(minimum, now)

    def _failed(self, now: float, status: int | None, reason: str, *, retry_after: int | None = None) -> None:
        self.stats.failures += 1
        self._consecutive_failures += 1
        ceiling = min(self.config.retry_max, self.config.retry_base * 2 ** (self._consecutive_failures - 1))
        delay = ceiling * (0.5 + 0.5 * self._random())
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.config.retry_max))
        self._next_attempt_at = now + delay
        transient = status is None or 500 <= status < 600 or status in _TRANSIENT_STATUSES
        self._state = RegistrationState.RETRYING if transient else RegistrationState.FAILED
        self._last_status = status
        self._last_reason = reason
        self._changed()

    def _stop(self, now: float, status: int | None, reason: str) -> None:
        self._state = RegistrationState.STOPPED
        self._next_attempt_at = None
        self._last_status = status
        self._last_reason = reason
        self._changed()

    # ------------------------------------------------------------------ requests

    def _begin_attempt(self, now: float) -> None:
        self.stats.attempts += 1
        self._reset_attempt()
        if self._state is not RegistrationState.REGISTERED:
            self._state = RegistrationState.REGISTERING
        self._send(self._expires, now)
        self._changed()

    def _reset_attempt(self) -> None:
        self._attempt_challenges = 0
        self._attempt_answered_fresh = False
        self._attempt_too_brief = 0

    def _send(self, expires: int, now: float) -> None:
        config = self.config
        self._cseq += 1
        headers = [("Expires", str(expires))]
        if config.user_agent:
            headers.append(("User-Agent", config.user_agent))
        headers += self._credentials()
        request = build_request(
            "REGISTER",
            config.registrar_uri,
            from_uri=f"<{config.aor}>",
            to_uri=f"<{config.aor}>",
            via_host=config.local.host,
            via_port=config.local.port,
            via_transport=config.local.transport.upper(),
            call_id=self._call_id,
            cseq=self._cseq,
            contact=config.contact,
            headers=headers,
        )
        self._in_flight = _InFlight(self._cseq, expires)
        self.stats.requests_sent += 1
        self._actions.append(SendRegister(request, config.destination))

    def _credentials(self) -> list[tuple[str, str]]:
        config = self.config
        if config.username is None or config.password is None:
            return []
        headers = []
        for header, (challenge, nc) in list(self._challenges.items()):
            try:
                credentials = build_authorization(
                    challenge,
                    username=config.username,
                    method="REGISTER",
                    uri=config.registrar_uri,
                    cnonce=self._new_token(),
                    nc=nc + 1,
                    password=config.password,
                )
            except ValueError:
                del self._challenges[header]
                continue
            self._challenges[header] = (challenge, nc + 1)
            headers.append((header, credentials.header_value()))
        return headers

    # ------------------------------------------------------------------ reading responses

    def _answers(self, response: Response, cseq: int) -> bool:
        try:
            sequence = cseq_of(response)
        except ValueError:
            return False
        return (
            sequence.sequence == cseq
            and sequence.method == "REGISTER"
            and response.headers.get("Call-ID") == self._call_id
        )

    def _granted_expires(self, response: Response, requested: int) -> int | None:
        """Seconds granted to our contact; None when the 200 lists contacts but not ours."""
        header = (response.headers.get("Expires") or "").strip()
        default = int(header) if _DELTA_SECONDS.fullmatch(header) else requested
        listed = False
        for value in response.headers.getlist("Contact"):
            for item in split_header_values(value):
                try:
                    address = Address.parse(item)
                except ValueError:
                    continue
                listed = True
                if not _same_binding(address.uri, self._contact_uri):
                    continue
                raw = (address.parameters.get("expires") or "").strip()
                return int(raw) if _DELTA_SECONDS.fullmatch(raw) else default
        return None if listed else default

    def _changed(self) -> None:
        self._actions.append(StatusChanged(self.status()))


def _usable_challenge(values: list[str]) -> Challenge | None:
    """The first digest challenge we can answer (supported algorithm, qop auth or none)."""
    for value in values:
        try:
            challenge = Challenge.parse(value)
        except ValueError:
            continue
        if not challenge.qop or "auth" in challenge.qop:
            return challenge
    return None


def _retry_after(response: Response) -> int | None:
    raw = (response.headers.get("Retry-After") or "").split(";", 1)[0].split("(", 1)[0].strip()
    return int(raw) if _DELTA_SECONDS.fullmatch(raw) else None


def _same_binding(a: URI, b: URI) -> bool:
    """Same user, host and port (registrars may add or reorder URI parameters)."""

    def port(uri: URI) -> int:
        return uri.port or (5061 if uri.scheme.lower() == "sips" else 5060)

    return (
        a.scheme.lower() == b.scheme.lower()
        and (a.user or "") == (b.user or "")
        and a.host.lower().strip("[]") == b.host.lower().strip("[]")
        and port(a) == port(b)
    )
