"""The bundled examples run (quick settings) and their numbers are what they say."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from genni_ext import cli
from genni_ext.store import Experiment

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
    # The trained network and its search are kept in the store, rebuilt from the factory.
    kept = Experiment("digits", home=tmp_path / "genni_home")
    problem = kept.load_problem()
    assert problem.num_probes == 1797 and kept.load_search().params.shape[0] == 6


OWN = EXAMPLES / "own_network"
# Tiny settings over each config: the smoke test checks that the commands run end to end on a
# trained network of the user's own (the README gives the full runs and their times). With so
# few steps no start gets near θ's function, so ε is set far above it (10⁴× J of the best
# constant function) for the sweep to have converged points to span its plane with.
QUICK_OWN = {
    "mlp": [
        "search.starts=3",
        "search.steps=20",
        "subspace.eps_relative=1e4",
        "grids=[{name: plane2d, bound: [-1, 1], n: 5}]",
    ],
    "residual": [
        "search.starts=3",
        "subspace.eps_relative=1e4",
        "search.steps=4",
        "probes.num_probes=64",
        "grids=[{name: plane2d, bound: [-1, 1], n: 3}]",
    ],
}


@pytest.mark.parametrize("name", sorted(QUICK_OWN))
def test_own_network_example(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """train.py, then `genni search`, `sweep` and `analyse` with the example's config."""
    monkeypatch.chdir(EXAMPLES.parent)  # the configs' paths are relative to the repository root
    train = _load_own("train")
    weights = train.main([name, "--steps", "5", "--out", str(tmp_path / "w.safetensors")])  # type: ignore[attr-defined]
    overrides = [f"theta.weights={weights}", *QUICK_OWN[name]]
    home = tmp_path / "home"
    for command in ("search", "sweep"):
        args = [command, "--config", str(OWN / f"{name}.yml"), "--home", str(home), "--no-progress"]
        for item in overrides:
            args += ["--set", item]
        assert cli.main(args) == 0, capsys.readouterr()
    experiment_name = {"mlp": "digits_mlp", "residual": "digits_residual"}[name]
    assert cli.main(["analyse", experiment_name, "--home", str(home), "--no-progress"]) == 0
    experiment = Experiment(experiment_name, home=home)
    assert experiment.load_grid("plane2d").values.shape == ((5, 5) if name == "mlp" else (3, 3))
    assert (experiment.path / "analysis.json").is_file()


def _load_own(name: str) -> object:
    spec = importlib.util.spec_from_file_location(f"own_{name}", OWN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
