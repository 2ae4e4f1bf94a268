"""The rl stage's report section (under Post-training): held-out exact match before and after, learning signal,
the curves. Declared in the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import ALPHA, Card, Section, artifact_jsonl, curve, effect_verdict, effects_table, finite, kv_table


def rl(card: Card, rec: dict, records: dict) -> None:
    rows = artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    cfg = rec.get("config") or {}
    before, after, n, p = (
        m.get(k) for k in ("heldout_em_before", "heldout_em_after", "heldout_n", "heldout_p_mcnemar")
    )
    # the share of groups without learning signal at the start: sampled on held-out problems, else the first step
    zero = m.get("start_zero_std_frac")
    if not finite(zero):
        zero = next((r["zero_std_frac"] for r in rows if finite(r.get("zero_std_frac"))), None)
    eff = m.get("effect") if isinstance(m.get("effect"), dict) else None
    if eff:
        v = effect_verdict(card, "RL", eff) + f" on {card.num(eff.get('n'))} {heldout_set(card, rec)}"
        if finite(zero):
            v += f"; at the start {card.pct(zero, 0)} of groups had zero reward variance"
            if zero >= 0.5:
                v += " (no learning signal: the problems are too hard, or too easy, for this model)"
        card.verdict("rl", v + ".")
    elif finite(before) and finite(after):
        sig = "a significant change" if p is not None and p < ALPHA else "not a significant change"
        v = (
            f"held-out exact match {card.pct(before)} → {card.pct(after)} ({sig}, McNemar p = {card.num(p, 2)}) on "
            f"{card.num(n)} {heldout_set(card, rec)}"
        )
        if finite(zero):
            v += f"; at the start {card.pct(zero, 0)} of groups had zero reward variance"
            if zero >= 0.5:
                v += " (no learning signal: the problems are too hard, or too easy, for this model)"
        card.verdict("rl", v + ".")
    card.warnings(rec)
    lo, hi = (m.get("heldout_em_diff_ci95") or [None, None])[:2]
    kv_table(
        card,
        [
            ("held-out exact match, before → after", f"{card.pct(before)} → {card.pct(after)}"),
            ("change [95% CI]", f"{card.num(m.get('heldout_em_diff'))} [{card.num(lo)}, {card.num(hi)}]"),
            ("held-out problems", n),
            (
                "pass@1 / pass@k at the start (sampled)",
                f"{card.num(m.get('start_pass_at_1'))} / {card.num(m.get('start_pass_at_k'))}"
                if "start_pass_at_1" in m
                else None,
            ),
            ("groups with zero reward variance (all steps)", card.pct(m.get("zero_std_frac"))),
            ("truncated completions", card.pct(m.get("truncation_rate"))),
            (
                "steps × prompts × group size",
                f"{card.num(cfg.get('steps'))} × {card.num(cfg.get('prompts_per_step'))}"
                f" × {card.num(cfg.get('group_size'))}"
                if cfg
                else None,
            ),
            ("skipped steps (every group at zero variance)", c.get("skipped_steps")),
        ],
    )
    effects_table(card, m)
    curve(
        card,
        "rl_curves.png",
        "RLVR / GRPO",
        rows,
        [
            ("mean reward", ["reward_mean"]),
            ("sampled pass@k (training prompts)", sorted({k for r in rows for k in r if k.startswith("pass@")})),
            ("groups with zero variance", ["zero_std_frac"]),
            ("truncated completions", ["truncation_rate"]),
            ("completion length (tokens)", ["mean_length"]),
            ("KL to reference", ["kl"]),
        ],
    )


def heldout_set(card: Card, rec: dict) -> str:
    """Which held-out problems RL scored, in words that match the Evaluation section's."""
    task = str((rec.get("config") or {}).get("task", "arith"))
    if task.split(":")[0] == "arith":
        opts = task.partition(":")[2]
        easier = f" with {opts.replace(',', ', ')}" if opts else ""
        return f"problems of the arith held-out split{easier}, answered greedily in the chat template"
    return f"held-out problems of {task}"


SECTION = Section("RL (GRPO)", rl, group="Post-training")
