"""Sample generations recorded in the ledger after every stage that produces a model, so the report can show how
the same prompts are answered after pretraining, SFT, DPO and RL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ledgerlm.components.chat import render_prompt
from ledgerlm.model import hf
from ledgerlm.model.generate import fit_prompts, generate


@dataclass
class SamplesConfig:
    prompts: list[str] = field(default_factory=list)  # plain-text prompts (continued by the pretrained model)
    chat_prompts: list[str] = field(default_factory=list)  # user turns (answered by post-trained models)
    max_new_tokens: int = 48


def sample_model(model_dir: Path, chat: bool, cfg: SamplesConfig, device: str = "cpu") -> list[dict]:
    """Greedy completions of the configured prompts by the model in `model_dir` (a chat model: of the chat prompts,
    in the chat template)."""
    prompts = cfg.chat_prompts if chat else cfg.prompts
    if not prompts:
        return []
    model = hf.load_model(model_dir, device=device).eval()
    tok = hf.load_tokenizer_for(model_dir)
    if chat:
        ids = [render_prompt([{"role": "user", "content": p}], tok) for p in prompts]
        stops = [tok.token_to_id("<|im_end|>")]
    else:
        ids = [tok.encode(p).ids for p in prompts]
        stops = [tok.token_to_id("<|endoftext|>")]
    # prompt + generation within the model's context: prompts lose their first tokens if needed (as lm-eval)
    max_new = min(cfg.max_new_tokens, model.cfg.max_seq_len - 1)
    fitted, _ = fit_prompts(ids, max_new, model.cfg.max_seq_len)
    with torch.no_grad():
        outs = generate(model, fitted, max_new_tokens=max_new, stop_ids=[s for s in stops if s is not None])
    samples = []
    for p, full, kept, o in zip(prompts, ids, fitted, outs, strict=True):
        samples.append({"prompt": p, "completion": tok.decode(o, skip_special_tokens=True)})
        if len(kept) < len(full):
            samples[-1]["prompt_tokens_dropped"] = len(full) - len(kept)  # the report can say so
    return samples
