"""The composition root: every object a Cairn process works with, built in one place.

`Container` is the `Runtime` jobs run with (settings, database, keyring, content store,
indexer, cache, the ingestion embedder) plus what the API and the console commands reach: the
authorization enforcer, the sign-in throttle and quotas, the credential resolver, the job
dispatcher and the embedded worker pool, the retriever and the answer generator. The API's
create_app (app/main.py) builds one and installs it as `app.state.container`, and its lifespan
starts and closes it; every CLI builds one; a Celery worker process builds only the `Runtime`
(the dispatcher below imports the Celery app, which imports the runtime: the container sits
above both).

Building one opens nothing: no connection, no file, no model (the engines connect on first
use), so create_app can build it before the lifespan secures the data dir.

Parts are built on first use, so a command that only needs the database loads no model: the
retriever (its shard cache, a reranker model when one is configured), the generator (the model
loads when it is first asked for, or preloaded by the API) and the embedder
(`Runtime.embedder`) cost nothing until reached.

Request code reaches the parts through `app.state.container` (`container_of`, or the
`AppContainer` dependency); `AppState` keeps the older names (`app.state.database`,
`.settings`, `.generator`, ...) as thin read/write aliases onto it, which tests use to swap a
part.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import State

from app.auth.credentials import bearer_credentials
from app.generation.provider import GeneratorProvider
from app.jobs.dispatch import CeleryDispatcher, PollingDispatcher, dispatcher_for
from app.jobs.pool import WorkerPool
from app.jobs.runtime import Runtime
from app.kit.auth import CredentialResolver
from app.kit.authz import Enforcer
from app.kit.db import Database
from app.kit.ratelimit import LoginThrottle, Quotas
from app.kit.settings import Settings
from app.search.retriever import Retriever


class Container(Runtime):
    def __init__(
        self, settings: Settings, database: Database | None = None, *, api: bool = False
    ) -> None:
        """`api`: the API process's container (a question while the answer model is being
        prepared gets a quick 503, not a wait)."""
        super().__init__(settings, database)
        self._api = api
        self._generator: GeneratorProvider | None = None
        self.credentials: CredentialResolver = bearer_credentials
        self.worker_pool: WorkerPool | None = None
        # Set by the API's lifespan once start-up is done, until shutdown: before that,
        # /readyz and /metrics report no database (nothing is bootstrapped yet).
        self.serving = False

    @classmethod
    def for_api(cls, settings: Settings) -> Container:
        return cls(settings, api=True)

    @cached_property
    def enforcer(self) -> Enforcer:
        """Casbin over the database's policy rows (refreshed per request or command)."""
        return Enforcer(self.database.engine)

    @cached_property
    def login_throttle(self) -> LoginThrottle:
        return LoginThrottle.from_settings(self.settings)

    @cached_property
    def quotas(self) -> Quotas:
        return Quotas.from_settings(self.settings)

    @cached_property
    def dispatcher(self) -> PollingDispatcher | CeleryDispatcher:
        """Where committed jobs are announced: Celery with a broker, else the embedded pool."""
        return dispatcher_for(self.settings.broker_url)

    @cached_property
    def retriever(self) -> Retriever:
        """The search side, built on first use; this process's index writes reach its shard
        cache from memory, not disk."""
        retriever = Retriever.create(
            self.database, self.settings, store=self.cache, keyring=self.keyring
        )
        self.indexer.readers.append(retriever.cache)
        return retriever

    @property
    def generator(self) -> GeneratorProvider:
        """The answer model's provider; the model itself loads on the first question (or the
        API's preload)."""
        if self._generator is None:
            self._generator = (
                GeneratorProvider.for_api(self.settings)
                if self._api
                else GeneratorProvider(self.settings)
            )
        return self._generator

    @generator.setter
    def generator(self, provider: GeneratorProvider) -> None:
        self._generator = provider

    async def start_workers(self) -> WorkerPool:
        """Run jobs in this process: an in-process pool, woken by the container's dispatcher
        (with a broker, jobs are sent to Celery and the pool finds them on its polls)."""
        if self.worker_pool is not None:
            raise RuntimeError("this container's workers are already running")
        dispatcher = self.dispatcher
        pool = WorkerPool(self, dispatcher if isinstance(dispatcher, PollingDispatcher) else None)
        await pool.start()
        self.worker_pool = pool
        return pool

    async def stop_workers(self) -> None:
        """Stop the pool; work it was running is cancelled (its lease expires and another
        worker retries it)."""
        pool, self.worker_pool = self.worker_pool, None
        if pool is not None:
            await pool.stop()

    async def close(self) -> None:
        """Stop the workers, then close the cache and the database."""
        self.serving = False
        await self.stop_workers()
        await super().close()


def container_of(request: Request) -> Container:
    """The app's container."""
    container: Container = request.app.state.container
    return container


AppContainer = Annotated[Container, Depends(container_of)]

# The app.state names older code and the tests use, and the container attribute each stands
# for ("runtime" is the container itself).
ALIASES: dict[str, str] = {
    "runtime": "",
    "settings": "settings",
    "database": "database",
    "content_store": "store",
    "enforcer": "enforcer",
    "login_throttle": "login_throttle",
    "quotas": "quotas",
    "retriever": "retriever",
    "generator": "generator",
    "dispatcher": "dispatcher",
    "worker_pool": "worker_pool",
    "credentials": "credentials",
}


class AppState(State):
    """`app.state` holding one `Container` (`app.state.container`); the `ALIASES` read and
    write through to it."""

    def __setattr__(self, key: Any, value: Any) -> None:
        if key == "runtime":
            raise AttributeError("app.state.runtime is the container: set app.state.container")
        if key in ALIASES:
            setattr(self._state["container"], ALIASES[key], value)
        else:
            super().__setattr__(key, value)

    def __getattr__(self, key: Any) -> Any:
        if key in ALIASES and "container" in self._state:
            container = self._state["container"]
            return getattr(container, ALIASES[key]) if ALIASES[key] else container
        return super().__getattr__(key)
