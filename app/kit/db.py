"""Database engine and sessions. SQLite (embedded default) and PostgreSQL (scaled out)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import sqlalchemy
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.kit.files import private_sqlite_file
from app.kit.settings import Settings


def is_sqlite(url: str) -> bool:
    """Whether the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, immediate: bool = True, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys, a busy timeout and, for writers
    (`immediate`), transactions that take the write lock when they begin."""
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True, **kwargs)

    # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the same permissions.
    private_sqlite_file(url)
    if immediate:
        # One connection for writers: every transaction here takes SQLite's write lock when it
        # begins, so they run one at a time anyway; waiting for the pool's connection is a
        # first-come queue, where waiting in SQLite's busy handler is polling with sleeps of up
        # to 100 ms that a newcomer can overtake — 1-2 s tails for audited searches at
        # concurrency 8 (`cairn bench search`). Other processes still meet the busy timeout.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 30)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        # Take over BEGIN from the driver (SQLAlchemy's documented aiosqlite recipe) so that
        # every transaction is BEGIN IMMEDIATE: SQLite otherwise upgrades a read lock to a write
        # lock mid-transaction, and two such upgrades fail at once with "database is locked"
        # instead of waiting. Serialising writers is what keeps the audit hash chain linear.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten, not left in free pages: a purge must leave no bytes.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers never need the write lock: under WAL they read a snapshot and block no one.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# A TRUNCATE checkpoint blocks new writers while it waits for readers of older snapshots, so
# it waits only briefly each time and steps aside between tries: a request that holds a read
# snapshot and then writes (every audited request does) would otherwise wait on a checkpoint
# that waits on it, until one of them times out (seen as a 10 s stall in the fuzz test).
_CHECKPOINT_TRY_SECONDS = 0.2
_CHECKPOINT_PAUSE_SECONDS = 0.3
_CHECKPOINT_TRIES = 40


def checkpoint_sqlite_wal(url: str, *, tries: int = _CHECKPOINT_TRIES) -> bool:
    """Copy every committed page of a SQLite database's WAL into the database file and truncate
    the WAL to zero bytes (`PRAGMA wal_checkpoint(TRUNCATE)`); True when that completed.

    With `secure_delete` a deletion overwrites the rows in the pages it changes, but older
    copies of those pages stay in earlier WAL frames until the log is reset: an erasure is
    only complete on disk once this has run. Readers that still hold an older snapshot hold
    it back: it tries `tries` times, never blocking writers for more than a fraction of a
    second at a time, and answers False when readers outlast every try; the bytes then leave
    the WAL at a later checkpoint. Blocking: call it from a worker thread.
    """
    path = make_url(url).database
    if not is_sqlite(url) or not path or path == ":memory:":
        return True
    connection = sqlite3.connect(path, timeout=_CHECKPOINT_TRY_SECONDS, isolation_level=None)
    try:
        for attempt in range(tries):
            if attempt:
                time.sleep(_CHECKPOINT_PAUSE_SECONDS)
            try:
                row = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:
                continue  # locked by a writer past the short wait: try again
            # (busy, frames in the log, frames checkpointed); busy is 1 when a reader held it.
            if row is not None and row[0] == 0:
                return True
        return False
    finally:
        connection.close()


_SQLITE_MMAP_BYTES = 1 << 30
# The synchronous drivers of the blocking read engine, by backend.
_BLOCKING_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def create_blocking_read_engine(url: str) -> Engine:
    """A synchronous engine on the same database, for reads made from worker threads.

    Search does its reads inside the same thread hop as its ranking: through the async
    drivers every statement costs extra event-loop round trips (aiosqlite hops to its own
    thread for each cursor call), which were most of a search's time beyond the index calls.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = _BLOCKING_DRIVERS.get(backend)
    if driver is None:
        raise ValueError(f"no synchronous driver for {backend!r} databases")
    sync_url = parsed.set(drivername=f"{backend}+{driver}")
    if backend == "sqlite":
        # Reads only: under WAL (set by the writers' engine) they see a snapshot per statement
        # and never wait for the write lock; the timeout covers a checkpoint in progress.
        engine = sqlalchemy.create_engine(sync_url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _map_pages)
        return engine
    return sqlalchemy.create_engine(sync_url, pool_pre_ping=True)


def _map_pages(dbapi_connection: Any, _: Any) -> None:
    # Hit texts are scattered over the chunks table: read through a memory map, a page the OS
    # already caches costs no system call, where SQLite's own 2 MB cache would miss.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES}")
    cursor.close()


class Database:
    """One engine and its session factory, owned by the app (or a worker, or the CLI)."""

    def __init__(self, url: str, *, session_info: dict[str, Any] | None = None) -> None:
        self.url = url
        self.engine = create_engine(url)
        # A second engine (its own pool) for read-only work. On SQLite, so a request that only
        # reads (or the authorisation lookups of one that writes) does not queue behind
        # writers. On PostgreSQL too: a request holds its read session (authentication) from
        # its first lookup to its end and takes a write session later (a search's audit entry);
        # from one shared pool, more concurrent requests than connections all held one and
        # waited for a second until the pool's timeout (`cairn bench serve`, concurrency 32).
        # Reads always come first, so two pools cannot wait on each other.
        self.read_engine = create_engine(url, immediate=False)
        # session_info travels with every session (session.info): it carries per-deployment
        # values that services need wherever they run (API, worker, CLI), e.g. the audit key.
        info = dict(session_info or {})
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        self.read_sessionmaker = async_sessionmaker(
            self.read_engine, expire_on_commit=False, info=info
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @functools.cached_property
    def blocking_read_engine(self) -> Engine:
        """Synchronous reads from worker threads (search); made on first use."""
        return create_blocking_read_engine(self.url)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        blocking: Engine | None = self.__dict__.get("blocking_read_engine")
        if blocking is not None:
            blocking.dispose()

    async def checkpoint_wal(self) -> bool:
        """After a transaction that removed data, move SQLite's write-ahead log into the
        database file and empty it (`checkpoint_sqlite_wal`); a no-op on PostgreSQL. Call it
        once that transaction has committed and no session of the caller still reads."""
        if not self.is_sqlite:
            return True
        return await asyncio.to_thread(checkpoint_sqlite_wal, self.url)


def database_of(request: Request) -> Database:
    """The app's Database."""
    database: Database = request.app.state.container.database
    return database


AppDatabase = Annotated[Database, Depends(database_of)]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.container.database
    async with database.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# A request's session commits once when the endpoint function returns and before the response is
# sent (scope="function"), so a client never sees a 2xx for a write that later fails to commit.
# An error rolls everything back, the audit entry included: the log never records an action that
# did not happen.
Session = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.container.database
    async with database.read_sessionmaker() as session:
        try:
            yield session
        finally:
            # Nothing written here is kept: read sessions never commit.
            await session.rollback()


# For lookups that never write: authentication, authorisation, listings, search.
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]


def database_for(settings: Settings) -> Database:
    """The Database for these settings, carrying the audit key to every session. The one
    place every process (API, workers, CLI, benchmarks) gets its database from."""
    return Database(
        settings.resolved_database_url,
        session_info={
            "audit_secret": settings.secret("audit_secret"),
            # app.audit.service queues a checkpoint every this many entries of a chain.
            "audit_checkpoint_entries": settings.worker.audit_checkpoint_entries,
            # Completed purges and erasures append their tombstones here (app/backup/).
            "tombstone_journal": settings.backup.journal,
        },
    )
