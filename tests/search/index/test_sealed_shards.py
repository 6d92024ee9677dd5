"""Shard files sealed under a tenant key: written and read without plaintext on disk, bound to
their tenant, kind, shard number and version."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from app.kit.envelope import DataKey, EncryptionError, is_sealed, shard_sealer
from app.search.index import (
    VectorShardConfig,
    build_bm25_shard,
    build_shard,
    index_ids,
    load_bm25_shard,
    load_shard,
    save_bm25_shard,
    save_shard,
)

KEY = DataKey.from_bytes(7, os.urandom(32))


def test_sealed_vector_and_bm25_shards_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, 21, dtype=np.int64)
    index = build_shard(vectors, ids, VectorShardConfig(dim=8))
    bm25 = build_bm25_shard(ids, [["quokka", f"t{i}"] for i in range(20)], analyzer="plain")
    vector_path, bm25_path = tmp_path / "v.faiss", tmp_path / "b.npz"
    save_shard(index, vector_path, shard_sealer(KEY, 7, "vector", 0, 3))
    save_bm25_shard(bm25, bm25_path, shard_sealer(KEY, 7, "bm25", 0, 3))
    assert is_sealed(vector_path.read_bytes())
    assert b"quokka" not in bm25_path.read_bytes()
    assert sorted(tmp_path.iterdir()) == sorted([vector_path, bm25_path])  # no temp file left
    loaded = load_shard(vector_path, shard_sealer(KEY, 7, "vector", 0, 3))
    assert index_ids(loaded).tolist() == ids.tolist()
    assert "quokka" in load_bm25_shard(bm25_path, shard_sealer(KEY, 7, "bm25", 0, 3)).terms
    # Another version, kind or tenant's key: refused, not misread.
    with pytest.raises(EncryptionError, match="cairn/v1/shard/7/vector/0/4"):
        load_shard(vector_path, shard_sealer(KEY, 7, "vector", 0, 4))
    with pytest.raises(EncryptionError, match="another tenant or object"):
        load_bm25_shard(vector_path, shard_sealer(KEY, 7, "bm25", 0, 3))
    with pytest.raises(EncryptionError, match="no key is available"):
        load_shard(vector_path)
    # Plaintext shards written before encryption stay readable, with or without a key.
    plain = tmp_path / "plain.faiss"
    save_shard(index, plain)
    assert not is_sealed(plain.read_bytes())
    assert index_ids(load_shard(plain, shard_sealer(KEY, 7, "vector", 0, 1))).size == 20
