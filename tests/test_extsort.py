"""External sort of curate's index: byte keys that sort like the numbers, block merges equal to one global sort."""

from __future__ import annotations

import numpy as np
import pytest

from ledgerlm.data.extsort import NpyRows, NpyWriter, merged_blocks, order_bytes, pack, rank_runs

KEY = np.dtype([("a", "S4"), ("b", ">u8"), ("g", ">u8")])


@pytest.mark.parametrize("descending", [False, True])
def test_order_bytes_sorts_like_the_numbers(descending):
    ints = np.array([0, -1, 1, -(2**63) + 1, 2**63 - 1, 5, -5, 5], dtype=np.int64)  # -(-2**63) overflows
    floats = np.array([0.0, -0.0, 1.5, -1.5, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 1.5])
    for x in (ints, floats):
        idx = np.arange(len(x))
        want = np.lexsort((idx, -x if descending else x))  # what the index did before: lexsort on -x
        enc = pack(np.dtype([("x", ">u8"), ("i", ">u8")]), {"x": order_bytes(x, descending), "i": idx})
        assert np.argsort(enc).tolist() == want.tolist()


def _runs(tmp_path, keys: np.ndarray, cuts: list[int]):
    runs, parts = [], np.split(keys, cuts)
    for i, part in enumerate(parts):
        runs.append(tmp_path / f"run-{i}.npy")
        np.save(runs[-1], np.sort(part))
    return runs, parts


@pytest.mark.parametrize("buffer_rows", [1, 300, 10**6])
def test_rank_runs_equals_one_global_sort(tmp_path, buffer_rows):
    rng = np.random.default_rng(0)
    n = 5000
    a = rng.choice([b"aa", b"ab", b"b", b"", b"a\x00z"], size=n)  # many equal prefixes: the unique tail decides
    keys = pack(KEY, {"a": a, "b": rng.integers(0, 4, n), "g": np.arange(n)})
    runs, parts = _runs(tmp_path, keys, [0, 1200, 1200, 3000, 4999])  # empty runs and a one-key run included
    ranks = [tmp_path / f"ranks-{i}.bin" for i in range(len(runs))]
    seen = []
    rank_runs(runs, ranks, buffer_rows, on_block=seen.append)
    want = np.empty(n, np.int64)
    want[np.argsort(keys)] = np.arange(n)
    got = np.empty(n, np.int64)
    for part, path in zip(parts, ranks):
        g = np.sort(part).view(KEY)["g"].astype(np.int64)
        got[g] = np.fromfile(path, np.int64)
    assert np.array_equal(got, want)
    merged = np.concatenate(seen)
    assert np.array_equal(merged, np.sort(keys))  # blocks arrive in order, every key once
    if buffer_rows == 300:
        assert len(seen) > 5  # the merge really ran in rounds


def test_npy_writer_rows_and_gather(tmp_path):
    a = np.arange(1000, dtype=np.int64) * 3
    with NpyWriter(tmp_path / "a.npy", np.int64, len(a)) as w:
        for part in np.array_split(a, 7):
            w.write(part)
    assert np.array_equal(np.load(tmp_path / "a.npy"), a)
    rows = NpyRows(tmp_path / "a.npy")
    assert np.array_equal(rows.read(990, 2000), a[990:]) and len(rows.read(5, 5)) == 0
    idx = np.array([0, 1, 511, 512, 999])
    assert np.array_equal(rows.gather(idx, block_bytes=64), a[idx])
    with pytest.raises(ValueError, match="wrote 10 rows, declared 11"):
        with NpyWriter(tmp_path / "b.npy", np.int64, 11) as w:
            w.write(a[:10])
    assert not (tmp_path / "b.npy").exists() and not list(tmp_path.glob(".b.npy*"))


def _band_edges(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One band's edges from all its keys in memory (what the LSH step did before): the reference."""
    idx = np.flatnonzero(valid)
    order = np.argsort(keys[idx], kind="stable")
    ks = keys[idx][order]
    start = np.concatenate([[True], ks[1:] != ks[:-1]])
    head = np.maximum.accumulate(np.where(start, np.arange(len(ks)), 0))
    members = np.flatnonzero(~start)
    e = np.stack([idx[order[head[members]]], idx[order[members]]], axis=1).astype(np.int64)
    return np.unique(np.sort(e, axis=1), axis=0)


@pytest.mark.parametrize("buffer_rows", [3, 1000])
def test_lsh_buckets_from_merged_runs_equal_in_memory_buckets(tmp_path, buffer_rows):
    from ledgerlm.data.curate.lsh import LSH_KEY, _Buckets

    rng = np.random.default_rng(1)
    n = 3000
    keys = rng.integers(0, 400, n).astype(np.uint64)  # ~7 documents per bucket, buckets across every run
    valid = rng.random(n) > 0.1
    runs = []
    for i, (lo, hi) in enumerate([(0, 700), (700, 701), (701, 701), (701, 3000)]):
        idx = np.arange(lo, hi)[valid[lo:hi]]
        runs.append(tmp_path / f"r{i}.npy")
        np.save(runs[-1], np.sort(pack(LSH_KEY, {"key": keys[idx], "g": idx})))
    buckets = _Buckets()
    for block, _, _ in merged_blocks(runs, buffer_rows):
        buckets.add(block)
    assert np.array_equal(buckets.edges(), _band_edges(keys, valid))
