"""Nothing in the package unpickles: every file it reads may come from a shared volume or the registry, and
unpickling one runs whatever code it holds. The scan reads the source (ast), and is shown what it must catch."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "model", "pipelines", "t2v", "benchmarks")
PICKLERS = {"pickle", "cloudpickle", "dill", "joblib", "_pickle", "cPickle"}


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def problems(source: str, where: str) -> list[str]:
    """Unpickling in `source`: pickle-family imports, torch.load without weights_only=True, allow_pickle=True,
    pandas' read_pickle, and MLflow models logged as pickled Python objects."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{line}: imports {m}" for m in modules if m.split(".")[0] in PICKLERS]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        weights_only = _keyword(node, "weights_only")
        tensors_only = isinstance(weights_only, ast.Constant) and weights_only.value is True
        if (name.endswith("torch.load") or (name == "load" and weights_only is not None)) and not tensors_only:
            found.append(f"{line}: {name} without weights_only=True")
        allow = _keyword(node, "allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            found.append(f"{line}: {name}(allow_pickle=True)")
        if name.endswith("read_pickle") or (name.endswith(".loads") and name.split(".")[0] in PICKLERS):
            found.append(f"{line}: {name}")
        model = _keyword(node, "python_model")
        if isinstance(model, ast.Call) and _dotted(model.func) not in ("str", "os.fspath"):  # a path is code
            found.append(f"{line}: {name}(python_model=<object>) pickles the object; log the model from code")
    return found


def test_the_package_never_unpickles():
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50
    found = [p for f in files for p in problems(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import cloudpickle as cp",
        "from joblib import load",
        "import torch\nstate = torch.load(path)",
        "import torch\nstate = torch.load(path, weights_only=False)",
        "from torch import load\nstate = load(path, weights_only=False)",
        "import numpy as np\nx = np.load(path, allow_pickle=True)",
        "import pandas as pd\nx = pd.read_pickle(path)",
        "mlflow.pyfunc.log_model(name='model', python_model=T2VModel())",
    ],
)
def test_the_scan_catches_each_way_of_unpickling(snippet):
    assert problems(snippet, "snippet")


def test_the_scan_lets_tensors_only_loads_through():
    safe = "import torch\nx = torch.load(p, map_location='cpu', weights_only=True)\nlog_model(python_model='code.py')"
    assert problems(safe, "snippet") == []
