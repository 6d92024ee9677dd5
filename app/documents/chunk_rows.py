"""Chunk rows as stored: text, heading path and vector sealed under the tenant's key (when
encryption at rest is on), bound to the chunk's document and position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.crypto.chunks import seal_chunk_headings, seal_chunk_text, seal_chunk_vector
from app.kit.envelope import DataKey
from app.search.index.writer import heading_path_json


def sealed_chunk_values(
    key: DataKey | None,
    tenant_id: int,
    document_id: int,
    position: int,
    *,
    text: str,
    heading_path: Sequence[str],
    vector: npt.NDArray[np.float32],
) -> dict[str, Any]:
    """The text, heading_path and embedding columns of one chunk."""
    return {
        "text": seal_chunk_text(key, tenant_id, document_id, position, text),
        "heading_path": seal_chunk_headings(
            key, tenant_id, document_id, position, heading_path_json(tuple(heading_path))
        ),
        "embedding": seal_chunk_vector(
            key, tenant_id, document_id, position, vector.astype("<f4").tobytes()
        ),
    }
