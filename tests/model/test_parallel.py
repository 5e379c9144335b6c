import json
import os
import subprocess
import sys

from model.networks.parallel import SequenceParallel


def test_which_shapes_split():
    sp = SequenceParallel(group=None, rank=0, size=2)
    assert sp.can_split(4, 16) and not sp.can_split(1, 16) and not sp.can_split(3, 16) and not sp.can_split(4, 9)
    assert not SequenceParallel(group=None, rank=0, size=1).can_split(4, 16)


def test_sequence_parallel_sp2_on_two_processes_equals_the_whole_model(tmp_path):
    """sp = 2 over gloo: forward identical within 1e-5 and gradients (summed over the group / sp) within 1e-5; also
    with fused projections and compiled blocks (the all-to-alls run between the compiled graphs); the all-to-all
    done by all_gather, for backends without one, equals gloo's own."""
    out = tmp_path / "sp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run([*cmd, "-m", "tests.model.sp_worker", str(out)], check=True, env=env, timeout=280)
    report = json.loads(out.read_text())
    print(json.dumps(report, indent=1))
    by_gather = report.pop("all-to-all by gather")  # what a backend without all_to_all runs (gloo before torch 2.13)
    assert by_gather == {"forward": 0.0, "grad": 0.0, "shape": [2, 8, 3, 3]}  # frames gathered, positions split
    assert set(report) == {"rope", "sincos", "rope+sincos", "rope, compiled"}
    assert report["rope, compiled"]["compiled"]
    for r in report.values():
        assert r["tokens_per_rank"] == [64, 32]  # 4 frames x 16 positions whole, then 2 frames per rank
        assert r["forward"] < 1e-5 and r["grad"] < 1e-5 and r["grad_scale"] > 1e-2
