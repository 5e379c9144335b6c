"""Benchmarks run in quick mode so they cannot rot; their figures are read from the JSON last line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, python: Path | None = None) -> dict:
    """The benchmark's JSON line; with `python`, in that environment (the project from this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if python else None
    command = [str(python or sys.executable), str(ROOT / "benchmarks" / name), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line][-5:]
    assert proc.returncode == 0, f"{' '.join(command[1:])}: exit {proc.returncode}: {errors}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def counted_flops(mode: str, frames: int) -> float:
    """Forward + backward FLOPs that torch counts for the benchmarked model (attention through the math kernel,
    which the counter sees; the fused CPU kernel would count as zero)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.attention import CAPTION_CHANNELS, CHANNELS, LATENT, TEXT_TOKENS, build_stdit

    torch.manual_seed(0)
    model = build_stdit(mode)
    x = torch.randn(1, CHANNELS, frames, LATENT, LATENT)
    text, t = torch.randn(1, TEXT_TOKENS, CAPTION_CHANNELS), torch.tensor([500.0])
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, text, return_dict=False)[0].float().pow(2).mean().backward()
    return counter.get_total_flops()


@pytest.mark.slow
def test_attention_benchmark_quick():
    result = run_benchmark("attention.py", "--quick")
    assert [r["frames"] for r in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["stdit_s"] > 0 and row["full_s"] > 0 and row["latte_s"] > 0
        assert row["full_over_stdit"] == pytest.approx(row["full_s"] / row["stdit_s"])  # same-run timings
        # the analytic ratio printed beside the measured one is that of the benchmarked models, as torch counts it
        counted = counted_flops("full", row["frames"]) / counted_flops("spatial_temporal", row["frames"])
        assert row["full_over_stdit_analytic"] == pytest.approx(counted, rel=0.03), row["frames"]
    xl2 = {(r["frames"], r["pixels"]): r for r in result["xl2_analytic"]}
    at_64x512 = xl2[(64, 512)]
    assert at_64x512["tokens"] == 64 * (512 // 8 // 2) ** 2
    assert at_64x512["full_over_stdit_analytic"] == pytest.approx(
        at_64x512["full_tflops_per_step"] / at_64x512["stdit_tflops_per_step"]
    )  # its per-block derivation: tests/components/test_cli.py


def test_cli_benchmark_quick():
    """Every verb's help and the argument errors are timed through the console script (the figures themselves: the
    full benchmark on a quiet machine)."""
    from t2v.cli import VERBS

    result = run_benchmark("cli.py", "--quick")
    assert {f"t2v {verb} --help" for verb in VERBS} < set(result["seconds"])
    assert result["slowest_s"] == max(result["seconds"].values()) > 0
    assert result["targets_met"] == (result["slowest_s"] < result["target_s"])


@pytest.mark.slow
def test_ingest_benchmark_quick():
    """The ratios come from this run's own timings (medians of rounds, same clips); the goal itself (rows at 90% of
    decode-only) is checked by the full benchmark on a quiet machine, not on a shared CI runner."""
    result = run_benchmark("ingest.py", "--quick")
    assert result["clips"] == 9  # three videos of three scenes
    assert result["rounds"] == 1 and len(result["seconds_per_round"]["rows"]) == 1
    rounds = result["seconds_per_round"]
    decode = float(np.median(rounds["decode"]))
    assert result["decode_only_seconds"] == pytest.approx(decode, abs=1e-3)
    assert result["decode_only_clips_per_s_per_core"] == pytest.approx(9 / decode / result["cores"], rel=1e-2)
    for mode in ("rows", "copy", "reencode"):
        assert result[f"{mode}_vs_decode_only"] == pytest.approx(decode / float(np.median(rounds[mode])), rel=1e-2)
        assert result[f"{mode}_vs_decode_only"] > 0
    assert result["goal_rows_vs_decode_only"] == 0.9
    print(f"rows at {result['rows_vs_decode_only']:.0%} of decode-only (goal 90% on a quiet machine)")


@pytest.mark.slow
def test_caption_benchmark_quick():
    result = run_benchmark("caption.py", "--quick")
    assert [r["batch_size"] for r in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["clips"] == 8 and row["decode_ms_per_clip"] > 0 and row["generate_ms_per_clip"] > 0
        work_s = (row["decode_ms_per_clip"] + row["generate_ms_per_clip"]) * row["clips"] / 1e3
        assert work_s <= row["seconds"]  # the timed parts lie within the captioning call's wall-clock time
        assert row["clips_per_s"] == pytest.approx(row["clips"] / work_s)
        assert row["decode_share"] == pytest.approx(row["decode_ms_per_clip"] * row["clips"] / 1e3 / work_s)
    assert result["batching_speedup"] == pytest.approx(
        result["rows"][1]["clips_per_s"] / result["rows"][0]["clips_per_s"]
    )


@pytest.mark.slow
def test_train_benchmark_quick():
    result = run_benchmark("train.py", "--quick")
    assert result["online_over_cached"] > 1  # encoding costs something
    assert 80 < result["vae_params_m"] < 90  # the SD VAE's architecture (83.7M)
    assert result["stdit_tokens_per_s_cached"] > result["stdit_tokens_per_s_online"] > 0


@pytest.mark.slow
def test_demo_benchmark_quick(stopped_run):
    """The figures of the session's small DAG run (tests/runs.py: demo.py's --quick sizes), read from its log."""
    result = run_benchmark("demo.py", "--quick", "--run", str(stopped_run.root))
    steps = result["step_s"]
    for name in ("synth", "ingest-shard-ids", "ingest-shard", "ingest-merge", "caption-shard", "caption-merge",
                 "precompute-shard-ids", "precompute-shard", "precompute-merge", "train-stage", "train-stage-2",
                 "train-stage-3", "evaluate", "register"):  # fmt: skip
        assert steps[name] > 0, name
    assert set(result["adherence"]) == {"colour", "shape", "direction", "background"}
    assert result["prompts"] == 2 and result["total_s"] >= sum(steps.values()) * 0.5


def test_demo_step_times_are_read_from_the_run_logs_kfp_lines(tmp_path):
    from benchmarks.demo import task_times

    log = tmp_path / "run.log"
    log.write_text(
        "23:59:58.000 - INFO - Running pipeline: \x1b[95m't2v-pipeline'\x1b[0m\n"
        "23:59:58.500 - INFO - Executing task \x1b[96m'train-stage'\x1b[0m\n"
        "    12:00:00.000 - INFO - Task 'x' finished with status SUCCESS\n"  # a task's own line, indented
        "23:59:59.000 - ERROR - Task 'train-stage' finished with status FAILURE\n"
        "00:00:00.500 - INFO - Executing task 'train-stage'\n"  # the retry, after midnight
        "00:00:02.000 - INFO - Task 'train-stage' finished with status SUCCESS\n"
        "00:00:02.100 - INFO - Executing task 'register'\n"
        "00:00:02.099 - INFO - Executing task 'caption-shard'\n"  # a parallel task's line, a millisecond behind
    )
    steps, total = task_times(log)
    assert steps["train-stage"] == 3.5 and np.isnan(steps["register"]) and total == 4.1  # not a day more
    log.write_text("nothing of kfp.local here\n")
    with pytest.raises(ValueError, match=r"no kfp\.local lines"):
        task_times(log)


def test_gpu_benchmark_skips_without_cuda_and_its_help_says_what_it_measures():
    """CI has no GPU: the acceptance benchmark says why it skipped and exits 0; --help and --parts work without one."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the benchmark would run in full (minutes)")
    result = run_benchmark("gpu.py", "--quick", "--parts", "train,loop")
    assert "CUDA" in result["skipped"] and result["parts"] == ["train", "loop"]
    script = [sys.executable, str(ROOT / "benchmarks" / "gpu.py")]
    shown = subprocess.run([*script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "MFU" in shown and "--parts" in shown
    wrong = subprocess.run([*script, "--parts", "train,warp"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "warp" in wrong.stderr
    nowhere = subprocess.run([*script, "--json", "/nonexistent-folder/gpu.json"], capture_output=True, text=True)
    assert nowhere.returncode == 2 and "/nonexistent-folder does not exist" in nowhere.stderr  # before any run


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_part_on_the_cpu(tmp_path):
    """Every part of the GPU acceptance run, on the CPU with the tiny model, before a GPU is spent on them: every
    lever row runs, in order, with what the default step does (fused, compiled, recompute chosen by the memory
    model); the SDPA kernels are read for the three attentions at both sizes; STDiT and its full-attention twin are
    timed; a sample is drawn; the killed and resumed run equals the uninterrupted one, and planted NaN gradients are
    skipped. It runs where only the wheelhouse's distributions are installed (benchmarks/wheelhouse.py: GPU_RUN and
    what they require), as on an offline GPU machine: an import the GPU run adds beyond them fails it."""
    from benchmarks.wheelhouse import closure, isolated_python

    python = isolated_python(closure(python="{}.{}".format(*sys.version_info)), tmp_path / "env")
    result = run_benchmark("gpu.py", "--smoke", "--json", str(tmp_path / "gpu.json"), python=python)
    assert result["smoke"] and result["ok"] and result["complete"], result
    assert json.loads((tmp_path / "gpu.json").read_text()) == result  # --json: the same object
    assert list(result["parts"]) == ["train", "memory", "sdpa", "attention", "sample", "loop"]
    sdpa = result["parts"]["sdpa"]
    assert sorted(sdpa["ran"]) == sorted(f"{a}_{p}" for a in ("spatial", "temporal", "cross") for p in (256, 512))
    assert all(r["ran"] != "none found" and r["flash_only"] for r in sdpa["rows"]), sdpa["rows"]
    attention = result["parts"]["attention"]
    assert attention["stdit_s"] > 0 and attention["full_s"] > 0 and attention["ratio_source"] == "measured"
    assert attention["full_over_stdit_analytic"] > 0 and attention["tokens"] == 4 * (128 // 8 // 2) ** 2
    sample = result["parts"]["sample"]
    assert sample["finite"] and sample["steps"] == 2 and sample["seconds"] > 0
    rows = result["parts"]["train"]["levers"]
    assert [(r["pixels"], r["lever"]) for r in rows] == [
        (512, "today"), (512, "+fused-projections"), (512, "+compiled"), (512, "+recompute-auto"),
        (256, "today"), (256, "+recompute-auto"),
    ]  # fmt: skip
    default = rows[3]
    assert default["compiled"], "the compiler failed: the smoke run's log says why (torch.compile failed ...)"
    assert default["recompute_blocks"] == 0  # the tiny model fits: nothing recomputes
    assert rows[0]["recompute_blocks"] == 2 and not rows[0]["compiled"]  # today: every block, eager
    assert all(r["step_s"] > 0 and r["tokens_per_step"] > 0 for r in rows)
    assert set(result["parts"]["train"]["speedup_over_today"]) == {"512", "256"}
    assert [r["memory_estimate_gb"] > 0 for r in result["parts"]["memory"]["rows"]] == [True] * 6
    loop = result["parts"]["loop"]
    assert loop["ok"] and loop["bit_identical_to_uninterrupted"] and loop["planted_nan_grad_skipped"], loop
    assert 0 < loop["resumed_from"] < loop["final_checkpoint"] == loop["max_steps"] and loop["tensors_compared"] > 100


@pytest.mark.slow
def test_a_gpu_run_cut_short_leaves_the_rows_it_measured(tmp_path):
    """A device call that runs out of time keeps what it measured: each lever row is printed as it is made and
    --json holds the figures so far (complete: false), written before the row is printed."""
    import signal

    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--json", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        seen = []
        for line in proc.stdout:
            if line.strip().startswith(("today", "+fused-projections")):
                seen.append(line.split()[0])
            if len(seen) == 2:
                break
        proc.send_signal(signal.SIGKILL)  # as a time limit does
    finally:
        proc.kill()
        proc.wait()
    assert seen == ["today", "+fused-projections"]
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and partial["smoke"]
    train = partial["parts"]["train"]
    assert train["in_progress"] and [r["lever"] for r in train["levers"]][:2] == seen
    assert all(r["step_s"] > 0 for r in train["levers"])


@pytest.mark.slow
def test_recipe_benchmark_quick(tmp_path):
    result = run_benchmark("recipe.py", "--quick", "--out", str(tmp_path))
    staged = [r for r in result["rows"] if r["arm"] == "staged"]
    scratch = [r for r in result["rows"] if r["arm"] == "video-only"]
    assert [r["stage2_steps"] for r in staged] == [2, 4]  # two judged segments of stage 2's 4 steps
    assert result["budget_cpu_s"] == staged[-1]["cpu_s"] > result["stage1_cpu_s"] > 0
    # video-only trains until it has used the staged arm's budget, and no segment beyond
    assert scratch[-1]["cpu_s"] >= result["budget_cpu_s"]
    assert all(r["cpu_s"] < result["budget_cpu_s"] for r in scratch[:-1])
    assert all(0 <= r[k] <= 1 for r in result["rows"] for k in ("colour", "shape", "direction", "background"))
    assert (tmp_path / "recipe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "recipe.json").read_text())["rows"] == result["rows"]


def test_recipe_reads_where_an_arm_crosses_the_target_between_judged_segments():
    from benchmarks.recipe import first_reaching

    rows = [{"arm": "staged", "cpu_s": c, "direction": d} for c, d in ((100, 0.2), (200, 0.6), (300, 1.0))]
    rows += [{"arm": "video-only", "cpu_s": c, "direction": d} for c, d in ((50, 0.9), (100, 1.0))]
    rows += [{"arm": "never", "cpu_s": 100, "direction": 0.79}]
    assert first_reaching(rows, "staged") == 250.0  # halfway from 60% to 100%
    assert first_reaching(rows, "video-only") == 50  # the first segment already reaches it
    assert first_reaching(rows, "never") is None


@pytest.mark.parametrize("flag", ["--threads", "--segments"])
def test_recipe_refuses_a_count_below_one_naming_it(flag, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recipe.py"), flag, "0", "--out", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and f"{flag} 0: give 1 or more" in proc.stderr
    assert not (tmp_path / "work").exists()  # refused before anything was made
