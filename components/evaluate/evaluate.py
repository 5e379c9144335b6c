"""Evaluate a trained pipeline on the held-out split, and optionally the model in use (the baseline) the same way.

evaluate(cfg):
  1. model: a pipeline folder or a registry URI (models:/t2v-stdit@champion); the baseline likewise, skipped
     with a note when the registry has none yet
  2. validation loss at fixed timesteps with fixed noise on the held-out split, per bucket (Open-Sora 1.2)
  3. sample videos for the prompt set (held-out captions at their shapes, videos first, or a prompt file),
     seed = seed + i,
     written as mp4 and GIF
  4. metrics: temporal consistency, motion, flicker; prompt adherence per attribute on toy-world prompts;
     CLIPScore, FVD (I3D or VideoMAE features) and VBench when their weights are given
  5. outputs: metrics.json, samples/, loss.png (what the inputs determine: DVC tracks them), and beside them
     baseline.json with baseline/ (the comparison with the champion), report.html (self-contained, both models);
     an MLflow run with all of them
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from components.common.files import atomic_dir
from components.common.registry import BASELINE_FILE
from components.common.toy.world import check_held_out
from components.evaluate import adherence
from components.evaluate.config import EvalConfig
from components.evaluate.metrics import video_metrics

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"  # the MLflow run that holds an evaluation's outputs


@dataclass(frozen=True)
class Prompt:
    text: str
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None


# ----------------------------------------------------------------------------------------------------- inputs


def device_of(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def load_prompts(cfg: EvalConfig, val) -> list[Prompt]:
    if cfg.prompts is not None:
        path = Path(cfg.prompts)
        if not path.exists():
            raise ValueError(f"prompts file {path} not found; give one prompt per line, or leave --prompts out")
        texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"prompts file {path} has no prompts")
        return [Prompt(t, cfg.num_frames, cfg.height, cfg.width) for t in texts[: cfg.max_prompts]]
    # videos before stills (a video model is judged on videos first), then by clip id
    order = val.index.assign(_still=val.index.num_frames <= 1).sort_values(["_still", "clip_id"], kind="stable")
    rows = order.head(cfg.max_prompts)
    return [Prompt(r.text, int(r.num_frames), int(r.height), int(r.width)) for r in rows.itertuples()]


def held_out(data: str):
    from components.common.latents import LatentDataset, resolve

    folder = resolve(data)
    val = LatentDataset(folder, split="val")
    val.index = val.index.sort_values("clip_id").reset_index(drop=True)
    if len(val) == 0:
        raise ValueError(f"{folder} has no held-out (val) samples; precompute data ingested with val_fraction > 0")
    meta = json.loads((folder / "meta.json").read_text())
    return folder, val, meta


def check_compatible(pipe, meta: dict, name: str) -> None:
    config = pipe.transformer.config
    if config.in_channels != meta["latent_channels"] or config.caption_channels != meta["encoders"]["text_channels"]:
        raise ValueError(
            f"{name} takes {config.in_channels} latent and {config.caption_channels} text channels, the held-out "
            f"data has {meta['latent_channels']} and {meta['encoders']['text_channels']}: evaluate on data "
            "precomputed with the model's encoders"
        )


# ----------------------------------------------------------------------------------------------------- samples


SAMPLE_BATCH = 16  # prompts sampled together


def sample_videos(pipe, prompts: list[Prompt], cfg: EvalConfig, folder: Path, label: str) -> list[dict]:
    """Generate, write mp4 + GIF, and return one record per prompt (with the video in memory under "video")."""
    import imageio.v2 as imageio

    from components.common.video import write_video
    from model.inference.pipeline import to_uint8

    folder.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)  # one bar over the prompts instead
    # prompts of one shape sample together, each with its own seeded noise: the same videos as one by one
    batches, i = [], 0
    while i < len(prompts):
        shape = (prompts[i].num_frames, prompts[i].height, prompts[i].width)
        j = i + 1
        while (
            j < len(prompts)
            and j - i < SAMPLE_BATCH
            and (prompts[j].num_frames, prompts[j].height, prompts[j].width) == shape
        ):
            j += 1
        batches.append(range(i, j))
        i = j
    records = []
    bar = tqdm(total=len(prompts), desc=f"sampling ({label})", disable=not cfg.progress)
    for batch in batches:
        p = prompts[batch[0]]
        frames = pipe(
            [prompts[k].text for k in batch],
            num_frames=p.num_frames,
            height=p.height,
            width=p.width,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            generator=[torch.Generator().manual_seed(cfg.seed + k) for k in batch],
        ).frames
        for k, video in zip(batch, frames, strict=True):
            video = to_uint8(video)
            mp4, gif = folder / f"sample_{k:03d}.mp4", folder / f"sample_{k:03d}.gif"
            write_video(mp4, list(video), cfg.fps)
            imageio.mimsave(gif, list(video), duration=1 / cfg.fps, loop=0)
            record = {"prompt": prompts[k].text, "seed": cfg.seed + k, "mp4": str(mp4), "gif": str(gif)}
            records.append({**record, "video": video})
        bar.update(len(batch))
    bar.close()
    return records


def real_videos(val, vae, limit: int) -> list[np.ndarray]:
    """The held-out clips as uint8 frames, decoded from their latents (the same space the model generates in)."""
    from model.inference.pipeline import to_frames

    videos = []
    for i in range(min(len(val), limit)):
        if int(val.index.num_frames.iloc[i]) < 2:
            continue
        videos.append(to_frames(vae.decode(val[i]["latent"][None].float())[0]))
    return videos


# ----------------------------------------------------------------------------------------------------- metrics


def sample_metrics(records: list[dict], held_out: frozenset = frozenset()) -> dict[str, float]:
    """Means of the weight-free video metrics, and prompt adherence per attribute on toy-world prompts: over all of
    them, and with `held_out` (colour, shape, direction) triples, over the prompts asking for one (`held_out/`) and
    over the others (`seen/`); on two-shape prompts, the shapes read right (`pairs/`)."""
    per_video = [video_metrics(r["video"]) for r in records]
    out = {k: float(np.mean([m[k] for m in per_video])) for k in per_video[0]}
    pairs = {i: asked for i, r in enumerate(records) if (asked := adherence.parse_pair_prompt(r["prompt"]))}
    asked = [adherence.parse_prompt(r["prompt"]) for r in records]
    toy = [i for i, a in enumerate(asked) if {"colour", "shape"} <= set(a) and i not in pairs]  # not "a red car"
    for i in toy:
        records[i]["detected"] = adherence.detect(records[i]["video"])
        records[i]["asked"] = asked[i]
    groups = {"": toy}
    if held_out:
        unseen = [i for i in toy if (asked[i]["colour"], asked[i]["shape"], asked[i].get("direction")) in held_out]
        groups |= {"held_out/": unseen, "seen/": [i for i in toy if asked[i].get("direction") and i not in unseen]}
        for i in unseen:
            records[i]["held_out"] = True  # the report marks it
    for group, members in groups.items():
        if members:
            scores = adherence.accuracy([asked[i] for i in members], [records[i]["detected"] for i in members])
            out.update({f"adherence/{group}{k}": v for k, v in scores.items()})
            out[f"adherence/{group}mean"] = float(np.mean(list(scores.values())))
            out[f"adherence/{group}prompts"] = float(len(members))
    if pairs:
        found = {i: adherence.detect_objects(records[i]["video"]) for i in pairs}
        for i in pairs:
            records[i]["objects"] = {"asked": pairs[i], "detected": found[i]}
        scores = adherence.pair_scores(list(pairs.values()), list(found.values()))
        out.update({f"adherence/pairs/{k}": v for k, v in scores.items()})
        out["adherence/pairs/prompts"] = float(len(pairs))
    moving = [i for i in toy if asked[i].get("direction") and len(records[i]["video"]) > 1]
    if moving:
        out["adherence/displacement"] = _mean_displacement(
            [records[i]["video"] for i in moving], [asked[i]["direction"] for i in moving]
        )
    return out


def _mean_displacement(videos: list[np.ndarray], directions: list[str]) -> float:
    return float(np.mean([adherence.displacement(v, d) for v, d in zip(videos, directions, strict=True)]))


def true_displacement(val, vae, limit: int = 64) -> float | None:
    """How far the shapes of the held-out toy-world videos travel in their captions' direction over a clip (pixels,
    decoded from the latents the model learns from): what a generated clip's `adherence/displacement` is compared
    with. None without such videos."""
    from model.inference.pipeline import to_frames

    videos, directions = [], []
    for i in range(len(val)):
        row = val.index.iloc[i]
        direction = adherence.parse_prompt(str(row.text)).get("direction")
        if int(row.num_frames) < 2 or not direction:
            continue
        videos.append(to_frames(vae.decode(val[i]["latent"][None].float())[0]))
        directions.append(direction)
        if len(videos) == limit:
            break
    return _mean_displacement(videos, directions) if videos else None


def weighted_metrics(cfg: EvalConfig, records: list[dict], real: list[np.ndarray], device: str) -> dict[str, float]:
    from components.evaluate import features

    out: dict[str, float] = {}
    if cfg.clip_model:
        scorer = features.CLIPScorer(cfg.clip_model, device)
        out["clip_score"] = float(np.mean([scorer(r["video"], r["prompt"]) for r in records]))
    fake = [r["video"] for r in records if len(r["video"]) > 1]
    extractors = []
    if cfg.fvd_model:
        extractors.append(features.I3DFeatures(cfg.fvd_model, device))
    if cfg.fvd_videomae:
        extractors.append(features.VideoMAEFeatures(cfg.fvd_videomae, device))
    for extract in extractors:
        if len(real) < 2 or len(fake) < 2:
            raise ValueError(
                f"{extract.name} needs at least 2 real and 2 generated videos, got {len(real)} and {len(fake)}: "
                "raise --max-prompts or hold out more videos"
            )
        out[extract.name] = features.frechet_distance(extract(real), extract(fake))
    return out


def evaluate_one(pipe, name: str, val, meta, prompts, cfg: EvalConfig, folder: Path, device: str) -> dict:
    from components.common.validation import objective, validation_loss
    from model.weights.encoders import video_vae

    check_compatible(pipe, meta, name)
    trained_for, loss = objective(pipe.scheduler, pipe.flow_config().num_train_timesteps)
    metrics = validation_loss(
        pipe.transformer, val, device, timesteps=cfg.val_timesteps, max_samples=cfg.val_max_samples, seed=cfg.seed,
        loss=loss,
    )  # fmt: skip
    records = sample_videos(pipe, prompts, cfg, folder, name)
    metrics.update(sample_metrics(records, check_held_out(cfg.held_out)))
    vae = video_vae(pipe.vae)
    if "adherence/displacement" in metrics and (truth := true_displacement(val, vae)) is not None:
        metrics["adherence/displacement_truth"] = truth
        metrics["adherence/displacement_ratio"] = metrics["adherence/displacement"] / truth if truth else float("nan")
    real = real_videos(val, vae, cfg.fvd_max_videos) if cfg.fvd_model or cfg.fvd_videomae else []
    metrics.update(weighted_metrics(cfg, records, real, device))
    for r in records:
        del r["video"]
    return {"objective": trained_for, "metrics": metrics, "samples": records}


# ------------------------------------------------------------------------------------------------------ main


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate `cfg.model` (and `cfg.baseline`); write the outputs to `cfg.out_dir` (replaced as a whole)."""
    from components.common.registry import NotRegistered, load_pipeline
    from components.evaluate.features import vbench_available, vbench_scores
    from components.evaluate.report import loss_curves, write_report

    device = device_of(cfg.device)
    folder, val, meta = held_out(cfg.data)
    pipe, info = load_pipeline(cfg.model, cfg.tracking_uri, device)
    prompts = load_prompts(cfg, val)
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        result = {
            "model": cfg.model,
            "model_info": info,
            "data": {"folder": str(folder), "key": meta.get("key"), "manifest_sha256": meta.get("manifest_sha256"),
                     "val_samples": len(val)},
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("tracking_uri", "progress")},
            "skipped": {},
        }  # fmt: skip
        result.update(evaluate_one(pipe, "model", val, meta, prompts, cfg, tmp / "samples", device))
        if cfg.vbench_dimensions:
            reason = vbench_available()
            if reason:
                result["skipped"]["vbench"] = reason
                log.warning(reason)
            else:
                result["metrics"].update(vbench_scores(tmp / "samples", cfg.vbench_dimensions, tmp / "vbench", device))
        result["baseline"] = None
        if cfg.baseline:
            try:
                base, base_info = load_pipeline(cfg.baseline, cfg.tracking_uri, device)
            except NotRegistered as err:  # no champion yet (a first registration): nothing to compare with
                result["skipped"]["baseline"] = (
                    f"no comparison with {cfg.baseline} yet: {err}. This is expected before the first version is "
                    "registered; the report shows this model alone"
                )
                log.info("%s", result["skipped"]["baseline"])
            else:
                entry = evaluate_one(base, "baseline", val, meta, prompts, cfg, tmp / "baseline", device)
                result["baseline"] = {"model": cfg.baseline, "model_info": base_info, **entry}
        curves = loss_curves(pipe, cfg.loss_curves)
        if curves is not None:
            import matplotlib.pyplot as plt

            curves.savefig(tmp / "loss.png", dpi=110)
            plt.close(curves)
        _relative_paths(result, tmp, out)
        tracker = _tracker(cfg, result)
        # the run id beside the results, not in them: metrics.json holds only what the inputs determine (DVC)
        (tmp / TRACKING_FILE).write_text(json.dumps({"mlflow_run_id": tracker.run_id}) + "\n")
        own = {**result, "skipped": {k: v for k, v in result["skipped"].items() if k != "baseline"}}
        (tmp / "metrics.json").write_text(json.dumps({k: v for k, v in own.items() if k != "baseline"}, indent=2))
        comparison = {"baseline": result["baseline"], "skipped": result["skipped"].get("baseline")}
        (tmp / BASELINE_FILE).write_text(json.dumps(comparison, indent=2))
        result["mlflow_run_id"] = tracker.run_id
        write_report(result, tmp, tmp / "report.html")
        _log_outputs(tracker, result, tmp)
    return result


def _relative_paths(result: dict, tmp: Path, out: Path) -> None:
    """Sample paths relative to the output folder (they are written in a temporary one first)."""
    entries = [result] + ([result["baseline"]] if result.get("baseline") else [])
    for entry in entries:
        for r in entry["samples"]:
            r["mp4"] = str(Path(r["mp4"]).relative_to(tmp))
            r["gif"] = str(Path(r["gif"]).relative_to(tmp))


def _tracker(cfg: EvalConfig, result: dict):
    """The MLflow `evaluate` run (a no-op Tracker without a tracking URI, its run_id None)."""
    from components.common.tracking import Tracker

    tags = {"step": "evaluate", "model": cfg.model, "data_key": str(result["data"]["key"])}
    if result.get("baseline"):
        tags["baseline"] = cfg.baseline
    return Tracker(cfg.tracking_uri, cfg.experiment, "evaluate", tags=tags, system_metrics_s=None)


def _log_outputs(tracker, result: dict, tmp: Path) -> None:
    """Settings, metrics (the baseline's prefixed), report, metrics.json, plot and samples to the run; then end it."""
    tracker.log_params(result["settings"])
    scalars = dict(result["metrics"])
    if result.get("baseline"):
        scalars.update({f"baseline/{k}": v for k, v in result["baseline"]["metrics"].items()})
    tracker.log_metrics(scalars, 0)
    for name in ("report.html", "metrics.json", "loss.png"):
        if (tmp / name).exists():
            tracker.log_artifact(tmp / name)
    for path in sorted((tmp / "samples").rglob("*")):
        if path.is_file():
            tracker.log_artifact(path, str(Path("samples") / path.parent.relative_to(tmp / "samples")))
    tracker.close()


def write_kfp_outputs(out_dir: str, html, metrics) -> None:
    """Hand an evaluation to Kubeflow Pipelines: the report as an HTML artifact (rendered in the run's
    visualisations) and every scalar metric as a Metrics artifact ("/" becomes "-" in the names)."""
    out = Path(out_dir)
    shutil.copyfile(out / "report.html", html.path)
    for name, value in json.loads((out / "metrics.json").read_text())["metrics"].items():
        metrics.log_metric(name.replace("/", "-"), float(value))
