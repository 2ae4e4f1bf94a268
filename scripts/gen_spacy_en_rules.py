"""Regenerate ledgerlm/data/spacy_en_rules.json: the rules of spaCy's English tokenizer as data.

`ledgerlm.data.wordtok` reproduces the tokenizer that datatrove's English word tokenizer runs (`spacy.blank("en")`)
from these rules, without spaCy: prefix/suffix/infix patterns, the URL pattern, the special cases (tokenizer
exceptions) and the special cases that spaCy's special-case matcher applies after affix splitting, plus the
sentencizer's punctuation. spaCy is MIT-licensed (Explosion AI); the data below is its English rule set.

    python scripts/gen_spacy_en_rules.py    # needs spaCy (the `dev` extra)
"""

from __future__ import annotations

import json
from pathlib import Path

import spacy
from spacy.attrs import ORTH
from spacy.pipeline.sentencizer import Sentencizer
from spacy.tokenizer import Tokenizer

OUT = Path(__file__).resolve().parent.parent / "ledgerlm" / "data" / "spacy_en_rules.json"


def main() -> None:
    nlp = spacy.blank("en")
    tok = nlp.tokenizer
    rules = {k: [t[ORTH] for t in v] for k, v in tok.rules.items()}
    # specials the matcher applies, with their affix-only tokenization (spaCy's add_special_case: the same tokenizer
    # without special cases)
    bare = Tokenizer(
        nlp.vocab,
        rules={},
        prefix_search=tok.prefix_search,
        suffix_search=tok.suffix_search,
        infix_finditer=tok.infix_finditer,
        token_match=tok.token_match,
        url_match=tok.url_match,
    )
    matcher = {}
    for s in rules:
        if tok.find_prefix(s) or tok.find_infix(s) or tok.find_suffix(s) or " " in s:
            matcher[s] = [t.text for t in bare(s)]
    data = {
        "spacy_version": spacy.__version__,
        "prefix": tok.prefix_search.__self__.pattern,
        "suffix": tok.suffix_search.__self__.pattern,
        "infix": tok.infix_finditer.__self__.pattern,
        "url": tok.url_match.__self__.pattern,
        "token_match": None if tok.token_match is None else tok.token_match.__self__.pattern,
        "rules": rules,
        "matcher": matcher,
        "sent_punct": list(Sentencizer.default_punct_chars),
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True, indent=0) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(rules)} special cases, {len(matcher)} in the matcher (spaCy {spacy.__version__})")


if __name__ == "__main__":
    main()
