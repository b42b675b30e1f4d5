"""Awaiting many API calls at once, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable


async def gather_bounded(calls: Iterable[Awaitable[None]], limit: int) -> None:
    """Await ``calls`` concurrently, at most ``limit`` at a time (each is started only when
    a place is free; an exception propagates as from ``asyncio.gather``)."""
    places = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with places:
            await call

    await asyncio.gather(*(one(call) for call in calls))
