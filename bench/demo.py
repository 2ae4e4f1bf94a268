"""Time the README's first command from a clean clone: set up, run the demo, get the report.

    python -m bench.demo [--repo .] [--keep]

Clones the committed HEAD into a temporary directory, runs the first line of README.md's first ```bash block
there exactly as written (venv + install + `ledgerlm run demo`), and records the wall time of the whole command
and of each stage, with the metrics each stage's ledger record holds (held-out accuracies and their tests, RL's
exact match before/after, zero-variance groups, eval scores, and any `metrics["effect"]` = {metric, before, after, n,
test, p} a stage writes), in BENCHMARKS.md. Every number of the section comes from that one recorded run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._record import record


def readme_command(readme: Path, line: int) -> str:
    lines, inside = [], False
    for text in readme.read_text().splitlines():
        if text.startswith("```bash"):
            inside = True
        elif inside and text.startswith("```"):
            break
        elif inside:
            lines.append(text.strip())
    return lines[line - 1]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def stage_numbers(recs: list[dict]) -> dict:
    """Every scalar metric of every stage's ledger record as `stage.key` (and `stage.effect.key` for a stage's
    paired before/after effect), plus `stage.seconds`."""
    out = {}
    for r in recs:
        st, m = r["stage"], r.get("metrics") or {}
        out[f"{st}.seconds"] = round(r["seconds"], 2)
        for k, v in m.items():
            if _is_num(v):
                out[f"{st}.{k}"] = float(f"{v:.6g}") if isinstance(v, float) else v
        eff = m.get("effect")
        for e in eff if isinstance(eff, list) else [eff] if isinstance(eff, dict) else []:
            prefix = f"{st}.effect" + (f".{e['metric']}" if isinstance(eff, list) else "")
            for k in ("before", "after", "n", "p"):
                if _is_num(e.get(k)):
                    out[f"{prefix}.{k}"] = float(f"{e[k]:.6g}") if isinstance(e[k], float) else e[k]
            if isinstance(e.get("improved"), bool):  # the direction: a significant p alone may be a loss
                out[f"{prefix}.improved"] = int(e["improved"])
    return out


def outcome(m: dict) -> str:
    """A stage's headline metrics, as recorded."""
    parts = []
    if "heldout_accuracy" in m:
        parts.append(f"held-out pair accuracy {m['heldout_accuracy']:.2f} (binomial p = {m['heldout_p_binomial']:.2g})")
    for k in ("init_logp_accuracy", "init_heldout_accuracy"):
        if _is_num(m.get(k)):
            parts.append(f"{k} {m[k]:.2f}")
    if "heldout_em_before" in m:
        parts.append(
            f"held-out EM {m['heldout_em_before']:.2f} → {m['heldout_em_after']:.2f} (n = {m.get('heldout_n')}, "
            f"McNemar p = {m['heldout_p_mcnemar']:.2g})"
        )
    for k in ("start_zero_std_frac", "zero_std_frac"):
        if _is_num(m.get(k)):
            parts.append(f"{k} {m[k]:.2f}")
    eff = m.get("effect")
    for e in eff if isinstance(eff, list) else [eff] if isinstance(eff, dict) else []:
        parts.append(
            f"effect on {e.get('metric')}: {e.get('before', float('nan')):.3g} → {e.get('after', float('nan')):.3g} "
            f"(n = {e.get('n')}, {e.get('test')} p = {e.get('p', float('nan')):.2g})"
        )
    if not parts:
        parts = [f"{k} {v:.4g}" for k, v in m.items() if _is_num(v) and ("val" in k or "score" in k)][:3]
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--keep", action="store_true", help="keep the clone (printed) instead of deleting it")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledgerlm-demo-"))
    clone = work / "ledgerlm"
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    cmd = readme_command(clone / "README.md", 1)
    print(f"+ {cmd}  (in {clone})", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    load0 = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env)
    total = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # install + pipeline, all processes
    load1 = os.getloadavg()
    if proc.returncode != 0:
        print(f"README command failed with exit code {proc.returncode}")
        return 1
    run = clone / "runs" / "demo"
    recs = sorted(
        (json.loads(p.read_text()) for p in (run / "ledger").glob("*.json")), key=lambda r: r.get("started", "")
    )
    staged = sum(r["seconds"] for r in recs)
    report = run / "report" / "report.html"
    numbers = {
        "total_wall_s": round(total, 1),
        "total_cpu_s": round(cpu, 1),
        "stages_wall_s": round(staged, 1),
        "load_1min_before": round(load0[0], 2),
        "load_1min_after": round(load1[0], 2),
        **stage_numbers(recs),
    }
    rows = "\n".join(f"| {r['stage']} | {r['seconds']:.1f} | {outcome(r.get('metrics') or {})} |" for r in recs)
    body = (
        f"README's first command from a fresh clone (new venv, `pip install`, `ledgerlm run demo`): "
        f"**{total:.0f} s** wall in total ({cpu:.0f} s CPU, user + system of every process; load average "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after), of which the pipeline's stages took {staged:.0f} s; "
        f"report written: {report.is_file()}. Goal: under 600 s on 2 cores. Outcomes are the stages' own metrics "
        f"from the run's ledger (`runs/demo/ledger/<stage>.json`).\n\n"
        f"| stage | seconds | outcome (ledger metrics) |\n|---|---:|---|\n{rows}\n"
    )
    if not args.no_record:
        record("demo-from-clean-clone", body, command="python -m bench.demo", numbers=numbers)
    else:
        print(body)
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
