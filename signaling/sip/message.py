"""SIP message layer: framing, parsing, validation, serialising and builders (RFC 3261 §7, §8, §20).

Messages are ``sipmessage.Request`` / ``sipmessage.Response`` objects (re-exported here as
:data:`Request`, :data:`Response`, union :data:`SipMessage`): their ``headers`` hold the raw
header values (compact names expanded, folding undone) and their typed accessors
(``msg.cseq``, ``msg.from_address``, ``msg.contact``, ``msg.via``, ``msg.www_authenticate`` ...)
parse on demand and raise ``ValueError``. This module adds what sipmessage lacks:

Parsing
    ``parse_message(data, limits=DEFAULT_LIMITS) -> Request | Response`` (and
    ``parse_with_keys(data, limits) -> ParsedMessage(message, top_via, cseq)``, the same with the top
    Via and CSeq it had to parse anyway)
        Enforces :class:`ParseLimits` *before* any header parsing (size, header count,
        per-header length), strips leading keepalive CRLFs, unfolds continuation lines,
        expands compact header names, checks the start line, the mandatory headers
        (Via, From, To, Call-ID, CSeq), single-valued headers, CSeq (number < 2**32, method
        equal to the request method), top Via syntax and Content-Length (datagram rules:
        trailing octets beyond Content-Length are discarded, a Content-Length larger than the
        body is an error) and the shape of From/To (any URI scheme: RFC 4475 unksm2). Only the
        top Via and CSeq are parsed here, so the cost stays bounded by the limits. Other typed
        headers (Contact, Authorization, ...) are left to the layer that needs them.
        On failure raises :class:`MessageParseError` (a ``RemoteProtocolError`` and a
        ``ValueError``): ``status_code`` is 400/416/505 when the RFC asks for an answer or
        ``None`` when the message must be dropped; ``can_reply`` says whether an answer can be
        built (a request other than ACK with at least one Via); ``build_reply()`` builds it.

Serialising
    ``serialize(msg) -> bytes`` (also ``bytes(msg)``); always rewrites Content-Length.

Identifiers
    ``new_branch()`` (``z9hG4bK`` + 16 hex), ``new_tag()``, ``new_call_id(host=None)``.

Builders (the ACK for a 2xx and in-dialog requests are the dialog layer's; these are the basics)
    ``build_ack_for_non_2xx(invite, response)`` (§17.1.1.3), ``build_cancel(invite)`` (§9.1),
    ``build_response(request, status_code, reason=None, *, to_tag=None, headers=(), body=b"",
    content_type=None, copy_record_route=False) -> Response`` copies Via/From/To/Call-ID/CSeq
    (and Timestamp for 100) and adds a To tag to every non-100 response whose To has none
    (``to_tag`` or a fresh one).
    ``build_request(method, request_uri, *, from_uri, to_uri, via_host, via_port,
    via_transport="UDP", ...) -> Request`` writes Via (fresh branch, ``rport``), Max-Forwards 70,
    From (fresh tag unless given), To, Call-ID (fresh unless given), CSeq, Contact,
    extra headers, Content-Type and Content-Length.

Header helpers (raw strings, no full parse)
    ``split_header_values`` (commas outside quotes/angle brackets), ``top_via(msg) -> Via``,
    ``vias(msg) -> list[Via]`` (use it rather than sipmessage's ``msg.via``, which fails on some
    valid folded lists), ``parse_via(value)`` (fast path, same result as ``Via.parse``),
    ``set_top_via(msg, via)`` (``replace_top_via(msg, text)``), ``format_via(via)``,
    ``format_parameters(params)``,
    ``from_tag(msg)``, ``to_tag(msg)``, ``address_tag(value)``, ``add_tag(value, tag)``,
    ``max_forwards(msg)``, ``cseq_of(msg)``, ``method_of(msg)``, ``reason_phrase(code)``.

sipmessage's own ``Parameters.__str__`` percent-quotes values (it would turn
``received=[2001:db8::1]`` into ``%5B...``): use :func:`format_via` / :func:`format_parameters`
when writing parameters back.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from sipmessage import URI, CSeq, Headers, Parameters, Request, Response, Via
from sipmessage import grammar as _grammar

from signaling.sip.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_LIMITS",
    "URI",
    "CSeq",
    "Headers",
    "MessageParseError",
    "ParseLimits",
    "ParsedMessage",
    "Request",
    "Response",
    "SipMessage",
    "Via",
    "add_tag",
    "address_tag",
    "build_request",
    "build_response",
    "cseq_of",
    "format_parameters",
    "format_via",
    "from_tag",
    "max_forwards",
    "method_of",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_cseq",
    "parse_message",
    "parse_uri",
    "parse_via",
    "parse_with_keys",
    "reason_phrase",
    "replace_top_via",
    "serialize",
    "set_top_via",
    "split_header_values",
    "to_tag",
    "top_via",
    "vias",
]

SipMessage = Request | Response

BRANCH_MAGIC_COOKIE = "z9hG4bK"
MAX_UDP_MESSAGE = 65_536
CSEQ_LIMIT = 2**32

# https://www.iana.org/assignments/sip-parameters -- compact forms (RFC 3261 §7.3.3 and later RFCs).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Headers that RFC 3261 allows once only; a second occurrence makes the request a 400.
SINGLE_VALUED = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEADER_LINE_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*(.*)", re.DOTALL)
_HOST_RE = re.compile(_grammar.HOST)
_GENERIC_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")
_STATUS_LINE_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
_DIGITS_RE = re.compile(r"[0-9]+")


def _is_digits(text: str) -> bool:
    """``_DIGITS_RE.fullmatch(text)`` without the regex: ``isdigit`` alone would take other Unicode digits."""
    return text.isdigit() and text.isascii()


_TAG_RE = re.compile(r";\s*tag\s*=\s*([^\s;,>]+)", re.IGNORECASE)
_KNOWN_SCHEMES = frozenset(("sip", "sips", "tel"))

# RFC 3261 §20.10/§25.1 shape of a From/To value, any URI scheme (RFC 4475 unksm2 must parse):
# name-addr = [display-name] "<" URI ">" / addr-spec (no ';' ',' '?' in it), then header params.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PARAM = rf"[ \t]*;[ \t]*{_TOKEN}(?:[ \t]*=[ \t]*(?:{_QUOTED}|[^\s;,\"<>]+))?"
_ADDRESS_RE = re.compile(
    rf"(?:(?:{_QUOTED}|{_TOKEN}(?:[ \t]+{_TOKEN})*)?[ \t]*<[^\s<>]+>"
    rf"|[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>;,?\"]+)(?:{_PARAM})*[ \t]*",
    re.DOTALL,
)


@dataclasses.dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds checked before any header is parsed (header bombs cost CPU linearly)."""

    max_message_size: int = MAX_UDP_MESSAGE
    """Whole message, start line + headers + body, in bytes."""
    max_headers: int = 128
    """Header lines, continuation lines included."""
    max_header_length: int = 4096
    """One header value after unfolding, in characters."""


DEFAULT_LIMITS = ParseLimits()


class MessageParseError(RemoteProtocolError, ValueError):
    """A message that cannot be accepted.

    ``status_code`` -- what the RFC asks to answer (400, 416 unknown Request-URI scheme,
    505 unknown SIP version) or ``None`` to drop silently (responses, unreadable framing).
    ``can_reply`` -- the answer can actually be built and routed (it is a request, not ACK,
    with at least one Via header). ``headers`` holds whatever raw headers were read.
    """

    def __init__(
        self,
        reason: str,
        status_code: int | None = 400,
        *,
        is_request: bool = False,
        method: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(reason, status_code)
        self.is_request = is_request
        self.method = method
        self.headers = headers

    @property
    def can_reply(self) -> bool:
        return (
            self.status_code is not None
            and self.is_request
            and self.method != "ACK"
            and self.headers is not None
            and bool(self.headers.getlist("Via"))
        )

    def build_reply(self, to_tag: str | None = None) -> Response | None:
        """The stateless answer for this broken request, or ``None`` if none can be sent."""
        if not self.can_reply or self.headers is None or self.status_code is None:
            return None
        # Reason phrase text is ours; keep it short and free of CR/LF.
        phrase = f"{reason_phrase(self.status_code)} ({_printable(self.reason)[:80]})"
        response = _response_from_headers(self.headers, self.status_code, phrase, to_tag)
        if self.status_code == 416:
            response.headers.add("Supported", "")
        return response


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


# --------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A parsed message with the two headers every layer needs, already parsed once."""

    message: Request | Response
    top_via: Via
    cseq: CSeq


def parse_message(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message (a whole UDP datagram or one framed stream message).

    Raises :class:`MessageParseError`; never anything else for any input bytes.
    """
    return parse_with_keys(data, limits).message


def parse_with_keys(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """:func:`parse_message`, also returning the parsed top Via and CSeq (the transaction keys)."""
    if len(data) > limits.max_message_size:
        raise MessageParseError(
            f"message of {len(data)} bytes exceeds {limits.max_message_size}", status_code=None
        )
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 §7.5: ignore CRLFs before the start line
        start += 2
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        raise MessageParseError("no empty line ends the headers", status_code=None)
    try:
        head = data[start:head_end].decode("utf-8")
    except UnicodeDecodeError:
        raise MessageParseError("start line or headers are not UTF-8", status_code=None) from None
    body = data[head_end + 4 :]

    header_lines = head.count("\r\n")  # the lines after the start line
    if header_lines > limits.max_headers:
        raise MessageParseError(f"more than {limits.max_headers} header lines", status_code=None)

    first_end = head.find("\r\n")
    start_line = head if first_end < 0 else head[:first_end]
    is_request = not start_line.startswith("SIP/")
    headers, groups, header_problem = None, None, None
    if len(head) <= limits.max_header_length and head.count("\r") == header_lines:
        # No header can be too long and every CR ends a line: try the one-regex pass.
        headers, groups = _read_plain_headers(head, len(start_line), header_lines)
    if headers is None or groups is None:
        headers, groups, header_problem = _read_headers(head.split("\r\n"), limits)
    if headers is None:
        # A header too long: refuse to look further into it, and do not answer a header bomb.
        raise MessageParseError(header_problem or "bad headers", status_code=None)

    if not is_request:
        return _finish_response(start_line, headers, groups, body, header_problem)
    return _finish_request(start_line, headers, groups, body, header_problem)


HeaderGroups = dict[str, tuple[str, list[str]]]  # lower-case name -> (name as first written, values)


def _read_headers(lines: list[str], limits: ParseLimits) -> tuple[Headers | None, HeaderGroups, str | None]:
    """Unfold and collect header fields in one pass. Returns (headers, groups, first problem seen).

    A line whose name (the text before its first colon) was seen before as a valid header name takes a
    fast path (one dict lookup, no regular expression); anything else goes through the full rules."""
    grouped: HeaderGroups = {}
    last: list[str] | None = None  # the value list holding the field a continuation line extends
    problem: str | None = None
    max_length = limits.max_header_length
    known = _KNOWN_NAMES
    for index in range(1, len(lines)):
        line = lines[index]
        colon = line.find(":")
        spec = known.get(line[:colon]) if colon > 0 else None
        if spec is not None:
            value = line[colon + 1 :].lstrip(" \t")
            if len(value) > max_length:
                return None, {}, f"header {line[:colon]} longer than {max_length}"
            name, key = spec
            value = value.rstrip(" \t")
        else:
            first = line[:1]
            if first == " " or first == "\t":
                if last is None:
                    problem = problem or "continuation line before any header"
                    continue
                folded = (last[-1] + " " + line.strip(" \t")).strip(" \t")
                if len(folded) > max_length:
                    return None, {}, f"header longer than {max_length}"
                last[-1] = folded
                continue
            match = _HEADER_LINE_RE.fullmatch(line)
            if match is None:
                problem = problem or "header line is not 'name: value'"
                last = None
                continue
            name, value = match.groups()
            if len(value) > max_length:
                return None, {}, f"header {name} longer than {max_length}"
            written = name
            if len(name) == 1:
                name = COMPACT_FORMS.get(name.lower(), name)
            key = name.lower()
            value = value.rstrip(" \t")
            if len(known) < _KNOWN_NAMES_LIMIT:
                known[written] = (name, key)
        entry = grouped.get(key)
        if entry is None:
            last = [value]
            grouped[key] = (name, last)
        else:
            last = entry[1]
            last.append(value)
    return IndexedHeaders.from_groups(grouped), grouped, problem


_PLAIN_HEADER_RE = re.compile(r"\r\n([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r]*)")


def _read_plain_headers(head: str, start: int, count: int) -> tuple[Headers | None, HeaderGroups | None]:
    """:func:`_read_headers` for the usual message (no folding, every line ``name: value``): ``(None, None)``
    when some line is anything else. The caller has checked that no CR stands outside a CRLF (so a line
    the pattern skips shows in the count) and that the head is no longer than one header may be."""
    pairs = _PLAIN_HEADER_RE.findall(head, start)
    if len(pairs) != count:
        return None, None
    grouped: HeaderGroups = {}
    index: dict[str, list[str]] = {}
    known = _KNOWN_NAMES
    for written, value in pairs:
        spec = known.get(written)
        if spec is None:
            name = COMPACT_FORMS.get(written.lower(), written) if len(written) == 1 else written
            spec = (name, name.lower())
            if len(known) < _KNOWN_NAMES_LIMIT:
                known[written] = spec
        name, key = spec
        values = index.get(key)
        if values is None:
            index[key] = values = [value.rstrip(" \t")]
            grouped[key] = (name, values)
        else:
            values.append(value.rstrip(" \t"))
    headers = IndexedHeaders.__new__(IndexedHeaders)
    headers._list = list(grouped.values())
    headers._index = index
    return headers, grouped


# Header names as written (``Via``, ``v``, ``CALL-ID``...) already validated by the full rules -> (name
# with the compact form expanded, lower-case key). Bounded: names an attacker invents stop being added.
_KNOWN_NAMES: dict[str, tuple[str, str]] = {}
_KNOWN_NAMES_LIMIT = 1024


class IndexedHeaders(Headers):
    """sipmessage's ``Headers`` plus an index by lower-case name: ``get``/``getlist``/``[]`` cost one dict
    lookup instead of a scan calling ``lower()`` on every header (a REGISTER does ~15 lookups).

    sipmessage keeps ``_list`` as ``[(name as written, values)]``; every mutator is overridden so the index
    always points at the same value lists.

    It also remembers what :func:`cseq_of`, :func:`from_tag`, :func:`to_tag` and :func:`top_via` derived from
    a header, next to the header text it came from: each layer asks again for the same message's keys (a
    B2BUA call reads CSeq ~25 times), and a reader compares the text it finds now with the text kept, so a
    header set, replaced or edited after parsing is read afresh (the derived value depends on the text only).
    """

    _cseq_memo: tuple[str, CSeq] | None = None
    _from_tag_memo: tuple[str, str | None] | None = None
    _to_tag_memo: tuple[str, str | None] | None = None
    _top_via_memo: tuple[str, Via] | None = None

    def __init__(self, groups: list[tuple[str, list[str]]] | None = None) -> None:
        super().__init__()
        self._list = groups if groups is not None else []
        self._index: dict[str, list[str]] = {}
        for name, values in self._list:
            self._index.setdefault(name.lower(), values)

    @classmethod
    def from_groups(cls, grouped: HeaderGroups) -> IndexedHeaders:
        """Headers from ``{lower-case name: (name, values)}`` (insertion order), sharing the value lists."""
        headers = cls.__new__(cls)
        headers._list = list(grouped.values())
        headers._index = {key: entry[1] for key, entry in grouped.items()}
        return headers

    def add(self, key: str, value: str) -> None:
        values = self._index.get(key.lower())
        if values is not None:
            values.append(value)
        else:
            self._list.append((key, [value]))
            self._index[key.lower()] = self._list[-1][1]

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self._index.get(key.lower())
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        values = self._index.get(key.lower())
        return values if values is not None else []

    def __getitem__(self, key: str) -> str:
        values = self._index.get(key.lower())
        if not values:
            raise KeyError(key)
        return values[0]

    def remove(self, key: str) -> None:
        super().remove(key)
        self._reindex()

    def set(self, key: str, value: str) -> None:
        self.setlist(key, [value])

    def setlist(self, key: str, values: list[str]) -> None:
        # sipmessage's semantics: replace the first field of that name (keeping its spelling) or append.
        ikey = key.lower()
        current = self._index.get(ikey)
        if current is None:
            self._list.append((key, values))
            self._index[ikey] = values
            return
        entries = self._list
        for position, (name, existing) in enumerate(entries):
            if existing is current:
                entries[position] = (name, values)
                self._index[ikey] = values
                return
        super().setlist(key, values)  # the index and the list disagree: never expected, stay correct
        self._reindex()

    def _reindex(self) -> None:
        index: dict[str, list[str]] = {}
        for name, values in self._list:
            index.setdefault(name.lower(), values)
        self._index = index


_MANDATORY_KEYS = tuple(name.lower() for name in MANDATORY)
_MANDATORY_KEY_SET = frozenset(_MANDATORY_KEYS)
_SINGLE_KEYS = tuple(name.lower() for name in SINGLE_VALUED)


def _check_common(groups: HeaderGroups) -> tuple[str | None, CSeq | None, Via | None]:
    if not groups.keys() >= _MANDATORY_KEY_SET:  # one C-level check; the loop only names what is missing
        for name, key in zip(MANDATORY, _MANDATORY_KEYS, strict=True):
            if key not in groups:
                return f"missing {name} header", None, None
    for key in _SINGLE_KEYS:
        entry = groups.get(key)
        if entry is not None and len(entry[1]) > 1:
            return f"more than one {entry[0]} header", None, None
    for key in ("from", "to"):
        if _ADDRESS_RE.fullmatch(groups[key][1][0]) is None:
            return f"{groups[key][0]} is not a valid name-addr or addr-spec", None, None
    try:
        cseq = parse_cseq(groups["cseq"][1][0])
    except ValueError:
        return "CSeq is not valid", None, None
    if cseq.sequence >= CSEQ_LIMIT:
        return "CSeq number is not below 2**32", None, None
    first = split_header_values(groups["via"][1][0])
    try:
        if not first:
            raise ValueError("empty Via")
        via = parse_via(first[0])
    except ValueError:
        return "top Via is not valid", None, None
    return None, cseq, via


def parse_cseq(value: str) -> CSeq:
    """``CSeq.parse`` with a fast path for the plain form (``1 REGISTER``); raises ``ValueError``."""
    number, space, method = value.partition(" ")
    if (
        space
        and number.isdigit()
        and number.isascii()
        and (method in _CSEQ_METHODS or (_TOKEN_RE.fullmatch(method) is not None and method.isascii()))
    ):
        return _new_cseq(int(number), method)
    return CSeq.parse(value)


_CSEQ_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)


def _body_for_length(headers: Headers, body: bytes) -> tuple[bytes | None, str | None]:
    raw = headers.get("Content-Length")
    if raw is None:
        return body, None
    if not _is_digits(raw):
        return None, "Content-Length is not a non-negative number"
    length = int(raw)
    if length > len(body):
        return None, f"Content-Length {length} exceeds the {len(body)} body bytes"
    # RFC 3261 §18.3: octets beyond Content-Length in a datagram are discarded.
    return body[:length], None


def _finish_response(
    start_line: str, headers: Headers, groups: HeaderGroups, body: bytes, problem: str | None
) -> ParsedMessage:
    def drop(reason: str) -> MessageParseError:
        return MessageParseError(reason, status_code=None, is_request=False, headers=headers)

    match = _STATUS_LINE_RE.fullmatch(start_line)
    if match is None:
        raise drop("status line is not valid")
    if problem is not None:
        raise drop(problem)
    problem, cseq, via = _check_common(groups)
    if problem is not None or cseq is None or via is None:
        raise drop(problem or "CSeq is not valid")
    sized_body, problem = _body_for_length(headers, body)
    if sized_body is None:
        raise drop(problem or "bad Content-Length")
    _remember_keys(headers, groups, cseq, via)
    return ParsedMessage(
        _new_response(int(match.group(1)), match.group(2) or "", sized_body, headers), via, cseq
    )


def _finish_request(
    start_line: str, headers: Headers, groups: HeaderGroups, body: bytes, problem: str | None
) -> ParsedMessage:
    parts = start_line.split(" ")
    method: str | None = parts[0]
    if method not in _CSEQ_METHODS and _TOKEN_RE.fullmatch(parts[0]) is None:  # the known ones are tokens
        method = None

    def fail(reason: str, status_code: int = 400) -> MessageParseError:
        return MessageParseError(reason, status_code, is_request=True, method=method, headers=headers)

    if len(parts) != 3 or method is None or not parts[1]:
        raise fail("request line is not 'Method SP Request-URI SP SIP-Version'")
    raw_uri, version = parts[1], parts[2]
    if not version.startswith("SIP/"):
        raise fail("request line has no SIP version")
    if version != "SIP/2.0":
        raise fail(f"SIP version {version[4:]} is not supported", 505)
    if problem is not None:
        raise fail(problem)
    problem, cseq, via = _check_common(groups)
    if problem is not None or cseq is None or via is None:
        raise fail(problem or "CSeq is not valid")
    if cseq.method != method:
        raise fail(f"CSeq method {cseq.method} differs from request method {method}")
    max_fwd = headers.get("Max-Forwards")
    if max_fwd is not None and not _is_digits(max_fwd):
        raise fail("Max-Forwards is not a number")
    scheme = _SCHEME_RE.match(raw_uri)
    if scheme is None:
        raise fail("Request-URI has no scheme")
    if scheme.group(0)[:-1].lower() not in _KNOWN_SCHEMES:
        raise fail(f"Request-URI scheme {scheme.group(0)[:-1]} is not supported", 416)
    try:
        uri = parse_uri(raw_uri)
    except ValueError:
        raise fail("Request-URI is not valid") from None
    sized_body, problem = _body_for_length(headers, body)
    if sized_body is None:
        raise fail(problem or "bad Content-Length")
    _remember_keys(headers, groups, cseq, via)
    return ParsedMessage(_new_request(method, uri, sized_body, headers), via, cseq)


def _remember_keys(headers: Headers, groups: HeaderGroups, cseq: CSeq, via: Via) -> None:
    """Seed the memos of :func:`cseq_of` and :func:`top_via` with what validation has just parsed."""
    if type(headers) is IndexedHeaders:
        headers._cseq_memo = (groups["cseq"][1][0], cseq)
        headers._top_via_memo = (groups["via"][1][0], via)


@functools.lru_cache(maxsize=4096)
def parse_uri(text: str) -> URI:
    """``URI.parse`` through a bounded cache: a phone's Request-URI, To and Contact repeat on every
    REGISTER, and sipmessage's ``URI`` (frozen, with read-only ``Parameters``) is safe to share."""
    return URI.parse(text)


# --------------------------------------------------------------------------- serialising


def serialize(message: SipMessage) -> bytes:
    """The wire form of ``message``, with Content-Length set to the body's length."""
    headers = message.headers
    body = message.body
    length = str(len(body))
    if type(headers) is IndexedHeaders:
        # Content-Length is only rewritten when wrong.
        if headers._index.get("content-length") != [length]:
            headers.set("Content-Length", length)
    else:
        headers.set("Content-Length", length)
        if type(headers) is not Headers or type(message) not in _PLAIN_MESSAGE_TYPES:
            return bytes(message)
    # The same text as sipmessage's __bytes__ (start line, "name: value" per value, blank line, body),
    # joined once instead of grown one header at a time (sipmessage's own Headers too: in-dialog requests).
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} SIP/2.0\r\n"
    else:
        start = f"SIP/2.0 {message.code} {message.phrase}\r\n"
    lines = [f"{name}: {value}\r\n" for name, values in headers._list for value in values]
    return (start + "".join(lines) + "\r\n").encode("utf8") + body


_PLAIN_MESSAGE_TYPES = (Request, Response)  # not subclasses: one could write itself differently


# --------------------------------------------------------------------------- identifiers


class _RandomHex:
    """Hex digits from the kernel's CSPRNG, read 4 KiB at a time.

    A B2BUA call takes ~10 branches, tags and Call-IDs; one ``os.urandom`` each was a ``getrandom``
    system call each (py-spy --native at 100 calls/s: 1.7 % of the node's CPU in ``getrandom`` with the
    event ids). The digits stay cryptographically random (RFC 3261 §19.3 asks that of tags and
    Call-IDs); a forked child drops the buffer so that it never hands out its parent's digits.
    (storage/events/builder.py keeps a pool of its own for event ids: storage does not import signaling.)"""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._digits = ""
        self._at = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._digits, self._at = "", 0

    def take(self, count: int) -> str:
        at = self._at
        end = at + count
        if end > len(self._digits):
            self._digits, at, end = os.urandom(self._CHUNK).hex(), 0, count
        self._at = end
        return self._digits[at:end]


random_hex = _RandomHex().take
"""``random_hex(n)``: ``n`` random hex digits (``n`` ≤ 8,192)."""


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return BRANCH_MAGIC_COOKIE + random_hex(16)


def new_tag() -> str:
    return random_hex(12)


def new_call_id(host: str | None = None) -> str:
    value = random_hex(24)
    return f"{value}@{host}" if host else value


def reason_phrase(status_code: int) -> str:
    return REASON_PHRASES.get(status_code, "Unknown")


# --------------------------------------------------------------------------- header helpers


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes or ``<...>``."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [item for item in (part.strip() for part in value.split(",")) if item]
    items: list[str] = []
    depth_angle = False
    in_quotes = False
    escaped = False
    begin = 0
    for index, char in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            depth_angle = True
        elif char == ">":
            depth_angle = False
        elif char == "," and not depth_angle:
            items.append(value[begin:index].strip())
            begin = index + 1
    items.append(value[begin:].strip())
    return [item for item in items if item]


def top_via_of_headers(headers: Headers) -> Via:
    values = headers.getlist("Via")
    if not values:
        raise ValueError("no Via header")
    first = split_header_values(values[0])
    if not first:
        raise ValueError("empty Via header")
    return parse_via(first[0])


def parse_via(value: str) -> Via:
    """``Via.parse`` with a fast path for the common compact form (``SIP/2.0/UDP host:port;k=v``);
    anything unusual (LWS, quotes, IPv6, odd parameters) goes to sipmessage's full grammar."""
    match = _PLAIN_VIA_RE.fullmatch(value)
    if match is not None:
        transport, host, port, raw_params = match.groups()
        host_ok = _VALID_HOSTS.get(host)
        if host_ok is None:
            host_ok = _HOST_RE.fullmatch(host) is not None
            if len(_VALID_HOSTS) < _VALID_HOSTS_LIMIT:
                _VALID_HOSTS[host] = host_ok
        if host_ok:
            params: dict[str, str | None] = {}
            if raw_params:
                for raw in raw_params[1:].split(";"):
                    key, equals, param_value = raw.partition("=")
                    params[key] = param_value if equals else None
            return _new_via(transport, host, int(port) if port else None, params)
    return _parse_via_general(value)


# The usual Via: token transport, a name or IPv4 host, digits for the port, token parameters (no '%').
_PLAIN_VIA_RE = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!*_+`'~]+) ([A-Za-z0-9.\-]+)(?::([0-9]+))?"
    r"((?:;[A-Za-z0-9\-.!*_+`'~]+(?:=[A-Za-z0-9\-.!*_+`'~]+)?)*)"
)
_VALID_HOSTS: dict[str, bool] = {}  # host text -> it matches sipmessage's host grammar (bounded)
_VALID_HOSTS_LIMIT = 4096


def _via_by_constructor(transport: str, host: str, port: int | None, params: dict[str, str | None]) -> Via:
    return Via(transport, host, port, Parameters(**params))


def _via_direct(transport: str, host: str, port: int | None, params: dict[str, str | None]) -> Via:
    """The ``Via`` that :func:`_via_by_constructor` builds, with its fields written straight into the instance
    dict: a frozen dataclass's ``__init__`` pays an ``object.__setattr__`` per field, and ``Parameters``
    copies the dict it is given (here a fresh one nobody else holds). Half the cost (~1.8 -> ~0.9 µs)."""
    parameters = _new_object(Parameters)
    parameters.__dict__[_PARAMETERS_DATA] = params
    via = _new_object(Via)
    via.__dict__.update(transport=transport, host=host, port=port, parameters=parameters)
    return via


def _cseq_direct(sequence: int, method: str) -> CSeq:
    cseq = _new_object(CSeq)
    cseq.__dict__.update(sequence=sequence, method=method)
    return cseq


def _request_by_constructor(method: str, uri: URI, body: bytes, headers: Headers) -> Request:
    request = Request(method=method, uri=uri, body=body)
    request.headers = headers
    return request


def _request_direct(method: str, uri: URI, body: bytes, headers: Headers) -> Request:
    """:func:`_request_by_constructor` without building the empty ``Headers`` it would replace at once."""
    request = _new_object(Request)
    request.__dict__.update(method=method, uri=uri, body=body, headers=headers)
    return request


def _response_by_constructor(code: int, phrase: str, body: bytes, headers: Headers) -> Response:
    response = Response(code=code, phrase=phrase, body=body)
    response.headers = headers
    return response


def _response_direct(code: int, phrase: str, body: bytes, headers: Headers) -> Response:
    response = _new_object(Response)
    response.__dict__.update(code=code, phrase=phrase, body=body, headers=headers)
    return response


_new_object = object.__new__
_PARAMETERS_DATA = "_Parameters__data"  # where sipmessage's Parameters keeps its dict (name-mangled)


def _same_state(built: object, reference: object) -> bool:
    """Same class, same attributes in the same order with equal values (the parameters' too)."""
    if type(built) is not type(reference) or list(vars(built)) != list(vars(reference)):
        return False
    for name, value in vars(reference).items():
        other = vars(built)[name]
        if isinstance(value, Parameters):
            if not _same_state(other, value):
                return False
        elif not (other is value or other == value):
            return False
    return True


def _direct_builders_match() -> bool:
    """The direct builders rely on how sipmessage stores its objects (instance dicts, ``Parameters``'s
    private dict): check once that they give exactly what the constructors give, else use the constructors
    (a sipmessage release that changes its storage then costs speed, not correctness)."""
    try:
        params: dict[str, str | None] = {"branch": "z9hG4bK0", "rport": None}
        headers = IndexedHeaders()
        return (
            _same_state(
                _via_direct("UDP", "192.0.2.1", 5060, dict(params)),
                _via_by_constructor("UDP", "192.0.2.1", 5060, params),
            )
            and _same_state(_cseq_direct(1, "INVITE"), CSeq(1, "INVITE"))
            and _same_state(
                _request_direct("BYE", URI("sip", "example.com"), b"x", headers),
                _request_by_constructor("BYE", URI("sip", "example.com"), b"x", headers),
            )
            and _same_state(
                _response_direct(200, "OK", b"x", headers), _response_by_constructor(200, "OK", b"x", headers)
            )
        )
    except Exception:  # any surprise means: do not take the shortcut
        return False


_DIRECT_BUILDERS = _direct_builders_match()
_new_via = _via_direct if _DIRECT_BUILDERS else _via_by_constructor
_new_cseq = _cseq_direct if _DIRECT_BUILDERS else CSeq
_new_request = _request_direct if _DIRECT_BUILDERS else _request_by_constructor
_new_response = _response_direct if _DIRECT_BUILDERS else _response_by_constructor


def _parse_via_general(value: str) -> Via:
    if value.startswith("SIP/2.0/") and '"' not in value and "[" not in value and "\t" not in value:
        space = value.find(" ", 8)
        transport = value[8:space]
        rest = value[space + 1 :]
        if space > 8 and " " not in rest and _TOKEN_RE.fullmatch(transport):
            hostport, *raw_params = rest.split(";")
            host, colon, port = hostport.partition(":")
            params: dict[str, str | None] = {}
            port_ok = not colon or (port.isascii() and port.isdigit())
            ok = _HOST_RE.fullmatch(host) is not None and port_ok
            for raw in raw_params:
                key, equals, param_value = raw.partition("=")
                if not _TOKEN_RE.fullmatch(key) or (equals and not _GENERIC_VALUE_RE.fullmatch(param_value)):
                    ok = False
                    break
                if "%" in raw:  # sipmessage percent-decodes parameters: stay identical to it
                    key, param_value = unquote(key), unquote(param_value)
                params[key] = param_value if equals else None
            if ok:
                return _new_via(transport, host, int(port) if port else None, params)
    return Via.parse(value)


def vias(message: SipMessage) -> list[Via]:
    """Every Via, top first (sipmessage's ``msg.via`` fails on some valid comma-joined lists)."""
    return [
        parse_via(item) for value in message.headers.getlist("Via") for item in split_header_values(value)
    ]


def top_via(message: SipMessage) -> Via:
    """The topmost Via (parsed); raises ``ValueError``."""
    headers = message.headers
    if type(headers) is IndexedHeaders:
        values = headers._index.get("via")
        if values:
            text = values[0]
            memo = headers._top_via_memo
            if memo is not None and memo[0] == text:
                return memo[1]
            via = top_via_of_headers(headers)
            headers._top_via_memo = (text, via)
            return via
    return top_via_of_headers(headers)


def set_top_via(message: SipMessage, via: Via) -> None:
    """Replace the topmost Via value, keeping every other Via value verbatim."""
    replace_top_via(message, format_via(via))


def replace_top_via(message: SipMessage, text: str) -> None:
    """:func:`set_top_via` with the new Via already formatted."""
    values = message.headers.getlist("Via")
    if not values:
        message.headers.setlist("Via", [text])
        return
    first = values[0]
    if "," in first:  # several Vias joined in one field: keep the others as written
        text = ", ".join([text, *split_header_values(first)[1:]])
    message.headers.setlist("Via", [text, *values[1:]])


def format_parameters(parameters: Mapping[str, str | None]) -> str:
    return "".join([f";{key}" if value is None else f";{key}={value}" for key, value in parameters.items()])


def format_via(via: Via) -> str:
    port = f":{via.port}" if via.port is not None else ""
    return f"SIP/2.0/{via.transport} {via.host}{port}{format_parameters(via.parameters)}"


def address_tag(value: str) -> str | None:
    """The ``tag`` parameter of a raw From/To value (header parameters only)."""
    closing = value.rfind(">")
    params = value[closing + 1 :] if closing >= 0 else value[value.find(";") :] if ";" in value else ""
    match = _TAG_RE.search(params)
    return match.group(1) if match else None


def add_tag(value: str, tag: str) -> str:
    """Append ``;tag=`` to a raw From/To value (addr-spec parameters are header parameters)."""
    return f"{value};tag={tag}"


def from_tag(message: SipMessage) -> str | None:
    headers = message.headers
    if type(headers) is IndexedHeaders:
        values = headers._index.get("from")
        if not values:
            return None
        text = values[0]
        memo = headers._from_tag_memo
        if memo is None or memo[0] != text:
            memo = headers._from_tag_memo = (text, address_tag(text))
        return memo[1]
    value = headers.get("From")
    return address_tag(value) if value is not None else None


def to_tag(message: SipMessage) -> str | None:
    return _to_tag_of_headers(message.headers)


def _to_tag_of_headers(headers: Headers) -> str | None:
    if type(headers) is IndexedHeaders:
        values = headers._index.get("to")
        if not values:
            return None
        text = values[0]
        memo = headers._to_tag_memo
        if memo is None or memo[0] != text:
            memo = headers._to_tag_memo = (text, address_tag(text))
        return memo[1]
    value = headers.get("To")
    return address_tag(value) if value is not None else None


def cseq_of(message: SipMessage) -> CSeq:
    headers = message.headers
    if type(headers) is not IndexedHeaders:
        return parse_cseq(headers["CSeq"])
    values = headers._index.get("cseq")
    if not values:
        raise KeyError("CSeq")
    text = values[0]
    memo = headers._cseq_memo
    if memo is not None and memo[0] == text:
        return memo[1]
    cseq = parse_cseq(text)  # a ValueError leaves no memo: the next reader raises it again
    headers._cseq_memo = (text, cseq)
    return cseq


def method_of(message: SipMessage) -> str:
    """The request method, or for a response the CSeq method."""
    if isinstance(message, Request):
        return message.method
    return cseq_of(message).method


def max_forwards(message: Request) -> int | None:
    raw = message.headers.get("Max-Forwards")
    if raw is None or not _is_digits(raw):
        return None
    return int(raw)


# --------------------------------------------------------------------------- builders


_COPIED_TO_RESPONSES = (("From", "from"), ("To", "to"), ("Call-ID", "call-id"), ("CSeq", "cseq"))


def _response_groups(headers: Headers, status_code: int, to_tag: str | None) -> HeaderGroups:
    groups: HeaderGroups = {}
    vias = headers.getlist("Via")
    if vias:
        groups["via"] = ("Via", list(vias))
    # Parsed and built messages index their headers by lower-case name: read that directly.
    index = headers._index if type(headers) is IndexedHeaders else None
    for name, key in _COPIED_TO_RESPONSES:
        if index is not None:
            values = index.get(key)
            value = values[0] if values else None
        else:
            value = headers.get(name)
        if value is None:
            continue
        if key == "to" and status_code != 100 and _to_tag_of_headers(headers) is None:
            value = add_tag(value, to_tag or new_tag())
        groups[key] = (name, [value])
    if status_code == 100:
        timestamp = headers.get("Timestamp")
        if timestamp is not None:
            groups["timestamp"] = ("Timestamp", [timestamp])
    return groups


def _response_from_headers(headers: Headers, status_code: int, phrase: str, to_tag: str | None) -> Response:
    response = Response(code=status_code, phrase=phrase)
    response.headers = IndexedHeaders.from_groups(_response_groups(headers, status_code, to_tag))
    return response


def build_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    copy_record_route: bool = False,
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6 (To tag added unless it is a 100)."""
    response = Response(code=status_code, phrase=reason or reason_phrase(status_code), body=body)
    groups = _response_groups(request.headers, status_code, to_tag)
    if copy_record_route:
        record_route = request.headers.getlist("Record-Route")
        if record_route:
            groups["record-route"] = ("Record-Route", list(record_route))
    add_to_groups(groups, headers)
    if body and content_type is not None:
        groups["content-type"] = ("Content-Type", [content_type])
    groups["content-length"] = ("Content-Length", [str(len(body))])
    response.headers = IndexedHeaders.from_groups(groups)
    return response


def build_request(
    method: str,
    request_uri: URI | str,
    *,
    from_uri: str,
    to_uri: str,
    via_host: str,
    via_port: int | None,
    via_transport: str = "UDP",
    branch: str | None = None,
    from_tag: str | None = None,
    to_tag: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    contact: str | None = None,
    max_forwards: int = 70,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A new out-of-dialog (or, with ``to_tag``, in-dialog) request per RFC 3261 §8.1.1.

    ``from_uri`` / ``to_uri`` / ``contact`` are header values as written (``<sip:a@b>`` or
    ``"Name" <sip:a@b>``); tags are appended here.
    """
    uri = parse_uri(request_uri) if isinstance(request_uri, str) else request_uri
    request = Request(method=method, uri=uri, body=body)
    port = f":{via_port}" if via_port is not None else ""
    groups: HeaderGroups = {
        "via": ("Via", [f"SIP/2.0/{via_transport} {via_host}{port};branch={branch or new_branch()};rport"]),
        "max-forwards": ("Max-Forwards", [str(max_forwards)]),
        "from": ("From", [add_tag(from_uri, from_tag or new_tag())]),
        "to": ("To", [add_tag(to_uri, to_tag) if to_tag else to_uri]),
        "call-id": ("Call-ID", [call_id or new_call_id()]),
        "cseq": ("CSeq", [f"{cseq} {method}"]),
    }
    if contact is not None:
        groups["contact"] = ("Contact", [contact])
    add_to_groups(groups, headers)
    if body and content_type is not None:
        groups["content-type"] = ("Content-Type", [content_type])
    groups["content-length"] = ("Content-Length", [str(len(body))])
    request.headers = IndexedHeaders.from_groups(groups)
    return request


def add_to_groups(groups: HeaderGroups, headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        entry = groups.get(name.lower())
        if entry is None:
            groups[name.lower()] = (name, [value])
        else:
            entry[1].append(value)


def build_ack_for_non_2xx(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 (RFC 3261 §17.1.1.3): same
    Request-URI, Call-ID, From, CSeq number, only the top Via, To from the response, Routes kept."""
    ack = Request(method="ACK", uri=invite.uri)
    out = ack.headers
    vias = split_header_values(invite.headers.getlist("Via")[0])
    out.add("Via", vias[0])
    out.add("Max-Forwards", "70")
    for name in ("From", "Call-ID"):
        out.add(name, invite.headers[name])
    out.add("To", response.headers.get("To") or invite.headers["To"])
    out.add("CSeq", f"{cseq_of(invite).sequence} ACK")
    routes = invite.headers.getlist("Route")
    if routes:
        out.setlist("Route", list(routes))
    out.add("Content-Length", "0")
    return ack


def build_cancel(invite: Request) -> Request:
    """A CANCEL for ``invite`` (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq number
    and top Via (so the same branch), Routes kept."""
    cancel = Request(method="CANCEL", uri=invite.uri)
    out = cancel.headers
    vias = split_header_values(invite.headers.getlist("Via")[0])
    out.add("Via", vias[0])
    out.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        out.add(name, invite.headers[name])
    out.add("CSeq", f"{cseq_of(invite).sequence} CANCEL")
    routes = invite.headers.getlist("Route")
    if routes:
        out.setlist("Route", list(routes))
    out.add("Content-Length", "0")
    return cancel
