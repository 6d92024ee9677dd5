"""FAISS vector shards: cosine similarity as inner product over L2-normalised float32 vectors.

A shard is a plain ``faiss.Index`` holding external ids (the chunk primary keys):

* below ``approximate_threshold`` vectors: ``IndexIDMap2(IndexFlatIP)`` — exact search,
  ``remove_ids`` and ``reconstruct(id)`` supported;
* at or above it: ``IndexIVFFlat`` (or ``IndexIVFScalarQuantizer`` 8-bit with
  ``storage="sq8"``) with a hashtable direct map, so ``remove_ids`` is O(removed) and
  ``reconstruct(id)`` works. HNSW is not used: it cannot remove ids.

Every function takes and returns CPU indexes; ``to_device`` makes a search-only GPU clone.
Mutating functions (``add_vectors``, ``remove_ids``) change the index in place and must not
run while another thread searches the same object: writers work on their own copy (loaded
from the file, or ``faiss.clone_index``), save it, and readers reload the new version.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from app.search.index.atomic import atomic_path, atomic_write_bytes
from app.search.index.errors import (
    IndexDimensionMismatch,
    InvalidIds,
    InvalidVectors,
    ShardError,
    ShardFormatError,
)
from app.search.index.results import MISSING_ID, merge_results
from app.search.index.sealing import Sealer, read_sealed

__all__ = [
    "VectorShardConfig",
    "add_vectors",
    "build_shard",
    "default_nlist",
    "index_ids",
    "is_approximate",
    "load_shard",
    "maybe_upgrade",
    "merge_results",
    "reconstruct_all",
    "remove_ids",
    "save_shard",
    "search_shard",
    "shard_size",
    "to_device",
]

# faiss ships partial stubs: DirectMap is missing and the keyword constructors of the
# SearchParameters classes are not described. Reach those through an untyped alias.
_faiss: Any = faiss

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

# k-means needs at least this many training points per centroid to be meaningful
# (FAISS warns below 39).
_MIN_POINTS_PER_CENTROID = 39
_MAX_NLIST = 65_536


class VectorShardConfig(BaseModel):
    """How vector shards are built and searched."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(gt=0)
    #: shards with at least this many vectors use IVF, smaller ones exact flat search
    approximate_threshold: int = Field(default=50_000, ge=1)
    #: IVF lists; None means ``default_nlist(n)`` (about 4*sqrt(n))
    nlist: int | None = Field(default=None, ge=1)
    #: IVF lists probed per query; 16 gives recall@10 >= 0.95 on the clustered test data
    nprobe: int = Field(default=16, ge=1)
    #: IVF code storage: raw float32, or 8-bit scalar quantisation (4x smaller, lossy)
    storage: Literal["flat", "sq8"] = "flat"
    #: k-means iterations when training IVF centroids
    train_iterations: int = Field(default=10, ge=1)
    #: k-means seed, so the same data gives the same shard
    seed: int = 1234


# --------------------------------------------------------------------------- validation


def _as_vectors(vectors: npt.ArrayLike, dim: int) -> FloatArray:
    """Validate and return an L2-normalised float32 C-contiguous copy of ``vectors``."""
    try:
        # Always a fresh array: faiss.normalize_L2 works in place and the caller's
        # array must not change under them.
        x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise InvalidVectors(f"vectors are not numeric: {exc}") from exc
    if x.ndim != 2:
        raise InvalidVectors(f"vectors must be 2-D (n, dim), got shape {x.shape}")
    if x.shape[1] != dim:
        raise IndexDimensionMismatch(f"expected dimension {dim}, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise InvalidVectors("vectors contain NaN or infinity")
    if x.shape[0] and (np.linalg.norm(x, axis=1) == 0).any():
        raise InvalidVectors("zero vectors cannot be normalised")
    if x.shape[0]:
        faiss.normalize_L2(x)
    return x


def _as_ids(ids: npt.ArrayLike, *, unique: bool = True) -> IdArray:
    """Validate and return ``ids`` as a 1-D int64 array of positive values."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidIds(f"ids must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidIds(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidIds("ids do not fit in int64")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if int(out.min()) < 1:
        raise InvalidIds("ids must be positive (FAISS uses -1 for 'no result')")
    if unique and np.unique(out).size != out.size:
        raise InvalidIds("ids contain duplicates")
    return out


def _ivf(index: Any) -> Any | None:
    """The IVF view of ``index`` or None when it is an exact shard."""
    return faiss.try_extract_index_ivf(index)


def _is_gpu(index: Any) -> bool:
    """Whether ``index`` (or the index an ID map wraps) lives on a GPU."""
    # An ID map exposes its sub-index as a plain `Index` proxy: downcast to see its class.
    inner = getattr(index, "index", None)
    if inner is not None:
        inner = faiss.downcast_index(inner)
    names = {type(index).__name__, type(inner).__name__ if inner is not None else ""}
    return any(n.startswith("Gpu") or n in ("IndexReplicas", "IndexShards") for n in names)


# --------------------------------------------------------------------------- building


def default_nlist(n: int) -> int:
    """About 4*sqrt(n) IVF lists, at most n/39 (enough k-means points) and 65536."""
    by_size = int(round(4 * math.sqrt(max(n, 1))))
    return max(1, min(by_size, n // _MIN_POINTS_PER_CENTROID, _MAX_NLIST))


def _new_ivf(config: VectorShardConfig, nlist: int) -> Any:
    quantizer = faiss.IndexFlatIP(config.dim)
    index: Any
    # The Python constructor keeps a reference to `quantizer` on the IVF object, so the
    # quantizer lives as long as the index; write_index/read_index make it owned by C++.
    if config.storage == "sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer,
            config.dim,
            nlist,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, config.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = config.train_iterations
    index.cp.seed = config.seed
    # Centroids on the unit sphere suit inner product over normalised vectors.
    index.cp.spherical = True
    index.nprobe = min(config.nprobe, nlist)
    return index


def build_shard(vectors: npt.ArrayLike, ids: npt.ArrayLike, config: VectorShardConfig) -> Any:
    """Build a shard from (n, dim) ``vectors`` and n ``ids``: exact, or IVF past the threshold."""
    x = _as_vectors(vectors, config.dim)
    id_arr = _as_ids(ids)
    if id_arr.size != x.shape[0]:
        raise InvalidIds(f"{x.shape[0]} vectors but {id_arr.size} ids")
    n = x.shape[0]
    # With the default nlist, too few vectors to train even one list stay exact.
    too_few_to_train = config.nlist is None and n < _MIN_POINTS_PER_CENTROID
    if n < config.approximate_threshold or too_few_to_train:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(config.dim))
    else:
        nlist = config.nlist if config.nlist is not None else default_nlist(n)
        if nlist * _MIN_POINTS_PER_CENTROID > n:
            raise ShardError(
                f"nlist={nlist} needs at least {nlist * _MIN_POINTS_PER_CENTROID} vectors, got {n}"
            )
        index = _new_ivf(config, nlist)
        index.train(x)
        # Hashtable direct map: remove_ids and reconstruct(id) for arbitrary int64 ids.
        index.set_direct_map_type(_faiss.DirectMap.Hashtable)
    if n:
        # FAISS copies the vectors into the index; `x` can be freed afterwards.
        index.add_with_ids(x, id_arr)
    return index


def index_ids(index: Any) -> IdArray:
    """All ids stored in a shard (exact: insertion order; IVF: list order)."""
    ivf = _ivf(index)
    if ivf is None:
        if not hasattr(index, "id_map"):
            raise ShardFormatError(f"unsupported index type {type(index).__name__}")
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    invlists = ivf.invlists
    parts: list[IdArray] = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            continue
        ptr = invlists.get_ids(list_no)
        try:
            # rev_swig_ptr is a view on FAISS memory: copy before releasing it.
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64, copy=True))
        finally:
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def add_vectors(index: Any, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
    """Add vectors with new ids to a shard in place (ids already present are refused)."""
    x = _as_vectors(vectors, index.d)
    id_arr = _as_ids(ids)
    if id_arr.size != x.shape[0]:
        raise InvalidIds(f"{x.shape[0]} vectors but {id_arr.size} ids")
    if id_arr.size == 0:
        return
    clash = np.intersect1d(id_arr, index_ids(index))
    if clash.size:
        raise InvalidIds(f"{clash.size} ids already in the shard, e.g. {int(clash[0])}")
    index.add_with_ids(x, id_arr)


def remove_ids(index: Any, ids: npt.ArrayLike) -> int:
    """Remove ``ids`` from a shard in place; return how many were there (absent ids are ignored)."""
    id_arr = _as_ids(ids, unique=False)
    if id_arr.size == 0 or index.ntotal == 0:
        return 0
    # The Python wrapper picks the selector: IDSelectorArray for a hashtable direct map
    # (looked up id by id), IDSelectorBatch otherwise (one pass over the stored ids).
    return int(index.remove_ids(np.unique(id_arr)))


def shard_size(index: Any) -> int:
    """Number of vectors in a shard."""
    return int(index.ntotal)


def is_approximate(index: Any) -> bool:
    """Whether a shard is an IVF (approximate) shard."""
    return _ivf(index) is not None


def reconstruct_all(index: Any) -> tuple[FloatArray, IdArray]:
    """Every stored vector with its id (sq8 shards give the decoded, approximate vectors)."""
    ids = index_ids(index)
    if ids.size == 0:
        return np.empty((0, index.d), dtype=np.float32), ids
    if _ivf(index) is None:
        # IndexIDMap2: position i of the inner flat index holds id_map[i], so one
        # reconstruct_n over the inner index returns the vectors in id order.
        vectors = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
    else:
        # Hashtable direct map: id -> (list, offset), then decode the code in place.
        vectors = index.reconstruct_batch(ids)
    return np.ascontiguousarray(vectors, dtype=np.float32), ids


def maybe_upgrade(index: Any, config: VectorShardConfig) -> Any:
    """Rebuild an exact shard as IVF once it reaches ``approximate_threshold``, else return it."""
    if index.d != config.dim:
        raise IndexDimensionMismatch(f"shard has dimension {index.d}, config says {config.dim}")
    if _ivf(index) is not None or index.ntotal < config.approximate_threshold:
        return index
    # Exact shards keep the raw float32 vectors, so the rebuild loses nothing: read them
    # back with their ids and train the IVF on them. This holds a second copy of the
    # vectors in memory while it runs (n * dim * 4 bytes).
    vectors, ids = reconstruct_all(index)
    return build_shard(vectors, ids, config)


# --------------------------------------------------------------------------- searching


def search_shard(
    index: Any,
    queries: npt.ArrayLike,
    k: int,
    allowed_ids: npt.ArrayLike | None = None,
    nprobe: int | None = None,
) -> tuple[FloatArray, IdArray]:
    """Top-k ``(scores, ids)`` of shape (nq, k) for each query; -1 / -inf pad missing slots.

    With ``allowed_ids`` FAISS skips every other vector during the scan (an ``IDSelectorBatch``
    in the search parameters), so the k slots are filled from allowed vectors only. On IVF
    shards ``nprobe`` (default: the shard's own, the config value at build time) is divided by
    the fraction of the shard that is allowed, and rows the probed lists still could not fill
    are searched again over all lists, so a restrictive filter returns every allowed vector it
    can. Ids in ``allowed_ids`` that are not in this shard are ignored.
    """
    if k < 1:
        raise ShardError(f"k must be >= 1, got {k}")
    q = _as_vectors(queries, index.d)
    nq = q.shape[0]
    empty = (
        np.full((nq, k), -np.inf, dtype=np.float32),
        np.full((nq, k), MISSING_ID, dtype=np.int64),
    )
    if nq == 0 or index.ntotal == 0:
        return empty

    sel = None
    if allowed_ids is not None:
        allowed = _as_ids(allowed_ids, unique=False)
        if allowed.size == 0:
            return empty
        if _is_gpu(index):
            # GPU indexes ignore IDSelector (faiss#3924): filtering there would silently
            # return forbidden ids. Filtered searches must use the CPU shard.
            raise ShardError("filtered search is not supported on a GPU index; use the CPU shard")
        # IDSelectorBatch copies the ids into its own hash set; `sel` itself must stay
        # referenced until search() returns (the parameters hold a raw pointer to it).
        sel = faiss.IDSelectorBatch(allowed)

    ivf = _ivf(index)
    params: Any = None
    if ivf is not None:
        probe = ivf.nprobe if nprobe is None else nprobe
        if probe < 1:
            raise ShardError(f"nprobe must be >= 1, got {probe}")
        if sel is not None:
            # A filter keeping a fraction f of the shard leaves only f of each probed list
            # usable, and the best allowed vectors lie in more distant lists than the best
            # overall ones. Probing nprobe / f lists scans as many allowed vectors as an
            # unfiltered search scans vectors, which keeps recall at the unfiltered level;
            # FAISS computes distances for allowed vectors only, so the extra lists cost
            # only membership checks.
            present = int(np.isin(np.unique(allowed), index_ids(index), assume_unique=True).sum())
            if present == 0:
                return empty
            probe = math.ceil(probe * index.ntotal / present)
        params = _faiss.SearchParametersIVF(nprobe=min(probe, ivf.nlist))
        if sel is not None:
            params.sel = sel
    elif sel is not None:
        params = _faiss.SearchParameters(sel=sel)

    scores, ids = index.search(q, k, params=params)
    if ivf is not None and params.nprobe < ivf.nlist:
        # Rows with empty slots although the shard could fill them: the probed lists held
        # too few (allowed) vectors. Re-run just those rows exhaustively over all lists.
        want_full = sel is not None or k <= index.ntotal
        short = np.flatnonzero((ids == MISSING_ID).any(axis=1)) if want_full else np.empty(0)
        if short.size:
            params.nprobe = ivf.nlist
            s2, i2 = index.search(q[short], k, params=params)
            scores[short], ids[short] = s2, i2
    del sel
    scores[ids == MISSING_ID] = -np.inf
    return scores, ids.astype(np.int64, copy=False)


def to_device(index: Any) -> Any:
    """A GPU clone of ``index`` for unfiltered search if faiss-gpu sees a GPU, else ``index``."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.shard = False  # replicate: each GPU holds the whole (small) shard
    # The clone does not share memory with the CPU index; adds and removes must go to the
    # CPU index (the one saved to disk), followed by a fresh to_device().
    return faiss.index_cpu_to_all_gpus(index, co=options)


# --------------------------------------------------------------------------- files


def save_shard(index: Any, path: str | os.PathLike[str], sealer: Sealer | None = None) -> None:
    """Write a CPU shard to ``path`` atomically (the old file survives a failed write). With a
    ``sealer`` the index is serialised in memory and only its ciphertext is written."""
    if _is_gpu(index):
        raise ShardError("save the CPU index, not its GPU clone")
    if sealer is not None:
        atomic_write_bytes(path, sealer.seal(faiss.serialize_index(index).tobytes()))
        return
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_shard(path: str | os.PathLike[str], sealer: Sealer | None = None) -> Any:
    """Read a shard written by ``save_shard`` (a sealed one is decrypted into memory only)."""
    try:
        sealed = read_sealed(path, sealer)
        if sealed is None:
            index = faiss.read_index(os.fspath(path))
        else:
            index = faiss.deserialize_index(np.frombuffer(sealed, dtype=np.uint8))
    except FileNotFoundError as exc:
        raise ShardFormatError(f"cannot read shard {os.fspath(path)!r}: {exc}") from exc
    except RuntimeError as exc:
        raise ShardFormatError(f"cannot read shard {os.fspath(path)!r}: {exc}") from exc
    exact = isinstance(index, faiss.IndexIDMap2) and isinstance(
        faiss.downcast_index(index.index), faiss.IndexFlat
    )
    if _ivf(index) is None and not exact:
        raise ShardFormatError(f"{os.fspath(path)!r} holds an unsupported {type(index).__name__}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ShardFormatError(f"{os.fspath(path)!r} does not use inner product")
    return index
