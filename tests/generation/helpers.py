"""Small helpers shared by the generation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def drain(stream: AsyncIterator[str], into: list[str]) -> None:
    """Consume a stream of deltas into `into` (kept when the stream raises)."""
    async for delta in stream:
        into.append(delta)
