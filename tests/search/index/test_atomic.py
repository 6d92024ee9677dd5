"""Atomic file replacement: the target is the old or the new content, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.search.index.atomic import atomic_path, atomic_write_bytes, remove_stale_temps

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_write_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "file.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert list(path.parent.iterdir()) == [path]


def test_exception_after_partial_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old content")
    seen: list[Path] = []

    def write_then_fail() -> None:
        with atomic_path(path) as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"new cont")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert seen[0].parent == path.parent  # same filesystem, so the rename is atomic
    assert path.read_bytes() == b"old content"
    assert list(tmp_path.iterdir()) == [path]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"

    def interrupted() -> None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert list(tmp_path.iterdir()) == []


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(FileNotFoundError), atomic_path(path):
        pass
    assert path.read_bytes() == b"old"


def test_failed_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_killed_writer_leaves_old_file_and_a_removable_temp(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")
    # A process that dies mid-write (no exception handling runs, like SIGKILL).
    code = (
        "import os, sys\n"
        "from app.search.index.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half of the new')\n"
        "    os._exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=False)
    assert done.returncode == 3
    assert path.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1
    unrelated = tmp_path / ".keep.tmp"
    unrelated.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(tmp_path.iterdir()) == sorted([path, unrelated])
