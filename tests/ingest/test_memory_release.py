"""A worker's memory returns after a large document (issue 21, item 7): a 19 MB document grew
the server from 1.0 to 3.8 GB and it stayed there, because glibc keeps freed heap pages."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest

import app.documents.ingestion
from ingest.memory import release_memory
from tests.conftest import Api
from tests.documents.helpers import wait_for


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_release_memory_hands_freed_heap_pages_back() -> None:
    if not release_memory():
        pytest.skip("this libc has no malloc_trim")
    before = _rss()
    # ~200 MB of 2 KB objects (malloc'd, too big for pymalloc), with a small survivor every
    # 50 objects so the heap's top never frees by itself: what a parsed document leaves.
    freed = [bytes(2000) + str(i).encode() for i in range(100_000)]
    survivors = [bytes(600) + str(i).encode() for i in range(0, 100_000, 50)]
    grown = _rss()
    del freed
    kept = _rss()
    release_memory()
    released = _rss()
    assert grown - before > 100 << 20
    assert kept - released > (grown - before) // 2, (before, grown, kept, released)
    assert survivors


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_memory_is_released_after_a_large_document_only(
    api: Api, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    releases: list[int] = []

    def record() -> bool:
        releases.append(1)
        return True

    monkeypatch.setattr(app.documents.ingestion, "release_memory", record)
    monkeypatch.setattr(app.documents.ingestion, "RELEASE_AFTER", 2_000)
    await api.tenant("hr")
    editor = await api.user("ed", hr="editor")

    async def ingest_file(name: str, content: bytes) -> None:
        response = await client.post(
            "/api/v1/tenants/hr/documents", files={"file": (name, content)}, headers=editor
        )
        assert response.status_code == 202, response.text
        document = await wait_for(client, editor, "hr", response.json()["id"])
        assert document["status"] == "ready", document

    await ingest_file("small.txt", b"A short note about the canteen.")
    assert releases == []
    await ingest_file("large.txt", b"The canteen opens at eight. " * 100)
    # The release follows the job's last commit, so it may trail the "ready" by a moment.
    for _ in range(50):
        if releases:
            break
        await asyncio.sleep(0.1)
    assert releases == [1]
