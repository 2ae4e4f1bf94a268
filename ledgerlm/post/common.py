"""What the post-training loops (sft, dpo, reward, rl, interpolate) share: where the starting model is, loading it
with its tokenizer, the step schedule (length, warmup, lr, when to evaluate), drawing shuffled batches, one optimizer
step, the per-step log (metrics.jsonl + progress + tracker) and saving the result.

Kept deliberately thin: each loop stays readable in its own file and only the boring parts live here.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ledgerlm import hub
from ledgerlm.components import checkpoint as ckpt_lib
from ledgerlm.components.chat import CHAT_TEMPLATE
from ledgerlm.components.checkpoint import trim_metrics
from ledgerlm.components.optimizer import clip_grad
from ledgerlm.components.schedule import lr_at
from ledgerlm.config import ConfigError
from ledgerlm.data.tokenizer import save_hf_tokenizer_files
from ledgerlm.model.hf import load_model, load_tokenizer_for, save_model
from ledgerlm.stage import STAGES

IGNORE = -100  # target id that contributes no loss


def resolve_model_dir(ref: str | Path, ctx, key: str = "base") -> Path:
    """A stage name (`pretrain`, `sft`, ...) -> that stage's `model/` in this run; otherwise a path to a model dir
    (or to a stage dir that holds `model/`). Raises ConfigError naming `key` when nothing is there -- except for a
    stage this recipe runs itself, whose output will exist by the time it is read (so `plan`/preflight pass)."""
    ref = str(ref)
    candidates = []
    if ref in STAGES:
        own = Path(ctx.stage_dir(ref)) / "model"
        if (own / "config.json").is_file() or ref in (getattr(ctx.recipe, "stages", None) or []):
            return own
        candidates.append(own)
    p = Path(ref).expanduser()
    candidates += [p, p / "model"]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    hub = ref.removeprefix("hf:")
    if ref.startswith("hf:") or (re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not p.exists()):
        return hub_model_dir(hub, key)
    raise ConfigError(key, f"no model found for {ref!r} (looked in {', '.join(str(c) for c in candidates)})")


def hub_model_dir(name: str, key: str = "base") -> Path:
    """A Hub model (e.g. HuggingFaceTB/SmolLM2-135M) downloaded once into the HF cache; the ledger then hashes the
    exact files used. Only weights, configs and tokenizer files are fetched."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ConfigError(key, f"{name!r} looks like a Hub model; `pip install ledgerlm[hf]` to download it") from e
    local = hub.model_dir(name)
    if local is not None:
        return local
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.txt"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: say which key and name
        raise ConfigError(key, f"could not fetch {name!r} from the Hugging Face Hub: {e}") from e


def starting_dir(spec, ref: str, ctx, key: str) -> Path:
    """The model directory a stage starts from: "auto" -> the first of the spec's `starts_from` that has (or will have)
    a model in this run; anything else as `resolve_model_dir` reads it. `key` names the recipe field in errors."""
    return spec.starting_model(ctx, key) if ref == "auto" else resolve_model_dir(ref, ctx, key)


def data_input(source: str) -> Path | str:
    """A data source as the ledger records it: a local file (hashed), else a Hub dataset by name ("hub:NAME")."""
    p = Path(source).expanduser()
    return p if p.exists() else f"hub:{source.removeprefix('hf:')}"


def init_inputs(spec, init: str, ctx, **sources: str) -> dict:
    """The inputs of a stage that starts from `init` (the recipe's `<stage>.init`) and reads `sources` (name ->
    source; the built-in arith task is code, not an input)."""
    out: dict = {"init_model": starting_dir(spec, init, ctx, f"{spec.name}.init")}
    out.update({name: data_input(src) for name, src in sources.items() if src.split(":")[0] != "arith"})
    return out


def load_start(spec, ref: str, ctx, key: str):
    """Seed the global RNGs (model init, dropout), then load the model the stage starts from (`starting_dir`) with its
    tokenizer -> (model_dir, model, tokenizer)."""
    seed_everything(ctx.seed)
    model_dir = starting_dir(spec, ref, ctx, key)
    model, tokenizer = load_model_and_tokenizer(model_dir, ctx.device)
    return model_dir, model, tokenizer


def length_text(cfg) -> str:
    """How long an epoch-based loop runs, for `ledgerlm plan`."""
    return f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs:g} epochs"


def trained_outputs(out_dir: Path, *files: str) -> dict[str, Path]:
    """A training stage's outputs for the ledger: model/, metrics.jsonl, `files`, quarantine.jsonl (named by stem)."""
    return {name.split(".")[0]: Path(out_dir) / name for name in ("model", "metrics.jsonl", *files, "quarantine.jsonl")}


def load_model_and_tokenizer(model_dir: Path, device: str | torch.device = "cpu"):
    """(Llama, tokenizers.Tokenizer) from an HF-format directory written by `save_model`."""
    model = load_model(model_dir, device)
    tokenizer = load_tokenizer_for(model_dir)
    if tokenizer is None:
        raise FileNotFoundError(f"{model_dir}: no tokenizer saved next to the model (tokenizer.json)")
    return model, tokenizer


def save_model_dir(model, tokenizer, out_dir: Path, max_length: int | None = None) -> Path:
    """Write `out_dir` as an HF Llama directory (weights, config, tokenizer with our chat template) and return it."""
    out_dir = Path(out_dir)
    save_model(model, out_dir, tokenizer=tokenizer)
    # transformers users get the same template as our `render` (apply_chat_template parity).
    save_hf_tokenizer_files(tokenizer, out_dir, max_length or model.cfg.max_seq_len, chat_template=CHAT_TEMPLATE)
    return out_dir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def frozen_copy(model_dir: Path, device) -> torch.nn.Module:
    """The starting model once more, without gradients: the reference of DPO and of RL's KL."""
    ref, _ = load_model_and_tokenizer(model_dir, device)
    return ref.requires_grad_(False)


@dataclass
class LoopSchedule:
    """How long a loop runs and how its lr moves: `total` optimizer steps, linear warmup over `warmup` steps, then
    `shape` (constant | linear | cosine) towards min_lr_ratio * lr; held-out evaluation every `eval_every` steps."""

    total: int
    lr: float
    warmup: int = 0
    shape: str = "constant"
    min_lr_ratio: float = 0.0
    eval_every: int = 0  # 0 = never (the stage evaluates before and after only)
    per_epoch: int = 0  # optimizer steps in one pass over the data (epoch-based loops)

    @classmethod
    def from_epochs(cls, cfg, n_items: int, evals: int, min_lr_ratio: float = 0.0) -> LoopSchedule:
        """`cfg.max_steps`, else `cfg.epochs` passes over `n_items` in batches of `cfg.batch_size`; warmup is
        `cfg.warmup_ratio` of the steps; `cfg.eval_every`, else about `evals` held-out evaluations per run."""
        per_epoch = max(1, math.ceil(n_items / cfg.batch_size))
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
        every = cfg.eval_every or max(1, total // evals)
        return cls(total, cfg.lr, int(cfg.warmup_ratio * total), cfg.schedule, min_lr_ratio, every, per_epoch)

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.total, self.lr, self.warmup, self.shape, self.min_lr_ratio)

    def evaluates(self, step: int) -> bool:
        """Whether 0-based `step` ends with a held-out evaluation (every `eval_every`, and the last step)."""
        return bool(self.eval_every) and ((step + 1) % self.eval_every == 0 or step + 1 == self.total)


class Shuffled:
    """Endless passes over `n` items, each pass in a fresh random order; `take(k)` gives the next k indices. `gen` is a
    torch.Generator (torch.randperm) or a random.Random (shuffle). `queue` (what is left of the current pass, taken from
    its end) and `epoch` (passes begun) are what a checkpoint saves to resume the same order."""

    def __init__(self, n: int, gen: torch.Generator | random.Random):
        self.n, self.gen = n, gen
        self.queue: list[int] = []
        self.epoch = 0

    def _permutation(self) -> list[int]:
        if isinstance(self.gen, random.Random):
            order = list(range(self.n))
            self.gen.shuffle(order)
            return order
        return torch.randperm(self.n, generator=self.gen).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.queue:
                self.queue = self._permutation()
                self.epoch += 1
            out.append(self.queue.pop())
        return out


def optimizer_step(model, optimizer, lr: float, grad_clip: float = 1.0) -> float:
    """Set the lr (times a group's `lr_mult`: a fresh head may learn faster), clip gradients (if grad_clip > 0),
    step, zero grads; returns the pre-clip gradient norm."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    norm = clip_grad(model, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


class MetricsLog:
    """JSONL metrics file, flushed per line so a crashed run keeps its curve up to the crash. Started afresh, or, for
    a run resumed from the checkpoint of step `keep_upto`, cut back (atomically) to the records with step <= keep_upto
    and appended to: the steps after the checkpoint are redone, so the file reads as if the run had never stopped."""

    def __init__(self, path: Path, keep_upto: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_upto is None:
            self._f = open(self.path, "w", encoding="utf-8")
            return
        trim_metrics(self.path, keep_upto)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StepLog:
    """A training loop's rows, each written to metrics.jsonl (MetricsLog) and to the live progress view (which sends
    its numbers to the tracker). `step(rec)` stops the run on a non-finite loss before the row is written, and keeps
    the first and last training rows for the stage's metrics. `keep_upto`: resume after that step (MetricsLog)."""

    def __init__(self, ctx, total: int, show: tuple[str, ...], start: int = 0, keep_upto: int | None = None):
        self.stage = ctx.stage
        self.metrics = MetricsLog(Path(ctx.out_dir) / "metrics.jsonl", keep_upto)
        self.view = ctx.steps(total, start=start, show=show)
        self.first: dict = {}
        self.last: dict = {}

    def write(self, row: dict) -> None:
        self.metrics.write(row)
        self.view.log(row)

    def step(self, rec: dict) -> None:
        loss = rec.get("loss", 0.0)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.stage}: loss is {loss} at step {rec['step']}")
        self.first = self.first or rec
        self.last = rec
        self.write(rec)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.metrics.close()
        self.view.close()


# ----------------------------------------------------------------------------------------------------------------------
# what a stage did relative to its own start (ledgerlm.components.stats.effect dicts)


def effect_metrics(*effects: dict | None) -> dict:
    """The ledger metrics of a stage's effects: `effect` = the primary one (the first), `effects` = all of them,
    primary first. Nothing when there is none (e.g. no held-out items)."""
    kept = [e for e in effects if e]
    return {"effect": kept[0], "effects": kept} if kept else {}


def _effect_value(e: dict, x: float) -> str:
    return f"{x:.1%}" if e.get("test") == "mcnemar_exact" else f"{x:.4g}"


def effect_line(e: dict) -> str:
    """One summary line: `<label> <before> → <after> (n, test, p[, gained/lost]): better|worse|unchanged`."""
    what = e.get("label") or e["metric"].replace("_", " ")
    if e.get("test") == "mcnemar_exact":
        test = f"n = {e['n']}, McNemar p = {e['p']:.2g}, {e['gained']} gained, {e['lost']} lost"
    elif e.get("test"):  # p = 0: no resample crossed 0
        p = f"< 1/{e['iters']:,}" if e["p"] == 0 and e.get("iters") else f"= {e['p']:.2g}"
        test = f"n = {e['n']}, paired bootstrap p {p}"
    else:
        test = "no per-item scores: no test"
    if e["after"] == e["before"]:
        verdict = "unchanged"
    else:
        verdict = "better" if e["improved"] else "worse"
    side = "higher" if e.get("higher_is_better", True) else "lower"
    return (
        f"{what} {_effect_value(e, e['before'])} → {_effect_value(e, e['after'])} ({test}; {side} is better): {verdict}"
    )


def warn_if_worse(ctx, what: str, e: dict) -> None:
    """A stage that made its own metric worse says so (a ledger warning the report shows), significant or not."""
    if e and not e["improved"] and e["after"] != e["before"]:
        ctx.warn("made_own_metric_worse", f"{what} made its own held-out metric worse: {effect_line(e)}")


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints of the dpo / reward / rl loops (sft has its own, with packing state)

# config keys that change neither the weights nor the curve: a checkpoint written under other values still resumes
NOT_TRAJECTORY = ("eval_every", "ckpt_every", "keep_ckpts")


def trajectory_key(cfg, seed: int, skip: tuple[str, ...] = NOT_TRAJECTORY, **data: str) -> dict:
    """What a checkpoint must agree on to be resumed: the config less `skip`, the seed and fingerprints of the data."""
    d = {k: v for k, v in asdict(cfg).items() if k not in skip}
    d.update(seed=seed, **data)
    return json.loads(json.dumps(d, default=str))  # JSON-normalised, as it reads back from state.json


def random_state(rng: random.Random) -> list:
    """A random.Random's state as JSON (state.json) -- set_random_state restores it."""
    v, st, g = rng.getstate()
    return [v, list(st), g]


def set_random_state(rng: random.Random, js: list) -> None:
    v, st, g = js
    rng.setstate((v, tuple(st), g))


class Checkpoints:
    """`RUN/<stage>/ckpt/` of a post-training loop: every `every` optimizer steps (0 = about 10 per run; not at the
    last step, after which the model itself is saved) the weights, optimizer state, global RNG (ckpt_lib) and what the
    loop adds (`state` for state.json, `extra` tensors: data order, sampling generators). A stage re-run after a kill
    (`ctx.resuming`) resumes from the newest one; a fresh start removes any. A checkpoint written under another
    trajectory key (config, seed, data) is refused with the differing keys named."""

    def __init__(self, ctx, total: int, every: int, keep: int, trajectory: dict):
        self.ctx, self.total, self.keep, self.trajectory = ctx, total, keep, trajectory
        self.every = every or max(1, total // 10)
        self.dir = Path(ctx.out_dir) / "ckpt"

    def resume(self, model, optimizer) -> tuple[dict, dict] | None:
        """Restore the newest checkpoint into `model` and `optimizer` -> (state, extra tensors); None: a fresh start."""
        latest = ckpt_lib.latest_checkpoint(self.dir) if getattr(self.ctx, "resuming", False) else None
        if latest is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return None
        m_sd, o_sd, st, extra = ckpt_lib.load_checkpoint(latest)  # also restores the global RNG (dropout)
        saved = st.get("trajectory", {})
        differ = sorted(k for k in self.trajectory.keys() | saved.keys() if self.trajectory.get(k) != saved.get(k))
        if differ:
            what = ", ".join(f"{k} ({saved.get(k)!r} -> {self.trajectory.get(k)!r})" for k in differ)
            raise RuntimeError(
                f"{latest}: checkpoint was written with a different {self.ctx.stage} config: {what}; "
                f"remove {self.dir} to start over, or restore the original config"
            )
        missing, unexpected = model.load_state_dict(m_sd, strict=False)
        bad = [k for k in missing if not k.endswith("lm_head.weight")] + list(unexpected)  # tied: saved once
        if bad:
            raise ValueError(f"{latest}: checkpoint does not match the model: {bad[:5]}")
        optimizer.load_state_dict(o_sd)
        self.ctx.log.info("%s: resumed from %s (step %d/%d)", self.ctx.stage, latest, st["step"], self.total)
        return st, extra

    def due(self, step: int) -> bool:
        """Whether a checkpoint is written after `step` optimizer steps (1-based)."""
        return step % self.every == 0 and step < self.total

    def save(self, step: int, model, optimizer, state: dict, extra: dict[str, torch.Tensor]) -> None:
        state = {**state, "trajectory": self.trajectory, "total": self.total}
        ckpt_lib.save_checkpoint(
            self.dir, step, model.state_dict(), optimizer.state_dict(), state, extra, keep_last=self.keep
        )

    def resume_loop(self, model, optimizer, batches: Shuffled) -> dict | None:
        """`resume` for a loop that draws its batches from `batches` (a Shuffled over a torch.Generator): restores its
        order too -> the checkpoint's state (step, first_row, elapsed_s, ...) or None for a fresh start."""
        got = self.resume(model, optimizer)
        if got is None:
            return None
        st, extra = got
        batches.gen.set_state(extra["batches.gen"])
        batches.queue, batches.epoch = extra["batches.queue"].tolist(), st["epoch"]
        return st

    def save_loop(self, step: int, model, optimizer, batches: Shuffled, state: dict) -> None:
        """`save` for such a loop: the batch order goes with the checkpoint."""
        extra = {"batches.gen": batches.gen.get_state(), "batches.queue": torch.tensor(batches.queue, dtype=torch.long)}
        self.save(step, model, optimizer, {**state, "epoch": batches.epoch}, extra)

    def finish(self) -> None:
        """Checkpoints only serve a resume of this run: gone once the model is saved."""
        shutil.rmtree(self.dir, ignore_errors=True)
