"""Signed checkpoints catch what the hash chain alone cannot: a chain rewritten consistently in
the database (every hash recomputed) and a chain deleted together with its head row."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI
from sqlalchemy import select, text

from app.audit.chain import GENESIS_HASH, compute_hash, entry_seal
from app.audit.checkpoints import (
    Checkpoint,
    CheckpointLog,
    parse_private_key,
    signing_payload,
    write_checkpoints,
)
from app.audit.service import VerifyReport, audit_service
from app.kit.settings import InsecureConfiguration, Settings
from app.models import AuditChainHead, AuditEntry
from tests.conftest import TEST_AUDIT_SECRET, TEST_SECRET, Api, make_settings
from tests.helpers import key_of

HR_VERIFY = "/api/v1/tenants/hr/audit/verify"


async def _sql(app: FastAPI, statement: str, **params: Any) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text(statement), params)


async def _checkpoint(app: FastAPI, settings: Settings) -> int:
    async with app.state.database.sessionmaker() as session, session.begin():
        return await write_checkpoints(session, settings)


async def _verify_all(app: FastAPI, log: CheckpointLog) -> VerifyReport:
    """What `cairn audit verify` checks: every chain, every checkpoint."""
    async with app.state.database.sessionmaker() as session:
        return await audit_service.verify(session, checkpoints=log)


async def _verify(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(HR_VERIFY, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _head_seq(app: FastAPI, chain: str) -> int:
    async with app.state.database.sessionmaker() as session:
        head = await session.get(AuditChainHead, chain)
        assert head is not None
        return int(head.seq)


async def _rewrite(app: FastAPI, chain: str, how: str, seq: int) -> None:
    """Edit or delete the entry at `seq`, then recompute every later hash, seal and the head,
    as someone with write access to the database and the audit secret could: the hash chain
    and the seals alone then verify."""
    async with app.state.database.sessionmaker() as session, session.begin():
        rows = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
            )
        )
        if how == "edit":
            rows[seq - 1].details = json.dumps({"role": "admin"}, separators=(",", ":"))
        else:
            await session.delete(rows.pop(seq - 1))
            await session.flush()
            for row in rows[seq - 1 :]:  # renumber upwards: (chain, seq) stays unique
                row.seq -= 1
                await session.flush()
        prev = GENESIS_HASH
        for row in rows:
            row.prev_hash = prev
            row.entry_hash = compute_hash(row)
            row.seal = entry_seal(TEST_AUDIT_SECRET, row.entry_hash)
            prev = row.entry_hash
        head = await session.get(AuditChainHead, chain)
        assert head is not None
        head.seq, head.last_hash = rows[-1].seq, prev


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # These tests take every checkpoint themselves: the periodic job is switched off.
    return make_settings(
        database_url,
        tmp_path / "data",
        worker={"audit_checkpoint_seconds": 0, "audit_checkpoint_entries": 0},
    )


@pytest.fixture
async def hr(api: Api, app: FastAPI) -> tuple[str, dict[str, str]]:
    tenant = await api.tenant("hr")
    auditor = await api.user("audrey", hr="auditor")
    for name in ("u1", "u2"):
        await api.user(name, hr="viewer")
    return f"tenant:{key_of(tenant['id'])}", auditor


async def _grow(api: Api) -> None:
    """More entries in hr's chain."""
    await api.member("hr", "u1", "editor")
    await api.member("hr", "u2", "editor")


@pytest.mark.parametrize("how", ["edit", "delete"])
async def test_a_consistent_rewrite_is_caught_by_an_earlier_checkpoint(
    hr: tuple[str, dict[str, str]],
    api: Api,
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    tmp_path: Path,
    how: str,
) -> None:
    name, auditor = hr
    assert await _checkpoint(app, settings) >= 2  # global and hr
    early = await _head_seq(app, name)
    await _grow(api)
    assert await _checkpoint(app, settings) >= 1
    late = await _head_seq(app, name)
    assert late > early

    # An entry after the first checkpoint: that one still matches, the second does not.
    await _rewrite(app, name, how, early + 1)
    walk_only = await _verify_all(app, CheckpointLog(settings, path=tmp_path / "none.jsonl"))
    assert walk_only.ok, walk_only.first_bad  # hash chain and seals alone are fooled
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["checkpoints"] == 2
    bad = report["first_bad"]
    assert (
        bad["chain"]
        == f"tenant:{(await client.get('/api/v1/tenants/hr', headers=auditor)).json()['id']}"
    )
    assert bad["seq"] == late
    expected = "entry hash differs" if how == "edit" else "entry missing"
    assert bad["reason"].startswith("checkpoint mismatch: " + expected), bad

    # An entry before the first checkpoint: reported at that first checkpoint.
    await _rewrite(app, name, "edit", 1)
    report = await _verify(client, auditor)
    assert report["first_bad"]["seq"] == early
    assert report["first_bad"]["reason"] == (
        "checkpoint mismatch: entry hash differs from signed checkpoint"
    )
    full = await _verify_all(app, CheckpointLog(settings))
    assert full.first_bad is not None
    assert (full.first_bad.chain, full.first_bad.seq) == (name, early)


async def test_a_rewritten_chain_is_not_signed_again(
    hr: tuple[str, dict[str, str]], api: Api, app: FastAPI, settings: Settings
) -> None:
    name, _ = hr
    await _checkpoint(app, settings)
    await _grow(api)
    await _rewrite(app, name, "edit", 2)
    before = CheckpointLog(settings).read()
    # The head moved, but it no longer extends the signed one: signing it would bless the edit.
    assert await _checkpoint(app, settings) == 0
    assert CheckpointLog(settings).read() == before


async def test_deleting_a_whole_tenant_chain_with_its_head_is_detected(
    hr: tuple[str, dict[str, str]],
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    tmp_path: Path,
) -> None:
    name, auditor = hr
    await _checkpoint(app, settings)
    seq = await _head_seq(app, name)
    await _sql(app, "DELETE FROM audit_entries WHERE chain = :c", c=name)
    await _sql(app, "DELETE FROM audit_chain_heads WHERE chain = :c", c=name)
    walk_only = await _verify_all(app, CheckpointLog(settings, path=tmp_path / "none.jsonl"))
    assert walk_only.ok  # no rows, no head: nothing left for the hash chain to disagree with

    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["entries"] == 0
    assert report["first_bad"]["seq"] == seq
    assert report["first_bad"]["reason"].startswith("chain missing")
    # Verifying everything (the CLI) finds it from the checkpoint file alone.
    full = await _verify_all(app, CheckpointLog(settings))
    assert full.first_bad is not None
    assert (full.first_bad.chain, full.first_bad.seq) == (name, seq)
    assert full.first_bad.reason.startswith("chain missing")


async def test_forged_checkpoint_lines_are_reported(
    hr: tuple[str, dict[str, str]],
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    name, auditor = hr
    await _checkpoint(app, settings)
    log = CheckpointLog(settings)
    [real] = [c for _, c in log.read() if c is not None and c.chain != "global"]
    assert (await _verify(client, auditor))["ok"] is True

    # The same checkpoint with another hash: its signature no longer holds.
    forged = Checkpoint(**{**real.__dict__, "seq": real.seq - 1, "head_hash": "ab" * 32})
    log.append([forged])
    report = await _verify(client, auditor)
    assert report["ok"] is False
    assert report["checkpoints"] == 2
    assert report["first_bad"]["seq"] == real.seq - 1
    assert report["first_bad"]["reason"] == "checkpoint signature invalid"

    # A correct signature under a key that is not the deployment's.
    other = Ed25519PrivateKey.generate()
    payload = signing_payload(real.chain, 1, "cd" * 32, real.time)
    stranger = Checkpoint(
        real.chain,
        1,
        "cd" * 32,
        real.time,
        "0" * 16,
        base64.b64encode(other.sign(payload)).decode(),
    )
    log.append([stranger])
    report = await _verify(client, auditor)
    assert report["first_bad"]["seq"] == 1
    assert report["first_bad"]["reason"].startswith("checkpoint signed by another key")

    # A line that is not a checkpoint is reported when every chain is checked.
    with log.path.open("a") as handle:
        handle.write('{"chain": "tenant:12", "seq": "x"}\n')
    full = await _verify_all(app, log)
    assert full.first_bad is not None
    assert full.first_bad.chain == name  # chain problems first
    lines = log.read()
    log.path.write_text("".join(c.to_line() for _, c in lines if c == real) + "not json\n")
    full = await _verify_all(app, log)
    assert full.first_bad is not None
    assert full.first_bad.chain == "checkpoint-file"
    assert full.first_bad.seq == 2


async def test_untouched_chains_verify_with_their_checkpoints(
    hr: tuple[str, dict[str, str]],
    api: Api,
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    _, auditor = hr
    assert await _checkpoint(app, settings) == 2  # the platform chain and hr's
    assert await _checkpoint(app, settings) == 0  # nothing moved
    await _grow(api)
    assert await _checkpoint(app, settings) == 1  # only hr's moved
    entries = (await client.get("/api/v1/tenants/hr/audit?limit=500", headers=auditor)).json()
    assert await _verify(client, auditor) == {
        "ok": True,
        "entries": entries["total"],
        "first_bad": None,
        "checkpoints": 2,
    }
    admin = await api.admin()
    platform = (await client.get("/api/v1/audit/verify", headers=admin)).json()
    assert platform["ok"] is True
    assert platform["checkpoints"] == 1  # the platform chain's only: hr's is not the admin's
    full = await _verify_all(app, CheckpointLog(settings))
    assert full.ok
    assert full.checkpoints == 3

    # The file is private, and the checkpoints come back through the API as they were signed.
    path = CheckpointLog(settings).path
    assert path == settings.data_dir / "audit-checkpoints.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((settings.data_dir / ".audit_signing_key").stat().st_mode) == 0o600
    listing = await client.get("/api/v1/tenants/hr/audit/checkpoints", headers=auditor)
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["total"] == 2
    assert [c["seq"] for c in body["items"]] == sorted(c["seq"] for c in body["items"])
    tenant_id = (await client.get("/api/v1/tenants/hr", headers=auditor)).json()["id"]
    assert {c["chain"] for c in body["items"]} == {f"tenant:{tenant_id}"}
    assert f'"tenant:{key_of(tenant_id)}"' not in json.dumps(body)  # no database key shown
    mine = (await client.get("/api/v1/audit/checkpoints", headers=auditor)).json()
    assert mine == body
    filtered = await client.get(
        "/api/v1/audit/checkpoints", params={"chain": "global"}, headers=auditor
    )
    assert filtered.json()["total"] == 0
    admin_view = (await client.get("/api/v1/audit/checkpoints", headers=admin)).json()
    assert {c["chain"] for c in admin_view["items"]} == {"global"}
    outsider = await api.user("outsider")
    assert (await client.get("/api/v1/audit/checkpoints", headers=outsider)).json()["total"] == 0

    # A witness checks them offline with the published public key.
    published = (await client.get("/api/v1/audit/public-key", headers=outsider)).json()
    public_key = serialization.load_pem_public_key(published["public_key_pem"].encode())
    assert isinstance(public_key, Ed25519PublicKey)
    for item in body["items"]:
        assert item["key_id"] == published["key_id"]
        payload = signing_payload(item["chain"], item["seq"], item["head_hash"], item["time"])
        public_key.verify(base64.b64decode(item["signature"]), payload)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, jwt_secret=TEST_SECRET, audit_secret=TEST_AUDIT_SECRET, **values
    )


def test_production_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfiguration, match="CAIRN_AUDIT_SIGNING_KEY"):
        _settings(tmp_path, environment="production")
    seed = base64.b64encode(os.urandom(32)).decode()
    settings = _settings(tmp_path, environment="production", audit_signing_key=seed)
    key = CheckpointLog(settings).signing_key()
    assert key.private_bytes_raw() == base64.b64decode(seed)
    assert not (tmp_path / ".audit_signing_key").exists()


async def test_signing_keys_as_pem_file_or_base64(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "signing.pem"
    path.write_text(pem)
    for settings in (
        _settings(tmp_path, audit_signing_key=pem),
        _settings(tmp_path, audit_signing_key=pem.replace("\n", "\\n")),
        _settings(tmp_path, audit_signing_key_file=path),
    ):
        assert CheckpointLog(settings).signing_key().private_bytes_raw() == key.private_bytes_raw()
    for bad in ("not a key", base64.b64encode(b"short").decode(), "-----BEGIN junk"):
        with pytest.raises(InsecureConfiguration, match="not an Ed25519 private key"):
            parse_private_key(bad, "CAIRN_AUDIT_SIGNING_KEY")
    # Development: generated once, then reused.
    dev = CheckpointLog(_settings(tmp_path / "dev"))
    assert dev.signing_key().private_bytes_raw() == dev.signing_key().private_bytes_raw()
    # A verify key that does not match the signing key is refused before anything is signed.
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    mismatched = _settings(
        tmp_path, audit_signing_key=pem, audit_verify_public_key=base64.b64encode(other).decode()
    )
    with pytest.raises(InsecureConfiguration, match="does not match"):
        await write_checkpoints(None, mismatched)  # type: ignore[arg-type]  # fails before use


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cli_verify_exits_nonzero_after_a_consistent_rewrite(
    hr: tuple[str, dict[str, str]], api: Api, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    name, _ = hr
    env = {
        **os.environ,
        "CAIRN_DATABASE_URL": str(settings.database_url),
        "CAIRN_AUDIT_SECRET": str(settings.audit_secret),
        "CAIRN_DATA_DIR": str(settings.data_dir),
    }

    def cairn(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app.cli", "audit", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    # In threads: blocking the event loop would freeze the app's worker pool mid-transaction.
    written = await asyncio.to_thread(cairn, "checkpoint")
    assert written.returncode == 0, written.stderr
    assert "wrote 2 checkpoint(s)" in written.stdout
    ok = await asyncio.to_thread(cairn, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["checkpoints"] == 2

    witness = tmp_path / "witness.jsonl"
    shutil.copyfile(CheckpointLog(settings).path, witness)
    await _grow(api)
    await _rewrite(app, name, "edit", 2)
    bad = await asyncio.to_thread(cairn, "verify")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert report["first_bad"]["reason"].startswith("checkpoint mismatch")
    # Emptying the local file does not help: the witness's copy still holds the checkpoints.
    CheckpointLog(settings).path.write_text("")
    again = await asyncio.to_thread(cairn, "verify", "--checkpoint-file", str(witness))
    assert again.returncode == 1
    assert json.loads(again.stdout)["first_bad"] == report["first_bad"]
