"""`ledgerlm plan` on the data side: curate/tokenize cost on a host, and a refusal naming the setting."""

from __future__ import annotations

import json
import re

import pytest

from ledgerlm.cli import main
from ledgerlm.data.curate_plan import SCALE_COSTS


@pytest.fixture(autouse=True)
def _costs():
    if not SCALE_COSTS.exists():
        pytest.skip("no bench.scale costs recorded")
    return json.loads(SCALE_COSTS.read_text())


def test_plan_estimates_curate_and_tokenize_on_the_host(capsys):
    assert main(["plan", "smollm-135m-1gpu", "--cpus", "16", "--ram", "128"]) == 0
    out = capsys.readouterr().out
    assert "data stages on 16 CPU cores, 128 GiB RAM" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("curate: ") and "documents" in x)
    assert re.search(r"1\d,\d{3},\d{3} documents", line) and "CPU-hours" in line  # ~15M, from the limits
    assert "per worker process" in out and "work directory" in out


def test_plan_refuses_a_host_too_small_naming_the_setting(capsys):
    assert main(["plan", "smollm-135m-1gpu", "--ram", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("curate.executor.workers" in err[0] or "curate.sources[*].limit" in err[0])
