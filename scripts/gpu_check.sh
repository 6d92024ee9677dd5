#!/usr/bin/env bash
# The generator's CUDA paths on a GPU machine without network access: installs the wheels
# carried in .whl/ (the packages app.generation imports that the machine lacks, and
# bitsandbytes), runs the `cuda` tests and times each quantization on a tiny model.
#
# Run from the repository root: bash scripts/gpu_check.sh
# Everything goes to $OUT/gpu_check.log (the tail is printed at the end). About 1-2 minutes;
# every step has its own timeout so the whole check stays under 4 minutes.
set -uo pipefail

OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
failed=0

step() { printf '\n===== %s (%ss since start)\n' "$1" "$SECONDS"; }

{
    step "install the carried wheels"
    # The pytest run below skips tests/conftest.py (--noconftest): it imports the whole app
    # (database, auth, search), whose packages this machine does not carry.
    if [[ -d /tmp/site/bitsandbytes && -d /tmp/site/pydantic_settings ]]; then
        echo "already installed in /tmp/site"
        export PYTHONPATH=/tmp/site:$PWD
    else
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || failed=1
    fi
    ls .whl .whl/optional
    # pydantic 2.14 needs typing_extensions >= 4.16; the machine's own one may be older. Only
    # then install the carried one (.whl/optional), which shadows it for this check only.
    if ! python3 -c 'import importlib.metadata as m, sys; from packaging.version import Version as V; sys.exit(V(m.version("typing-extensions")) < V("4.16"))'; then
        echo "typing_extensions older than 4.16: installing .whl/optional"
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/optional/*.whl || failed=1
    fi

    step "device and versions"
    nvidia-smi || true
    timeout 60 python3 - <<'PY' || failed=1
import importlib.metadata as md
import sys

import torch

print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
for name in ("transformers", "accelerate", "tokenizers", "safetensors", "bitsandbytes",
             "pydantic", "typing-extensions", "anyio", "pytest", "numpy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
try:
    import bitsandbytes

    print("bitsandbytes imports from", bitsandbytes.__file__)
except Exception as exc:  # the bnb tests skip with this reason; say it here too
    print("bitsandbytes does not import:", type(exc).__name__, exc)
PY

    step "pytest -m cuda"
    timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest -o addopts="" -m cuda \
        tests/generation/test_cuda_backend.py -rs || failed=1

    step "timing: 64 new tokens per quantization on a tiny DeepSeek-V3"
    timeout 90 python3 - <<'PY' || failed=1
import gc
import tempfile
import time
from pathlib import Path

import torch

from app.generation.base import ChatMessage, GenerationLimits
from app.generation.transformers_backend import TransformersGenerator
from app.kit.settings import GeneratorSettings
from tests.generation.tiny_models import build_tiny_deepseek

if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: nothing to time")
question = [ChatMessage("user", "what is the capital of france ?")]
model = build_tiny_deepseek(Path(tempfile.mkdtemp()), "v3")
print(f"{'quantization':12} {'load s':>7} {'tokens':>6} {'tokens/s':>9} {'max alloc MiB':>13}")
for quantization in ("none", "fp16", "bf16", "bnb8", "bnb4"):
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        settings = GeneratorSettings(model_path=str(model), quantization=quantization, device="cuda")
        generator = TransformersGenerator(settings, model.parent)
        generator.complete(question, GenerationLimits(max_new_tokens=4))  # warm-up
        # Timed twice: the first 64-token run may still pay one-time kernel selection.
        runs = []
        for _ in range(2):
            torch.cuda.synchronize()
            started = time.perf_counter()
            completion = generator.complete(question, GenerationLimits(max_new_tokens=64))
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - started)
        seconds = runs[-1]
        print(f"  {quantization}: 64-token runs {runs[0]:.3f} s then {runs[1]:.3f} s")
    except Exception as exc:  # report every quantization, even after one fails
        print(f"{quantization:12} FAILED {type(exc).__name__}: {exc}")
        continue
    peak = torch.cuda.max_memory_allocated() / 2**20
    tokens = completion.completion_tokens
    print(f"{quantization:12} {generator.load_seconds:7.2f} {tokens:6d} {tokens / seconds:9.1f} {peak:13.1f}")
    del generator
PY

    step "done, failed=$failed"
} >"$LOG" 2>&1

tail -c 11000 "$LOG"
exit "$failed"
