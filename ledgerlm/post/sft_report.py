"""The sft stage's report section (under Post-training): held-out chat loss, effects, the loss curve. Declared in
the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import Card, Section, artifact_jsonl, curve, effect_verdict, effects_table, finite, kv_table


def sft(card: Card, rec: dict, records: dict) -> None:
    rows = artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    a, b = m.get("initial_val_loss"), m.get("final_val_loss")
    if isinstance(m.get("effect"), dict):
        card.verdict("sft", effect_verdict(card, "SFT", m["effect"]) + ".")
    elif finite(a) and finite(b):
        verb = "lowered" if b < a else "did not lower"
        card.verdict("sft", f"SFT {verb} held-out chat loss {card.num(a)} → {card.num(b)}.")
    card.warnings(rec)
    if finite(a) and finite(b):
        kv_table(card, [("held-out chat loss per assistant token, base → SFT", f"{card.num(a)} → {card.num(b)}")])
    effects_table(card, m)
    kv_table(
        card,
        [
            (
                "conversations (train / held-out)",
                f"{card.num(c.get('conversations_train'))} / {card.num(c.get('conversations_val'))}",
            ),
            ("optimizer steps", c.get("steps")),
            ("tokens trained on", c.get("tokens")),
            (
                "training loss, first → last",
                f"{card.num(m.get('first_train_loss'))} → {card.num(m.get('final_train_loss'))}",
            ),
            ("packing efficiency", card.pct(m.get("packing_efficiency"))),
            ("conversations truncated", c.get("truncated")),
        ],
    )
    curve(card, "sft_loss.png", "SFT", rows, [("loss", ["loss", "val_loss"])])


SECTION = Section("SFT", sft, group="Post-training")
