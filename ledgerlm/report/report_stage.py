"""The report card: report.md and a self-contained report.html, built from the ledger alone.

Every number shown is read from a stage's ledger record, or from an artifact that record lists and whose sha256
still matches (the loss curves in metrics.jsonl, say), or derived from those (totals, costs, percentages). Numbers
pass through the `Card` formatters, which remember each one they printed, so a test can check that nothing in the
report came from anywhere else.

Each stage gets one verdict line (what it did, in its own units, and whether that is better than chance where a
test applies) followed by its table and figures; warnings the stage recorded are shown beside it.
"""

from __future__ import annotations

import argparse
import base64
import html
from dataclasses import dataclass
from pathlib import Path

from ledgerlm import ledger
from ledgerlm.card import Card, Section, inline_html, write_page
from ledgerlm.estimate import Estimate
from ledgerlm.report import diff
from ledgerlm.stage import STAGES, StageResult, StageSpec, get


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
    """Every other stage's record of the run. A run without one is a one-line error, unless the recipe runs other
    stages before the report (then they are yet to come)."""
    later = any(s in STAGES and s != "report" for s in getattr(ctx.recipe, "stages", []))
    records = ledger.read_records(ctx.run_dir) if later else ledger.existing_run(ctx.run_dir)
    own = {
        f"ledger:{r['stage']}": ledger.record_path(ctx.run_dir, r["stage"])
        for r in records
        if r.get("stage") != "report"
    }
    return {**own, **diff.baseline_inputs(cfg.baseline)}


def add_cli_args(p: argparse.ArgumentParser) -> None:
    """`ledgerlm report RUN_DIR` (the run to report on) as well as `--out RUN_DIR`."""
    p.add_argument("out", nargs="?", type=Path, default=argparse.SUPPRESS, metavar="RUN_DIR", help="the run directory")


def plan(cfg: Config, ctx) -> Estimate:
    base = f", compared with {cfg.baseline}" if cfg.baseline else ""
    return Estimate([f"report.md and report.html from the run's ledger records{base}; cost: seconds of CPU, no GPU"])


# ----------------------------------------------------------------------------- building blocks


# ----------------------------------------------------------------------------- the report's own sections


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
        page.append(f"<li><b>{html.escape(stage)}</b>: {inline_html(text)}</li>")
    page.append("</ul>")
    warns = [(s, w) for s, r in records.items() for w in r.get("warnings") or []]
    if warns:
        md.append("")
        for s, w in warns:
            md.append(f"> ⚠ **{s}** {w.get('code', '')}: {w.get('message', '')}")
            page.append(
                f"<p class='warn'>⚠ <b>{html.escape(s)}</b> {html.escape(w.get('code', ''))}: "
                f"{inline_html(w.get('message', ''))}</p>"
            )
    md.append("")
    return md, page


# ----------------------------------------------------------------------------- the stages' sections, in registry order


def stage_sections() -> list[tuple[str, Section]]:
    """(stage, section) for every section a registered stage declares (`StageSpec.report`), in registry order."""
    out = []
    for name in STAGES:
        report = get(name).report
        out += [(name, s) for s in (report if isinstance(report, tuple | list) else [report] if report else [])]
    return out


def _blocks() -> list[list[tuple[str, Section]]]:
    """The stage sections in reading order: one block per ungrouped section, one per group (at its first member),
    and the Grids (None) after the block of the last stage that trains something (`produces`), else last."""
    blocks, groups = [], {}
    last_training = max((i for i, n in enumerate(STAGES) if get(n).produces), default=-1)
    grids_after = None
    for name, sec in stage_sections():
        if sec.group and sec.group in groups:
            groups[sec.group].append((name, sec))
        else:
            blocks.append([(name, sec)])
            if sec.group:
                groups[sec.group] = blocks[-1]
        if list(STAGES).index(name) == last_training:
            block = groups.get(sec.group) or blocks[-1]
            grids_after = next(i for i, b in enumerate(blocks) if b is block)
    blocks.insert(len(blocks) if grids_after is None else grids_after + 1, None)
    return blocks


def titles() -> list[str]:
    """Every level-2 heading a report has, in order (each is there whether or not its stage ran)."""
    heads = ["Run", "Stages, time and cost"]
    for block in _blocks():
        heads.append("Grids" if block is None else block[0][1].group or block[0][1].title)
    return heads + ["Sample generations", "Environment and code"]


def _draw(card: Card, block: list[tuple[str, Section]] | None, records: dict) -> None:
    if block is None:
        _grids_section(card, card.run_dir)
        return
    group = block[0][1].group
    if not group:
        name, sec = block[0]
        card.heading(sec.title)
        if records.get(name):
            sec.render(card, records[name], records)
        elif sec.missing:
            card.para(sec.missing)
        return
    card.heading(group)
    ran = [(name, sec) for name, sec in block if records.get(name)]
    for name, sec in ran:
        card.heading(sec.title, 3)
        sec.render(card, records[name], records)
    if not ran:
        card.para(f"No {group.lower()} stage was run in this run.")


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
    for block in _blocks():
        _draw(card, block, records)
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
    write_page(out, "report", "ledgerlm report", _CSS, card)
    ctx.log.info("report written to %s", out / "report.html")
    return StageResult(outputs={"report": out}, counters={"numbers_shown": card.shown, "images": len(card.images)})


SPEC = StageSpec(
    name="report",
    config=Config,
    run=run,
    help="build report.md and report.html for a run from its ledger",
    inputs=inputs,
    plan=plan,
    add_cli_args=add_cli_args,
)
