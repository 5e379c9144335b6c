"""The evaluation report: one self-contained HTML file (videos and plots inline as data URIs, so it renders as a KFP
HTML artifact, in MLflow's artifact view or straight from disk), plus the loss-curve plot."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from components.common.tracking import read_metrics_log

DESCRIPTIONS = {
    "val_loss": "rectified-flow loss on the held-out split at fixed timesteps and noise (lower is better)",
    "temporal_consistency": "correlation of consecutive frames, 1 = steady (higher is smoother)",
    "motion": "mean optical flow, pixels per frame",
    "flicker": "mean change of overall brightness between frames (lower is better)",
    "adherence": "share of videos in which the toy-world detector reads this attribute as asked",
    "adherence/mean": "mean of the attributes' adherence",
    "adherence/held_out": "the same over the prompts asking for a combination no training clip showed (composition)",
    "adherence/seen": "the same over the prompts asking for a combination training clips showed",
    "adherence/pairs": "two-shape prompts: shapes found in their colour with their shape and direction (objects), "
    "prompts with both right (both)",
    "adherence/displacement": "pixels the shape travels over a clip in the direction asked (mean over prompts)",
    "adherence/displacement_truth": "the same for the held-out footage's clips",
    "adherence/displacement_ratio": "generated over held-out displacement (1 = moves as far as the footage)",
    "clip_score": "100 x cosine(frame, prompt) in CLIP space, mean over frames",
    "fvd": "Frechet video distance, I3D features (lower is better)",
    "fvd_videomae": "content-debiased FVD, VideoMAE features (lower is better)",
}

_MEDIA_SCRIPT = """
const media = [...document.querySelectorAll('video, img')];
let pending = media.length, failed = 0;
const status = document.getElementById('media-status');
function settle(el, ok) {
  if (el.dataset.state) return;
  el.dataset.state = ok ? 'loaded' : 'error';
  failed += ok ? 0 : 1;
  pending -= 1;
  status.textContent = `${media.length - pending - failed} of ${media.length} media loaded` +
    (failed ? `, ${failed} failed` : '');
  if (pending === 0) document.body.dataset.media = failed ? 'failed' : 'loaded';
}
for (const el of media) {
  if (el.tagName === 'VIDEO') {
    if (el.readyState >= 2) settle(el, true);
    el.addEventListener('loadeddata', () => settle(el, true));
    el.addEventListener('error', () => settle(el, false));
  } else {
    if (el.complete) settle(el, el.naturalWidth > 0);
    el.addEventListener('load', () => settle(el, true));
    el.addEventListener('error', () => settle(el, false));
  }
}
if (!media.length) document.body.dataset.media = 'loaded';
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; }
table { border-collapse: collapse; margin: 12px 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-size: 14px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.card { width: 220px; font-size: 13px; }
.card video { width: 208px; image-rendering: pixelated; background: #000; }
.ok { color: #0a7d28; } .miss { color: #b3261e; }
.note { color: #6b6b6b; font-size: 13px; }
"""


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fmt(value) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else html.escape(str(value)))


def _metric_table(result: dict) -> str:
    base = (result.get("baseline") or {}).get("metrics", {})
    names = list(result["metrics"])
    head = "<tr><th>metric</th><th>model</th>" + ("<th>baseline</th>" if base else "") + "<th>meaning</th></tr>"
    rows = []
    for name in names:
        parts = name.split("/")
        keys = ("/".join(parts[:n]) for n in (len(parts), 2, 1))  # the most specific description there is
        meaning = next((DESCRIPTIONS[k] for k in keys if k in DESCRIPTIONS), "")
        cells = f"<td>{html.escape(name)}</td><td class=num>{_fmt(result['metrics'][name])}</td>"
        cells += f"<td class=num>{_fmt(base.get(name))}</td>" if base else ""
        rows.append(f"<tr>{cells}<td class=note>{html.escape(meaning)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def model_title(model: str) -> str:
    """A short name for the report's title: a registry URI as it is, a folder by its last two parts
    (`stage3/pipeline`), not a machine's absolute path."""
    if "://" in model or model.startswith("models:"):
        return model
    parts = Path(model).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else model


def _sample_cards(samples: list[dict], root: Path) -> str:
    cards = []
    for s in samples:
        uri = _data_uri(root / s["mp4"], "video/mp4")
        checks = ""
        if s.get("asked"):
            marks = [
                f"<span class={'ok' if s['detected'][k] == v else 'miss'}>{k}: {html.escape(s['detected'][k]) or '-'}"
                f"</span>"
                for k, v in s["asked"].items()
            ]
            checks = "<br>".join(marks)
        if s.get("objects"):
            found = s["objects"]["detected"]
            marks = [f"<span class={'ok' if o in found else 'miss'}>{html.escape(' '.join(o.values()))}</span>"
                     for o in s["objects"]["asked"]]  # fmt: skip
            checks = "<br>".join(marks)
        if s.get("held_out"):
            checks = "<span class=note>held out of training</span><br>" + checks
        cards.append(
            f"<div class=card><video src='{uri}' autoplay loop muted playsinline></video>"
            f"<div>{html.escape(s['prompt'])}</div><div class=note>seed {s['seed']}</div>{checks}</div>"
        )
    return f"<div class=grid>{''.join(cards)}</div>"


def write_report(result: dict, root: Path, path: Path) -> Path:
    """Write the HTML report for `result` (sample paths relative to `root`) to `path`."""
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>t2v evaluation</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Evaluation of {html.escape(model_title(str(result['model'])))}</h1>",
        f"<p class=note>held-out data {html.escape(str(result['data']['key']))} "
        f"({result['data']['val_samples']} samples); model {html.escape(str(result['model']))} "
        f"{html.escape(json.dumps(result.get('model_info', {})))}"
        "</p><p id=media-status class=note>loading media</p>",
        "<h2>Metrics</h2>",
        _metric_table(result),
    ]
    if result.get("skipped"):
        parts.append("<ul>" + "".join(f"<li class=note>{html.escape(v)}</li>" for v in result["skipped"].values()))
        parts.append("</ul>")
    if (root / "loss.png").exists():
        parts += [
            "<h2>Training loss</h2>",
            f"<img alt='loss curves' src='{_data_uri(root / 'loss.png', 'image/png')}'>",
        ]
    parts += ["<h2>Samples</h2>", _sample_cards(result["samples"], root)]
    if result.get("baseline"):
        parts += [f"<h2>Baseline: {html.escape(str(result['baseline']['model']))}</h2>"]
        parts += [_sample_cards(result["baseline"]["samples"], root)]
    parts += [f"<script>{_MEDIA_SCRIPT}</script></body></html>"]
    path.write_text("".join(parts))
    return path


STAGE_NAMES = {1: "stage 1 (images)", 2: "stage 2 (video)", 3: "stage 3 (HQ video)"}


def stage_dirs(pipe, given: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(legend name, training out_dir) of each stage to plot: the folders given, or every stage named in the
    pipeline's lineage.json."""
    if given:
        return [(_stage_name(Path(d)), Path(d)) for d in given]
    lineage = pipe.folder / "lineage.json" if pipe.folder is not None else None
    if lineage is None or not lineage.exists():
        return []
    return [(_named(stage), Path(stage["config"]["out_dir"])) for stage in json.loads(lineage.read_text())]


def _named(record: dict) -> str:
    return STAGE_NAMES.get(record.get("stage"), f"stage {record.get('stage', '?')}")


def _stage_name(folder: Path) -> str:
    """The stage a training folder holds, from the lineage its export wrote (the folder's name without one: a KFP
    artifact folder is always called "model")."""
    for lineage in (folder / "export" / "lineage.json", folder / "pipeline" / "lineage.json", folder / "lineage.json"):
        if lineage.exists():
            return _named(json.loads(lineage.read_text())[-1])
    return folder.name


def loss_curves(pipe, given: tuple[str, ...] = ()):
    """A matplotlib figure of training and validation loss over the stages, one after the other, each named in the
    legend; None without training logs."""
    logs = [(name, d / "metrics.jsonl") for name, d in stage_dirs(pipe, given)]
    logs = [(name, p) for name, p in logs if p.exists()]
    if not logs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    offset = 0
    for i, (name, path) in enumerate(logs):
        steps = read_metrics_log(path)
        train = [(s + offset, m["loss"]) for s, m in steps.items() if "loss" in m]
        val = [(s + offset, m["val_loss"]) for s, m in steps.items() if "val_loss" in m]
        if train:
            ax.plot(*np.asarray(train).T, color=f"C{i}", alpha=0.8, label=f"{name} train")
        if val:
            ax.plot(*np.asarray(val).T, "o--", color=f"C{i}", markersize=4, label=f"{name} val")
        offset += max(steps, default=0)
        ax.axvline(offset, color="#999", linewidth=0.6)
    ax.set(xlabel="step (stages in sequence)", ylabel="rectified-flow loss", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
