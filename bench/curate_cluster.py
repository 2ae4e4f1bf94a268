"""Curate on a real local Ray cluster and a real one-node Slurm, and check the outputs equal the local executor's.

    scripts/slurm-local.sh start                       # once, as root (apt-get install -y slurm-wlm munge first)
    python -m bench.curate_cluster [--engines local,ray,slurm] [--tasks 4] [--out DIR] [--no-record]

Data: the rehearsal's Hub mirror (ledgerlm/rehearsal/), turned into local Parquet copies exactly as
docs/recipes.md ("Local copies") says — FineWeb-Edu's sample files as they are, the three other sources exported
with `datasets` — so the cluster recipes run as written, only pointed at those copies: `ledgerlm curate --recipe
curate-slurm` (and `curate-ray`, and `curate-slurm` with `curate.executor.kind=local` as the reference). Ray runs on
a head started here (`ray start --head --block` on 127.0.0.1, stopped at the end); Slurm on the cluster that
scripts/slurm-local.sh started. Every engine must give the same sha256 for every curate output (kept, excluded,
contamination table) as the local executor; the wall time and load average of each run go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = {  # recipe source -> (Hub repo, config) as smollm-135m-1gpu reads it; index = position in curate-slurm
    "fineweb_edu": ("HuggingFaceFW/fineweb-edu", "sample-100BT"),
    "finemath": ("HuggingFaceTB/finemath", "finemath-4plus"),
    "code": ("codeparrot/codeparrot-clean", None),
    "reasoning": ("open-r1/OpenR1-Math-220k", "default"),
}
RAY_PORT = 6391


def local_copies(out: Path) -> tuple[Path, Path]:
    """(mirror, data dir): the rehearsal's Hub mirror and the Parquet copies the cluster recipes read."""
    import datasets

    from ledgerlm import hub, rehearsal

    mirror, data = out / "hub", out / "data"
    if not rehearsal.is_built(mirror):
        rehearsal.write_mirror(mirror)
    if not (data / ".done").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        with hub.using(mirror):
            # docs/recipes.md: FineWeb-Edu's sample files are used as they are (a symlink to the downloaded folder)
            src = Path(hub.dataset(SOURCES["fineweb_edu"][0])) / "sample" / "100BT"
            (data / "fineweb_edu").symlink_to(src.resolve())
            for name in ("finemath", "code", "reasoning"):  # ... the others exported as parquet shards
                repo, config = SOURCES[name]
                ds = datasets.load_dataset(hub.dataset(repo), config, split="train", **hub.cache_kwargs())
                (data / name).mkdir()
                for i in range(4):
                    ds.shard(4, i, contiguous=True).to_parquet(str(data / name / f"part-{i:02d}.parquet"))
        (data / ".done").write_text("ok\n")
    return mirror, data


def overrides(mirror: Path, data: Path, kind: str, tasks: int) -> list[str]:
    """curate-slurm pointed at the local copies, on `kind`, at a size for one small machine."""
    out = [f"hub_mirror.path={mirror}", f"curate.executor.kind={kind}", f"curate.executor.datatrove_tasks={tasks}"]
    out += [f"curate.executor.workers={tasks}", "curate.shards=4", "curate.segment_dedup.min_docs=40"]
    out += ["curate.executor.slurm_cpus_per_task=1", "curate.executor.slurm_mem_per_cpu_gb=1"]
    out += ["curate.executor.poll_seconds=2"]
    out += [f"curate.sources[{i}].path={data / name}" for i, name in enumerate(SOURCES)]
    return out


def run_curate(recipe: str, cwd: Path, run_dir: str, overrides: list[str], env: dict | None = None) -> dict:
    """`ledgerlm curate --recipe RECIPE --out RUN_DIR OVERRIDES...` in `cwd` -> {outputs, wall_s, cpu_s, load}.

    RUN_DIR is relative, as users write it: Ray's workers, which start elsewhere, once failed on that."""
    shutil.rmtree(cwd / run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "ledgerlm", "curate", "--recipe", recipe, "--out", run_dir, *overrides]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    rec = json.loads((cwd / run_dir / "ledger" / "curate.json").read_text())
    return {
        "outputs": {k: v["sha256"] for k, v in rec["outputs"].items()},
        "kept": rec["counters"]["kept"],
        "read": rec["counters"]["read"],
        "wall_s": wall,
        # CPU of this process's children: the whole run for the local executor; only the driver for Ray and Slurm,
        # whose tasks run in processes the cluster started
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "load": load,
        "command": " ".join(["ledgerlm", *cmd[3:]]),
        # the terminal's output and the stage log, where other libraries' messages go while a stage runs
        "output": p.stdout + p.stderr + (cwd / run_dir / "logs" / "curate.log").read_text(errors="replace"),
    }


@contextlib.contextmanager
def ray_head(cpus: int):
    """A Ray head on 127.0.0.1 for the duration (`ray start --head --block`, stopped by its process id)."""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    cmd = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={RAY_PORT}",
           f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{RAY_PORT}"
    try:
        for _ in range(120):
            ok = subprocess.run([ray, "status", f"--address={address}"], capture_output=True).returncode == 0
            if ok:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}")
            time.sleep(1)
        else:
            raise RuntimeError("the Ray head did not come up in 120 s")
        yield address
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started when it is terminated
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        shutil.rmtree(tmp, ignore_errors=True)


def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return p.returncode == 0 and any(s in p.stdout for s in ("idle", "mixed", "allocated"))


def run_engine(engine: str, out: Path, tasks: int) -> dict:
    mirror, data = local_copies(out)
    if engine == "local":
        return run_curate("curate-slurm", out, "run-local", overrides(mirror, data, "local", tasks))
    if engine == "slurm":
        return run_curate("curate-slurm", out, "run-slurm", overrides(mirror, data, "slurm", tasks))
    with ray_head(os.cpu_count() or 2) as address:
        r = run_curate("curate-ray", out, "run-ray", overrides(mirror, data, "ray", tasks), {"RAY_ADDRESS": address})
    if address not in r["output"]:  # ray.init() says which cluster it joined: ours, not one it started itself
        raise RuntimeError(f"the Ray driver did not report joining {address}:\n{r['output'][-2000:]}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="local,ray,slurm")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="curate-cluster-"))
    out = out.resolve()
    results = {}
    try:
        for engine in args.engines.split(","):
            if engine == "slurm" and not slurm_up():
                print("slurm: no cluster answers (run scripts/slurm-local.sh start as root); skipped")
                continue
            results[engine] = run_engine(engine, out, args.tasks)
            r = results[engine]
            print(f"{engine}: {r['wall_s']:.1f} s wall, load {r['load']}, kept {r['kept']} of {r['read']}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    ref = results.get("local")
    rows = ["| engine | wall s | driver+children CPU s | load (1 min) | kept / read | outputs equal local's |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    same = True
    for engine, r in results.items():
        eq = "reference" if engine == "local" else ("yes" if ref and r["outputs"] == ref["outputs"] else "**no**")
        same = same and eq != "**no**"
        rows.append(
            f"| {engine} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load']} | {r['kept']} / {r['read']} | {eq} |"
        )
    body = "\n".join(rows)
    body += (
        "\n\nData: the rehearsal's Hub mirror made into local Parquet copies as docs/recipes.md says (4 sources, "
        f"{ref['read'] if ref else '?'} documents). CPU is this process's children: the whole run for the local "
        "executor, only the driver for Ray and Slurm (their tasks run in processes the cluster starts: compare wall "
        "times). Each of the 8 curate steps is a new Ray task set or Slurm job array whose workers start Python "
        "afresh. Commands, run in $W (the work directory, with hub/ and data/):\n\n"
    )
    body += "\n".join(f"- {e}: `{r['command'].replace(str(out), '$W')}`" for e, r in results.items())
    if ref:
        body += "\n\nOutput sha256 (every engine): " + ", ".join(f"{k} {v[:12]}…" for k, v in ref["outputs"].items())
    print(body)
    if not args.no_record and len(results) > 1:
        from bench._record import record

        record("curate-cluster", body)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
