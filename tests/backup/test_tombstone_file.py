"""The tombstone journal: append-only, private, fsynced lines of ids and hashes; a torn last
line (a crash mid-append) is skipped, any other bad line refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.backup.tombstone_file import (
    TombstoneFileError,
    TombstoneRecord,
    append,
    merge,
    read,
    user_digest,
)

SHA = "ab" * 32


def _record(subject: int, at: str, kind: str = "document") -> TombstoneRecord:
    return TombstoneRecord.parse(
        {
            "kind": kind,
            "tenant_id": 1 if kind == "document" else None,
            "subject_id": subject,
            "digest": SHA,
            "recorded_at": at,
        }
    )


def test_append_and_read_back(tmp_path: Path) -> None:
    journal = tmp_path / "root" / "tombstones.jsonl"
    first = [_record(1, "2026-12-06T10:00:00+00:00")]
    append(journal, first)
    append(journal, [_record(2, "2026-12-06T11:00:00+00:00", kind="user")])
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert [r.subject_id for r in read(journal)] == [1, 2]
    assert read(tmp_path / "none.jsonl") == []


def test_torn_last_line_is_skipped_and_bad_lines_refused(tmp_path: Path) -> None:
    journal = tmp_path / "tombstones.jsonl"
    append(journal, [_record(1, "2026-12-06T10:00:00+00:00")])
    with journal.open("ab") as handle:
        handle.write(b'{"kind":"document","tenant_id":1,"subj')
    assert [r.subject_id for r in read(journal)] == [1]
    with journal.open("ab") as handle:
        handle.write(b"\n" + _record(2, "2026-12-06T12:00:00+00:00").to_line().encode())
    with pytest.raises(TombstoneFileError, match="line 2 is not a tombstone"):
        read(journal)


@pytest.mark.parametrize(
    "field",
    [
        {"kind": "chat_session"},
        {"subject_id": "7"},
        {"digest": "not-a-hash"},
        {"recorded_at": "yesterday"},
    ],
)
def test_only_ids_and_hashes(field: dict[str, object]) -> None:
    data: dict[str, object] = {
        "kind": "document",
        "tenant_id": 1,
        "subject_id": 7,
        "digest": SHA,
        "recorded_at": "2026-12-06T10:00:00+00:00",
    }
    with pytest.raises(ValueError, match=r"."):
        TombstoneRecord.parse({**data, **field})


def test_merge_keeps_one_per_subject_the_earliest() -> None:
    late = _record(1, "2026-12-06T12:00:00+00:00")
    early = _record(1, "2026-12-06T10:00:00+00:00")
    user = _record(1, "2026-12-06T11:00:00+00:00", kind="user")
    assert merge([late], [early, user]) == [early, user]


def test_user_digest_names_the_account_not_the_person() -> None:
    assert user_digest("abc") != user_digest("abd")
    assert len(user_digest("abc")) == 64
