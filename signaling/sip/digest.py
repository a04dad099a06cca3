"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616 semantics, RFC 8760 algorithms).

Server side: :class:`DigestAuthenticator` issues challenges and verifies credentials against stored
HA1 values (never plain passwords; see :func:`ha1`). Nonces are stateless -- a timestamp, a salt and
an HMAC under a server secret -- so every node sharing the secret validates them. A bounded
per-nonce record of the highest nonce-count seen rejects replays; when that record must evict, a
watermark makes older unknown nonces stale (re-challenge) instead of silently replayable.

Client side (outbound trunk auth): :meth:`Challenge.parse` and :func:`build_authorization`.

Pure: no clock reads (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAlgorithm",
    "DigestAuthenticator",
    "DigestStats",
    "build_authorization",
    "compute_response",
    "ha1",
    "parse_auth_params",
]

MAX_HEADER_LENGTH = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_NONCE_LAYOUT = struct.Struct(">Q8s16s")  # issue time in ms, salt, truncated HMAC
_NONCE_MAC_INPUT = struct.Struct(">Q8s")  # what the HMAC covers, before the realm
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_NONCE_MARK = "\x00"  # stands for the nonce in the cached challenge text (never in a quoted header value)


class DigestAlgorithm(enum.Enum):
    MD5 = "MD5"
    SHA_256 = "SHA-256"
    SHA_512_256 = "SHA-512-256"

    __hash__ = object.__hash__  # singletons compared by identity; Enum's __hash__ is a Python call

    def hash(self, text: str) -> str:
        data = text.encode("utf-8")
        if self is DigestAlgorithm.MD5:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        if self is DigestAlgorithm.SHA_256:
            return hashlib.sha256(data).hexdigest()
        return hashlib.new("sha512_256", data).hexdigest()

    @property
    def digest_length(self) -> int:
        return 32 if self is DigestAlgorithm.MD5 else 64

    @classmethod
    def parse(cls, token: str) -> DigestAlgorithm:
        algorithm = _ALGORITHMS_BY_NAME.get(token.lower())
        if algorithm is None:
            raise ValueError(f"unsupported digest algorithm {token[:40]!r}")
        return algorithm


_ALGORITHMS_BY_NAME = {algorithm.value.lower(): algorithm for algorithm in DigestAlgorithm}


def ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm = DigestAlgorithm.MD5) -> str:
    """H(username:realm:password): what the credential store keeps per algorithm."""
    return algorithm.hash(f"{username}:{realm}:{password}")


def compute_response(
    ha1_value: str,
    *,
    algorithm: DigestAlgorithm,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: int | None = None,
    cnonce: str | None = None,
) -> str:
    """request-digest of RFC 7616 §3.4.1 (qop=auth) or RFC 2069 (no qop)."""
    ha2 = algorithm.hash(f"{method}:{uri}")
    if qop is None:
        return algorithm.hash(f"{ha1_value}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop requires nc and cnonce")
    return algorithm.hash(f"{ha1_value}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


_TOKEN_CHARS = r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+"
# The common spelling of one parameter (no escapes inside quotes), with the separators before it and a
# comma or the end after it. A token never holds a separator, a quote or '=', so from a given start it
# matches in one way only.
_SIMPLE_PARAM = re.compile(
    rf'([ \t,]*({_TOKEN_CHARS})[ \t]*=[ \t]*(?:"([^"\\]*)"|({_TOKEN_CHARS}))[ \t]*(?:,|\Z))'
)


def _parse_simple_params(text: str, position: int) -> dict[str, str] | None:
    """The parameters when every one has the common form, else None (the general parser decides).

    One findall() pass in C: its matches never overlap and come in order, so when their lengths add up
    to the rest of the text they tile it exactly (trailing separators or anything unusual: None)."""
    params: dict[str, str] = {}
    covered = 0
    for whole, name, quoted, token in _SIMPLE_PARAM.findall(text, position):
        covered += len(whole)
        name = name.lower()
        if name in params:
            return None  # the general parser names the error
        # findall gives "" for a group that did not take part; a token is never empty, so an empty token
        # means the quoted form (possibly "") matched.
        params[name] = token or quoted
    return params if covered == len(text) - position else None


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="quoted"`` into the scheme and lower-cased parameter names."""
    if len(value) > MAX_HEADER_LENGTH:
        raise ValueError(f"authentication header longer than {MAX_HEADER_LENGTH} characters")
    text = value.strip()
    scheme_match = _TOKEN.match(text)
    if scheme_match is not None and text[scheme_match.end() : scheme_match.end() + 1] in (" ", "\t"):
        simple = _parse_simple_params(text, scheme_match.end())
        if simple is not None:
            return scheme_match.group(), simple
    return _parse_auth_params_general(text)


def _parse_auth_params_general(text: str) -> tuple[str, dict[str, str]]:
    scheme_match = _TOKEN.match(text)
    if scheme_match is None:
        raise ValueError("authentication header has no scheme")
    scheme = scheme_match.group()
    position = scheme_match.end()
    if position < len(text) and text[position] not in " \t":
        raise ValueError("authentication scheme must be followed by whitespace")
    params: dict[str, str] = {}
    while True:
        position = _skip(text, position, " \t,")
        if position >= len(text):
            break
        name_match = _TOKEN.match(text, position)
        if name_match is None:
            raise ValueError(f"expected a parameter name at offset {position}")
        name = name_match.group().lower()
        position = _skip(text, name_match.end(), " \t")
        if position >= len(text) or text[position] != "=":
            raise ValueError(f"parameter {name!r} has no value")
        position = _skip(text, position + 1, " \t")
        if position < len(text) and text[position] == '"':
            param_value, position = _quoted_string(text, position)
        else:
            value_match = _TOKEN.match(text, position)
            if value_match is None:
                raise ValueError(f"parameter {name!r} has an invalid value")
            param_value, position = value_match.group(), value_match.end()
        if name in params:
            raise ValueError(f"parameter {name!r} appears twice")
        params[name] = param_value
        position = _skip(text, position, " \t")
        if position < len(text) and text[position] != ",":
            raise ValueError(f"expected ',' after parameter {name!r}")
    return scheme, params


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


def _quoted_string(text: str, position: int) -> tuple[str, int]:
    match = _QUOTED_STRING.match(text, position)
    if match is None:
        raise ValueError("unterminated quoted string")
    value = match.group(1)
    if "\\" in value:
        value = _QUOTED_PAIR.sub(r"\1", value)
    return value, match.end()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _require_digest(value: str) -> dict[str, str]:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise ValueError(f"authentication scheme {scheme[:20]!r} is not Digest")
    return params


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise ValueError(f"digest parameter {name!r} is missing")
    return value


@dataclass(frozen=True, slots=True)
class Challenge:
    """One WWW-Authenticate / Proxy-Authenticate value."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def header_value(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    @classmethod
    def parse(cls, value: str) -> Challenge:
        params = _require_digest(value)
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=_required(params, "realm"),
            nonce=_required(params, "nonce"),
            algorithm=DigestAlgorithm.parse(params.get("algorithm", "MD5")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "false").lower() == "true",
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """One Authorization / Proxy-Authorization value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @classmethod
    def parse(cls, value: str) -> Credentials:
        params = _require_digest(value)
        algorithm = DigestAlgorithm.parse(params.get("algorithm", "MD5"))
        response = _required(params, "response")
        if len(response) != algorithm.digest_length or not _HEX.match(response):
            raise ValueError(f"digest response is not {algorithm.digest_length} hex digits")
        qop = params.get("qop")
        nc: int | None = None
        cnonce = params.get("cnonce")
        if qop is not None:
            qop = qop.lower()
            nc_text = _required(params, "nc")
            if len(nc_text) != 8 or not _HEX.match(nc_text):
                raise ValueError("digest nc must be 8 hex digits")
            nc = int(nc_text, 16)
            if cnonce is None or not cnonce:
                raise ValueError("digest parameter 'cnonce' is missing")
        return cls(
            username=_required(params, "username"),
            realm=_required(params, "realm"),
            nonce=_required(params, "nonce"),
            uri=_required(params, "uri"),
            response=response.lower(),
            algorithm=algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
            userhash=params.get("userhash", "false").lower() == "true",
        )

    def header_value(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc or 0:08x}", f"cnonce={_quote(self.cnonce or '')}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def build_authorization(
    challenge: Challenge,
    *,
    username: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    password: str | None = None,
    ha1_value: str | None = None,
) -> Credentials:
    """Client side: answer ``challenge``. Give either the password or the precomputed HA1."""
    if (password is None) == (ha1_value is None):
        raise ValueError("give exactly one of password and ha1_value")
    if ha1_value is None:
        assert password is not None
        ha1_value = ha1(username, challenge.realm, password, challenge.algorithm)
    if challenge.qop and "auth" not in challenge.qop:
        raise ValueError(f"challenge offers only qop {challenge.qop!r}; auth-int is unsupported")
    qop = "auth" if challenge.qop else None
    response = compute_response(
        ha1_value,
        algorithm=challenge.algorithm,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if qop else None,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if qop else None,
        opaque=challenge.opaque,
    )


class AuthOutcome(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, old nonce: re-challenge with stale=true
    REPLAYED = "replayed"  # nonce-count not above the last one seen: re-challenge with stale=true
    INVALID = "invalid"  # wrong password, unknown user, forged nonce...: fresh challenge
    BAD_REQUEST = "bad_request"  # the uri parameter does not match the Request-URI: 400

    @property
    def rechallenge_stale(self) -> bool:
        return self in (AuthOutcome.STALE, AuthOutcome.REPLAYED)


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


@dataclass(slots=True)
class DigestStats:
    challenges: int = 0
    accepted: int = 0
    stale: int = 0
    replayed: int = 0
    invalid: int = 0
    bad_request: int = 0
    tracked_nonce_evictions: int = 0

    def count(self, outcome: AuthOutcome) -> None:
        if outcome is AuthOutcome.OK:
            self.accepted += 1
            return
        name = _COUNTER_OF[outcome]
        setattr(self, name, getattr(self, name) + 1)


_COUNTER_OF = {
    AuthOutcome.OK: "accepted",
    AuthOutcome.STALE: "stale",
    AuthOutcome.REPLAYED: "replayed",
    AuthOutcome.INVALID: "invalid",
    AuthOutcome.BAD_REQUEST: "bad_request",
}


@dataclass(slots=True)
class _NonceCounts:
    """Highest nonce-count per nonce, least recently used first, bounded."""

    capacity: int
    counts: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)
    # Nonces issued at or before this time may have lost their record: treat unknown ones as stale.
    evicted_up_to: float = float("-inf")


class DigestAuthenticator:
    """Server side of digest auth for one realm."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: Iterable[DigestAlgorithm] = (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5),
        nonce_lifetime: float = 300.0,
        clock_skew: float = 5.0,
        max_tracked_nonces: int = 65536,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the digest nonce secret must be at least 16 bytes")
        self.realm = realm
        self.algorithms = tuple(algorithms)
        if not self.algorithms:
            raise ValueError("at least one digest algorithm is required")
        self.nonce_lifetime = nonce_lifetime
        self.clock_skew = clock_skew
        self.stats = DigestStats()
        self._secret = secret
        self._random_bytes = random_bytes
        self._nonce_counts = _NonceCounts(max_tracked_nonces)
        self._realm_bytes = realm.encode("utf-8")
        opaque_mac = hmac.new(secret, b"opaque\x00" + realm.encode(), hashlib.sha256).digest()
        self.opaque = base64.urlsafe_b64encode(opaque_mac[:12]).decode("ascii")
        # The challenge header text around the nonce, per stale flag: a 401 costs one concatenation per
        # algorithm instead of building and formatting Challenge objects. None when the realm itself holds
        # the marker (the text is then built each time).
        self._challenge_text: dict[bool, list[tuple[str, str]] | None] = {
            stale: self._split_challenge_text(stale) for stale in (False, True)
        }

    def _split_challenge_text(self, stale: bool) -> list[tuple[str, str]] | None:
        pieces: list[tuple[str, str]] = []
        for algorithm in self.algorithms:
            text = Challenge(self.realm, _NONCE_MARK, algorithm, ("auth",), self.opaque, stale).header_value()
            before, mark, after = text.partition(_NONCE_MARK)
            if not mark or _NONCE_MARK in after:
                return None
            pieces.append((before, after))
        return pieces

    # -- challenges -----------------------------------------------------------------------------

    def new_nonce(self, now: float) -> str:
        issued_ms = int(now * 1000)
        salt = self._random_bytes(8)
        mac = self._nonce_mac(issued_ms, salt)
        return base64.urlsafe_b64encode(_NONCE_LAYOUT.pack(issued_ms, salt, mac)).decode("ascii").rstrip("=")

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm (preferred first), sharing one nonce."""
        self.stats.challenges += 1
        nonce = self.new_nonce(now)
        return [
            Challenge(self.realm, nonce, algorithm, ("auth",), self.opaque, stale)
            for algorithm in self.algorithms
        ]

    def challenge_headers(
        self, now: float, *, stale: bool = False, proxy: bool = False
    ) -> list[tuple[str, str]]:
        """``(name, value)`` pairs for a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        pieces = self._challenge_text[stale]
        if pieces is None:
            return [(name, challenge.header_value()) for challenge in self.challenges(now, stale=stale)]
        self.stats.challenges += 1
        nonce = self.new_nonce(now)
        return [(name, before + nonce + after) for before, after in pieces]

    # -- verification ---------------------------------------------------------------------------

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        request_uri: str,
        ha1_value: str | None,
        now: float,
    ) -> AuthResult:
        """Check ``credentials`` for a request. ``ha1_value`` is the stored HA1 for
        (credentials.username, realm, credentials.algorithm), or None when there is none."""
        result = self._verify(credentials, method, request_uri, ha1_value, now)
        self.stats.count(result.outcome)
        return result

    def _verify(
        self, credentials: Credentials, method: str, request_uri: str, ha1_value: str | None, now: float
    ) -> AuthResult:
        def fail(outcome: AuthOutcome, reason: str) -> AuthResult:
            return AuthResult(outcome, credentials.username, reason)

        if credentials.uri.strip() != request_uri.strip():
            return fail(AuthOutcome.BAD_REQUEST, "digest uri does not match the Request-URI")
        if credentials.realm != self.realm:
            return fail(AuthOutcome.INVALID, "realm mismatch")
        if credentials.algorithm not in self.algorithms:
            return fail(AuthOutcome.INVALID, f"algorithm {credentials.algorithm.value} not offered")
        if credentials.userhash:
            return fail(AuthOutcome.INVALID, "userhash is not supported")
        if credentials.qop != "auth" or credentials.nc is None or credentials.nc < 1:
            return fail(AuthOutcome.INVALID, "qop=auth with a positive nc is required")
        if credentials.opaque is not None and credentials.opaque != self.opaque:
            return fail(AuthOutcome.INVALID, "opaque mismatch")
        issued_at = self._nonce_issue_time(credentials.nonce)
        if issued_at is None:
            return fail(AuthOutcome.INVALID, "nonce was not issued by us")
        if issued_at > now + self.clock_skew:
            return fail(AuthOutcome.INVALID, "nonce is from the future")
        expected = compute_response(
            ha1_value if ha1_value is not None else "0" * credentials.algorithm.digest_length,
            algorithm=credentials.algorithm,
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        if ha1_value is None or not hmac.compare_digest(expected, credentials.response):
            return fail(AuthOutcome.INVALID, "wrong credentials")
        if now - issued_at > self.nonce_lifetime:
            return fail(AuthOutcome.STALE, "nonce expired")
        return self._record_nonce_count(credentials, issued_at, now)

    def _record_nonce_count(self, credentials: Credentials, issued_at: float, now: float) -> AuthResult:
        assert credentials.nc is not None
        record = self._nonce_counts
        previous = record.counts.get(credentials.nonce)
        if previous is None and issued_at <= record.evicted_up_to:
            return AuthResult(AuthOutcome.STALE, credentials.username, "nonce record was evicted")
        if previous is not None and credentials.nc <= previous[0]:
            return AuthResult(AuthOutcome.REPLAYED, credentials.username, "nonce-count replayed")
        record.counts[credentials.nonce] = (credentials.nc, issued_at)
        record.counts.move_to_end(credentials.nonce)
        self._prune(now)
        return AuthResult(AuthOutcome.OK, credentials.username)

    def _prune(self, now: float) -> None:
        record = self._nonce_counts
        # Expired entries are useless (their nonces are answered stale): drop a few per call.
        for _ in range(2):
            oldest = next(iter(record.counts.items()), None)
            if oldest is None or now - oldest[1][1] <= self.nonce_lifetime:
                break
            del record.counts[oldest[0]]
        while len(record.counts) > record.capacity:
            _, (_, issued_at) = record.counts.popitem(last=False)
            record.evicted_up_to = max(record.evicted_up_to, issued_at)
            self.stats.tracked_nonce_evictions += 1

    @property
    def tracked_nonces(self) -> int:
        return len(self._nonce_counts.counts)

    def _nonce_mac(self, issued_ms: int, salt: bytes) -> bytes:
        message = _NONCE_MAC_INPUT.pack(issued_ms, salt) + self._realm_bytes
        return hmac.digest(self._secret, message, "sha256")[:16]

    def _nonce_issue_time(self, nonce: str) -> float | None:
        if len(nonce) != 43 or not nonce.isascii():
            return None
        try:
            # base64.urlsafe_b64decode without its Python-level argument checks (same non-strict decoding).
            raw = binascii.a2b_base64(nonce.encode("ascii").translate(_URLSAFE_TO_STANDARD) + b"=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_LAYOUT.size:
            return None
        issued_ms, salt, mac = _NONCE_LAYOUT.unpack(raw)
        if not hmac.compare_digest(mac, self._nonce_mac(issued_ms, salt)):
            return None
        return float(issued_ms) / 1000.0
