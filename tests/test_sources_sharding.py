"""Splitting a source between tasks: Parquet by row groups, Hugging Face streams by shards, JSONL by position.

Whatever the number of tasks, the union of the tasks' records is the one-task result (same file, line, text, reason),
with no duplicates, and a task does not decode what it does not keep.
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledgerlm.data.sources import SourceSpec, iter_records

SIZES = (10, 7, 13)  # rows per file; row groups of 4 -> 3 + 2 + 4 = 9 row groups
ROW_GROUP = 4


def _write(root, sizes=SIZES):
    root.mkdir(exist_ok=True)
    paths = []
    for f, n in enumerate(sizes):
        texts = [f"file {f} row {i} " + "word " * (i % 5) for i in range(n)]
        if f == 1:
            texts[5] = None  # a malformed row in the second row group of the second file
        path = root / f"part-{f}.parquet"
        pq.write_table(pa.table({"text": texts, "id": list(range(n))}), path, row_group_size=ROW_GROUP)
        paths.append(path)
    return paths


def _key(r):
    return (r.file, r.line, r.text, r.reason, r.orig_id)


def _reference(paths, limit=None):
    """What one task read before row-group splitting: every row of every file, in order, numbered in its file."""
    out = []
    for path in paths:
        for row, obj in enumerate(pq.read_table(path).to_pylist(), 1):
            if limit is not None and len(out) >= limit:
                return out
            if obj["text"] is None:
                out.append((str(path), row, None, "malformed:missing_field", None))
            else:
                out.append((str(path), row, obj["text"], None, str(obj["id"])))
    return out


@pytest.fixture
def spy(monkeypatch):
    """Every data read of a Parquet file, as (file name, row groups); a whole-file read fails the test."""
    reads = []
    orig = pq.ParquetFile.iter_batches

    def iter_batches(self, *a, row_groups=None, **kw):
        assert row_groups is not None, "a whole-file read"
        reads.append((self.metadata.num_rows, tuple(row_groups)))
        return orig(self, *a, row_groups=row_groups, **kw)

    def forbidden(self, *a, **kw):
        raise AssertionError("only iter_batches(row_groups=...) reads data")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    for name in ("read", "read_row_group", "read_row_groups"):
        monkeypatch.setattr(pq.ParquetFile, name, forbidden)
    return reads


def _global_rg(read):
    """(rows of the file, (i,)) -> the row group's index across the source (file sizes identify the file)."""
    nrows, (i,) = read
    first = {n: sum(-(-m // ROW_GROUP) for m in SIZES[:k]) for k, n in enumerate(SIZES)}
    return first[nrows] + i


@pytest.mark.parametrize("limit", [None, 5, 15, 17])
@pytest.mark.parametrize("world", [1, 3, 4, 12])
def test_parquet_tasks_together_read_what_one_task_reads(tmp_path, world, limit, spy):
    paths = _write(tmp_path / "src")
    spec = SourceSpec(name="p", path=str(tmp_path / "src"), id_field="id", limit=limit)
    one = [_key(r) for r in iter_records(spec)]
    assert one == _reference(paths, limit)  # one task: exactly the former row-by-row result
    assert ("malformed:missing_field" in [k[3] for k in one]) == (limit is None or limit > 10 + 5)
    spy.clear()
    tasks = []
    for rank in range(world):
        before = len(spy)
        recs = [_key(r) for r in iter_records(spec, rank, world)]
        assert recs == sorted(recs, key=lambda k: (k[0], k[1]))  # each task keeps file order
        tasks.append((recs, [_global_rg(x) for x in spy[before:]]))
    union = [k for recs, _ in tasks for k in recs]
    assert len(union) == len(set(union)) and sorted(union, key=str) == sorted(one, key=str)
    starts = [sum(SIZES[:f]) + s for f, n in enumerate(SIZES) for s in range(0, n, ROW_GROUP)]
    units = sum(1 for s in starts if limit is None or s < limit)  # row groups that start within the limit
    read = [g for _, gs in tasks for g in gs]
    assert all(g < units for g in read)  # nothing past the limit is decoded
    if units >= world:  # whole row groups: each is decoded by its one task
        assert sorted(read) == list(range(units))
        for rank, (_, gs) in enumerate(tasks):
            assert all(g % world == rank for g in gs)
    else:  # fewer row groups than tasks: each task decodes one and keeps its share of the rows
        assert all(len(gs) == 1 for _, gs in tasks)


def test_parquet_split_counts_positions_across_formats_in_one_directory(tmp_path):
    root = tmp_path / "mixed"
    _write(root, sizes=(9, 6))
    (root / "a.jsonl").write_text("".join(json.dumps({"text": f"line {i}", "id": i}) + "\n" for i in range(5)))
    for limit in (None, 0, 3, 8, 16):
        spec = SourceSpec(name="m", path=str(root), id_field="id", limit=limit)
        one = [_key(r) for r in iter_records(spec)]
        assert len(one) == (limit if limit is not None else 20)
        for world in (2, 3, 5):
            union = [_key(r) for rank in range(world) for r in iter_records(spec, rank, world)]
            assert len(union) == len(set(union)) and sorted(union, key=str) == sorted(one, key=str)


def test_hf_stream_is_split_by_shards(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    import datasets.distributed

    paths = _write(tmp_path / "src")
    spec = SourceSpec(name="h", format="hf", hf_name="parquet", hf_data_files=[str(p) for p in paths], id_field="id")
    one = list(iter_records(spec))
    assert [r.text for r in one] == [k[2] for k in _reference(paths)]
    # located by shard (one per file here) and 1-based item in the shard
    assert [(r.file, r.line) for r in one] == [
        (f"hf:parquet:train#shard={f}/3", i + 1) for f, n in enumerate(SIZES) for i in range(n)
    ]
    assert [r.reason for r in one].count("malformed:type") == 1

    asked = []
    orig = datasets.distributed.split_dataset_by_node

    def split(ds, rank, world_size, **kw):
        asked.append(rank)
        return orig(ds, rank=rank, world_size=world_size, **kw)

    monkeypatch.setattr(datasets.distributed, "split_dataset_by_node", split)
    for world in (1, 2, 3, 4):
        union = []
        for rank in range(world):
            asked.clear()
            union += [_key(r) for r in iter_records(spec, rank, world)]
            # a task opens only its shards (with 4 tasks and 3 shards, task 3 shares shard 0 with task 0)
            assert asked == ([rank % 3] if world > 3 else list(range(rank, 3, world)))
        assert len(union) == len(set(union)) and sorted(union, key=str) == sorted(map(_key, one), key=str)

    # with a limit, the first N records of the stream, split by position
    lim = SourceSpec(**{**spec.__dict__, "limit": 12})
    first = [_key(r) for r in iter_records(lim)]
    assert [k[2] for k in first] == [r.text for r in one[:12]] and [k[1] for k in first] == list(range(1, 13))
    union = [_key(r) for rank in range(3) for r in iter_records(lim, rank, 3)]
    assert sorted(union, key=str) == sorted(first, key=str)
