"""Your own model, weights and probes given wrongly to `genni search`: each gives one
clear error line that names what to fix, exit status 1, and no experiment folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from genni_ext import cli

CODE = textwrap.dedent(
    """
    from torch import nn


    class Custom:
        pass


    def small(width=4):
        return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1))


    def raising():
        raise ValueError("no GPU found")


    def not_a_module():
        return 42
    """
)


class Custom:
    """Stands for a class of the user's code inside a pickle: loading it would run code."""


def _files(root: Path) -> dict[str, str]:
    """Every bad file of the table, written under ``root``; name → path."""
    (root / "net.py").write_text(CODE)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    state = model.state_dict()
    torch.save(torch.zeros(3), root / "tensor.pt")
    keys = {name: value for name, value in state.items() if name != "0.bias"}
    torch.save({**keys, "extra.weight": torch.zeros(1)}, root / "keys.pt")
    save_file({**state, "0.weight": torch.zeros(5, 3)}, str(root / "shapes.safetensors"))
    torch.save({"0.weight": Custom()}, root / "code.pt")
    generator = np.random.default_rng(0)
    np.save(root / "x.npy", generator.normal(size=(100, 3)).astype(np.float32))
    np.save(root / "x_shape.npy", generator.normal(size=(100, 5)).astype(np.float32))
    np.save(root / "x_text.npy", np.array(["a"] * 100))
    with_nan = generator.normal(size=(100, 3)).astype(np.float32)
    with_nan[3, 1] = np.nan
    np.save(root / "x_nan.npy", with_nan)
    return {path.name: str(path) for path in root.iterdir()}


# (what is wrong, the config sections it changes, a fragment of the one error line)
CASES = [
    ("factory not importable", {"model": {"factory": "no_such_package.models:small"}},
     "cannot import module 'no_such_package.models'"),
    ("factory file missing", {"model": {"factory": "{absent.py}:small"}}, "no file"),
    ("factory raising", {"model": {"factory": "{net.py}:raising"}},
     "raised ValueError: no GPU found"),
    ("factory returning a non-Module", {"model": {"factory": "{net.py}:not_a_module"}},
     "returned int, not a torch.nn.Module"),
    ("wrong kwargs", {"model": {"factory": "{net.py}:small", "kwargs": {"depth": 3}}},
     "wrong kwargs ['depth']"),
    ("weights file missing", {"theta": {"weights": "{absent.pt}"}},
     "config key 'theta.weights': no file"),
    ("weights not a state dict", {"theta": {"weights": "{tensor.pt}"}},
     "is not a state dict"),
    ("weights with wrong keys", {"theta": {"weights": "{keys.pt}"}},
     "missing: 0.bias; unexpected: extra.weight"),
    ("weights with wrong shapes", {"theta": {"weights": "{shapes.safetensors}"}},
     "wrong shape: 0.weight [5, 3] (model [4, 3])"),
    ("a pickle that needs code", {"theta": {"weights": "{code.pt}"}},
     "which loading would have to run code for; refused (it names"),
    ("probes file missing", {"probes": {"file": "{absent.npy}"}},
     "config key 'probes.file': no file"),
    ("probes of the wrong shape", {"probes": {"file": "{x_shape.npy}"}},
     "have shape [5] per sample (5 values) but the model takes [3]"),
    ("probes of the wrong dtype", {"probes": {"file": "{x_text.npy}"}},
     "are <U1; store numbers"),
    ("probes with NaN", {"probes": {"file": "{x_nan.npy}"}}, "holds NaN or Inf"),
    ("fewer probes than asked", {"probes": {"file": "{x.npy}", "num_probes": 500}},
     "probes.num_probes is 500 but the data has 100 samples"),
]  # fmt: skip


def _fill(value: object, files: dict[str, str], root: Path) -> object:
    """``value`` with every "{name}" replaced by that file's path (absent ones too)."""
    if isinstance(value, dict):
        return {key: _fill(item, files, root) for key, item in value.items()}
    if isinstance(value, str) and "{" in value:
        name = value[value.index("{") + 1 : value.index("}")]
        return value.replace("{" + name + "}", files.get(name, str(root / name)))
    return value


@pytest.mark.parametrize(("wrong", "change", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_own_input_is_one_clear_error_and_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wrong: str, change: dict, message: str
) -> None:
    files = _files(tmp_path)
    config = {
        "experiment": "bad",
        "model": {"factory": f"{files['net.py']}:small"},
        "probes": {"num_probes": 50, "seed": 1},
        "search": {"starts": 2, "steps": 2},
    }
    for section, entries in _fill(change, files, tmp_path).items():  # type: ignore[union-attr]
        config[section] = entries if section == "model" else {**config.get(section, {}), **entries}
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    capsys.readouterr()
    status = cli.main(["search", "--config", str(path), "--home", str(home), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 1, wrong
    assert err.startswith("genni search: error: ") and "\n" not in err, err
    assert message in err, err
    assert "\x1b" not in err  # no terminal escapes from a library's message
    assert not (home / "experiments" / "bad").exists()
