"""The report card: report.md and a self-contained report.html, built from the ledger alone.

Every number shown is read from a stage's ledger record, or from an artifact that record lists and whose sha256
still matches (the loss curves in metrics.jsonl, say), or derived from those (totals, costs, percentages). Numbers
pass through the `Card` formatters, which remember each one they printed, so a test can check that nothing in the
report came from anywhere else.

Each stage gets one verdict line (what it did, in its own units, and whether that is better than chance where a
test applies) followed by its table and figures; warnings the stage recorded are shown beside it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.io import atomic_write_bytes, atomic_write_text, iter_jsonl
from ledgerlm.report import diff
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.tasks import HEADLINE

SECTIONS = [
    "Run",
    "Stages, time and cost",
    "Curation funnel",
    "Contamination",
    "Tokenizer",
    "Pretraining",
    "Post-training",
    "Grids",
    "Evaluation",
    "Sample generations",
    "Environment and code",
]
ALPHA = 0.05  # significance level of the verdicts' tests


@dataclass
class Config:
    title: str = ""  # the page title ("" = the recipe name)
    gpu_usd_per_hour: float = 2.5  # cost of a stage = its wall time x this (CPU stages: cpu_usd_per_hour)
    cpu_usd_per_hour: float = 0.10  # cost per hour of a CPU stage
    max_samples: int = 4  # sample generations shown per model stage
    baseline: str = ""  # a run directory to compare with (`ledgerlm diff`): adds "Difference from the baseline"

    def validate(self) -> None:
        diff.check_baseline(self.baseline)


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    own = {
        f"ledger:{r['stage']}": ledger.record_path(ctx.run_dir, r["stage"])
        for r in ledger.read_records(ctx.run_dir)
        if r.get("stage") != "report"
    }
    return {**own, **diff.baseline_inputs(cfg.baseline)}


# ----------------------------------------------------------------------------- building blocks


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
        self.html.append(f"<p>{_inline_html(text)}</p>")

    def verdict(self, stage: str, text: str) -> None:
        self.verdicts.append((stage, text))
        self.md.append(f"**Verdict:** {text}\n")
        self.html.append(f"<p class='verdict'><b>Verdict:</b> {_inline_html(text)}</p>")

    def warnings(self, rec: dict) -> None:
        for w in rec.get("warnings") or []:
            code, message = w.get("code", "warning"), w.get("message", "")
            self.md.append(f"> ⚠ **{code}**: {message}\n")
            self.html.append(f"<p class='warn'>⚠ <b>{html.escape(code)}</b>: {_inline_html(message)}</p>")

    def table(self, header: list[str], rows: list[list[str]], wide: bool = False) -> None:
        if not rows:
            self.para("_(none)_")
            return
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        self.md.append("")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        cls = " class='wide'" if wide else ""
        self.html.append(
            f"<div class='scroll'><table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>"
        )

    def figure(self, name: str, fig) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.images[name] = buf.getvalue()
        self.md.append(f"![{name}]({name})\n")
        b64 = base64.b64encode(buf.getvalue()).decode()
        self.html.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text).replace("_(none)_", "<i>(none)</i>")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _artifact_jsonl(rec: dict, run_dir: Path, suffix: str) -> list[dict]:
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


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_model_path(p: str) -> str:
    """A model folder as the reader knows it: `rl/model` for a run's own stage, else the path as given."""
    parts = Path(p).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-1] == "model" else p


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


def _reason(code: str) -> str:
    if code in REASONS:
        return REASONS[code]
    m = re.fullmatch(r"quality:gopher_dup_(\d+)gram", code)
    if m:
        return f"repeated {m.group(1)}-grams (Gopher)"
    if code.startswith("contaminated:"):
        return f"overlaps benchmark {code.split(':', 1)[1]}"
    return code.split(":", 1)[-1].replace("_", " ")


# ----------------------------------------------------------------------------- sections


def _run_section(card: Card, records: dict, cfg: Config) -> None:
    first = next(iter(records.values()))
    card.heading(cfg.title or f"ledgerlm report — {first.get('recipe', '?')}", 1)
    card.md.append("<!-- summary -->")  # the verdicts of every stage, filled in by build()
    card.html.append("<!-- summary -->")
    card.heading("Run")
    card.table(
        ["", "value"],
        [
            ["recipe", f"`{first.get('recipe')}` (`{first.get('recipe_file')}`)"],
            ["seed", card.plain(first.get("seed"))],
            ["stages recorded", ", ".join(records)],
            ["first stage started", first.get("started", "")],
            ["last stage ended", max((r.get("ended", "") for r in records.values()), default="")],
        ],
    )


def _stages_section(card: Card, records: dict, cfg: Config) -> None:
    card.heading("Stages, time and cost")
    rows, total_s, total_usd = [], 0.0, 0.0
    for name, r in records.items():
        secs = float(r.get("seconds") or 0)
        rate = cfg.gpu_usd_per_hour if r.get("device") == "cuda" else cfg.cpu_usd_per_hour
        usd = secs / 3600 * rate
        total_s, total_usd = total_s + secs, total_usd + usd
        n_out = sum(a.get("n_files", 1) for a in r.get("outputs", {}).values())
        size = sum(a.get("size", 0) for a in r.get("outputs", {}).values())
        warn = len(r.get("warnings") or [])
        rows.append(
            [
                name,
                r.get("device") or "",
                card.num(secs, 3),
                card.usd(usd),
                card.num(n_out),
                card.num(size / 1e6, 3),
                f"⚠ {card.num(warn)}" if warn else "",
            ]
        )
    rows.append(["**total**", "", f"**{card.num(total_s, 3)}**", f"**{card.usd(total_usd)}**", "", "", ""])
    header = ["stage", "device", "wall time (s)", "cost", "output files", "output size (MB)", "warnings"]
    if not any(r.get("warnings") for r in records.values()):  # no empty column
        header, rows = header[:-1], [r[:-1] for r in rows]
    card.table(header, rows)
    card.para(
        f"Cost = wall time × {card.usd(cfg.gpu_usd_per_hour)} per GPU-hour or {card.usd(cfg.cpu_usd_per_hour)} "
        "per CPU-hour (the report's settings `gpu_usd_per_hour`, `cpu_usd_per_hour`)."
    )


def _stage_section(card: Card, records: dict, title: str, stage: str, what: str) -> dict | None:
    """Open the section on one stage: its heading, then the stage's record, or None after saying it did not run."""
    card.heading(title)
    rec = records.get(stage)
    if not rec:
        card.para(f"{what} was not run in this run.")
    return rec or None


def _curation_section(card: Card, records: dict) -> None:
    rec = _stage_section(card, records, "Curation funnel", "curate", "Curation")
    if rec is None:
        return
    c = rec.get("counters", {})
    dropped = c.get("dropped", {})
    read, kept = c.get("read"), c.get("kept")
    if read:
        top = max(dropped.items(), key=lambda kv: kv[1], default=None)
        why = f"; the largest cut: {_reason(top[0]).lower()} ({card.num(top[1])} documents)" if top else ""
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
            [_reason(k), f"`{k}`", card.num(v), card.num(words.get(k))]
            for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])
        ],
    )
    card.para(
        "Every excluded document is kept under `curate/excluded/` with its reason: "
        "`ledgerlm inspect RUN --reason CODE -n 3` prints examples."
    )
    if dropped:
        plt = _plt()
        items = sorted(dropped.items(), key=lambda kv: kv[1])
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(items) + 1.2), layout="constrained")
        ax.barh([_reason(k) for k, _ in items], [v for _, v in items], color="#b5523b")
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


def _contamination_section(card: Card, records: dict) -> None:
    card.heading("Contamination")
    rows = (records.get("curate") or {}).get("metrics", {}).get("contamination") or []
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


def _tokenizer_section(card: Card, records: dict) -> None:
    rec = _stage_section(card, records, "Tokenizer", "tokenize", "Tokenisation")
    if rec is None:
        return
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    asked = (rec.get("config") or {}).get("vocab_size")
    vocab, bpt = m.get("vocab_size"), m.get("bytes_per_token")
    on = {"val": "held-out", "train": "training"}.get(m.get("bytes_per_token_on"), m.get("bytes_per_token_on"))
    text = f"a {card.num(vocab)}-token vocabulary"
    if asked and vocab and (rec.get("extra") or {}).get("tokenizer", {}).get("trained") and vocab < asked:
        text += f" (asked for {card.num(asked)}: the data did not support more)"
    if _finite(bpt):
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
                card.num(per) if _finite(per) else "—",
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


def _curve(
    card: Card, name: str, title: str, rows: list[dict], panels: list[tuple[str, list[str]]], x: str = "step"
) -> None:
    """One subplot per (panel title, keys) that has data; several keys share a panel (loss and validation loss)."""
    present = [(t, [k for k in keys if any(_finite(r.get(k)) for r in rows)]) for t, keys in panels]
    present = [(t, keys) for t, keys in present if keys]
    if not present:
        return
    plt = _plt()
    n = len(present)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.9 * cols, 2.9 * nrows + 0.4), squeeze=False, layout="constrained")
    for ax, (t, keys) in zip(axes.flat, present):
        for k in keys:
            pts = [(r[x], r[k]) for r in rows if _finite(r.get(k)) and x in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, label=_label(k))
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


def _label(k: str) -> str:
    if k.startswith(("val_src.", "val_mix.")):  # pretraining's held-out loss per source / per phase mixture
        return f"held-out {k[8:]}" + (" mixture" if k.startswith("val_mix.") else "")
    return LABELS.get(k, k.replace("heldout", "held-out").replace("_", " "))


def _kv_table(card: Card, rows: list[tuple[str, Any]]) -> None:
    card.table(["", "value"], [[label, v if isinstance(v, str) else card.num(v)] for label, v in rows if v is not None])


def _pretrain_section(card: Card, records: dict) -> None:
    rec = _stage_section(card, records, "Pretraining", "pretrain", "Pretraining")
    if rec is None:
        return
    m, c, x = rec.get("metrics", {}), rec.get("counters", {}), rec.get("extra") or {}
    rows = _artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if _finite(r.get("val_loss"))]
    final = m.get("val_loss")
    if vals and _finite(final):
        card.verdict(
            "pretrain",
            f"held-out loss {card.num(vals[0])} → {card.num(final)} over {card.num(c.get('steps'))} steps "
            f"({card.num(c.get('tokens'))} tokens, {card.num(c.get('params'))} parameters).",
        )
    else:
        card.verdict("pretrain", "no held-out loss was measured (no validation batches): the curve is training loss.")
    card.warnings(rec)
    panels = [("loss", ["loss", "val_loss"]), ("learning rate", ["lr"]), ("tokens/s", ["tok_s", "tokens_per_s"])]
    if any(_finite(r.get("mfu")) for r in rows):  # GPU only: no empty MFU panel on CPU runs
        panels.append(("model FLOPs utilisation", ["mfu"]))
    by_src = sorted({k for r in rows for k in r if k.startswith(("val_src.", "val_mix."))})
    if by_src:  # the held-out loss of each source and of each phase's mixture, beside the declared one
        panels.insert(1, ("held-out loss by source and mixture", by_src))
    _curve(card, "pretrain_loss.png", "Pretraining", rows, panels)
    by_w = m.get("val_loss_by_weights") or {}
    on = x.get("val_on")
    _kv_table(
        card,
        [
            (
                "held-out loss of the kept weights" + (f" (on {on})" if on else ""),
                m.get("val_loss") if _finite(m.get("val_loss")) else None,
            ),
            *[(f"held-out loss, source {k}", v) for k, v in (m.get("val_loss_by_source") or {}).items() if _finite(v)],
            *[
                (f"held-out loss, phase {k}'s mixture", v)
                for k, v in (m.get("val_loss_by_mixture") or {}).items()
                if _finite(v) and len((x.get("val_mixtures") or {}).get(k, {})) > 1
            ],
            ("weights kept", x.get("final_weights")),
            *[(f"held-out loss, {k} weights", v) for k, v in by_w.items() if _finite(v) and len(by_w) > 1],
            ("mean tokens/s", m.get("tok_s")),
            ("mean MFU", m.get("mfu") if _finite(m.get("mfu")) else None),
            ("training time (s)", m.get("train_seconds")),
            ("tokens per step", x.get("batch_tokens")),
            ("passes over the data (epochs)", x.get("data_epochs")),
        ],
    )
    kit = {k: v for k, v in (x.get("data_efficiency") or {}).items() if v and k != "optimizer"}
    if kit:
        card.para("Data-efficiency switches: " + ", ".join(f"{k} = {card.num(v)}" for k, v in kit.items()))


def _significance(card: Card, acc: float, n: int | None, p: float | None) -> str:
    test = f"n = {card.num(n)}, p = {card.num(p, 2)}" if n else f"p = {card.num(p, 2)}"
    if p is not None and p < ALPHA:
        return f"{card.pct(acc)} of held-out pairs ranked correctly, better than chance ({test})"
    return f"no better than chance: {card.pct(acc)} of held-out pairs ranked correctly ({test})"


def _pairwise_why(card: Card, m: dict, start_key: str, start_label: str) -> str:
    """Why a pairwise stage (dpo, reward) did not beat chance, from what it recorded."""
    first, last = m.get("first_loss"), m.get("final_loss")
    train_acc = m.get("final_train_reward_acc")
    if _finite(first) and _finite(last) and last >= first * 0.95:
        moved = "did not fall" if last >= first else "hardly fell"
        return (
            f" — its training loss {moved} ({card.num(first)} → {card.num(last)}): too few steps or too low a "
            "learning rate for these pairs"
        )
    if _finite(train_acc) and train_acc > 0.7:
        return f" — it fits its training pairs ({card.pct(train_acc)}) but does not generalise to unseen ones"
    if _finite(m.get(start_key)):
        return f" — it started at {card.pct(m[start_key])} ({start_label}) and training did not move it"
    return ""


# ----------------------------------------------------------------------------- what a stage did to its own start


def _effect_value(card: Card, e: dict, x: Any) -> str:
    return card.pct(x) if e.get("test") == "mcnemar_exact" else card.num(x)


def _effect_test(card: Card, e: dict) -> str:
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


def _effect_worse(e: dict) -> bool:
    return bool(not e.get("improved") and _finite(e.get("before")) and e.get("after") != e.get("before"))


def _effect_verdict(card: Card, name: str, e: dict) -> str:
    """`<name> raised the <metric> from X to Y (n, test, p)`, from a stage's `metrics.effect` (ledgerlm.components.stats
    .effect): before = the model the stage started from, after = the one it hands on. Worse is flagged (⚠), and a
    change whose p is not below ALPHA says so."""
    what = e.get("label") or _label(str(e.get("metric", "metric")))
    b, a = e.get("before"), e.get("after")
    if not (_finite(b) and _finite(a)):
        return f"{name}: {what} was not measured before and after"
    test = _effect_test(card, e)
    bs, as_ = _effect_value(card, e, b), _effect_value(card, e, a)
    if a == b:
        return f"{name} left the {what} unchanged at {as_} ({test})"
    verb = "raised" if a > b else "lowered"
    p = e.get("p")
    significant = p is not None and p < ALPHA
    if _effect_worse(e):
        side = "higher" if e.get("higher_is_better", True) else "lower"
        return f"⚠ {name} made its own metric worse: it {verb} the {what} from {bs} to {as_} ({test}; {side} is better)"
    tail = "" if significant else "; not a significant change"
    return f"{name} {verb} the {what} from {bs} to {as_} ({test}{tail})"


def _effects_table(card: Card, m: dict) -> None:
    """Every effect the stage recorded (`metrics.effects`, primary first), start vs end on held-out items."""
    effects = [e for e in (m.get("effects") or ([m["effect"]] if isinstance(m.get("effect"), dict) else [])) if e]
    if not effects:
        return
    rows = []
    for e in effects:
        better = "higher" if e.get("higher_is_better", True) else "lower"
        verdict = "worse" if _effect_worse(e) else ("better" if e.get("improved") else "unchanged")
        rows.append(
            [
                f"{e.get('label') or _label(str(e.get('metric')))} ({better} is better)",
                f"{_effect_value(card, e, e.get('before'))} → {_effect_value(card, e, e.get('after'))}",
                _effect_test(card, e),
                verdict,
            ]
        )
    card.table(["held-out metric", "start → end", "test", ""], rows)


def _post_section(card: Card, records: dict) -> None:
    card.heading("Post-training")
    shown = False
    for stage in ("sft", "interpolate", "dpo", "reward", "rl"):
        rec = records.get(stage)
        if not rec:
            continue
        shown = True
        card.heading({"sft": "SFT", "dpo": "DPO", "reward": "Reward model", "rl": "RL (GRPO)"}.get(stage, stage), 3)
        rows = _artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
        if stage == "sft":
            _sft(card, rec, rows)
        elif stage == "interpolate":
            _interpolate(card, rec)
        elif stage in ("dpo", "reward"):
            _pairwise(card, stage, rec, rows)
        else:
            _rl(card, rec, rows)
    if not shown:
        card.para("No post-training stage was run in this run.")


def _sft(card: Card, rec: dict, rows: list[dict]) -> None:
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    a, b = m.get("initial_val_loss"), m.get("final_val_loss")
    if isinstance(m.get("effect"), dict):
        card.verdict("sft", _effect_verdict(card, "SFT", m["effect"]) + ".")
    elif _finite(a) and _finite(b):
        verb = "lowered" if b < a else "did not lower"
        card.verdict("sft", f"SFT {verb} held-out chat loss {card.num(a)} → {card.num(b)}.")
    card.warnings(rec)
    if _finite(a) and _finite(b):
        _kv_table(card, [("held-out chat loss per assistant token, base → SFT", f"{card.num(a)} → {card.num(b)}")])
    _effects_table(card, m)
    _kv_table(
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
    _curve(card, "sft_loss.png", "SFT", rows, [("loss", ["loss", "val_loss"])])


def _pairwise(card: Card, stage: str, rec: dict, rows: list[dict]) -> None:
    """DPO or the reward model: held-out pair accuracy against chance, and against where the stage started."""
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    acc, p = m.get("heldout_accuracy"), m.get("heldout_p_binomial")
    name = "DPO" if stage == "dpo" else "reward model"
    eff = m.get("effect") if isinstance(m.get("effect"), dict) else None
    if eff and stage == "dpo":
        # judged against its start; the implicit reward starts from ties (0%), so chance is no yardstick for it
        v = _effect_verdict(card, "DPO", eff)
        if _finite(acc):
            v += f"; implicit-reward accuracy {card.pct(acc)} of held-out pairs (reward vs the reference model)"
        card.verdict(stage, v + ".")
    elif eff:
        # a fresh reward head starts from chance: its effect, and whether it beats chance
        v = _effect_verdict(card, "The reward model", eff)
        if _finite(acc):
            v += "; " + _significance(card, acc, c.get("pairs_heldout"), p).replace(
                " of held-out pairs ranked correctly", ""
            )
        card.verdict(stage, v + ".")
    elif _finite(acc):
        v = _significance(card, acc, c.get("pairs_heldout"), p)
        if p is None or p >= ALPHA:
            start = (
                ("init_logp_accuracy", "the starting model")
                if stage == "dpo"
                else ("init_heldout_accuracy", "untrained head")
            )
            v += _pairwise_why(card, m, *start)
        card.verdict(stage, f"{name}: {v}.")
    card.warnings(rec)
    lo, hi = (m.get("heldout_wilson95") or [None, None])[:2]
    start_key = "init_logp_accuracy" if stage == "dpo" else "init_heldout_accuracy"
    _kv_table(
        card,
        [
            (
                "pairs (train / held-out)",
                f"{card.num(c.get('pairs_train'))} / {card.num(c.get('pairs_heldout'))}",
            ),
            (
                "implicit-reward accuracy [95% CI]" if stage == "dpo" else "held-out pair accuracy [95% CI]",
                f"{card.pct(acc)} [{card.pct(lo)}, {card.pct(hi)}]",
            ),
            ("p, binomial test against 50%", m.get("heldout_p_binomial")),
            (
                "starting model's log-probs prefer the chosen side"
                if stage == "dpo"
                else "held-out accuracy before training (untrained head)",
                card.pct(m.get(start_key)),
            ),
            ("mean held-out margin (chosen − rejected)", m.get("heldout_margin")),
            (
                "training loss, first → last",
                f"{card.num(m.get('first_loss'))} → {card.num(m.get('final_loss'))}",
            ),
            ("optimizer steps", c.get("steps")),
        ],
    )
    _effects_table(card, m)
    _curve(
        card,
        f"{stage}_loss.png",
        name,
        rows,
        [("loss", ["loss"]), ("pair accuracy", ["reward_acc", "acc", "heldout_acc"])],
    )


def _interpolate(card: Card, rec: dict) -> None:
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
            f"chose α = {card.num(chosen)} (θ = (1−α)·base + α·SFT) by {_label(eff['metric'])}; against the SFT "
            f"model it started from, " + _effect_verdict(card, "interpolation", eff) + ".",
        )
    elif key is not None and chosen is not None:
        card.verdict(
            "interpolate",
            f"chose α = {card.num(chosen)} (θ = (1−α)·base + α·SFT) by {_label(key)}: "
            f"{card.num(m.get(f'chosen_{key}'))}.",
        )
    card.warnings(rec)
    rows = []
    for a in alphas:
        row = [card.num(a) + (" (chosen)" if a == chosen else "")]
        row += [card.num(m.get(f"{k}@{a:g}")) for k in metrics]
        rows.append(row)
    card.table(["α", *[_label(k) for k in metrics]], rows)
    _effects_table(card, m)


def _rl(card: Card, rec: dict, rows: list[dict]) -> None:
    m, c = rec.get("metrics", {}), rec.get("counters", {})
    cfg = rec.get("config") or {}
    before, after, n, p = (
        m.get(k) for k in ("heldout_em_before", "heldout_em_after", "heldout_n", "heldout_p_mcnemar")
    )
    # the share of groups without learning signal at the start: sampled on held-out problems, else the first step
    zero = m.get("start_zero_std_frac")
    if not _finite(zero):
        zero = next((r["zero_std_frac"] for r in rows if _finite(r.get("zero_std_frac"))), None)
    eff = m.get("effect") if isinstance(m.get("effect"), dict) else None
    if eff:
        v = _effect_verdict(card, "RL", eff) + f" on {card.num(eff.get('n'))} {_rl_set(card, rec)}"
        if _finite(zero):
            v += f"; at the start {card.pct(zero, 0)} of groups had zero reward variance"
            if zero >= 0.5:
                v += " (no learning signal: the problems are too hard, or too easy, for this model)"
        card.verdict("rl", v + ".")
    elif _finite(before) and _finite(after):
        sig = "a significant change" if p is not None and p < ALPHA else "not a significant change"
        v = (
            f"held-out exact match {card.pct(before)} → {card.pct(after)} ({sig}, McNemar p = {card.num(p, 2)}) on "
            f"{card.num(n)} {_rl_set(card, rec)}"
        )
        if _finite(zero):
            v += f"; at the start {card.pct(zero, 0)} of groups had zero reward variance"
            if zero >= 0.5:
                v += " (no learning signal: the problems are too hard, or too easy, for this model)"
        card.verdict("rl", v + ".")
    card.warnings(rec)
    lo, hi = (m.get("heldout_em_diff_ci95") or [None, None])[:2]
    _kv_table(
        card,
        [
            ("held-out exact match, before → after", f"{card.pct(before)} → {card.pct(after)}"),
            ("change [95% CI]", f"{card.num(m.get('heldout_em_diff'))} [{card.num(lo)}, {card.num(hi)}]"),
            ("held-out problems", n),
            (
                "pass@1 / pass@k at the start (sampled)",
                f"{card.num(m.get('start_pass_at_1'))} / {card.num(m.get('start_pass_at_k'))}"
                if "start_pass_at_1" in m
                else None,
            ),
            ("groups with zero reward variance (all steps)", card.pct(m.get("zero_std_frac"))),
            ("truncated completions", card.pct(m.get("truncation_rate"))),
            (
                "steps × prompts × group size",
                f"{card.num(cfg.get('steps'))} × {card.num(cfg.get('prompts_per_step'))}"
                f" × {card.num(cfg.get('group_size'))}"
                if cfg
                else None,
            ),
            ("skipped steps (every group at zero variance)", c.get("skipped_steps")),
        ],
    )
    _effects_table(card, m)
    _curve(
        card,
        "rl_curves.png",
        "RLVR / GRPO",
        rows,
        [
            ("mean reward", ["reward_mean"]),
            ("sampled pass@k (training prompts)", sorted({k for r in rows for k in r if k.startswith("pass@")})),
            ("groups with zero variance", ["zero_std_frac"]),
            ("truncated completions", ["truncation_rate"]),
            ("completion length (tokens)", ["mean_length"]),
            ("KL to reference", ["kl"]),
        ],
    )


def _rl_set(card: Card, rec: dict) -> str:
    """Which held-out problems RL scored, in words that match the Evaluation section's."""
    task = str((rec.get("config") or {}).get("task", "arith"))
    if task.split(":")[0] == "arith":
        opts = task.partition(":")[2]
        easier = f" with {opts.replace(',', ', ')}" if opts else ""
        return f"problems of the arith held-out split{easier}, answered greedily in the chat template"
    return f"held-out problems of {task}"


def _grids_section(card: Card, run_dir: Path) -> None:
    card.heading("Grids")
    pngs = sorted((run_dir / "sweep").glob("**/*contour*.png")) if (run_dir / "sweep").is_dir() else []
    if not pngs:
        card.para("No learning-rate × batch-size grid was run in this run directory (`ledgerlm sweep`).")
        return
    for p in pngs:
        card.images[p.name] = p.read_bytes()
        card.md.append(f"![{p.name}]({p.name})\n")
        card.html.append(
            f'<img alt="{p.name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        )


def _eval_section(card: Card, records: dict) -> None:
    rec = _stage_section(card, records, "Evaluation", "eval", "Evaluation")
    if rec is None:
        return
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
            f"section's exact match is on {_rl_set(card, records['rl'])}, so the two figures are on different "
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
    if _finite(m.get("six_task_mean")):
        return None
    keys = [k for k in m if "." in k and not k.endswith(("_stderr", "_ci95", ".n")) and _finite(m[k])]
    for k in keys:
        task, metric = k.split(".", 1)
        if metric == HEADLINE.get(task) or metric == "exact_match_strict":
            return k
    return keys[0] if keys else None


def _samples_section(card: Card, records: dict, cfg: Config) -> None:
    card.heading("Sample generations")
    any_ = False
    for stage, rec in records.items():
        samples = rec.get("samples") or []
        if not samples:
            continue
        any_ = True
        card.heading(stage, 3)
        for s in samples[: cfg.max_samples]:
            card.md.append(f"- **{s['prompt']!s}** → `{s['completion']!s}`".replace("\n", " ⏎ "))
            card.html.append(
                f"<p class='sample'><b>{html.escape(s['prompt'])}</b> → <code>{html.escape(s['completion'])}</code></p>"
            )
        card.md.append("")
    if not any_:
        card.para("No model stage recorded samples.")


def _env_section(card: Card, records: dict) -> None:
    card.heading("Environment and code")
    rows = []
    for name, r in records.items():
        env, code = r.get("env", {}), r.get("code", {})
        commit = code.get("git_commit", "")[:12] or code.get("package_version")
        rows.append(
            [
                name,
                f"`{commit}`{' (dirty)' if code.get('git_dirty') else ''}",
                f"`{env.get('python')}`",
                f"`{env.get('torch')}`",
                env.get("gpu") or "CPU",
                card.num(env.get("cpu_count")),
            ]
        )
    card.table(["stage", "code", "python", "torch", "device", "CPUs"], rows)


def _summary(card: Card, records: dict) -> tuple[list[str], list[str]]:
    """The verdict of every stage and every warning, at the top of the report."""
    md, page = ["\n## Summary\n"], ["<h2>Summary</h2><ul class='summary'>"]
    for stage, text in card.verdicts:
        md.append(f"- **{stage}**: {text}")
        page.append(f"<li><b>{html.escape(stage)}</b>: {_inline_html(text)}</li>")
    page.append("</ul>")
    warns = [(s, w) for s, r in records.items() for w in r.get("warnings") or []]
    if warns:
        md.append("")
        for s, w in warns:
            md.append(f"> ⚠ **{s}** {w.get('code', '')}: {w.get('message', '')}")
            page.append(
                f"<p class='warn'>⚠ <b>{html.escape(s)}</b> {html.escape(w.get('code', ''))}: "
                f"{_inline_html(w.get('message', ''))}</p>"
            )
    md.append("")
    return md, page


def build(run_dir: Path, cfg: Config | None = None) -> Card:
    cfg = cfg or Config()
    run_dir = Path(run_dir)
    records = {
        r["stage"]: r for r in ledger.read_records(run_dir) if r.get("stage") != "report" and r.get("status") == "ok"
    }
    if not records:
        raise FileNotFoundError(f"{run_dir}: no completed stage records under {ledger.ledger_dir(run_dir)}")
    card = Card(run_dir)
    _run_section(card, records, cfg)
    _stages_section(card, records, cfg)
    _curation_section(card, records)
    _contamination_section(card, records)
    _tokenizer_section(card, records)
    _pretrain_section(card, records)
    _post_section(card, records)
    _grids_section(card, run_dir)
    _eval_section(card, records)
    _samples_section(card, records, cfg)
    _env_section(card, records)
    if cfg.baseline:
        diff.baseline_section(card, run_dir, Path(cfg.baseline))
    md, page = _summary(card, records)
    card.md[card.md.index("<!-- summary -->")] = "\n".join(md)
    card.html[card.html.index("<!-- summary -->")] = "".join(page)
    return card


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1120px;margin:1.5em auto;padding:0 16px;color:#222;"
    "line-height:1.4}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}"
    ".scroll{max-width:100%;overflow-x:auto}table{border-collapse:collapse;margin:.6em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top;overflow-wrap:break-word}"
    "th{background:#f3f3f3;text-align:left}td{max-width:420px}img{max-width:100%;height:auto;margin:.5em 0}"
    "code{background:#f5f5f5;padding:0 3px;overflow-wrap:anywhere}.verdict{background:#eef5ee;padding:6px 10px;"
    "border-left:4px solid #4a8a4a}.warn{background:#fff4e0;padding:6px 10px;border-left:4px solid #d08a00}"
    "ul.summary li{margin:.2em 0}.sample{overflow-wrap:anywhere}"
)


def run(cfg: Config, ctx) -> StageResult:
    card = build(ctx.run_dir, cfg)
    out = ctx.out_dir
    for name, data in card.images.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "report.md", "\n".join(card.md) + "\n")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ledgerlm report</title><style>{_CSS}</style></head>"
    )
    atomic_write_text(out / "report.html", page + "<body>" + "\n".join(card.html) + "</body></html>\n")
    ctx.log.info("report written to %s", out / "report.html")
    return StageResult(
        outputs={"report": out}, counters={"numbers_shown": card.shown, "images": len(card.images)}
    )


SPEC = StageSpec(
    name="report",
    config=Config,
    run=run,
    help="build report.md and report.html for a run from its ledger",
    inputs=inputs,
)
