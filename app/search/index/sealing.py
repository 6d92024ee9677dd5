"""Encrypted shard files: index code takes a ``Sealer`` (a key already bound to the file's
tenant, kind, shard number and version, app/kit/envelope.py) and knows nothing else of keys.

A sealed file is read whole and decrypted into memory; plaintext never reaches the disk, not
even as a temporary file. Files written before encryption was enabled stay readable as they
are (faiss and numpy read them from the path, as before).
"""

from __future__ import annotations

import os
from typing import Protocol

from app.kit.envelope import EncryptionError, is_sealed


class Sealer(Protocol):
    def seal(self, data: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...


def read_sealed(path: str | os.PathLike[str], sealer: Sealer | None) -> bytes | None:
    """The decrypted content of a sealed file; None when the file is plaintext (read it from
    the path). EncryptionError when it is sealed and no sealer, or the wrong one, is given."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        if not is_sealed(head):
            return None
        if sealer is None:
            raise EncryptionError(
                f"{os.fspath(path)!r} is encrypted, but no key is available "
                "(set encryption.kek_file to the KEK it was written under)"
            )
        return sealer.open(head + fh.read())
