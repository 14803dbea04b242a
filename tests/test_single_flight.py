"""Identical concurrent upstream GETs share one call (`core.http.SingleFlight`), whoever leaves.

The end-to-end count of upstream requests is in test_proxmox.py; these cover who runs the
call and what each caller gets when callers go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import pytest

from homepanel.core.http import SingleFlight


class Upstream:
    """A slow call that counts how often it ran and how often it was cancelled."""

    def __init__(self, seconds: float = 0.05, error: str | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.started = 0
        self.cancelled = 0

    async def call(self) -> str:
        self.started += 1
        answer = f"answer {self.started}"
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise ValueError(self.error)  # a new one each time: no reference kept here
        return answer


async def callers(flight: SingleFlight, upstream: Upstream, count: int) -> list[asyncio.Task]:
    """`count` callers of the same key, each one started after the one before."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(flight.run("status", upstream.call)))
        await asyncio.sleep(0)
    return tasks


async def test_concurrent_callers_share_one_call_and_a_later_one_calls_again() -> None:
    flight, upstream = SingleFlight(), Upstream()
    answers = await asyncio.gather(*await callers(flight, upstream, 5))
    assert answers == ["answer 1"] * 5
    assert upstream.started == 1
    assert await flight.run("status", upstream.call) == "answer 2"  # not a cache
    assert await flight.run("other", upstream.call) == "answer 3"


async def test_the_first_caller_leaving_hands_the_call_to_those_still_waiting() -> None:
    flight, upstream = SingleFlight(), Upstream()
    first, *waiting = await callers(flight, upstream, 4)
    first.cancel()
    assert await asyncio.gather(*waiting) == ["answer 2"] * 3  # one new call, shared
    assert first.cancelled()
    assert (upstream.started, upstream.cancelled) == (2, 1)


async def test_a_waiting_caller_leaving_leaves_the_call_to_the_others() -> None:
    flight, upstream = SingleFlight(), Upstream()
    first, leaving, staying = await callers(flight, upstream, 3)
    leaving.cancel()
    assert await asyncio.gather(first, staying) == ["answer 1"] * 2
    assert leaving.cancelled()
    assert (upstream.started, upstream.cancelled) == (1, 0)


async def test_everyone_leaving_cancels_the_call_and_the_next_caller_starts_anew() -> None:
    flight, upstream = SingleFlight(), Upstream()
    tasks = await callers(flight, upstream, 3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (upstream.started, upstream.cancelled) == (1, 1)
    assert await flight.run("status", upstream.call) == "answer 2"


async def test_a_failure_reaches_every_caller_and_is_not_reported_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flight, upstream = SingleFlight(), Upstream(error="upstream broke")
    outcomes = await asyncio.gather(*await callers(flight, upstream, 3), return_exceptions=True)
    assert [str(outcome) for outcome in outcomes] == ["upstream broke"] * 3
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        alone = Upstream(error="nobody else waits")
        # Not pytest.raises: its record of the exception would keep the future alive.
        with contextlib.suppress(ValueError):
            await flight.run("alone", alone.call)
        gc.collect()  # an unretrieved exception is logged when its future is collected
    assert alone.started == 1
    assert "never retrieved" not in caplog.text
    assert upstream.started == 1
