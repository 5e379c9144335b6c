"""How the registry decides between a challenger and the champion: on one metric of an evaluation that scored both on
the same held-out set, better by more than a margin; a loss only between models trained with the same objective."""

from __future__ import annotations

LOWER_IS_BETTER = ("loss", "fvd", "flicker")
# what decides between models trained with different objectives, best first: judged on their samples
SAMPLE_METRICS = ("fvd", "fvd_videomae", "clip_score", "adherence/mean")


def lower_is_better(metric: str, mode: str) -> bool:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode={mode!r} must be auto, min or max")
    return any(word in metric for word in LOWER_IS_BETTER) if mode == "auto" else mode == "min"


def decision_metric(metric: str, evaluation: dict, baseline: dict | None) -> tuple[str, str]:
    """The metric that decides between the challenger and the champion, and a note when it is not `metric`. A loss is
    comparable only between models trained with the same objective: when an imported Open-Sora 1.0 model (IDDPM) and
    a rectified-flow model meet, the first of SAMPLE_METRICS both evaluations hold decides, as judged on samples."""
    objectives = [(entry or {}).get("objective") for entry in (evaluation, baseline)]
    if baseline is None or "loss" not in metric or objectives[0] == objectives[1]:
        return metric, ""
    shared = [m for m in SAMPLE_METRICS if m in evaluation["metrics"] and m in baseline["metrics"]]
    if not shared:
        raise ValueError(
            f"{metric} is {objectives[0]} loss for this model and {objectives[1]} loss for the champion, which "
            f"cannot be compared, and the evaluation holds no sample metric both share ({', '.join(SAMPLE_METRICS)}):"
            " evaluate with --fvd-model or --clip-model, or register with --metric set to a sample metric"
        )
    return shared[0], f"{metric} is not comparable ({objectives[0]} vs the champion's {objectives[1]}): "


def decide(challenger: float, champion: float, *, lower: bool, margin: float) -> bool:
    """True when the challenger beats the champion by more than `margin`."""
    gain = champion - challenger if lower else challenger - champion
    return gain > margin
