"""No generation path uses a position at or past the model's max_seq_len (a 64-position model, long prompts), and
the lm-eval-compatible GSM8K generation mode (skip special tokens, batch-level stop strings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ledgerlm.eval import evaluate as ev
from ledgerlm.eval.backends import load_lm
from ledgerlm.model.generate import fit_prompts, generate
from ledgerlm.model.llama import build_model, model_config
from ledgerlm.tasks import load_task

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
sys.path.insert(0, str(FIX))
from tiny_model import make_tiny_model  # noqa: E402


def _record_positions(model) -> list[int]:
    """Largest RoPE position of every forward call (the rotary module sees every position the model uses)."""
    seen: list[int] = []
    model.rotary.register_forward_hook(lambda mod, args, out: seen.append(int(args[0].max())))
    return seen


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(0)
    return build_model(model_config("tiny", vocab_size=97, max_seq_len=64)).eval()


@pytest.mark.parametrize("use_cache,compact", [(True, False), (True, True), (False, False)])
def test_generate_never_passes_max_seq_len(model64, use_cache, compact):
    seen = _record_positions(model64)
    prompts = [list(range(3, 63)), list(range(5, 15))]  # 60 and 10 tokens; 20 new tokens asked
    out = generate(model64, prompts, 20, use_cache=use_cache, compact_rows=compact)
    assert len(out[0]) == 4 and len(out[1]) == 20  # the long row is capped at 64 - 60 tokens
    # position 63 is used (the last generated token's), 64 never; compacted, the capped row leaves the batch once
    # finished, so its last token (at 63) is never fed back
    assert max(seen) == (62 if compact else 63)
    # the capped row is what it would be alone
    assert generate(model64, prompts[:1], 20, use_cache=use_cache, compact_rows=compact)[0] == out[0]
    with pytest.raises(ValueError, match="max_seq_len=64"):
        generate(model64, [list(range(1, 65))], 4)


def test_fit_prompts_truncates_left_and_refuses_no_room():
    prompts = [list(range(100)), list(range(10))]
    fitted, n = fit_prompts(prompts, 16, 64)
    assert n == 1 and fitted[0] == list(range(52, 100)) and fitted[1] == list(range(10))
    with pytest.raises(ValueError, match="leaves no room"):
        fit_prompts(prompts, 64, 64)


@pytest.fixture(scope="module")
def lm64(tmp_path_factory):
    d = make_tiny_model(tmp_path_factory.mktemp("m64") / "m", seed=0, max_seq_len=64)
    return load_lm(str(d), backend="ledgerlm")


def test_eval_generation_truncates_prompts_and_counts(lm64):
    seen = _record_positions(lm64.model)
    long = "Question: " + "how many apples are there in the basket today? " * 20 + "\nAnswer:"
    stats: dict = {}
    outs = lm64.generate([long, "Question: 1 + 1?\nAnswer:"], 24, ["Question:"], stats=stats)
    assert len(outs) == 2 and stats["truncated_prompts"] == 1
    assert max(seen) < 64
    with pytest.raises(ValueError, match="max_length 64"):
        lm64.generate([long], 64, ["Question:"])
    # the count reaches the results document (and from there the ledger's metrics)
    task = load_task("gsm8k", FIX)
    train = load_task("gsm8k", FIX, split="train")
    r = ev.score_generative(lm64, task, 5, train, max_new_tokens=16, batch_size=2)
    assert r["truncated_prompts"] == 3 and r["generation_mode"] == "chat"
    assert ev.summary_metrics({"tasks": {"gsm8k_5shot": r}})["gsm8k_5shot.truncated_prompts"] == 3
    assert max(seen) < 64


def test_lmeval_mode_keeps_text_after_special_tokens(tmp_path):
    """A model that emits <|im_end|>: chat mode stops there; lm-eval mode deletes the token and keeps what follows,
    and the transformers and ledgerlm backends agree in both modes."""
    d = make_tiny_model(tmp_path / "m", seed=0, max_seq_len=128, boost_im_end=3.0)
    ours, hf = load_lm(str(d), backend="ledgerlm"), load_lm(str(d), backend="hf")
    prompts = [f"Question: {q}\nAnswer:" for q in ("1 + 1?", "how many pears are left?", "name a king.")]
    chat = ours.generate(prompts, 24, ["Question:", "<|im_end|>"], batch_size=3)
    lme = ours.generate(prompts, 24, ["Question:", "<|im_end|>"], batch_size=3, mode="lm-eval")
    assert chat == hf.generate(prompts, 24, ["Question:", "<|im_end|>"], batch_size=3)
    assert lme == hf.generate(prompts, 24, ["Question:", "<|im_end|>"], batch_size=3, mode="lm-eval")
    assert all("<|im_end|>" not in t for t in lme)
    assert any(len(b) > len(a) and b.startswith(a) for a, b in zip(chat, lme))  # text after the token kept
    with pytest.raises(ValueError, match="generation mode"):
        ours.generate(prompts, 4, ["Question:"], mode="nope")


def test_stage_samples_and_rl_sampling_stay_within_the_context(tmp_path, monkeypatch):
    from ledgerlm.model import hf
    from ledgerlm.post.rl import Sampler
    from ledgerlm.samples import SamplesConfig, sample_model

    d = make_tiny_model(tmp_path / "m", seed=0, max_seq_len=64)
    seen: list[int] = []
    load = hf.load_model

    def load_and_watch(*a, **kw):
        m = load(*a, **kw)
        seen.extend([-1])  # the hook below appends the largest position of every forward
        m.rotary.register_forward_hook(lambda mod, args, out: seen.append(int(args[0].max())))
        return m

    monkeypatch.setattr(hf, "load_model", load_and_watch)
    long = "tell me about the king and the queen of the castle " * 12
    out = sample_model(d, "sft", SamplesConfig(chat_prompts=[long, "hi"], max_new_tokens=48))
    assert out[0]["prompt_tokens_dropped"] > 0 and "prompt_tokens_dropped" not in out[1]
    assert len(seen) > 1 and max(seen) < 64
    # RL sampling: a long question's completion is capped by the context (and flagged truncated), never past it
    model = load(d).eval()
    sampler = Sampler(hf.load_tokenizer_for(d), "", max_new_tokens=96)
    prompt = sampler.prompt("how many apples " * 2)
    assert 10 < len(prompt) < 64
    outs, _, trunc = sampler.sample(model, [prompt], 0.0, 0, 1.0, None)
    assert len(prompt) + len(outs[0]) <= 64 and (trunc[0] or outs[0][-1] == sampler.im_end)
    with pytest.raises(ValueError, match="max_seq_len=64"):  # a question that fills the context: a clear message
        sampler.sample(model, [sampler.prompt("how many apples " * 12)], 0.0, 0, 1.0, None)


def test_eval_stage_refuses_a_generation_budget_past_the_context(lm64):
    from ledgerlm.config import ConfigError
    from ledgerlm.eval.eval_stage import Config, _evaluate

    cfg = Config(model=lm64.name, tasks=["gsm8k"], data_dir=FIX, gsm8k_shots=[0], gsm8k_max_new_tokens=64)
    with pytest.raises(ConfigError, match="at most 63"):
        _evaluate(cfg, [lm64.name], "cpu")


class _Chars:
    """One letter per token id (id i -> chr(97 + i % 26)): a tokenizer whose decoded text is easy to reason about."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i % 26) for i in ids)

    def encode(self, text, add_special_tokens=False):
        return [ord(c) - 97 for c in text]


@pytest.mark.parametrize("use_cache", [True, False])
def test_stop_strings_per_row_and_lmeval_batch_rule(model64, use_cache):
    tok, prompts = _Chars(), [[1, 2, 3], [7, 5], [11, 13, 17, 19]]

    def gen(**kw):  # sampled (a fresh generator each call: the same draws), so rows differ from token to token
        g = torch.Generator().manual_seed(3)
        return generate(model64, prompts, 24, temperature=1.0, generator=g, use_cache=use_cache, **kw)

    free = gen()
    texts = [tok.decode(o) for o in free]
    # a letter every row produces, the one whose last first-occurrence comes latest (so rows stop at different steps)
    common = set(texts[0]) & set(texts[1]) & set(texts[2])
    stop = max(sorted(common), key=lambda c: max(t.index(c) for t in texts))
    first = [t.index(stop) for t in texts]
    assert len(set(first)) > 1, texts  # the test means something: rows reach the stop string at different steps
    # per-row rule: each row stops at the token that completes the stop string, the tokens before it unchanged
    assert gen(stop_strings=[stop], tokenizer=tok) == [free[i][: first[i] + 1] for i in range(3)]
    # lm-eval's batch rule: rows that produced it go on until every row has; then all stop at that step
    last = max(first) + 1
    assert gen(stop_strings=[stop], tokenizer=tok, batch_stop_strings=True) == [r[:last] for r in free]
