"""REGISTER handling (RFC 3261 §10.3) over a :class:`LocationStore` port.

Per request: domain check, Require check, digest authentication (401 / stale re-challenge / 403 when
the To user is not the authenticated user), Contact parsing (``*`` only alone and with Expires: 0),
expiry per contact (param, else header, else default; below min → 423 with Min-Expires; above max →
clamped), then one store step (``LocationStore.apply_register``: Call-ID/CSeq ordering, same Call-ID and
a CSeq not higher → 500, step 7; the contact limits; the write) and a 200 listing every current binding
with its remaining time.

RFC 5626 (basic): a contact carrying ``+sip.instance`` and ``reg-id`` is keyed by those (a ``reg-id``
without ``+sip.instance`` is ignored: RFC 5626 §6 falls back to the RFC 3261 rules), and every binding
remembers in ``received`` the :class:`~storage.ports.TransportAddress` (transport, remote address,
connection id) its REGISTER came over, so later requests to a browser whose contact host is
``*.invalid`` go back over its WebSocket. Path (RFC 3327) values are stored in order. Every binding
carries the ``node_id`` of the edge node that accepted it (only that node holds the connection).

Bindings are :class:`storage.ports.Binding` values kept in a :class:`storage.ports.LocationStore`
(Redis in production, ``storage.memory.hot.MemoryLocationStore`` in tests). The registrar passes its
loose contact comparison (:func:`binding_key`) as ``Binding.binding_key``, so the store identifies
bindings exactly as the registrar does.

The registrar is async only where it awaits its ports; it never reads a clock (``now`` is passed in).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from signaling.flood import FloodGuard
from signaling.sip.digest import AuthOutcome, Credentials, DigestAlgorithm, DigestAuthenticator
from signaling.sip.errors import LocalProtocolError
from signaling.sip.message import (
    URI,
    Request,
    Response,
    build_response,
    parse_cseq,
    parse_uri,
    split_header_values,
)
from storage.ports import (
    Binding,
    BindingLimitExceeded,
    ContactLimitExceeded,
    LocationStore,
    OutOfOrderRegister,
    TransportAddress,
    check_hot_key,
)

__all__ = [
    "CredentialLookup",
    "RegisterResult",
    "Registrar",
    "RegistrarConfig",
    "binding_key",
    "parse_contacts",
    "remaining_seconds",
]

MAX_EXPIRES_VALUE = 2**32 - 1
SUPPORTED_EXTENSIONS = frozenset({"path", "outbound"})
_DIGITS = re.compile(r"^[0-9]{1,20}$")  # longer values are clamped to 2**32-1
_Q_VALUE = re.compile(r"^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$")


def remaining_seconds(binding: Binding, now: float) -> int:
    """Whole seconds the binding has left at ``now`` (what the 200's ``expires`` parameter says)."""
    return max(0, int(binding.expires_at - now + 0.5))


CredentialLookup = Callable[[str, str], Awaitable[Mapping[DigestAlgorithm, str] | None]]
"""``(username, realm) -> {algorithm: HA1}`` or None for an unknown user."""


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    realm: str
    domains: frozenset[str] = frozenset()  # empty: accept any domain
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    max_contacts_per_aor: int = 10
    require_auth: bool = True
    max_pending: int = 1024
    """REGISTERs waiting for the store/credentials at once; beyond it ``overloaded`` (answer 503).
    Sized to about a third of a second of backlog at 3,000 REGISTER/s: well inside T1 (500 ms), so a
    short pile-up while the core is busy drains before UAs retransmit, while a real overload (the store
    gone) is still refused at once instead of piling into store timeouts."""
    overload_retry_after: int = 5


@dataclass(frozen=True, slots=True)
class RegisterResult:
    response: Response
    aor: str | None = None
    bindings: tuple[Binding, ...] = ()
    reason: str = ""
    authenticated_user: str | None = None


# ---- Contact parsing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactValue:
    uri: str
    display_name: str = ""
    params: Mapping[str, str | None] = field(default_factory=dict)


def _split_params(text: str) -> dict[str, str | None]:
    """``;a=1;b="x;y";c`` → dict, names lower-cased, quotes removed; raises ValueError."""
    # Without a quote no ';' can be inside a value: str.split gives the same pieces as the loop.
    pieces = text.split(";") if '"' not in text else _split_outside_quotes(text)
    return _params_from_pieces(pieces)


def _split_outside_quotes(text: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
        if char == ";" and not in_quotes:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if in_quotes:
        raise ValueError("unterminated quoted parameter")
    pieces.append("".join(current))
    return pieces


def _params_from_pieces(pieces: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if pieces[0].strip():
        raise ValueError(f"unexpected text {pieces[0].strip()[:40]!r} before parameters")
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        name = name.strip().lower()
        if not name:
            raise ValueError("empty parameter")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name] = value if sep else None
    return params


def parse_contacts(values: Iterable[str]) -> list[ContactValue] | None:
    """Contact header values → contacts; ``None`` means ``Contact: *``. Raises ValueError."""
    contacts: list[ContactValue] = []
    star = False
    for value in values:
        for item in split_header_values(value):
            if item == "*":
                star = True
                continue
            contacts.append(_parse_contact(item))
    if star:
        if contacts:
            raise ValueError("Contact: * must be the only contact")
        return None
    return contacts


def _parse_contact(item: str) -> ContactValue:
    display_name = ""
    rest = item
    if rest.startswith('"'):
        end = 1
        while end < len(rest) and rest[end] != '"':
            end += 2 if rest[end] == "\\" else 1
        if end >= len(rest):
            raise ValueError("unterminated display name")
        display_name, rest = rest[1:end], rest[end + 1 :].lstrip()
    if "<" in rest:
        opening = rest.index("<")
        closing = rest.find(">", opening)
        if closing < 0:
            raise ValueError("Contact has '<' without '>'")
        display_name = display_name or rest[:opening].strip()
        uri_text, param_text = rest[opening + 1 : closing], rest[closing + 1 :]
    else:
        uri_text, _, param_text = rest.partition(";")
        param_text = ";" + param_text if param_text else ""
    uri_text = uri_text.strip()
    parse_uri(uri_text)  # validates; raises ValueError
    return ContactValue(uri_text, display_name, _split_params(param_text))


def binding_key(contact: str, instance_id: str | None, reg_id: int | None) -> str:
    """Identity of a binding: instance+reg-id (RFC 5626), else the contact URI compared loosely."""
    if instance_id is not None:
        return f"instance:{instance_id}#{reg_id if reg_id is not None else ''}"
    try:
        uri = parse_uri(contact)
    except ValueError:
        return "uri:" + contact
    transport = (uri.parameters.get("transport") or "").lower()
    port = uri.port if uri.port is not None else ""
    return f"uri:{uri.scheme.lower()}:{uri.user or ''}@{uri.host.lower()}:{port};{transport}"


@functools.lru_cache(maxsize=16384)
def _aor_of(to_value: str) -> tuple[str, str, str]:
    """(aor, user, host) of a To header value; raises ValueError. Cached (a phone's To is the same on every
    REGISTER; errors are not cached): sized for the bench's 10,000 users registering in turn."""
    contact = _parse_contact(to_value)
    uri = parse_uri(contact.uri)
    if uri.scheme not in ("sip", "sips") or not uri.user:
        raise ValueError("To is not a sip: address of record with a user part")
    host = uri.host.lower()
    aor = check_hot_key("address of record", f"sip:{uri.user}@{host}")  # the store's key length limit
    return aor, uri.user, host


# ---- the registrar ------------------------------------------------------------------------------


class _Reject(Exception):
    def __init__(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, list(headers)


class Registrar:
    def __init__(
        self,
        store: LocationStore,
        config: RegistrarConfig,
        *,
        authenticator: DigestAuthenticator | None = None,
        credentials: CredentialLookup | None = None,
        flood: FloodGuard | None = None,
        node_id: str,
    ) -> None:
        check_hot_key("node_id", node_id)
        if config.require_auth and (authenticator is None or credentials is None):
            raise ValueError("require_auth needs an authenticator and a credential lookup")
        if not 0 < config.min_expires <= config.default_expires <= config.max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if config.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.store = store
        self.config = config
        self.authenticator = authenticator
        self.credentials = credentials
        self.flood = flood
        self.node_id = node_id
        self._pending = 0
        self.overload_rejections = 0

    @property
    def pending(self) -> int:
        """REGISTERs inside :meth:`handle_register` right now (waiting for the store or credentials)."""
        return self._pending

    @property
    def overloaded(self) -> bool:
        """The backlog is full: answer :meth:`overload_answer` instead of queueing into store timeouts."""
        return self._pending >= self.config.max_pending

    def overload_answer(self, request: Request) -> RegisterResult:
        """503 with Retry-After: refusing at once is cheaper for both sides than answering late."""
        self.overload_rejections += 1
        response = build_response(
            request, 503, headers=[("Retry-After", str(self.config.overload_retry_after))]
        )
        return RegisterResult(response, reason="registrar overloaded")

    def answer_unauthenticated(
        self, request: Request, *, source: TransportAddress, now: float, to_tag: str | None = None
    ) -> RegisterResult | None:
        """The answer to a REGISTER without digest credentials, synchronously: the refusal or the 401
        challenge that :meth:`handle_register` would give (no store, no credential lookup). ``None`` when
        the request carries credentials or auth is off: call :meth:`handle_register`. ``to_tag``: the
        answer's To tag (a stateless answer derives it from the request, RFC 3261 §8.2.7); default
        random."""
        if request.method != "REGISTER":
            raise LocalProtocolError("answer_unauthenticated takes REGISTER requests only")
        if not self.config.require_auth or any(
            value.lstrip()[:6].lower() == "digest" for value in request.headers.getlist("Authorization")
        ):
            return None
        assert self.authenticator is not None
        try:
            self._check_addressing(request)
        except _Reject as reject:
            return self._refusal(request, reject, to_tag)
        challenge = self.authenticator.challenge_headers(now)
        response = build_response(request, 401, headers=challenge, to_tag=to_tag)
        return RegisterResult(response, reason="credentials required")

    async def handle_register(
        self, request: Request, *, source: TransportAddress, now: float
    ) -> RegisterResult:
        """Answer one REGISTER that arrived from ``source`` (stored as the bindings' ``received``)."""
        if request.method != "REGISTER":
            raise LocalProtocolError("handle_register takes REGISTER requests only")
        self._pending += 1
        try:
            return await self._handle(request, source, now)
        except _Reject as reject:
            return self._refusal(request, reject)
        finally:
            self._pending -= 1

    @staticmethod
    def _refusal(request: Request, reject: _Reject, to_tag: str | None = None) -> RegisterResult:
        response = build_response(request, reject.status, headers=reject.headers, to_tag=to_tag)
        return RegisterResult(response, reason=reject.reason)

    def _check_addressing(self, request: Request) -> tuple[str, str]:
        """Request-URI domain, Require, To: ``(aor, to_user)`` or a ``_Reject``."""
        config = self.config
        headers = request.headers
        if config.domains and request.uri.host.lower() not in config.domains:
            raise _Reject(404, "domain not served here")
        unsupported = [
            option
            for value in headers.getlist("Require")
            for option in split_header_values(value)
            if option.lower() not in SUPPORTED_EXTENSIONS
        ]
        if unsupported:
            raise _Reject(420, "unsupported extension", [("Unsupported", ", ".join(unsupported))])
        try:
            aor, to_user, to_host = _aor_of(headers["To"])
        except ValueError as exc:
            raise _Reject(404, f"To is not a valid address of record: {exc}") from None
        if config.domains and to_host not in config.domains:
            raise _Reject(404, "address of record is not in a domain served here")
        return aor, to_user

    async def _handle(self, request: Request, source: TransportAddress, now: float) -> RegisterResult:
        config = self.config
        headers = request.headers
        aor, to_user = self._check_addressing(request)
        cseq = parse_cseq(headers["CSeq"]).sequence  # the endpoint has checked it
        user = await self._authenticate(request, source, now) if config.require_auth else None
        if user is not None and user != to_user:
            raise _Reject(403, "authenticated user may not register this address of record")

        try:
            contacts = parse_contacts(headers.getlist("Contact"))
        except ValueError as exc:
            raise _Reject(400, f"bad Contact: {exc}") from None
        default_expires = self._header_expires(request)

        if contacts is None:
            if default_expires != 0:
                raise _Reject(400, "Contact: * requires Expires: 0")
            await self._apply(request, cseq, aor, [], [], now, remove_all=True)
            return self._ok(request, aor, [], user, "all bindings removed", now)

        if not contacts:
            current = await self.store.lookup(aor, now)
            return self._ok(request, aor, current, user, "bindings queried", now)

        upserts, removals = self._changes(aor, contacts, default_expires, request, cseq, source, now)
        resulting = await self._apply(request, cseq, aor, upserts, removals, now)
        return self._ok(request, aor, resulting, user, "bindings updated", now)

    async def _apply(
        self,
        request: Request,
        cseq: int,
        aor: str,
        upserts: Sequence[Binding],
        removals: Sequence[str],
        now: float,
        *,
        remove_all: bool = False,
    ) -> list[Binding]:
        """The store checks and writes in one step (one Redis round trip), see ``apply_register``."""
        limit = self.config.max_contacts_per_aor
        try:
            return await self.store.apply_register(
                aor,
                upserts,
                removals,
                now,
                call_id=request.headers["Call-ID"],
                cseq=cseq,
                max_bindings=limit,
                remove_all=remove_all,
            )
        except OutOfOrderRegister:
            raise _Reject(500, "CSeq is not higher than the binding's (out of order REGISTER)") from None
        except ContactLimitExceeded:
            raise _Reject(403, f"more than {limit} contacts for one address of record") from None
        except BindingLimitExceeded as exc:
            # The store's own cap (shared by every node) can be lower than max_contacts_per_aor.
            raise _Reject(403, f"location store refused the bindings: {exc}") from None

    # -- steps --------------------------------------------------------------------------------

    async def _authenticate(self, request: Request, source: TransportAddress, now: float) -> str:
        assert self.authenticator is not None and self.credentials is not None
        authenticator = self.authenticator
        credentials = self._credentials_for_realm(request)
        if credentials is None:
            raise _Reject(401, "credentials required", authenticator.challenge_headers(now))
        flood = self.flood
        if flood is not None and flood.auth_blocked(credentials.username, source.host, now):
            raise _Reject(403, "too many failed authentication attempts")
        request_uri = str(request.uri)
        if credentials.uri != request_uri and _same_uri(credentials.uri, request.uri):
            # message.py keeps the parsed Request-URI only; accept the client's spelling of it.
            request_uri = credentials.uri
        stored = await self.credentials(credentials.username, authenticator.realm)
        ha1_value = stored.get(credentials.algorithm) if stored else None
        result = authenticator.verify(
            credentials, method=request.method, request_uri=request_uri, ha1_value=ha1_value, now=now
        )
        if result.outcome is AuthOutcome.OK:
            if flood is not None:
                flood.record_auth_success(credentials.username, now)
            return credentials.username
        if result.outcome is AuthOutcome.BAD_REQUEST:
            raise _Reject(400, result.reason)
        if result.outcome is AuthOutcome.INVALID and flood is not None:
            flood.record_auth_failure(credentials.username, source.host, now)
        stale = result.outcome.rechallenge_stale
        raise _Reject(401, result.reason, authenticator.challenge_headers(now, stale=stale))

    def _credentials_for_realm(self, request: Request) -> Credentials | None:
        assert self.authenticator is not None
        for value in request.headers.getlist("Authorization"):
            if not value.lstrip().lower().startswith("digest"):
                continue
            try:
                credentials = Credentials.parse(value)
            except ValueError as exc:
                raise _Reject(400, f"bad Authorization: {exc}") from None
            if credentials.realm == self.authenticator.realm:
                return credentials
        return None

    def _header_expires(self, request: Request) -> int:
        raw = request.headers.get("Expires")
        if raw is None:
            return self.config.default_expires
        if not _DIGITS.match(raw.strip()):
            raise _Reject(400, "Expires is not a number of seconds")
        return min(int(raw.strip()), MAX_EXPIRES_VALUE)

    def _changes(
        self,
        aor: str,
        contacts: Sequence[ContactValue],
        default_expires: int,
        request: Request,
        cseq: int,
        source: TransportAddress,
        now: float,
    ) -> tuple[list[Binding], list[str]]:
        config = self.config
        upserts: list[Binding] = []
        removals: list[str] = []
        too_brief = False
        headers = request.headers
        path = tuple(item for value in headers.getlist("Path") for item in split_header_values(value))
        call_id = headers["Call-ID"]
        user_agent = headers.get("User-Agent")
        for contact in contacts:
            expires = default_expires
            raw_expires = contact.params.get("expires")
            if raw_expires is not None:
                if not _DIGITS.match(raw_expires):
                    raise _Reject(400, "Contact expires parameter is not a number")
                expires = min(int(raw_expires), MAX_EXPIRES_VALUE)
            q = self._q_value(contact)
            reg_id = self._reg_id(contact)
            instance_id = contact.params.get("+sip.instance")
            if instance_id is None:
                reg_id = None  # RFC 5626 §6: without an instance the RFC 3261 rules apply
            if expires == 0:
                removals.append(binding_key(contact.uri, instance_id, reg_id))
                continue
            if expires < config.min_expires:
                too_brief = True
                continue
            expires = min(expires, config.max_expires)
            try:
                binding = Binding(
                    aor=aor,
                    contact_uri=contact.uri,
                    expires_at=now + expires,
                    q=q,
                    call_id=call_id,
                    cseq=cseq,
                    instance_id=instance_id,
                    reg_id=reg_id,
                    path=path,
                    received=source,
                    user_agent=user_agent,
                    node_id=self.node_id,
                    updated_at=now,
                    binding_key=binding_key(contact.uri, instance_id, reg_id),
                )
            except ValueError as exc:  # e.g. a contact URI longer than the store accepts
                raise _Reject(400, f"bad Contact: {exc}") from None
            upserts.append(binding)
        if too_brief:
            raise _Reject(423, "expiration too brief", [("Min-Expires", str(config.min_expires))])
        return upserts, removals

    @staticmethod
    def _q_value(contact: ContactValue) -> float | None:
        raw = contact.params.get("q")
        if raw is None:
            return None
        if not _Q_VALUE.match(raw):
            raise _Reject(400, "Contact q parameter is not in 0..1")
        return float(raw)

    @staticmethod
    def _reg_id(contact: ContactValue) -> int | None:
        raw = contact.params.get("reg-id")
        if raw is None:
            return None
        if not _DIGITS.match(raw):
            raise _Reject(400, "Contact reg-id parameter is not a number")
        return int(raw)

    def _ok(
        self,
        request: Request,
        aor: str,
        bindings: Sequence[Binding],
        user: str | None,
        reason: str,
        now: float,
    ) -> RegisterResult:
        ordered = tuple(sorted(bindings, key=lambda b: (-(b.q if b.q is not None else 1.0), b.updated_at)))
        headers: list[tuple[str, str]] = []
        for binding in ordered:
            value = f"<{binding.contact_uri}>;expires={remaining_seconds(binding, now)}"
            if binding.q is not None:
                value += f";q={binding.q:g}"
            if binding.instance_id is not None:
                value += f';+sip.instance="{binding.instance_id}"'
            if binding.reg_id is not None:
                value += f";reg-id={binding.reg_id}"
            headers.append(("Contact", value))
        if request.headers.getlist("Path"):
            headers.extend(("Path", value) for value in request.headers.getlist("Path"))
        if any(b.reg_id is not None and b.updated_at == now for b in ordered):
            headers.append(("Require", "outbound"))
        response = build_response(request, 200, headers=headers)
        return RegisterResult(response, aor, ordered, reason, user)


def _same_uri(text: str, uri: URI) -> bool:
    try:
        return parse_uri(text) == uri
    except ValueError:
        return False
