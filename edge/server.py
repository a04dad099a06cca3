"""``uc-edge serve``: start the node, print where it listens, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal

from edge.bootstrap import EdgeNode
from edge.logs import get_logger
from edge.settings import Settings

log = get_logger("uc_edge.server")


async def serve(settings: Settings) -> int:
    node = EdgeNode(settings)
    # Full garbage collections over a few hundred thousand live objects stall the loop for hundreds of
    # milliseconds (SIPp then retransmits in storms): collect young objects less often, and move what
    # start-up created out of the collector's view.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await node.start()
    except OSError as exc:
        await node.stop()
        print(
            f"uc-edge: cannot listen: {exc.strerror or exc} — is another server on that port? "
            "Change UC_EDGE_SIP_*_PORT / UC_EDGE_HTTP_PORT"
        )
        return 1
    for line in node.endpoint_lines():
        print(line, flush=True)
    log.info("node started", node_id=settings.node_id, endpoints=node.endpoints())
    await stop.wait()
    log.info("node stopping", node_id=settings.node_id)
    await node.stop()
    return 0
