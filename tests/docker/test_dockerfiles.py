"""The Dockerfiles, checked statically: a versioned base, a non-root user, the install through the project's own
files (the Makefile with constraints.txt, as on a laptop)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


# the packages pyproject.toml installs ([tool.setuptools.packages.find] include)
PACKAGES = re.findall(r'"(\w+)\*"', re.search(r"^include = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)[1])


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def problems(text: str) -> list[str]:
    found = []
    steps = instructions(text)
    for kind, args in steps:
        if kind == "FROM":
            image = args.split()[0]
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if "@sha256:" not in image and (not tag or tag == "latest" or not re.search(r"\d", tag)):
                found.append(f"base image {image} has no versioned tag")
    users = [args for kind, args in steps if kind == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("the image runs as root (no USER, or USER root/0 last)")
    copied = " ".join(args for kind, args in steps if kind in ("COPY", "ADD"))
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    if not all(name in copied for name in ("pyproject.toml", "constraints.txt", "Makefile")):
        found.append("pyproject.toml, constraints.txt and the Makefile are not copied in")
    missing = [name for name in PACKAGES if not re.search(rf"(^|\s){name}(\s|$)", copied)]
    if missing:
        found.append(f"the project's packages {missing} are not copied in (pyproject.toml packages)")
    if "make install" not in runs:
        found.append("the project is not installed with `make install` (constraints.txt)")
    if re.search(r"pip3? install(?![^&;]*-c constraints\.txt)", runs):
        found.append("a pip install outside the Makefile's constrained install")
    args = {a.split("=")[0] for kind, a in steps if kind == "ARG"}
    envs = " ".join(a for kind, a in steps if kind == "ENV")
    if "GIT_COMMIT" not in args or "T2V_GIT_COMMIT=$GIT_COMMIT" not in envs:
        found.append("the build's git commit is not kept (ARG GIT_COMMIT, ENV T2V_GIT_COMMIT): runs lose their lineage")
    return found


def base_image(path: Path) -> tuple[str, str]:
    """(repository, tag) of the Dockerfile's FROM line, `--platform` and `AS name` left out."""
    args = next(a for kind, a in instructions(path.read_text()) if kind == "FROM").split()
    image = next(a for a in args if not a.startswith("--"))
    repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return repository, tag


def constraints_python() -> str:
    """The Python version constraints.txt was resolved and tested on (its header says so)."""
    return re.search(r"tested together \(Python (\d+\.\d+)", (ROOT / "constraints.txt").read_text())[1]


def test_the_training_image_is_pytorchs_cuda_runtime_with_a_supported_torch():
    from packaging.specifiers import SpecifierSet

    assert {p.name for p in DOCKERFILES} == {"Dockerfile.train", "Dockerfile.data"}
    repository, tag = base_image(ROOT / "docker" / "Dockerfile.train")
    assert repository == "pytorch/pytorch"  # PyTorch's own image: torch built for the CUDA it ships
    m = re.fullmatch(r"(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn(\d+)-runtime", tag)
    assert m, f"{tag}: expected TORCH-cudaX.Y-cudnnN-runtime"
    torch_version, cuda = m[1], (int(m[2]), int(m[3]))
    torch_requirement = re.search(r'"torch(>=[^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert torch_version in SpecifierSet(torch_requirement), f"torch {torch_version} outside {torch_requirement}"
    assert cuda >= (11, 8)  # the first CUDA with Hopper (sm_90) kernels: the H100/H200 of configs/cluster/h100.yaml


def test_the_data_image_is_slim_python_of_the_tested_version():
    repository, tag = base_image(ROOT / "docker" / "Dockerfile.data")
    assert repository == "python"  # the official image, no CUDA
    m = re.fullmatch(r"(\d+\.\d+)\.\d+-slim-(\w+)", tag)
    assert m, f"{tag}: expected X.Y.Z-slim-DEBIAN"
    assert m[1] == constraints_python(), "the data image's Python differs from the one constraints.txt was tested on"
    assert m[2] == "bookworm"  # Debian 12, as the tests' machines (chromium, postgresql, ffmpeg from Debian)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_versioned_non_root_and_installs_through_the_makefile(path):
    assert problems(path.read_text()) == []


def test_the_checks_catch_what_they_are_for():
    bad = "FROM python:latest\nCOPY . .\nRUN pip install torch\n"
    found = problems(bad)
    assert any("no versioned tag" in p for p in found) and any("runs as root" in p for p in found)
    assert any("not installed with `make install`" in p for p in found)
    assert any("outside the Makefile" in p for p in found)
    assert any("git commit is not kept" in p for p in found)
    assert any("runs as root" in p for p in problems("FROM debian:12.5\nUSER t2v\nUSER root\n"))
    assert any("no versioned tag" in p for p in problems("FROM ubuntu\nUSER 1000\n"))
