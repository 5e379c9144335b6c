"""Library warnings nobody can act on are silenced by category and module where they arise; ours, and other
categories from the same modules, still show."""

import logging
import subprocess
import sys
import warnings
from pathlib import Path

from components.common.quiet import quiet_libraries

ROOT = Path(__file__).resolve().parents[2]
# what loading colossalai (as training does) makes it and bitsandbytes say on this machine
NOISE = ("tensornvme", "Please install apex", "gemm_4bit_forward")
LOAD = "import colossalai.booster, colossalai.shardformer.layer.normalization, components.train.train"


def python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stderr


def test_loading_colossalai_says_nothing_but_our_own_warnings():
    plain = python(LOAD)  # the libraries do warn here, so the checks below mean something
    assert all(noise in plain for noise in NOISE), plain[-2000:]
    quiet = python(f"from components.common.quiet import quiet_libraries; quiet_libraries(); {LOAD}; "
                   "import warnings; warnings.warn('a warning of ours')")  # fmt: skip
    assert not [noise for noise in NOISE if noise in quiet], quiet[-2000:]
    assert "UserWarning: a warning of ours" in quiet


def test_a_steps_entry_point_is_quiet_before_the_step_loads():
    out = subprocess.run([sys.executable, "-m", "components.train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert "usage:" in out.stdout and "gemm_4bit_forward" not in out.stderr, out.stderr[-2000:]


def test_only_the_named_category_from_the_named_module_is_silenced():
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # every warning once per place, as in a fresh process
        quiet_libraries()

        def warn(category, module, message="m", lineno=1):
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", lineno, module=module)

        warn(UserWarning, "colossalai.utils.safetensors")  # silenced
        warn(FutureWarning, "colossalai.booster.plugin.torch_ddp_plugin")  # silenced
        warn(UserWarning, "kfp.local.orchestrator.task_executor")  # silenced
        warn(RuntimeWarning, "colossalai.utils.safetensors", lineno=2)  # another category from that module: shown
        warn(UserWarning, "colossalai.booster.plugin.torch_ddp_plugin", lineno=3)  # shown
        warn(UserWarning, "components.train.train", lineno=4)  # ours: shown
        warn(UserWarning, "mlflow.pyfunc", "An input example was not provided ...", lineno=5)  # silenced
        warn(UserWarning, "mlflow.pyfunc", "something else", lineno=6)  # shown
    assert [(w.category, w.lineno) for w in shown] == [(RuntimeWarning, 2), (UserWarning, 3), (UserWarning, 4),
                                                       (UserWarning, 6)]  # fmt: skip


def test_a_library_logger_drops_only_the_named_message(caplog):
    quiet_libraries()
    quiet_libraries()  # twice: one filter
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s", "no kernels")
        logger.warning("a different warning")
    assert [r.getMessage() for r in caplog.records] == ["a different warning"]
