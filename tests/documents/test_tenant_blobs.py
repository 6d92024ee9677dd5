"""Issue 21, item 4: stored files are addressed per tenant, so a purge in one tenant can neither
be held up by, nor report on, another tenant holding the same bytes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
from fastapi import FastAPI

from app.documents.service import document_service
from tests.conftest import Api
from tests.documents.helpers import wait_for
from tests.helpers import key_of

SAME_BYTES = b"Shared policy text: the fire assembly point is the north car park."


async def _upload(client: httpx.AsyncClient, headers: dict[str, str], slug: str) -> str:
    response = await client.post(
        f"/api/v1/tenants/{slug}/documents",
        files={"file": ("policy.txt", SAME_BYTES, "text/plain")},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _purged(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, doc_id: str
) -> dict[str, Any]:
    response = await client.delete(
        f"/api/v1/tenants/{slug}/documents/{doc_id}?purge=true", headers=headers
    )
    assert response.status_code == 202, response.text
    url = f"/api/v1/tenants/{slug}/deletion-receipts/{response.json()['receipt_id']}"
    deadline = time.monotonic() + 60
    while (receipt := (await client.get(url, headers=headers)).json())["status"] == "pending":
        assert time.monotonic() < deadline, receipt
        await asyncio.sleep(0.2)
    return dict(receipt)


async def test_a_purge_says_nothing_of_another_tenants_identical_file(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    a = await api.tenant("alpha")
    b = await api.tenant("beta")
    alpha = await api.user("aa", alpha="admin")
    beta = await api.user("bb", beta="admin")
    in_a = await _upload(client, alpha, "alpha")
    in_b = await _upload(client, beta, "beta")
    store = app.state.content_store
    sha = (await client.get(f"/api/v1/tenants/alpha/documents/{in_a}", headers=alpha)).json()[
        "sha256"
    ]
    path_a, path_b = store.path_for(key_of(a["id"]), sha), store.path_for(key_of(b["id"]), sha)
    assert path_a != path_b
    assert path_a.is_file()
    assert path_b.is_file()

    receipt = await _purged(client, beta, "beta", in_b)
    assert receipt["status"] == "done", receipt
    checks = {c["name"]: c for c in receipt["verification"]["checks"]}
    assert checks["stored_file"]["passed"]
    assert checks["stored_file"]["detail"] == "removed"
    text = json.dumps(receipt).lower()
    assert "another" not in text
    assert "kept" not in text
    assert not path_b.exists()
    # Alpha's copy is untouched and its document still reads its file.
    assert path_a.is_file()
    assert (await wait_for(client, alpha, "alpha", in_a))["status"] == "ready"


async def test_legacy_shared_blobs_move_under_each_tenant(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    a = await api.tenant("alpha")
    b = await api.tenant("beta")
    alpha = await api.user("aa", alpha="admin")
    beta = await api.user("bb", beta="admin")
    in_a = await _upload(client, alpha, "alpha")
    await _upload(client, beta, "beta")
    await wait_for(client, alpha, "alpha", in_a)
    store = app.state.content_store
    sha = (await client.get(f"/api/v1/tenants/alpha/documents/{in_a}", headers=alpha)).json()[
        "sha256"
    ]
    # The layout before this change: one blob for both tenants, plus an orphan nobody holds.
    legacy = store.legacy_path_for(sha)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    os.replace(store.path_for(key_of(a["id"]), sha), legacy)
    store.path_for(key_of(b["id"]), sha).unlink()
    orphan = store.legacy_path_for("0" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"nobody's")
    assert store.read(key_of(a["id"]), sha) == SAME_BYTES  # read falls back meanwhile

    moved = await document_service.relocate_legacy_blobs(app.state.database, store)
    assert moved == 2
    assert not legacy.exists()
    assert not orphan.exists()
    for tenant in (a, b):
        assert store.path_for(key_of(tenant["id"]), sha).read_bytes() == SAME_BYTES
    assert await document_service.relocate_legacy_blobs(app.state.database, store) == 0
