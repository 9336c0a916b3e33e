"""A config that names your own model code, trained weights and probe data builds that
problem, and each mistake in those keys is one ConfigError naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from genni_ext.core.models import flatten_params
from genni_ext.errors import InputError
from genni_ext.store.config import (
    CONFIG_SCHEMA,
    GAUSSIAN_PROBES,
    ConfigError,
    build_problem,
    load_yaml,
    validate_config,
)

FACTORY = """
from torch import nn


class Small(nn.Sequential):
    input_shape = (1, 8, 8)

    def __init__(self, width):
        super().__init__(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 2))

def small(width: int = 4):
    return Small(width)
"""


@pytest.fixture
def factory(tmp_path: Path) -> str:
    path = tmp_path / "models_here.py"
    path.write_text(textwrap.dedent(FACTORY))
    return f"{path}:small"


def _config(**sections: object) -> dict:
    return validate_config({"experiment": "mine", **sections})


def test_the_schema_is_a_valid_config() -> None:
    config = validate_config(load_yaml(CONFIG_SCHEMA))
    assert config["theta"] == {"weights": None}
    assert config["probes"]["num_probes"] == GAUSSIAN_PROBES and config["probes"]["file"] is None


def test_factory_weights_and_digits(tmp_path: Path, factory: str) -> None:
    model_spec = {"factory": factory, "kwargs": {"width": 3}}
    trained = build_problem(_config(model=model_spec)).model
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.mul_(-2.0)
    weights = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), weights)
    config = _config(
        model=model_spec,
        theta={"weights": str(weights)},
        probes={"dataset": "digits", "standardise": True, "num_probes": 100, "seed": 1},
    )
    problem = build_problem(config)
    assert torch.equal(problem.theta, flatten_params(trained))
    assert problem.inputs.shape == (100, 1, 8, 8) and problem.targets.shape == (100, 2)
    again = build_problem(config)
    assert torch.equal(again.inputs, problem.inputs)  # the subsample is seeded


def test_a_relative_factory_file_is_stored_absolute(
    factory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(factory.rsplit(":", 1)[0])
    monkeypatch.chdir(path.parent)
    config = _config(model={"factory": f"{path.name}:small"})
    assert config["model"]["factory"] == f"{path}:small"
    monkeypatch.chdir("/")
    assert build_problem(config).num_params == 64 * 4 + 4 + 4 * 2 + 2


def test_probes_from_a_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    path = tmp_path / "x.npz"
    np.savez(path, inputs=data, other=data[:3])
    config = _config(
        model={"name": "mlp", "sizes": [8, 4, 1]}, probes={"file": str(path), "key": "inputs"}
    )
    problem = build_problem(config)
    assert config["probes"]["num_probes"] is None  # all of the data
    assert torch.equal(problem.inputs, torch.from_numpy(data))


@pytest.mark.parametrize(
    ("sections", "key", "message"),
    [
        ({"probes": {"file": "absent.npy"}}, "probes.file", "no file"),
        ({"probes": {"dataset": "mnist"}}, "probes.dataset", "expected one of digits"),
        ({"probes": {"key": "x"}}, "probes.key", "applies to probes.file"),
        ({"probes": {"resize": [16, 16]}}, "probes.resize", "applies to probes.file"),
        ({"probes": {"standardise": True}}, "probes.standardise", "applies to probes.file"),
        ({"probes": {"dataset": "digits", "resize": [16]}}, "probes.resize", r"\[H, W\]"),
        ({"theta": {"weights": 3}}, "theta.weights", "expected a file path"),
        ({"theta": {"seed": 3}}, "theta.seed", "not a known key"),
        ({"model": {"factory": 3}}, "model.factory", "package.module:function"),
        (
            {"model": {"factory": "x.py:f", "name": "mlp"}},
            "model.name",
            "not a known key; expected one of factory, kwargs",
        ),
        ({"model": {"factory": "genni_no_module:f"}}, "model", "cannot import module"),
    ],
)
def test_bad_sources(sections: dict, key: str, message: str) -> None:
    raw = {"model": {"name": "mlp", "sizes": [64, 2]}, **sections}
    with pytest.raises(ConfigError, match=message) as error:
        _config(**raw)
    assert error.value.key == key


def test_probes_that_do_not_fit_the_model_fail_before_any_run(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 5), dtype=np.float32))
    config = _config(model={"name": "mlp", "sizes": [8, 1]}, probes={"file": str(path)})
    with pytest.raises(InputError, match=r"model takes \[8\]"):
        build_problem(config)
