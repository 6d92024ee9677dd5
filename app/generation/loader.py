"""`load_generator(settings)`: the configured backend, loaded once per process and put
behind the concurrency limit."""

from __future__ import annotations

import threading

from app.generation.base import Generator
from app.generation.limits import GenerationSlots, LimitedGenerator
from app.kit.settings import GeneratorSettings, Settings

_cache: dict[tuple[GeneratorSettings, str], LimitedGenerator] = {}
_lock = threading.Lock()


def build_backend(settings: Settings) -> Generator:
    """A fresh backend for `settings.generator` (loads the model; no limits applied)."""
    config = settings.generator
    if config.backend == "openai":
        from app.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator(config)
    if config.backend == "llamacpp":
        from app.generation.llamacpp_backend import LlamaCppGenerator

        return LlamaCppGenerator(config, settings.models_dir)
    from app.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(config, settings.models_dir)


def load_generator(settings: Settings) -> LimitedGenerator:
    """The process-wide generator for this configuration (the model loads on the first call)."""
    key = (settings.generator, str(settings.models_dir.resolve()))
    with _lock:
        generator = _cache.get(key)
        if generator is None:
            slots = GenerationSlots.from_settings(settings.generator)
            generator = LimitedGenerator(build_backend(settings), slots)
            _cache[key] = generator
        return generator


def clear_cache() -> None:
    """Forget loaded generators (tests; a reload after a configuration change)."""
    with _lock:
        _cache.clear()
