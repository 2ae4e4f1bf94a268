"""The eval stage's report section: each task's score with its interval, the headline, reference rows. Declared
in the stage's SPEC (`report=SECTION`); drawn by ledgerlm.report.report_stage."""

from __future__ import annotations

import re
from pathlib import Path

from ledgerlm.card import Card, Section, finite
from ledgerlm.post.rl_report import heldout_set
from ledgerlm.tasks import HEADLINE


def _is_model_path(p: str) -> str:
    """A model folder as the reader knows it: `rl/model` for a run's own stage, else the path as given."""
    parts = Path(p).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-1] == "model" else p


def evaluation(card: Card, rec: dict, records: dict) -> None:
    m, x = rec.get("metrics", {}), rec.get("extra") or {}
    model = _is_model_path(str(x.get("model", "?")))
    rows, tasks = [], []
    for key, value in m.items():
        task, _, metric = key.partition(".")
        if not metric or metric == "n" or metric.endswith(("_stderr", "_ci95")) or isinstance(value, dict | list):
            continue
        lo, hi = (m.get(f"{key}_ci95") or [None, None])[:2]
        tasks.append(task)
        rows.append(
            [
                _task_name(task),
                metric.replace("_", " "),
                card.num(value),
                card.num(m.get(f"{key}_stderr")),
                f"[{card.num(lo)}, {card.num(hi)}]",
                card.num(m.get(f"{task}.n")),
            ]
        )
    limit = x.get("limit")
    scope = f"the first {card.num(limit)} items of each task" if limit else "full splits"
    head = _headline(m)
    if head is not None:
        task, metric = head.split(".", 1)
        lo, hi = (m.get(f"{head}_ci95") or [None, None])[:2]
        card.verdict(
            "eval",
            f"`{model}` scored {metric.replace('_', ' ')} {card.pct(m[head])} [95% CI {card.pct(lo)}, "
            f"{card.pct(hi)}] on {_task_name(task)} (n = {card.num(m.get(f'{task}.n'))}, {scope}).",
        )
    else:
        card.verdict("eval", f"`{model}` was evaluated ({scope}).")
    card.warnings(rec)
    card.para(f"Model evaluated: `{model}` (`{x.get('model')}`); {scope}.")
    card.table(["task", "metric", "value", "stderr", "95% CI", "n"], rows)
    if any(t.startswith("arith") for t in tasks) and "rl" in records:
        card.para(
            "These arith rows score the arith held-out split with the plain `Question: … Answer:` prompt; the RL "
            f"section's exact match is on {heldout_set(card, records['rl'])}, so the two figures are on different "
            "sets and need not agree."
        )
    six = m.get("six_task_mean")
    if six is not None:
        card.para(f"Six-task mean: **{card.num(six if not isinstance(six, dict) else six.get('value'))}**")
    # Reference rows (reported, not re-run) only beside the tasks they cover that this run scored.
    refs = [r for r in x.get("references") or [] if set(r.get("tasks") or {}) & set(tasks)]
    if refs:
        card.para("Reference rows — reported, not re-run:")
        scored = sorted({t for r in refs for t in r.get("tasks") or {}} & set(tasks))
        card.table(
            ["model", *scored, "source"],
            [
                [r.get("model"), *[card.num((r.get("tasks") or {}).get(t)) for t in scored], r.get("source", "")]
                for r in refs
            ],
        )


def _task_name(task: str) -> str:
    """ "arith_0shot" -> "arith, 0-shot", "arc_easy" -> "arc easy"."""
    m = re.fullmatch(r"(.+)_(\d+)shot", task)
    return f"{m.group(1).replace('_', ' ')}, {m.group(2)}-shot" if m else task.replace("_", " ")


def _headline(m: dict) -> str | None:
    """The ledger key of the score a reader looks at first: the six-task mean, else the first task's headline
    metric (strict exact match for generative tasks, as lm-eval reports GSM8K)."""
    if finite(m.get("six_task_mean")):
        return None
    keys = [k for k in m if "." in k and not k.endswith(("_stderr", "_ci95", ".n")) and finite(m[k])]
    for k in keys:
        task, metric = k.split(".", 1)
        if metric == HEADLINE.get(task) or metric == "exact_match_strict":
            return k
    return keys[0] if keys else None


SECTION = Section("Evaluation", evaluation, missing="Evaluation was not run in this run.")
