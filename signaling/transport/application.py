"""Default SIP application behaviour and a small method router to plug real handlers into.

    router = SipRouter()
    router.route("REGISTER", registrar_handler)      # handler(event, hub) -> None | Awaitable[None]
    hub = SipTransportHub(endpoint, application=router)

Without a handler: OPTIONS gets 200 OK (Allow, Accept, Supported), a method we know but have no
handler for gets 405 with Allow, an unknown method gets 501. ACKs are absorbed; a CANCEL (already
answered 200 by the endpoint) ends the INVITE it cancels with 487 unless a CANCEL handler is routed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from signaling.sip.events import Event, RequestReceived
from signaling.sip.message import build_response
from signaling.transport.hub import SipTransportHub

Handler = Callable[[RequestReceived, SipTransportHub], Awaitable[None] | None]

KNOWN_METHODS = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    )
)


class SipRouter:
    def __init__(self, *, accept: str = "application/sdp", supported: str = "path, outbound") -> None:
        self.accept = accept
        self.supported = supported
        self._handlers: dict[str, Handler] = {}
        self.other_events: Callable[[Event, SipTransportHub], Awaitable[None] | None] | None = None
        """Called with every event that is not a request (responses, timeouts, transport errors)."""

    def route(self, method: str, handler: Handler) -> None:
        self._handlers[method.upper()] = handler

    @property
    def allow(self) -> str:
        return ", ".join(sorted({"OPTIONS", "ACK", "CANCEL", *self._handlers}))

    def on_event(self, event: Event, hub: SipTransportHub) -> Awaitable[None] | None:
        if not isinstance(event, RequestReceived):
            return self.other_events(event, hub) if self.other_events is not None else None
        method = event.request.method
        handler = self._handlers.get(method)
        if handler is not None:
            return handler(event, hub)
        if event.transaction is None:  # ACK for a 2xx: nothing to answer
            return None
        request = event.request
        if method == "CANCEL":
            if event.cancels is not None:
                invite_tx = hub.endpoint.server_transaction(event.cancels)
                if invite_tx is not None:
                    hub.respond(event.cancels, build_response(invite_tx.request, 487))
            return None
        if method == "OPTIONS":
            headers = [("Allow", self.allow), ("Accept", self.accept), ("Supported", self.supported)]
            hub.respond(event.transaction, build_response(request, 200, headers=headers))
        elif method in KNOWN_METHODS:
            hub.respond(event.transaction, build_response(request, 405, headers=[("Allow", self.allow)]))
        else:
            hub.respond(event.transaction, build_response(request, 501, headers=[("Allow", self.allow)]))
        return None
