"""The SLURM recipe of docs/cluster.md, as written there, builds a cluster whose job script
asks for what the recipe says (nothing is submitted: there is no SLURM here); --gpus pins one
worker per GPU."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from diffrecon.batch import gpu_cluster

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"


def _recipe() -> str:
    text = DOC.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    (block,) = [b for b in blocks if "SLURMCluster" in b]
    return block


def test_the_documented_slurm_recipe_builds_the_job_it_describes(monkeypatch, capsys):
    jobqueue = pytest.importorskip("dask_jobqueue")
    scaled = []
    monkeypatch.setattr(
        jobqueue.SLURMCluster, "scale", lambda self, *a, **kw: scaled.append((a, kw))
    )
    namespace: dict = {}
    exec(compile(_recipe(), str(DOC), "exec"), namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
        assert "#SBATCH --gres=gpu:1" in script
        assert "#SBATCH -t 04:00:00" in script
        assert re.search(r"#SBATCH --mem=1[45]G", script)  # 16GB as SLURM counts it
        assert "#SBATCH -n 1" in script and "--nthreads 1" in script
        assert "export OMP_NUM_THREADS=1 DIFFRECON_TORCH_THREADS=1" in script
        assert "export MALLOC_MMAP_THRESHOLD_=67108864" in script
        assert "distributed.cli.dask_worker" in script and cluster.scheduler_address in script
        assert ((), {"jobs": 8}) in scaled  # the recipe's request, recorded, not submitted
        assert cluster.scheduler_address in capsys.readouterr().out
    finally:
        cluster.close()


def test_gpu_cluster_pins_one_worker_to_each_gpu():
    from dask.distributed import Client

    with gpu_cluster(["0", "1"]) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        keys = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_")
        seen = client.run(lambda: tuple(os.environ.get(k) for k in keys))
        assert sorted(seen.values()) == [("0", "1", "67108864"), ("1", "1", "67108864")]
        assert all(w.nthreads == 1 for w in cluster.scheduler.workers.values())
    with pytest.raises(ValueError, match="distinct GPU ids"):
        gpu_cluster(["0", "0"])


def test_cli_gpus_is_refused_without_cuda(tmp_path, tiny_kspace_file):
    import torch

    from diffrecon.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(tmp_path / "o"), "--gpus", "0"]
    assert main(args) == 2
    assert not (tmp_path / "o").exists()


def test_local_workers_start_with_the_malloc_setting():
    """Dask's nanny turns off glibc's dynamic mmap threshold; our clusters give workers a
    fixed one at start-up (without it a sampler ran 3 to 17 times slower in workers)."""
    from diffrecon.batch import MALLOC_FIX, _executor

    client, cluster = _executor(None, 1)
    try:
        seen = client.run(lambda: {k: os.environ.get(k) for k in MALLOC_FIX})
        assert list(seen.values()) == [MALLOC_FIX]
    finally:
        client.close()
        cluster.close()
