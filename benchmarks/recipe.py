"""The three-stage claim in miniature: at equal training compute, an image stage followed by a video stage against
a video model trained from scratch, judged by how often the generated shapes move in the direction asked.

On the toy world of a recipe (default: params.yaml, the demo's), made once through synth, ingest, caption and
precompute, two arms train on the same data:
  staged      stage 1 (images, the recipe's stage1 steps), then stage 2 (videos) from its export
  video-only  stage 2 from scratch, until it has used the CPU-seconds the staged arm used in all
Stage 2 of each arm runs in segments (resumed exactly from its checkpoint); after each, its EMA export samples
the 48 prompts of the demo's evaluation (every colour x direction pair) and the toy-world detector reads colour,
shape, direction and background. Training compute is the CPU time of the training itself (user + system, all
threads), sampling and judging excluded; training runs on one thread (--threads), since idle OpenMP threads spin
and bill CPU time that grows with the count of small operations, not with the compute (on two threads an image
step of stage 1 bills twice its one-thread time, a video step 1.5 to 1.9 times). The goal: the staged arm reaches
80% direction adherence within the budget, and the video-only arm does not, or reaches it later (each arm's crossing
read on the straight line between the judged segments around it).

    python benchmarks/recipe.py                      # the demo's recipe
    python benchmarks/recipe.py --segments 6         # finer curves (each segment is judged: ~30 s each)
    python benchmarks/recipe.py --quick              # a small world and a few steps (CI: the code path)
    python benchmarks/recipe.py --set stage2.max_steps=2400

Writes recipe.png (direction adherence against CPU-seconds, both arms) and recipe.json in --out (default: a
temporary folder, printed). The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.8  # direction adherence the demo's goal asks for


def cpu_seconds() -> float:
    """User + system CPU time of this process and its threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_data(root: Path, recipe: Path, overrides: list[str]) -> Path:
    """The recipe's toy world through synth, ingest, caption and precompute under `root`: the precompute root."""
    from components.caption.caption import CaptionConfig, caption
    from components.common import settings
    from components.common.toy.tiny import build_tiny_t5
    from components.ingest.config import IngestConfig
    from components.ingest.ingest import ingest
    from components.precompute.config import PrecomputeConfig
    from components.precompute.precompute import precompute
    from components.synth.synth import SynthConfig, synth

    def load(cls, section, **fixed):
        items = settings.scoped(overrides, (section,))
        return settings.load(cls, recipe=recipe, sections=(section,), overrides=items, fixed=fixed)

    toy = synth(load(SynthConfig, "synth", out_dir=str(root / "toy")))
    ingest(load(IngestConfig, "ingest", inputs=[str(toy)], out_dir=str(root / "ingest"), progress=False))
    caption(load(CaptionConfig, "caption", manifest=str(root / "ingest" / "manifest.parquet"),
                 out_dir=str(root / "caption"), num_shards=1, progress=False))  # fmt: skip
    text_encoder = str(build_tiny_t5(root / "models" / "t5"))
    precompute(load(PrecomputeConfig, "precompute", manifest=str(root / "caption" / "manifest.parquet"),
                    out_root=str(root / "precompute"), text_encoder=text_encoder, progress=False))  # fmt: skip
    return root / "precompute"


def stage_config(recipe: Path, overrides: list[str], stage: int, init: str | None = None, **fixed):
    from components.common import settings
    from components.train.config import TrainConfig

    sections = ("train", f"stage{stage}")
    items = settings.scoped(overrides, sections) + ([f"model.init={init}"] if init else [])
    fixed = {"progress": False, "tracking_uri": None, "sample_every": 0, **fixed}
    return settings.load(TrainConfig, recipe=recipe, sections=sections, overrides=items, fixed=fixed)


def judge(pipeline: Path, prompts: list[str], steps: int, guidance: float) -> dict[str, float]:
    """Adherence per attribute and the mean displacement in the direction asked, over `prompts`."""
    import torch

    from components.evaluate import adherence
    from model.inference.loading import load_pipeline
    from model.inference.pipeline import to_uint8

    pipe = load_pipeline(pipeline)
    pipe.set_progress_bar_config(disable=True)
    videos = []
    for start in range(0, len(prompts), 16):
        batch = prompts[start : start + 16]
        seeds = [torch.Generator().manual_seed(start + k) for k in range(len(batch))]
        frames = pipe(batch, num_inference_steps=steps, guidance_scale=guidance, generator=seeds).frames
        videos += [to_uint8(v) for v in frames]
    asked = [adherence.parse_prompt(p) for p in prompts]
    scores = adherence.accuracy(asked, [adherence.detect(v) for v in videos])
    moved = [adherence.displacement(v, a["direction"]) for v, a in zip(videos, asked, strict=True)]
    scores["displacement"] = float(np.mean(moved))
    return scores


def run_arm(name, data, out, recipe, overrides, *, init, used, segment, until, prompts, sampling, log, cap=None):
    """Stage 2 from `init` in segments of `segment` steps (never past `cap`), until `until(steps, cpu_s)` holds;
    `used` is the CPU time that came before it. A row per segment: steps, CPU-seconds so far, adherence."""
    from components.train.train import train

    rows, steps = [], 0
    while not until(steps, round(used, 1)):  # on the figure each row reports, so no row before the last meets it
        steps = steps + segment if cap is None else min(steps + segment, cap)
        cfg = stage_config(recipe, overrides, 2, data=str(data), out_dir=str(out), max_steps=steps, resume="auto",
                           ckpt_every=segment, keep_last=1, init=init)  # fmt: skip
        before = cpu_seconds()
        result = train(cfg)
        used += cpu_seconds() - before
        rows.append({"arm": name, "stage2_steps": steps, "cpu_s": round(used, 1),
                     **judge(result.out_dir / "pipeline", prompts, *sampling)})  # fmt: skip
        log(rows[-1])
    return rows


def plot(rows: list[dict], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
        mine = [r for r in rows if r["arm"] == arm]
        ax.plot([r["cpu_s"] for r in mine], [r["direction"] for r in mine], "o-", color=f"C{i}", label=arm)
    ax.axhline(TARGET, color="#999", linestyle="--", linewidth=0.8, label=f"target {TARGET:.0%}")
    ax.axhline(0.25, color="#ccc", linestyle=":", linewidth=0.8, label="chance 25%")
    ax.axvline(budget, color="#999", linewidth=0.6)
    ax.set(xlabel="training CPU-seconds", ylabel="direction adherence", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def first_reaching(rows: list[dict], arm: str) -> float | None:
    """The CPU-seconds at which `arm` reaches the direction target: between the last judged segment below it and
    the first at or above it, on the straight line joining them (at the first segment when that one reaches it)."""
    mine = [r for r in rows if r["arm"] == arm]
    for k, row in enumerate(mine):
        if row["direction"] >= TARGET:
            if k == 0:
                return row["cpu_s"]
            before = mine[k - 1]
            share = (TARGET - before["direction"]) / (row["direction"] - before["direction"])
            return round(before["cpu_s"] + share * (row["cpu_s"] - before["cpu_s"]), 1)
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipe", default=str(ROOT / "params.yaml"), help="the toy-world recipe (default params.yaml)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe overrides")
    parser.add_argument("--segments", type=int, default=4, help="judged segments of the staged arm's stage 2")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps when judging")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU-seconds are compared at one)")
    parser.add_argument("--quick", action="store_true", help="a small world and a few steps (CI)")
    parser.add_argument("--out", help="where the plot, the JSON and the work go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.segments < 1:
        parser.error(f"--segments {args.segments}: give 1 or more")
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: give 1 or more (1 compares CPU-seconds without idle threads' spin)")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(args.threads)
    overrides = list(args.set)
    if args.quick:
        overrides = ["synth.videos=8", "synth.images=8", "stage1.max_steps=4", "stage2.max_steps=4", *overrides]
        args.segments, args.steps = 2, 2
    recipe = Path(args.recipe)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="t2v-bench-recipe-"))
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    from components.common import settings
    from components.evaluate.config import EvalConfig

    # the prompts and guidance the demo's evaluation uses
    judged = settings.load(
        EvalConfig, recipe=recipe, sections=("evaluate",), overrides=settings.scoped(overrides, ("evaluate",))
    )
    listed = Path(judged.prompts or "configs/toy/prompts.txt")
    listed = listed if listed.is_absolute() else ROOT / listed
    prompts = [p.strip() for p in listed.read_text().splitlines() if p.strip()]
    prompts = prompts[::12] if args.quick else prompts
    sampling = (args.steps, judged.guidance_scale)

    def log(row):
        shown = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(shown, flush=True)

    from components.train.train import train

    data = make_data(work / "data", recipe, overrides)
    stage2_steps = stage_config(recipe, overrides, 2).max_steps
    segment = max(1, -(-stage2_steps // args.segments))
    before = cpu_seconds()
    one = train(stage_config(recipe, overrides, 1, data=str(data), out_dir=str(work / "staged-1"), resume="none"))
    stage1_cpu = cpu_seconds() - before
    common = {"recipe": recipe, "overrides": overrides, "segment": segment, "prompts": prompts, "sampling": sampling,
              "log": log}  # fmt: skip
    staged = run_arm("staged", data, work / "staged-2", init=str(one.export_dir), used=stage1_cpu,
                     until=lambda steps, cpu: steps >= stage2_steps, cap=stage2_steps, **common)  # fmt: skip
    budget = staged[-1]["cpu_s"]  # the staged arm's stage 1 and stage 2
    scratch = run_arm("video-only", data, work / "video-only", init="scratch", used=0.0,
                      until=lambda steps, cpu: cpu >= budget, **common)  # fmt: skip
    rows = staged + scratch
    plot(rows, budget, out / "recipe.png")
    print(
        f"\n{'arm':<11}{'steps':>7}{'CPU-s':>8}{'direction':>10}{'shape':>7}{'colour':>7}{'backgr.':>8}{'moved px':>9}"
    )
    for r in rows:
        print(f"{r['arm']:<11}{r['stage2_steps']:>7}{r['cpu_s']:>8.0f}{r['direction']:>10.0%}{r['shape']:>7.0%}"
              f"{r['colour']:>7.0%}{r['background']:>8.0%}{r['displacement']:>9.1f}")  # fmt: skip
    staged_at, scratch_at = first_reaching(rows, "staged"), first_reaching(rows, "video-only")
    result = {
        "benchmark": "recipe",
        "quick": args.quick,
        "recipe": str(recipe),
        "overrides": overrides,
        "prompts": len(prompts),
        "threads": args.threads,
        "stage1_cpu_s": round(stage1_cpu, 1),
        "budget_cpu_s": round(budget, 1),
        "rows": rows,
        "staged_reaches_target_at_cpu_s": staged_at,
        "video_only_reaches_target_at_cpu_s": scratch_at,
        "claim_holds": staged_at is not None and (scratch_at is None or scratch_at > staged_at),
        "plot": str(out / "recipe.png"),
    }
    (out / "recipe.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
