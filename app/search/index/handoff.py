"""A shard version handed from the writer to readers in the same process.

The indexer has the new shard in memory once it has written the files; a reader in the same
process (the API's shard cache, beside the embedded workers) can take it from there instead of
reading, decrypting and deserialising the whole open shard again inside a search. Readers in
other processes keep finding new versions in the database (``index_shards``) and load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.search.index.bm25_shard import BM25Shard

IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class ShardWrite:
    """One shard version the writer has just written, before it is committed. The objects are
    the writer's last use of them: a reader may keep them, never modify them."""

    tenant_id: int
    shard_no: int
    # The (vector, BM25) versions the chunks were added to ((0, 0): a new shard).
    base_versions: tuple[int, int]
    version: int
    vector: Any
    bm25: BM25Shard
    added_ids: IdArray  # the chunks this version added
    added_documents: IdArray  # the document of each added chunk
    paths: tuple[Path, Path]  # the vector and BM25 files written


# Called on the event loop; the new version becomes what the reader serves.
Install = Callable[[], None]


class ShardReader(Protocol):
    def prepare(self, write: ShardWrite) -> Install | None:
        """Build what to serve from ``write`` (blocking: the writer runs it on its own
        lower-priority thread) and return how to install it; None when this reader does not
        hold the version it was built on (it then loads the new one as usual)."""
        ...

    def invalidate(self, tenant_id: int) -> None:
        """Forget the tenant's installed version (the writer's commit failed)."""
        ...
