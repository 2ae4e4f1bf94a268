"""Preference pairs (prompt, chosen, rejected) for the dpo and reward stages, plus the little machinery both share.

Sources:
- "arith" (or "arith:final" / "arith:arith" for one kind of corruption): built from the built-in task (`ledgerlm.tasks.arith`): chosen = the correct worked solution, rejected = the
  same solution with an arithmetic slip or a wrong final line. Works offline, on CPU, with a verifiable ground truth.
- a JSONL file (plain/.gz/.zst): rows {"prompt", "chosen", "rejected"} (strings or message lists), or Anthropic HH
  rows {"chosen", "rejected"} that are whole "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts: the shared prefix up to
  the last "Assistant:" both share becomes the prompt, the rest the two responses.
- a Hugging Face dataset name (`hf:Anthropic/hh-rlhf` or `org/name`), same row formats.

Rows that cannot be used are counted by reason and quarantined with file:line, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ledgerlm.components.chat import (
    ChatFormatError,
    encode_text,
    hf_rows,
    parse_prompt,
    parsed_rows,
    render_prompt,
    special_ids,
    validate,
)
from ledgerlm.components.stats import wilson_ci
from ledgerlm.io import atomic_write_json, iter_jsonl_rows
from ledgerlm.ledger import WARN_P
from ledgerlm.model.loss import DEFAULT_CHUNK
from ledgerlm.post.common import IGNORE
from ledgerlm.tasks import arith

_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass
class Pair:
    prompt: list[dict]  # messages before the compared responses (ends with a user turn)
    chosen: str
    rejected: str
    where: str = ""


@dataclass
class Preferences:
    source: str
    pairs: list[Pair] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    quarantined: list[dict] = field(default_factory=list)


class PreferenceFormatError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"field '{field}': {message}")


def check_pair_config(cfg) -> None:
    """Checks shared by the pairwise stages (dpo, reward): batch shape, held-out set, lengths, training length."""
    if (
        cfg.batch_size < 1
        or cfg.micro_batch_size < 0
        or (cfg.micro_batch_size and cfg.batch_size % cfg.micro_batch_size)
    ):
        raise ValueError("batch_size must be >= 1 and a multiple of micro_batch_size")
    if cfg.n_heldout < 1:
        raise ValueError("n_heldout must be >= 1 (held-out accuracy is the point of the stage)")
    if cfg.max_prompt_len >= cfg.max_len:
        raise ValueError(f"max_prompt_len={cfg.max_prompt_len} must be < max_len={cfg.max_len}")
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise ValueError("set epochs > 0 or max_steps > 0")


def write_heldout(path: Path, correct: list[bool], ties: int = 0, **extra) -> dict:
    """Held-out preference accuracy with its exact binomial test against chance and Wilson 95% interval, written to
    `path` (heldout.json) with the per-pair results; returns the ledger metrics.

    `correct` marks the pairs ranked right (chosen strictly above rejected); `ties` of the others are exact ties,
    which count half in the accuracy (a coin flip) and drop out of the binomial test, as in a sign test: a model
    that ties every pair is at chance (accuracy 0.5, p = 1), not at 0."""
    n, k = len(correct), sum(correct)
    if not 0 <= ties <= n - k:
        raise ValueError(f"ties must be between 0 and {n - k} (the pairs not ranked right), got {ties}")
    acc = (k + ties / 2) / n if n else float("nan")
    p, (lo, hi) = binomial_p_greater(k, n - ties), wilson_ci(k + ties / 2, n)
    atomic_write_json(
        path,
        {
            "n": n,
            "correct": k,
            "ties": ties,
            "accuracy": acc,
            "p_binomial_vs_0.5": p,
            "wilson95": [lo, hi],
            **extra,
            "per_pair_correct": correct,
        },
    )
    return {"heldout_accuracy": acc, "heldout_p_binomial": p, "heldout_wilson95": [lo, hi]}


def heldout_summary(
    ctx,
    stage: str,
    heldout: dict,
    n: int,
    start: tuple[str, float] | None = None,
    what: str = "held-out accuracy",
    vs_chance: bool = True,
) -> list[str]:
    """The stage's summary line for its held-out preference accuracy (from write_heldout); warns, through the
    stage context, when the accuracy is no better than chance -- if `vs_chance` (a stage that starts from chance,
    like a fresh reward head; DPO's implicit reward starts from ties and is judged by its effect instead)."""
    acc, p, (lo, hi) = heldout["heldout_accuracy"], heldout["heldout_p_binomial"], heldout["heldout_wilson95"]
    k = round(acc * n, 1)
    line = f"{what} {acc:.1%} ({k:g}/{n} pairs, 95% CI {lo:.1%}-{hi:.1%}), one-sided binomial p = {p:.2g}"
    if start is not None:
        line += f"; {start[0]} {start[1]:.1%}"
    if vs_chance and not p < WARN_P:
        ctx.warn(
            "not_better_than_chance",
            f"{stage} {what} {acc:.1%} ({k:g}/{n}) is not better than chance "
            f"(one-sided binomial p = {p:.2g} >= {WARN_P})",
        )
    return [line]


def split_transcripts(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """HH-RLHF: two full transcripts that differ only in the last assistant turn -> (prompt messages, chosen, rejected)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    common = chosen[:n]
    # cut back to the end of the last "\n\nAssistant:" marker inside the common prefix
    cut = common.rfind("\n\nAssistant:")
    if cut < 0:
        raise PreferenceFormatError("chosen", "transcripts share no '\\n\\nAssistant:' turn to split the prompt at")
    cut += len("\n\nAssistant:")
    prompt_text, c, r = chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()
    if _TURN.search(c) or _TURN.search(r):
        # the responses themselves contain further turns: not a single-response comparison
        raise PreferenceFormatError("chosen", "responses continue with further Human/Assistant turns after the split")
    msgs = parse_prompt(prompt_text)
    if not msgs or msgs[-1]["role"] != "user":
        raise PreferenceFormatError("chosen", "prompt does not end with a Human turn")
    return msgs, c, r


def _response_text(value, field: str) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # message list: the final assistant turn
        last = value[-1]
        if last.get("role", last.get("from")) in ("assistant", "gpt"):
            return str(last.get("content", last.get("value", ""))).strip()
    raise PreferenceFormatError(field, "must be a string or a message list ending with an assistant turn")


def row_to_pair(row) -> tuple[list[dict], str, str]:
    if not isinstance(row, dict):
        raise PreferenceFormatError("<row>", f"must be a JSON object, got {type(row).__name__}")
    for k in ("chosen", "rejected"):
        if k not in row:
            raise PreferenceFormatError(k, "missing")
    if "prompt" in row:
        p = row["prompt"]
        if isinstance(p, str):
            msgs = parse_prompt(p)
        elif isinstance(p, list):
            try:
                msgs = validate(p, need_assistant=False)
            except ChatFormatError as e:
                raise PreferenceFormatError("prompt", str(e)) from None
        else:
            raise PreferenceFormatError("prompt", "must be a string or a message list")
        c, r = _response_text(row["chosen"], "chosen"), _response_text(row["rejected"], "rejected")
    elif isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
        msgs, c, r = split_transcripts(row["chosen"], row["rejected"])
    else:
        raise PreferenceFormatError("prompt", "missing (and chosen/rejected are not HH transcripts)")
    if not c or not r:
        raise PreferenceFormatError("chosen" if not c else "rejected", "empty response")
    if c == r:
        raise PreferenceFormatError("rejected", "identical to chosen")
    for text, f in ((c, "chosen"), (r, "rejected")):
        if "<|im_start|>" in text or "<|im_end|>" in text:
            raise PreferenceFormatError(f, "contains a chat template token")
    return msgs, c, r


def _rows(source: str, split: str, subset: str | None):
    hf_name = source[3:] if source.startswith("hf:") else None
    local = Path(source).expanduser()
    if hf_name is None and not local.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        hf_name = source
    if hf_name is not None:
        yield from hf_rows(hf_name, split, subset)
        return
    if not local.is_file():
        raise FileNotFoundError(f"preference data not found: {local}")
    yield from iter_jsonl_rows(local)


def load_preferences(
    source: str, *, split: str = "train", subset: str | None = None, limit: int = 0, seed: int = 0
) -> Preferences:
    """Pairs from `source` (see module doc). For "arith", `split` is the task split ("train"/"heldout")."""
    out = Preferences(source=source)
    if source == "arith" or source.startswith("arith:"):
        # "arith" = both corruption kinds; "arith:final" / "arith:arith" = one kind only
        kinds = tuple(source.split(":", 1)[1].split(",")) if ":" in source else arith.CORRUPTIONS
        which = "heldout" if split in ("heldout", "test") else "train"
        for p in arith.preference_pairs(limit or 512, which, seed, kinds=kinds):
            out.pairs.append(Pair([{"role": "user", "content": p["prompt"]}], p["chosen"], p["rejected"], p["key"]))
            out.counters["rows"] += 1
            out.counters["kept"] += 1
            out.counters[f"kind:{p['kind']}"] += 1
        return out
    rows = _rows(source, split, subset)
    good = parsed_rows(
        rows,
        row_to_pair,
        PreferenceFormatError,
        out.counters,
        out.quarantined,
        what="preference pairs",
        source=source,
        limit=limit,
        keep_row=False,  # the quarantine is a hashed output (quarantine.jsonl): where and why, not the row
    )
    out.pairs = [Pair(msgs, c, r, where) for where, (msgs, c, r) in good]
    return out


def train_heldout(prefs: Preferences, heldout: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded shuffle, last `heldout` pairs held out (for sources without their own held-out split)."""
    pairs = list(prefs.pairs)
    random.Random(f"prefsplit|{seed}").shuffle(pairs)
    if heldout >= len(pairs):
        raise ValueError(f"{prefs.source}: heldout={heldout} leaves no training pairs (have {len(pairs)})")
    return pairs[: len(pairs) - heldout], pairs[len(pairs) - heldout :]


def load_split(source: str, n_train: int, n_heldout: int, seed: int, split: str = "train", subset: str | None = None):
    """(train pairs, held-out pairs, counters, quarantined). arith uses its disjoint held-out split; other sources hold
    out a seeded random subset."""
    if source == "arith" or source.startswith("arith:"):
        tr = load_preferences(source, split="train", limit=n_train, seed=seed)
        ho = load_preferences(source, split="heldout", limit=n_heldout, seed=seed)
        return tr.pairs, ho.pairs, tr.counters + ho.counters, []
    # n_train 0 = every pair the source has (less the held-out ones): no limit
    prefs = load_preferences(source, split=split, subset=subset, limit=n_train + n_heldout if n_train else 0, seed=seed)
    tr, ho = train_heldout(prefs, n_heldout, seed)
    return tr, ho, prefs.counters, prefs.quarantined


# ----------------------------------------------------------------------------------------------------------------------
# tokenisation and batching


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]  # response tokens incl. the closing <|im_end|> (unless truncated)
    rejected: list[int]


def encode_pair(pair: Pair, tokenizer, max_len: int, max_prompt_len: int) -> tuple[EncodedPair, bool]:
    """Template-render the prompt and both responses; keep the prompt's last `max_prompt_len` tokens and cut responses
    to fit `max_len`. Returns (encoded, truncated?)."""
    _, end = special_ids(tokenizer)
    prompt = render_prompt(pair.prompt, tokenizer)
    c = encode_text(tokenizer, pair.chosen) + [end]
    r = encode_text(tokenizer, pair.rejected) + [end]
    truncated = False
    if len(prompt) + max(len(c), len(r)) > max_len:
        truncated = True
        if len(prompt) > max_prompt_len:
            prompt = prompt[-max_prompt_len:]
        room = max(1, max_len - len(prompt))
        c, r = c[:room], r[:room]
    return EncodedPair(prompt, c, r), truncated


@dataclass
class EncodedSplit:
    train: list[EncodedPair]
    heldout: list[EncodedPair]
    counters: dict  # pairs_train, pairs_heldout, truncated_pairs and the source's counters as data:<name>
    quarantined: list[dict]  # rows not used, with why (the stage writes them to quarantine.jsonl)


def encode_split(cfg, seed: int, tokenizer, max_seq_len: int) -> EncodedSplit:
    """The train and held-out pairs of a preference stage's config (dpo, reward: data, split, subset, n_train,
    n_heldout, max_len, max_prompt_len), template-rendered to fit min(max_len, the model's max_seq_len)."""
    train, held, counters, quarantined = load_split(
        cfg.data, cfg.n_train, cfg.n_heldout, seed, cfg.split, cfg.subset or None
    )
    encoded, truncated = [], 0
    for pair in train + held:
        e, t = encode_pair(pair, tokenizer, min(cfg.max_len, max_seq_len), cfg.max_prompt_len)
        encoded.append(e)
        truncated += t
    n = len(train)
    counts = {"pairs_train": n, "pairs_heldout": len(held), "truncated_pairs": truncated}
    counts.update({f"data:{k}": v for k, v in dict(counters).items()})
    return EncodedSplit(encoded[:n], encoded[n:], counts, quarantined)


def pad_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int = 0):
    """Right-padded prompt+response ids [B, T] and a response mask [B, T] (1 on response tokens)."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        mask[i, len(p) : len(p) + len(r)] = 1.0
    return ids, mask


def token_logps(
    model,
    ids: torch.Tensor,
    keep: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1 -> [B, T-1] under `model` (logits / temperature), 0 where keep[:, 1:] == 0.
    The output head runs over chunks of `chunk_size` tokens (ledgerlm.model.loss), never the [B, T, V] logits
    (0 = full logits)."""
    tgt = ids[:, 1:] if keep is None else ids[:, 1:].masked_fill(keep[:, 1:] == 0, IGNORE)
    tgt = torch.cat((tgt, torch.full_like(ids[:, :1], IGNORE)), dim=1)  # the last position predicts nothing
    nll = model(
        ids, targets=tgt, ignore_index=IGNORE, reduction="none", loss_chunk_size=chunk_size, temperature=temperature
    )
    return -nll[:, :-1]


def sequence_logps(
    model, ids: torch.Tensor, mask: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs [B], response lengths [B]) under `model`. The output head runs over chunks
    of `chunk_size` tokens (ledgerlm.model.loss), so the [B, T, V] logits never exist (0 = full logits)."""
    lp = token_logps(model, ids, keep=mask, chunk_size=chunk_size)  # prompt and padding targets are ignored
    return lp.sum(-1), mask[:, 1:].float().sum(-1)


def data_hash(encoded: list[EncodedPair]) -> str:
    h = hashlib.sha256()
    for e in encoded:
        h.update(json.dumps([e.prompt, e.chosen, e.rejected], separators=(",", ":")).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# significance (shared by dpo / reward)


def binomial_p_greater(successes: int, n: int, p0: float = 0.5) -> float:
    """One-sided exact binomial test P(X >= successes | n, p0): is an accuracy above chance?"""
    from scipy.stats import binomtest

    return float(binomtest(successes, n, p0, alternative="greater").pvalue) if n else 1.0
