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
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import xxhash

from ledgerlm.config import ConfigError
from ledgerlm.data import curate_plan, documents
from ledgerlm.data import shards as sh
from ledgerlm.data.tokenize_report import SECTION as REPORT
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
from ledgerlm.io import atomic_write_json, has_content, write_jsonl
from ledgerlm.stage import StageResult, StageSpec


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
    long_doc_chars: int = 4_000_000  # longer documents are encoded in pieces (bounded memory, same tokens)
    input: list[str] = field(default_factory=list)  # explicit input files/dirs; empty = <run>/curate/kept
    text_field: str = "text"  # the JSON field holding the text
    source_field: str = "source"  # records without it take default_source, else their file name
    default_source: str = ""  # the source of records without `source_field` ("" = their file name)
    eot_token: str = EOT  # document separator (must exist in a loaded tokenizer)
    model_max_length: int = 2048  # written into tokenizer_config.json

    def validate(self) -> None:
        if self.tokenizer == "train" and self.vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB}, got {self.vocab_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for k in ("sample_bytes", "shard_tokens", "batch_bytes", "long_doc_chars"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be > 0, got {getattr(self, k)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


STATE = ".progress.json"  # completed shards of a run in progress (see shards.write_shards)


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


def sample_texts(files: list[Path], cfg: Config, seed: int, quarantine=lambda _q: None) -> list[str]:
    """A seeded hash-sample of about cfg.sample_bytes of train-split text (val documents are never sampled)."""
    rate = min(1.0, cfg.sample_bytes / max(1, _estimated_text_bytes(files)))
    texts, size = [], 0
    docs = documents.iter_documents(files, quarantine, cfg.text_field, cfg.source_field, cfg.default_source)
    for d in docs:
        if documents.split_of(d.key, seed, cfg.val_fraction) == "val":
            continue
        if xxhash.xxh64_intdigest(d.key.encode("utf-8", "surrogatepass"), seed=seed + 1) / 2**64 >= rate:
            continue
        texts.append(d.text)
        size += len(d.text)
        if size >= cfg.sample_bytes:
            break
    return texts


def check_inputs(cfg: Config, ctx) -> list[Path]:
    """Before any compute: the input files, each with a known suffix; not all of them empty. Mistakes are one
    ConfigError line (exit 2) naming the path."""
    try:
        files = documents.expand_inputs(_input_paths(cfg, ctx))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError("tokenize.input", str(e)) from None
    if not any(has_content(f) for f in files):
        what = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
        raise ConfigError("tokenize.input", f"input is empty: {what}")
    return files


def _no_documents(files: list[Path], quarantined: list[dict], q_path: Path) -> None:
    write_jsonl(q_path, quarantined)
    raise ConfigError(
        "tokenize.input",
        f"no valid (train) documents in {len(files)} input file(s) ({files[0]}, ...): "
        f"{len(quarantined)} records quarantined -> {q_path}",
    )


def run(cfg: Config, ctx) -> StageResult:
    out = ctx.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = check_inputs(cfg, ctx)
    ctx.log.info("tokenize: %d input files", len(files))

    # Progress of a killed run (same config and inputs): its tokenizer and completed shards are kept.
    state_path = out / STATE
    resumable = getattr(ctx, "resuming", False) and state_path.is_file() and (out / "tokenizer.json").is_file()
    state = json.loads(state_path.read_text()) if resumable else None
    t0, c0 = time.time(), time.process_time()  # wall, and CPU seconds of all threads
    tok, tok_info = _tokenizer(cfg, ctx, files, state)
    t_tok, c_tok = time.time() - t0, time.process_time() - c0
    eot = eot_id(tok, cfg.eot_token)
    if state is None:
        save_hf_tokenizer_files(tok, out, model_max_length=cfg.model_max_length)
        atomic_write_json(state_path, {"dirs": {}, "writers": [], "progress": {"tokenizer": tok_info}})
    ctx.log.info("tokenizer: vocab %d, eot id %d (%.1fs)", tok.get_vocab_size(), eot, t_tok)

    quarantined: list[dict] = []
    docs = documents.iter_documents(files, quarantined.append, cfg.text_field, cfg.source_field, cfg.default_source)
    items = ((d.source, documents.split_of(d.key, ctx.seed, cfg.val_fraction), d.text) for d in docs)
    t1, c1 = time.time(), time.process_time()
    index = sh.write_shards(
        items,
        tok,
        out,
        eot,
        shard_tokens=cfg.shard_tokens,
        workers=cfg.workers,
        batch_bytes=cfg.batch_bytes,
        progress=lambda it: ctx.progress(it, desc="encode + write shards", unit="batch"),
        long_chars=cfg.long_doc_chars,
        state_path=state_path,
    )
    t_shards, c_shards = time.time() - t1, time.process_time() - c1
    q_path = out / "quarantine.jsonl"
    write_jsonl(q_path, quarantined)
    if not index["shards"]:
        _no_documents(files, quarantined, q_path)

    _describe_index(index, ctx.seed, cfg.val_fraction)
    index_path = sh.write_index(out, index)
    state_path.unlink(missing_ok=True)  # index.json is the commit point; the progress record is no longer needed
    if quarantined:
        ctx.log.warning("quarantined %d malformed records -> %s", len(quarantined), q_path)
    vocab = tok.get_vocab_size()
    _warn_quietly_bad(cfg, ctx, index, vocab, tok_info)

    counters = _counters(index, quarantined, files)
    metrics = {
        "bytes_per_token": index["bytes_per_token"],
        "bytes_per_token_on": index["bytes_per_token_on"],
        "bytes_per_token_per_source": {s: _split_bytes_per_token(index, "val", s) for s in index["sources"]},
        "vocab_size": vocab,
        **_speed(index, t_tok, c_tok, t_shards, c_shards),
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
        summary=_summary(cfg, vocab, counters, index, len(quarantined)),
    )


def _tokenizer(cfg: Config, ctx, files: list[Path], state: dict | None):
    """The killed run's tokenizer (state: its progress record), a newly trained one, or the one named by
    `cfg.tokenizer` -> (tokenizer, what the record says about it)."""
    out = ctx.out_dir
    if state is not None:
        tok = load_tokenizer(out / "tokenizer.json")
        done = sum(len(w["entries"]) for w in state["writers"])
        ctx.log.info("resuming: tokenizer and %d completed shards kept from the killed run", done)
        return tok, state["progress"]["tokenizer"]
    if cfg.tokenizer == "train":
        bad: list[dict] = []
        sample = sample_texts(files, cfg, ctx.seed, bad.append)
        if not sample:  # the whole input was read: nothing valid in the train split
            _no_documents(files, bad, out / "quarantine.jsonl")
        if (cap := max_learnable_vocab(sample, cfg.vocab_size)) < cfg.vocab_size:
            raise ConfigError(
                "tokenize.vocab_size",
                f"{cfg.vocab_size:,} tokens asked, but this data can give at most {cap:,} (its sample has too few "
                "distinct words); lower vocab_size or tokenize more data",
            )
        tok = train_tokenizer(sample, cfg.vocab_size, cfg.min_frequency, show_progress=ctx.on_terminal)
        return tok, {"trained": True, "sample_docs": len(sample), "sample_chars": sum(map(len, sample))}
    try:
        tok = load_tokenizer(cfg.tokenizer)
    except (FileNotFoundError, ValueError) as e:  # a wrong path or a file that is no tokenizer: one line
        raise ConfigError("tokenize.tokenizer", str(e)) from None
    return tok, {"trained": False, "loaded_from": cfg.tokenizer}


def _split_bytes_per_token(index: dict, split: str, source: str | None = None) -> float | None:
    """Compression: the split's bytes over its text tokens (separators excluded), of one source or all of them."""
    rows = [v[split] for s, v in index["sources"].items() if source in (None, s)]
    n_bytes = sum(r["n_bytes"] for r in rows)
    n_tok = sum(r["n_tokens"] - r["n_docs"] for r in rows)
    return round(n_bytes / n_tok, 4) if n_tok else None


def _describe_index(index: dict, seed: int, val_fraction: float) -> None:
    """Add to the shards' index: the tokenizer, the split, and bytes per token on held-out text (on train text when
    nothing is held out)."""
    held_out = _split_bytes_per_token(index, "val")
    index.update(
        tokenizer="tokenizer.json",
        bytes_per_token=held_out if held_out is not None else _split_bytes_per_token(index, "train"),
        bytes_per_token_on="val" if held_out is not None else "train (no val documents)",
        seed=seed,
        val_fraction=val_fraction,
    )


def _warn_quietly_bad(cfg: Config, ctx, index: dict, vocab: int, tok_info: dict) -> None:
    """A source with no held-out documents; a trained vocabulary smaller than asked."""
    for s, v in index["sources"].items():
        if cfg.val_fraction > 0 and v["val"]["n_docs"] == 0:
            ctx.warn("no_val_documents", f"source {s} has no held-out documents (only {v['train']['n_docs']} in all)")
    if cfg.tokenizer == "train" and vocab < cfg.vocab_size:
        ctx.warn(
            "vocab_smaller_than_asked",
            f"asked for {cfg.vocab_size:,} vocabulary entries, the text supported {vocab:,} "
            f"(BPE ran out of pairs seen {cfg.min_frequency}+ times in {tok_info['sample_chars']:,} characters)",
        )


def _counters(index: dict, quarantined: list[dict], files: list[Path]) -> dict:
    return {
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


def _speed(index: dict, t_tok: float, c_tok: float, t_shards: float, c_shards: float) -> dict:
    """Wall and CPU seconds (all threads) of the tokenizer (sampling + training) and of the shard pass (read,
    encode, write), and the shard pass's text throughput."""
    total_bytes = sum(v[sp]["n_bytes"] for v in index["sources"].values() for sp in ("train", "val"))
    return {
        "tokenizer_seconds": round(t_tok, 2),
        "shard_seconds": round(t_shards, 2),
        "tokenizer_cpu_seconds": round(c_tok, 2),
        "shard_cpu_seconds": round(c_shards, 2),
        "shard_mb_per_cpu_s": round(total_bytes / 1e6 / max(c_shards, 1e-9), 2),
        "shard_mb_per_s": round(total_bytes / 1e6 / max(t_shards, 1e-9), 2),
    }


def _summary(cfg: Config, vocab: int, counters: dict, index: dict, n_quarantined: int) -> list[str]:
    split_tokens = {sp: sum(v[sp] for v in counters["tokens"].values()) for sp in ("train", "val")}
    asked = f" (asked {cfg.vocab_size:,})" if cfg.tokenizer == "train" and vocab != cfg.vocab_size else ""
    return [
        f"vocabulary {vocab:,}{asked}; {split_tokens['train']:,} train + {split_tokens['val']:,} held-out tokens "
        f"from {counters['documents']:,} documents in {counters['shards']} shard(s)",
        f"{index['bytes_per_token']:.2f} bytes per token on {index['bytes_per_token_on']} text"
        + (f"; {n_quarantined:,} malformed records quarantined" if n_quarantined else ""),
    ]


SPEC = StageSpec(
    name="tokenize",
    config=Config,
    run=run,
    help="train or load a tokenizer and write token shards",
    inputs=inputs,
    plan=partial(curate_plan.tokenize, describe=plan),
    add_cli_args=add_cli_args,
    cli_overrides=cli_overrides,
    report=REPORT,
)
