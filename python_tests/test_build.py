"""What the build compiles: the CUDA architectures chosen by CMakeLists.txt, and the one
line a build without CUDA gives on how to add it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import genni_ext
from genni_ext.engine.fused import fused_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
ALL_ARCHS = "75-real;80-real;90"
PTX_ARCHS = "75-virtual;80-virtual"


def _configure(tmp_path: Path, env: dict[str, str], fake_gpus: list[str] | None) -> str:
    """Run CMake's configure step of this source tree; return its genni_ext status line.

    ``fake_gpus``: compute capabilities an nvidia-smi stand-in reports (None: no nvidia-smi
    at all, as on a machine without a GPU driver)."""
    pybind11 = pytest.importorskip("pybind11", reason="the test extra installs pybind11")
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("the CUDA architecture choice is only made where cmake and nvcc exist")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if fake_gpus is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + "".join(f"echo {cap}\n" for cap in fake_gpus))
        smi.chmod(0o755)
    path_dirs = [str(bin_dir)] + [
        part
        for part in os.environ["PATH"].split(os.pathsep)
        if not (Path(part) / "nvidia-smi").exists()
    ]
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"GENNI_CUDA", "GENNI_CUDA_ARCHS", "CUDAARCHS"}
    }
    done = subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(tmp_path / "build"),
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ],
        env={**clean, **env, "PATH": os.pathsep.join(path_dirs)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "genni_ext:" in line]
    assert len(lines) == 1, done.stdout
    return lines[0]


@pytest.mark.slow
def test_no_gpu_builds_the_cpu_engine_and_says_how_to_add_cuda(tmp_path: Path) -> None:
    line = _configure(tmp_path, {}, None)
    assert "building without CUDA: no GPU was present at build time" in line
    assert "pip install --force-reinstall --no-deps ." in line and "GENNI_CUDA=ON" in line


@pytest.mark.slow
def test_the_gpus_present_are_compiled_for(tmp_path: Path) -> None:
    line = _configure(tmp_path, {}, ["9.0", "8.6", "9.0"])
    assert line.endswith("building the CUDA kernel for 90;86")


@pytest.mark.slow
def test_cuda_on_without_a_gpu_builds_ptx(tmp_path: Path) -> None:
    line = _configure(tmp_path, {"GENNI_CUDA": "ON"}, None)
    assert line.endswith(f"building the CUDA kernel for {PTX_ARCHS}")


@pytest.mark.slow
def test_all_architectures_when_named(tmp_path: Path) -> None:
    line = _configure(tmp_path, {"GENNI_CUDA_ARCHS": "all"}, ["9.0"])
    assert line.endswith(f"building the CUDA kernel for {ALL_ARCHS}")


def test_this_install_names_why_cuda_is_missing() -> None:
    info = genni_ext.build_info()
    if info["cuda"]:
        assert info["cuda_note"] == ""
        return
    assert info["cuda_note"].startswith(("no GPU", "nvcc was not found", "built with"))
    reason = fused_unavailable_reason(torch.device("cuda"))
    assert reason == f"this install was built without CUDA: {info['cuda_note']}"
