"""The pretrain stage's report section: held-out loss over training, the curves, what the kept weights score.
Declared in the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import Card, Section, artifact_jsonl, curve, finite, kv_table


def pretraining(card: Card, rec: dict, records: dict) -> None:
    m, c, x = rec.get("metrics", {}), rec.get("counters", {}), rec.get("extra") or {}
    rows = artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if finite(r.get("val_loss"))]
    final = m.get("val_loss")
    if vals and finite(final):
        card.verdict(
            "pretrain",
            f"held-out loss {card.num(vals[0])} → {card.num(final)} over {card.num(c.get('steps'))} steps "
            f"({card.num(c.get('tokens'))} tokens, {card.num(c.get('params'))} parameters).",
        )
    else:
        card.verdict("pretrain", "no held-out loss was measured (no validation batches): the curve is training loss.")
    card.warnings(rec)
    panels = [("loss", ["loss", "val_loss"]), ("learning rate", ["lr"]), ("tokens/s", ["tok_s", "tokens_per_s"])]
    if any(finite(r.get("mfu")) for r in rows):  # GPU only: no empty MFU panel on CPU runs
        panels.append(("model FLOPs utilisation", ["mfu"]))
    by_src = sorted({k for r in rows for k in r if k.startswith(("val_src.", "val_mix."))})
    if by_src:  # the held-out loss of each source and of each phase's mixture, beside the declared one
        panels.insert(1, ("held-out loss by source and mixture", by_src))
    curve(card, "pretrain_loss.png", "Pretraining", rows, panels)
    by_w = m.get("val_loss_by_weights") or {}
    on = x.get("val_on")
    kv_table(
        card,
        [
            (
                "held-out loss of the kept weights" + (f" (on {on})" if on else ""),
                m.get("val_loss") if finite(m.get("val_loss")) else None,
            ),
            *[(f"held-out loss, source {k}", v) for k, v in (m.get("val_loss_by_source") or {}).items() if finite(v)],
            *[
                (f"held-out loss, phase {k}'s mixture", v)
                for k, v in (m.get("val_loss_by_mixture") or {}).items()
                if finite(v) and len((x.get("val_mixtures") or {}).get(k, {})) > 1
            ],
            ("weights kept", x.get("final_weights")),
            *[(f"held-out loss, {k} weights", v) for k, v in by_w.items() if finite(v) and len(by_w) > 1],
            ("mean tokens/s", m.get("tok_s")),
            ("mean MFU", m.get("mfu") if finite(m.get("mfu")) else None),
            ("training time (s)", m.get("train_seconds")),
            ("tokens per step", x.get("batch_tokens")),
            ("passes over the data (epochs)", x.get("data_epochs")),
        ],
    )
    kit = {k: v for k, v in (x.get("data_efficiency") or {}).items() if v and k != "optimizer"}
    if kit:
        card.para("Data-efficiency switches: " + ", ".join(f"{k} = {card.num(v)}" for k, v in kit.items()))


SECTION = Section("Pretraining", pretraining, missing="Pretraining was not run in this run.")
