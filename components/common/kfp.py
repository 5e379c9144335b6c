"""What the KFP components share: the image they run in and the decorator that makes them.

Components are lightweight Python components on the project's own image (everything is installed there, so no
`packages_to_install` and no kfp install at start-up). The image is read when the component modules are first
imported: `t2v pipeline compile --image REGISTRY/t2v-pipeline:TAG` sets T2V_IMAGE before that.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

DEFAULT_IMAGE = "ghcr.io/t2v-pipeline/t2v-pipeline:0.1.0"


def image() -> str:
    return os.environ.get("T2V_IMAGE", DEFAULT_IMAGE)


def component(func=None, *, passthroughs: list | None = None):
    """`dsl.component` on the project image, without installing kfp or anything else at start-up.
    `passthroughs`: task settings handed to the component as its `dsl.TaskConfig` (`task_config_passthroughs`)."""
    from kfp import dsl

    def make(f):
        extra = {"task_config_passthroughs": passthroughs} if passthroughs else {}
        return dsl.component(f, base_image=image(), install_kfp_package=False, **extra)

    return make(func) if func is not None else make


@contextmanager
def task(name: str):
    """What every component's body runs in, first: the library warnings nobody can act on silenced
    (components.common.quiet) and, under `t2v pipeline run`, the task's start, end (with `report.figure`) or failure
    reported to the runner (components.common.events). Yields the report."""
    from components.common import events
    from components.common.quiet import quiet_libraries

    quiet_libraries()
    with events.task(name) as report:
        yield report


def pipeline_items(overrides: str) -> list[str]:
    """The pipeline's overrides: a JSON list of "section.key=value" items."""
    import json

    items = json.loads(overrides or "[]")
    if not isinstance(items, list):
        raise ValueError(f"overrides {overrides!r}: expected a JSON list of section.key=value items")
    return items


def pipeline_overrides(overrides: str, sections: tuple[str, ...]) -> list[str]:
    """The pipeline's overrides addressed to `sections`, without the section."""
    from components.common import settings

    return settings.scoped(pipeline_items(overrides), sections)


def step_settings(cls, recipe: str, overrides: str, sections: tuple[str, ...], fixed: dict | None = None):
    """A task's settings for its step: the recipe's `sections`, the pipeline's overrides addressed to them, then
    what the task itself fixes (its artifacts' paths). The pretrained weights they name must be on the models
    volume: a task fails at its start naming each missing one and the command that stages it."""
    from components.common import settings

    every = pipeline_items(overrides)  # another step's settings can set a default of this one (run_overrides)
    cfg = settings.load(cls, recipe=recipe, sections=sections, overrides=settings.scoped(every, sections),
                        fixed=fixed, run_overrides=every)  # fmt: skip
    require_models(cfg)
    return cfg


def require_models(cfg) -> None:
    """Raise model.weights.hub.ModelNotFound naming every model `cfg.models()` names that does not resolve (offline: is
    not staged)."""
    if hasattr(cfg, "models"):
        from model.weights.hub import require

        require(cfg.models())


def section_values(recipe: str, overrides: str, sections: tuple[str, ...]) -> dict:
    """Other sections' plain values, merged in order, with the pipeline's overrides addressed to them (a task that
    must agree with another step, without importing it)."""
    from components.common import settings

    return settings.layered(None, recipe=recipe, sections=sections, overrides=pipeline_overrides(overrides, sections))


def section_value(recipe: str, overrides: str, section: str, key: str, default):
    """One value of another step's section."""
    return section_values(recipe, overrides, (section,)).get(key, default)
