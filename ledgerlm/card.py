"""The report card's building blocks: `Card` (markdown and HTML side by side, every number it prints remembered),
`Section` (what a stage's report section is: a StageSpec's `report`), and the helpers every section uses (tables,
curves, labels, before/after effects). Below the stages, so each stage's `*_report.py` module can use them.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.io import atomic_write_bytes, atomic_write_text, iter_jsonl

ALPHA = 0.05  # significance level of the verdicts' tests


@dataclass(frozen=True)
class Section:
    """One section of the report, declared by a stage (`StageSpec.report`, one Section or a tuple of them).

    The generic report (ledgerlm.report.report_stage) writes the heading, then calls `render(card, record, records)` with
    the stage's ledger record and every completed record by stage name, or says `missing` when the stage did not
    run. Stages that share a `group` are shown under one heading of that name, each under its own `title` (a level
    lower), in registry order; a group with none of its stages run says so."""

    title: str
    render: Callable[[Card, dict, dict], None]
    missing: str = ""  # said instead when the stage was not run ("" = the section is left out)
    group: str = ""


@dataclass
class Card:
    run_dir: Path
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    numbers: set[str] = field(default_factory=set)  # every number printed, as printed
    shown: int = 0  # how many numbers were printed (repeats counted: the distinct count moves with wall times)
    images: dict[str, bytes] = field(default_factory=dict)
    verdicts: list[tuple[str, str]] = field(default_factory=list)  # (stage, verdict line), for the summary

    def num(self, x: Any, digits: int = 3) -> str:
        """A count with thousands separators; a measurement to `digits` significant digits (no exponent above 1e-3)."""
        if x is None:
            return "—"
        if isinstance(x, bool):
            return str(x)
        if isinstance(x, int):
            s = f"{x:,}"
        elif isinstance(x, float):
            if not math.isfinite(x):
                return "not a number" if math.isnan(x) else ("∞" if x > 0 else "−∞")
            if abs(x) >= 10**digits:
                s = f"{x:,.0f}"
            elif x == 0:
                s = "0"
            elif abs(x) >= 1e-3:  # `digits` significant digits, written out in full
                s = f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
                s = s.rstrip("0").rstrip(".") if "." in s else s
            else:
                s = f"{x:.{digits - 1}e}"
        else:
            return str(x)
        self._shown(s)
        return s

    def _shown(self, s: str) -> None:
        self.numbers.add(s)
        self.shown += 1

    def plain(self, x: Any) -> str:
        """An identifier-like integer (a seed, a year): no separators."""
        s = str(x)
        self._shown(s)
        return s

    def usd(self, x: float) -> str:
        s = f"{x:.2f}"
        self._shown(s)
        return f"${s}"

    def pct(self, fraction: float | None, digits: int = 1) -> str:
        if fraction is None or not math.isfinite(fraction):
            return "—"
        s = f"{100 * fraction:.{digits}f}"
        self._shown(s)
        return f"{s}%"

    def formats(self, x: float) -> set[str]:
        """Every way this card may print the number x (for tests that trace report numbers back to the ledger)."""
        probe = Card(self.run_dir)
        out = {probe.num(x, d) for d in (2, 3, 4)} | {probe.plain(x)}
        if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
            out |= {probe.usd(x)[1:], probe.pct(x)[:-1], probe.pct(x, 0)[:-1]}
        return out

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{inline_html(text)}</p>")

    def verdict(self, stage: str, text: str) -> None:
        self.verdicts.append((stage, text))
        self.md.append(f"**Verdict:** {text}\n")
        self.html.append(f"<p class='verdict'><b>Verdict:</b> {inline_html(text)}</p>")

    def warnings(self, rec: dict) -> None:
        for w in rec.get("warnings") or []:
            code, message = w.get("code", "warning"), w.get("message", "")
            self.md.append(f"> ⚠ **{code}**: {message}\n")
            self.html.append(f"<p class='warn'>⚠ <b>{html.escape(code)}</b>: {inline_html(message)}</p>")

    def table(self, header: list[str], rows: list[list[str]], wide: bool = False) -> None:
        if not rows:
            self.para("_(none)_")
            return
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        self.md.append("")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        cls = " class='wide'" if wide else ""
        self.html.append(
            f"<div class='scroll'><table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>"
        )

    def figure(self, name: str, fig) -> None:
        add_figure(self, name, fig)


def add_figure(page, name: str, fig) -> None:
    """A matplotlib figure as a PNG: kept in `page.images`, linked from the Markdown, inline in the HTML."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    page.images[name] = buf.getvalue()
    page.md.append(f"![{name}]({name})\n")
    b64 = base64.b64encode(buf.getvalue()).decode()
    page.html.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')


def write_page(out: Path, stem: str, title: str, css: str, page) -> None:
    """OUT/STEM.md, OUT/STEM.html (self-contained: the images inline, `css` in its head) and the images as PNG files,
    each written atomically; `page` holds `md` and `html` lines and `images` (a Card, or the diff's Page)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in page.images.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / f"{stem}.md", "\n".join(page.md) + "\n")
    head = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{css}</style></head>"
    )
    atomic_write_text(out / f"{stem}.html", head + "<body>" + "\n".join(page.html) + "</body></html>\n")


def inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text).replace("_(none)_", "<i>(none)</i>")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def artifact_jsonl(rec: dict, run_dir: Path, suffix: str) -> list[dict]:
    """Rows of a JSONL artifact a record lists as output (or inside an output dir), if its hash still matches."""
    for art in rec.get("outputs", {}).values():
        base = ledger.resolve(art["path"], run_dir)
        if art["kind"] == "file" and art["path"].endswith(suffix):
            path, sha = base, art["sha256"]
        elif art["kind"] == "dir":
            hit = next((f for f in art["files"] if f.endswith(suffix)), None)
            if hit is None:
                continue
            path, sha = base / hit, art["files"][hit][1]
        else:
            continue
        if path.is_file() and ledger.sha256_file(path) == sha:
            return [rec for _, rec in iter_jsonl(path)]
    return []


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def curve(
    card: Card, name: str, title: str, rows: list[dict], panels: list[tuple[str, list[str]]], x: str = "step"
) -> None:
    """One subplot per (panel title, keys) that has data; several keys share a panel (loss and validation loss)."""
    present = [(t, [k for k in keys if any(finite(r.get(k)) for r in rows)]) for t, keys in panels]
    present = [(t, keys) for t, keys in present if keys]
    if not present:
        return
    plt = pyplot()
    n = len(present)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.9 * cols, 2.9 * nrows + 0.4), squeeze=False, layout="constrained")
    for ax, (t, keys) in zip(axes.flat, present):
        for k in keys:
            pts = [(r[x], r[k]) for r in rows if finite(r.get(k)) and x in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, label=label(k))
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.set_title(t, fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    card.figure(name, fig)


LABELS = {
    "loss": "training loss",
    "val_loss": "held-out loss",
    "lr": "learning rate",
    "tokens_per_s": "tokens/s",
    "tok_s": "tokens/s",
    "mfu": "MFU",
    "reward_acc": "training batch",
    "acc": "training batch",
    "heldout_acc": "held-out pairs",
    "reward_mean": "mean reward",
    "pass_at_k": "pass@k",
    "zero_std_frac": "groups with zero variance",
    "truncation_rate": "truncated completions",
    "mean_length": "completion length (tokens)",
    "kl": "KL to reference",
    "heldout_accuracy": "held-out pair accuracy",
    "sft_val_loss": "held-out SFT chat loss",
}


def label(k: str) -> str:
    if k.startswith(("val_src.", "val_mix.")):  # pretraining's held-out loss per source / per phase mixture
        return f"held-out {k[8:]}" + (" mixture" if k.startswith("val_mix.") else "")
    return LABELS.get(k, k.replace("heldout", "held-out").replace("_", " "))


def kv_table(card: Card, rows: list[tuple[str, Any]]) -> None:
    card.table(["", "value"], [[label, v if isinstance(v, str) else card.num(v)] for label, v in rows if v is not None])


# ----------------------------------------------------------------------------- what a stage did to its own start


def effect_value(card: Card, e: dict, x: Any) -> str:
    return card.pct(x) if e.get("test") == "mcnemar_exact" else card.num(x)


def effect_test(card: Card, e: dict) -> str:
    if e.get("test") == "mcnemar_exact":
        return (
            f"n = {card.num(e.get('n'))}, McNemar p = {card.num(e.get('p'), 2)}: {card.num(e.get('gained'))} "
            f"gained, {card.num(e.get('lost'))} lost"
        )
    if e.get("test"):
        p = e.get("p")
        if p == 0 and e.get("iters"):  # no bootstrap resample crossed 0
            return f"n = {card.num(e.get('n'))}, paired bootstrap p < 1/{card.num(e['iters'])}"
        return f"n = {card.num(e.get('n'))}, paired bootstrap p = {card.num(p, 2)}"
    return "no per-item scores, no test"


def effect_worse(e: dict) -> bool:
    return bool(not e.get("improved") and finite(e.get("before")) and e.get("after") != e.get("before"))


def effect_verdict(card: Card, name: str, e: dict) -> str:
    """`<name> raised the <metric> from X to Y (n, test, p)`, from a stage's `metrics.effect` (ledgerlm.components.stats
    .effect): before = the model the stage started from, after = the one it hands on. Worse is flagged (⚠), and a
    change whose p is not below ALPHA says so."""
    what = e.get("label") or label(str(e.get("metric", "metric")))
    b, a = e.get("before"), e.get("after")
    if not (finite(b) and finite(a)):
        return f"{name}: {what} was not measured before and after"
    test = effect_test(card, e)
    bs, as_ = effect_value(card, e, b), effect_value(card, e, a)
    if a == b:
        return f"{name} left the {what} unchanged at {as_} ({test})"
    verb = "raised" if a > b else "lowered"
    p = e.get("p")
    significant = p is not None and p < ALPHA
    if effect_worse(e):
        side = "higher" if e.get("higher_is_better", True) else "lower"
        return f"⚠ {name} made its own metric worse: it {verb} the {what} from {bs} to {as_} ({test}; {side} is better)"
    tail = "" if significant else "; not a significant change"
    return f"{name} {verb} the {what} from {bs} to {as_} ({test}{tail})"


def effects_table(card: Card, m: dict) -> None:
    """Every effect the stage recorded (`metrics.effects`, primary first), start vs end on held-out items."""
    effects = [e for e in (m.get("effects") or ([m["effect"]] if isinstance(m.get("effect"), dict) else [])) if e]
    if not effects:
        return
    rows = []
    for e in effects:
        better = "higher" if e.get("higher_is_better", True) else "lower"
        verdict = "worse" if effect_worse(e) else ("better" if e.get("improved") else "unchanged")
        rows.append(
            [
                f"{e.get('label') or label(str(e.get('metric')))} ({better} is better)",
                f"{effect_value(card, e, e.get('before'))} → {effect_value(card, e, e.get('after'))}",
                effect_test(card, e),
                verdict,
            ]
        )
    card.table(["held-out metric", "start → end", "test", ""], rows)
