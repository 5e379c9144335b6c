"""The wheels a GPU run needs on an offline machine that already has PyTorch (an air-gapped node, a bare CUDA image).

`benchmarks/gpu.py` and `t2v train` import a part of what `make install` installs: the training stack
(`GPU_RUN`), everything those distributions require, and none of the pipeline's services (kfp, MLflow, DVC, S3).
This script downloads that set as wheels, pinned to the versions installed here (the tested set), for the target's
Python, leaving out what the target already has:

    python3 -m pip freeze > have.txt                       # on the GPU machine (names alone also do)
    .venv/bin/python benchmarks/wheelhouse.py --have have.txt --out wheelhouse    # here, online
    python3 -m pip install --no-index --no-deps --target /tmp/site wheelhouse/*.whl   # there
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu.py    # there, in the checkout's root

(`make wheelhouse HAVE=have.txt` runs the second line.) colossalai, which PyPI serves as a source archive, is built
into a pure-Python wheel (no CUDA extensions, as `make install` installs it); bitsandbytes keeps its CPU library and
that of the target's CUDA alone (read from torch's `+cuXYZ` in have.txt, or from the nvidia-cuda-runtime that PyPI's
CUDA builds of torch pull in; its wheel holds one per CUDA, ROCm and XPU version: 43 MB, 3.4 MB kept). The tests
run `benchmarks/gpu.py --smoke` in an environment that holds only these distributions (`isolated_python`), so an
import added to the training path that needs another one fails CI. For a target like PyTorch's CUDA images
(transformers, numpy, pandas, OpenCV already there) the wheelhouse is about 48 MiB, av's 34 the most. The last
line printed is a JSON object: the wheels, their sizes and the install command.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What the GPU run imports (benchmarks/gpu.py's parts, `python -m components.train` under zero2 or ddp, the toy
# world and precompute its loop part trains on), by distribution; what these require comes with them. Nothing more
# is needed: tests/benchmarks run the smoke run with only these (and what they require) installed.
GPU_RUN = (
    "torch", "colossalai", "diffusers", "transformers", "accelerate", "safetensors", "einops", "numpy", "pyyaml",
    "rich", "tqdm", "opencv-python", "pandas", "pyarrow",  # the training step and its data
    "av", "scenedetect",  # the toy world's videos and their ingest (the loop part)
    "peft", "galore-torch", "bitsandbytes", "psutil",  # what colossalai's booster imports (it comes without them)
    "setuptools",  # torch.compile's inductor imports it; torch requires it on Python >= 3.12 only
)  # fmt: skip
NO_REQUIREMENTS = {"colossalai"}  # installed with --no-deps: its pins contradict the tested stack
# Distributions that stand for another one (the same modules): a target holding one of these needs no other
STANDS_FOR = {
    "opencv-python": {"opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"},
}
BUILT_HERE = {"colossalai"}  # a source archive on PyPI: built into a pure-Python wheel
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
# bitsandbytes' native libraries for an accelerator: one per CUDA, ROCm and XPU version (the CPU one is kept)
ACCELERATOR_LIBRARY = re.compile(r"(?:^|/)libbitsandbytes_(cuda|rocm|xpu)(\w+?)\.so$")


def closure(roots=GPU_RUN, python: str = "3.12") -> dict[str, str]:
    """Canonical name -> installed version of `roots` and everything they require (extras left out), with the
    requirements' markers evaluated for Linux x86-64 and `python`. Every one must be installed here."""
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}  # fmt: skip
    found: dict[str, str] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name}: not installed here, so no version to pin; run `make install` first") from None
        found[name] = dist.version
        if name in NO_REQUIREMENTS:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return dict(sorted(found.items()))


def read_have(path: Path) -> dict[str, str]:
    """Canonical name -> version ('' when not given) from a `pip freeze` or `pip list` output, or names alone."""
    have: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("-", "Package", "---")):
            continue
        if " @ " in line:
            name, version = line.split(" @ ", 1)[0], ""
        elif "==" in line:
            name, version = line.split("==", 1)
        else:
            name, _, version = line.partition(" ")
        have[canonicalize_name(name.strip())] = version.strip()
    return have


def target_cuda(have: dict[str, str]) -> str | None:
    """The CUDA version tag of the target's torch: '130' for torch 2.11.0+cu130, or, for PyPI's CUDA builds (whose
    version says nothing: torch==2.11.0), from the CUDA runtime they require (nvidia-cuda-runtime==13.0.96,
    nvidia-cuda-runtime-cu12==12.8.90 -> '128'). None when have.txt states neither."""
    match = re.search(r"\+cu(\d+)", have.get("torch", ""))
    if match:
        return match.group(1)
    for name, version in have.items():
        runtime = re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", name)
        numbers = re.match(r"(\d+)\.(\d+)", version)
        if runtime and numbers:
            return numbers.group(1) + numbers.group(2)
    return None


def wanted(have: dict[str, str], python: str = "3.12") -> dict[str, str]:
    """What the target lacks: the closure less what have.txt names (at whatever version the target has it, or a
    distribution standing for it)."""
    return {
        name: version
        for name, version in closure(python=python).items()
        if name not in have and not STANDS_FOR.get(name, set()) & set(have)
    }


def download(pins: dict[str, str], out: Path, python: str, pip_args: tuple[str, ...] = ()) -> None:
    """Wheels of `pins` (name -> version) for Linux x86-64 and `python` into `out`; colossalai built from source."""
    out.mkdir(parents=True, exist_ok=True)
    binary = {n: v for n, v in pins.items() if n not in BUILT_HERE}
    tags = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip"]
    if binary:
        subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
                        "--implementation", "cp", *tags, "-d", str(out), *pip_args,
                        *(f"{n}=={v}" for n, v in binary.items())], check=True)  # fmt: skip
    for name in sorted(set(pins) & BUILT_HERE):
        with tempfile.TemporaryDirectory() as source:
            subprocess.run([*pip, "download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d", source,
                            *pip_args, f"{name}=={pins[name]}"], check=True)  # fmt: skip
            archive = next(Path(source).iterdir())
            subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(archive)],
                           check=True)  # fmt: skip


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def keep_one_cuda(wheel: Path, cuda: str) -> list[str]:
    """Rewrite `wheel` without the native libraries for other accelerators than CUDA `cuda` (other CUDA versions,
    ROCm, XPU), its RECORD to match. Returns the names dropped; raises when the wheel has no library for `cuda`,
    which would leave it none."""
    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        found = {i.filename: m.groups() for i in infos if (m := ACCELERATOR_LIBRARY.search(i.filename))}
        versions = {version for kind, version in found.values() if kind == "cuda"}
        if versions and cuda not in versions:
            raise SystemExit(f"{wheel.name}: no native library for CUDA {cuda} (it has {sorted(versions)}); "
                             "give the target's CUDA with --cuda")  # fmt: skip
        drop = [name for name, (kind, version) in found.items() if (kind, version) != ("cuda", cuda)]
        if not drop:
            return []
        kept = {i.filename: z.read(i) for i in infos if i.filename not in drop}
    record = next(name for name in kept if name.endswith(".dist-info/RECORD"))
    lines = [record_line(name, data) for name, data in kept.items() if name != record] + [f"{record},,"]
    kept[record] = ("\n".join(lines) + "\n").encode()
    trimmed = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in kept.items():
            z.writestr(name, data)
    trimmed.replace(wheel)
    return drop


def install_command(out: Path, site: str = "/tmp/site") -> str:
    """What installs the wheelhouse on the target, beside its own packages (which stay as they are), and puts it and
    the checkout (the current folder: the repository's root) on Python's path."""
    install = f"python3 -m pip install -q --no-index --no-deps --target {site} {out}/*.whl"
    return f'{install} && export PYTHONPATH="{site}:$PWD"'


def isolated_python(dists, folder: Path) -> Path:
    """A virtual environment in `folder` whose site-packages holds only `dists` (canonical names, installed here;
    links to their files): what a machine with just those has. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    for name in dists:
        dist = md.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops - {"__pycache__", "bin"}):
            source, target = base / top, site / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
    return folder / "bin" / "python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--have", help="the target's `pip freeze` (or names, one a line): left out")
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="folder for the wheels (wheelhouse)")
    parser.add_argument("--python", default="3.12", help="the target's Python, major.minor (default 3.12)")
    parser.add_argument("--cuda", help="the target's CUDA tag for bitsandbytes, e.g. 130 (default: from --have, "
                        "torch's +cuXYZ or its nvidia-cuda-runtime version)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print what would be fetched, fetch nothing")
    parser.add_argument("pip_args", nargs="*", help="after --: passed to pip download (--index-url, --find-links)")
    args = parser.parse_args(argv)
    if not args.have or not Path(args.have).is_file():
        parser.error(f"--have {args.have or '(not given)'}: give the target's `python3 -m pip freeze` output (a "
                     "file), so what it has is not fetched")  # fmt: skip
    have = read_have(Path(args.have))
    if "torch" not in have:
        parser.error(f"--have {args.have} names no torch: this is for machines that have PyTorch (the CUDA build "
                     "cannot be fetched as a wheel here)")  # fmt: skip
    pins = wanted(have, args.python)
    if args.list:
        for name, version in pins.items():
            print(f"{name}=={version}")
        print(json.dumps({"wheelhouse": str(args.out), "wanted": pins}))
        return 0
    download(pins, args.out, args.python, tuple(args.pip_args))
    cuda = args.cuda or target_cuda(have)
    dropped: list[str] = []
    for wheel in args.out.glob("bitsandbytes-*.whl"):
        if cuda is None:
            print(f"{wheel.name}: kept whole, every CUDA's library (no --cuda, and have.txt names no CUDA build of "
                  "torch nor a CUDA runtime)", file=sys.stderr)  # fmt: skip
        else:
            dropped += keep_one_cuda(wheel, cuda)
    sizes = {w.name: w.stat().st_size for w in sorted(args.out.glob("*.whl"))}
    for name, size in sizes.items():
        print(f"{size / 2**20:8.1f} MiB  {name}")
    total, install = sum(sizes.values()), install_command(args.out)
    print(f"{total / 2**20:8.1f} MiB in {len(sizes)} wheels; on the target: {install}")
    print(json.dumps({"wheelhouse": str(args.out), "wanted": pins, "wheels": sizes, "total_bytes": total,
                      "dropped": dropped, "install": install}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
