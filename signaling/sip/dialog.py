"""Dialogs (RFC 3261 §12): identity, route set, remote target, CSeq spaces and in-dialog requests.

A :class:`Dialog` is created

* as UAC from the request we sent and a 101-299 response carrying a To tag
  (:meth:`Dialog.create_uac`): a 1xx makes an *early* dialog, a 2xx a *confirmed* one; a forked
  INVITE can create several early dialogs, one per To tag;
* as UAS from the request we received and the response we send with our To tag
  (:meth:`Dialog.create_uas`).

It builds in-dialog requests (:meth:`Dialog.create_request`; :meth:`Dialog.create_ack` for the ACK
of a 2xx, which reuses the INVITE's CSeq number) with the route set applied per §12.2.1.1 (loose
routing when the first route carries ``lr``, strict routing otherwise), checks incoming in-dialog
requests (:meth:`Dialog.receive_request`: a CSeq lower than the remote CSeq is a 500) and answers
them with our tag (:meth:`Dialog.create_response`). CANCEL is never built here: it is not an
in-dialog request, it copies the INVITE's Via branch (``message.build_cancel``).

:class:`DialogSet` is the bounded registry of dialogs keyed by :class:`DialogId`; it finds the
dialog of an incoming request or response and builds the 481 for in-dialog requests without one.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Iterable, Iterator

from signaling.sip.errors import LocalProtocolError, RemoteProtocolError, SipError
from signaling.sip.message import (
    URI,
    HeaderGroups,
    IndexedHeaders,
    Request,
    Response,
    SipMessage,
    add_to_groups,
    build_response,
    cseq_of,
    from_tag,
    new_branch,
    parse_uri,
    split_header_values,
    to_tag,
)

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogSet",
    "DialogState",
    "DialogTableFull",
    "LocalAddress",
    "is_loose_route",
    "uri_of",
]

TARGET_REFRESH_METHODS = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))
"""Requests (and their 2xx) whose Contact replaces the remote target (§12.2, RFC 3311, RFC 6665)."""

CSEQ_MAX = 2**32 - 1
_ANGLE_URI_RE = re.compile(r"<([^<>]*)>")


class DialogTableFull(SipError):
    """The dialog registry is at its bound: the caller answers 503 instead of creating a dialog."""


@dataclasses.dataclass(frozen=True, slots=True)
class LocalAddress:
    """Where we send from, written into the Via of requests we build (``transport`` as in a Via:
    ``UDP``, ``TCP``, ``TLS``, ``WS``, ``WSS``)."""

    transport: str
    host: str
    port: int

    def via(self, branch: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"SIP/2.0/{self.transport.upper()} {host}:{self.port};branch={branch or new_branch()};rport"


@dataclasses.dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID + local tag + remote tag, from our point of view."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_incoming_request(cls, request: Request) -> DialogId | None:
        """The id a request we receive names (our tag is in To); ``None`` outside a dialog."""
        local = to_tag(request)
        if local is None:
            return None
        return cls(request.headers.get("Call-ID") or "", local, from_tag(request) or "")

    @classmethod
    def of_incoming_response(cls, response: Response) -> DialogId | None:
        """The id a response to our request names (our tag is in From); ``None`` without a To tag."""
        remote = to_tag(response)
        if remote is None:
            return None
        return cls(response.headers.get("Call-ID") or "", from_tag(response) or "", remote)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def uri_of(value: str) -> URI:
    """The URI of a raw name-addr (``"Bob" <sip:b@h;lr>;p=1``) or addr-spec value; ``ValueError``."""
    match = _ANGLE_URI_RE.search(value)
    if match is not None:
        text = match.group(1).strip()
    else:
        # addr-spec: parameters after ';' belong to the header, not the URI (§20.10).
        text = value.split(";", 1)[0].strip()
    if "?" in text:
        text = text.split("?", 1)[0]  # URI headers are never used to route
    return URI.parse(text)


def _uri_text_of(value: str) -> str:
    match = _ANGLE_URI_RE.search(value)
    text = match.group(1).strip() if match is not None else value.split(";", 1)[0].strip()
    return text.split("?", 1)[0]


def is_loose_route(route: str) -> bool:
    """A Route/Record-Route value whose URI carries ``lr`` (RFC 3261 loose routing)."""
    try:
        return "lr" in uri_of(route).parameters
    except ValueError:
        return False


def _header_values(message: SipMessage, name: str) -> list[str]:
    return [item for value in message.headers.getlist(name) for item in split_header_values(value)]


def _contact_uri(message: SipMessage) -> str | None:
    contacts = _header_values(message, "Contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    text = _uri_text_of(contacts[0])
    _check_uri(text)  # validate: raises ValueError
    return text


# A peer sends the same Contact URI call after call; parsing it only to validate costs more than the
# rest of building a dialog. Parsing is a pure function of the text and only successes are cached, so an
# invalid URI raises every time.
@functools.lru_cache(maxsize=1024)
def _check_uri(text: str) -> None:
    URI.parse(text)


class Dialog:
    """One dialog's state (RFC 3261 §12.1, §12.2). See the module docstring."""

    __slots__ = (
        "id",
        "local_contact",
        "local_cseq",
        "local_header",
        "remote_cseq",
        "remote_header",
        "remote_target",
        "route_set",
        "secure",
        "state",
        "we_created",
    )

    def __init__(
        self,
        *,
        dialog_id: DialogId,
        state: DialogState,
        local_header: str,
        remote_header: str,
        remote_target: str,
        route_set: list[str],
        local_cseq: int | None,
        remote_cseq: int | None,
        local_contact: str | None,
        secure: bool,
        we_created: bool,
    ) -> None:
        self.id = dialog_id
        self.state = state
        self.local_header = local_header
        """Our From (as UAC) / To (as UAS) value, tag included: the From of our requests."""
        self.remote_header = remote_header
        """The peer's address with its tag: the To of our requests."""
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.local_contact = local_contact
        self.secure = secure
        self.we_created = we_created
        """True when we sent the dialog-creating request, i.e. we chose the Call-ID (§14.1 timers)."""

    def __repr__(self) -> str:
        return f"<Dialog {self.id.call_id} {self.id.local_tag}/{self.id.remote_tag} {self.state.value}>"

    # ------------------------------------------------------------------ creation

    @classmethod
    def create_uac(cls, request: Request, response: Response, local_contact: str | None = None) -> Dialog:
        """§12.1.2: the dialog a 101-299 response with a To tag creates for the request we sent."""
        if not 101 <= response.code <= 299:
            raise LocalProtocolError(f"a {response.code} response does not create a dialog")
        remote_tag = to_tag(response)
        if remote_tag is None:
            raise RemoteProtocolError("dialog-creating response has no To tag", None)
        local_tag = from_tag(request)
        if local_tag is None:
            raise LocalProtocolError("our request has no From tag")
        try:
            target = _contact_uri(response) or _uri_text_of(str(request.uri))
        except ValueError:
            raise RemoteProtocolError("Contact of the response is not a valid URI", None) from None
        return cls(
            dialog_id=DialogId(request.headers["Call-ID"], local_tag, remote_tag),
            state=DialogState.CONFIRMED if response.code >= 200 else DialogState.EARLY,
            local_header=request.headers["From"],
            remote_header=response.headers["To"],
            remote_target=target,
            route_set=list(reversed(_header_values(response, "Record-Route"))),
            local_cseq=cseq_of(request).sequence,
            remote_cseq=None,
            local_contact=local_contact or request.headers.get("Contact"),
            secure=request.uri.scheme == "sips",
            we_created=True,
        )

    @classmethod
    def create_uas(cls, request: Request, response: Response, local_contact: str | None = None) -> Dialog:
        """§12.1.1: the dialog our 101-299 ``response`` (carrying our To tag) creates for ``request``."""
        if not 101 <= response.code <= 299:
            raise LocalProtocolError(f"a {response.code} response does not create a dialog")
        local_tag = to_tag(response)
        if local_tag is None:
            raise LocalProtocolError("our dialog-creating response has no To tag")
        try:
            target = _contact_uri(request)
        except ValueError:
            raise RemoteProtocolError("Contact is not a valid URI", 400) from None
        if target is None:
            raise RemoteProtocolError("dialog-creating request has no Contact", 400)
        return cls(
            dialog_id=DialogId(request.headers["Call-ID"], local_tag, from_tag(request) or ""),
            state=DialogState.CONFIRMED if response.code >= 200 else DialogState.EARLY,
            local_header=response.headers["To"],
            remote_header=request.headers["From"],
            remote_target=target,
            route_set=_header_values(request, "Record-Route"),
            local_cseq=None,
            remote_cseq=cseq_of(request).sequence,
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
            we_created=False,
        )

    # ------------------------------------------------------------------ state updates

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def confirm(self, response: Response) -> None:
        """UAC: a 2xx arrived on this early dialog (§13.2.2.4: route set recomputed from the 2xx)."""
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("cannot confirm a terminated dialog")
        if self.we_created and self.state is DialogState.EARLY:
            self.route_set = list(reversed(_header_values(response, "Record-Route")))
        self.state = DialogState.CONFIRMED
        self.update_remote_target(response)

    def update_remote_target(self, message: SipMessage) -> None:
        """Target refresh (§12.2.1.2, §12.2.2): a Contact in the message replaces the remote target."""
        try:
            target = _contact_uri(message)
        except ValueError:
            return  # keep the old target rather than break the dialog on a bad Contact
        if target is not None:
            self.remote_target = target

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def next_local_cseq(self) -> int:
        """The CSeq number of our next in-dialog request (§12.2.1.1: strictly increasing)."""
        if self.local_cseq is None:
            self.local_cseq = 1
        elif self.local_cseq >= CSEQ_MAX:
            raise LocalProtocolError("local CSeq space of the dialog is exhausted")
        else:
            self.local_cseq += 1
        return self.local_cseq

    # ------------------------------------------------------------------ incoming

    def matches_request(self, request: Request) -> bool:
        return DialogId.of_incoming_request(request) == self.id

    def matches_response(self, response: Response) -> bool:
        return DialogId.of_incoming_response(response) == self.id

    def receive_request(self, request: Request) -> None:
        """§12.2.2: check an in-dialog request and advance the remote CSeq.

        Raises :class:`RemoteProtocolError` with 481 when it is not for this dialog and 500 when
        its CSeq is lower than the remote CSeq (out of order). ACK and CANCEL carry the INVITE's
        number and neither check nor advance it.
        """
        if not self.matches_request(request):
            raise RemoteProtocolError("request does not match the dialog", 481)
        if self.state is DialogState.TERMINATED and request.method != "ACK":
            raise RemoteProtocolError("dialog is terminated", 481)
        if request.method in ("ACK", "CANCEL"):
            return
        number = cseq_of(request).sequence
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise RemoteProtocolError(f"CSeq {number} is lower than {self.remote_cseq}", 500)
        self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS:
            self.update_remote_target(request)

    # ------------------------------------------------------------------ outgoing

    def next_hop(self, request: Request) -> URI:
        """Where a request built by this dialog goes first (§8.1.2): its top Route, else its
        Request-URI -- which is the strict router itself when the route set starts with one."""
        if self.route_set and not is_loose_route(self.route_set[0]):
            return request.uri
        routes = _header_values(request, "Route")
        if routes:
            return uri_of(routes[0])
        return request.uri

    def _routing(self) -> tuple[str, list[str]]:
        """§12.2.1.1: (Request-URI, Route values) for the current target and route set."""
        if not self.route_set:
            return self.remote_target, []
        if is_loose_route(self.route_set[0]):
            return self.remote_target, list(self.route_set)
        # Strict router: it gets the Request-URI; the remote target goes last in the Route set.
        first = _uri_text_of(self.route_set[0])
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        local_address: LocalAddress,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        branch: str | None = None,
    ) -> Request:
        """An in-dialog request (§12.2.1.1). ``cseq`` defaults to the next local CSeq number."""
        if method == "CANCEL":
            raise LocalProtocolError("CANCEL is not an in-dialog request: build it from the INVITE")
        if method == "ACK" and cseq is None:
            raise LocalProtocolError("an ACK reuses the INVITE's CSeq number: use create_ack()")
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise LocalProtocolError(f"cannot send {method} on a terminated dialog")
        number = self.next_local_cseq() if cseq is None else cseq
        request_uri, routes = self._routing()
        request = Request(method=method, uri=parse_uri(request_uri), body=body)
        # Built as indexed groups (as build_request does): same header order and grouping as adding them
        # one by one, and the layers below read these headers by index and memo.
        groups: HeaderGroups = {
            "via": ("Via", [local_address.via(branch)]),
            "max-forwards": ("Max-Forwards", ["70"]),
            "from": ("From", [self.local_header]),
            "to": ("To", [self.remote_header]),
            "call-id": ("Call-ID", [self.id.call_id]),
            "cseq": ("CSeq", [f"{number} {method}"]),
        }
        if routes:
            groups["route"] = ("Route", list(routes))
        if self.local_contact is not None and method in TARGET_REFRESH_METHODS:
            groups["contact"] = ("Contact", [self.local_contact])
        add_to_groups(groups, headers)
        if body and content_type is not None:
            groups["content-type"] = ("Content-Type", [content_type])
        groups["content-length"] = ("Content-Length", [str(len(body))])
        request.headers = IndexedHeaders.from_groups(groups)
        return request

    def create_ack(
        self,
        invite_cseq: int,
        local_address: LocalAddress,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to our INVITE numbered ``invite_cseq`` (§13.2.2.4: own branch)."""
        return self.create_request(
            "ACK", local_address, cseq=invite_cseq, body=body, content_type=content_type
        )

    def create_response(
        self,
        request: Request,
        status_code: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """A response with our tag; Contact on 101-299 to target-refresh requests (§12.1.1, §12.2.2)."""
        extra = list(headers)
        if (
            101 <= status_code <= 299
            and request.method in TARGET_REFRESH_METHODS
            and self.local_contact is not None
        ):
            extra.insert(0, ("Contact", self.local_contact))
        return build_response(
            request,
            status_code,
            reason,
            to_tag=self.id.local_tag,
            headers=extra,
            body=body,
            content_type=content_type,
            copy_record_route=101 <= status_code <= 299 and request.method == "INVITE",
        )


class DialogSet:
    """Bounded registry of dialogs keyed by :class:`DialogId` (the glue's lookup table)."""

    def __init__(self, max_dialogs: int = 100_000) -> None:
        if max_dialogs <= 0:
            raise ValueError("max_dialogs must be positive")
        self.max_dialogs = max_dialogs
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def add(self, dialog: Dialog) -> None:
        """Register ``dialog``; raises :class:`DialogTableFull` at the bound (answer 503)."""
        if dialog.id in self._dialogs:
            self._dialogs[dialog.id] = dialog
            return
        if len(self._dialogs) >= self.max_dialogs:
            raise DialogTableFull(f"{self.max_dialogs} dialogs already exist")
        self._dialogs[dialog.id] = dialog

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def remove(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.pop(dialog_id, None)

    def prune_terminated(self) -> int:
        dead = [key for key, dialog in self._dialogs.items() if dialog.terminated]
        for key in dead:
            del self._dialogs[key]
        return len(dead)

    def find_for_request(self, request: Request) -> Dialog | None:
        dialog_id = DialogId.of_incoming_request(request)
        return self._dialogs.get(dialog_id) if dialog_id is not None else None

    def find_for_response(self, response: Response) -> Dialog | None:
        dialog_id = DialogId.of_incoming_response(response)
        return self._dialogs.get(dialog_id) if dialog_id is not None else None

    def early_dialogs(self, call_id: str, local_tag: str) -> list[Dialog]:
        """Every early dialog one forked request of ours created (same Call-ID and From tag)."""
        return [
            dialog
            for dialog in self._dialogs.values()
            if dialog.state is DialogState.EARLY
            and dialog.id.call_id == call_id
            and dialog.id.local_tag == local_tag
        ]

    def reject_unmatched(self, request: Request) -> Response | None:
        """§12.2.2: the 481 for an in-dialog request (To tag present) no dialog matches.

        ``None`` when the request has no To tag, matches a dialog, or is an ACK (never answered).
        """
        if request.method == "ACK" or to_tag(request) is None:
            return None
        if self.find_for_request(request) is not None:
            return None
        return build_response(request, 481)
