"""The optional reranking hook: a cross-encoder re-scores the best fused, de-duplicated hits.

None ships by default (``search.rerank.backend = "none"``). ``cross-encoder`` loads a
sentence-transformers ``CrossEncoder`` from a local directory named in configuration; like
every model in Cairn it is never downloaded. Anything with a ``rerank`` method can be passed
to the retriever instead (tests, other backends).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from app.kit.settings import RerankSettings


class RerankerUnavailable(RuntimeError):
    """The configured reranker model is not on this machine."""


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage (higher is better); blocking, run in a thread."""


class CrossEncoderReranker:
    """A local sentence-transformers CrossEncoder directory."""

    def __init__(self, config: RerankSettings) -> None:
        path = Path(config.model_path or "")
        if not path.is_dir():
            raise RerankerUnavailable(f"{path} is not a local cross-encoder model directory")
        from sentence_transformers import CrossEncoder

        self._model: Any = CrossEncoder(str(path), device=config.device, local_files_only=True)
        self._batch = config.batch_size
        self.name = f"cross-encoder:{path.name}"

    def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        scores = self._model.predict(
            [(query, passage) for passage in passages],
            batch_size=self._batch,
            show_progress_bar=False,
        )
        return [float(s) for s in scores]


_cache: dict[RerankSettings, Reranker] = {}
_lock = threading.Lock()


def load_reranker(config: RerankSettings) -> Reranker | None:
    """The configured reranker, loaded once per process; None when reranking is off."""
    if config.backend == "none":
        return None
    with _lock:
        if config not in _cache:
            _cache[config] = CrossEncoderReranker(config)
        return _cache[config]
