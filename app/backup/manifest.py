"""A backup's manifest: what it holds, each file with its size and SHA-256, and what it was
taken from (backend, schema revision, time, tools). Written last, so a folder without one is
an unfinished backup; checked in full before a restore touches anything.

Checksums find a corrupted or edited file, and a file added or removed. They do not stop
someone who can write the backup from rewriting the manifest too: keep backups where only
the operator writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.kit.errors import CairnError

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1024 * 1024


class BackupInvalid(CairnError):
    status_code = 400
    code = "backup_invalid"
    message = "The backup cannot be restored"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the backup folder, "/"-separated
    size: int
    sha256: str


@dataclass
class Manifest:
    created_at: str  # when the snapshot was taken: the backup's recovery point
    backend: str  # "sqlite" | "postgresql"
    schema_revision: str | None
    database_file: str
    # How the database was dumped: tool name and version, and the server's version.
    database_tool: dict[str, Any]
    files: list[FileEntry] = field(default_factory=list)
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "backend": self.backend,
            "schema_revision": self.schema_revision,
            "database_file": self.database_file,
            "database_tool": self.database_tool,
            "encryption_keys": "never included: the KEK lives outside the data dir",
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256}
                for f in sorted(self.files, key=lambda f: f.path)
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        try:
            if data["format"] != FORMAT:
                raise BackupInvalid(f"manifest format {data['format']!r} is not {FORMAT}")
            return cls(
                created_at=str(data["created_at"]),
                backend=str(data["backend"]),
                schema_revision=data["schema_revision"],
                database_file=str(data["database_file"]),
                database_tool=dict(data["database_tool"]),
                files=[
                    FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"]))
                    for f in data["files"]
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupInvalid(f"{MANIFEST} is not a Cairn backup manifest ({exc})") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def entry_for(root: Path, path: Path) -> FileEntry:
    """The manifest entry of a file written into the backup folder."""
    return FileEntry(path.relative_to(root).as_posix(), path.stat().st_size, sha256_of(path))


def write(root: Path, manifest: Manifest) -> Path:
    """Write the manifest (0600, fsynced): from now on the folder is a complete backup."""
    target = root / MANIFEST
    tmp = root / f".{MANIFEST}.tmp"
    data = json.dumps(manifest.as_dict(), indent=2, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def read(root: Path) -> Manifest:
    path = root / MANIFEST
    if not root.is_dir():
        raise BackupInvalid(f"no backup at {root}: not a folder")
    if not path.is_file():
        raise BackupInvalid(f"no {MANIFEST} in {root}: not a complete backup")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupInvalid(f"{path} cannot be read as JSON ({exc})") from exc
    return Manifest.from_dict(data)


def verify(root: Path) -> Manifest:
    """The manifest, once every file it lists is there with its size and SHA-256 and no other
    file is; BackupInvalid (one line naming the first file that differs) otherwise."""
    manifest = read(root)
    listed = {entry.path: entry for entry in manifest.files}
    for entry in manifest.files:
        path = root / entry.path
        if ".." in Path(entry.path).parts or Path(entry.path).is_absolute():
            raise BackupInvalid(f"the manifest names a file outside the backup: {entry.path}")
        if not path.is_file():
            raise BackupInvalid(f"backup file missing: {entry.path}")
        if path.stat().st_size != entry.size or sha256_of(path) != entry.sha256:
            raise BackupInvalid(f"backup file does not match its checksum: {entry.path}")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative != MANIFEST and relative not in listed:
            raise BackupInvalid(f"backup file not in the manifest: {relative}")
    if manifest.database_file not in listed:
        raise BackupInvalid(f"the manifest lists no database file {manifest.database_file}")
    return manifest
