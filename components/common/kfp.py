"""What the KFP components share: the image they run in and the decorator that makes them.

Components are lightweight Python components on the project's own image (everything is installed there, so no
`packages_to_install` and no kfp install at start-up). The image is read when the component modules are first
imported: `t2v pipeline compile --image REGISTRY/t2v-pipeline:TAG` sets T2V_IMAGE before that.
"""

from __future__ import annotations

import os

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
