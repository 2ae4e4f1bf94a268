"""Byte-level BPE tokenizer: train one on the curated corpus, or load one from a file, a directory or the Hub.

API (other stages rely on it):

    SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")   # ids 0, 1, 2 when trained here (as SmolLM)
    train_tokenizer(texts, vocab_size=49152, min_frequency=2) -> tokenizers.Tokenizer
    load_tokenizer(path_or_hub_name) -> tokenizers.Tokenizer     # tokenizer.json, a model dir, or a Hub repo id
    eot_id(tok, token="<|endoftext|>") -> int                    # the document separator used in shards
    bytes_per_token(tok, texts) -> float                         # compression: UTF-8 bytes / tokens
    save_hf_tokenizer_files(tok, dir, ...)                        # tokenizer.json + tokenizer_config.json +
                                                                  # special_tokens_map.json, for transformers

Byte-level means every string round-trips: decode(encode(x)) == x for any Unicode text, with no unknown token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ledgerlm import hub
from ledgerlm.io import atomic_write_json, atomic_write_text

EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with GPT-2-style pre-tokenisation (split on words, digits, spaces)."""
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False keeps decode(encode(x)) == x exactly (a prefix space would be added to every text).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 49152, min_frequency: int = 2, show_progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE on `texts`. Special tokens come first so they get ids 0, 1, 2.

    Deterministic: the same texts in the same order give the same tokenizer.json.
    """
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # Seed with all 256 bytes so text unseen in the sample (other scripts, emoji) still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, f"special token {s} got id {tok.token_to_id(s)}, expected {i}"
    return tok


def max_learnable_vocab(texts: Iterable[str], enough: int) -> int:
    """An upper bound on the vocabulary BPE can learn from `texts`: the bytes and special tokens, plus len - 1 merges
    per distinct pre-tokenised word (merges never cross word boundaries). Stops counting once the bound reaches
    `enough`, so on real text it costs a few kilobytes of pre-tokenisation."""
    split = new_tokenizer().pre_tokenizer.pre_tokenize_str
    bound, seen = MIN_VOCAB, set()
    for text in texts:
        for word, _ in split(text):
            if word not in seen:
                seen.add(word)
                bound += len(word) - 1  # byte-level: one character per byte
        if bound >= enough:
            break
    return bound


def load_tokenizer(path_or_hub_name: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a tokenizer.json file, a directory containing one, or a Hub repo id."""
    p = Path(path_or_hub_name)
    if p.is_dir():
        p = p / "tokenizer.json"
        if not p.is_file():
            raise FileNotFoundError(f"{path_or_hub_name}: directory has no tokenizer.json")
    if p.is_file():
        try:
            return Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{p}: not a valid tokenizer.json ({e})") from None
    name = str(path_or_hub_name)
    if name.endswith(".json") or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"tokenizer file not found: {name}")
    # A Hub repo id such as "HuggingFaceTB/SmolLM-135M" (needs network, or the local HF cache), or its copy in the
    # Hub mirror when one is in use (ledgerlm/hub.py)
    local = hub.model_dir(name)
    if local is not None:
        return load_tokenizer(local)
    return Tokenizer.from_pretrained(name)


def eot_id(tok: Tokenizer, token: str = EOT) -> int:
    """Id of the end-of-text token used between documents; a tokenizer without it cannot be used for shards."""
    i = tok.token_to_id(token)
    if i is None:
        raise ValueError(f"tokenizer has no {token!r} token; set tokenize.eot_token to its end-of-text token")
    return i


def bytes_per_token(tok: Tokenizer, texts: Iterable[str]) -> float:
    """UTF-8 bytes per token over `texts` (higher = better compression)."""
    texts = list(texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(e.ids) for e in encode_texts(tok, texts))
    return n_bytes / max(n_tokens, 1)


def encode_texts(tok: Tokenizer, texts: list[str]):
    """Encode raw documents: special-token strings inside the text are treated as plain text, not as specials.

    A web page that literally contains "<|endoftext|>" must not inject a document separator into the shards.
    """
    prev = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        return tok.encode_batch_fast(texts, add_special_tokens=False)
    finally:
        tok.encode_special_tokens = prev


def save_hf_tokenizer_files(
    tok: Tokenizer,
    out_dir: str | os.PathLike,
    model_max_length: int = 2048,
    eos_token: str = EOT,
    chat_template: str | None = None,
) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json so AutoTokenizer loads `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tokenizer.json", tok.to_str())
    specials = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None]
    bos = EOT if tok.token_to_id(EOT) is not None else eos_token
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "bos_token": bos,
        "eos_token": eos_token,
        "unk_token": bos,
        "pad_token": bos,
        "additional_special_tokens": [t for t in specials if t not in (bos, eos_token)],
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special_map["additional_special_tokens"] = config["additional_special_tokens"]
    atomic_write_json(out / "tokenizer_config.json", config)
    atomic_write_json(out / "special_tokens_map.json", special_map)
    return [out / "tokenizer.json", out / "tokenizer_config.json", out / "special_tokens_map.json"]


def describe(tok: Tokenizer) -> dict:
    """Small summary for the ledger."""
    return {
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {s: tok.token_to_id(s) for s in SPECIAL_TOKENS if tok.token_to_id(s) is not None},
        "model": json.loads(tok.to_str())["model"]["type"],
    }
