"""Points as runs: many points' JSON as one text, the way the API joins them.

A year of a series is 8,760 to 13,000 points. Handed to Python as a row each, they took
SQLite's `sqlite3` module about 0.5 µs a row, most of a cold year's answer; SQLite itself
joins them in a fraction of that. So the store asks SQLite for each table's points as one
aggregate row: their stamps and sizes as JSON arrays, and their texts joined by commas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice, pairwise
from operator import lt
from typing import Any

from pydantic_core import from_json

# SQL of the aggregate a run is read from: `ts` and `p` (its point as a BLOB) from the rows.
RUN_COLUMNS = (
    "json_group_array(ts), json_group_array(length(p) + 1), CAST(group_concat(p, ',') AS BLOB)"
)


@dataclass(slots=True)
class Run:
    """Points in stamp order, their JSON joined by commas in `text`. `bounds` counts the bytes
    up to each point's comma: point i is `text[bounds[i - 1] : bounds[i] - 1]` (from 0 for the
    first). Sums, not lengths, so that slicing a run needs no walk through it."""

    stamps: list[int]
    bounds: list[int]
    text: bytes

    @classmethod
    def of_aggregate(cls, stamps: str | None, sizes: str | None, text: bytes | None) -> Run:
        """A run from the RUN_COLUMNS of some rows (None when there were none)."""
        if not text or stamps is None or sizes is None:
            return EMPTY
        return cls(from_json(stamps), list(accumulate(from_json(sizes))), text)

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[int, bytes]]) -> Run:
        """A run of (stamp, point) rows, in their order."""
        if not rows:
            return EMPTY
        texts = [text for _, text in rows]
        bounds = list(accumulate([len(text) + 1 for text in texts]))
        return cls([stamp for stamp, _ in rows], bounds, b",".join(texts))

    def rows(self) -> list[tuple[int, bytes]]:
        """(stamp, point) of each point."""
        spans = pairwise([0, *self.bounds])
        return [
            (stamp, self.text[start : bound - 1])
            for stamp, (start, bound) in zip(self.stamps, spans, strict=True)
        ]

    def split(self, index: int) -> tuple[Run, Run]:
        """The points before `index`, and the rest."""
        if index <= 0:
            return EMPTY, self
        if index >= len(self.stamps):
            return self, EMPTY
        cut = self.bounds[index - 1]
        rest = [bound - cut for bound in islice(self.bounds, index, None)]
        before = Run(self.stamps[:index], self.bounds[:index], self.text[: cut - 1])
        return before, Run(self.stamps[index:], rest, self.text[cut:])

    def ordered(self) -> bool:
        """Whether the stamps rise: SQLite returns an aggregate's rows in the order it reads
        them, which for our tables is their key's; its documentation does not promise it."""
        return all(map(lt, self.stamps, islice(self.stamps, 1, None)))


EMPTY = Run([], [], b"")


def merged(stored: Iterable[Run], waiting: Mapping[int, tuple[int, bytes]]) -> Run:
    """Runs of stored points (in any order) and the points waiting in memory, keyed by
    stamp, as one run; a waiting point replaces a stored one with its stamp (a retried
    sample)."""
    runs = sorted((run for run in stored if run.stamps), key=lambda run: run.stamps[0])
    fresh = Run.of_rows(sorted(waiting.values()))
    in_turn = [*runs, fresh] if fresh.stamps else runs
    if all(run.ordered() for run in in_turn) and all(
        before.stamps[-1] < after.stamps[0] for before, after in pairwise(in_turn)
    ):
        return joined(in_turn)
    rows = sorted(row for run in runs for row in run.rows())
    return Run.of_rows(merged_rows(rows, waiting))


def merged_rows(stored: list[Any], waiting: Mapping[int, Any]) -> list[Any]:
    """Stored rows, in order, and waiting ones, each keyed by its first value, oldest first;
    a waiting row replaces a stored one with the same key (a retried sample)."""
    if not waiting:
        return stored
    if stored and min(waiting) <= stored[-1][0]:
        stored = [row for row in stored if row[0] not in waiting]
        return sorted([*stored, *waiting.values()])
    return [*stored, *sorted(waiting.values())]


def joined(runs: Sequence[Run]) -> Run:
    """Runs that follow one another in time, as one."""
    runs = [run for run in runs if run.stamps]
    if len(runs) <= 1:
        return runs[0] if runs else EMPTY
    stamps: list[int] = []
    bounds: list[int] = []
    for run in runs:
        stamps += run.stamps
        bounds += shifted(run.bounds, bounds[-1] if bounds else 0)
    return Run(stamps, bounds, b",".join(run.text for run in runs))


def shifted(bounds: list[int], offset: int) -> Iterable[int]:
    """`bounds` moved `offset` bytes on. At 0 (a run read cold) they are kept as they are, with
    no Python step per point."""
    return map(offset.__add__, bounds) if offset else bounds
