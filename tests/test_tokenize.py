"""Tokenizer, shards and the tokenize stage, on real text from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ledgerlm.data import documents, token_index
from ledgerlm.data import shards as sh
from ledgerlm.data.tokenizer import (
    SPECIAL_TOKENS,
    encode_texts,
    load_tokenizer,
    save_hf_tokenizer_files,
    train_tokenizer,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")


def _cc_texts() -> list[str]:
    return [json.loads(line)["text"] for f in sorted((DATA / "text").glob("cc_en_head-*.jsonl")) for line in open(f)]


@pytest.fixture(scope="module")
def small_tok():
    _need_data()
    texts = (DATA / "text" / "tinyshakespeare.txt").read_text().split("\n\n")[:3000] + _cc_texts()
    return train_tokenizer(texts, vocab_size=1024)


def test_special_ids_and_roundtrip_on_real_text(small_tok):
    assert [small_tok.token_to_id(s) for s in SPECIAL_TOKENS] == [0, 1, 2]
    texts = _cc_texts()  # web text with curly quotes, accents, a byte-order mark
    texts += [json.loads(line)["answer"] for line in open(DATA / "gsm8k" / "train.jsonl")][:200]
    texts += ["Zürich – naïve café, 東京 and Москва 🚀\n\ttabs  and  spaces ", "\ufeffBOM", "e\u0301 combining"]
    assert any(any(ord(c) > 127 for c in t) for t in _cc_texts())
    for enc, t in zip(encode_texts(small_tok, texts), texts):
        assert small_tok.decode(enc.ids, skip_special_tokens=False) == t
        assert 0 not in enc.ids  # no special token appears in ordinary text


def test_literal_special_strings_are_text(small_tok):
    t = "a page that mentions <|endoftext|> and <|im_start|> literally"
    (enc,) = encode_texts(small_tok, [t])
    assert not set(enc.ids) & {0, 1, 2}
    assert small_tok.decode(enc.ids, skip_special_tokens=False) == t
    assert small_tok.encode_special_tokens is False  # the flag is restored


def test_training_is_deterministic(small_tok):
    texts = (DATA / "text" / "tinyshakespeare.txt").read_text().split("\n\n")[:3000] + _cc_texts()
    assert train_tokenizer(texts, vocab_size=1024).to_str() == small_tok.to_str()
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, vocab_size=100)


def test_load_and_hf_files(small_tok, tmp_path):
    save_hf_tokenizer_files(small_tok, tmp_path / "model")
    tok = load_tokenizer(tmp_path / "model")
    assert tok.to_str() == small_tok.to_str()
    assert load_tokenizer(tmp_path / "model" / "tokenizer.json").get_vocab_size() == 1024
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing" / "tokenizer.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    text = _cc_texts()[0][:500]
    assert hf(text)["input_ids"] == small_tok.encode(text).ids
    assert hf.eos_token_id == 0 and hf.convert_tokens_to_ids("<|im_end|>") == 2


def _docs_of(tokdir: Path, source: str, split: str) -> list[np.ndarray]:
    t = token_index.TokenIndex(tokdir).table(source, split)
    return [np.asarray(t.doc(d)) for d in range(t.n_docs)]


def test_tokenize_stage_shards(tmp_path, small_tok):
    """Through the real CLI: shards decode back to the input documents, val is held out by document, malformed
    records are quarantined with file/line/reason, and a second run (other workers/batching) hashes the same."""
    from ledgerlm.cli import main

    src = tmp_path / "in"
    src.mkdir()
    recs = [
        {"id": f"m{i}", "source": "math", "text": json.loads(line)["answer"]}
        for i, line in enumerate(open(DATA / "gsm8k" / "train.jsonl"))
        if i < 400
    ]
    lines = [json.dumps(r) for r in recs] + [
        '{"id": "x", "text": ',
        '["a list"]',
        '{"id": "y", "text": ""}',
        '{"id": "z", "txt": "wrong field"}',
    ]
    (src / "math.jsonl").write_text("\n".join(lines) + "\n")
    for f in sorted((DATA / "text").glob("cc_en_head-*.jsonl")):
        (src / f.name).symlink_to(f)
    tok_path = tmp_path / "tok.json"
    small_tok.save(str(tok_path))

    def run(out, *extra):
        args = [
            "tokenize",
            "--input",
            str(src),
            "--out",
            str(out),
            "--tokenizer",
            str(tok_path),
            "--val-fraction",
            "0.1",
            "--shard-tokens",
            "20000",
            *extra,
        ]
        assert main(args) == 0
        return out / "tokenize"

    a = run(tmp_path / "a", "--workers", "1")
    b = run(tmp_path / "b", "--workers", "2", "batch_bytes=3000")
    ia, ib = (json.loads((d / "index.json").read_text()) for d in (a, b))
    assert ia["shards"] == ib["shards"] and len(ia["shards"]) >= 3
    assert token_index.verify_shards(a) == [] and token_index.verify_shards(b) == []
    assert ia["dtype"] == "uint16" and ia["eot_id"] == 0 and ia["vocab_size"] == 1024

    # Every kept document is in exactly one split, and decodes back exactly.
    by_src = {"math": [r["text"] for r in recs], "common-crawl": _cc_texts()}
    for source, texts in by_src.items():
        got = _docs_of(a, source, "train") + _docs_of(a, source, "val")
        assert all(d[-1] == 0 and 0 not in d[:-1] for d in got)  # one separator, at the end
        assert sorted(small_tok.decode(d[:-1].tolist()) for d in got) == sorted(texts)
    n_val = ia["sources"]["math"]["val"]["n_docs"]
    assert 15 <= n_val <= 70  # ~10% of 400, by hash
    val_texts = {small_tok.decode(d[:-1].tolist()) for d in _docs_of(a, "math", "val")}
    assert not val_texts & {small_tok.decode(d[:-1].tolist()) for d in _docs_of(a, "math", "train")}

    q = [json.loads(line) for line in (a / "quarantine.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"]) for r in q] == [("math.jsonl", n) for n in (401, 402, 403, 404)]
    assert "malformed JSON" in q[0]["reason"] and "not a JSON object" in q[1]["reason"]
    assert "empty" in q[2]["reason"] and "'text' missing" in q[3]["reason"]

    rec = json.loads((tmp_path / "a" / "ledger" / "tokenize.json").read_text())
    assert rec["counters"]["documents_quarantined"] == 4
    assert rec["counters"]["documents"] == 400 + 20
    assert rec["metrics"]["bytes_per_token"] == ia["bytes_per_token"] > 1.5
    assert rec["metrics"]["bytes_per_token_on"] == "val"


def test_tokenize_stage_trains_tokenizer(tmp_path):
    _need_data()
    from ledgerlm.cli import main

    shakespeare = DATA / "text" / "tinyshakespeare.txt"
    args = ["tokenize", "--input", str(shakespeare), "--vocab-size", "512", "--val-fraction", "0.05"]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 0
    assert main([*args, "--out", str(tmp_path / "r2")]) == 0
    d1, d2 = tmp_path / "r1" / "tokenize", tmp_path / "r2" / "tokenize"
    assert (d1 / "tokenizer.json").read_bytes() == (d2 / "tokenizer.json").read_bytes()
    i1 = json.loads((d1 / "index.json").read_text())
    assert i1["shards"] == json.loads((d2 / "index.json").read_text())["shards"]
    assert set(i1["sources"]) == {"tinyshakespeare"}
    s = i1["sources"]["tinyshakespeare"]
    assert s["train"]["n_bytes"] + s["val"]["n_bytes"] > 1_000_000  # the whole file, by paragraphs
    assert 1.5 < i1["bytes_per_token"] < 4.0  # a 512-token BPE on English: between bytes and words


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        documents.expand_inputs([tmp_path / "nope"])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported input"):
        documents.expand_inputs([tmp_path / "x.csv"])
    assert token_index.token_dtype(49152) == np.uint16 and token_index.token_dtype(65537) == np.uint32
    assert documents.default_source_name(Path("web-00003.jsonl.zst")) == "web"


def test_reads_compressed_and_quarantines_bad_utf8(tmp_path):
    from ledgerlm.io import write_jsonl

    write_jsonl(tmp_path / "web-00001.jsonl.zst", [{"id": 1, "text": "zstd doc ü"}])
    write_jsonl(tmp_path / "books.jsonl.gz", [{"id": 2, "text": "gzip doc", "source": "books"}])
    (tmp_path / "raw.jsonl").write_bytes(b'{"id": 3, "text": "bad \xff byte"}\n{"id": 4, "text": "fine"}\n')
    q = []
    docs = list(documents.iter_documents(documents.expand_inputs([tmp_path]), q.append))
    assert [(d.source, d.text, d.line) for d in docs] == [
        ("books", "gzip doc", 1),
        ("raw", "fine", 2),
        ("web", "zstd doc ü", 1),
    ]
    assert (
        len(q) == 1
        and q[0]["line"] == 1
        and q[0]["reason"].startswith("invalid UTF-8")
        and q[0]["file"].endswith("raw.jsonl")
    )
    assert documents.split_of("web\x001", 0, 0.0) == "train"
    splits = [documents.split_of(f"s\x00{i}", 5, 0.2) for i in range(5000)]
    assert 0.17 < splits.count("val") / 5000 < 0.23


def test_large_vocab_uses_uint32(tmp_path):
    from ledgerlm.data.loader import TokenLoader

    tok = train_tokenizer(["hello world, the quick brown fox"] * 20, vocab_size=300)
    tok.add_tokens([f"zq{i}x" for i in range(65500)])  # push ids past the uint16 range
    big = tok.token_to_id("zq65450x")
    assert big > 65535
    docs = [("s", "train", f"hello zq{i}x world " * 20) for i in range(65440, 65460)]
    index = sh.write_shards(docs, tok, tmp_path, eot=0, workers=1)
    sh.write_index(tmp_path, index)
    assert index["dtype"] == "uint32" and index["vocab_size"] == tok.get_vocab_size()
    x, y = TokenLoader(tmp_path, seq_len=16, batch_size=64, seed=0).next_batch()
    assert x.max().item() > 65535 and big in x.flatten().tolist()


def test_hub_names_route_to_the_hub(monkeypatch, tmp_path):
    from tokenizers import Tokenizer

    from ledgerlm.data import tokenize_stage

    calls = []
    monkeypatch.setattr(Tokenizer, "from_pretrained", staticmethod(lambda name: calls.append(name) or "tok"))
    assert load_tokenizer("HuggingFaceTB/SmolLM-135M") == "tok" and calls == ["HuggingFaceTB/SmolLM-135M"]
    with pytest.raises(FileNotFoundError):
        load_tokenizer(str(tmp_path / "a" / "b" / "tokenizer.json"))  # a missing path is not a Hub name
    cfg = tokenize_stage.Config(tokenizer="HuggingFaceTB/SmolLM-135M", input=[str(tmp_path)])
    assert tokenize_stage.inputs(cfg, None)["tokenizer"] == "hub:HuggingFaceTB/SmolLM-135M"
