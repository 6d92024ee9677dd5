"""Bounds for the numbers and times a client sends, so that no input reaches a database driver or
datetime arithmetic that cannot hold it (an OverflowError there is a 500, not a 422).

Every numeric or date input of the API that is not an identifier carries one of these bounds:
pagination offsets, generation sizes and the date filters. A value outside them is a
validation error (422), like any other malformed field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

# The deepest a list may be paged; far below int64, far above any real collection.
MAX_OFFSET = 1_000_000_000
# The most new tokens a request may ask for. A request may always ask for more than the
# configured `generator.max_new_tokens` (it gets that maximum); this only stops absurd numbers.
MAX_REQUESTED_TOKENS = 1_048_576
# Passages a chat request may ask for; `chat.max_top_k` sets the configured (lower) ceiling.
MAX_TOP_K = 100

# Times outside this range are refused: nothing Cairn stores is older than 1970, and both
# ends stay far from the calendar's edges, where converting to UTC overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def to_bounded_utc(value: datetime) -> datetime:
    """The time in UTC (a time without a zone is read as UTC); ValueError outside the range."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Comparing aware datetimes never overflows; converting one at the calendar's edge would.
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()} (UTC)")
    return value.astimezone(UTC)


BoundedDatetime = Annotated[datetime, AfterValidator(to_bounded_utc)]

# A username in a URL path: bounded like a stored one (lookups fold case, so no pattern here).
UsernamePath = Annotated[str, Path(min_length=1, max_length=64)]
