"""Content-addressed file store: originals live at files/<sha[:2]>/<sha>, never at a client path."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from app.kit.files import private_dir

CHUNK = 1024 * 1024


class TooLarge(Exception):
    """The stream exceeded the size limit."""


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this hash lives."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def put_stream(self, stream: BinaryIO, *, max_bytes: int) -> tuple[str, int]:
        """Copy a stream in, hashing as it goes; returns (sha256, size). Raises TooLarge."""
        private_dir(self.root)
        digest = hashlib.sha256()
        size = 0
        # mkstemp creates the file 0600, and the rename keeps that mode.
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(CHUNK):
                    size += len(block)
                    if size > max_bytes:
                        raise TooLarge()
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self.path_for(sha)
            private_dir(target.parent)
            # Same content, same name: replacing an existing blob is harmless.
            os.replace(tmp_name, target)
            return sha, size
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def read(self, sha256: str) -> bytes:
        """The blob's bytes."""
        return self.path_for(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        """Remove a blob (hard deletion)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path_for(sha256).exists()

    def remove_stale_uploads(self, older_than_seconds: float) -> int:
        """Delete upload temp files older than this (their upload died mid-transfer); how many.

        A live upload writes its temp file continuously, so an old one is abandoned."""
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.root.glob(".upload-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
