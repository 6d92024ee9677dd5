"""Typed helpers shared by tests."""

from __future__ import annotations

from typing import Any

from app.kit.public_ids import IdKind, public_ids

_KINDS = {kind.prefix: kind for kind in IdKind}


def key_of(public: str) -> int:
    """The database key behind a public id from a response (tests look rows up by it)."""
    kind = _KINDS[public.split("_", 1)[0]]
    key = public_ids().decode(kind, public)
    assert key is not None, f"{public!r} is not an id of this deployment"
    return key


def public_of(kind: IdKind, key: int) -> str:
    """The public id the API shows for a database key."""
    return public_ids().encode(kind, key)


def without_request_id(body: Any) -> Any:
    """An error body or audit details without the per-request `request_id`, to compare two
    responses that must be indistinguishable (their request ids always differ)."""
    if isinstance(body, dict):
        return {k: without_request_id(v) for k, v in body.items() if k != "request_id"}
    return body
