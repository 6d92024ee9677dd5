"""Vector shards: recall against exact IndexFlatIP, removal, in-search filtering, files."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from app.search.index import atomic_path
from app.search.index.errors import (
    IndexDimensionMismatch,
    InvalidIds,
    InvalidVectors,
    ShardError,
    ShardFormatError,
)
from app.search.index.vector_shard import (
    VectorShardConfig,
    add_vectors,
    build_shard,
    default_nlist,
    index_ids,
    is_approximate,
    load_shard,
    maybe_upgrade,
    merge_results,
    reconstruct_all,
    remove_ids,
    save_shard,
    search_shard,
    shard_size,
    to_device,
)

DIM = 384
N_IVF = 20_000  # IVF test shard size
IVF_THRESHOLD = 10_000  # lowered from the 50k default so the 20k shard is approximate
N_QUERIES = 200
K = 10
MIN_RECALL = 0.95


def clustered(
    rng: np.random.Generator, n: int, n_clusters: int = 200, spread: float = 2.2
) -> npt.NDArray[np.float32]:
    """Unit vectors drawn around random centres; noise norm ~spread, so clusters overlap.

    With spread 2.2 nprobe=2 gives recall@10 ~0.88 and nprobe=16 ~0.99 on 20k points:
    hard enough that a broken IVF (wrong metric, no training, too few probes) fails.
    """
    centres = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * (spread / np.sqrt(DIM))
    x = centres[rng.integers(0, n_clusters, n)] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def unique_ids(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    """Large, non-contiguous positive ids, like database keys after deletions."""
    return (rng.choice(10**12, size=n, replace=False) + 1).astype(np.int64)


def exact_top_k(
    x: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], q: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    scores, pos = flat.search(q, k)
    return scores, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def recall_at_k(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits) / np.sum(truth >= 0))


class IvfData:
    def __init__(self) -> None:
        rng = np.random.default_rng(20240601)
        points = clustered(rng, N_IVF + N_QUERIES)
        self.x, self.queries = points[:N_IVF], points[N_IVF:]
        self.ids = unique_ids(rng, N_IVF)
        self.config = VectorShardConfig(dim=DIM, approximate_threshold=IVF_THRESHOLD)
        self.index = build_shard(self.x, self.ids, self.config)
        _, self.truth = exact_top_k(self.x, self.ids, self.queries, K)


@pytest.fixture(scope="module")
def ivf() -> IvfData:
    """One trained IVF shard for the module (training is the slow part); clone before mutating."""
    return IvfData()


@pytest.fixture
def small() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], VectorShardConfig]:
    rng = np.random.default_rng(7)
    return clustered(rng, 2_000, n_clusters=20), unique_ids(rng, 2_000), VectorShardConfig(dim=DIM)


# --------------------------------------------------------------------------- kind and recall


def test_small_shard_is_exact_and_matches_flat(small: tuple) -> None:
    x, ids, config = small
    index = build_shard(x, ids, config)
    assert not is_approximate(index)
    assert shard_size(index) == 2_000
    q = x[:25]
    scores, found = search_shard(index, q, K)
    truth_scores, truth = exact_top_k(x, ids, q, K)
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    assert found[:, 0].tolist() == ids[:25].tolist()  # each query finds itself first


def test_large_shard_is_ivf_with_default_nlist(ivf: IvfData) -> None:
    assert is_approximate(ivf.index)
    ivf_index = faiss.extract_index_ivf(ivf.index)
    assert ivf_index.nlist == default_nlist(N_IVF)
    assert ivf_index.nprobe == ivf.config.nprobe == 16


def test_ivf_recall_at_10_against_exact(ivf: IvfData) -> None:
    _, found = search_shard(ivf.index, ivf.queries, K)
    assert recall_at_k(found, ivf.truth) >= MIN_RECALL


def test_recall_check_can_fail_with_too_few_probes(ivf: IvfData) -> None:
    _, found = search_shard(ivf.index, ivf.queries, K, nprobe=1)
    assert recall_at_k(found, ivf.truth) < MIN_RECALL


def test_sq8_storage_recall() -> None:
    rng = np.random.default_rng(11)
    points = clustered(rng, 12_000 + 100)
    x, q, ids = points[:12_000], points[12_000:], unique_ids(rng, 12_000)
    config = VectorShardConfig(dim=DIM, approximate_threshold=10_000, storage="sq8")
    index = build_shard(x, ids, config)
    assert isinstance(index, faiss.IndexIVFScalarQuantizer)
    _, truth = exact_top_k(x, ids, q, K)
    _, found = search_shard(index, q, K)
    assert recall_at_k(found, truth) >= MIN_RECALL


# --------------------------------------------------------------------------- removal


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_removed_ids_never_come_back(kind: str, ivf: IvfData, small: tuple, tmp_path: Path) -> None:
    if kind == "ivf":
        index, x, ids, q = faiss.clone_index(ivf.index), ivf.x, ivf.ids, ivf.queries[:50]
    else:
        x, ids, config = small
        index, q = build_shard(x, ids, config), x[:50]
    before = shard_size(index)
    _, top = search_shard(index, q, K)
    # Remove the current best hits (the most likely to resurface) plus some random ids.
    doomed = np.unique(np.concatenate([top[:, :3].ravel(), ids[100:150]]))
    assert remove_ids(index, np.concatenate([doomed, doomed[:5]])) == doomed.size
    assert remove_ids(index, doomed) == 0
    assert remove_ids(index, np.array([999], dtype=np.int64)) == 0
    assert shard_size(index) == before - doomed.size
    assert not np.isin(doomed, index_ids(index)).any()

    _, found = search_shard(index, q, 100)
    assert not np.isin(found, doomed).any()
    # Even when they are the only allowed ids, nothing of them is returned.
    _, found = search_shard(index, q, K, allowed_ids=doomed)
    assert (found == -1).all()

    save_shard(index, tmp_path / "s.faiss")
    reloaded = load_shard(tmp_path / "s.faiss")
    _, found = search_shard(reloaded, q, 100)
    assert not np.isin(found, doomed).any()
    # Survivors are still there and still exact/complete.
    survivors = np.setdiff1d(ids, doomed)
    assert np.array_equal(np.sort(index_ids(reloaded)), np.sort(survivors))


def test_remove_nothing_and_validation(small: tuple) -> None:
    x, ids, config = small
    index = build_shard(x, ids, config)
    assert remove_ids(index, np.empty(0, dtype=np.int64)) == 0
    with pytest.raises(InvalidIds):
        remove_ids(index, np.array([1.5]))
    with pytest.raises(InvalidIds):
        remove_ids(index, np.array([[1, 2]]))


# --------------------------------------------------------------------------- filtering


def test_allowed_ids_exact_fills_top_k_from_allowed_only(small: tuple) -> None:
    x, ids, config = small
    index = build_shard(x, ids, config)
    rng = np.random.default_rng(3)
    q = clustered(rng, 30, n_clusters=20)
    allowed = rng.choice(ids, size=60, replace=False)
    scores, found = search_shard(index, q, K, allowed_ids=allowed)
    mask = np.isin(ids, allowed)
    truth_scores, truth = exact_top_k(x[mask], ids[mask], q, K)
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    # Post-filtering the unfiltered top-k would leave most rows nearly empty.
    _, unfiltered = search_shard(index, q, K)
    assert np.isin(unfiltered, allowed).sum() < found.size // 2


def test_allowed_ids_ivf(ivf: IvfData) -> None:
    rng = np.random.default_rng(5)
    allowed = rng.choice(ivf.ids, size=1_000, replace=False)
    _, found = search_shard(ivf.index, ivf.queries, K, allowed_ids=allowed)
    assert np.isin(found, allowed).all()  # also: no -1, every slot filled
    mask = np.isin(ivf.ids, allowed)
    _, truth = exact_top_k(ivf.x[mask], ivf.ids[mask], ivf.queries, K)
    assert recall_at_k(found, truth) >= MIN_RECALL


def test_tiny_allowed_set_on_ivf_returns_all_of_it(ivf: IvfData) -> None:
    # 12 allowed vectors scattered over the lists: nprobe=16 lists rarely hold 10 of them,
    # so the short rows must be searched again over every list.
    rng = np.random.default_rng(9)
    allowed = rng.choice(ivf.ids, size=12, replace=False)
    mask = np.isin(ivf.ids, allowed)
    scores, found = search_shard(ivf.index, ivf.queries[:20], K, allowed_ids=allowed)
    truth_scores, truth = exact_top_k(ivf.x[mask], ivf.ids[mask], ivf.queries[:20], K)
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    # Fewer allowed vectors than k: all of them, then -1 padding with -inf scores.
    scores, found = search_shard(ivf.index, ivf.queries[:3], 20, allowed_ids=allowed)
    assert (np.sort(found[:, :12], axis=1) == np.sort(allowed)).all()
    assert (found[:, 12:] == -1).all()
    assert np.isneginf(scores[:, 12:]).all()


def test_allowed_ids_unknown_or_empty(small: tuple) -> None:
    x, ids, config = small
    index = build_shard(x, ids, config)
    _, found = search_shard(index, x[:2], K, allowed_ids=np.array([], dtype=np.int64))
    assert (found == -1).all()
    _, found = search_shard(index, x[:2], K, allowed_ids=[123])  # not in the shard
    assert (found == -1).all()


# --------------------------------------------------------------------------- adding, upgrading


def test_add_vectors_then_find_them(ivf: IvfData, small: tuple) -> None:
    rng = np.random.default_rng(13)
    extra = clustered(rng, 50)
    extra_ids = np.arange(2 * 10**12, 2 * 10**12 + 50, dtype=np.int64)  # above fixture ids
    for index in (faiss.clone_index(ivf.index), build_shard(*small)):
        before = shard_size(index)
        add_vectors(index, extra, extra_ids)
        assert shard_size(index) == before + 50
        _, found = search_shard(index, extra, 1)
        np.testing.assert_array_equal(found[:, 0], extra_ids)
        with pytest.raises(InvalidIds, match="already in the shard"):
            add_vectors(index, extra[:1], extra_ids[:1])


def test_maybe_upgrade_exact_to_ivf() -> None:
    rng = np.random.default_rng(17)
    points = clustered(rng, 3_000 + 50, n_clusters=30)
    x, q, ids = points[:3_000], points[3_000:], unique_ids(rng, 3_000)
    config = VectorShardConfig(dim=DIM, approximate_threshold=2_500)
    index = build_shard(x[:2_000], ids[:2_000], config)
    assert not is_approximate(index)
    assert maybe_upgrade(index, config) is index  # below the threshold: unchanged
    add_vectors(index, x[2_000:], ids[2_000:])
    upgraded = maybe_upgrade(index, config)
    assert is_approximate(upgraded)
    assert np.array_equal(np.sort(index_ids(upgraded)), np.sort(ids))
    vectors, vector_ids = reconstruct_all(upgraded)
    order = np.argsort(vector_ids)
    np.testing.assert_allclose(vectors[order], x[np.argsort(ids)], atol=1e-6)
    _, truth = exact_top_k(x, ids, q, K)
    _, found = search_shard(upgraded, q, K)
    assert recall_at_k(found, truth) >= MIN_RECALL
    assert maybe_upgrade(upgraded, config) is upgraded
    with pytest.raises(IndexDimensionMismatch):
        maybe_upgrade(upgraded, VectorShardConfig(dim=DIM + 1))


def test_to_device_without_gpu_returns_cpu_index(small: tuple) -> None:
    x, ids, config = small
    index = build_shard(x, ids, config)
    if faiss.get_num_gpus() == 0:
        assert to_device(index) is index


# --------------------------------------------------------------------------- validation


def test_dimension_mismatch(small: tuple) -> None:
    x, ids, config = small
    with pytest.raises(IndexDimensionMismatch):
        build_shard(x[:, :100], ids, config)
    index = build_shard(x, ids, config)
    with pytest.raises(IndexDimensionMismatch):
        search_shard(index, np.ones((1, DIM - 1), dtype=np.float32), K)
    with pytest.raises(IndexDimensionMismatch):
        add_vectors(index, np.ones((1, DIM + 1), dtype=np.float32), [10**13])


@pytest.mark.parametrize(
    ("vectors", "ids"),
    [
        (np.ones(DIM, dtype=np.float32), [1]),  # 1-D
        (np.full((1, DIM), np.nan, dtype=np.float32), [1]),
        (np.full((1, DIM), np.inf, dtype=np.float32), [1]),
        (np.zeros((1, DIM), dtype=np.float32), [1]),  # cannot be normalised
        (np.array([["a"] * DIM]), [1]),
    ],
)
def test_invalid_vectors(vectors: object, ids: object) -> None:
    with pytest.raises(InvalidVectors):
        build_shard(vectors, ids, VectorShardConfig(dim=DIM))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ids",
    [[1, 1], [1.0, 2.0], [0, 1], [-5, 1], [1], [[1], [2]], ["a", "b"]],
)
def test_invalid_ids(ids: object) -> None:
    vectors = np.eye(2, DIM, dtype=np.float32)
    with pytest.raises(InvalidIds):
        build_shard(vectors, ids, VectorShardConfig(dim=DIM))  # type: ignore[arg-type]


def test_float64_input_is_converted_and_not_mutated() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, DIM)) * 3.0  # float64, not normalised
    original = x.copy()
    index = build_shard(x, np.arange(1, 11), VectorShardConfig(dim=DIM))
    np.testing.assert_array_equal(x, original)
    scores, found = search_shard(index, x[:3], 1)
    np.testing.assert_array_equal(found[:, 0], [1, 2, 3])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # cosine of a vector with itself
    assert scores.dtype == np.float32
    assert found.dtype == np.int64


def test_bad_k_and_nlist() -> None:
    x = np.eye(3, DIM, dtype=np.float32)
    index = build_shard(x, [1, 2, 3], VectorShardConfig(dim=DIM))
    with pytest.raises(ShardError):
        search_shard(index, x, 0)
    with pytest.raises(ShardError, match="nlist"):
        build_shard(x, [1, 2, 3], VectorShardConfig(dim=DIM, approximate_threshold=1, nlist=4))


def test_too_few_vectors_for_ivf_stay_exact() -> None:
    x = np.eye(20, DIM, dtype=np.float32)
    index = build_shard(x, np.arange(1, 21), VectorShardConfig(dim=DIM, approximate_threshold=1))
    assert not is_approximate(index)


def test_empty_shard_search() -> None:
    index = build_shard(np.empty((0, DIM), dtype=np.float32), [], VectorShardConfig(dim=DIM))
    scores, found = search_shard(index, np.ones((2, DIM), dtype=np.float32), 3)
    assert found.shape == (2, 3)
    assert (found == -1).all()
    assert np.isneginf(scores).all()


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_save_load_round_trip(kind: str, ivf: IvfData, small: tuple, tmp_path: Path) -> None:
    if kind == "ivf":
        index, q = ivf.index, ivf.queries[:20]
    else:
        index, q = build_shard(small[0], small[1], small[2]), small[0][:20]
    path = tmp_path / "tenant-1" / "shard-0.faiss"
    save_shard(index, path)
    loaded = load_shard(path)
    assert type(loaded) is type(index)
    assert shard_size(loaded) == shard_size(index)
    assert is_approximate(loaded) == is_approximate(index)
    for allowed in (None, index_ids(index)[::3]):
        s1, i1 = search_shard(index, q, K, allowed_ids=allowed)
        s2, i2 = search_shard(loaded, q, K, allowed_ids=allowed)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    if kind == "ivf":
        assert faiss.extract_index_ivf(loaded).nprobe == ivf.config.nprobe
        assert faiss.extract_index_ivf(loaded).direct_map.type == faiss.DirectMap.Hashtable
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_crash_during_save_leaves_old_file_loadable(
    small: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, ids, config = small
    old = build_shard(x[:500], ids[:500], config)
    new = build_shard(x, ids, config)
    path = tmp_path / "shard.faiss"
    save_shard(old, path)
    old_bytes = path.read_bytes()

    # 1. The writer dies after writing part of the new file into the temp path.
    def die_mid_write() -> None:
        with atomic_path(path) as tmp:
            faiss.write_index(new, str(tmp))
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 3])
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        die_mid_write()

    # 2. save_shard itself fails half way (write_index writes garbage, then raises).
    def broken_write_index(index: object, fname: str) -> None:
        Path(fname).write_bytes(b"\x00" * 1000)
        raise RuntimeError("I/O error")

    monkeypatch.setattr(faiss, "write_index", broken_write_index)
    with pytest.raises(RuntimeError, match="I/O error"):
        save_shard(new, path)
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert list(tmp_path.iterdir()) == [path]
    loaded = load_shard(path)
    assert shard_size(loaded) == 500
    _, found = search_shard(loaded, x[:5], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:5])


def test_load_rejects_garbage_and_foreign_indexes(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"not a faiss index")
    with pytest.raises(ShardFormatError):
        load_shard(garbage)
    foreign = tmp_path / "l2.faiss"
    faiss.write_index(faiss.IndexFlatL2(8), str(foreign))
    with pytest.raises(ShardFormatError):
        load_shard(foreign)


# --------------------------------------------------------------------------- merging


def test_merge_results_is_deterministic_and_shard_order_free() -> None:
    a = (np.array([[0.9, 0.5, 0.5, -np.inf]], dtype=np.float32), np.array([[10, 30, 20, -1]]))
    b = (np.array([[0.7, 0.5, 0.1]], dtype=np.float32), np.array([[5, 15, 99]]))
    c = (np.array([[0.5, 0.95]], dtype=np.float32), np.array([[1, 7]]))
    expected_ids = [[7, 10, 5, 1, 15, 20]]  # ties at 0.5 ordered by id
    for shards in ([a, b, c], [c, b, a], [b, a, c]):
        scores, found = merge_results(shards, 6)
        assert found.tolist() == expected_ids
        np.testing.assert_allclose(scores, [[0.95, 0.9, 0.7, 0.5, 0.5, 0.5]])
    # Padding when fewer than k hits, -1 dropped, duplicates kept once (best score).
    scores, found = merge_results([a, (np.array([[0.99]], dtype=np.float32), np.array([[30]]))], 6)
    assert found.tolist() == [[30, 10, 20, -1, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all()
    # 1-D input: no padding.
    scores, found = merge_results([(np.array([0.2, 0.4]), np.array([3, 4]))], 5)
    assert found.tolist() == [4, 3]
    assert scores.dtype == np.float64
    empty_scores, empty_ids = merge_results([], 3)
    assert empty_scores.size == 0
    assert empty_ids.size == 0


def test_merge_results_over_real_shards_equals_one_shard(small: tuple) -> None:
    x, ids, config = small
    whole = build_shard(x, ids, config)
    parts = [build_shard(x[i::3], ids[i::3], config) for i in range(3)]
    q = x[:40] + 0.01
    merged_scores, merged_ids = merge_results([search_shard(p, q, K) for p in parts], K)
    whole_scores, whole_ids = search_shard(whole, q, K)
    np.testing.assert_array_equal(merged_ids, whole_ids)
    np.testing.assert_allclose(merged_scores, whole_scores, atol=1e-6)


def test_merge_results_rejects_mixed_shapes() -> None:
    with pytest.raises(ShardError):
        merge_results(
            [
                (np.zeros(2), np.zeros(2, dtype=np.int64)),
                (np.zeros((1, 2)), np.zeros((1, 2), dtype=np.int64)),
            ],
            2,
        )
    with pytest.raises(ShardError):
        merge_results([(np.zeros(2), np.zeros(2, dtype=np.int64))], 0)
