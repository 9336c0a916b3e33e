"""The user's own model code, trained weights and probe data (core.factories, core.weights,
core.probe_data): what they build, and one clear error for each bad input."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genni_ext.core.factories import build_from_factory, describe_factory
from genni_ext.core.models import LeNet5, mlp
from genni_ext.core.probe_data import (
    digits,
    fit_to_model,
    load_probes,
    read_probe_file,
    standardise,
    subsample,
)
from genni_ext.core.weights import load_weights, read_state_dict
from genni_ext.errors import InputError

FACTORY = """
import torch
from torch import nn

def small(width: int = 3):
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 1))

def broken():
    raise RuntimeError("no GPU here")

def not_a_model():
    return 42
"""


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORY))
    return path


# --- factories ------------------------------------------------------------------------------


def test_a_factory_from_a_file_and_from_a_module(factory_file: Path) -> None:
    model = build_from_factory(f"{factory_file}:small", {"width": 5})
    assert isinstance(model, nn.Sequential) and model[0].out_features == 5
    relative = build_from_factory("my_models.py:small", None, base=factory_file.parent)
    assert relative[0].out_features == 3
    built = build_from_factory("genni_ext.core.models:mlp", {"sizes": [3, 4, 1]})
    assert [layer.out_features for layer in built if isinstance(layer, nn.Linear)] == [4, 1]


def test_describe_factory_hashes_the_source(factory_file: Path) -> None:
    spec = f"{factory_file}:small"
    first = describe_factory(spec, {"width": 2})
    assert first["source"] == str(factory_file.resolve()) and first["kwargs"] == {"width": 2}
    assert len(first["source_sha256"]) == 64
    edited = factory_file.parent / "edited.py"
    edited.write_text(factory_file.read_text() + "\n# changed\n")
    assert describe_factory(f"{edited}:small")["source_sha256"] != first["source_sha256"]


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("no_colon", None, r"must be \"package.module:function\""),
        ("a:b:c", None, r"must be \"package.module:function\""),
        ("genni_no_such_module:f", None, r"cannot import module 'genni_no_such_module'"),
        ("{file}:missing", None, r"has no function 'missing'"),
        ("{file}:broken", None, r"raised RuntimeError: no GPU here"),
        ("{file}:not_a_model", None, r"returned int, not a torch.nn.Module"),
        ("{file}:small", {"depth": 2}, r"wrong kwargs \['depth'\]"),
        ("{dir}/absent.py:small", None, r"no file .*absent.py"),
    ],
)
def test_bad_factories(factory_file: Path, spec: str, kwargs: dict | None, message: str) -> None:
    spec = spec.format(file=factory_file, dir=factory_file.parent)
    with pytest.raises(InputError, match=message):
        build_from_factory(spec, kwargs)


# --- weights --------------------------------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return mlp([3, 4, 2])


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_weights_load_exactly(tmp_path: Path, suffix: str) -> None:
    trained = _model()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(1.0)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(trained.state_dict(), str(path))
    else:
        torch.save(trained.state_dict(), path)
    fresh = load_weights(_model(), path)
    for mine, theirs in zip(fresh.parameters(), trained.parameters(), strict=True):
        assert torch.equal(mine, theirs)


class _Payload:
    """Unpickling this would run code: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self) -> tuple:
        return (print, ("ran code",))


def test_weights_refuse_code_and_mismatches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pickled = tmp_path / "code.pt"
    with open(pickled, "wb") as handle:
        pickle.dump({"x": _Payload()}, handle, protocol=2)
    with pytest.raises(InputError, match="refused"):
        read_state_dict(pickled)
    assert "ran code" not in capsys.readouterr().out

    other = tmp_path / "other.pt"
    state = mlp([3, 5, 2]).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["2.bias"]
    torch.save(state, other)
    with pytest.raises(InputError) as error:
        load_weights(_model(), other)
    text = str(error.value)
    assert "missing: 2.bias" in text and "unexpected: extra.weight" in text
    assert "wrong shape: 0.weight [5, 3] (model [4, 3])" in text

    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_dict)
    with pytest.raises(InputError, match="not a state dict"):
        read_state_dict(not_dict)
    nan = tmp_path / "nan.pt"
    state = _model().state_dict()
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, nan)
    with pytest.raises(InputError, match=r"NaN or Inf in 0.weight"):
        load_weights(_model(), nan)
    with pytest.raises(InputError, match="not a weights file"):
        read_state_dict(tmp_path / "w.bin")
    with pytest.raises(InputError, match="no file"):
        read_state_dict(tmp_path / "absent.pt")


# --- probes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
def test_probe_files(tmp_path: Path, suffix: str) -> None:
    data = np.arange(24, dtype=np.float32).reshape(6, 4)
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, data)
    elif suffix == ".npz":
        np.savez(path, inputs=data, labels=np.arange(6))
    elif suffix == ".pt":
        torch.save(torch.from_numpy(data), path)
    else:
        from safetensors.torch import save_file

        save_file({"inputs": torch.from_numpy(data)}, str(path))
    key = "inputs" if suffix == ".npz" else None
    assert torch.equal(read_probe_file(path, key), torch.from_numpy(data))
    if suffix == ".npz":
        with pytest.raises(InputError, match=r"holds 2 arrays \(inputs, labels\); name one"):
            read_probe_file(path)
        with pytest.raises(InputError, match=r"probes.key 'x' is not in"):
            read_probe_file(path, "x")


def test_probe_files_refuse_pickles_and_odd_content(tmp_path: Path) -> None:
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read probes"):
        read_probe_file(objects)
    text = tmp_path / "text.npy"
    np.save(text, np.array(["a", "b"]))
    with pytest.raises(InputError, match="store numbers"):
        read_probe_file(text)
    with pytest.raises(InputError, match="unknown suffix"):
        read_probe_file(tmp_path / "x.csv")


def test_probes_fitted_to_the_model() -> None:
    images = digits()
    assert images.shape == (1797, 64) and float(images.max()) == 16.0
    flat = load_probes(images, (64,), torch.float32, standardised=True)
    assert flat.dtype == torch.float32 and flat.shape == (1797, 64)
    spread = flat.std(dim=0, unbiased=False)
    assert torch.allclose(flat.mean(dim=0), torch.zeros(64), atol=1e-5)
    assert torch.all(((spread - 1).abs() < 1e-4) | (spread == 0))  # constant pixels become 0
    upsampled = load_probes(images, (1, 16, 16), torch.float64, resize=(16, 16), num_probes=10)
    assert upsampled.shape == (10, 1, 16, 16)
    # bilinear upsampling of a constant image is that constant
    constant = fit_to_model(torch.full((2, 64), 3.0), (1, 16, 16), resize=(16, 16))
    assert torch.allclose(constant, torch.full_like(constant, 3.0))
    lenet = load_probes(images, LeNet5().input_shape, torch.float32, resize=(28, 28))
    assert lenet.shape == (1797, 1, 28, 28)


def test_probe_subsampling_and_bad_probes() -> None:
    data = torch.arange(10.0)[:, None]
    first = subsample(data, 4, seed=3)
    assert torch.equal(first, subsample(data, 4, seed=3)) and first.unique().numel() == 4
    assert not torch.equal(first, subsample(data, 4, seed=4))
    with pytest.raises(InputError, match="num_probes is 11 but the data has 10 samples"):
        subsample(data, 11, seed=0)
    with pytest.raises(InputError, match=r"model takes \[3\] \(3 values\)"):
        load_probes(torch.zeros(5, 4), (3,), torch.float32)
    with pytest.raises(InputError, match="NaN or Inf"):
        load_probes(torch.tensor([[1.0], [float("nan")]]), (1,), torch.float32)
    with pytest.raises(InputError, match="needs a model that takes images"):
        load_probes(torch.zeros(5, 4), (4,), torch.float32, resize=(2, 2))
    with pytest.raises(InputError, match="not 1-channel square images"):
        load_probes(torch.zeros(5, 6), (1, 4, 4), torch.float32, resize=(4, 4))
    assert standardise(torch.ones(3, 2)).abs().max() == 0
