"""The metrics API's points as JSON, each encoded once.

A year of hourly points is 8,760 rows of up to ten figures. Turning them into Python objects,
rounding them and writing JSON took 40 to 130 ms per request on a small machine, far longer
than SQLite takes to find them. So the store gives each point as its JSON (`Kind.look`, built
by SQLite or kept with an archived hourly row), and since a closed bucket never changes (nor
does a stored device state), that JSON is kept with its series: a request then fetches only
the points that are new since the last one, and sends them after the rest, kept as one text
(`store.runs`: no Python object per point, and an answer is one copy). Raw samples are
kept once GRACE old, when a retried collection can no longer replace them (the rule that closes
buckets); the newer ones are fetched per request. A series keeps the points of its longest
period, or of its retention if shorter. Up to MAX_POINTS are kept in all, the series read least
recently dropped first.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from homepanel.store.metrics import GRACE, PERIODS, RAW, Kind, MetricsStore
from homepanel.store.runs import Run, shifted

MAX_POINTS = 60_000  # about 15 MB of JSON: seven series' full year, or forty series' 24 h
_WINDOW = {tier: max(s for t, s in PERIODS.values() if t == tier) for tier, _ in PERIODS.values()}
_DEVICE_WINDOW = max(seconds for _, seconds in PERIODS.values())

Fetch = Callable[[float], Awaitable[Run]]  # the points from a time on


@dataclass
class _Encoded:
    """One series' encoded points from `start` on, oldest first: their stamps, and their JSON
    in `body`, each followed by a comma. `bounds[i] - dropped` is where point i's comma ends
    in `body`; `dropped` counts the bytes let go from its front, so `bounds` stays as is."""

    start: float
    stamps: list[int] = field(default_factory=list)
    bounds: list[int] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, run: Run) -> None:
        """Keep `run`'s points, all newer than those kept."""
        self.stamps += run.stamps
        self.bounds += shifted(run.bounds, self.dropped + len(self.body))
        self.body += run.text
        if run.stamps:
            self.body += b","

    def drop(self, count: int) -> None:
        """Let the oldest `count` points go."""
        if count > 0:
            cut = self.bounds[count - 1] - self.dropped
            del self.body[:cut], self.stamps[:count], self.bounds[:count]
            self.dropped += cut

    def array(self, index: int, newer: Run) -> bytes:
        """A JSON array of the points kept from `index` on, then `newer`'s: one copy."""
        start = self.bounds[index - 1] - self.dropped if index > 0 else 0
        with memoryview(self.body) as body, body[start:] as kept:  # released before body grows
            if not newer.text:
                return b"".join((b"[", kept[:-1], b"]"))  # its last comma left out
            return b"".join((b"[", kept, newer.text, b"]"))


class EncodedHistory:
    """JSON arrays of points for the metrics routes, from `store`."""

    def __init__(self, store: MetricsStore, max_points: int = MAX_POINTS) -> None:
        self._store = store
        self._max_points = max_points
        self._series: OrderedDict[tuple[str, int, int], _Encoded] = OrderedDict()

    async def points(self, kind: Kind, series_id: int, period: str, now: float) -> bytes:
        """The series' points of `period` (the tier PERIODS gives it), oldest first."""
        tier, seconds = PERIODS[period]

        def fetch(since: float) -> Awaitable[Run]:
            return self._store.point_run(kind, series_id, tier, since)

        kept = min(_WINDOW[tier], self._store.retention.tiers.get(tier, _WINDOW[tier]))
        final = now - GRACE if tier == RAW else now
        key = (kind.name, series_id, tier)
        return await self._encoded(key, now - seconds, now - kept, final, fetch)

    async def device_states(self, series_id: int, period: str, now: float) -> bytes:
        """The device's states of `period`, oldest first (stamps in milliseconds)."""

        def fetch(since_ms: float) -> Awaitable[Run]:
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
        run = await fetch(encoded.stamps[-1] + 1 if encoded.stamps else encoded.start)
        if encoded.stamps:  # a request that ran meanwhile may have kept some already
            run = run.split(bisect_right(run.stamps, encoded.stamps[-1]))[1]
        closed, newer = run.split(bisect_left(run.stamps, final))
        encoded.add(closed)
        encoded.drop(bisect_left(encoded.stamps, window))
        encoded.start = max(encoded.start, window)
        self._evict()
        return encoded.array(bisect_left(encoded.stamps, since), newer)

    def _evict(self) -> None:
        kept = sum(len(encoded.stamps) for encoded in self._series.values())
        while kept > self._max_points and len(self._series) > 1:
            kept -= len(self._series.popitem(last=False)[1].stamps)
