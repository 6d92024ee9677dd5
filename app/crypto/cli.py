"""`cairn encryption enable | rotate-kek | rotate-tenant-key | status` (registered in
app/cli.py). The operator acts
as the system; each command runs here against the configured database and data dir."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from app.container import Container
from app.crypto.rotation import rotate_tenant_key
from app.crypto.service import enable, rotate_kek, status
from app.jobs.runtime import Runtime
from app.kit.console import prepared
from app.kit.envelope import EncryptionError
from app.kit.kek import load_kek
from app.kit.settings import Settings, get_settings
from app.tenants.repository import tenant_repository

T = TypeVar("T")

encryption_app = typer.Typer(
    help="Encryption at rest: convert existing data, rotate the KEK, report.",
    no_args_is_help=True,
)


def _with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def run() -> T:
        container = Container(settings)
        try:
            return await work(container)
        finally:
            await container.close()

    try:
        return asyncio.run(run())
    except EncryptionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc


@encryption_app.command("enable")
def enable_command() -> None:
    """Encrypt what is stored in plaintext (chunk rows, originals, shard files); resumable:
    run it again after an interruption, already encrypted data is skipped."""
    settings = prepared(get_settings())
    done = _with_runtime(settings, lambda runtime: enable(runtime, progress=typer.echo))
    typer.echo(f"encrypted {done.chunks} chunk rows, {done.files} files, {done.shards} shard files")


@encryption_app.command("rotate-kek")
def rotate_kek_command(
    new_kek_file: Annotated[
        Path, typer.Option("--new-kek-file", help="the new KEK (32 random bytes, base64, 0600)")
    ],
) -> None:
    """Re-wrap every tenant's data key under a new KEK (data is not touched). Then point
    CAIRN_ENCRYPTION__KEK_FILE at the new file, restart, and destroy the old one."""
    settings = prepared(get_settings())
    try:
        new = load_kek(new_kek_file)
    except EncryptionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    count = _with_runtime(settings, lambda runtime: rotate_kek(runtime, new))
    typer.echo(
        f"re-wrapped {count} tenant keys under KEK {new.fingerprint}; set "
        f"CAIRN_ENCRYPTION__KEK_FILE={new_kek_file} and restart every process"
    )


@encryption_app.command("rotate-tenant-key")
def rotate_tenant_key_command(
    slug: Annotated[str, typer.Argument(help="tenant slug")],
    settle_seconds: Annotated[
        float | None,
        typer.Option(
            "--settle-seconds",
            min=0,
            max=3600,
            help="wait this long for running processes to pick up the new key before "
            "re-encrypting (default: encryption.key_refresh_seconds + 5 s)",
        ),
    ] = None,
) -> None:
    """Give one tenant a new data key, re-encrypt its data under it while the server keeps
    serving, then destroy the old key; resumable: run it again after an interruption."""
    settings = prepared(get_settings())

    async def work(runtime: Runtime) -> str:
        async with runtime.database.read_sessionmaker() as session:
            tenant = await tenant_repository.get_by_slug(session, slug)
        if tenant is None:
            raise EncryptionError(f"no tenant {slug!r}")
        done = await rotate_tenant_key(
            runtime, tenant.id, settle_seconds=settle_seconds, progress=typer.echo
        )
        return f"{slug}: key generation {done.generation} in force, the old key destroyed"

    typer.echo(_with_runtime(settings, work))


@encryption_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per tenant")] = False,
) -> None:
    """Per tenant: its key's KEK fingerprint and how much is encrypted (chunks, files, shards)."""
    settings = prepared(get_settings())
    report = _with_runtime(settings, status)
    typer.echo(f"encryption.enabled: {str(settings.encryption.enabled).lower()}")
    for entry in report:
        if as_json:
            typer.echo(json.dumps(dataclasses.asdict(entry) | {"complete": entry.complete}))
            continue
        typer.echo(
            f"{entry.slug}: key {entry.key}"
            + (f" (generation {entry.generation})" if entry.generation > 1 else "")
            + (" (rotation not finished)" if entry.rotating else "")
            + f"; chunks {entry.chunks.sealed}/{entry.chunks.total}, "
            f"files {entry.files.sealed}/{entry.files.total}, "
            f"shards {entry.shards.sealed}/{entry.shards.total} encrypted"
            + (" (complete)" if entry.complete else "")
        )
