"""The ledger's funnel from the per-chunk counters, and the stage's printed summary."""

from __future__ import annotations

import json

import numpy as np

from ledgerlm.data.curate.base import STEPS, Counters, load_dups, segment_tasks
from ledgerlm.data.curate.config import Config
from ledgerlm.data.decontam import COLUMNS
from ledgerlm.data.workdir import WorkDir


def _funnel(total: Counters, read: int, read_w: int) -> tuple[list[dict], dict]:
    """One row per step of STEPS: documents and words in, kept and dropped (by reason), and what the step removed
    from documents it kept (C4 line edits, boilerplate segments, decontamination cuts); and the cut counts."""
    t = total.totals
    cut = {k.split(":", 1)[1]: v for k, v in t.items() if k.startswith("cut:")}
    extra = {
        "segment_dedup": {
            "segments_removed": t["segments_removed"],
            "docs_changed": t["docs_changed"],
            "tokens_removed": t["segment_words_removed"],
        },
        "decontaminate": {"docs_cut": {f"cut:{k}": v for k, v in cut.items()}, "tokens_cut": t["words_cut"]},
    }
    edits = {
        k.split(":", 1)[1]: {"lines": t[k], "chars": t["c4_chars:" + k.split(":", 1)[1]]}
        for k in sorted(t)
        if k.startswith("c4_lines:")
    }
    extra["quality"] = {
        "c4_edits": {"docs_edited": t["c4_edited_docs"], "tokens_removed": t["c4_words_removed"], "removed": edits}
    }
    removed = {
        "quality": t["c4_words_removed"],
        "segment_dedup": t["segment_words_removed"],
        "decontaminate": t["words_cut"],
    }
    rows, n_in, t_in = [], read, read_w
    for step in STEPS:
        d = {r: v[0] for r, v in sorted(total.dropped.get(step, {}).items())}
        t_out = sum(v[1] for v in total.dropped.get(step, {}).values())
        row = {
            "step": step,
            "in": n_in,
            "kept": n_in - sum(d.values()),
            "dropped": d,
            "dropped_docs": sum(d.values()),
            "tokens_in": t_in,
            "tokens_kept": t_in - t_out - removed.get(step, 0),
            "tokens_dropped": t_out,
            **extra.get(step, {}),
        }
        rows.append(row)
        n_in, t_in = row["kept"], row["tokens_kept"]
    return rows, cut


def summarise(cfg: Config, wd: WorkDir, tasks: int) -> dict:
    """Merge the per-chunk counters into the ledger's funnel: documents and tokens (whitespace words) per reason and
    per step (the step of a reason is the one that made it, not a prefix of its name)."""
    total = Counters()
    for c, d in wd.scan_chunks(tasks):
        total.add(Counters(d["counters"]))
        total.add(Counters(json.loads(wd.apply(c, "done.json").read_text())["counters"]))
    t = total.totals
    read, read_w, kept, kept_w = t["read"], t["read_words"], t["kept"], t["kept_words"]
    dropped = {r: v[0] for step in total.dropped.values() for r, v in step.items()}
    dropped_w = {r: v[1] for step in total.dropped.values() for r, v in step.items()}
    dropped, dropped_w = dict(sorted(dropped.items())), dict(sorted(dropped_w.items()))
    if kept + sum(dropped.values()) != read:  # the invariant the whole stage is built around
        raise RuntimeError(f"curate lost documents: read {read}, kept {kept}, excluded {sum(dropped.values())}")
    rows, cut = _funnel(total, read, read_w)
    if rows[-1]["kept"] != kept or rows[-1]["tokens_kept"] != kept_w:
        raise RuntimeError(f"curate funnel does not add up: {rows[-1]} vs kept {kept} ({kept_w} tokens)")
    stats = {"near_dup_clusters": 0, "candidate_edges": 0, "near_dup_clusters_lost": t["near_dup_clusters_lost"]}
    if cfg.near_dedup.enabled:
        dups = load_dups(wd, tasks)
        stats["candidate_edges"] = dups["candidate_edges"]
        stats["near_dup_clusters"] = len(np.unique(dups["rep"]))
    stats["boilerplate_segments"] = (
        sum(len(np.load(wd.boiler(b))["h"]) for b in range(segment_tasks(cfg, wd, tasks)))
        if cfg.segment_dedup.enabled
        else 0
    )
    table = json.loads(wd.plan("contam.json").read_text())
    contamination = [
        {
            **{c: r[c] for c in COLUMNS},
            "action": cfg.decontam.action,
            "docs_dropped": dropped.get(f"contaminated:{r['benchmark']}", 0),
            "docs_cut": cut.get(r["benchmark"], 0),
        }
        for r in table
    ]
    return {
        "counters": {
            "read": read,
            "kept": kept,
            "dropped": dropped,
            "tokens_read": read_w,
            "tokens_kept": kept_w,
            "dropped_tokens": dropped_w,
            "by_source": dict(sorted(total.by_source.items())),
            "quality_dropped_by_source": {
                s: dict(sorted(total.quality_by_source[s].items())) for s in sorted(total.quality_by_source)
            },
            "by_step": rows,
            **stats,
        },
        "contamination": contamination,
    }


def curate_summary(c: dict) -> list[str]:
    """Kept and dropped documents, the drops by reason (largest first)."""
    read, kept = c["read"], c["kept"]
    reasons = sorted(c["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [
        f"kept {kept:,} of {read:,} documents ({kept / read:.1%})" if read else "read no documents",
        "dropped: " + (", ".join(f"{k} {v:,}" for k, v in reasons[:6]) if reasons else "none"),
    ]
    if len(reasons) > 6:  # the full list is in the record and the report
        lines[-1] += f", and {sum(v for _, v in reasons[6:]):,} documents for {len(reasons) - 6} other reasons"
    if c.get("tokens_read"):
        lines.append(
            f"words kept {c['tokens_kept']:,} of {c['tokens_read']:,} ({c['tokens_kept'] / c['tokens_read']:.1%})"
        )
    q = next((s for s in c.get("by_step", []) if s.get("step") == "quality"), {})
    if (e := q.get("c4_edits")) and e.get("docs_edited"):
        lines.append(
            f"C4 edited {e['docs_edited']:,} kept documents ({e['tokens_removed']:,} words removed; "
            "ledgerlm inspect RUN --reason c4_edit)"
        )
    return lines
