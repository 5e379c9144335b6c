"""Every training stage's data in one pipeline run: each stage's precompute settings (the recipe's `precompute`
section under the stage's own), each data once however many stages share it, and the run's encoding tasks."""

from __future__ import annotations

from pathlib import Path

from components.common.kfp import section_values, step_settings
from components.common.settings import stage_data, stage_sections
from components.precompute.config import PrecomputeConfig
from components.precompute.layout import encoding_tasks, layout


def stage_layouts(captioned: str, workdir: str, recipe: str, overrides: str) -> dict:
    """{stage: (its PrecomputeConfig, its Layout)} for stages 1 to 3, their folders under <workdir>/precompute."""
    stages = {}
    for n in (1, 2, 3):
        data = stage_data(section_values(recipe, overrides, stage_sections(n)))
        fixed = {**data, "manifest": str(Path(captioned) / "manifest.parquet"),
                 "out_root": str(Path(workdir) / "precompute"), "progress": False}  # fmt: skip
        cfg = step_settings(PrecomputeConfig, recipe, overrides, ("precompute",), fixed)
        stages[n] = (cfg, layout(cfg))
    return stages


def distinct(stages: dict) -> dict:
    """{key: (settings, layout)}: each data once, whichever stages share it."""
    data: dict = {}
    for cfg, plan in stages.values():
        data.setdefault(plan.key, (cfg, plan))
    return data


def num_shards(data: dict) -> int:
    """The run's encoding tasks: precompute.num_shards, or one per clips_per_shard clips of the largest data still to
    encode (one when every folder exists). The shard-ids task and each shard's task count them alike: a shard that
    computed another number would leave files to no one, which the merge names."""
    return max(encoding_tasks(cfg, plan.clips) if plan.files else 1 for cfg, plan in data.values())
