"""The report sections of the two pairwise stages (under Post-training): DPO and the reward model, held-out pair
accuracy against chance and against where the stage started. Declared in their SPECs (`report=DPO_SECTION`,
`report=REWARD_SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import (
    ALPHA,
    Card,
    Section,
    artifact_jsonl,
    curve,
    effect_verdict,
    effects_table,
    finite,
    kv_table,
)


def _significance(card: Card, acc: float, n: int | None, p: float | None) -> str:
    test = f"n = {card.num(n)}, p = {card.num(p, 2)}" if n else f"p = {card.num(p, 2)}"
    if p is not None and p < ALPHA:
        return f"{card.pct(acc)} of held-out pairs ranked correctly, better than chance ({test})"
    return f"no better than chance: {card.pct(acc)} of held-out pairs ranked correctly ({test})"


def _pairwise_why(card: Card, m: dict, start_key: str, start_label: str) -> str:
    """Why a pairwise stage (dpo, reward) did not beat chance, from what it recorded."""
    first, last = m.get("first_loss"), m.get("final_loss")
    train_acc = m.get("final_train_reward_acc")
    if finite(first) and finite(last) and last >= first * 0.95:
        moved = "did not fall" if last >= first else "hardly fell"
        return (
            f" — its training loss {moved} ({card.num(first)} → {card.num(last)}): too few steps or too low a "
            "learning rate for these pairs"
        )
    if finite(train_acc) and train_acc > 0.7:
        return f" — it fits its training pairs ({card.pct(train_acc)}) but does not generalise to unseen ones"
    if finite(m.get(start_key)):
        return f" — it started at {card.pct(m[start_key])} ({start_label}) and training did not move it"
    return ""


def pairwise(card: Card, stage: str, rec: dict) -> None:
    """DPO or the reward model: held-out pair accuracy against chance, and against where the stage started."""
    rows = artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    acc, p = m.get("heldout_accuracy"), m.get("heldout_p_binomial")
    name = "DPO" if stage == "dpo" else "reward model"
    eff = m.get("effect") if isinstance(m.get("effect"), dict) else None
    if eff and stage == "dpo":
        # judged against its start; the implicit reward starts from ties (0%), so chance is no yardstick for it
        v = effect_verdict(card, "DPO", eff)
        if finite(acc):
            v += f"; implicit-reward accuracy {card.pct(acc)} of held-out pairs (reward vs the reference model)"
        card.verdict(stage, v + ".")
    elif eff:
        # a fresh reward head starts from chance: its effect, and whether it beats chance
        v = effect_verdict(card, "The reward model", eff)
        if finite(acc):
            v += "; " + _significance(card, acc, c.get("pairs_heldout"), p).replace(
                " of held-out pairs ranked correctly", ""
            )
        card.verdict(stage, v + ".")
    elif finite(acc):
        v = _significance(card, acc, c.get("pairs_heldout"), p)
        if p is None or p >= ALPHA:
            start = (
                ("init_logp_accuracy", "the starting model")
                if stage == "dpo"
                else ("init_heldout_accuracy", "untrained head")
            )
            v += _pairwise_why(card, m, *start)
        card.verdict(stage, f"{name}: {v}.")
    card.warnings(rec)
    lo, hi = (m.get("heldout_wilson95") or [None, None])[:2]
    start_key = "init_logp_accuracy" if stage == "dpo" else "init_heldout_accuracy"
    kv_table(
        card,
        [
            (
                "pairs (train / held-out)",
                f"{card.num(c.get('pairs_train'))} / {card.num(c.get('pairs_heldout'))}",
            ),
            (
                "implicit-reward accuracy [95% CI]" if stage == "dpo" else "held-out pair accuracy [95% CI]",
                f"{card.pct(acc)} [{card.pct(lo)}, {card.pct(hi)}]",
            ),
            ("p, binomial test against 50%", m.get("heldout_p_binomial")),
            (
                "starting model's log-probs prefer the chosen side"
                if stage == "dpo"
                else "held-out accuracy before training (untrained head)",
                card.pct(m.get(start_key)),
            ),
            ("mean held-out margin (chosen − rejected)", m.get("heldout_margin")),
            (
                "training loss, first → last",
                f"{card.num(m.get('first_loss'))} → {card.num(m.get('final_loss'))}",
            ),
            ("optimizer steps", c.get("steps")),
        ],
    )
    effects_table(card, m)
    curve(
        card,
        f"{stage}_loss.png",
        name,
        rows,
        [("loss", ["loss"]), ("pair accuracy", ["reward_acc", "acc", "heldout_acc"])],
    )


def dpo(card: Card, rec: dict, records: dict) -> None:
    pairwise(card, "dpo", rec)


def reward(card: Card, rec: dict, records: dict) -> None:
    pairwise(card, "reward", rec)


DPO_SECTION = Section("DPO", dpo, group="Post-training")
REWARD_SECTION = Section("Reward model", reward, group="Post-training")
