"""A trial run of llama.cpp in a child process before the server loads it in its own.

A llama.cpp build can hold kernels the machine cannot run: a native build on a virtual
machine whose CPU reports AMX died with SIGILL (`tileloadd` in `ggml_backend_amx_mul_mat`) on
the first prompt longer than a few tokens, while loading the model and a one-word prompt
worked. In process, that signal ends the whole server with no word in its log. The trial
loads the GGUF and reads a prompt of some hundred tokens in a child, so such a build is a
`GeneratorUnavailable` naming the signal, and the server goes on serving search.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from app.generation.base import GeneratorUnavailable

# Long enough for llama.cpp to process it as a batch (the matrix kernels a one-token prompt
# never reaches); a few seconds for the bundled models on two cores.
_TRIAL = """
import sys
from llama_cpp import Llama

threads = int(sys.argv[2]) if sys.argv[2] else None
model = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=threads, verbose=False)
model.create_completion("The quick brown fox jumps over the lazy dog. " * 24, max_tokens=2)
"""
TRIAL_SECONDS = 300.0
REBUILD_HINT = (
    "rebuild llama-cpp-python for an explicit instruction set (README: Choosing the bundled "
    "model) or use generator.backend = transformers"
)


def trial_run(gguf: Path, threads: int | None, *, code: str = _TRIAL) -> None:
    """Run `code` (the trial by default) on `gguf` in a child Python; GeneratorUnavailable
    when the child dies by a signal, fails or runs past TRIAL_SECONDS."""
    command = [sys.executable, "-c", code, str(gguf), str(threads or "")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TRIAL_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise GeneratorUnavailable(
            f"llama.cpp did not read a short prompt with {gguf.name} within "
            f"{TRIAL_SECONDS:.0f} s in a trial run"
        ) from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise GeneratorUnavailable(
            f"llama.cpp died with {name} reading a prompt with {gguf.name} in a trial run: this "
            f"build uses instructions this machine cannot run; {REBUILD_HINT}"
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise GeneratorUnavailable(f"llama.cpp failed a trial run with {gguf.name}: {last[:300]}")
