"""The real-shape rehearsal, timed: `smollm-135m-fullshape` stage by stage on this CPU, each stage its own process,
with its wall time, CPU time and peak memory (the process's peak RSS, from wait4), and the 1-minute load average.

    python -m bench.fullshape [--out DIR] [--no-record]

Machine settings, not recipe values, as for the rehearsal (docs/recipes.md): one intra-op thread, torch.compile
tracing with aot_eager (no C++ build of a 30-layer model), and precision bf16 kept only where the CPU has native
bf16 (else LEDGERLM_CPU_BF16=0: emulated bf16 matmuls ran ~4x slower than fp32 here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._record import record

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "smollm-135m-fullshape"
STAGES = ["curate", "tokenize", "pretrain", "sft", "interpolate", "rl", "eval", "report", "audit"]


def _run(cmd: list[str], env: dict, log) -> dict:
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": p.returncode,
        "wall_s": round(time.perf_counter() - t, 1),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_gib": round(ru.ru_maxrss / 2**20, 2),  # Linux: KiB
        "load_1min": round(os.getloadavg()[0], 2),
    }


def run_fullshape(out: Path, log_path: Path) -> dict:
    from ledgerlm.device import cpu_has_bf16

    env = dict(os.environ, OMP_NUM_THREADS="1", LEDGERLM_COMPILE_BACKEND="aot_eager")
    env["LEDGERLM_CPU_BF16"] = "1" if cpu_has_bf16() else "0"
    py = [sys.executable, "-m", "ledgerlm"]
    rows = {}
    with open(log_path, "w") as log:
        for st in STAGES:
            if st == "audit":
                cmd = py + ["audit", str(out)]
            elif st == "report":
                cmd = py + ["report", str(out)]
            else:
                cmd = py + [st, "--recipe", RECIPE, "--out", str(out)]
            rows[st] = _run(cmd, env, log)
            print(st, json.dumps(rows[st]), flush=True)
            if rows[st]["rc"] != 0:
                break
    return {"stages": rows, "cpu_bf16": env["LEDGERLM_CPU_BF16"] == "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-record", dest="record", action="store_false")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fullshape-")) / "run"
    out.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    res = run_fullshape(out, out.parent / "fullshape.log")
    rows = res["stages"]
    ok = all(r["rc"] == 0 for r in rows.values()) and len(rows) == len(STAGES)
    pre = (
        json.loads((out / "ledger" / "pretrain.json").read_text())
        if (out / "ledger" / "pretrain.json").exists()
        else {}
    )
    mc = (pre.get("extra") or {}).get("model_config") or {}
    m = pre.get("metrics") or {}
    table = ["| stage | exit | wall s | CPU s | peak RSS GiB | load (1 min) after |", "|---|---:|---:|---:|---:|---:|"]
    for st, r in rows.items():
        table.append(
            f"| {st} | {r['rc']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_gib']:.2f} | {r['load_1min']:.1f} |"
        )
    tot_cpu = sum(r["cpu_s"] for r in rows.values())
    tot_wall = sum(r["wall_s"] for r in rows.values())
    peak = max(r["peak_rss_gib"] for r in rows.values())
    body = (
        f"`{RECIPE}` (the real recipe's model and sequence: {pre.get('counters', {}).get('params', 0):,} parameters, "
        f"{mc.get('n_layer')} layers, vocab {mc.get('vocab_size')}, seq 2048; compile with aot_eager; precision bf16 "
        f"{'as bf16 (native on this CPU)' if res['cpu_bf16'] else 'run as fp32 (no native bf16 on this CPU)'}; "
        f"one intra-op thread), each stage its own process. {'All stages passed, audit included' if ok else 'FAILED'}. "
        f"Total {tot_wall:.0f} s wall, {tot_cpu:.0f} s CPU; peak RSS {peak:.2f} GiB (largest stage). Pretraining: "
        f"{m.get('tok_s') or 0:,.0f} tokens/s after the first step, validation loss by source "
        f"{json.dumps({k: round(v, 3) for k, v in (m.get('val_loss_by_source') or {}).items()})}. Load average "
        f"(1 min) {load0:.1f} at the start on a 2-core machine shared with other jobs.\n\n" + "\n".join(table)
    )
    print(body)
    if args.record:
        record(
            "fullshape-rehearsal",
            body,
            numbers={"wall_s": tot_wall, "cpu_s": tot_cpu, "peak_rss_gib": peak, "passed": ok},
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
