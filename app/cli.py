"""The `cairn` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.backup.cli import (
    BackupDir,
    RestoreDir,
    TombstoneFiles,
    run_backup,
    run_restore,
)
from app.bench.cli import bench_app
from app.chat.cli import ask_command
from app.crypto.cli import encryption_app
from app.documents.cli import DocumentArg, DryRun, TenantOpt, purge_document, retention_purge
from app.evaluation.cli import eval_app
from app.feedback.cli import feedback_app
from app.kit import settings as settings_module
from app.kit.actor import SystemActor
from app.kit.console import OneLineErrors, prepared
from app.kit.errors import CairnError
from app.kit.files import restrict_umask
from app.kit.locate import choose_for_cli
from app.kit.settings import Settings, get_settings
from app.search.cli import search_command

if TYPE_CHECKING:
    from app.container import Container

app = typer.Typer(
    help="Cairn knowledge-base server.",
    no_args_is_help=True,
    cls=OneLineErrors,
    # --debug tracebacks without local variables: they would print settings and tokens.
    pretty_exceptions_show_locals=False,
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
members_app = typer.Typer(help="Manage tenant memberships.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
privacy_app = typer.Typer(help="A person's data: export and erasure.", no_args_is_help=True)
index_app = typer.Typer(help="Search indexes.", no_args_is_help=True)
documents_app = typer.Typer(help="Documents: hard delete.", no_args_is_help=True)
app.add_typer(documents_app, name="documents")
app.add_typer(index_app, name="index")
app.add_typer(users_app, name="users")
app.add_typer(tenants_app, name="tenants")
app.add_typer(members_app, name="members")
app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
app.command("search")(search_command)
app.command("ask")(ask_command)
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")
app.add_typer(encryption_app, name="encryption")
app.add_typer(feedback_app, name="feedback")

T = TypeVar("T")

# The commands that create a data dir where the resolution order leads (app/kit/locate.py);
# every other command refuses to run on a missing or never-migrated one. A worker is a server
# process too: scaled out, it starts on a fresh shared volume and writes index shards there.
# A restore fills an empty data dir (and refuses any other).
_CREATING_COMMANDS = frozenset({"serve", "migrate", "worker", "restore"})


@app.callback()
def _global_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="the data folder (default: CAIRN_DATA_DIR, then the data_dir of a cairn.toml "
            "found upward from here, then ./data)",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error, not one line")
    ] = False,
) -> None:
    choose_for_cli(data_dir, creates=ctx.invoked_subcommand in _CREATING_COMMANDS)
    settings_module.get_settings.cache_clear()

    def forget() -> None:
        # In-process callers (tests) run more commands after this one.
        choose_for_cli(None, creates=False)
        settings_module.get_settings.cache_clear()

    ctx.call_on_close(forget)


def _settings() -> Settings:
    """Settings for a command that uses the database, once its data is found (migrated
    first on embedded SQLite); serve and migrate create a missing data dir."""
    return prepared(get_settings())


def _run_in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction against the configured database."""
    return _run_in_container(lambda _, session: work(session))


def _run_in_container(work: Callable[[Container, AsyncSession], Awaitable[T]]) -> T:
    """Run `work` with this process's container, in one committed transaction."""
    from app.container import Container
    from app.kit.authz import sync_role_permissions
    from app.kit.security import configure_password_hashing

    settings = _settings()
    configure_password_hashing(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )

    async def runner() -> T:
        container = Container(settings)
        try:
            async with container.database.sessionmaker() as session, session.begin():
                await sync_role_permissions(session)
                return await work(container, session)
        finally:
            await container.close()

    return _run_async(runner())


@app.command()
def migrate() -> None:
    """Apply database migrations up to head."""
    from app.kit.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    typer.echo("database is at head")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    migrate_first: Annotated[
        bool | None,
        typer.Option("--migrate/--no-migrate", help="apply migrations first (default: on SQLite)"),
    ] = None,
    preload: Annotated[
        bool,
        typer.Option(
            "--preload/--no-preload",
            help="load the answer generator while the server starts, not on the first question",
        ),
    ] = True,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from app.kit.db import is_sqlite
    from app.kit.logs import configure_logging
    from app.kit.migrate import upgrade
    from app.kit.serving import server_config
    from app.main import create_app

    settings = _settings()
    log_config = configure_logging(settings)
    if preload and not settings.generator.preload:
        settings = settings.model_copy(
            update={"generator": settings.generator.model_copy(update={"preload": True})}
        )
    url = settings.resolved_database_url
    # Embedded default: migrate on start. Scaled out, several replicas would race, so run
    # `cairn migrate` once per deploy instead (or pass --migrate).
    if migrate_first if migrate_first is not None else is_sqlite(url):
        upgrade(url)
    # Slow-client bounds, the connection limit and no proxy headers of uvicorn's own: the
    # same Config the live-server tests run.
    config = server_config(
        create_app(settings),
        settings,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=log_config,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        # As uvicorn.run: a server that never started (port taken, lifespan failed) fails.
        raise typer.Exit(code=3)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option(help="login name")],
    password: Annotated[
        str, typer.Option(help="password (at least auth.password_min_length characters)")
    ],
    email: Annotated[str | None, typer.Option(help="e-mail address")] = None,
    platform_admin: Annotated[bool, typer.Option("--platform-admin")] = False,
) -> None:
    """Create a user."""
    from pydantic import ValidationError

    from app.users.passwords import PasswordPolicy
    from app.users.schemas import UserCreate
    from app.users.service import user_service

    try:
        data = UserCreate(
            username=username, password=password, email=email, is_platform_admin=platform_admin
        )
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(code=2) from exc

    async def work(session: AsyncSession) -> int:
        policy = PasswordPolicy.from_settings(get_settings())
        user = await user_service.create(session, SystemActor.OPERATOR, data, policy=policy)
        return user.id

    from app.kit.public_ids import IdKind, encode_id

    user_id = _run_in_session(work)
    typer.echo(f"created user {data.username} ({encode_id(IdKind.USER, user_id)})")


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[str, typer.Argument(help="URL name, e.g. hr")],
    name: Annotated[str, typer.Option(help="display name")],
    admin: Annotated[
        str | None,
        typer.Option(
            help="an existing user to make the tenant's admin (the command line has no user "
            "of its own to make admin, as the API's caller is)",
        ),
    ] = None,
) -> None:
    """Create a tenant (department), with its first admin when --admin names one."""
    from pydantic import ValidationError

    from app.tenants.schemas import TenantCreate
    from app.tenants.service import tenant_service

    try:
        data = TenantCreate(slug=slug, name=name)
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(code=2) from exc

    async def work(session: AsyncSession) -> int:
        return (
            await tenant_service.create(session, SystemActor.OPERATOR, data, admin_username=admin)
        ).id

    from app.kit.public_ids import IdKind, encode_id

    tenant_id = _run_in_session(work)
    typer.echo(f"created tenant {slug} ({encode_id(IdKind.TENANT, tenant_id)})")
    if admin is not None:
        typer.echo(f"{admin.lower()} is now admin in {slug}")
    else:
        typer.echo(f"no admin yet: cairn members set {slug} USERNAME admin")


@tenants_app.command("delete")
def tenants_delete(
    slug: Annotated[str, typer.Argument(help="tenant slug")],
    shred: Annotated[
        bool,
        typer.Option(
            "--shred",
            help="destroy the tenant's data key first (committed), so every encrypted copy of "
            "its data, backups included, can no longer be decrypted",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a tenant with all its documents, chunks, shards, files and cached answers."""
    from app.container import Container
    from app.tenants.deletion import delete_tenant

    if not yes:
        typer.confirm(f"Delete tenant {slug} and everything in it?", abort=True)
    settings = _settings()

    async def work() -> str:
        container = Container(settings)
        try:
            done = await delete_tenant(container, SystemActor.OPERATOR, slug, shred=shred)
        finally:
            await container.close()
        return f"deleted tenant {done.slug}" + (" (data key destroyed first)" if shred else "")

    typer.echo(_run_async(work()))


@members_app.command("set")
def members_set(
    slug: Annotated[str, typer.Argument(help="tenant slug")],
    username: Annotated[str, typer.Argument()],
    role: Annotated[
        str, typer.Argument(help="admin|editor|viewer|restricted_viewer|guest|auditor")
    ],
) -> None:
    """Give a user a role in a tenant."""
    from app.kit.authz import TENANT_ROLES
    from app.kit.errors import ResourceNotFound
    from app.tenants.repository import tenant_repository
    from app.tenants.service import tenant_service

    if role not in TENANT_ROLES:
        typer.echo(f"error: role must be one of {', '.join(TENANT_ROLES)}", err=True)
        raise typer.Exit(code=2)

    async def work(session: AsyncSession) -> None:
        tenant = await tenant_repository.get_by_slug(session, slug)
        if tenant is None:
            raise ResourceNotFound("Tenant not found")
        await tenant_service.set_member(
            session, tenant=tenant, username=username, role=role, actor=SystemActor.OPERATOR
        )

    _run_in_session(work)
    typer.echo(f"{username} is now {role} in {slug}")


@audit_app.command("verify")
def audit_verify(
    checkpoint_file: Annotated[
        Path | None,
        typer.Option(
            help="check against this copy of the checkpoints (a witness's) instead of "
            "audit_checkpoint_file"
        ),
    ] = None,
) -> None:
    """Verify every audit hash chain against every signed checkpoint; exits 1 if any entry was
    edited, removed or reordered, or a chain was rewritten or deleted since a checkpoint."""
    from app.audit.checkpoints import CheckpointLog
    from app.audit.schemas import VerifyRead
    from app.audit.service import audit_service
    from app.kit.settings import InsecureConfiguration

    async def work(session: AsyncSession) -> VerifyRead:
        log = CheckpointLog(get_settings(), path=checkpoint_file)
        return VerifyRead.of(await audit_service.verify(session, checkpoints=log))

    try:
        report = _run_in_session(work)
    except InsecureConfiguration as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(json.dumps(report.model_dump(), indent=2))
    if not report.ok:
        raise typer.Exit(code=1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign and append a checkpoint of every audit chain that moved since its last one."""
    from app.audit.checkpoints import CheckpointLog, write_checkpoints
    from app.kit.settings import InsecureConfiguration

    settings = get_settings()

    async def work(session: AsyncSession) -> int:
        return await write_checkpoints(session, settings)

    try:
        written = _run_in_session(work)
    except InsecureConfiguration as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"wrote {written} checkpoint(s) to {CheckpointLog(settings).path}")


@privacy_app.command("export")
def privacy_export(username: Annotated[str, typer.Argument(help="the person's username")]) -> None:
    """Print everything held about a person as JSON (GDPR article 15); audited."""
    from app.privacy.schemas import PrivacyExport
    from app.privacy.service import privacy_service

    async def work(container: Container, session: AsyncSession) -> PrivacyExport:
        enforcer = container.enforcer
        await enforcer.refresh(session)
        return await privacy_service.export(
            session, SystemActor.OPERATOR, enforcer, username=username
        )

    typer.echo(_run_in_container(work).model_dump_json(indent=2))


@privacy_app.command("erase")
def privacy_erase(
    username: Annotated[str, typer.Argument(help="the person's username")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Erase a person (GDPR article 17) and print the verified deletion receipt."""
    from app.kit.db import checkpoint_sqlite_wal
    from app.privacy.service import privacy_service
    from app.receipts.schemas import ReceiptRead

    if not yes:
        typer.confirm(f"Erase {username} and everything held about them?", abort=True)

    async def work(session: AsyncSession) -> ReceiptRead:
        return ReceiptRead.of(
            await privacy_service.erase(session, SystemActor.OPERATOR, username=username)
        )

    receipt = _run_in_session(work)
    # Committed: now the erased bytes leave SQLite's write-ahead log too.
    if not checkpoint_sqlite_wal(get_settings().resolved_database_url):
        typer.echo("warning: a reader kept the write-ahead log from being emptied", err=True)
    typer.echo(receipt.model_dump_json(indent=2))


@documents_app.command("purge")
def documents_purge(document: DocumentArg, tenant: TenantOpt) -> None:
    """Hard-delete a document now: every store, verified; prints the deletion receipt."""
    settings = _settings()
    typer.echo(_run_async(purge_document(settings, tenant, document)))


@app.command("purge")
def purge(dry_run: DryRun = False) -> None:
    """The retention purge now: soft-deleted documents past their retention window."""
    settings = _settings()
    typer.echo(_run_async(retention_purge(settings, dry_run=dry_run)))


@app.command("backup")
def backup(directory: BackupDir = None) -> None:
    """Back up the database, shard files and stored files while the server runs (no keys)."""
    settings = _settings()
    typer.echo(run_backup(settings, directory))


@app.command("restore")
def restore(backup_dir: RestoreDir, tombstones: TombstoneFiles = None) -> None:
    """Restore a backup into an empty data dir and empty database; purges and erasures done
    after the backup (tombstones) are done again before anything serves."""
    # Not _settings(): that would migrate and generate secrets in the (empty) target first.
    typer.echo(run_restore(get_settings(), backup_dir, tombstones or []))


def _run_async(work: Awaitable[T]) -> T:
    """Run a coroutine; Cairn's errors become a message and exit code 1."""

    try:
        return asyncio.run(_awaited(work))
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc


async def _awaited(work: Awaitable[T]) -> T:
    # asyncio.run wants a coroutine; `work` may be any awaitable.
    return await work


@app.command()
def worker() -> None:
    """Run background workers: Celery on CAIRN_BROKER_URL, else the in-process pool."""
    from app.kit.logs import configure_logging

    settings = _settings()
    configure_logging(settings)
    if settings.broker_url:
        from app.jobs.celery_app import celery_app_for, start_sweeper

        sweeper = start_sweeper(settings)
        try:
            celery_app_for(settings.broker_url).worker_main(
                [
                    "worker",
                    f"--concurrency={settings.worker.concurrency}",
                    "--loglevel=INFO",
                    "--queues=cairn",
                ]
            )
        finally:
            sweeper.terminate()
        return

    from app.container import Container

    async def run() -> None:
        container = Container(settings)
        try:
            await container.start_workers()
            typer.echo(f"in-process workers running (concurrency {settings.worker.concurrency})")
            await asyncio.Event().wait()
        finally:
            # Stops the pool first.
            await container.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (recursed)")],
    tenant: Annotated[str, typer.Option(help="tenant slug")],
    sensitivity: Annotated[str, typer.Option(help="public|internal|confidential")] = "internal",
    tags: Annotated[str | None, typer.Option(help="comma-separated tags")] = None,
    wait: Annotated[bool, typer.Option(help="process the queue here and wait")] = True,
) -> None:
    """Bulk-load documents into a tenant, with a progress bar."""
    from app.documents.bulk import bulk_ingest

    settings = _settings()
    try:
        summary = asyncio.run(
            bulk_ingest(
                settings, paths, tenant=tenant, sensitivity=sensitivity, tags=tags, wait=wait
            )
        )
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(summary.report())
    if not summary.queued:
        # Nothing to wait for is a failure a script must see, whatever the reason.
        typer.echo(f"error: {summary.nothing_queued()}", err=True)
        raise typer.Exit(code=1)


@index_app.command("rebuild")
def index_rebuild(
    tenant: Annotated[str, typer.Option(help="tenant slug")],
    reembed: Annotated[
        bool, typer.Option(help="re-embed every chunk with the configured model first")
    ] = False,
) -> None:
    """Rewrite a tenant's shards from the chunks and vectors stored in the database; BM25
    is re-tokenized with the configured tokenizer (no re-embedding without --reembed)."""
    from app.documents.bulk import rebuild_index

    settings = _settings()
    try:
        count = asyncio.run(rebuild_index(settings, tenant, reembed=reembed))
    except CairnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"rebuilt {tenant}: {count} chunks indexed")


def main() -> None:
    """Console entry point."""
    # Before any command writes: originals, indexes, the SQLite database and secrets are
    # tenant-private, so nothing this process creates may be readable by other local users.
    restrict_umask()
    app(prog_name="cairn")


if __name__ == "__main__":
    main()
