"""The wheelhouse for an offline GPU machine: what it fetches, what it leaves out, the wheels it rewrites. That the
GPU run needs nothing beyond it: the GPU benchmark's smoke test (test_benchmarks.py) runs with only it installed."""

import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmarks import wheelhouse
from benchmarks.wheelhouse import closure, keep_one_cuda, read_have, target_cuda, wanted

ROOT = Path(__file__).resolve().parents[2]


def write_dist_info(site: Path, name: str, version: str, requires: list[str]) -> None:
    """An installed distribution's metadata (no code): what importlib.metadata reads."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Four made-up distributions on sys.path: a root with a requirement for old Pythons, one always, one of an
    extra, and one the root's own pins would pull but that is installed without them."""
    site = tmp_path / "site"
    write_dist_info(site, "t2vfake-root", "1.0", ["t2vfake-b>=1", "t2vfake-old; python_version < '3.10'",
                                                  "t2vfake-extra; extra == 'x'", "t2vfake-nodeps"])  # fmt: skip
    write_dist_info(site, "t2vfake-b", "2.5", [])
    write_dist_info(site, "t2vfake-old", "0.1", [])
    write_dist_info(site, "t2vfake-extra", "3.0", [])
    write_dist_info(site, "t2vfake-nodeps", "0.5", ["t2vfake-pinned==9"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(wheelhouse, "NO_REQUIREMENTS", {"t2vfake-nodeps"})
    return site


def test_the_closure_follows_requirements_for_the_targets_python_without_extras(installed):
    assert closure(["t2vfake-root"], python="3.12") == {"t2vfake-b": "2.5", "t2vfake-nodeps": "0.5",
                                                        "t2vfake-root": "1.0"}  # fmt: skip
    assert "t2vfake-old" in closure(["t2vfake_Root"], python="3.9")  # names compare canonicalised
    with pytest.raises(SystemExit, match=r"t2vfake-missing: not installed here.*make install"):
        closure(["t2vfake-missing"])


def test_what_the_target_has_is_left_out_whatever_its_version_and_a_headless_opencv_stands_for_opencv(tmp_path):
    have_file = tmp_path / "have.txt"
    have_file.write_text(
        "# pip freeze\ntorch==2.11.0+cu130\nDiffusers==0.40.0\nopencv-python-headless==4.12.0\n"
        "-e git+https://example.org/x#egg=x\nmy-pkg @ file:///wheels/my_pkg.whl\nnumpy\n"
    )
    have = read_have(have_file)
    assert have == {"torch": "2.11.0+cu130", "diffusers": "0.40.0", "opencv-python-headless": "4.12.0",
                    "my-pkg": "", "numpy": ""}  # fmt: skip
    assert target_cuda(have) == "130" and target_cuda({"torch": "2.11.0"}) is None
    # PyPI's CUDA builds say nothing in their version: the CUDA runtime they pulled in does
    assert target_cuda({"torch": "2.11.0", "nvidia-cuda-runtime": "13.0.96"}) == "130"
    assert target_cuda({"torch": "2.9.1", "nvidia-cuda-runtime-cu12": "12.8.90"}) == "128"
    fetched = wanted(have, python=f"{sys.version_info.major}.{sys.version_info.minor}")
    assert not {"torch", "diffusers", "numpy", "opencv-python"} & set(fetched)
    assert {"colossalai", "av", "scenedetect", "bitsandbytes", "galore-torch"} <= set(fetched)
    from importlib.metadata import version

    assert fetched["colossalai"] == version("colossalai")  # pinned to the tested install
    assert fetched["av"] == version("av")


def wheel_bytes(files: dict[str, bytes], dist: str = "bitsandbytes-0.50.2") -> dict[str, bytes]:
    info = f"{dist}.dist-info"
    name, version = dist.split("-")
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    tags = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-any\n"
    files = {**files, f"{info}/METADATA": metadata, f"{info}/WHEEL": tags}
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    return {**files, f"{info}/RECORD": record.encode()}


def write_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_bitsandbytes_keeps_the_cpu_library_and_the_targets_cuda_one_alone_and_still_installs(tmp_path):
    libraries = {f"bitsandbytes/libbitsandbytes_cuda{v}.so": bytes([int(v) % 256]) * 1000 for v in (118, 124, 130)}
    others = {"bitsandbytes/libbitsandbytes_rocm64.so": b"rocm", "bitsandbytes/libbitsandbytes_xpu2025.so": b"xpu"}
    files = {"bitsandbytes/__init__.py": b"VERSION = 1\n", "bitsandbytes/libbitsandbytes_cpu.so": b"cpu" * 10,
             **libraries, **others}  # fmt: skip
    wheel = write_wheel(tmp_path / "bitsandbytes-0.50.2-py3-none-any.whl", wheel_bytes(files))
    dropped = keep_one_cuda(wheel, "130")
    assert sorted(dropped) == ["bitsandbytes/libbitsandbytes_cuda118.so", "bitsandbytes/libbitsandbytes_cuda124.so",
                               *sorted(others)]  # fmt: skip
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
        contents = {n: z.read(n) for n in names}
    assert "bitsandbytes/libbitsandbytes_cuda130.so" in names and not set(dropped) & names
    for line in record:  # every file kept, with its hash and size; RECORD itself unhashed
        path, digest, size = line.rsplit(",", 2)
        if path.endswith("RECORD"):
            assert digest == size == ""
            continue
        data = contents[path]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}" and int(size) == len(data)
    assert {line.split(",")[0] for line in record} == names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(target), str(wheel)], check=True)  # fmt: skip
    assert sorted(p.name for p in (target / "bitsandbytes").glob("*.so")) == [
        "libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"
    ]  # fmt: skip
    assert keep_one_cuda(wheel, "130") == []  # nothing left to drop
    with pytest.raises(SystemExit, match=r"no native library for CUDA 126 .*'130'.*--cuda"):
        keep_one_cuda(wheel, "126")


def test_download_pins_binary_wheels_for_the_target_and_builds_the_source_only_ones(tmp_path, monkeypatch):
    """Against a local index (a folder): the pinned version of a wheel for the target's Python, and a source
    archive built into a wheel as colossalai is."""
    index = tmp_path / "index"
    index.mkdir()
    for version in ("1.0", "2.0"):
        write_wheel(index / f"t2vfake_b-{version}-py3-none-any.whl", wheel_bytes({}, f"t2vfake_b-{version}"))
    src = tmp_path / "t2vfake_src-0.3"
    (src / "t2vfake_src").mkdir(parents=True)
    (src / "t2vfake_src" / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "t2vfake-src"\nversion = "0.3"\n'
    )
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: t2vfake-src\nVersion: 0.3\n")
    with tarfile.open(index / "t2vfake_src-0.3.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=src.name)
    monkeypatch.setattr(wheelhouse, "BUILT_HERE", {"t2vfake-src"})
    out = tmp_path / "wheelhouse"
    wheelhouse.download({"t2vfake-b": "1.0", "t2vfake-src": "0.3"}, out, "3.12",
                        ("--no-index", "--find-links", str(index)))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["t2vfake_b-1.0-py3-none-any.whl",
                                                     "t2vfake_src-0.3-py3-none-any.whl"]  # fmt: skip


def test_the_install_command_puts_the_wheels_and_the_checkout_on_the_path(tmp_path):
    """What the script prints for the target, run there: from the checkout's root, both import."""
    out = tmp_path / "checkout" / "wheelhouse"
    out.mkdir(parents=True)
    write_wheel(out / "t2vfake_w-1.0-py3-none-any.whl", wheel_bytes({"t2vfake_w.py": b"X = 1\n"}, "t2vfake_w-1.0"))
    (tmp_path / "checkout" / "t2vfake_project.py").write_text("Y = 2\n")
    (tmp_path / "checkout" / "bench").mkdir()  # a script in a folder, as benchmarks/gpu.py: its folder on the path
    (tmp_path / "checkout" / "bench" / "run.py").write_text("import t2vfake_w, t2vfake_project\n"
                                                            "print(t2vfake_w.X + t2vfake_project.Y)\n")  # fmt: skip
    command = wheelhouse.install_command(Path("wheelhouse"), site=str(tmp_path / "site"))
    python = Path(sys.executable).parent  # `python3` there is the target's Python
    check = "python3 bench/run.py"
    shown = subprocess.run(["bash", "-c", f'export PATH="{python}:$PATH"; {command} && {check}'],
                           cwd=tmp_path / "checkout", capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0 and shown.stdout.strip() == "3", shown.stderr


def test_the_command_line_needs_the_targets_package_list_with_torch_in_it(tmp_path):
    script = [sys.executable, str(ROOT / "benchmarks" / "wheelhouse.py")]
    missing = subprocess.run([*script, "--list"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--have" in missing.stderr and "pip freeze" in missing.stderr
    no_torch = tmp_path / "have.txt"
    no_torch.write_text("numpy==2.0\n")
    refused = subprocess.run([*script, "--have", str(no_torch), "--list"], capture_output=True, text=True)
    assert refused.returncode == 2 and "names no torch" in refused.stderr
    no_torch.write_text("torch==2.11.0+cu130\n")
    listed = subprocess.run([*script, "--have", str(no_torch), "--list"], capture_output=True, text=True, check=True)
    assert "colossalai==" in listed.stdout and '"wanted"' in listed.stdout.splitlines()[-1]
