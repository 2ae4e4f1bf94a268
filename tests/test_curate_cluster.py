"""Curation on a real local Ray cluster and a real one-node Slurm gives the local executor's outputs, byte for byte.

Slow (each engine starts processes for 4 steps x 4 tasks): `python -m pytest -m slow tests/test_curate_cluster.py`.
Ray: `pip install -e '.[scale]'` (the test starts and stops its own head on 127.0.0.1). Slurm: `apt-get install -y
slurm-wlm munge && scripts/slurm-local.sh start` as root first. Each test skips when its engine is missing.
"""

from __future__ import annotations

import importlib.util

import pytest

from bench.curate_cluster import run_engine, slurm_up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def local(work):
    return run_engine("local", work, tasks=4)


def test_curate_on_ray_equals_local(work, local):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[scale]')")
    ray = run_engine("ray", work, tasks=4)
    assert ray["outputs"] == local["outputs"]
    assert ray["kept"] == local["kept"] > 0


def test_curate_on_slurm_equals_local(work, local):
    if not slurm_up():
        pytest.skip("no Slurm cluster answers (scripts/slurm-local.sh start, as root)")
    slurm = run_engine("slurm", work, tasks=4)
    assert slurm["outputs"] == local["outputs"]
    assert slurm["kept"] == local["kept"] > 0
