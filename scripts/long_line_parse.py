"""Time parsing and chunking of one single-line Markdown document (issue 21, item 7).

    .venv/bin/python scripts/long_line_parse.py 19000000

Writes prose with stray, unclosed markup (a lone "*", "[", "_", "...", a "#") on one line of
the given size in bytes, then parses and chunks it with the default settings, printing the
times, the chunk bounds and the peak resident memory. Before the fix 0.4 MB took 56 s.
"""

from __future__ import annotations

import random
import resource
import sys
import time

from app.kit.settings import ChunkingConfig, ParseLimits
from ingest.chunking import chunk_document
from ingest.parsers import parse

WORDS = (
    "the report says revenue grew in the third quarter while costs fell and the board "
    "approved a new plan for regional offices"
).split()
EXTRAS = ["*note", "[see", "_draft", "wait...", "**key", "~~old", "<http://x.example", "#"]


def one_line(size: int, seed: int = 21) -> bytes:
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(EXTRAS) if rng.random() < 0.05 else rng.choice(WORDS)
        if rng.random() < 0.06:
            word += "."
        out.append(word)
        total += len(word) + 1
    return " ".join(out)[:size].encode()


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 19_000_000
    data = one_line(size)
    start = time.perf_counter()
    document = parse(data, "one-line.md", ParseLimits())
    parsed = time.perf_counter()
    chunks = chunk_document(document, ChunkingConfig())
    done = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(  # noqa: T201
        f"{size / 1e6:.2f} MB: parse {parsed - start:.1f} s, chunk {done - parsed:.1f} s, "
        f"{len(chunks)} chunks, largest {max(c.token_count for c in chunks)} tokens, "
        f"peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
