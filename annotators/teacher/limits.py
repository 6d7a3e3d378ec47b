"""Client-side limits for one endpoint: a concurrency cap, requests/min and tokens/min buckets,
and one cool-down shared by every request after a 429 (so a burst of 429s is not a retry storm)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager


class Bucket:
    """A token bucket refilled continuously at `per_minute`. It holds ten seconds' worth, so a
    per-minute limit is also kept over shorter windows, as providers enforce it."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute / 6
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)  # an oversized request waits for a full bucket
        async with self.lock:  # first come, first served
            self._refill()
            while self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class Limits:
    def __init__(self, concurrency: int, rpm: float | None, tpm: float | None) -> None:
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.rpm = Bucket(rpm) if rpm else None
        self.tpm = Bucket(tpm) if tpm else None
        self.cool_until = 0.0

    def cool_down(self, seconds: float) -> None:
        """Every request waits until now + seconds before it is sent (the latest deadline wins)."""
        self.cool_until = max(self.cool_until, time.monotonic() + seconds)

    async def _wait_cool(self) -> None:
        while (left := self.cool_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    @asynccontextmanager
    async def slot(self, tokens: int):
        await self._wait_cool()
        if self.rpm:
            await self.rpm.take(1)
        if self.tpm:
            await self.tpm.take(tokens)
        async with self.slots:
            await self._wait_cool()  # a 429 may have arrived while this one queued
            yield

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the tokens/min bucket once the real usage is known."""
        if self.tpm and actual < estimated:
            self.tpm.give_back(estimated - actual)
        elif self.tpm and actual > estimated:
            self.tpm.level -= actual - estimated
