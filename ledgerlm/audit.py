"""The audit: re-hash every artifact a run's ledger records and check the chain of records. A step a recipe may
list (`stages: [..., audit]`) and the command `ledgerlm audit RUN_DIR`, registered in stage.CHECKS; both print
what it found here, once."""

from __future__ import annotations

from pathlib import Path

from ledgerlm import ledger
from ledgerlm.stage import CheckSpec


def check(run_dir: Path, echo=print) -> tuple[bool, str]:
    """Audit `run_dir`, saying what was found; -> (intact, the verdict for the run's summary line)."""
    problems, checked = ledger.audit(run_dir)
    if problems:
        echo(f"[audit] FAILED for {run_dir}: {len(problems)} problem(s):")
        for p in problems:
            echo(f"  - {p}")
        return False, f"FAILED: {len(problems)} problem(s)"
    verdict = f"intact: {checked} artifacts re-hashed"
    echo(f"[audit] {verdict}, chain checked ({run_dir})")
    return True, verdict


SPEC = CheckSpec(
    name="audit",
    help="re-hash every artifact of a run and check the ledger chain",
    check=check,
    plan="re-hash every recorded artifact and check the chain",
)
