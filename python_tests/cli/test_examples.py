"""The bundled examples run (quick settings) and their numbers are what they say."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Each test runs a whole example end to end.
pytestmark = pytest.mark.slow


def _load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trains on scikit-learn's digits, searches, explains, compares and stitches."""
    digits = _load("digits")
    results = digits.main(["--quick", "--out", str(tmp_path)])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "accuracy" in out and "found points" in out
    assert float(out.split("accuracy ", 1)[1].split()[0]) > 0.9  # θ classifies the digits
    for metric in ("cka", "relu_procrustes"):
        diagonal = results[metric].diagonal
        assert len(diagonal) == 2 and all(0.0 <= value <= 1.0 + 1e-9 for value in diagonal)
    stitches = results["stitching"]
    assert [s.layer for s in stitches] == ["linear_0", "linear_1"]
    assert all(math.isfinite(s.penalty) and s.penalty >= 0 for s in stitches)
    for name in ("similarity_cka.png", "similarity_relu_procrustes.png", "stitching.png"):
        assert (tmp_path / name).is_file()
