"""`ledgerlm sweep`: run one stage over a grid of recipe values (e.g. learning rate x batch size), read each cell's
metrics from its ledger record, and write a table plus one contour plot per metric (as SmolTulu's Figure 1).

    ledgerlm sweep demo --stage sft --grid sft.lr=1e-4,3e-4,1e-3 --grid sft.batch_size=4,8 \\
        --metric final_val_loss --out runs/demo

Each cell is a small run directory `RUN/sweep/<cell>/` whose upstream stages (pretrain, tokenize, ...) are links to
the main run's, so the stage runs unchanged through the normal runner and has its own ledger record: a re-invoked
sweep skips the cells that are already up to date and only runs the missing ones. Outputs in `RUN/sweep/`:
`sweep.csv`, `sweep.md`, `sweep.json` (grid, cells, each cell's record hash) and `<metric>.png` / `<metric>.svg`.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ledgerlm import ledger
from ledgerlm.config import ConfigError, apply_overrides, load_raw_recipe, parse_override
from ledgerlm.io import atomic_path, atomic_write_json, atomic_write_text
from ledgerlm.pipeline import run_stage
from ledgerlm.recipe import build_recipe
from ledgerlm.stage import STAGES, get


def _number(v):
    """YAML 1.1 reads '1e-4' as a string; grid axes need numbers to be plotted (the recipe accepts either)."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def parse_grid(specs: list[str]) -> dict[str, list]:
    """['sft.lr=1e-4,3e-4', 'sft.batch_size=4,8'] -> {'sft.lr': [1e-4, 3e-4], 'sft.batch_size': [4, 8]}."""
    grid: dict[str, list] = {}
    for spec in specs:
        key, _, raw = spec.partition("=")
        if not key or not raw or any(not part for part in key.split(".")):
            raise ConfigError("--grid", f"expected key.sub=v1,v2,..., got {spec!r}")
        values = [_number(parse_override(f"{key}={v.strip()}")[1]) for v in raw.split(",") if v.strip()]
        if not values:
            raise ConfigError("--grid", f"{key}: no values")
        if key in grid:
            raise ConfigError("--grid", f"{key} given twice")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError("--grid", f"{key}: repeated values {values}")
        grid[key] = values
    if not grid:
        raise ConfigError("--grid", "give at least one --grid key=v1,v2")
    return grid


def cell_name(assign: dict) -> str:
    """A readable, filesystem-safe directory name: 'lr=0.0001_batch_size=4'."""
    parts = [
        f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in assign.items()
    ]
    return re.sub(r"[^\w.=+-]", "-", "_".join(parts))


def _link_upstream(main_run: Path, cell_dir: Path, stage: str) -> list[str]:
    """Make the main run's other stage outputs visible in the cell (relative symlinks) and copy their records."""
    linked = []
    for name in STAGES:
        if name == stage or not (main_run / name).is_dir():
            continue
        link = cell_dir / name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(os.path.relpath(main_run / name, cell_dir), target_is_directory=True)
        if ledger.record_path(main_run, name).is_file():
            dst = ledger.record_path(cell_dir, name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ledger.record_path(main_run, name), dst)
        linked.append(name)
    return linked


def run_sweep(
    recipe: str | Path,
    stage: str,
    grid: dict[str, list],
    run_dir: Path,
    metrics: list[str] | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    echo=print,
) -> dict:
    """Run `stage` for every cell of `grid` under run_dir/sweep/ and write the table and plots. Returns the summary."""
    if stage not in STAGES:
        raise ConfigError("--stage", f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    run_dir = Path(run_dir)
    raw, source = load_raw_recipe(recipe)
    raw = apply_overrides(raw, overrides or [])
    keys = list(grid)
    for k in keys:
        if k.split(".")[0] not in STAGES and k.split(".")[0] not in ("seed",):
            raise ConfigError("--grid", f"{k}: keys are <stage>.<field> (or seed)")
    sweep_dir = run_dir / "sweep"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cells = []
    for values in itertools.product(*grid.values()):
        assign = dict(zip(keys, values))
        cell_raw = apply_overrides(raw, assign)
        cell_raw["stages"] = [stage]
        cell_recipe = build_recipe(cell_raw, source, need_all=False)  # validate every cell before running any
        cells.append((assign, cell_recipe))
    metrics = list(metrics or get(stage).headline)  # not given: the stage's headline metrics
    if not metrics:
        raise ConfigError("--metric", f"no default metric for stage {stage!r}; pass --metric NAME")
    rows = []
    for i, (assign, cell_recipe) in enumerate(cells, 1):
        name = cell_name(assign)
        cell_dir = sweep_dir / name
        cell_dir.mkdir(parents=True, exist_ok=True)
        _link_upstream(run_dir, cell_dir, stage)
        echo(f"[sweep] cell {i}/{len(cells)}: {name}")
        _, record = run_stage(cell_recipe, stage, cell_dir, force=force, echo=echo)
        got = {**record.get("counters", {}), **record.get("metrics", {})}
        missing = [m for m in metrics if m not in got]
        if missing:
            raise ConfigError("--metric", f"{missing} not in the {stage} record (has: {', '.join(sorted(got))})")
        rows.append(
            {
                "cell": name,
                **assign,
                **{m: got[m] for m in metrics},
                "seconds": record.get("seconds"),
                "record_sha256": record.get("record_sha256"),
            }
        )
    summary = {"recipe": str(source), "stage": stage, "axes": keys, "grid": grid, "metrics": metrics, "rows": rows}
    write_outputs(sweep_dir, summary)
    return summary


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def write_outputs(sweep_dir: Path, summary: dict) -> list[Path]:
    keys, metrics, rows = summary["axes"], summary["metrics"], summary["rows"]  # (sweep.json sorts its keys)
    cols = ["cell", *keys, *metrics, "seconds"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([r[c] for c in cols])
    atomic_write_text(sweep_dir / "sweep.csv", buf.getvalue())
    md = [f"# Sweep of `{summary['stage']}` over {' x '.join(keys)}", ""]
    for m in metrics:
        best = _best(rows, m)
        md.append(f"- best {m}: {_fmt(best[m])} at {', '.join(f'{k}={_fmt(best[k])}' for k in keys)}")
    md += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    plots = plot(sweep_dir, summary)
    md += ["", *[f"![{p.stem}]({p.name})" for p in plots if p.suffix == ".png"]]
    atomic_write_text(sweep_dir / "sweep.md", "\n".join(md) + "\n")
    atomic_write_json(sweep_dir / "sweep.json", {**summary, "plots": [p.name for p in plots]})
    return [sweep_dir / "sweep.csv", sweep_dir / "sweep.md", sweep_dir / "sweep.json", *plots]


def _lower_is_better(metric: str) -> bool:
    return any(s in metric for s in ("loss", "ppl", "perplexity", "seconds"))


def _best(rows: list[dict], metric: str) -> dict:
    ok = [r for r in rows if isinstance(r[metric], int | float) and math.isfinite(r[metric])] or rows
    return (min if _lower_is_better(metric) else max)(ok, key=lambda r: r[metric])


def _log_axis(values: list) -> bool:
    """Log scale for positive numeric axes spanning >= 4x (learning rates, batch sizes)."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(nums) == len(values) and min(nums) > 0 and max(nums) / min(nums) >= 4


def plot(sweep_dir: Path, summary: dict) -> list[Path]:
    """One figure per metric: a filled contour over the first two grid axes (a line plot for a 1-D grid), each
    cell marked with its value, the best cell starred. Written as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, rows, grid = summary["axes"], summary["rows"], summary["grid"]
    axes = [k for k in keys if len(grid[k]) > 1]
    if len(axes) > 2 or not axes:
        return []  # the table has it all; a contour needs exactly one or two varying axes
    out = []
    for m in summary["metrics"]:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        best = _best(rows, m)
        if len(axes) == 1:
            x = axes[0]
            xs = [r[x] for r in rows]
            ax.plot(xs, [r[m] for r in rows], "o-")
            ax.plot([best[x]], [best[m]], "*", ms=14, color="tab:red")
            ax.set_xlabel(x)
            ax.set_ylabel(m)
            if _log_axis(grid[x]):
                ax.set_xscale("log")
        else:
            x, y = axes
            xv, yv = grid[x], grid[y]
            z = np.full((len(yv), len(xv)), np.nan)
            for r in rows:
                z[yv.index(r[y]), xv.index(r[x])] = r[m]
            xc = np.log10(xv) if _log_axis(xv) else np.arange(len(xv), dtype=float)
            yc = np.log2(yv) if _log_axis(yv) else np.arange(len(yv), dtype=float)
            zm = np.ma.masked_invalid(z)
            cs = ax.contourf(xc, yc, zm, levels=12, cmap="viridis_r" if _lower_is_better(m) else "viridis")
            fig.colorbar(cs, ax=ax, label=m)
            for i, yy in enumerate(yc):
                for j, xx in enumerate(xc):
                    ax.plot(xx, yy, "k.", ms=4)
                    ax.annotate(
                        _fmt(z[i, j]), (xx, yy), textcoords="offset points", xytext=(3, 3), fontsize=7, clip_on=False
                    )
            ax.plot(xc[xv.index(best[x])], yc[yv.index(best[y])], "*", ms=16, color="tab:red", mec="white")
            # pad the axes so the edge cells' labels and the star are not clipped
            for lim, c in ((ax.set_xlim, xc), (ax.set_ylim, yc)):
                pad = 0.08 * (c.max() - c.min() or 1.0)
                lim(c.min() - pad, c.max() + pad)
            ax.set_xticks(xc, [_fmt(v) for v in xv])
            ax.set_yticks(yc, [_fmt(v) for v in yv])
            ax.set_xlabel(x + (" (log scale)" if _log_axis(xv) else ""))
            ax.set_ylabel(y + (" (log scale)" if _log_axis(yv) else ""))
        ax.set_title(f"{summary['stage']}: {m}")
        fig.tight_layout()
        safe = re.sub(r"[^\w.-]", "_", m)
        for ext in ("png", "svg"):
            path = sweep_dir / f"{safe}.{ext}"
            with atomic_path(path) as tmp:
                # svgs carry a date and random ids by default; fix them so identical sweeps give identical files
                meta = {"Date": None} if ext == "svg" else {"Software": None}
                with matplotlib.rc_context({"svg.hashsalt": "ledgerlm"}):
                    fig.savefig(tmp, format=ext, dpi=120, metadata=meta)
            out.append(path)
        plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# CLI (`ledgerlm sweep`)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="built-in recipe name or YAML path")
    p.add_argument("--stage", required=True, help="the stage to run in every cell (e.g. sft)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="an axis, e.g. sft.lr=1e-4,3e-4")
    p.add_argument("--metric", action="append", default=[], help="metric from the stage's record (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="the main run directory (default: runs/<recipe name>)")
    p.add_argument("--force", action="store_true", help="re-run cells that are up to date")
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides for all cells")


def main(args) -> int:
    grid = parse_grid(args.grid)
    out = args.out
    if out is None:
        raw, _ = load_raw_recipe(args.recipe)
        out = Path("runs") / str(raw.get("name", Path(str(args.recipe)).stem))
    summary = run_sweep(args.recipe, args.stage, grid, out, args.metric or None, args.overrides, args.force)
    print((Path(out) / "sweep" / "sweep.md").read_text())
    print(json.dumps({"rows": len(summary["rows"]), "dir": str(Path(out) / "sweep")}))
    return 0
