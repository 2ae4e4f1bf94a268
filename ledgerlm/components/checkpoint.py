"""Atomic training checkpoints: `ckpt/step_00000123/` holds

  model.safetensors   model weights (tied weights once)
  extra.safetensors   other tensors: EMA shadow, snapshot-average sum, RNG states
  optim.pt            optimizer state (only tensors and plain containers: loaded with weights_only=True)
  state.json          step, schedule, loader state, config, python/numpy RNG

The directory is written under a temporary name, fsynced and renamed, so `step_*` directories are always
complete; a run killed mid-save leaves only a `.tmp` directory that the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ledgerlm.io import _fsync_dir, atomic_write_text, iter_lines

PREFIX = "step_"


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    np_state = np.random.get_state()
    js = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, js


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    v, st, g = js["python"]
    random.setstate((v, tuple(st), g))
    n = js["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(
    ckpt_dir,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict,
    state: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `step` atomically, then keep only the newest `keep_last` (0 = keep all)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"{PREFIX}{step:08d}"
    tmp = ckpt_dir / f".{PREFIX}{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    seen: dict[int, str] = {}
    model_out = {}
    for k, v in model_state.items():  # tied weights share storage; safetensors refuses duplicates
        key = v.data_ptr()
        if key in seen and v.numel():
            continue
        seen[key] = k
        model_out[k] = v.detach().cpu().contiguous()
    save_file(model_out, str(tmp / "model.safetensors"))
    rng_t, rng_js = rng_state()
    extra = {k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
    extra.update(rng_t)
    save_file(extra, str(tmp / "extra.safetensors"))
    torch.save(optim_state, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "rng": rng_js}, indent=1, default=str))
    for f in tmp.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. the end-of-run save after a resume)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    if keep_last > 0:
        for old in list_checkpoints(ckpt_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir) -> list[Path]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists())


def latest_checkpoint(ckpt_dir) -> Path | None:
    ck = list_checkpoints(ckpt_dir)
    return ck[-1] if ck else None


def load_checkpoint(path, restore_rng: bool = True):
    """-> (model_state, optim_state, state, extra_tensors). Restores RNG states when asked."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'state.json'}: line {e.lineno}: invalid JSON ({e.msg})") from e
    model_state = load_file(str(path / "model.safetensors"))
    extra = load_file(str(path / "extra.safetensors"))
    optim_state = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    if restore_rng:
        set_rng_state(extra, state["rng"])
    return model_state, optim_state, state, {k: v for k, v in extra.items() if not k.startswith("rng.")}


def trim_metrics(path, keep_upto: int) -> None:
    """Resuming from the checkpoint of step `keep_upto`: cut a metrics JSONL file back (atomically) to its records
    with step <= keep_upto, since the steps after the checkpoint are redone; a line cut short by the kill goes too."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for _, raw in iter_lines(path):
        try:
            line = raw.decode("utf-8")
            if json.loads(line)["step"] <= keep_upto:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
