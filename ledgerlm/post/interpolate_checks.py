"""The interpolate stage's recipe checks (its SPEC's `checks`), run when the recipe is loaded: its `sft_val_loss`
metric scores the sft section's held-out conversations, so they must exist; and its two models, like every start
(post/start_checks.py), must come from stages that make one and run first."""

from __future__ import annotations

from ledgerlm.config import ConfigError
from ledgerlm.post.start_checks import start_checks


def checks(recipe) -> None:
    start_checks("interpolate", "base", "tuned")(recipe)  # as every stage that starts from another's model
    cfg, sft = recipe.sections.get("interpolate"), recipe.sections.get("sft")
    if cfg is None or sft is None or "sft_val_loss" not in cfg.metrics:  # without an sft section: checked at run
        return
    if not cfg.data and not sft.data:
        raise ConfigError(
            "interpolate.data", "sft_val_loss needs held-out conversations: set interpolate.data or sft.data"
        )
    if sft.val_fraction == 0 and not sft.val_data:
        raise ConfigError(
            "interpolate.metrics",
            "sft_val_loss needs held-out conversations, but sft.val_fraction is 0 and sft.val_data is unset",
        )
