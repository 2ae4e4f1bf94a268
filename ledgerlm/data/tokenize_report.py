"""The tokenize stage's report section: vocabulary, bytes per token, documents and tokens per source. Declared in
the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

from ledgerlm.card import Card, Section, finite


def tokenizer(card: Card, rec: dict, records: dict) -> None:
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    asked = (rec.get("config") or {}).get("vocab_size")
    vocab, bpt = m.get("vocab_size"), m.get("bytes_per_token")
    on = {"val": "held-out", "train": "training"}.get(m.get("bytes_per_token_on"), m.get("bytes_per_token_on"))
    text = f"a {card.num(vocab)}-token vocabulary"
    if asked and vocab and (rec.get("extra") or {}).get("tokenizer", {}).get("trained") and vocab < asked:
        text += f" (asked for {card.num(asked)}: the data did not support more)"
    if finite(bpt):
        text += f", {card.num(bpt)} bytes per token on {on} text"
    tokens = c.get("tokens") or {}
    total = sum(v for split in tokens.values() for v in split.values())
    card.verdict("tokenize", f"{text}; {card.num(total)} tokens written.")
    card.warnings(rec)
    docs = c.get("documents_per_source") or {}
    rows = []
    for src in sorted(set(docs) | set(tokens)):
        d, t = docs.get(src, {}), tokens.get(src, {})
        per = (m.get("bytes_per_token_per_source") or {}).get(src)
        rows.append(
            [
                src,
                card.num(d.get("train")),
                card.num(d.get("val")),
                card.num(t.get("train")),
                card.num(t.get("val")),
                card.num(per) if finite(per) else "—",
            ]
        )
    card.table(
        ["source", "training documents", "held-out documents", "training tokens", "held-out tokens", "bytes/token"],
        rows,
    )
    card.para(
        f"{card.num(c.get('shards'))} shard(s) from {card.num(c.get('input_files'))} input file(s); "
        f"{card.num(c.get('documents_quarantined', 0))} malformed document(s) quarantined."
    )


SECTION = Section("Tokenizer", tokenizer, missing="Tokenisation was not run in this run.")
