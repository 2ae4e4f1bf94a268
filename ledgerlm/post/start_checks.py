"""The recipe check of every stage that starts from another stage's model (sft.base, interpolate.base and .tuned,
dpo.init, reward.init, rl.init, eval.model): a stage named there must make a language model and, when the recipe
runs both, run first. Each such stage's SPEC says `checks=start_checks(<stage>, <fields>)`."""

from __future__ import annotations

from collections.abc import Callable

from ledgerlm.config import ConfigError
from ledgerlm.stage import STAGES, get


def start_checks(stage: str, *fields: str) -> Callable:
    """The `checks` of `stage`, whose `fields` name the model it starts from ("auto", a folder and a Hub name are
    checked when the stage runs: they depend on the run directory)."""

    def check(recipe) -> None:
        cfg = recipe.sections.get(stage)
        if cfg is None:
            return
        order = list(recipe.stages)
        for f in fields:
            ref = getattr(cfg, f)
            if ref not in STAGES or ref == stage:
                continue
            made = get(ref).produces
            if made not in ("model", "chat_model"):
                makers = ", ".join(n for n in STAGES if get(n).makes_model)
                what = f"a {made.replace('_', ' ')}" if made else "no model"
                raise ConfigError(f"{stage}.{f}", f"{ref} makes {what}, not a language model to start from ({makers})")
            if ref in order and stage in order and order.index(ref) > order.index(stage):
                raise ConfigError(f"{stage}.{f}", f"{ref} runs after {stage} in this recipe's stages: list {ref} first")

    return check
