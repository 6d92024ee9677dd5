"""`cairn bench encryption`: what encryption at rest costs, off against on, in one run.

* Search and shard loads at ``chunks`` chunks: two tenants built alike (`cairn bench search`'s
  synthetic corpus), one left in plaintext, one sealed by the same code `cairn encryption
  enable` runs (timed too: chunk rows and shard files per second). The tenants' shards are
  loaded cold alternately, ``loads`` times each (read + decrypt + deserialise), and
  ``Retriever.retrieve`` runs the same queries on both, interleaved query by query, in every
  mode (a sealed search also opens its hits' text).
* Ingestion: the same documents through the whole pipeline (`cairn bench ingest`'s
  measurement) four times, encryption off, on, on, off (a later run in one process came out
  slower whichever state it had: the ABBA order cancels that drift), each beside the raw
  embedder on the same texts; the table gives each state's mean.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from app.bench.ingest import IngestBenchResult, corpus_documents, run_ingest_bench
from app.bench.report import section, write_section
from app.bench.search import (
    EMBEDDER,
    MODES,
    Corpus,
    Latency,
    _query_vectors,
    _time_calls,
    _time_interleaved,
    build_tenant,
    scratch_settings,
)
from app.container import Container
from app.crypto.reseal import reseal_tenant
from app.kit.actor import SystemActor
from app.kit.migrate import upgrade
from app.kit.settings import EncryptionSettings, Settings
from app.search.index.tokenize import load_segmenter
from app.search.retriever import QueryVector, SearchQuery
from app.search.visibility import Visibility
from app.tenants.schemas import TenantCreate
from app.tenants.service import tenant_service

STATES = ("off", "on")


@dataclass
class EncryptionBenchResult:
    chunks: int
    queries: int
    loads: int
    seal_seconds: float
    sealed_rows: int
    sealed_shards: int
    load_seconds: dict[str, list[float]]
    search: dict[str, dict[str, Latency]]  # state -> mode -> latency
    ingest: dict[str, list[IngestBenchResult]]  # state -> its runs

    def markdown(self) -> str:
        rows: list[tuple[str, str, str, str]] = []

        def ratio(off: float, on: float) -> str:
            return f"{on / off:.2f}×" if off else "—"

        load = {s: statistics.median(v) for s, v in self.load_seconds.items()}
        rows.append(
            (
                f"shard load, cold (median of {self.loads}), s",
                f"{load['off']:.2f}",
                f"{load['on']:.2f}",
                ratio(load["off"], load["on"]),
            )
        )
        for mode in MODES:
            off, on = self.search["off"][mode], self.search["on"][mode]
            rows.append(
                (
                    f"search {mode} p50 / p95, ms",
                    f"{off.p50:.1f} / {off.p95:.1f}",
                    f"{on.p50:.1f} / {on.p95:.1f}",
                    f"{ratio(off.p50, on.p50)} / {ratio(off.p95, on.p95)}",
                )
            )
        if self.ingest:
            speed = {
                s: statistics.mean(r.pipeline_chunks_per_s for r in runs)
                for s, runs in self.ingest.items()
            }
            share = {s: statistics.mean(r.ratio for r in runs) for s, runs in self.ingest.items()}
            rows.append(
                (
                    "ingestion: pipeline chunks/s (mean)",
                    f"{speed['off']:.2f}",
                    f"{speed['on']:.2f}",
                    ratio(speed["off"], speed["on"]),
                )
            )
            rows.append(
                (
                    "ingestion: pipeline ÷ raw embedder (same run, mean)",
                    f"{share['off']:.0%}",
                    f"{share['on']:.0%}",
                    ratio(share["off"], share["on"]),
                )
            )
        table = "| measure | encryption off | on | on ÷ off |\n|---|---:|---:|---:|\n"
        table += "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
        seal_rate = self.sealed_rows / self.seal_seconds if self.seal_seconds else 0.0
        ingest_note = (
            f" Ingestion: {self.ingest['off'][0].documents} documents "
            f"({self.ingest['off'][0].chunks} chunks) per run, four runs in the order off, on, "
            "on, off."
            if self.ingest
            else ""
        )
        return (
            f"{self.chunks:,} chunks per tenant, {self.queries} queries per mode (top 10, "
            "interleaved query by query between the two tenants and the modes)."
            + ingest_note
            + "\n\n"
            + table
            + f"\n\nSealing the {self.chunks:,}-chunk tenant as `cairn encryption enable` "
            f"does: {self.sealed_rows:,} chunk rows and {self.sealed_shards} shard files in "
            f"{self.seal_seconds:.1f} s ({seal_rate:,.0f} rows/s)."
        )


def _with_encryption(settings: Settings, kek: Path, *, enabled: bool) -> Settings:
    return settings.model_copy(
        update={"encryption": EncryptionSettings(enabled=enabled, kek_file=kek)}
    )


def _write_kek(path: Path) -> Path:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


async def _search_and_loads(
    settings: Settings, *, chunks: int, queries: int, loads: int
) -> tuple[dict[str, list[float]], dict[str, dict[str, Latency]], tuple[float, int, int]]:
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    runtime = Container(settings)
    try:
        corpus = Corpus()
        texts = corpus.queries(queries)
        tenants: dict[str, int] = {}
        samples = {}
        for state in STATES:
            async with runtime.database.sessionmaker() as session, session.begin():
                tenant = await tenant_service.create(
                    session,
                    SystemActor.OPERATOR,
                    TenantCreate(slug=f"bench-{state}", name=f"Encryption {state}"),
                )
                tenants[state] = tenant.id
            _, samples[state] = await asyncio.to_thread(
                build_tenant, settings, corpus, tenants[state], chunks
            )
        key = await runtime.keyring.for_writing(tenants["on"])
        assert key is not None, "encryption is enabled"
        started = time.perf_counter()
        sealed = await reseal_tenant(runtime, tenants["on"], key)
        seal_seconds = time.perf_counter() - started
        # The plaintext tenant has no key: a tenant made before encryption was enabled.
        await runtime.keyring.ensure_keys()

        retriever = runtime.retriever
        cache = retriever.cache
        load_seconds: dict[str, list[float]] = {state: [] for state in STATES}
        for _ in range(loads):
            for state in STATES:
                cache.invalidate(tenants[state])
                started = time.perf_counter()
                await cache.get(tenants[state])
                load_seconds[state].append(time.perf_counter() - started)
        cache.max_bytes = max(cache.max_bytes, cache.nbytes * 2)

        vectors = {s: _query_vectors(samples[s], queries, corpus.rng) for s in STATES}

        def call(state: str, mode: str) -> Callable[[int], Awaitable[object]]:
            visibility = Visibility.for_tenant(tenants[state])

            async def run(i: int) -> object:
                query = SearchQuery(
                    text=texts[i],
                    mode=mode,  # type: ignore[arg-type]
                    top_k=10,
                    vector=QueryVector(vectors[state][i], EMBEDDER) if mode != "bm25" else None,
                )
                return await retriever.retrieve(visibility, query)

            return run

        await asyncio.to_thread(load_segmenter)
        calls = {f"{state} {mode}": call(state, mode) for state in STATES for mode in MODES}
        for fn in calls.values():
            await _time_calls(min(queries, 5), fn)
        measured = await _time_interleaved(queries, calls)
        search = {
            state: {mode: Latency.of(measured[f"{state} {mode}"][0]) for mode in MODES}
            for state in STATES
        }
        return load_seconds, search, (seal_seconds, sealed.chunks, sealed.shards)
    finally:
        await runtime.close()


def bench_encryption(
    base: Settings,
    *,
    chunks: int,
    queries: int,
    loads: int,
    documents: int,
    corpus: Path | None,
    output: Path,
) -> EncryptionBenchResult:
    """Run the encryption benchmark in scratch folders and record it in ``output``."""
    with tempfile.TemporaryDirectory(prefix="cairn-bench-encryption-") as scratch:
        root = Path(scratch)
        kek = _write_kek(root / "kek")
        search_dir = root / "search"
        search_dir.mkdir()
        settings = _with_encryption(scratch_settings(base, search_dir), kek, enabled=True)
        load_seconds, search, (seal_seconds, rows, shards) = asyncio.run(
            _search_and_loads(settings, chunks=chunks, queries=queries, loads=loads)
        )
        ingest: dict[str, list[IngestBenchResult]] = {}
        if documents:
            texts = corpus_documents(corpus, documents)
            for run, state in enumerate(("off", "on", "on", "off")):
                folder = root / f"ingest-{run}"
                folder.mkdir()
                ingest.setdefault(state, []).append(
                    asyncio.run(
                        run_ingest_bench(
                            _with_encryption(
                                scratch_settings(base, folder), kek, enabled=state == "on"
                            ),
                            texts,
                        )
                    )
                )
    result = EncryptionBenchResult(
        chunks=chunks,
        queries=queries,
        loads=loads,
        seal_seconds=seal_seconds,
        sealed_rows=rows,
        sealed_shards=shards,
        load_seconds=load_seconds,
        search=search,
        ingest=ingest,
    )
    command = (
        f"cairn bench encryption --chunks {chunks} --queries {queries} --loads {loads} "
        f"--documents {documents}"
    )
    write_section(
        output, "encryption", section("Encryption at rest: off and on", command, result.markdown())
    )
    return result
