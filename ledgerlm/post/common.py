"""Small helpers shared by the post-training loops (sft, dpo, reward, rl, interpolate): where the upstream model is,
loading it with its tokenizer, one optimizer step on a schedule, per-token log-probs, and saving the result.

Kept deliberately thin: each loop stays readable in its own file and only the boring parts live here.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch

from ledgerlm.config import ConfigError
from ledgerlm.data.tokenizer import save_hf_tokenizer_files
from ledgerlm.model.hf import load_model, load_tokenizer_for, save_model
from ledgerlm.post.chat import CHAT_TEMPLATE
from ledgerlm.stage import STAGES
from ledgerlm.train.checkpoint import trim_metrics

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
    from ledgerlm import hub

    local = hub.model_dir(name)
    if local is not None:
        return local
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.txt"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: say which key and name
        raise ConfigError(key, f"could not fetch {name!r} from the Hugging Face Hub: {e}") from e


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


def optimizer_step(model, optimizer, lr: float, grad_clip: float = 1.0) -> float:
    """Set the lr, clip gradients (if grad_clip > 0), step, zero grads; returns the pre-clip gradient norm."""
    for g in optimizer.param_groups:
        g["lr"] = lr
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


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
