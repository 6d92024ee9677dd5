"""GGUF files loaded through transformers, converted once and cached as a plain checkpoint.

transformers reads a GGUF by dequantizing every tensor and rebuilding the tokenizer from the
file's vocabulary, which takes about a minute for the bundled 0.5B model on two cores. The
result is saved (float32 safetensors + tokenizer + chat template) under
`<data_dir>/models/gguf-cache/<name>-<key>/`, so later starts load it in seconds. The cache is
disposable: deleting it only costs one slow start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.generation import progress
from app.generation.base import GeneratorUnavailable

logger = logging.getLogger(__name__)

MARKER = "cairn-gguf-source.json"
# The conversion's steps as shares of its time (progress reporting only).
SHARE_TOKENIZER = 0.6
SHARE_MODEL = 0.25


def _source_key(gguf_path: Path, content_id: str | None) -> str:
    import transformers

    stat = gguf_path.stat()
    # A known content hash (the bundled model's pinned sha256) names the file whatever its
    # path; any other file is known by path, size and mtime, so replacing it reconverts.
    identity = content_id or f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    # The converted layout depends on the transformers version that wrote it.
    major_minor = ".".join(transformers.__version__.split(".")[:2])
    return hashlib.sha256(f"{identity}|transformers-{major_minor}".encode()).hexdigest()[:16]


def cached_checkpoint_dir(cache_dir: Path, gguf_path: Path, content_id: str | None = None) -> Path:
    """Where the converted checkpoint of `gguf_path` lives (whether or not it exists yet)."""
    return cache_dir / f"{gguf_path.stem}-{_source_key(gguf_path, content_id)}"


def is_converted(checkpoint: Path) -> bool:
    return (checkpoint / MARKER).is_file()


@contextlib.contextmanager
def _one_parse_per_file() -> Iterator[None]:
    # transformers parses the GGUF's header afresh for the tokenizer's config, the tokenizer,
    # the model's config and the weights; with the bundled model's 151k-token vocabulary each
    # parse is tens of seconds of pure Python on two cores, most of the conversion. The
    # reader only maps the file and reads it, so one per file is shared while converting.
    try:
        import gguf
    except ImportError:  # pragma: no cover - transformers then fails with its own message
        yield
        return
    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)  # type: ignore[arg-type]
        return readers[key]

    gguf.GGUFReader = shared  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]
        readers.clear()


def convert_gguf(gguf_path: Path, cache_dir: Path, *, content_id: str | None = None) -> Path:
    """A transformers checkpoint directory for `gguf_path`, converting it on the first call."""
    if not gguf_path.is_file():
        raise GeneratorUnavailable(f"GGUF file {gguf_path} does not exist")
    target = cached_checkpoint_dir(cache_dir, gguf_path, content_id)
    if is_converted(target):
        return target

    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        raise GeneratorUnavailable(f"loading GGUF through transformers needs {exc.name}") from exc

    started = time.monotonic()
    progress.stage("converting")
    progress.track_transformers_loops()
    logger.info("converting %s for transformers (once; cached in %s)", gguf_path, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    # The shares of the stage are those measured on the bundled model (BENCHMARKS.md "First
    # start"); the tensors and weights are counted as transformers walks them.
    try:
        with _one_parse_per_file():
            with progress.span(0.0, SHARE_TOKENIZER):
                tokenizer = AutoTokenizer.from_pretrained(
                    folder, gguf_file=name, local_files_only=True
                )
            # dequantize=True: every tensor becomes a plain float32 weight, so the model can
            # be saved, moved to any device and quantized again (int8, bitsandbytes) like any
            # other.
            with progress.span(SHARE_TOKENIZER, SHARE_TOKENIZER + SHARE_MODEL):
                model = AutoModelForCausalLM.from_pretrained(
                    folder,
                    gguf_file=name,
                    dtype=torch.float32,
                    quantization_config=GgufConfig(dequantize=True),
                    local_files_only=True,
                )
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise GeneratorUnavailable(f"transformers cannot load {gguf_path}: {exc}") from exc
    quantizer: Any = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # The weights are dense now; drop the GGUF loading state so save_pretrained accepts it.
        quantizer.remove_quantization_config(model)

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a crash mid-save leaves only a
    # temporary folder, and of two processes converting at once the second rename loses
    # harmlessly.
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_dir))
    try:
        with progress.span(SHARE_TOKENIZER + SHARE_MODEL, 1.0):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        source = {
            "gguf": str(gguf_path.resolve()),
            "size": gguf_path.stat().st_size,
            "content_id": content_id,
            "seconds": round(time.monotonic() - started, 1),
        }
        (tmp / MARKER).write_text(json.dumps(source, indent=2))
        try:
            tmp.rename(target)
        except OSError:
            if not is_converted(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del model
    logger.info("converted %s in %.0fs", gguf_path.name, time.monotonic() - started)
    return target
