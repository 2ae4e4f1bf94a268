"""Hugging Face interop: save our model as an HF Llama directory, and load our dirs or any local HF Llama dir.

Our parameter names equal HF's without the leading `model.` (lm_head excepted), so conversion is a rename.
Tied embeddings are saved once (as `model.embed_tokens.weight`, like HF with tie_word_embeddings=true).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file
from tokenizers import Tokenizer

from ledgerlm.data.tokenizer import load_tokenizer, save_hf_tokenizer_files
from ledgerlm.io import _fsync_dir, atomic_write_bytes
from ledgerlm.model.llama import Llama, ModelConfig, build_model

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


def hf_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32, bos_id: int = 0, eos_id: int = 0) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def config_from_hf(d: dict, where: str = "config.json") -> ModelConfig:
    """ModelConfig from an HF LlamaConfig dict; refuses features our model does not implement."""
    if d.get("model_type", "llama") != "llama":
        raise ValueError(f"{where}: model_type={d.get('model_type')!r}; only 'llama' checkpoints are supported")
    rs = d.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type", "default")) != "default":
        raise ValueError(f"{where}: rope_scaling={rs!r} is not supported")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            raise ValueError(f"{where}: {key}=true is not supported (our model has no biases)")
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act={d.get('hidden_act')!r} is not supported (SwiGLU uses silu)")
    n_head = d["num_attention_heads"]
    hd = d.get("head_dim") or d["hidden_size"] // n_head
    if hd * n_head != d["hidden_size"]:
        raise ValueError(f"{where}: head_dim={hd} x heads={n_head} != hidden_size={d['hidden_size']}; not supported")
    return ModelConfig(
        n_layer=d["num_hidden_layers"],
        d_model=d["hidden_size"],
        n_head=n_head,
        n_kv_head=d.get("num_key_value_heads") or n_head,
        d_ff=d["intermediate_size"],
        vocab_size=d["vocab_size"],
        max_seq_len=d.get("max_position_embeddings", 2048),
        rope_theta=float(d.get("rope_theta", 10000.0)),
        norm_eps=float(d.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(d.get("tie_word_embeddings", True)),
        init_std=float(d.get("initializer_range", 0.02)),
    )


def _to_hf_names(sd: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            if tied:
                continue
            out[k] = v
        else:
            out["model." + k] = v
    return out


def save_model(
    model: Llama, out_dir, tokenizer=None, dtype: torch.dtype | None = None, extra_config: dict | None = None
):
    """Write `out_dir` as an HF Llama directory: model.safetensors + config.json (+ tokenizer files).

    The directory is assembled next to the target and renamed into place, so a crash never leaves a half-written
    model. `tokenizer` is a `tokenizers.Tokenizer` or a path to a tokenizer.json.
    """
    out_dir = Path(out_dir)
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    model = getattr(model, "module", model)  # unwrap DDP
    cfg = model.cfg
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    dtype = dtype or next(iter(sd.values())).dtype
    sd = {k: v.to("cpu", dtype).contiguous() for k, v in _to_hf_names(sd, cfg.tie_embeddings).items()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": "pt"})
        conf = hf_config(cfg, dtype)
        conf.update(extra_config or {})
        (tmp / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(
            json.dumps({"bos_token_id": conf["bos_token_id"], "eos_token_id": conf["eos_token_id"]}) + "\n"
        )
        if tokenizer is not None:
            _save_tokenizer(tokenizer, tmp)
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                _rmtree(old)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            _rmtree(old)
        else:
            os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    except BaseException:
        if tmp.exists():
            _rmtree(tmp)
        raise
    return out_dir


def save_tensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> None:
    """A safetensors file (written atomically) whose header keys are sorted: safetensors writes `metadata` in hash
    order, so the same tensors would otherwise give different bytes, and a different sha256, from run to run."""
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as safetensors pads it
    atomic_write_bytes(path, len(header).to_bytes(8, "little") + header + blob[8 + n :])


def _rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def _save_tokenizer(tokenizer, out: Path) -> None:
    if isinstance(tokenizer, (str, Path)):
        tokenizer = Tokenizer.from_file(str(tokenizer))
    save_hf_tokenizer_files(tokenizer, out)


def _read_state_dict(d: Path) -> dict[str, torch.Tensor]:
    if (d / WEIGHTS).exists():
        return load_file(str(d / WEIGHTS))
    if (d / INDEX).exists():
        index = json.loads((d / INDEX).read_text())
        sd = {}
        for shard in sorted(set(index["weight_map"].values())):
            sd.update(load_file(str(d / shard)))
        return sd
    if (d / "pytorch_model.bin").exists():
        # weights_only: never unpickle arbitrary objects
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{d}: no {WEIGHTS}, {INDEX} or pytorch_model.bin")


def load_model(path, device="cpu", dtype: torch.dtype = torch.float32) -> Llama:
    """Load one of our model dirs or any local HF Llama dir (SmolLM-135M, ...) into `Llama`."""
    d = Path(path)
    conf_path = d / "config.json"
    if not conf_path.exists():
        raise FileNotFoundError(f"{d}: not a model directory (no config.json)")
    try:
        conf = json.loads(conf_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{conf_path}: line {e.lineno}: invalid JSON ({e.msg})") from e
    cfg = config_from_hf(conf, str(conf_path))
    sd = _read_state_dict(d)
    ours = {}
    for k, v in sd.items():
        if k.startswith("model."):
            ours[k[len("model.") :]] = v
        elif k == "lm_head.weight":
            ours[k] = v
        elif k.endswith("rotary_emb.inv_freq"):
            continue  # old HF checkpoints saved this buffer; we recompute it
        else:
            raise ValueError(f"{d}: unexpected tensor {k!r}")
    if cfg.tie_embeddings:
        ours.pop("lm_head.weight", None)
    elif "lm_head.weight" not in ours:
        # untied config but no head saved: HF ties in this case too
        cfg.tie_embeddings = True
    model = build_model(cfg, device="cpu", dtype=torch.float32)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
    missing, unexpected = expected - set(ours), set(ours) - expected
    if missing or unexpected:
        raise ValueError(
            f"{d}: weight names do not match: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for k, v in ours.items():
        want = model.state_dict()[k].shape
        if tuple(v.shape) != tuple(want):
            raise ValueError(f"{d}: tensor {k!r} has shape {tuple(v.shape)}, config says {tuple(want)}")
    model.load_state_dict(ours, strict=False)
    return model.to(device=device, dtype=dtype).eval()


def load_tokenizer_for(path):
    """The tokenizer saved with a model dir (tokenizer.json), or None if there is none."""
    p = Path(path) / "tokenizer.json"
    if not p.exists():
        return None
    return load_tokenizer(str(p))
