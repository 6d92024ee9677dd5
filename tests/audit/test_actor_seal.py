"""Each audit entry carries a seal keyed with the audit secret: only the server's erasure may blank
an actor, and an entry rewritten in the database (hashes recomputed) is caught even after the last
checkpoint, by anyone who does not hold the secret."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from app.audit.chain import GENESIS_HASH, actor_commitment, compute_hash, entry_seal
from app.audit.checkpoints import CheckpointLog, write_checkpoints
from app.audit.service import VerifyReport, audit_service
from app.kit.public_ids import IdKind
from app.kit.settings import Settings
from app.models import AuditChainHead, AuditEntry
from tests.conftest import TEST_AUDIT_SECRET, Api, make_settings
from tests.helpers import key_of, public_of

HR_VERIFY = "/api/v1/tenants/hr/audit/verify"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No checkpoints at all: what is caught here is caught by the chain and its seals alone.
    return make_settings(
        database_url,
        tmp_path / "data",
        worker={"audit_checkpoint_seconds": 0, "audit_checkpoint_entries": 0},
    )


async def _entries(app: FastAPI, chain: str) -> list[AuditEntry]:
    async with app.state.database.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
        )
        return list(rows)


async def _sql(app: FastAPI, statement: str, **params: Any) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text(statement), params)


async def _verify(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(HR_VERIFY, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _verify_all(app: FastAPI) -> VerifyReport:
    async with app.state.database.sessionmaker() as session:
        return await audit_service.verify(session, checkpoints=CheckpointLog(app.state.settings))


class Hr:
    """Tenant hr: an auditor, and u1 (an hr admin) who set u2's role, so one entry of hr's chain
    has u1 as its actor."""

    def __init__(self, chain: str, auditor: dict[str, str], u1_id: int) -> None:
        self.chain = chain
        self.auditor = auditor
        self.u1_id = u1_id


@pytest.fixture
async def hr(api: Api, app: FastAPI, client: httpx.AsyncClient) -> Hr:
    tenant = await api.tenant("hr")
    auditor = await api.user("audrey", hr="auditor")
    u1 = await api.user("u1", hr="admin")
    await api.user("u2")
    response = await client.put(
        "/api/v1/tenants/hr/members/u2", json={"role": "viewer"}, headers=u1
    )
    assert response.status_code == 200, response.text
    me = (await client.get("/api/v1/users/me", headers=u1)).json()
    hr = Hr(f"tenant:{key_of(tenant['id'])}", auditor, key_of(me["id"]))
    assert any(e.actor_id == hr.u1_id for e in await _entries(app, hr.chain))
    assert (await _verify(client, auditor))["ok"] is True
    return hr


async def _erase(api: Api, client: httpx.AsyncClient, username: str) -> None:
    response = await client.post(
        "/api/v1/privacy/erase", json={"username": username}, headers=await api.admin()
    )
    assert response.status_code == 200, response.text


async def test_erasing_a_person_keeps_every_chain_valid(
    hr: Hr, api: Api, app: FastAPI, client: httpx.AsyncClient
) -> None:
    commitment = actor_commitment(TEST_AUDIT_SECRET, hr.u1_id, "u1")
    await _erase(api, client, "u1")
    theirs = [e for e in await _entries(app, hr.chain) if e.actor_commitment == commitment]
    assert theirs
    for entry in theirs:
        assert (entry.actor_id, entry.actor_name) == (None, None)
        assert entry.seal == entry_seal(TEST_AUDIT_SECRET, entry.entry_hash, erased=True)
    assert await _verify(client, hr.auditor) == {
        "ok": True,
        "entries": len(await _entries(app, hr.chain)),
        "first_bad": None,
        "checkpoints": 0,
    }
    report = await _verify_all(app)  # the global chain holds the erasure itself
    assert report.ok, report.first_bad


async def test_a_forged_erasure_is_caught(
    hr: Hr, api: Api, app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Blank columns plus whatever seal a database writer can lay hands on or make up: the seal
    of a real erasure (another entry's), the listing's pseudonym, an unkeyed hash."""
    await _erase(api, client, "u1")
    entries = await _entries(app, hr.chain)
    [erased] = [e for e in entries if e.actor_name is None and e.actor_commitment is not None]
    target = [e for e in entries if e.actor_id is not None][-1]
    forgeries = [
        erased.seal,
        target.seal,
        f"erased:{target.actor_commitment}"[:64],
        hashlib.sha256(f"seal:erased:{target.entry_hash}".encode()).hexdigest(),
    ]
    for seal in forgeries:
        await _sql(
            app,
            "UPDATE audit_entries SET actor_id = NULL, actor_name = NULL, seal = :s WHERE id = :i",
            s=seal,
            i=target.id,
        )
        report = await _verify(client, hr.auditor)
        assert report["ok"] is False, seal
        assert report["first_bad"]["id"] == public_of(IdKind.AUDIT_ENTRY, target.id)
        assert report["first_bad"]["reason"] == "actor blanked without an erasure"


async def test_an_erased_actor_written_back_is_caught(
    hr: Hr, api: Api, app: FastAPI, client: httpx.AsyncClient
) -> None:
    await _erase(api, client, "u1")
    [erased] = [
        e
        for e in await _entries(app, hr.chain)
        if e.actor_name is None and e.actor_commitment is not None
    ]
    # The commitment matches: this is the person. Re-identifying them is still a tamper.
    await _sql(
        app,
        "UPDATE audit_entries SET actor_id = :u, actor_name = 'u1' WHERE id = :i",
        u=hr.u1_id,
        i=erased.id,
    )
    first_bad = (await _verify(client, hr.auditor))["first_bad"]
    assert first_bad["id"] == public_of(IdKind.AUDIT_ENTRY, erased.id)
    assert first_bad["reason"] == "erased actor written back"


async def _recompute_from(app: FastAPI, chain: str, seq: int, *, strip_seals: bool) -> None:
    """Recompute every hash (and the head) from `seq` on, as a database writer without the
    audit secret can; optionally drop the seals it cannot recompute first, to pass those
    entries off as written before seals existed."""
    async with app.state.database.sessionmaker() as session, session.begin():
        rows = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
            )
        )
        prev = rows[seq - 2].entry_hash if seq > 1 else GENESIS_HASH
        for row in rows[seq - 1 :]:
            if strip_seals:
                row.seal = None
            row.prev_hash = prev
            row.entry_hash = compute_hash(row)
            prev = row.entry_hash
        head = await session.get(AuditChainHead, chain)
        assert head is not None
        head.last_hash = prev


@pytest.mark.parametrize("strip_seals", [False, True])
async def test_a_rewrite_after_the_last_checkpoint_is_caught_by_the_seals(
    hr: Hr, app: FastAPI, client: httpx.AsyncClient, strip_seals: bool
) -> None:
    """No checkpoint exists at all, and every hash was recomputed: the seals still tell."""
    target = (await _entries(app, hr.chain))[-2]
    await _sql(
        app,
        "UPDATE audit_entries SET details = :d WHERE id = :i",
        d='{"role":"admin"}',
        i=target.id,
    )
    await _recompute_from(app, hr.chain, target.seq, strip_seals=strip_seals)
    report = await _verify(client, hr.auditor)
    assert report["ok"] is False
    assert report["checkpoints"] == 0
    assert report["first_bad"]["seq"] == target.seq
    assert report["first_bad"]["reason"] == (
        "seal missing after sealed entries" if strip_seals else "seal does not match the entry"
    )


async def test_entries_from_before_seals_verify_as_before(
    hr: Hr, api: Api, app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Revision 0011 leaves stored entries unsealed. They verify by hash and commitment, only
    ahead of the first sealed entry, and a blanked actor passes only when the person is gone
    (no account, no readable entry): what an erasure before 0011 left."""
    await _erase(api, client, "u1")
    # As stored before revision 0011 (which adds the column empty): no seals, and hashes of
    # content without "sealed".
    async with app.state.database.read_sessionmaker() as session:
        chains = list(await session.scalars(select(AuditChainHead.chain)))
    for chain in chains:
        await _recompute_from(app, chain, 1, strip_seals=True)
    assert (await _verify(client, hr.auditor))["ok"] is True
    # Sealed from here on. (Stripping every sealed entry's seal would pass until the chain's
    # next checkpoint: the window the checkpoint cadence bounds.)
    await api.member("hr", "u2", "editor")
    await api.member("hr", "u2", "viewer")
    old = [e for e in await _entries(app, hr.chain) if e.seal is None]
    assert (await _verify(client, hr.auditor))["ok"] is True
    report = await _verify_all(app)
    assert report.ok, report.first_bad

    # Blanking an unsealed entry of someone who still has an account.
    by_admin = [e for e in old if e.actor_name == "admin"][-1]
    await _sql(
        app,
        "UPDATE audit_entries SET actor_id = NULL, actor_name = NULL WHERE id = :i",
        i=by_admin.id,
    )
    first_bad = (await _verify(client, hr.auditor))["first_bad"]
    assert first_bad["id"] == public_of(IdKind.AUDIT_ENTRY, by_admin.id)
    assert first_bad["reason"] == "actor blanked, but the person was not erased"
    await _sql(
        app,
        "UPDATE audit_entries SET actor_id = :a, actor_name = 'admin' WHERE id = :i",
        a=by_admin.actor_id,
        i=by_admin.id,
    )
    assert (await _verify(client, hr.auditor))["ok"] is True

    # Dropping the seal of a newer entry (and recomputing its hash), to pass it off as old.
    newest = (await _entries(app, hr.chain))[-1]
    assert newest.seal is not None
    await _recompute_from(app, hr.chain, newest.seq, strip_seals=True)
    first_bad = (await _verify(client, hr.auditor))["first_bad"]
    assert first_bad["seq"] == newest.seq
    assert first_bad["reason"] == "seal missing after sealed entries"


async def test_dropping_seals_is_caught_and_a_checkpoint_pins_them(
    hr: Hr, app: FastAPI, client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    """A sealed entry's hash covers that it was sealed: dropping the seals breaks the hashes.
    Recomputing every hash too passes the chain off as written before seals existed, which
    only a checkpoint signed before can tell."""
    async with app.state.database.sessionmaker() as session, session.begin():
        assert await write_checkpoints(session, settings) >= 1
    await _sql(app, "UPDATE audit_entries SET seal = NULL WHERE chain = :c", c=hr.chain)
    first_bad = (await _verify(client, hr.auditor))["first_bad"]
    assert (first_bad["seq"], first_bad["reason"]) == (1, "content does not match its hash")

    await _recompute_from(app, hr.chain, 1, strip_seals=True)
    async with app.state.database.sessionmaker() as session:
        walk_only = await audit_service.verify(
            session, checkpoints=CheckpointLog(settings, path=tmp_path / "none.jsonl")
        )
    assert walk_only.ok, walk_only.first_bad
    report = await _verify(client, hr.auditor)
    assert report["ok"] is False
    assert report["first_bad"]["reason"].startswith("checkpoint mismatch")
