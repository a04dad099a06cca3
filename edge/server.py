"""``uc-edge serve``: start the node, print where it listens, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import resource
import signal

from edge.bootstrap import EdgeNode
from edge.logs import get_logger
from edge.settings import Settings

log = get_logger("uc_edge.server")


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit: every relayed call holds four UDP sockets and every
    TCP/TLS/WebSocket client one more, so the usual soft limit of 1024 caps a node near 250 calls."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open file limit unchanged", soft=soft, hard=hard, error=str(exc))
            return soft
        return hard
    return soft


def tune_gc() -> None:
    """Full garbage collections over a few hundred thousand live objects stall the loop for hundreds of
    milliseconds (SIPp then retransmits in storms): collect young objects less often, and move what
    start-up created out of the collector's view. Called once the node is built (benches that measure the
    node's cost in process call it too, so they pay what the server pays)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(settings: Settings) -> int:
    open_files = raise_open_file_limit()
    node = EdgeNode(settings)
    tune_gc()
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
    log.info("node started", node_id=settings.node_id, endpoints=node.endpoints(), open_files=open_files)
    await stop.wait()
    log.info("node stopping", node_id=settings.node_id)
    await node.stop()
    return 0
