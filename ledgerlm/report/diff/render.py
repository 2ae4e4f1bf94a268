"""The diff as Markdown and self-contained HTML (`Page`): changes, data and model sections, the overlaid curves."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ledgerlm.card import add_figure
from ledgerlm.report.diff.compare import is_number
from ledgerlm.report.diff.data import CONTAM_FIELDS
from ledgerlm.report.diff.words import delta_text, effect_text, fmt, move_text, side_value, verdict_text, why_text

# ----------------------------------------------------------------------------- Markdown and HTML


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _code(x: Any) -> str:
    """A value in a table cell: as code, pipes escaped for Markdown, long values cut."""
    s = fmt(x) if not isinstance(x, str) else x
    s = s if len(s) <= 200 else s[:200] + "…"
    return "`" + s.replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`" if s != "—" else s


@dataclass
class Page:
    """Markdown and HTML side by side (the report's Card offers the same calls, so a report can hold a diff)."""

    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def num(self, x: Any, digits: int = 3) -> str:
        return fmt(x, digits)

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{_inline_html(text)}</p>")

    def table(self, header: list[str], rows: list[list[str]], wide: bool = False) -> None:
        if not rows:
            self.para("_(none)_")
            return
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>")

    def figure(self, name: str, fig) -> None:
        add_figure(self, name, fig)


def _pre(page, text: str) -> None:
    """A document's text, as `ledgerlm inspect` shows it (wrapped, never wider than the page)."""
    page.md.append("```\n" + text.replace("```", "'''") + "\n```\n")
    page.html.append(
        f"<pre style='white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:6px;font-size:12px'>{html.escape(text)}</pre>"
    )


def render(d: dict, page, level: int = 1, title: str | None = None) -> None:
    """The diff into a page (a `Page`, or the report's Card): every section, headings from `level` down."""
    num = page.num
    h = level + 1
    page.heading(title or f"ledgerlm diff: {d['a']['recipe']} (A) vs {d['b']['recipe']} (B)", level)
    if hasattr(page, "verdict"):  # the report's card: the verdict goes into the report's summary too
        page.verdict("baseline", verdict_text(d))
    else:
        page.para(verdict_text(d))
    rows = []
    for label, key in (
        ("run", "run"),
        ("recipe", "recipe"),
        ("seed", "seed"),
        ("code", "commit"),
        ("torch", "torch"),
        ("device", "device"),
    ):
        va, vb = d["a"][key], d["b"][key]
        if key == "commit":
            va = f"{str(va)[:12]}{' (dirty)' if d['a']['dirty'] else ''}"
            vb = f"{str(vb)[:12]}{' (dirty)' if d['b']['dirty'] else ''}"
        if key == "seed":
            va, vb = str(va), str(vb)
        rows.append([label, _code(va), _code(vb)])
    page.table(["", "A", "B"], rows)

    page.heading("Stages, in pipeline order", h)
    srows = []
    for r in d["stages"]:
        secs = r.get("seconds") or [None, None]
        name = f"**{r['stage']}**" if r["stage"] == d["first_divergent"] else r["stage"]
        srows.append([name, why_text(r), num(secs[0]), num(secs[1])])
    page.table(["stage", "A vs B", "wall time A (s)", "wall time B (s)"], srows)
    page.para(
        "A stage is the same when its config, code, environment, seed, input and output hashes, counters and metrics "
        "are; wall-clock measurements (seconds, tokens/s, MFU) are timings and do not count."
    )
    if d["same"]:
        return
    _render_changes(d, page, h)
    if d.get("data"):
        _render_data(d, page, h)
    if d.get("model"):
        _render_model(d, page, h)


def _render_changes(d: dict, page, h: int) -> None:
    ch = d["changes"]
    page.heading("What changed", h)
    if ch["recipe"]:
        page.para(f"Recipe: `{ch['recipe'][0]['a']}` (A) vs `{ch['recipe'][0]['b']}` (B).")
    if ch["recipe_keys"]:
        page.para("Recipe keys outside the stages' sections:")
        page.table(
            ["key", "A", "B"],
            [[_code(c["key"]), _code(side_value(c, "a")), _code(side_value(c, "b"))] for c in ch["recipe_keys"]],
        )
    page.para(f"Resolved config keys that differ: {page.num(len(ch['config']))}.")
    page.table(
        ["stage", "key", "A", "B"],
        [[c["stage"], _code(c["key"]), _code(side_value(c, "a")), _code(side_value(c, "b"))] for c in ch["config"]],
    )
    if ch["other"]:
        page.para("Code, environment and seed:")
        page.table(
            ["what", "A", "B", "stages"],
            [[f"{c['kind']}: {c['key']}", _code(c["a"]), _code(c["b"]), ", ".join(c["stages"])] for c in ch["other"]],
        )
    else:
        page.para("Code version, environment (Python, torch, device) and seed: the same in every stage.")
    for side in ("a", "b"):
        only = ch[f"only_in_{side}"]
        if only:
            page.para(f"Stages recorded only in {side.upper()}: {', '.join(only)}.")


def _render_data(d: dict, page, h: int) -> None:
    data = d["data"]
    if not data:
        return
    num = page.num
    page.heading("What it did to the data", h)
    cur = data.get("curate")
    if cur:
        (ra, rb), (ka, kb) = cur["read"], cur["kept"]
        page.para(f"Curation read {num(ra)} (A) and {num(rb)} (B) documents and kept {num(ka)} (A) and {num(kb)} (B).")
        docs = cur.get("documents")
        if docs and docs["moves"]:
            page.table(
                ["in A", "in B", "documents"],
                [[move_text(m["a"], "A"), move_text(m["b"], "B"), num(m["n"])] for m in docs["moves"]],
            )
            extra = f" ({num(docs['text_changed'])} of them with a different text)" if docs["text_changed"] else ""
            page.para(f"{num(docs['same'])} documents had the same fate in both runs{extra}.")
            for m in docs["moves"]:
                page.heading(f"{move_text(m['a'], 'A')}, {move_text(m['b'], 'B')}: {num(m['n'])}", h + 1)
                for pair in m["examples"]:
                    for x in pair:
                        where = f" `{x['where']}`" if x.get("where") else ""
                        fate = "kept" if x["status"] == "kept" else f"dropped, `{x['status']}`"
                        head = f"{x['run']}: `{x['id']}` (source `{x['source']}`{where}) {fate}"
                        if x.get("details"):
                            head += f"; details `{json.dumps(x['details'], ensure_ascii=False)[:200]}`"
                        page.para(head)
                    _pre(page, next((x["text"] for x in pair if x["text"]), ""))
                    for x in pair:
                        if x.get("twin"):
                            t = x["twin"]
                            page.para(f"{x['run']}: its kept twin `{t['id']}` (source `{t['source']}`):")
                            _pre(page, t["text"])
                reason = m["b"] if m["b"] not in (None, "kept") else m["a"]
                side = "B" if m["b"] not in (None, "kept") else "A"
                if reason not in (None, "kept"):
                    page.para(f"More: `ledgerlm inspect {d[side.lower()]['run']} --reason {reason} -n 5`.")
        elif docs is not None:
            page.para("Every document had the same fate in both runs.")
        page.para("Dropped by reason, each side:")
        page.table(
            ["reason", "A", "B", "B − A"],
            [
                [_code(r["key"]), num(r["a"] or 0), num(r["b"] or 0), delta_text((r["b"] or 0) - (r["a"] or 0))]
                for r in cur["dropped"]
            ],
        )
    if data.get("contamination"):
        page.para("Contamination, side by side (A / B):")
        page.table(
            ["benchmark", *[f.replace("_", " ") for f in CONTAM_FIELDS]],
            [
                [r["benchmark"], *[f"{num(r[f][0])} / {num(r[f][1])}" for f in CONTAM_FIELDS]]
                for r in data["contamination"]
            ],
        )
    if data.get("tokenize"):
        page.para("Tokenization:")
        page.table(
            ["", "A", "B", "B − A"],
            [
                [
                    r["what"],
                    num(r["a"], 4),
                    num(r["b"], 4),
                    delta_text(r["b"] - r["a"]) if is_number(r["a"]) and is_number(r["b"]) else "",
                ]
                for r in data["tokenize"]
            ],
        )
    if data.get("phases"):
        page.para("Pretraining phases (tokens, and each source's weight in the phase's mixture):")
        page.table(["phase", "A", "B"], [[r["what"], num(r["a"]), num(r["b"])] for r in data["phases"]])
    if data.get("drawn"):
        page.para("Tokens pretraining drew, per source and pass over it (epoch):")
        page.table(["source, epoch", "A", "B"], [[r["what"], num(r["a"]), num(r["b"])] for r in data["drawn"]])


def _render_model(d: dict, page, h: int) -> None:
    m = d["model"]
    num = page.num
    page.heading("What it did to the model", h)
    for c in m["curves"]:
        _curves(page, c)
    rows = [
        [
            r["stage"],
            _code(r["key"]) + (" (headline)" if r["headline"] else ""),
            num(r["a"], 4),
            num(r["b"], 4),
            delta_text(r["delta"]),
        ]
        for r in m["metrics"]
    ]
    page.para("Final metrics that differ (timings left out):")
    page.table(["stage", "metric", "A", "B", "B − A"], rows)
    if m["effects"]:
        page.para("Each stage's effect on its own metric (before → after, on the same held-out items):")
        page.table(["stage", "A", "B"], [[e["stage"], effect_text(e["a"]), effect_text(e["b"])] for e in m["effects"]])
    ev = m.get("eval")
    if ev:
        page.para("Evaluation, paired per item (`ledgerlm compare`): McNemar's exact test per task.")
        page.table(
            ["task", "metric", "n", "A", "B", "B − A", "A only", "B only", "p (McNemar)"],
            [
                [
                    r["task"],
                    r["metric"],
                    num(r["n"]),
                    num(r["a"], 4),
                    num(r["b"], 4),
                    delta_text(r["b"] - r["a"]),
                    num(r["a_only"]),
                    num(r["b_only"]),
                    num(r["p_value"]),
                ]
                for r in ev["tasks"]
            ],
        )
        s = ev.get("six_task_mean")
        if s:
            page.para(
                f"Six-task mean: A {num(s['a'], 4)}, B {num(s['b'], 4)}, B − A {delta_text(s['diff'])} "
                f"(95% CI [{num(s['ci95'][0])}, {num(s['ci95'][1])}], paired bootstrap p = {num(s['p_value'])}, "
                f"{num(s['iters'])} resamples)."
            )
    elif m.get("eval_error"):
        page.para(f"Evaluation: no paired tests ({m['eval_error']}).")


def _curves(page, c: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = c["keys"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.9 * len(keys) + 0.6, 3.0), squeeze=False, layout="constrained")
    for ax, k in zip(axes.flat, keys):
        for side, style in (("a", "-"), ("b", "--")):
            pts = c[side].get(k) or []
            if pts:
                marker = "." if len(pts) < 40 else None
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, label=side.upper())
        ax.set_title(LABELS.get(k, k.replace("_", " ")), fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{c['stage']}: A (solid) vs B (dashed)", fontsize=11)
    page.figure(f"diff_{c['stage']}_curves.png", fig)


LABELS = {
    "loss": "training loss",
    "val_loss": "held-out loss",
    "reward_mean": "mean reward",
    "heldout_acc": "held-out accuracy",
    "kl": "KL to reference",
}
