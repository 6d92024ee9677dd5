"""Where a tenant's shard files live. Each write creates a new versioned file; the database
records the current version, so readers load exactly what was committed and notice changes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

ShardKind = Literal["vector", "bm25"]
_SUFFIX = {"vector": "faiss", "bm25": "bm25.npz"}


def tenant_dir(root: Path, tenant_id: int) -> Path:
    """The folder holding one tenant's shards."""
    return root / f"tenant-{tenant_id}"


def shard_path(root: Path, tenant_id: int, kind: ShardKind, shard_no: int, version: int) -> Path:
    """The file of one version of one shard."""
    return tenant_dir(root, tenant_id) / f"{kind}-{shard_no:04d}-v{version:08d}.{_SUFFIX[kind]}"


def version_of(path: Path) -> int:
    """The version number in a shard file's name (-1 when it is not a shard file)."""
    try:
        return int(path.name.split("-v", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def stale_versions(
    root: Path, tenant_id: int, kind: ShardKind, shard_no: int, keep_from: int
) -> list[Path]:
    """Files of versions older than `keep_from` (the previous version stays for slow readers)."""
    folder = tenant_dir(root, tenant_id)
    stale: list[Path] = []
    for path in folder.glob(f"{kind}-{shard_no:04d}-v*.{_SUFFIX[kind]}"):
        if 0 <= version_of(path) < keep_from:
            stale.append(path)
    return stale
