"""The report card: report.md and a self-contained report.html, built from the ledger alone.

Every number shown is read from a stage's ledger record, or from an artifact that record lists and whose sha256
still matches (the loss curves in metrics.jsonl, say). Numbers pass through `Card.num`, which remembers each one it
printed, so a test can check that nothing in the report came from anywhere else.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.io import atomic_write_bytes, atomic_write_text, iter_jsonl
from ledgerlm.stage import StageResult, StageSpec

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


@dataclass
class Config:
    title: str = ""
    gpu_usd_per_hour: float = 2.5  # cost of a stage = its wall time x this (CPU stages: cpu_usd_per_hour)
    cpu_usd_per_hour: float = 0.10
    max_samples: int = 4


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    return {
        f"ledger:{r['stage']}": ledger.record_path(ctx.run_dir, r["stage"])
        for r in ledger.read_records(ctx.run_dir)
        if r.get("stage") != "report"
    }


# ----------------------------------------------------------------------------- building blocks


@dataclass
class Card:
    run_dir: Path
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    numbers: set[str] = field(default_factory=set)  # every number printed, as printed
    images: dict[str, bytes] = field(default_factory=dict)

    def num(self, x: Any, digits: int = 4) -> str:
        if x is None:
            return "—"
        if isinstance(x, bool):
            return str(x)
        if isinstance(x, int):
            s = f"{x:,}"
        elif isinstance(x, float):
            s = f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:,.0f}"
        else:
            return str(x)
        self.numbers.add(s)
        return s

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{_inline_html(text)}</p>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if not rows:
            self.para("_(none)_")
            return
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        self.md.append("")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")

    def figure(self, name: str, fig) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
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


def _scalars(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _scalars(v, key + ".")
        elif isinstance(v, int | float | bool | str) and not (isinstance(v, str) and len(v) > 80):
            out.append((key, v))
    return out


# ----------------------------------------------------------------------------- sections


def _run_section(card: Card, records: dict, cfg: Config) -> None:
    first = next(iter(records.values()))
    card.heading(cfg.title or f"ledgerlm report — {first.get('recipe', '?')}", 1)
    card.heading("Run")
    card.table(
        ["field", "value"],
        [
            ["recipe", f"`{first.get('recipe')}`"],
            ["recipe file", f"`{first.get('recipe_file')}`"],
            ["seed", card.num(first.get("seed"))],
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
        rows.append(
            [name, r.get("status"), r.get("device"), card.num(secs), card.num(usd), card.num(n_out), card.num(size)]
        )
    rows.append(["**total**", "", "", card.num(total_s), card.num(total_usd), "", ""])
    card.table(["stage", "status", "device", "seconds", "cost (USD)", "output files", "output bytes"], rows)
    card.para(
        f"Cost assumes {card.num(cfg.gpu_usd_per_hour)} USD per GPU-hour and {card.num(cfg.cpu_usd_per_hour)} "
        "USD per CPU-hour (report settings), times each stage's recorded wall time."
    )


def _curation_section(card: Card, records: dict) -> None:
    card.heading("Curation funnel")
    rec = records.get("curate")
    if not rec:
        card.para("Curation was not run in this run.")
        return
    c = rec.get("counters", {})
    steps = c.get("by_step") or []
    if steps:
        rows = [
            [
                s.get("step"),
                card.num(s.get("in")),
                card.num(s.get("kept")),
                card.num(s.get("dropped_docs")),
                card.num(s.get("tokens_in")),
                card.num(s.get("tokens_kept")),
            ]
            for s in steps
        ]
        card.table(["step", "docs in", "docs kept", "docs dropped", "tokens in", "tokens kept"], rows)
    dropped = c.get("dropped", {})
    tokens = c.get("dropped_tokens", {})
    card.table(
        ["reason", "documents", "tokens"],
        [[f"`{k}`", card.num(v), card.num(tokens.get(k))] for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])],
    )
    card.para(
        f"Read {card.num(c.get('read'))} documents, kept {card.num(c.get('kept'))}; every excluded document is "
        "under `curate/excluded/` with its reason (`ledgerlm inspect RUN --reason R`)."
    )
    if dropped:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(dropped) + 1))
        items = sorted(dropped.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="#b5523b")
        ax.set_xlabel("documents dropped")
        ax.set_title("Why documents were dropped")
        card.figure("curation_funnel.png", fig)


def _contamination_section(card: Card, records: dict) -> None:
    card.heading("Contamination")
    rows = (records.get("curate") or {}).get("metrics", {}).get("contamination") or []
    if not rows:
        card.para("No decontamination was configured in this run.")
        return
    header = list(rows[0].keys())
    card.table(
        header, [[card.num(r.get(h)) if not isinstance(r.get(h), str) else r.get(h) for h in header] for r in rows]
    )


def _tokenizer_section(card: Card, records: dict) -> None:
    card.heading("Tokenizer")
    rec = records.get("tokenize")
    if not rec:
        card.para("Tokenisation was not run in this run.")
        return
    card.table(["metric", "value"], [[f"`{k}`", card.num(v)] for k, v in _scalars(rec.get("metrics", {}))])
    card.table(["counter", "value"], [[f"`{k}`", card.num(v)] for k, v in _scalars(rec.get("counters", {}))])


def _curve(card: Card, name: str, title: str, rows: list[dict], keys: list[str], x: str = "step") -> None:
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, k in zip(axes[0], present, strict=True):
        pts = [(r[x], r[k]) for r in rows if r.get(k) is not None and x in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None)
        ax.set_title(k)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    card.figure(name, fig)


def _pretrain_section(card: Card, records: dict) -> None:
    card.heading("Pretraining")
    rec = records.get("pretrain")
    if not rec:
        card.para("Pretraining was not run in this run.")
        return
    rows = _artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
    _curve(card, "pretrain_loss.png", "Pretraining", rows, ["loss", "val_loss", "lr", "tokens_per_s", "mfu"])
    card.table(["metric", "value"], [[f"`{k}`", card.num(v)] for k, v in _scalars(rec.get("metrics", {}))])
    kit = {
        k: v
        for k, v in rec.get("config", {}).items()
        if k in ("dropout", "weight_decay", "ema", "average_last_k", "epochs", "optimizer", "muon") and v
    }
    if kit:
        card.para("Data-efficiency switches: " + ", ".join(f"`{k}={v}`" for k, v in kit.items()))


def _post_section(card: Card, records: dict) -> None:
    card.heading("Post-training")
    shown = False
    for stage in ("sft", "interpolate", "dpo", "reward", "rl"):
        rec = records.get(stage)
        if not rec:
            continue
        shown = True
        card.heading(stage, 3)
        m = rec.get("metrics", {})
        sweep = m.get("sweep") if isinstance(m.get("sweep"), list) else None
        if sweep:
            header = list(sweep[0].keys())
            card.table(header, [[card.num(r.get(h)) for h in header] for r in sweep])
        card.table(["metric", "value"], [[f"`{k}`", card.num(v)] for k, v in _scalars(m)])
        rows = _artifact_jsonl(rec, card.run_dir, "metrics.jsonl")
        if stage == "rl":
            _curve(
                card,
                "rl_curves.png",
                "RLVR / GRPO",
                rows,
                ["reward_mean", "pass_at_k", "zero_std_frac", "truncation_rate", "mean_length", "kl"],
            )
        elif rows:
            _curve(card, f"{stage}_loss.png", stage, rows, ["loss", "val_loss", "accuracy", "reward_acc"])
    if not shown:
        card.para("No post-training stage was run in this run.")


def _grids_section(card: Card, run_dir: Path) -> None:
    card.heading("Grids")
    pngs = sorted((run_dir / "sweep").glob("**/*contour*.png")) if (run_dir / "sweep").is_dir() else []
    if not pngs:
        card.para("No learning-rate x batch-size grid was run in this run directory (`ledgerlm sweep`).")
        return
    for p in pngs:
        card.images[p.name] = p.read_bytes()
        card.md.append(f"![{p.name}]({p.name})\n")
        card.html.append(
            f'<img alt="{p.name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        )


def _eval_section(card: Card, records: dict) -> None:
    card.heading("Evaluation")
    rec = records.get("eval")
    if not rec:
        card.para("Evaluation was not run in this run.")
        return
    m = rec.get("metrics", {})
    rows = []  # flat ledger metrics: "<task>.<metric>", "<task>.<metric>_stderr", "<task>.<metric>_ci95", "<task>.n"
    for key, value in m.items():
        task, _, metric = key.partition(".")
        if not metric or metric == "n" or metric.endswith(("_stderr", "_ci95")) or isinstance(value, dict | list):
            continue
        lo, hi = (m.get(f"{key}_ci95") or [None, None])[:2]
        rows.append(
            [
                task,
                metric,
                card.num(value),
                card.num(m.get(f"{key}_stderr")),
                f"[{card.num(lo)}, {card.num(hi)}]",
                card.num(m.get(f"{task}.n")),
            ]
        )
    card.table(["task", "metric", "value", "stderr", "95% CI", "n"], rows)
    six = m.get("six_task_mean")
    if six is not None:
        card.para(f"Six-task mean: **{card.num(six if not isinstance(six, dict) else six.get('value'))}**")
    refs = (rec.get("extra") or {}).get("references") or []
    if refs:
        card.para("Reference rows — reported, not re-run:")
        card.table(
            ["model", "six-task mean", "source"],
            [[r.get("model"), card.num(r.get("six_task_mean")), r.get("source", "")] for r in refs],
        )


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
            card.html.append(f"<p><b>{html.escape(s['prompt'])}</b> → <code>{html.escape(s['completion'])}</code></p>")
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
    return card


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    "th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}code{background:#f5f5f5;padding:0 3px}"
)


def run(cfg: Config, ctx) -> StageResult:
    card = build(ctx.run_dir, cfg)
    out = ctx.out_dir
    for name, data in card.images.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "report.md", "\n".join(card.md) + "\n")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ledgerlm report</title><style>{_CSS}</style></head>"
    )
    atomic_write_text(out / "report.html", page + "<body>" + "\n".join(card.html) + "</body></html>\n")
    ctx.log.info("report written to %s", out / "report.html")
    return StageResult(
        outputs={"report": out}, counters={"numbers_shown": len(card.numbers), "images": len(card.images)}
    )


SPEC = StageSpec(
    name="report",
    config=Config,
    run=run,
    help="build report.md and report.html for a run from its ledger",
    inputs=inputs,
)
