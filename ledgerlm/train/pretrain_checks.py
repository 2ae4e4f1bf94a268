"""The pretrain stage's recipe checks (its SPEC's `checks`): rules between its section and another stage's, run when
the recipe is loaded, before anything runs."""

from __future__ import annotations

from ledgerlm.config import ConfigError


def checks(recipe) -> None:
    """Pretraining measures a held-out loss only on text tokenize held out."""
    tok, pre = recipe.sections.get("tokenize"), recipe.sections.get("pretrain")
    if tok is not None and pre is not None and tok.val_fraction == 0 and pre.val_batches and pre.eval_every:
        raise ConfigError(
            "tokenize.val_fraction",
            "is 0, so pretraining has no held-out text for its validation loss; hold some out (e.g. 0.01), "
            "or set pretrain.val_batches=0 to train without one",
        )
