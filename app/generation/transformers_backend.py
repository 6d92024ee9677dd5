"""Any Hugging Face causal LM in process: a model directory (DeepSeek-R1-Distill-Qwen,
DeepSeek-V2/V3, Qwen, Llama, ...) or a GGUF file (converted once, see gguf_cache.py).

Quantization: `int8` replaces every `nn.Linear` with a dynamically quantized int8 one on the
CPU (weights int8, activations quantized per batch at run time); `bnb8`/`bnb4` load through
bitsandbytes on CUDA; `fp16`/`bf16` load half precision; `none` keeps float32.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.generation import progress
from app.generation.base import (
    ChatMessage,
    Completion,
    Emit,
    FinishReason,
    GenerationLimits,
    GeneratorUnavailable,
    InProcessGenerator,
    StopSignal,
    as_dicts,
)
from app.generation.bundled import BUNDLED_MODELS, ensure_bundled_gguf
from app.generation.gguf_cache import convert_gguf
from app.kit.settings import GeneratorSettings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def resolve_checkpoint(settings: GeneratorSettings, models_dir: Path) -> tuple[Path, str]:
    """The model directory to load and a short label naming it.

    No model_path: the bundled GGUF `settings.bundled`, assembled and converted once. A `.gguf`
    file: converted once. A directory: loaded as it is.
    """
    cache = models_dir / "gguf-cache"
    if settings.model_path is None:
        bundled = BUNDLED_MODELS[settings.bundled]
        gguf = ensure_bundled_gguf(models_dir, bundled)
        checkpoint = convert_gguf(gguf, cache, content_id=bundled.sha256)
        return checkpoint, bundled.name
    path = Path(settings.model_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return convert_gguf(path, cache), path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, path.name
    raise GeneratorUnavailable(
        f"generator.model_path {path} is neither a .gguf file nor a Hugging Face model "
        "directory with a config.json (models are never downloaded)"
    )


def resolve_device(settings: GeneratorSettings) -> str:
    import torch

    device = settings.device
    if device == "auto":
        wants_cpu = settings.quantization == "int8"
        return "cuda" if torch.cuda.is_available() and not wants_cpu else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GeneratorUnavailable(f"generator.device = {device}, but torch sees no CUDA device")
    return device


def quantize_int8(model: Any, skip: Sequence[str] = ()) -> Any:
    """Replace the model's Linear layers in place with dynamically quantized int8 ones (CPU),
    except those whose qualified name contains one of `skip`.

    Weights are quantized per output channel (one scale per row): as fast as one scale per
    matrix with fbgemm, and closer to float32 on real checkpoints, whose rows differ widely in
    range. Activations are quantized per tensor at run time, which is what the MLP down
    projection cannot take: its input carries a few huge outlier features, so it stays float
    by default (`generator.int8_skip_modules`). On the bundled model, quantizing every Linear
    changed two of the three benchmark answers; leaving down_proj float kept all three.

    `torch.ao.quantization.quantize_dynamic` is marked deprecated in favour of torchao, but
    torchao's eager int8 path has no fast CPU kernel (about 0.8 tokens/s against 14 here on
    the bundled model), so the fbgemm/x86 kernels behind quantize_dynamic stay the CPU path
    while torch ships them.
    """
    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig
        from torch.ao.quantization import quantize_dynamic as _quantize_dynamic
    except ImportError as exc:
        raise GeneratorUnavailable(
            "this torch has no torch.ao.quantization.quantize_dynamic; use "
            "generator.quantization = none, or the llamacpp backend for quantized CPU serving"
        ) from exc
    quantize_dynamic: Any = _quantize_dynamic  # untyped in torch
    plan = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in name for part in skip)
    }
    for name, module in model.named_modules():
        if name in plan and module.bias is not None:
            # The int8 layer keeps the float bias tensor itself; give it its own memory first
            # (see _own_the_float_weights).
            module.bias.data = module.bias.data.clone()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_(tensor|channel)")
        quantize_dynamic(model, plan, inplace=True)
    _own_the_float_weights(model)
    return model


def _own_the_float_weights(model: Any) -> None:
    # from_pretrained leaves every weight a view into the memory-mapped safetensors file. The
    # int8 layers hold copies, but while any float tensor (embeddings, norms, skipped layers,
    # biases) still points into the mapping, all of the file's pages stay mapped: the process
    # keeps the whole float32 checkpoint (2.5 GB for the bundled model) in its resident set.
    # Copying the float tensors that are left into ordinary memory lets the mapping go.
    gc.collect()  # the replaced float Linear modules, first
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype.is_floating_point:
            tensor.data = tensor.data.clone()


# Left in half precision under bnb8: the output head (transformers' own default) and the
# DeepSeek MLA key/value up-projection, which transformers calls on a 4-D tensor that
# bitsandbytes' int8 matmul refuses ("only two or three dimensional matrices"; seen on an
# H200 with DeepSeek-V2 and V3 models). bnb4's Linear4bit takes any rank.
BNB8_SKIP_MODULES = ("lm_head", "kv_b_proj")


def load_model(checkpoint: Path, settings: GeneratorSettings, device: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for `checkpoint`, quantized as configured."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.threads:
        torch.set_num_threads(settings.threads)
    kwargs: dict[str, Any] = {"local_files_only": True}
    quantization = settings.quantization
    if quantization in ("bnb8", "bnb4") and not device.startswith("cuda"):
        raise GeneratorUnavailable(f"generator.quantization = {quantization} needs a CUDA device")
    if quantization in ("bnb8", "bnb4"):
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig as _BitsAndBytesConfig
        except ImportError as exc:
            raise GeneratorUnavailable(
                f"generator.quantization = {quantization} needs bitsandbytes: "
                "pip install bitsandbytes"
            ) from exc
        bits_and_bytes: Any = _BitsAndBytesConfig  # untyped in transformers
        kwargs["quantization_config"] = (
            bits_and_bytes(load_in_8bit=True, llm_int8_skip_modules=list(BNB8_SKIP_MODULES))
            if quantization == "bnb8"
            else bits_and_bytes(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        )
        kwargs["dtype"] = torch.bfloat16 if quantization == "bnb4" else torch.float16
    elif quantization == "fp16":
        kwargs["dtype"] = torch.float16
    elif quantization == "bf16":
        kwargs["dtype"] = torch.bfloat16
    else:  # int8 quantizes a float32 model; none keeps it
        kwargs["dtype"] = torch.float32
    if device != "cpu":
        kwargs["device_map"] = {"": device}

    progress.track_transformers_loops()
    # Progress shares: the weights (counted as transformers loads them), then int8.
    weights_end = 0.6 if quantization == "int8" else 1.0
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
        with progress.span(0.05, weights_end):
            model: Any = AutoModelForCausalLM.from_pretrained(str(checkpoint), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise GeneratorUnavailable(f"cannot load the model in {checkpoint}: {exc}") from exc
    model.eval()
    if quantization == "int8":
        with progress.span(weights_end, 1.0):
            model = quantize_int8(model, settings.int8_skip_modules)
    return model, tokenizer


def _plain_prompt(messages: Sequence[ChatMessage]) -> str:
    # For tokenizers without a chat template (base models): a neutral transcript.
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join([*lines, "assistant:"])


class _DeltaStreamer:
    """A transformers streamer that hands decoded text deltas to `emit` as tokens arrive.

    Unlike TextStreamer it does not hold text back until a word ends, so the first delta
    leaves with the first token; it only waits while a token ends inside a UTF-8 character.
    """

    def __init__(self, tokenizer: Any, emit: Emit) -> None:
        self._tokenizer = tokenizer
        self._emit = emit
        self._prompt_seen = False
        self._tokens: list[int] = []
        self._sent = 0

    def _decode(self) -> str:
        text: str = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
        return text

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt
            self._prompt_seen = True
            return
        self._tokens.extend(int(t) for t in value.reshape(-1).tolist())
        text = self._decode()
        if text.endswith("\ufffd"):
            return
        if len(text) > self._sent:
            self._emit(text[self._sent :])
        self._sent = len(text)
        if text.endswith("\n"):
            # Start decoding afresh at each line so decoding stays linear in the answer length.
            self._tokens, self._sent = [], 0

    def end(self) -> None:
        text = self._decode()
        if len(text) > self._sent:
            self._emit(text[self._sent :])
        self._tokens, self._sent = [], 0


class TransformersGenerator(InProcessGenerator):
    """A causal LM in this process. One model object serves every concurrent call."""

    thread_prefix = "cairn-generate"

    def __init__(self, settings: GeneratorSettings, models_dir: Path) -> None:
        started = time.monotonic()
        self.checkpoint, label = resolve_checkpoint(settings, models_dir)
        progress.stage("loading")
        self.device = resolve_device(settings)
        self.model: Any
        self.tokenizer: Any
        self.model, self.tokenizer = load_model(self.checkpoint, settings, self.device)
        # Loading leaves reference cycles (replaced modules, loader state) that can keep the
        # memory-mapped checkpoint alive; collect them now rather than at some later pause.
        gc.collect()
        self.quantization = settings.quantization
        self.name = f"transformers:{label}:{settings.quantization}"
        self.load_seconds = time.monotonic() - started
        eos = self.model.generation_config.eos_token_id
        self._eos: set[int] = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        self._pad: int | None = pad if pad is not None else next(iter(self._eos), None)
        logger.info("loaded %s on %s in %.1fs", self.name, self.device, self.load_seconds)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_window(self) -> int | None:
        """The positions the model was trained for (its config's max_position_embeddings)."""
        window = getattr(self.model.config, "max_position_embeddings", None)
        return window if isinstance(window, int) and window > 0 else None

    def _inputs(self, messages: Sequence[ChatMessage]) -> Any:
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(
                as_dicts(messages),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
        else:
            encoded = self.tokenizer(_plain_prompt(messages), return_tensors="pt")
        return encoded.to(self.model.device)

    def _generation_config(self, limits: GenerationLimits) -> Any:
        import copy

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = limits.max_new_tokens
        config.pad_token_id = self._pad
        if limits.temperature > 0:
            config.do_sample = True
            config.temperature = limits.temperature
            config.top_p = limits.top_p
        else:
            # Greedy: clear the model's sampling defaults so they neither apply nor warn.
            config.do_sample = False
            config.temperature = None
            config.top_p = None
            config.top_k = None
        return config

    def _run(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        signal: StopSignal,
        emit: Emit | None = None,
    ) -> Completion:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class StopOnSignal(StoppingCriteria):
            # Checked after every new token: a set cancel event or a passed deadline ends the
            # generation there. (The prompt's prefill runs before the first check and cannot
            # be cut short: the prompt's token budget is what bounds it.)
            def __call__(
                self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any
            ) -> torch.BoolTensor:
                stop = signal.should_stop()
                flags: torch.BoolTensor = torch.full(  # type: ignore[assignment]
                    (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
                )
                return flags

        inputs = self._inputs(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = _DeltaStreamer(self.tokenizer, emit) if emit is not None else None
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                generation_config=self._generation_config(limits),
                stopping_criteria=StoppingCriteriaList([StopOnSignal()]),
                streamer=streamer,
            )
        new_tokens = [int(t) for t in output[0, prompt_tokens:].tolist()]
        text: str = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        signal.raise_if_timed_out(text)
        finish: FinishReason
        if signal.cancelled:
            finish = "cancelled"
        elif new_tokens and new_tokens[-1] in self._eos:
            finish = "stop"
        else:
            finish = "length"
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_tokens),
        )
