"""The interpolate stage's report section (under Post-training): the α chosen and each α's metrics. Declared in
the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import Card, Section, effect_verdict, effects_table, label


def interpolate(card: Card, rec: dict, records: dict) -> None:
    m = rec.get("metrics", {})
    metrics = (rec.get("config") or {}).get("metrics") or []
    alphas = sorted({float(k.split("@", 1)[1]) for k in m if "@" in k})
    key = metrics[0] if metrics else None
    chosen = m.get("chosen_alpha")
    key = (rec.get("config") or {}).get("choose") or key
    eff = m.get("effect") if isinstance(m.get("effect"), dict) else None
    if eff and chosen is not None:
        card.verdict(
            "interpolate",
            f"chose α = {card.num(chosen)} (θ = (1−α)·base + α·SFT) by {label(eff['metric'])}; against the SFT "
            f"model it started from, " + effect_verdict(card, "interpolation", eff) + ".",
        )
    elif key is not None and chosen is not None:
        card.verdict(
            "interpolate",
            f"chose α = {card.num(chosen)} (θ = (1−α)·base + α·SFT) by {label(key)}: "
            f"{card.num(m.get(f'chosen_{key}'))}.",
        )
    card.warnings(rec)
    rows = []
    for a in alphas:
        row = [card.num(a) + (" (chosen)" if a == chosen else "")]
        row += [card.num(m.get(f"{k}@{a:g}")) for k in metrics]
        rows.append(row)
    card.table(["α", *[label(k) for k in metrics]], rows)
    effects_table(card, m)


SECTION = Section("interpolate", interpolate, group="Post-training")
