"""Library warnings that nobody running a step can act on, silenced where they arise: each by its category and the
module that warns (for a library that logs instead, its logger and the message), never all warnings, so ours and
any new one a library adds still show. Every entry point calls `quiet_libraries()` first, before the libraries
load (some warn as they are imported): the `t2v` verbs, `python -m components.<step>` (so `dvc repro` and torchrun
too) and every KFP component."""

from __future__ import annotations

import logging
import warnings

# (category, module that warns, message or "" for any): why each is noise here
WARNINGS = (
    # colossalai's optional accelerators, which a CPU or our GPU image does without: TensorNVMe (asynchronous
    # checkpoint writes) and apex (a fused RMSNorm kernel; STDiT uses torch's norms)
    (UserWarning, r"colossalai\.utils\.safetensors$", ""),
    (UserWarning, r"colossalai\.shardformer\.layer\.normalization$", ""),
    # colossalai's TorchDDPPlugin hands DDP a keyword torch has deprecated
    (FutureWarning, r"colossalai\.booster\.plugin\.torch_ddp_plugin$", ""),
    # kfp.local on one machine: the tasks' Kubernetes settings (resources, display names) are for the cluster, and
    # their image is our own (not a python:* one), so both warnings hold for every task of every local run
    (UserWarning, r"kfp\.local\.orchestrator\.task_executor$", ""),
    (RuntimeWarning, r"kfp\.local\.subprocess_task_handler$", ""),
    # MLflow's advice for pyfunc models that take tables: ours takes prompts, has a signature, and an input example
    # would make MLflow generate a video while registering
    (UserWarning, r"mlflow\.pyfunc$", r".*An input example was not provided"),
)
# logger -> message starts: what libraries log as warnings, as above
LOGGED = {
    # bitsandbytes (imported by peft and diffusers) looks for an optional CPU kernel package at import
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # the project takes no torchvision (a CUDA build of its own); transformers falls back to the PIL processors
    "transformers.utils.import_utils": ("`LlavaNextImageProcessor` requires torchvision",),
    # the pyfunc is a small class whose weights are artifacts: pickling it is what registers it
    "mlflow.pyfunc": ("Passing a Python object as `python_model`",),
}


class _Drop(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_libraries() -> None:
    """Install the filters above (idempotent). A module pattern names the module exactly."""
    for category, module, message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, starts in LOGGED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(starts))
