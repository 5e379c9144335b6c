"""What a run of the toy pipeline produced and where to look.

`t2v pipeline run` (run by `make demo`, through kfp.local) prints `summary` of its own folders; `python -m
pipelines.demo` prints it for the DVC outputs under `data/` after `dvc repro` (run by `make repro`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary(
    evaluation: Path = Path("data/evaluate"),
    decision_path: Path = Path("data/register/decision.json"),
    tracking_uri: str = "sqlite:///mlflow.db",
) -> str:
    """The held-out loss, adherence per attribute, the registry decision and where to look."""
    metrics_path = evaluation / "metrics.json"
    if not metrics_path.exists():
        raise ValueError(f"{metrics_path} not found: run `make demo` (or `dvc repro`) first")
    result = json.loads(metrics_path.read_text())
    m = result["metrics"]
    lines = [f"validation loss {m['val_loss']:.4f} on {result['data']['val_samples']} held-out clips"]
    from components.evaluate.adherence import ATTRIBUTES, CHANCE

    adherence = {name: m[f"adherence/{name}"] for name in ATTRIBUTES if f"adherence/{name}" in m}
    if adherence:
        shown = ", ".join(f"{k} {v:.0%} (chance {CHANCE[k]:.0%})" for k, v in adherence.items())
        lines.append(f"prompt adherence over {len(result['samples'])} prompts: {shown}")
    for group, label in (("held_out", "combinations no training clip shows"), ("seen", "combinations it saw")):
        if f"adherence/{group}/mean" in m:
            shown = ", ".join(
                f"{k} {m[f'adherence/{group}/{k}']:.0%}" for k in ATTRIBUTES if f"adherence/{group}/{k}" in m
            )
            lines.append(f"  {label} ({m[f'adherence/{group}/prompts']:.0f} prompts): {shown}")
    if "adherence/pairs/both" in m:
        lines.append(
            f"  two-shape prompts ({m['adherence/pairs/prompts']:.0f}): {m['adherence/pairs/objects']:.0%} of the "
            f"shapes right, both right in {m['adherence/pairs/both']:.0%}"
        )
    if "adherence/displacement_truth" in m:
        lines.append(
            f"motion: the shapes travel {m['adherence/displacement']:.1f} px per clip in the direction asked, the "
            f"held-out footage's {m['adherence/displacement_truth']:.1f} px"
        )
    if decision_path.exists():
        d = json.loads(decision_path.read_text())
        alias = "champion" if d["promoted"] else "challenger"
        lines.append(f"registered: {d['name']} version {d['version']} ({alias}: {d['reason']})")
    lines += [
        "",
        f"sample videos   {evaluation / 'samples'}/ (mp4 and GIF)",
        f"report          {evaluation / 'report.html'} (open in a browser)",
        f"loss curves     {evaluation / 'loss.png'}",
        f"MLflow UI       mlflow ui --backend-store-uri {tracking_uri}   (then http://127.0.0.1:5000)",
        'generate        t2v generate "a red circle moves left on a black background" '
        f"--model models:/t2v-stdit@champion --tracking-uri {tracking_uri} --gif",
    ]
    return "\n".join(lines)


def main() -> int:
    try:
        print(summary())
    except ValueError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
