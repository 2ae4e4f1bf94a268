"""Supervised fine-tuning (the `sft` stage): chat-formatted conversations, loss on assistant tokens only, several
conversations packed into one window with document masking so no token attends across a conversation boundary.

Data flow:  conversations -> render (ids, assistant mask) -> Example (inputs, shifted targets; IGNORE off-assistant)
            -> best-fit packing into rows of `seq_len` -> batches [B, T] with doc_ids (block-diagonal attention,
            positions restarting per conversation) -> sum of NLL / number of assistant tokens in the optimizer batch.

Because each conversation keeps its own positions and sees only itself, a packed batch gives exactly the per-token
losses of the same conversations run one per row (tested); the loss is a mean over assistant *tokens* of the whole
optimizer batch, so packing and gradient accumulation do not change how conversations are weighted.

Reads `RUN/<base>/model/` (default `pretrain`), writes `RUN/sft/model/` (HF format), `metrics.jsonl` (step, loss, lr,
held-out assistant loss), `data.json` (counts, split, packing efficiency), `quarantine.jsonl` (rows not used, why) and
`ckpt/` (atomic training checkpoints: a killed run re-run with the same config resumes from the newest one and ends
bitwise identical on CPU -- weights, optimizer, row order, epoch, sampler and global RNG are all saved).
"""

from __future__ import annotations

import bisect
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import xxhash

from ledgerlm.components import chat
from ledgerlm.components import checkpoint as ckpt_lib
from ledgerlm.components.distributed import DistInfo, load_full_state_dicts
from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.components.stats import effect
from ledgerlm.config import ConfigError
from ledgerlm.device import autocast
from ledgerlm.io import atomic_write_json, write_jsonl
from ledgerlm.model.loss import DEFAULT_CHUNK
from ledgerlm.post.common import (
    IGNORE,
    LoopSchedule,
    Shuffled,
    StepLog,
    effect_line,
    effect_metrics,
    length_text,
    load_start,
    optimizer_step,
    save_model_dir,
    starting_dir,
    trained_outputs,
    warn_if_worse,
)
from ledgerlm.post.sft_report import SECTION as REPORT
from ledgerlm.post.start_checks import start_checks
from ledgerlm.stage import StageResult, StageSpec


@dataclass
class Config:
    base: str = "pretrain"  # stage name or path of the model to fine-tune
    data: str = ""  # JSONL file (messages | prompt/response | instruction/response) or HF dataset name
    split: str = "train"  # HF split (ignored for files)
    subset: str = ""  # HF config name, if any
    limit: int = 0  # use at most this many conversations (0 = all)
    val_data: str = ""  # separate held-out conversations; empty = carve them out of `data`
    val_fraction: float = 0.05  # share of `data` held out when there is no val_data
    val_max: int = 200  # at most this many held-out conversations
    system_prompt: str = ""  # prepended as a system message when a conversation has none
    seq_len: int = 0  # packing window (0 = the model's max_seq_len)
    pack: bool = True  # pack several conversations into a row (document-masked); false = one per row
    epochs: float = 2.0  # passes over the training rows
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 8  # sequences (packed rows) per optimizer step
    micro_batch_size: int = 0  # rows per forward pass (0 = batch_size); the rest is gradient accumulation
    lr: float = 1e-4  # peak learning rate
    schedule: str = "linear"  # constant | linear | cosine (after warmup)
    warmup_ratio: float = 0.03  # fraction of the steps spent in linear warmup
    min_lr_ratio: float = 0.0  # the schedule ends at this fraction of lr
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    eval_every: int = 0  # steps between held-out evaluations (0 = about 10 per run)
    eval_batch_size: int = 8  # rows per forward pass when scoring held-out conversations
    # Checkpoints to ckpt/ every this many steps (0 = about 10 per run, like eval_every: for a 135M model a save costs
    # a few seconds, so ~10 bounds the overhead while losing at most a tenth of the run to a kill). Neither this nor
    # keep_ckpts changes the training trajectory, so changing them does not block a resume.
    ckpt_every: int = 0
    keep_ckpts: int = 2  # newest checkpoints kept (0 = all)
    loss_chunk_size: int = DEFAULT_CHUNK  # output head + loss over chunks of this many tokens (0 = full logits)

    def validate(self) -> None:
        if self.schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"schedule must be constant, linear or cosine, got {self.schedule!r}")
        if self.batch_size < 1 or self.micro_batch_size < 0 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1, micro_batch_size >= 0")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size={self.batch_size} is not a multiple of micro_batch_size")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.lr <= 0 or len(self.betas) != 2:
            raise ValueError("lr must be > 0 and betas a pair")
        if self.ckpt_every < 0 or self.keep_ckpts < 0:
            raise ValueError("ckpt_every and keep_ckpts must be >= 0")


# test hook: called as _STEP_HOOK(step, model) after each completed optimizer step (tests raise from it to simulate a
# kill); None in normal runs
_STEP_HOOK = None

# config keys that do not change the weights or the training curve: a checkpoint written under other values resumes
_NOT_TRAJECTORY = ("eval_every", "eval_batch_size", "ckpt_every", "keep_ckpts")


# ----------------------------------------------------------------------------------------------------------------------
# Examples, packing, batches (pure functions on token ids)


@dataclass
class Example:
    """One conversation ready for next-token training: inputs = ids[:-1], targets = ids[1:] (IGNORE if not trained).
    int32 arrays: a few hundred thousand conversations as Python int lists would take tens of GB."""

    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self) -> None:
        self.inputs = np.asarray(self.inputs, dtype=np.int32)
        self.targets = np.asarray(self.targets, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def n_trained(self) -> int:
        return int((self.targets != IGNORE).sum())


def make_example(ids: list[int], mask: list[int], max_len: int) -> Example | None:
    """Shift by one and truncate to `max_len` positions; None when no assistant token survives truncation."""
    ids = np.asarray(ids[: max_len + 1], dtype=np.int32)
    mask = np.asarray(mask[: max_len + 1], dtype=bool)
    ex = Example(ids[:-1], np.where(mask[1:], ids[1:], IGNORE))
    return ex if ex.n_trained else None


def pack(examples: list[Example], seq_len: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: rows of example indices whose lengths sum to <= seq_len (order deterministic).

    Conversations are never split across rows (a split conversation would train on an answer without its question).
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, row index)
    for i in order:
        n = len(examples[i])
        if n > seq_len:
            raise ValueError(f"example {i} has {n} tokens > seq_len={seq_len}; truncate first")
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            space, r = free.pop(j)
        else:
            space, r = seq_len, len(rows)
            rows.append([])
        rows[r].append(i)
        if space - n > 0:
            bisect.insort(free, (space - n, r))
    return rows


def collate(examples: list[Example], rows: list[list[int]], pad_id: int = 0, doc_mask: bool = True) -> dict:
    """Rows of example indices -> tensors input_ids, targets, doc_ids, position_ids [B, T] (T = longest row).

    Padding gets its own doc id (attends only to itself) and IGNORE targets. With doc_mask=False (one example per row)
    doc_ids is None, i.e. a plain causal batch.
    """
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    b = len(rows)
    inp = torch.full((b, width), pad_id, dtype=torch.long)
    tgt = torch.full((b, width), IGNORE, dtype=torch.long)
    doc = torch.zeros((b, width), dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            ex = examples[i]
            n = len(ex)
            inp[r, at : at + n] = torch.from_numpy(ex.inputs)
            tgt[r, at : at + n] = torch.from_numpy(ex.targets)
            doc[r, at : at + n] = d
            pos[r, at : at + n] = torch.arange(n)
            at += n
        doc[r, at:] = len(row)
        pos[r, at:] = torch.arange(width - at)
    if not doc_mask:
        if any(len(row) > 1 for row in rows):
            raise ValueError("doc_mask=False needs one example per row")
        return {"input_ids": inp, "targets": tgt, "doc_ids": None, "position_ids": None}
    return {"input_ids": inp, "targets": tgt, "doc_ids": doc, "position_ids": pos}


def nll_sum(model, batch: dict, device, chunk_size: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, int]:
    """(sum of NLL over trained targets, number of trained targets) for one batch; the head and loss run over chunks
    of `chunk_size` tokens (ledgerlm.model.loss; 0 = full logits)."""
    tgt = batch["targets"].to(device)
    kw = {k: batch[k].to(device) for k in ("doc_ids", "position_ids") if batch.get(k) is not None}
    with autocast(device):
        loss = model(
            batch["input_ids"].to(device),
            targets=tgt,
            ignore_index=IGNORE,
            reduction="sum",
            loss_chunk_size=chunk_size,
            **kw,
        )
    return loss, int((tgt != IGNORE).sum())


@torch.no_grad()
def assistant_loss(model, examples: list[Example], seq_len: int, batch_size: int, device, packed: bool = True) -> float:
    """Mean NLL per assistant token over `examples` (packed with document masking, or one example per row)."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    rows = pack(examples, seq_len) if packed else [[i] for i in range(len(examples))]
    total, count = 0.0, 0
    for k in range(0, len(rows), batch_size):
        s, n = nll_sum(model, collate(examples, rows[k : k + batch_size], doc_mask=packed), device)
        total, count = total + float(s), count + n
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def per_example_loss(model, examples: list[Example], seq_len: int, batch_size: int, device) -> list[float]:
    """Each example's mean NLL per assistant token (packed with document masking, so the same numbers as scoring each
    conversation alone): the per-item scores a paired before/after test of SFT needs."""
    if not examples:
        return []
    was_training = model.training
    model.eval()
    rows = pack(examples, seq_len)
    out = [float("nan")] * len(examples)
    for k in range(0, len(rows), batch_size):
        part = rows[k : k + batch_size]
        b = collate(examples, part)
        kw = {key: b[key].to(device) for key in ("doc_ids", "position_ids")}
        tgt = b["targets"].to(device)
        with autocast(device):
            nll = model(b["input_ids"].to(device), targets=tgt, ignore_index=IGNORE, reduction="none", **kw)
        nll = nll.float().cpu()
        for r, row in enumerate(part):
            at = 0
            for i in row:
                n = len(examples[i])
                out[i] = float(nll[r, at : at + n].sum()) / examples[i].n_trained
                at += n
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Data: conversations -> train / held-out examples


def conversation_key(messages: list[dict]) -> int:
    return xxhash.xxh64_intdigest(chat.render_text(messages).encode("utf-8"))


def split_conversations(convs: list[list[dict]], val_fraction: float, val_max: int):
    """Deterministic held-out split by content hash: independent of seed, order and `limit` of the rest, so `sft`,
    `interpolate` and `sweep` cells all score the same held-out conversations."""
    keyed = sorted(convs, key=conversation_key)
    n_val = min(val_max, math.ceil(val_fraction * len(keyed))) if val_fraction > 0 else 0
    val = {conversation_key(c) for c in keyed[:n_val]}
    return [c for c in convs if conversation_key(c) not in val], keyed[:n_val]


def _with_system(msgs: list[dict], system_prompt: str) -> list[dict]:
    if system_prompt and msgs[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *msgs]
    return msgs


def to_examples(convs, tokenizer, seq_len: int, system_prompt: str = "") -> tuple[list[Example], dict]:
    examples, truncated, dropped = [], 0, 0
    for k in range(0, len(convs), 4096):  # chunks: batched tokenization without holding every id list at once
        chunk = [_with_system(m, system_prompt) for m in convs[k : k + 4096]]
        for ids, mask in chat.render_batch(chunk, tokenizer):
            if len(ids) > seq_len + 1:
                truncated += 1
            ex = make_example(ids, mask, seq_len)
            if ex is None:
                dropped += 1
            else:
                examples.append(ex)
    return examples, {"truncated": truncated, "dropped_no_assistant_after_truncation": dropped}


def load_data(cfg: Config, tokenizer, seq_len: int, log=None):
    """(train examples, held-out examples, summary dict, quarantined rows) for this config."""
    src = chat.load_conversations(cfg.data, split=cfg.split, subset=cfg.subset or None, limit=cfg.limit)
    quarantined = list(src.quarantined)
    counters = {"source": dict(src.counters)}
    if cfg.val_data:
        vsrc = chat.load_conversations(cfg.val_data, split="validation" if cfg.split == "train" else cfg.split)
        quarantined += vsrc.quarantined
        counters["val_source"] = dict(vsrc.counters)
        train_c, val_c = src.messages, vsrc.messages
    else:
        train_c, val_c = split_conversations(src.messages, cfg.val_fraction, cfg.val_max)
    train, tstats = to_examples(train_c, tokenizer, seq_len, cfg.system_prompt)
    val, vstats = to_examples(val_c, tokenizer, seq_len, cfg.system_prompt)
    if not train:
        raise ValueError(f"sft: no training examples left from {cfg.data} after the held-out split and truncation")
    summary = {
        **counters,
        "train_conversations": len(train),
        "val_conversations": len(val),
        "train_tokens": sum(len(e) for e in train),
        "train_assistant_tokens": sum(e.n_trained for e in train),
        "val_assistant_tokens": sum(e.n_trained for e in val),
        "train": tstats,
        "val": vstats,
    }
    if log:
        log.info("sft data: %s", summary)
    return train, val, summary, quarantined


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


def data_fingerprint(examples: list[Example]) -> str:
    """xxh64 of the training examples' token ids and targets (catches a changed tokenizer or data on resume)."""
    h = xxhash.xxh64()
    for ex in examples:
        h.update(len(ex).to_bytes(4, "little"))
        h.update(ex.inputs.tobytes())
        h.update(ex.targets.tobytes())
    return h.hexdigest()


def trajectory_key(cfg: Config, seed: int, examples: list[Example]) -> dict:
    """What a checkpoint must agree on to be resumed: the config less `_NOT_TRAJECTORY`, the seed and the data."""
    d = {k: v for k, v in asdict(cfg).items() if k not in _NOT_TRAJECTORY}
    d.update(seed=seed, train_data_xxh64=data_fingerprint(examples))
    return json.loads(json.dumps(d, default=str))  # JSON-normalised, as it reads back from state.json


# ----------------------------------------------------------------------------------------------------------------------
# Stage protocol


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    out = {"base_model": starting_dir(SPEC, cfg.base, ctx, "sft.base")}
    for key, src in (("data", cfg.data), ("val_data", cfg.val_data)):
        # local files are hashed; Hub datasets are recorded by name; demo (and demo:arith=F) is built in
        if src and src.split(":")[0] != "demo":
            out[key] = Path(src).expanduser() if chat.is_local(src) else f"hub:{src.removeprefix('hf:')}"
    return out


def plan(cfg: Config, ctx) -> list[str]:
    what = f"{length_text(cfg)}, batch {cfg.batch_size}, lr {cfg.lr:g}"
    return [f"fine-tune {cfg.base} on {cfg.data or '<sft.data unset>'}: {what}"]


@dataclass
class Setup:
    """The starting model and the data of a run, ready to train on."""

    model: torch.nn.Module
    tokenizer: object
    base_dir: Path
    seq_len: int
    train: list[Example]
    val: list[Example]
    rows: list[list[int]]  # packed rows of train example indices (one each without packing)
    summary: dict  # what data.json says: counts, split, truncation, packing efficiency


def setup(cfg: Config, ctx) -> Setup:
    """Load the starting model and the conversations, write quarantine.jsonl, pack the training examples."""
    if not cfg.data:
        raise ConfigError("sft.data", "set the conversations to train on (JSONL path or HF dataset name)")
    base_dir, model, tokenizer = load_start(SPEC, cfg.base, ctx, "sft.base")
    seq_len = cfg.seq_len or model.cfg.max_seq_len
    if seq_len > model.cfg.max_seq_len:
        raise ConfigError("sft.seq_len", f"{seq_len} > the model's max_seq_len {model.cfg.max_seq_len}")
    train, val, summary, quarantined = load_data(cfg, tokenizer, seq_len, ctx.log)
    # default=str: Hub rows may hold values JSON cannot write (dates, bytes); the record is for humans
    write_jsonl(Path(ctx.out_dir) / "quarantine.jsonl", (json.loads(json.dumps(q, default=str)) for q in quarantined))
    rows = pack(train, seq_len) if cfg.pack else [[i] for i in range(len(train))]
    summary["rows"] = len(rows)
    summary["packing_efficiency"] = summary["train_tokens"] / (len(rows) * seq_len) if cfg.pack else None
    return Setup(model, tokenizer, base_dir, seq_len, train, val, rows, summary)


def resume(ctx, model, opt, batches: Shuffled, traj: dict) -> dict | None:
    """Restore the newest checkpoint of a resumed run into the model, optimizer and batch order, and return its state;
    None for a fresh start (whose directory then holds no checkpoint of an earlier or half-written run)."""
    ckpt_dir = Path(ctx.out_dir) / "ckpt"
    latest = ckpt_lib.latest_checkpoint(ckpt_dir) if getattr(ctx, "resuming", False) else None
    if latest is None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return None
    m_sd, o_sd, st, extra = ckpt_lib.load_checkpoint(latest)  # also restores the global RNG (dropout)
    saved = st.get("trajectory", {})
    differ = sorted(k for k in traj.keys() | saved.keys() if traj.get(k) != saved.get(k))
    if differ:
        what = ", ".join(f"{k} ({saved.get(k)!r} -> {traj.get(k)!r})" for k in differ)
        raise RuntimeError(
            f"{latest}: checkpoint was written with a different sft config: {what}; "
            f"remove {ckpt_dir} to start over, or restore the original config"
        )
    load_full_state_dicts(model, opt, m_sd, o_sd, DistInfo(), "none")
    batches.gen.set_state(extra["sft.gen"])
    batches.queue = extra["sft.queue"].tolist()
    batches.epoch = st["epoch"]
    ctx.log.info("sft: resumed from %s (step %d/%d)", latest, st["step"], st["total"])
    return st


def save_checkpoint(ctx, model, opt, batches: Shuffled, state: dict, keep: int) -> None:
    """Weights, optimizer, batch order and global RNG at `state["step"]`, atomically (see ckpt_lib)."""
    extra = {"sft.gen": batches.gen.get_state(), "sft.queue": torch.tensor(batches.queue, dtype=torch.long)}
    state = {**state, "epoch": batches.epoch}
    ckpt_dir = Path(ctx.out_dir) / "ckpt"
    ckpt_lib.save_checkpoint(
        ckpt_dir, state["step"], model.state_dict(), opt.state_dict(), state, extra, keep_last=keep
    )


def train_step(cfg: Config, s: Setup, opt, batch_rows: list[list[int]], lr: float, device) -> dict:
    """One optimizer step on packed rows (micro-batches accumulate; the loss is a mean over the whole step's assistant
    tokens) -> loss, lr, grad_norm, assistant_tokens and the step's tokens."""
    micro = cfg.micro_batch_size or cfg.batch_size
    parts = [batch_rows[k : k + micro] for k in range(0, len(batch_rows), micro)]
    batches = [collate(s.train, p, doc_mask=cfg.pack) for p in parts]
    n_tok = sum(int((b["targets"] != IGNORE).sum()) for b in batches)
    loss_sum = 0.0
    for b in batches:
        loss, _ = nll_sum(s.model, b, device, cfg.loss_chunk_size)
        (loss / n_tok).backward()  # normalise by the whole step's assistant tokens
        loss_sum += float(loss.detach())
    gnorm = optimizer_step(s.model, opt, lr, cfg.grad_clip)
    tokens = sum(int(b["input_ids"].numel()) for b in batches)
    return {"loss": loss_sum / n_tok, "lr": lr, "grad_norm": gnorm, "assistant_tokens": n_tok, "step_tokens": tokens}


def run(cfg: Config, ctx):
    device = ctx.device
    s = setup(cfg, ctx)
    out = Path(ctx.out_dir)
    sched = LoopSchedule.from_epochs(cfg, len(s.rows), evals=10, min_lr_ratio=cfg.min_lr_ratio)
    total = sched.total
    ckpt_every = cfg.ckpt_every or max(1, total // 10)
    s.summary.update(steps=total, steps_per_epoch=sched.per_epoch, seq_len=s.seq_len, base_model=str(s.base_dir))
    atomic_write_json(out / "data.json", s.summary)
    ctx.log.info("sft: %d rows, %d steps (%d per epoch), warmup %d", len(s.rows), total, sched.per_epoch, sched.warmup)

    def val_loss() -> float | None:  # None (not NaN) when there is no held-out set: JSON-clean and explicit
        return assistant_loss(s.model, s.val, s.seq_len, cfg.eval_batch_size, device) if s.val else None

    def val_items() -> list[float]:  # per held-out conversation: what the before/after test pairs up
        return per_example_loss(s.model, s.val, s.seq_len, cfg.eval_batch_size, device)

    opt = build_optimizer(s.model, cfg, fused_cpu=False)
    batches = Shuffled(len(s.rows), torch.Generator().manual_seed(ctx.seed))
    s.model.train()
    traj = trajectory_key(cfg, ctx.seed, s.train)
    resumed = resume(ctx, s.model, opt, batches, traj)
    # what a checkpoint saves besides weights, optimizer and batch order (and what the summary reports)
    st = resumed or {
        "step": 0,
        "seen_tokens": 0,
        "first_loss": float("nan"),
        "initial_val_loss": val_loss(),
        "initial_val_items": val_items(),  # the base model's, kept in checkpoints for a resumed run's effect
    }
    st.update(trajectory=traj, total=total, last_loss=float("nan"), final_val_loss=None)
    t0 = time.time() - (resumed or {}).get("elapsed_s", 0.0)
    start = st["step"]
    with StepLog(ctx, total, ("loss", "val_loss", "tok_s"), start, keep_upto=start if resumed else None) as log:
        if not resumed:
            row0 = {"step": 0, "val_loss": st["initial_val_loss"]} if s.val else {"step": 0}
            log.write({**row0, "elapsed_s": 0.0})
        for step in range(start, total):
            rows = [s.rows[i] for i in batches.take(cfg.batch_size)]
            rec = train_step(cfg, s, opt, rows, sched.lr_at(step), device)
            st["seen_tokens"] += rec.pop("step_tokens")
            st["last_loss"] = rec["loss"]
            st["first_loss"] = rec["loss"] if step == 0 else st["first_loss"]
            st["step"] = step + 1
            rec.update(
                step=step + 1, epoch=batches.epoch, tokens=st["seen_tokens"], elapsed_s=round(time.time() - t0, 3)
            )
            if s.val and sched.evaluates(step):
                rec["val_loss"] = st["final_val_loss"] = val_loss()
                ctx.log.info("sft step %d/%d loss %.4f val %.4f", step + 1, total, rec["loss"], rec["val_loss"])
            log.step(rec)
            # not at the last step: the model is saved right below, and a kill before that redoes the last few steps
            if (step + 1) % ckpt_every == 0 and step + 1 < total:
                save_checkpoint(ctx, s.model, opt, batches, {**st, "elapsed_s": time.time() - t0}, cfg.keep_ckpts)
            if _STEP_HOOK is not None:
                _STEP_HOOK(step + 1, s.model)
    s.model.eval()
    eff = sft_effect(ctx, st.get("initial_val_items"), val_items())
    save_model_dir(s.model, s.tokenizer, out / "model")
    # checkpoints only serve a resume of this run; a sweep's cells would otherwise keep ~2 GB each at 135M
    shutil.rmtree(out / "ckpt", ignore_errors=True)
    return result(ctx, s, st, start, time.time() - t0, eff)


def sft_effect(ctx, before: list[float] | None, after: list[float]) -> dict | None:
    """Held-out assistant loss per conversation, base model (before) vs fine-tuned (after), paired bootstrap; lower is
    better. None without held-out conversations (or when resuming a checkpoint written before it was recorded)."""
    if not after or not before or len(before) != len(after):
        return None
    eff = effect(
        "heldout_conversation_loss",
        before,
        after,
        binary=False,
        higher_is_better=False,
        label="held-out assistant loss per conversation",
    )
    warn_if_worse(ctx, "SFT", eff)
    return eff


def result(ctx, s: Setup, st: dict, resumed_from: int, seconds: float, eff: dict | None = None) -> StageResult:
    initial, final, first, last = st["initial_val_loss"], st["final_val_loss"], st["first_loss"], st["last_loss"]
    summary, total, seen = s.summary, st["total"], st["seen_tokens"]
    return StageResult(
        outputs=trained_outputs(ctx.out_dir, "data.json"),
        counters={
            "conversations_train": summary["train_conversations"],
            "conversations_val": summary["val_conversations"],
            "quarantined": summary["source"].get("quarantined", 0)
            + summary.get("val_source", {}).get("quarantined", 0),
            "truncated": summary["train"]["truncated"] + summary["val"]["truncated"],
            # truncated so far that no assistant token was left: not trainable, counted rather than silently lost
            "dropped_too_long": summary["train"]["dropped_no_assistant_after_truncation"]
            + summary["val"]["dropped_no_assistant_after_truncation"],
            "rows": len(s.rows),
            "steps": total,
            "tokens": seen,
        },
        metrics={
            "initial_val_loss": initial,
            "final_val_loss": final,
            "first_train_loss": first,
            "final_train_loss": last,
            "packing_efficiency": summary["packing_efficiency"],
            "train_seconds": round(seconds, 2),
            **effect_metrics(eff),
        },
        extra={"base_model": str(s.base_dir), "resumed_from_step": resumed_from},
        summary=[
            (
                f"held-out assistant loss {initial:.3f} → {final:.3f} on {len(s.val):,} conversations"
                if s.val and final is not None
                else "no held-out conversations: no validation loss"
            )
            + f"; train loss {first:.3f} → {last:.3f} over {total:,} steps, {seen:,} tokens",
            *([effect_line(eff)] if eff else []),
        ],
    )


SPEC = StageSpec(
    name="sft",
    config=Config,
    run=run,
    help="supervised fine-tuning on chat data (packed, assistant-only loss)",
    inputs=inputs,
    plan=plan,
    produces="chat_model",
    starts_from=("pretrain",),
    headline=("final_val_loss",),
    report=REPORT,
    checks=start_checks("sft", "base"),
)
