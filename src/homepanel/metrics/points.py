"""The metrics API's points as JSON, each encoded once.

A year of hourly points is 8,760 rows of up to ten figures. Turning them into Python objects,
rounding them and writing JSON took 40 to 130 ms per request on a small machine, far longer
than SQLite takes to find them. So the store gives each point as its JSON (`Kind.look`, built
by SQLite or kept with an archived hourly row), and since a closed bucket never changes (nor
does a stored device state), that JSON is kept with its series: a request then fetches only
the points that are new since the last one and joins the rest. Raw samples are
kept once GRACE old, when a retried collection can no longer replace them (the rule that closes
buckets); the newer ones are fetched per request. A series keeps the points of its longest
period, or of its retention if shorter. Up to MAX_POINTS are kept in all, the series read least
recently dropped first.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from homepanel.store.metrics import GRACE, PERIODS, RAW, Kind, MetricsStore

MAX_POINTS = 60_000  # about 15 MB of JSON: seven series' full year, or forty series' 24 h
_WINDOW = {tier: max(s for t, s in PERIODS.values() if t == tier) for tier, _ in PERIODS.values()}
_DEVICE_WINDOW = max(seconds for _, seconds in PERIODS.values())

Fetch = Callable[[float], Awaitable[Sequence[tuple[int, bytes]]]]  # (stamp, JSON) from a time on
_STAMP, _TEXT = itemgetter(0), itemgetter(1)


@dataclass
class _Encoded:
    """One series' encoded points from `start` on, oldest first."""

    start: float
    stamps: list[int] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)


class EncodedHistory:
    """JSON arrays of points for the metrics routes, from `store`."""

    def __init__(self, store: MetricsStore, max_points: int = MAX_POINTS) -> None:
        self._store = store
        self._max_points = max_points
        self._series: OrderedDict[tuple[str, int, int], _Encoded] = OrderedDict()

    async def points(self, kind: Kind, series_id: int, period: str, now: float) -> bytes:
        """The series' points of `period` (the tier PERIODS gives it), oldest first."""
        tier, seconds = PERIODS[period]

        def fetch(since: float) -> Awaitable[Sequence[tuple[int, bytes]]]:
            return self._store.point_texts(kind, series_id, tier, since)

        kept = min(_WINDOW[tier], self._store.retention.tiers.get(tier, _WINDOW[tier]))
        final = now - GRACE if tier == RAW else now
        key = (kind.name, series_id, tier)
        return await self._encoded(key, now - seconds, now - kept, final, fetch)

    async def device_states(self, series_id: int, period: str, now: float) -> bytes:
        """The device's states of `period`, oldest first (stamps in milliseconds)."""

        def fetch(since_ms: float) -> Awaitable[Sequence[tuple[int, bytes]]]:
            return self._store.device_points(series_id, since_ms / 1000)

        since = now - PERIODS[period][1]
        kept = min(_DEVICE_WINDOW, self._store.retention.device_states)
        key = ("device", series_id, 0)
        return await self._encoded(key, since * 1000, (now - kept) * 1000, now * 1000, fetch)

    async def _encoded(
        self,
        key: tuple[str, int, int],
        since: float,
        window: float,
        final: float,
        fetch: Fetch,
    ) -> bytes:
        """The series' points from `since` on: those kept, plus the newer ones fetched now
        (and kept if stamped before `final`). Points older than `window` (the longest period
        that reads them, or their retention) are let go."""
        since = max(since, window)
        encoded = self._series.get(key)
        if encoded is None or since < encoded.start:  # never asked for so far back
            encoded = self._series[key] = _Encoded(since)
        self._series.move_to_end(key)
        rows = await fetch(encoded.stamps[-1] + 1 if encoded.stamps else encoded.start)
        if encoded.stamps:  # a request that ran meanwhile may have kept some already
            rows = rows[bisect_right(rows, encoded.stamps[-1], key=_STAMP) :]
        stamps = list(map(_STAMP, rows))  # not zip(*rows): 0.9 ms more for a year's rows
        closed = bisect_left(stamps, final)
        encoded.stamps += stamps[:closed]
        encoded.texts += map(_TEXT, rows[:closed])
        old = bisect_left(encoded.stamps, window)
        del encoded.stamps[:old], encoded.texts[:old]
        encoded.start = max(encoded.start, window)
        self._evict()
        first = bisect_left(encoded.stamps, since)
        return _array(encoded.texts[first:] + list(map(_TEXT, rows[closed:])))

    def _evict(self) -> None:
        kept = sum(len(encoded.stamps) for encoded in self._series.values())
        while kept > self._max_points and len(self._series) > 1:
            kept -= len(self._series.popitem(last=False)[1].stamps)


def _array(texts: list[bytes]) -> bytes:
    """A JSON array of `texts`, with one copy of them besides the join (answers run to MBs)."""
    return b"[%b]" % b",".join(texts)
