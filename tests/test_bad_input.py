"""Real-world bytes through the CLI, in curate and tokenize alike: each bad input gets a quarantine entry with
file:line and reason (the run goes on) or one line on stderr and exit 2; our own JSONL is read by "\\n" only; a
killed or disk-full tokenize resumes to byte-identical outputs."""

from __future__ import annotations

import errno
import gzip
import json
import random
from pathlib import Path

import pytest
import zstandard

from ledgerlm.cli import main
from ledgerlm.data import shards as sh
from ledgerlm.io import iter_jsonl, iter_lines, write_jsonl

WORDS = (
    "the of and to in is was for on that with from this which have were garden river morning teacher window "
    "library village mountain kitchen student history science market weather evening question answer"
).split()
ODD = " line\u2028sep para\u2029sep next\x85line \x1c\x1d\x1e\r end"  # legal inside JSON text; str.splitlines breaks


def _doc(i: int, n: int = 120) -> str:
    """n random words in sentences of 12 (C4 wants 5 sentences)."""
    r = random.Random(i)
    words = [r.choice([*WORDS, f"w{r.randrange(5000)}"]) + ("." if k % 12 == 11 else "") for k in range(n)]
    return " ".join(words).rstrip(".") + "."


def _good_lines(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"text": _doc(start + i)}).encode() + b"\n" for i in range(n))


def _cut(data: bytes, compress) -> bytes:
    z = compress(data)
    return z[: len(z) * 2 // 3]


def _curate(capsys, path: Path, out: Path, *overrides: str) -> tuple[int, str, list[dict]]:
    rc = main(["curate", "--input", str(path), "--out", str(out), *overrides])
    err = capsys.readouterr().err
    excluded = out / "curate" / "excluded"
    recs = [r for f in sorted(excluded.glob("*.jsonl")) for _, r in iter_jsonl(f)] if excluded.is_dir() else []
    return rc, err, [r for r in recs if r["reason"].startswith("malformed")]


def _tokenize(capsys, path: Path, out: Path, *extra: str) -> tuple[int, str, list[dict]]:
    rc = main(["tokenize", "--input", str(path), "--out", str(out), "--vocab-size", "300", *extra])
    err = capsys.readouterr().err
    q = out / "tokenize" / "quarantine.jsonl"
    return rc, err, [r for _, r in iter_jsonl(q)] if q.is_file() else []


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch):
    """These tests read stderr for the error line alone; progress lines (also on stderr off a TTY) are tested
    in test_progress.py."""
    monkeypatch.setenv("LEDGERLM_PROGRESS", "off")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.split("\n") if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- our own JSONL


def test_own_jsonl_is_split_on_newline_only(tmp_path):
    text = "a" + ODD
    assert len(text.splitlines()) > 1  # what str.splitlines() would have done to the record
    for name in ("own.jsonl", "own.jsonl.gz", "own.jsonl.zst"):
        write_jsonl(tmp_path / name, [{"t": text}, {"t": "b"}])
        assert [(n, r["t"]) for n, r in iter_jsonl(tmp_path / name)] == [(1, text), (2, "b")]
    (tmp_path / "bad.jsonl").write_bytes(b'{"a": 1}\n\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: malformed JSON"):
        list(iter_jsonl(tmp_path / "bad.jsonl"))
    # a long line spanning many read chunks, and a last line without "\n"
    (tmp_path / "long.txt").write_bytes(b"x" * 3_000_000 + b"\nlast")
    assert [(n, len(b)) for n, b in iter_lines(tmp_path / "long.txt")] == [(1, 3_000_000), (2, 4)]


def test_metrics_log_resume_keeps_records_holding_line_separators(tmp_path):
    from ledgerlm.post.common import MetricsLog

    with open(tmp_path / "metrics.jsonl", "w", encoding="utf-8") as f:  # as any JSON writer may: not ASCII-escaped
        f.writelines(json.dumps({"step": s, "sample": f"answer{ODD}"}, ensure_ascii=False) + "\n" for s in range(4))
        f.write('{"step": 4, "sam')  # a line cut short by a kill
    MetricsLog(tmp_path / "metrics.jsonl", keep_upto=2).close()
    assert [(r["step"], r["sample"]) for _, r in iter_jsonl(tmp_path / "metrics.jsonl")] == [
        (s, f"answer{ODD}") for s in range(3)
    ]


# ----------------------------------------------------------------------------- curate


def test_curate_bad_bytes_are_quarantined_with_file_and_line(tmp_path, capsys):
    (tmp_path / "u.jsonl").write_text(
        "".join(json.dumps({"text": _doc(i) + ODD + " " + _doc(i + 100)}, ensure_ascii=False) + "\n" for i in range(8)),
        encoding="utf-8",
    )
    # C4 splits lines as str.splitlines does and would keep its edited text: kept as read here
    rc, err, bad = _curate(capsys, tmp_path / "u.jsonl", tmp_path / "ru", "curate.quality.c4_edit=false")
    assert rc == 0 and not bad, err
    kept = [r for f in (tmp_path / "ru" / "curate" / "kept").glob("*.jsonl") for _, r in iter_jsonl(f)]
    assert len(kept) == 8 and all(ODD in r["text"] for r in kept)

    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "t.jsonl.gz").write_bytes(_cut(_good_lines(300), gzip.compress))
    (tmp_path / "cut" / "z.jsonl.zst").write_bytes(_cut(_good_lines(3000, 7), zstandard.ZstdCompressor().compress))
    rc, err, bad = _curate(capsys, tmp_path / "cut", tmp_path / "rg")
    assert rc == 0, err
    assert sorted((r["reason"], Path(r["file"]).name) for r in bad) == [
        ("malformed:truncated", "t.jsonl.gz"),
        ("malformed:truncated", "z.jsonl.zst"),
    ]
    assert all(1 < r["line"] <= 3000 for r in bad)

    rnd = random.Random(0)
    noise = bytes(rnd.randrange(256) for _ in range(4000)).replace(b"\n", b"\n\xff")  # no valid line by chance
    (tmp_path / "rand.jsonl").write_bytes(_good_lines(10) + noise + b"\n" + _good_lines(1, 50) + b'{"text": "\xc3("}\n')
    rc, err, bad = _curate(capsys, tmp_path / "rand.jsonl", tmp_path / "rr")
    assert rc == 0, err
    n_noise = noise.count(b"\n") + 1
    lines = sorted(r["line"] for r in bad)
    assert lines == [*range(11, 11 + n_noise), 12 + n_noise]  # every noise line and the bad-UTF-8 record
    assert {r["reason"] for r in bad} <= {"malformed:utf8", "malformed:json"}
    assert all(Path(r["file"]).name == "rand.jsonl" for r in bad)

    (tmp_path / "b.txt").write_bytes(_doc(1).encode() + b"\nbad \xed\xa0\x80 bytes\n")
    rc, err, bad = _curate(capsys, tmp_path / "b.txt", tmp_path / "rt")
    assert rc == 0 and [(r["reason"], r["line"]) for r in bad] == [("malformed:utf8", 2)], err


def _parquet_files(d: Path) -> None:
    """A good file, one cut in half, random bytes and one whose footer reads but whose first page is garbage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir()
    pq.write_table(pa.table({"text": [_doc(i) for i in range(300)]}), d / "good.parquet", row_group_size=100)
    data = (d / "good.parquet").read_bytes()
    (d / "cut.parquet").write_bytes(data[: len(data) // 2])
    (d / "noise.parquet").write_bytes(random.Random(2).randbytes(5000))
    page = bytearray(data)
    page[4:2004] = random.Random(3).randbytes(2000)  # the first row group's pages (the footer is at the end)
    (d / "page.parquet").write_bytes(bytes(page))


def test_curate_corrupt_parquet_is_quarantined_with_the_file_and_the_run_goes_on(tmp_path, capsys):
    _parquet_files(tmp_path / "pq")
    rc, err, bad = _curate(capsys, tmp_path / "pq", tmp_path / "r")
    assert rc == 0, err
    got = sorted((Path(r["file"]).name, r["reason"], r["line"]) for r in bad)
    assert got == [
        ("cut.parquet", "malformed:truncated", 0),
        ("noise.parquet", "malformed:truncated", 0),
        ("page.parquet", "malformed:corrupt", 1),
    ], got
    why = {Path(r["file"]).name: r["details"]["detail"] for r in bad}
    assert "footer" in why["cut.parquet"] and why["page.parquet"].startswith("row group 0, rows 1-100 unreadable")
    kept = [r for f in (tmp_path / "r" / "curate" / "kept").glob("*.jsonl") for _, r in iter_jsonl(f)]
    assert len(kept) == 300  # good.parquet; page.parquet's two readable row groups are copies of it (near_dup)


def test_tokenize_parquet_input_is_one_line(tmp_path, capsys):
    _parquet_files(tmp_path / "pq")
    for name in ("cut.parquet", "noise.parquet"):
        rc, err, _ = _tokenize(capsys, tmp_path / "pq" / name, tmp_path / f"r-{name}")
        assert rc == 2 and name in _one_line(err)


def test_curate_unknown_suffix_and_empty_input_are_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    rc, err, _ = _curate(capsys, tmp_path / "x.csv", tmp_path / "r1")
    assert rc == 2 and "x.csv" in _one_line(err) and "format" in err
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    rc, err, _ = _curate(capsys, tmp_path / "empty.jsonl", tmp_path / "r2")
    assert rc == 2 and "empty.jsonl" in _one_line(err) and "empty" in err
    (tmp_path / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))
    rc, err, _ = _curate(capsys, tmp_path / "e.jsonl.zst", tmp_path / "r3")
    assert rc == 2 and "e.jsonl.zst" in _one_line(err)


# ----------------------------------------------------------------------------- tokenize


def test_tokenize_bad_bytes_are_quarantined_with_file_and_line(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "u.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": _doc(i) + ODD}, ensure_ascii=False) + "\n" for i in range(8)),
        encoding="utf-8",
    )
    (d / "g.jsonl.gz").write_bytes(_cut(_good_lines(300), gzip.compress))
    (d / "z.jsonl.zst").write_bytes(_cut(_good_lines(3000, 7), zstandard.ZstdCompressor().compress))
    noise = bytes(random.Random(1).randrange(256) for _ in range(3000)).replace(b"\n", b"\n\xff")
    (d / "rand.jsonl").write_bytes(_good_lines(5) + noise + b"\n" + b'{"text": "\\ud800 lone"}\n')
    (d / "b.txt").write_bytes(_doc(1).encode() + b"\n\nbad \xed\xa0\x80 bytes\nmore\n\n" + _doc(2).encode())
    rc, err, q = _tokenize(capsys, d, tmp_path / "r")
    assert rc == 0, err
    by_file: dict[str, list] = {}
    for r in q:
        by_file.setdefault(Path(r["file"]).name, []).append((r["line"], r["reason"]))
    assert [reason[:9] for _, reason in by_file["g.jsonl.gz"]] == ["truncated"]
    assert [reason[:9] for _, reason in by_file["z.jsonl.zst"]] == ["truncated"]
    n_noise = noise.count(b"\n") + 1
    assert [line for line, _ in by_file["rand.jsonl"]] == [*range(6, 6 + n_noise), 6 + n_noise]
    assert "surrogate" in by_file["rand.jsonl"][-1][1]
    assert by_file["b.txt"] == [(3, "invalid UTF-8 (invalid continuation byte at byte 4 of the line)")]
    assert "u.jsonl" not in by_file
    index = json.loads((tmp_path / "r" / "tokenize" / "index.json").read_text())
    u = index["sources"]["u"]
    assert u["train"]["n_docs"] + u["val"]["n_docs"] == 8  # U+2028 & co. inside the text split nothing


def test_tokenize_unknown_suffix_empty_and_all_bad_are_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    rc, err, _ = _tokenize(capsys, tmp_path / "x.csv", tmp_path / "r1")
    assert rc == 2 and "x.csv" in _one_line(err)
    (tmp_path / "empty.jsonl").write_text("")
    rc, err, _ = _tokenize(capsys, tmp_path / "empty.jsonl", tmp_path / "r2")
    assert rc == 2 and "empty.jsonl" in _one_line(err) and "empty" in err
    (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe\n{oops\n")
    rc, err, q = _tokenize(capsys, tmp_path / "bad.jsonl", tmp_path / "r3", "--tokenizer", "gpt2-missing.json")
    assert rc == 2 and "tokenizer" in _one_line(err)  # (a missing tokenizer file is also one line)
    rc, err, q = _tokenize(capsys, tmp_path / "bad.jsonl", tmp_path / "r4")
    assert rc == 2 and "quarantine" in _one_line(err)
    assert [(r["line"], r["reason"][:7]) for r in q] == [(1, "invalid"), (2, "malform")]


# ----------------------------------------------------------------------------- long documents, resume, full disk


def test_long_documents_are_encoded_in_pieces_with_the_same_tokens(tmp_path):
    from ledgerlm.data.tokenizer import train_tokenizer

    texts = [_doc(i, 300) for i in range(300)]
    tok = train_tokenizer(texts, vocab_size=400)
    long = "  ".join(texts) + " " + "x" * 5000 + "\n\n" + " ".join(texts[:50])
    pieces = list(sh.split_pieces(long, 2000))
    assert "".join(pieces) == long and max(map(len, pieces)) <= 2000 and len(pieces) > 100
    items = [("web", "train", t) for t in [*texts[:3], long, texts[3]]]

    def shards(long_chars):
        out = tmp_path / f"o{long_chars}"
        index = sh.write_shards(iter(items), tok, out, 0, shard_tokens=5000, workers=2, long_chars=long_chars)
        return index, [(out / e["path"]).read_bytes() for e in index["shards"]]

    whole, pieced = shards(10**9), shards(2000)
    assert whole == pieced  # same tokens, same shards: only the unbreakable run of "x" was cut hard, and it
    # tokenises the same either way with this vocabulary (BPE merges of "x" runs are position-independent)


def _inputs(d: Path) -> Path:
    d.mkdir()
    for k in range(3):
        write_jsonl(d / f"web-{k}.jsonl", [{"id": i, "text": _doc(1000 * k + i)} for i in range(150)])
    return d


def _outputs(run: Path) -> dict[str, bytes]:
    t = run / "tokenize"
    return {str(p.relative_to(t)): p.read_bytes() for p in sorted(t.rglob("*")) if p.is_file()}


TOK = ["--vocab-size", "300", "--shard-tokens", "4000", "--val-fraction", "0.1"]


def test_tokenize_resumes_from_its_last_completed_shard(tmp_path, monkeypatch, capsys):
    inp = _inputs(tmp_path / "in")
    assert main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "clean"), *TOK]) == 0
    clean = _outputs(tmp_path / "clean")
    n_shards = len(json.loads(clean["index.json"])["shards"])
    assert n_shards >= 6

    calls = {"close": 0, "docs": 0}
    real_close, real_encode = sh.ShardWriter._close_shard, sh._encode

    def dying_close(self):  # killed in the middle of the 4th shard's rename
        calls["close"] += 1
        if calls["close"] == 4:
            raise KeyboardInterrupt("killed mid-shard")
        real_close(self)

    monkeypatch.setattr(sh.ShardWriter, "_close_shard", dying_close)
    with pytest.raises(KeyboardInterrupt):
        main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "run"), *TOK])
    monkeypatch.setattr(sh.ShardWriter, "_close_shard", real_close)

    def counting_encode(tok, texts, *a):
        calls["docs"] += len(texts)
        return real_encode(tok, texts, *a)

    monkeypatch.setattr(sh, "_encode", counting_encode)
    assert main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "run"), *TOK]) == 0
    assert "resuming" in capsys.readouterr().out
    assert 0 < calls["docs"] < 450  # the documents of the 3 completed shards were not encoded again
    assert _outputs(tmp_path / "run") == clean


def test_full_disk_is_one_line_and_the_rerun_recovers(tmp_path, monkeypatch, capsys):
    inp = _inputs(tmp_path / "in")
    assert main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "clean"), *TOK]) == 0
    capsys.readouterr()
    real_append = sh.ShardWriter.append
    n = {"calls": 0}

    def full_disk(self, *a):
        n["calls"] += 1
        if n["calls"] == 5:
            self._f.close()
            self._f = open("/dev/full", "wb", buffering=0)  # every write: ENOSPC
            self._f.write(b"x")
        return real_append(self, *a)

    monkeypatch.setattr(sh.ShardWriter, "append", full_disk)
    rc = main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "run"), *TOK])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and "disk full" in line and str(tmp_path / "run" / "tokenize") in line
    monkeypatch.setattr(sh.ShardWriter, "append", real_append)
    assert main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "run"), *TOK]) == 0
    assert _outputs(tmp_path / "run") == _outputs(tmp_path / "clean")


def test_disk_full_oserror_without_a_device(tmp_path, monkeypatch, capsys):
    """Where /dev/full is missing: a write raising ENOSPC from inside the stage gives the same one line."""
    inp = _inputs(tmp_path / "in")

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sh, "write_index", no_space)
    rc = main(["tokenize", "--input", str(inp), "--out", str(tmp_path / "run"), *TOK])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and "disk full" in line and "tokenize" in line


@pytest.mark.slow
def test_tokenize_killed_at_any_moment_resumes_to_identical_outputs(tmp_path):
    """kill -9 of `ledgerlm tokenize` at several moments (before, during and after the shard pass), then the same
    command again: outputs byte-identical to an uninterrupted run, and a kill after some shards resumes from them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(4):
        write_jsonl(inp / f"web-{k}.jsonl", [{"id": i, "text": _doc(1000 * k + i, 400)} for i in range(1500)])
    args = ["--vocab-size", "2000", "--shard-tokens", "50000", "--val-fraction", "0.05", "--workers", "1"]

    def cmd(out):
        return [sys.executable, "-m", "ledgerlm", "tokenize", "--input", str(inp), "--out", str(out), *args]

    subprocess.run(cmd(tmp_path / "clean"), check=True, capture_output=True)
    clean = _outputs(tmp_path / "clean")
    progress = tmp_path / "run" / "tokenize" / ".progress.json"
    for when in ("early", "after-shards", "early", "late"):
        p = subprocess.Popen(cmd(tmp_path / "run"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 120:
            if when == "early" and time.time() - t0 > 3:
                break
            if when == "after-shards" and progress.is_file() and json.loads(progress.read_text())["writers"]:
                break
            if when == "late" and progress.is_file():
                w = json.loads(progress.read_text())["writers"]
                if sum(len(x["entries"]) for x in w) >= 5:
                    break
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    kept = sum(len(x["entries"]) for x in json.loads(progress.read_text())["writers"])
    assert kept >= 5  # the last kill came after 5 completed shards...
    done = subprocess.run(cmd(tmp_path / "run"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "logs" / "tokenize.log").read_text()
    assert f"resuming: tokenizer and {kept} completed shards kept" in log  # ...and the re-run kept them
    assert _outputs(tmp_path / "run") == clean


@pytest.mark.parametrize("step, workers", [("MergeStep", "1"), ("ScanStep", "2")])
def test_curate_full_disk_ends_with_one_line_and_the_rerun_recovers(tmp_path, monkeypatch, capsys, step, workers):
    from ledgerlm.data import curate

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": _doc(i, 200)}) + "\n" for i in range(6)))

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(getattr(curate, step), "run", no_space)  # (pool workers are forked: they see it too)
    args = ["curate", "--input", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "run"), "--workers", workers]
    rc = main([*args, "--datatrove-tasks", workers])
    line = _one_line(capsys.readouterr().err)  # no datatrove/loguru traceback before it
    assert rc == 1 and line.startswith("error: disk full writing ") and str(tmp_path / "run") in line
    monkeypatch.undo()
    assert main([*args, "--datatrove-tasks", workers]) == 0
    kept = [r for f in (tmp_path / "run" / "curate" / "kept").glob("*.jsonl") for _, r in iter_jsonl(f)]
    assert len(kept) == 6
