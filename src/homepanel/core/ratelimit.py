"""Per-client-IP rate limits on the `limits` library, and the client IP we believe.

The client IP is the TCP peer, unless the peer is one of `TRUSTED_PROXIES`: only then is
`X-Forwarded-For` read, right to left, skipping our own proxies. Anyone else could send a
made-up header to dodge a limit.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from homepanel.core.errors import RateLimited

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(request: Request, trusted: Sequence[Network]) -> str:
    """The address a request came from, following `X-Forwarded-For` only through trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


class RateLimiter:
    """Sliding-window-counter limits kept in memory (one worker process by design).

    Two counters per client and window, weighted: O(1) per request. The exact moving window
    keeps one entry per request and, in `limits`' memory storage, expires them through a
    worker thread; at dashboard polling rates that cost more than the rest of a request.
    """

    def __init__(self) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {}

    async def hit(self, limit: str, scope: str, key: str) -> None:
        """Count one request against `limit`; raise 429 with `Retry-After` once it is spent."""
        item = self._items.get(limit) or self._items.setdefault(limit, parse(limit))
        if await self._limiter.hit(item, scope, key):
            return
        stats = await self._limiter.get_window_stats(item, scope, key)
        raise RateLimited(math.ceil(stats.reset_time - time.time()))

    async def reset(self) -> None:
        await self._limiter.storage.reset()
