"""Cairn settings: one pydantic-settings class layered over configs/default.toml."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ingest.chunking import ChunkingConfig
from ingest.embedding import EmbeddingConfig
from ingest.parsers import ParseLimits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "default.toml"

# Secrets shorter than this are refused in production: they are guessable.
MIN_SECRET_LENGTH = 32


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production settings would be unsafe."""


class IndexSettings(BaseModel):
    """How a tenant's chunks are laid out in shards."""

    shard_capacity: int = Field(default=250_000, ge=1)
    # Shards at or above this size switch from exact flat search to IVF (with an id map, so
    # hard deletion can remove vectors).
    approximate_threshold: int = Field(default=50_000, ge=1)
    nprobe: int = Field(default=16, ge=1)
    # Chunks written per flush step; bounds the memory of one index update.
    flush_batch: int = Field(default=50_000, ge=1)


class WorkerSettings(BaseModel):
    """Background job execution (in-process pool or Celery)."""

    concurrency: int = Field(default=2, ge=1, le=64)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=5.0, ge=0)
    embed_batch: int = Field(default=32, ge=1)
    # Stale-job sweep of `cairn worker` in Celery mode.
    sweep_seconds: float = Field(default=15.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CAIRN_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    jwt_secret: str | None = Field(default=None, repr=False)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_ttl_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    # Key of the HMAC that commits audit entries to their actor (see app/audit/chain.py).
    audit_secret: str | None = Field(default=None, repr=False)
    admin_password: str | None = Field(default=None, repr=False)
    # argon2id cost for new password hashes (OWASP's baseline by default).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=1024)

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    retention_days: int = Field(default=30, ge=0)
    broker_url: str | None = None
    # Run the in-process worker pool inside `cairn serve` (embedded default, no broker).
    embedded_workers: bool = True

    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    parse_limits: ParseLimits = Field(default_factory=ParseLimits)
    index: IndexSettings = Field(default_factory=IndexSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_CONFIG_FILE]
        extra = os.environ.get("CAIRN_CONFIG")
        if extra:
            files.append(Path(extra))
        # Later files win; environment variables win over every file.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=files),
        )

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment != "production":
            return self
        for name in ("jwt_secret", "audit_secret"):
            value = getattr(self, name)
            if not value or len(value) < MIN_SECRET_LENGTH:
                raise InsecureConfiguration(
                    f"CAIRN_{name.upper()} must be set to a random string of at least "
                    f"{MIN_SECRET_LENGTH} characters when CAIRN_ENVIRONMENT=production"
                )
        return self

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cairn.db').resolve()}"

    def secret(self, name: Literal["jwt_secret", "audit_secret"]) -> str:
        """The configured secret; outside production, one generated once and kept in data_dir."""
        value: str | None = getattr(self, name)
        if value:
            return value
        # Development only (production refuses to start without one): a random secret kept in
        # the data directory, so a dev server never signs tokens with a publicly known key.
        path = self.data_dir / f".{name}"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generated = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generated)
        return generated


@lru_cache
def get_settings(**overrides: Any) -> Settings:
    """The process-wide settings (tests build their own Settings instead)."""
    return Settings(**overrides)
