"""The curate stage's report sections: the curation funnel (what each step kept, why documents were dropped) and
the contamination table. Declared in the stage's SPEC (`report=SECTIONS`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

import re

from ledgerlm.card import Card, Section, pyplot

# Curation reasons in words; the code (for `ledgerlm inspect --reason`) is shown beside the words.
REASONS = {
    "near_dup": "near-duplicate of a kept document",
    "exact_dup": "exact duplicate",
    "quality:gopher_stop_words": "too few stop words (Gopher)",
    "quality:gopher_word_count": "too short or too long (Gopher)",
    "quality:gopher_mean_word_length": "unusual mean word length (Gopher)",
    "quality:gopher_alpha_words": "too few alphabetic words (Gopher)",
    "quality:gopher_symbol_ratio": "too many symbols (Gopher)",
    "quality:gopher_dup_lines": "repeated lines (Gopher)",
    "quality:gopher_dup_paragraphs": "repeated paragraphs (Gopher)",
    "quality:gopher_dup_line_chars": "characters in repeated lines (Gopher)",
    "quality:gopher_top_2gram": "dominant 2-gram (Gopher)",
    "quality:gopher_top_3gram": "dominant 3-gram (Gopher)",
    "quality:gopher_top_4gram": "dominant 4-gram (Gopher)",
    "quality:c4_curly_bracket": "curly bracket, likely code (C4)",
    "quality:c4_lorem_ipsum": "lorem ipsum (C4)",
    "quality:c4_javascript": "mentions javascript (C4)",
    "quality:c4_policy": "cookie/policy boilerplate (C4)",
    "quality:fineweb_line_punct": "lines without end punctuation (FineWeb)",
    "quality:fineweb_short_lines": "mostly short lines (FineWeb)",
    "quality:fineweb_char_dup": "duplicated characters (FineWeb)",
    "quality:fineweb_list_ratio": "mostly list lines (FineWeb)",
}


def reason(code: str) -> str:
    if code in REASONS:
        return REASONS[code]
    m = re.fullmatch(r"quality:gopher_dup_(\d+)gram", code)
    if m:
        return f"repeated {m.group(1)}-grams (Gopher)"
    if code.startswith("contaminated:"):
        return f"overlaps benchmark {code.split(':', 1)[1]}"
    return code.split(":", 1)[-1].replace("_", " ")


# ----------------------------------------------------------------------------- sections


def funnel(card: Card, rec: dict, records: dict) -> None:
    c = rec.get("counters", {})
    dropped = c.get("dropped", {})
    read, kept = c.get("read"), c.get("kept")
    if read:
        top = max(dropped.items(), key=lambda kv: kv[1], default=None)
        why = f"; the largest cut: {reason(top[0]).lower()} ({card.num(top[1])} documents)" if top else ""
        card.verdict("curate", f"kept {card.num(kept)} of {card.num(read)} documents ({card.pct(kept / read)}){why}.")
    card.warnings(rec)
    steps = c.get("by_step") or []
    if steps:
        card.table(
            ["step", "documents in", "kept", "dropped", "words in", "words kept"],
            [
                [
                    s.get("step", "").replace("_", " "),
                    card.num(s.get("in")),
                    card.num(s.get("kept")),
                    card.num(s.get("dropped_docs")),
                    card.num(s.get("tokens_in")),
                    card.num(s.get("tokens_kept")),
                ]
                for s in steps
            ],
        )
        card.para(
            "Words are whitespace-separated words, counted before tokenisation (the Tokenizer section has tokens)."
        )
    words = c.get("dropped_tokens", {})
    card.table(
        ["why dropped", "reason code", "documents", "words"],
        [
            [reason(k), f"`{k}`", card.num(v), card.num(words.get(k))]
            for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])
        ],
    )
    card.para(
        "Every excluded document is kept under `curate/excluded/` with its reason: "
        "`ledgerlm inspect RUN --reason CODE -n 3` prints examples."
    )
    if dropped:
        plt = pyplot()
        items = sorted(dropped.items(), key=lambda kv: kv[1])
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(items) + 1.2), layout="constrained")
        ax.barh([reason(k) for k, _ in items], [v for _, v in items], color="#b5523b")
        ax.set_xlabel("documents dropped")
        ax.set_title("Why documents were dropped")
        card.figure("curation_funnel.png", fig)


CONTAMINATION_COLUMNS = [  # ledger key -> column, in reading order
    ("benchmark", "benchmark"),
    ("items", "items"),
    ("items_contaminated", "items with an overlap"),
    ("pct_items_contaminated", "% of items"),
    ("n", "n-gram size"),
    ("docs_touched", "corpus docs touched"),
    ("docs_dropped", "docs dropped"),
    ("docs_cut", "docs cut"),
    ("action", "action"),
    ("items_shorter_than_n", "items shorter than n"),
    ("ngrams_ignored_common", "common n-grams ignored"),
]


def contamination(card: Card, rec: dict, records: dict) -> None:
    rows = rec.get("metrics", {}).get("contamination") or []
    if not rows:
        card.para("No decontamination was configured in this run.")
        return
    cols = [(k, label) for k, label in CONTAMINATION_COLUMNS if any(k in r for r in rows)]
    cols += [(k, k.replace("_", " ")) for k in rows[0] if k not in dict(CONTAMINATION_COLUMNS)]
    card.table(
        [label for _, label in cols],
        [[card.num(r.get(k)) if not isinstance(r.get(k), str) else r.get(k) for k, _ in cols] for r in rows],
    )
    card.para(
        "An item overlaps when one of its n-grams occurs in a corpus document (n-grams in very many documents are "
        "ignored as common); the documents it touches are dropped or cut as the action says."
    )


SECTIONS = (
    Section("Curation funnel", funnel, missing="Curation was not run in this run."),
    Section("Contamination", contamination, missing="No decontamination was configured in this run."),
)
