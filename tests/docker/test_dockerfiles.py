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


def test_there_is_a_cuda_training_image_and_a_slim_cpu_data_image():
    names = {p.name for p in DOCKERFILES}
    assert names == {"Dockerfile.train", "Dockerfile.data"}
    assert "cuda" in (ROOT / "docker" / "Dockerfile.train").read_text().split("FROM", 1)[1].split()[0]
    assert "slim" in (ROOT / "docker" / "Dockerfile.data").read_text().split("FROM", 1)[1].split()[0]


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
