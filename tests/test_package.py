"""The package stands alone: a wheel built from the repository, installed into a fresh virtual
environment outside the checkout, runs `rgbatch info`, `compress` and `restore` with the
default model that ships inside it (issue 19 item 6, issue 20 item 2).

The fresh environment takes the dependencies (torch, Ray, ...) from this test's environment
through a .pth line instead of downloading them again; rgbatch itself comes only from the wheel,
and every command runs from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import rgbatch
from rgbatch.weights import DEFAULT_WEIGHTS, EARLIER_MODELS, read_weight_file

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).parent / "data" / "kodim05_crop192.png"


def test_the_default_model_is_package_data():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.parent.parent == Path(rgbatch.__file__).parent  # inside the package, not the repo
    assert not (REPO / "weights" / "default.safetensors").exists()  # moved, not copied


def build_wheel(out: Path) -> Path:
    """A wheel of the repository's package, built from a copy (the build's by-products stay out of
    the checkout)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "rgbatch", src / "rgbatch", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out / "dist"), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("rgbatch-*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A virtual environment holding the wheel; the dependencies are this environment's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # appended after the fresh site-packages, so the wheel's rgbatch comes first; .pth files of the
    # folder named here are not run, so this environment's editable rgbatch stays out
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, text=True)
    return path / "bin"


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_compresses_and_restores(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rgbatch/models/default.safetensors" in names
    assert {f"rgbatch/models/{mid}.delta" for mid in EARLIER_MODELS} <= set(names)  # old archives restore
    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"  # the current folder of every command: no checkout in sight
    (work / "photos").mkdir(parents=True)
    Image.open(SAMPLE).crop((0, 0, 96, 64)).save(work / "photos" / "a.png")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")

    def rgbatch_cli(*args):
        done = subprocess.run([str(bin_dir / "rgbatch"), *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    where = subprocess.run([str(bin_dir / "python"), "-c", "import rgbatch.weights as w; print(w.DEFAULT_WEIGHTS)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where
    model_id = read_weight_file()[1]
    assert model_id in rgbatch_cli("--version") and rgbatch.__version__ in rgbatch_cli("--version")
    assert json.loads(rgbatch_cli("info"))["model_id"] == model_id
    compressed = json.loads(rgbatch_cli("compress", "photos", "--out", "archive", "--iterations", "2",
                                        "--workers", "1", "--json"))
    assert compressed["ok"] == 1 and compressed["failed"] == 0
    rgbatch_cli("restore", "archive", "--out", "restored", "--iterations", "1")
    assert Image.open(work / "restored" / "a.png").size == (96, 64)
