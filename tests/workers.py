"""The suite on several pytest-xdist workers (`make test`: `-n 2 --dist loadfile --no-loadscope-reorder`).

A unit of work is a test file (its module fixtures are built once), except that the files using one of SHARED's
session fixtures form one unit: a fixture like that is built once per worker that needs it, so they run on one
worker. The units with the most slow tests go first, so that a long one does not start when the others are done.

Only the workers collect, and see which fixtures a test uses; the controller's scheduler only sees test ids. The
workers therefore write the units to a file the controller named (UNITS), and the controller's scheduler reads it
once every worker has collected (xdist's own `--dist loadgroup` cannot carry this: pytest 9 keeps a test's id apart
from the `_nodeid` that xdist renames).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

SHARED = ("stopped_run", "services")  # session fixtures that take a minute or more to build
UNITS = "T2V_TEST_UNITS"  # the file the workers write the units to, {test file: unit}


def configure(config: pytest.Config) -> None:
    """On the controller of a `--dist loadfile` run: name the units file and schedule by it."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if not config.getoption("numprocesses") or config.getoption("dist") != "loadfile":
        return
    folder = tempfile.mkdtemp(prefix="t2v-test-units-")
    os.environ[UNITS] = str(Path(folder) / "units.json")  # the workers start after this and inherit it
    config.pluginmanager.register(Controller(folder), "t2v-test-units")


class Controller:
    def __init__(self, folder: str):
        self.folder = folder

    def pytest_xdist_make_scheduler(self, config, log):
        from xdist.scheduler import LoadFileScheduling

        class Units(LoadFileScheduling):
            """loadfile, with the files of one unit as one scope."""

            units: dict[str, str] | None = None

            def _split_scope(self, nodeid: str) -> str:
                if self.units is None:  # every worker has collected (and written the file) by the first call
                    self.units = json.loads(Path(os.environ[UNITS]).read_text())
                path = super()._split_scope(nodeid)
                return self.units.get(path, path)

        return Units(config, log)

    def pytest_unconfigure(self, config):
        shutil.rmtree(self.folder, ignore_errors=True)
        os.environ.pop(UNITS, None)


def share_work(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker of such a run: the units to the controller's file, and the items in the units' order."""
    if not hasattr(config, "workerinput") or UNITS not in os.environ:
        return
    unit = {item.path: item.path for item in items}  # file -> a file of the same unit (union-find)

    def root(path):
        while unit[path] != path:
            path = unit[path]
        return path

    for name in SHARED:
        users = sorted({item.path for item in items if name in item.fixturenames})
        for path in users[1:]:
            unit[root(path)] = root(users[0])
    ids = {path: str(path.relative_to(config.rootpath)) for path in unit}
    target = Path(os.environ[UNITS])
    partial = target.with_suffix(f".{config.workerinput['workerid']}")
    partial.write_text(json.dumps({ids[path]: ids[root(path)] for path in unit}))
    partial.replace(target)  # whole, whichever worker writes last: they collect the same tests
    slow = Counter(root(item.path) for item in items if "slow" in item.keywords)
    order = {path: i for i, path in enumerate(dict.fromkeys(root(item.path) for item in items))}
    items.sort(key=lambda item: (-slow[root(item.path)], order[root(item.path)]))
