"""Per-shard masks from the hidden documents (`allowed_ids_except`)."""

from __future__ import annotations

import numpy as np

from app.search.visibility import allowed_ids_except


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CHUNKS = ids(10, 11, 12, 13, 14)
DOCUMENT_OF = ids(1, 1, 2, 3, 3)
DOCUMENTS = ids(1, 2, 3)


def test_nothing_hidden_means_no_mask() -> None:
    assert allowed_ids_except(CHUNKS, DOCUMENT_OF, DOCUMENTS, ids()) is None


def test_hidden_documents_elsewhere_mean_no_mask() -> None:
    assert allowed_ids_except(CHUNKS, DOCUMENT_OF, DOCUMENTS, ids(4, 9)) is None


def test_a_hidden_document_drops_its_chunks() -> None:
    allowed = allowed_ids_except(CHUNKS, DOCUMENT_OF, DOCUMENTS, ids(3, 7))
    assert allowed is not None
    assert allowed.tolist() == [10, 11, 12]


def test_chunks_whose_row_is_gone_are_masked_with_nothing_hidden() -> None:
    # document 0: the chunk's row was purged after the shard was written
    allowed = allowed_ids_except(CHUNKS, ids(0, 1, 2, 3, 3), ids(0, 1, 2, 3), ids())
    assert allowed is not None
    assert allowed.tolist() == [11, 12, 13, 14]


def test_an_empty_shard_needs_no_mask() -> None:
    assert allowed_ids_except(ids(), ids(), ids(), ids()) is None
