"""`ledgerlm plan RECIPE`: validate a recipe and print, stage by stage, what each reads (checked where it can be)
and what its own `plan` says it would do and cost on the target machine (`--gpu`, `--mfu`, `--cpus`, `--ram`:
ledgerlm.estimate.Target). Each stage estimates itself; this module names none of them.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from ledgerlm import hub
from ledgerlm.device import resolve_device
from ledgerlm.estimate import Estimate, Target, target
from ledgerlm.recipe import Recipe
from ledgerlm.stage import CHECKS, STAGES, StageContext, get, get_check


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ledgerlm plan` beyond the recipe, --out and overrides."""
    p.add_argument("--gpu", default="h100", help="GPU to estimate hours on (a key of ledgerlm.device.GPUS, e.g. h100)")
    p.add_argument(
        "--mfu", type=float, default=None, help="model FLOPs utilisation to assume (default: measured/stated)"
    )
    p.add_argument("--cpus", type=int, default=16, help="CPU cores of the host for the data stages (default 16)")
    p.add_argument("--ram", type=float, default=128, help="host RAM in GiB for the data stages (default 128)")


def main(recipe: Recipe, run_dir: Path, args) -> int:
    t = target(args.gpu, args.mfu, args.cpus, args.ram)  # an unknown GPU: ConfigError (exit 2) naming the known
    print("\n".join(plan_lines(recipe, run_dir, t)))
    return 0


_HUB_UP: bool | None = None


def _hub_reachable() -> bool:
    global _HUB_UP
    if _HUB_UP is None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
            _HUB_UP = True
        except OSError:
            _HUB_UP = False
    return _HUB_UP


def _check_note(p, run_dir: Path) -> str:
    """What `plan` could verify about one input: a Hub dataset/model exists, a local path exists."""
    if isinstance(p, str) and p.startswith("hub:"):
        if hub.mirror() is not None:
            return f"  [in the Hub mirror {hub.mirror()}]" if hub.local_copy(p) else "  [NOT in the Hub mirror]"
        if not _hub_reachable():
            return "  [not checked: the Hugging Face Hub is unreachable from here]"
        name = p[4:].split("[")[0]
        try:
            from huggingface_hub import HfApi

            api, repo = HfApi(), "/".join(name.split("/")[:2])
            found = api.repo_exists(repo, repo_type="dataset") or api.repo_exists(repo)
            return "  [on the Hub]" if found else "  [NOT FOUND on the Hub]"
        except Exception as e:  # noqa: BLE001 - plan reports, it does not stop
            return f"  [not checked: {type(e).__name__}]"
    path = Path(p).resolve()
    if path.is_relative_to(Path(run_dir).resolve()):
        return "" if path.exists() else "  [produced by an earlier stage]"
    return "" if path.exists() else "  [MISSING]"


def plan_lines(recipe: Recipe, run_dir: Path, t: Target | None = None) -> list[str]:
    """What `ledgerlm plan` prints: each stage, what it reads and what it would do and cost on `t` (None: no
    estimates, for this machine's device)."""
    device = t.device if t else resolve_device(recipe.device)
    lines = [
        f"recipe {recipe.name!r} ({recipe.source}) seed={recipe.seed} device={device}",
        f"run directory: {run_dir}",
    ]
    if t is not None:
        lines += [
            f"estimates on {t.gpu.name} at MFU {t.mfu:.1%} ({t.mfu_source}); "
            f"data stages on {t.cpus} CPU cores, {t.ram_gib:.0f} GiB RAM (costs fitted by bench.scale, BENCHMARKS.md)"
        ]
    mirror = recipe.hub_mirror.resolve(run_dir)
    if mirror is not None:
        built = mirror.is_dir()
        lines.append(f"Hub names are read from the mirror {mirror}" + ("" if built else " (made when the run starts)"))
        if built:
            with hub.using(mirror):
                return lines + _plan_stages(recipe, run_dir, t)
    return lines + _plan_stages(recipe, run_dir, t)


def _plan_stages(recipe: Recipe, run_dir: Path, t: Target | None) -> list[str]:
    lines, hours, unestimated = [], 0.0, []
    device = t.device.split(" ")[0] if t else resolve_device(recipe.device)
    for i, stage in enumerate(recipe.stages, 1):
        if stage in CHECKS:
            lines.append(f"{i:2d}. {stage}: {get_check(stage).plan}")
            continue
        spec = get(stage)
        cfg = recipe.section(stage)
        ctx = StageContext(run_dir=Path(run_dir), stage=stage, recipe=recipe, seed=recipe.seed, device=device, target=t)
        lines.append(f"{i:2d}. {stage} ({STAGES[stage]})")
        if spec.inputs:
            try:
                for name, p in spec.inputs(cfg, ctx).items():
                    lines.append(f"      reads {name}: {p}{_check_note(p, run_dir)}")
            except Exception as e:  # plan reports, it does not stop at the first problem
                lines.append(f"      inputs: cannot check yet ({e})")
        said = spec.plan(cfg, ctx) if spec.plan else []
        if isinstance(said, Estimate):
            hours += said.gpu_hours
            said = said.lines
        elif t is not None:
            unestimated.append(stage)
            said = [*said, f"cost on {t.gpu.name}: not estimated (no cost model for this stage)"]
        lines += [f"      {line}" for line in said]
    if t is not None:
        rest = f"; not estimated: {', '.join(unestimated)}" if unestimated else ""
        lines.append(f"total estimated: ~{hours:.1f} GPU-hours on {t.gpu.name}{rest}")
    return lines
