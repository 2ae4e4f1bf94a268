"""Sample generations recorded in the ledger after every stage that produces a model, so the report can show how
the same prompts are answered after pretraining, SFT, DPO and RL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CHAT_STAGES = {"sft", "interpolate", "dpo", "rl"}  # their models are prompted in the chat template


@dataclass
class SamplesConfig:
    prompts: list[str] = field(default_factory=list)  # plain-text prompts (continued by the pretrained model)
    chat_prompts: list[str] = field(default_factory=list)  # user turns (answered by post-trained models)
    max_new_tokens: int = 48


def sample_model(model_dir: Path, stage: str, cfg: SamplesConfig, device: str = "cpu") -> list[dict]:
    """Greedy completions of the configured prompts by the model in `model_dir`."""
    import torch

    from ledgerlm.model.generate import generate
    from ledgerlm.model.hf import load_model, load_tokenizer_for

    chat = stage in CHAT_STAGES
    prompts = cfg.chat_prompts if chat else cfg.prompts
    if not prompts:
        return []
    model = load_model(model_dir, device=device).eval()
    tok = load_tokenizer_for(model_dir)
    if chat:
        from ledgerlm.post.chat import render_prompt

        ids = [render_prompt([{"role": "user", "content": p}], tok) for p in prompts]
        stops = [tok.token_to_id("<|im_end|>")]
    else:
        ids = [tok.encode(p).ids for p in prompts]
        stops = [tok.token_to_id("<|endoftext|>")]
    with torch.no_grad():
        outs = generate(model, ids, max_new_tokens=cfg.max_new_tokens, stop_ids=[s for s in stops if s is not None])
    return [
        {"prompt": p, "completion": tok.decode(o, skip_special_tokens=True)} for p, o in zip(prompts, outs, strict=True)
    ]
