"""The `tokenize` stage: train (or load) a tokenizer, then write token shards and their index.

    ledgerlm tokenize --out RUN                          # reads RUN/curate/kept/*.jsonl(.zst)
    ledgerlm tokenize --input DIR_OR_FILES --out RUN     # any JSONL (id, source, text) or .txt files

Outputs under RUN/tokenize/: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json for transformers),
shards/<source>/{train,val}-NNNNN.{bin,idx}, index.json, quarantine.jsonl. See ledgerlm/data/shards.py for the
layout and docs/tokenize.md for the whole tokenize API.

Flow: (1) documents are split train/val by a hash of their id; (2) with `tokenizer: train`, a byte-level BPE is
trained on a seeded hash-sample of about `sample_bytes` of train text (the val split is never seen); (3) every
document is encoded on `workers` threads and written to shards; (4) bytes per token is measured on the held-out
val split (exactly, from the shard pass) and recorded with per-source, per-split document and token counts.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from ledgerlm.config import ConfigError
from ledgerlm.data import shards as sh
from ledgerlm.data.tokenizer import (
    EOT,
    MIN_VOCAB,
    describe,
    eot_id,
    load_tokenizer,
    max_learnable_vocab,
    save_hf_tokenizer_files,
    train_tokenizer,
)
from ledgerlm.io import write_jsonl
from ledgerlm.ledger import StageResult


@dataclass
class Config:
    tokenizer: str = "train"  # "train", or a tokenizer.json / model directory path, or a Hub repo id
    vocab_size: int = 49152  # when training (SmolLM's size); a loaded tokenizer keeps its own
    min_frequency: int = 2  # BPE merges need at least this many occurrences in the sample
    sample_bytes: int = 128_000_000  # train-split text sampled to train the tokenizer
    val_fraction: float = 0.01  # documents held out for validation (by hash of their id)
    shard_tokens: int = 100_000_000  # a shard is closed once it holds at least this many tokens
    workers: int = 0  # encoding threads; 0 = all cores
    batch_bytes: int = 1_000_000  # text per encode batch (small batches keep reading and encoding overlapped)
    input: list[str] = field(default_factory=list)  # explicit input files/dirs; empty = <run>/curate/kept
    text_field: str = "text"
    source_field: str = "source"  # records without it take default_source, else their file name
    default_source: str = ""
    eot_token: str = EOT  # document separator (must exist in a loaded tokenizer)
    model_max_length: int = 2048  # written into tokenizer_config.json

    def validate(self) -> None:
        if self.tokenizer == "train" and self.vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB}, got {self.vocab_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for k in ("sample_bytes", "shard_tokens", "batch_bytes"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


def _input_paths(cfg: Config, ctx) -> list[Path]:
    return [Path(p) for p in cfg.input] if cfg.input else [ctx.stage_dir("curate") / "kept"]


def inputs(cfg: Config, ctx) -> dict[str, object]:
    out: dict[str, object] = {}
    for i, p in enumerate(_input_paths(cfg, ctx)):
        out["curate_kept" if not cfg.input else f"input{i}"] = p
    if cfg.tokenizer != "train":
        p = Path(cfg.tokenizer)
        out["tokenizer"] = p if p.exists() else f"hub:{cfg.tokenizer}"
    return out


def add_cli_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tokenize")
    g.add_argument("--input", nargs="+", default=None, help="input JSONL/.txt files or directories (default: curate)")
    g.add_argument("--tokenizer", default=None, help="'train', a tokenizer.json / model dir, or a Hub repo id")
    g.add_argument("--vocab-size", type=int, default=None)
    g.add_argument("--val-fraction", type=float, default=None)
    g.add_argument("--shard-tokens", type=int, default=None)
    g.add_argument("--sample-bytes", type=int, default=None)
    g.add_argument("--workers", type=int, default=None)


def cli_overrides(args) -> dict[str, object]:
    return {
        "input": [str(p) for p in args.input] if args.input else None,
        "tokenizer": args.tokenizer,
        "vocab_size": args.vocab_size,
        "val_fraction": args.val_fraction,
        "shard_tokens": args.shard_tokens,
        "sample_bytes": args.sample_bytes,
        "workers": args.workers,
    }


def plan(cfg: Config, ctx) -> list[str]:
    tok = (
        f"train a {cfg.vocab_size:,}-token byte-level BPE on ~{cfg.sample_bytes / 1e6:.0f} MB"
        if (cfg.tokenizer == "train")
        else f"load tokenizer {cfg.tokenizer}"
    )
    return [tok, f"hold out {cfg.val_fraction:.2%} of documents for validation; shards of {cfg.shard_tokens:,} tokens"]


def _estimated_text_bytes(files: list[Path]) -> int:
    # Compressed inputs hold roughly 3-4x their size in text; the estimate only sets the sampling rate.
    return sum(f.stat().st_size * (4 if f.suffix in (".zst", ".gz") else 1) for f in files)


def sample_texts(files: list[Path], cfg: Config, seed: int) -> list[str]:
    """A seeded hash-sample of about cfg.sample_bytes of train-split text (val documents are never sampled)."""
    rate = min(1.0, cfg.sample_bytes / max(1, _estimated_text_bytes(files)))
    texts, size = [], 0
    docs = sh.iter_documents(files, lambda _q: None, cfg.text_field, cfg.source_field, cfg.default_source)
    for d in docs:
        if sh.split_of(d.key, seed, cfg.val_fraction) == "val":
            continue
        if xxhash.xxh64_intdigest(d.key.encode("utf-8", "surrogatepass"), seed=seed + 1) / 2**64 >= rate:
            continue
        texts.append(d.text)
        size += len(d.text)
        if size >= cfg.sample_bytes:
            break
    return texts


def run(cfg: Config, ctx) -> StageResult:
    out = ctx.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = sh.expand_inputs(_input_paths(cfg, ctx))
    ctx.log.info("tokenize: %d input files", len(files))

    t0 = time.time()
    if cfg.tokenizer == "train":
        sample = sample_texts(files, cfg, ctx.seed)
        if not sample:
            raise ValueError(f"no training text found in {[str(f) for f in files]}")
        if (cap := max_learnable_vocab(sample, cfg.vocab_size)) < cfg.vocab_size:
            raise ConfigError(
                "tokenize.vocab_size",
                f"{cfg.vocab_size:,} tokens asked, but this data can give at most {cap:,} (its sample has too few "
                "distinct words); lower vocab_size or tokenize more data",
            )
        tok = train_tokenizer(sample, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)
        tok_info = {"trained": True, "sample_docs": len(sample), "sample_chars": sum(map(len, sample))}
        del sample
    else:
        tok = load_tokenizer(cfg.tokenizer)
        tok_info = {"trained": False, "loaded_from": cfg.tokenizer}
    t_tok = time.time() - t0
    eot = eot_id(tok, cfg.eot_token)
    save_hf_tokenizer_files(tok, out, model_max_length=cfg.model_max_length)
    ctx.log.info("tokenizer: vocab %d, eot id %d (%.1fs)", tok.get_vocab_size(), eot, t_tok)

    quarantined: list[dict] = []
    docs = sh.iter_documents(files, quarantined.append, cfg.text_field, cfg.source_field, cfg.default_source)
    items = ((d.source, sh.split_of(d.key, ctx.seed, cfg.val_fraction), d.text) for d in docs)
    t1 = time.time()
    index = sh.write_shards(
        items,
        tok,
        out,
        eot,
        shard_tokens=cfg.shard_tokens,
        workers=cfg.workers,
        batch_bytes=cfg.batch_bytes,
        progress=lambda it: ctx.progress(it, desc="tokenize"),
    )
    t_shards = time.time() - t1
    if not index["shards"]:
        raise ValueError(f"no documents to tokenize in {[str(f) for f in files]} ({len(quarantined)} quarantined)")

    # Compression on held-out text: the val split's bytes over its text tokens (separators excluded).
    def bpt(split: str, source: str | None = None) -> float | None:
        rows = [v[split] for s, v in index["sources"].items() if source in (None, s)]
        n_bytes = sum(r["n_bytes"] for r in rows)
        n_tok = sum(r["n_tokens"] - r["n_docs"] for r in rows)
        return round(n_bytes / n_tok, 4) if n_tok else None

    held_out = bpt("val")
    index.update(
        tokenizer="tokenizer.json",
        bytes_per_token=held_out if held_out is not None else bpt("train"),
        bytes_per_token_on="val" if held_out is not None else "train (no val documents)",
        seed=ctx.seed,
        val_fraction=cfg.val_fraction,
    )
    index_path = sh.write_index(out, index)
    q_path = out / "quarantine.jsonl"
    write_jsonl(q_path, quarantined)
    if quarantined:
        ctx.log.warning("quarantined %d malformed records -> %s", len(quarantined), q_path)
    for s, v in index["sources"].items():
        if cfg.val_fraction > 0 and v["val"]["n_docs"] == 0:
            ctx.log.warning("source %s has no val documents (only %d documents)", s, v["train"]["n_docs"])

    total_bytes = sum(v[sp]["n_bytes"] for v in index["sources"].values() for sp in ("train", "val"))
    counters = {
        "documents": sum(v[sp]["n_docs"] for v in index["sources"].values() for sp in ("train", "val")),
        "documents_quarantined": len(quarantined),
        "quarantine_reasons": dict(Counter(q["reason"] for q in quarantined)),
        "tokens": {s: {sp: v[sp]["n_tokens"] for sp in ("train", "val")} for s, v in index["sources"].items()},
        "documents_per_source": {
            s: {sp: v[sp]["n_docs"] for sp in ("train", "val")} for s, v in index["sources"].items()
        },
        "shards": len(index["shards"]),
        "input_files": len(files),
    }
    metrics = {
        "bytes_per_token": index["bytes_per_token"],
        "bytes_per_token_on": index["bytes_per_token_on"],
        "bytes_per_token_per_source": {s: bpt("val", s) for s in index["sources"]},
        "vocab_size": tok.get_vocab_size(),
        "tokenizer_seconds": round(t_tok, 2),
        "shard_seconds": round(t_shards, 2),
        "shard_mb_per_s": round(total_bytes / 1e6 / max(t_shards, 1e-9), 2),
    }
    extra = {"tokenizer": {**describe(tok), **tok_info, "eot_id": eot}, "dtype": index["dtype"]}
    ctx.log.info("tokenize done: %s tokens, %.2f bytes/token", counters["tokens"], index["bytes_per_token"])
    return StageResult(
        outputs={
            "tokenizer": out / "tokenizer.json",
            "tokenizer_config": out / "tokenizer_config.json",
            "special_tokens_map": out / "special_tokens_map.json",
            "index": index_path,
            "shards": out / "shards",
            "quarantine": q_path,
        },
        counters=counters,
        metrics=metrics,
        extra=extra,
    )
