"""Redis key layout of the hot path. Every key starts with a configurable prefix (default ``uc:``).

- ``uc:loc:b:<aor>`` (hash): binding_id -> Binding JSON, the registrar bindings of one AOR.
- ``uc:loc:e:<aor>`` (sorted set): binding_id scored by its ``expires_at`` (epoch s), per-binding expiry.
- ``uc:loc:aors`` (sorted set): AOR scored by its latest ``expires_at``; feeds ``uc-edge registrations``.
- ``uc:call:<call_id>`` (string): ``{"node_id", "state", "updated_at"}`` JSON, PX = the call's TTL.
- ``uc:nodecalls:<node_id>`` (set): call ids cached by the node; TTL follows its longest-lived call.
- ``uc:node:<node_id>`` (string): epoch seconds of the node's last heartbeat, PX = heartbeat TTL.
- ``uc:route:<target>`` (string): routing result JSON, PX = cache TTL.
- ``uc:rl:<key>`` (sorted set): one member per allowed request, scored by Redis server time in µs;
  PEXPIRE = the window, so an idle key vanishes.
- ``uc:idem:<key>`` (string): epoch seconds of the claim; ``SET NX PX`` with the idempotency TTL (24-72 h).

Why two keys per AOR: Redis 7.0 has no per-field hash expiry, so the ``e`` sorted set carries each binding's
deadline; scripts drop fields whose deadline passed on every access, and both keys get a whole-key TTL of
the latest deadline plus a grace so an AOR nobody touches again still vanishes. The ``aors`` index is pruned
by score on every write. Key families never share a prefix (``loc:b`` / ``loc:e``, ``node`` /
``nodecalls``), so no AOR, call id or node id can make one key collide with another family's.

Scripts touch keys of one AOR plus the ``aors`` index, so this layout is for a single Redis (or Sentinel),
not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "uc:"


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: str = DEFAULT_PREFIX

    def location_bindings(self, aor: str) -> str:
        return f"{self.prefix}loc:b:{aor}"

    def location_expiries(self, aor: str) -> str:
        return f"{self.prefix}loc:e:{aor}"

    def location_index(self) -> str:
        return f"{self.prefix}loc:aors"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    def node_calls(self, node_id: str) -> str:
        return f"{self.prefix}nodecalls:{node_id}"

    def node_heartbeat(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def route(self, target: str) -> str:
        return f"{self.prefix}route:{target}"

    def rate_limit(self, key: str) -> str:
        return f"{self.prefix}rl:{key}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"
