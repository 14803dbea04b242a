"""Periodic background jobs: aligned ticks, no overlap, retries, and a clock tests can drive.

A job runs at every multiple of its interval (10:00:00, 10:00:10, ...), so samples from
different runs line up. A run that overruns skips the ticks it missed rather than bursting,
and one job never runs twice at once. Collector calls are retried with tenacity, 1 s, 2 s and
4 s apart, then the tick is skipped with one log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from homepanel.core.errors import ApiError

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_WAITS = (1.0, 2.0, 4.0)


class Clock(Protocol):
    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def next_tick(now: float, interval: float) -> float:
    return (now // interval + 1) * interval


JobDone = Callable[[str, bool, float], None]  # (job name, succeeded, seconds)


async def every(
    interval: float,
    job: Callable[[float], Awaitable[bool | None]],
    *,
    name: str,
    clock: Clock = SYSTEM_CLOCK,
    on_done: JobDone | None = None,
) -> None:
    """Run `job(tick)` at each multiple of `interval` until cancelled. A job that raises, or
    returns False (it skipped part of its work), counts as failed."""
    while True:
        now = clock.time()
        tick = next_tick(now, interval)
        await clock.sleep(tick - now)
        started = time.perf_counter()
        try:
            ok = await job(tick) is not False
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad run must not end the job for good
            logger.exception("%s failed", name)
            ok = False
        seconds = time.perf_counter() - started
        if on_done is not None:
            on_done(name, ok, seconds)
        if seconds > interval:
            logger.warning("%s took longer than its %g s interval", name, interval)


async def retried_or_skipped(
    call: Callable[[], Awaitable[T]], *, what: str, clock: Clock
) -> T | None:
    """`with_retries`, but a call that still fails is logged and skipped (None)."""
    try:
        return await with_retries(call, what=what, clock=clock)
    except ApiError as exc:
        logger.warning("Skipped %s this round: %s", what, exc.detail)
        return None


async def with_retries(call: Callable[[], Awaitable[T]], *, what: str, clock: Clock) -> T:
    """`call()`, retried on upstream errors after 1 s, 2 s and 4 s; the last error is raised."""

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        detail = getattr(error, "detail", error)
        logger.info("%s failed (%s); try %d", what, detail, state.attempt_number + 1)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ApiError),
        stop=stop_after_attempt(len(RETRY_WAITS) + 1),
        wait=wait_exponential(multiplier=RETRY_WAITS[0], max=RETRY_WAITS[-1]),
        sleep=clock.sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    return await retrying(call)
