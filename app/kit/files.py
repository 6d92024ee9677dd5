"""Private files: what Cairn keeps on disk is readable by its own user only.

The data directory holds every tenant's originals, the search indexes (chunk text in the BM25
shards), the SQLite database, generated secrets and model caches. None of it is for other
local users: directories are 0700 and files 0600. Three layers keep it so:

- the process umask is 0o077 (``restrict_umask``), so whatever a library creates (SQLite's
  -wal/-shm, faiss and numpy writers, model caches) is private without each writer knowing;
- the data directory itself is made 0700 at every start (``private_dir``), which also closes
  a data directory created by an older version with 0755/0644 entries inside;
- the SQLite file is created 0600 before SQLite opens it (``private_sqlite_file``): SQLite
  gives its -wal and -shm files the main file's permissions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def restrict_umask() -> None:
    """Make every file and directory this process creates private to its user."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing and make it 0700."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    try:
        os.chmod(path, PRIVATE_DIR_MODE)
    except PermissionError:
        # Owned by someone else (a mounted volume): usable, but not ours to tighten.
        logger.warning("cannot make %s private (mode 0700): not its owner", path)
    return path


def private_sqlite_file(database_url: str) -> None:
    """On a file-based SQLite URL, create the database file 0600 if it does not exist yet."""
    url = make_url(database_url)
    name = url.database
    if url.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return
    if name.startswith("file:"):
        # A URI filename (uri=true) carries its own options; SQLite creates it as it is told.
        return
    path = Path(name)
    if path.exists():
        return
    # SQLite refuses a missing directory; a new one is private like the data directory.
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    create_private_file(path, "")


def create_private_file(path: Path, text: str) -> bool:
    """Create `path` 0600 holding `text`, durably; False when it already exists.

    O_EXCL makes creation the race's arbiter: of several processes creating the same secret
    or key at once, exactly one writes it and the others read the winner's.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        if text:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return True


def secure_data_dir(data_dir: Path, database_url: str) -> None:
    """Before anything is written: private umask, a 0700 data dir, a 0600 SQLite file."""
    restrict_umask()
    private_dir(data_dir)
    private_sqlite_file(database_url)
