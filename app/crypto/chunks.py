"""Chunk rows' text and heading path, sealed in their own Text columns.

The sealed value is ``TEXT_PREFIX`` + base64 of an envelope bound to the tenant, the document
and the chunk's position (the row id is not known before the insert), so the column type does
not change on SQLite or PostgreSQL and legacy plaintext rows stay readable while `cairn
encryption enable` converts them. No SQL filters on chunk text (search goes through the shard
files), so nothing is lost by the database no longer seeing it.
"""

from __future__ import annotations

from app.kit.envelope import DataKey, chunk_ad, unseal, unseal_text


def seal_chunk_text(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, text: str
) -> str:
    """The text column's value (plaintext without a key)."""
    if key is None:
        return text
    return key.seal_text(text, chunk_ad(tenant_id, document_id, position, "text"))


def seal_chunk_headings(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, heading_json: str
) -> str:
    """The heading_path column's value (plaintext without a key)."""
    if key is None:
        return heading_json
    return key.seal_text(heading_json, chunk_ad(tenant_id, document_id, position, "headings"))


def open_chunk_text(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, stored: str
) -> str:
    """A chunk's text from its column's value."""
    return unseal_text(stored, key, chunk_ad(tenant_id, document_id, position, "text"))


def open_chunk_headings(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, stored: str
) -> str:
    """A chunk's heading path (JSON) from its column's value."""
    return unseal_text(stored, key, chunk_ad(tenant_id, document_id, position, "headings"))


def seal_chunk_vector(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, vector: bytes
) -> bytes:
    """The embedding column's value: a stored vector gives away much of its text to an
    embedding-inversion attack, so it is sealed like the text (plaintext without a key)."""
    if key is None:
        return vector
    return key.seal(vector, chunk_ad(tenant_id, document_id, position, "embedding"))


def open_chunk_vector(
    key: DataKey | None, tenant_id: int, document_id: int, position: int, stored: bytes
) -> bytes:
    """A chunk's float32 vector bytes from its column's value."""
    return unseal(stored, key, chunk_ad(tenant_id, document_id, position, "embedding"))
