"""Recipes as the pipeline reads them: which settings each section holds, every task's settings resolved as the
task will resolve them, and the checks made before a run is started (unknown sections or keys, invalid values,
defaults restated in a recipe)."""

from __future__ import annotations

import dataclasses
import json

from components.caption.caption import CaptionConfig
from components.common import settings
from components.common.scores import unscored
from components.common.settings import stage_sections
from components.evaluate.config import EvalConfig
from components.generate.generate import GenerateConfig
from components.ingest.config import IngestConfig
from components.precompute.config import PrecomputeConfig
from components.register.register import RegisterConfig
from components.synth.synth import SynthConfig
from components.train.config import TrainConfig

SECTIONS = {
    "synth": SynthConfig,
    "ingest": IngestConfig,
    "caption": CaptionConfig,
    "precompute": PrecomputeConfig,
    "train": TrainConfig,
    "stage1": TrainConfig,
    "stage2": TrainConfig,
    "stage3": TrainConfig,
    "evaluate": EvalConfig,
    "register": RegisterConfig,
    "generate": GenerateConfig,
}
# each task's settings: its sections of the recipe, in order
TASKS = {
    "synth": ("synth",),
    "ingest": ("ingest",),
    "caption": ("caption",),
    **{f"precompute-stage-{n}": ("precompute",) for n in (1, 2, 3)},  # + the stage's data (settings.stage_data)
    **{f"train-stage-{n}": stage_sections(n) for n in (1, 2, 3)},
    "evaluate": ("evaluate",),
    "register": ("register",),
}


def settings_class(task: str):
    return SECTIONS[TASKS[task][-1]]


def resolve(recipe, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, object]:
    """Every task's settings from a recipe (file, YAML text or mapping) and pipeline overrides."""
    values = settings.read_recipe(recipe)
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ValueError(f"recipe: unknown sections {unknown}; known: {list(SECTIONS)}")
    bad = [o for o in overrides if o.partition(".")[0] not in SECTIONS or "=" not in o]
    if bad:
        raise ValueError(f"overrides {bad}: each is section.key=value with a section of {list(SECTIONS)}")

    def load(task, fixed=None):
        names = TASKS[task]
        return settings.load(
            settings_class(task), recipe=values, sections=names, overrides=settings.scoped(overrides, names),
            fixed=fixed, run_overrides=overrides,
        )  # fmt: skip

    tasks = {task: load(task) for task in TASKS if not task.startswith("precompute-")}
    for n in (1, 2, 3):
        stage = vars(tasks[f"train-stage-{n}"])  # its fields as they are (to_dict would make bucket keys text)
        tasks[f"precompute-stage-{n}"] = load(f"precompute-stage-{n}", settings.stage_data(stage))
    return {task: tasks[task] for task in TASKS}


def check(recipe, overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse a recipe before a run starts: a ValueError naming the section and key (or the invalid value), or a
    stage that selects its clips on a score the recipe's ingest does not compute."""
    tasks = resolve(recipe, overrides)
    problems = [
        problem
        for n in (1, 2, 3)
        for problem in unscored(tasks[f"train-stage-{n}"].subset, tasks["ingest"], f"stage{n}.subset")
    ]
    if problems:
        raise ValueError("; ".join(problems))


def restated_defaults(recipe) -> list[str]:
    """`section.key` for every value a recipe states that equals the step's default: a copy that would drift
    silently when the default changes (a recipe holds only what differs)."""
    found = []
    for section, values in settings.read_recipe(recipe).items():
        values = settings.sections_of({section: values}, (section,))
        defaults = settings.defaults(SECTIONS[section])
        for key, value in _leaves(values, defaults):
            if _same(value, defaults[key]):
                found.append(f"{section}.{key}")
    return found


def _leaves(values: dict, defaults: dict, prefix: str = ""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in defaults:
            yield from _leaves(value, defaults, f"{path}.")
        elif path in defaults:
            yield path, value


def _same(a, b) -> bool:
    plain = json.loads(json.dumps(a, default=str)), json.loads(json.dumps(b, default=str))
    return plain[0] == plain[1] and not dataclasses.is_dataclass(b)
