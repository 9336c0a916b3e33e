"""The YAML configuration of a GENNI run, as the ``genni`` command reads it.

Every key is optional except ``experiment`` and ``model`` (the command needs both; ``genni
demo`` fills them in). Unknown keys are errors, and every error names the key and what it
expected. Numbers may be written as ints where floats are expected (``lr: 1``), in exponent
form anywhere (``lr: 1e-3``, ``num_probes: 1e4``: YAML 1.2 numbers, though PyYAML's YAML 1.1
would read them as strings), and whole numbers where ints are expected.
:data:`CONFIG_SCHEMA` is the schema: every key with its default and what it means (``genni
search --help`` prints it).

:func:`validate_config` turns a parsed mapping into the complete configuration (every
default filled in), which is what the store saves as ``config.yml``; :func:`build_model`
and :func:`build_problem` turn it into a model and a :class:`genni_ext.Problem`.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genni_ext._validate import BACKENDS, MAX_SEED, PRECISIONS
from genni_ext.core.factories import SPEC_FORMS, build_from_factory
from genni_ext.core.models import ACTIVATIONS, POOLS, LeNet5, TwoNeuronNet, mlp
from genni_ext.core.probe_data import DATASETS, digits, load_probes, read_probe_file
from genni_ext.core.problem import Problem, infer_input_shape
from genni_ext.core.sgd_search import DEFAULT_STARTS, OPTIMIZERS, SearchOptions
from genni_ext.core.weights import load_weights
from genni_ext.errors import InputError
from genni_ext.store.names import check_name

MODEL_NAMES = ("two_neuron", "mlp", "lenet5")
GAUSSIAN_PROBES = 16384
"""How many standard-normal probes a config that names no data gets (the paper's number)."""
MODEL_ALIASES = {"lenet": "lenet5"}

# Every key of a config file with its default and what it means, as YAML; `genni COMMAND
# --help` prints it, and it is a valid config itself.
CONFIG_SCHEMA = f"""\
experiment: two_neuron_run       # required: <home>/experiments/<name>/ (no '/')
model:                           # required: the network φ(x, θ), built in or your own
  name: two_neuron               # {" | ".join(MODEL_NAMES)}
  # or your code: factory: "package.module:function" or "path/to/file.py:function" (a path
  #   relative to the working directory, stored absolute), kwargs: {{...}} (its keyword
  #   arguments); it must return an nn.Module; it is built after torch.manual_seed(seed)
  #   and put in eval mode
  # mlp:    sizes: [8, 32, 1] (required, input first), activation: relu, bias: true
  # lenet5: in_channels: 1, input_size: 28, num_outputs: 1, activation: relu,
  #         pool: max, padding: 2, output_activation: null
  # activations: {" | ".join(ACTIVATIONS)}; pool: {" | ".join(POOLS)}
seed: 0                          # θ: torch.manual_seed(seed), then the model is built
theta:
  weights: null                  # trained θ: a state dict (.pt/.pth, read without running
                                 # code, or .safetensors) loaded strictly into the model
probes:
  num_probes: 16384              # how many; null with data: every sample
  seed: 0                        # the generator of Gaussian probes, or of the subsample
  file: null                     # your data instead of standard-normal probes: .npy, .npz,
                                 # .pt (a tensor) or .safetensors, [N, ...]
  key: null                      # the array to read from a file holding several
  dataset: null                  # {" | ".join(DATASETS)}: scikit-learn's 8x8 digit images
  standardise: false             # per feature: mean 0, standard deviation 1 over the data
  resize: null                   # [H, W]: resize images (bilinear) for a model taking
                                 # [C, H, W]; otherwise samples are reshaped to its input
search:                          # Algorithm 1: SGD from K random starts, batched
  name: search                   # saved as searches/<name>/
  starts: {DEFAULT_STARTS:<23}# K
  steps: {SearchOptions.steps}
  lr: {SearchOptions.lr}
  batch_size: {SearchOptions.batch_size:<19}# minibatch of probes per step
  optimizer: {SearchOptions.optimizer:<20}# {" | ".join(OPTIMIZERS)}
  momentum: {SearchOptions.momentum}
  tol: null                      # stop once every start's J is below tol (null: never)
  seed: null                     # start k: seed + 1 + k (its init and minibatches); null:
                                 # θ's seed. θ's seed must be outside [seed+1, seed+starts]
  record_every: {SearchOptions.record_every:<17}# J on all probes every this many steps (history)
  restart_collapsed: false       # re-initialise a start whose hidden ReLU units collapsed
                                 # (more dead or merged than θ's) at a record point: seed
                                 # seed + 1 + k + starts (r + 1) for restart r of start k
  max_restarts: {SearchOptions.max_restarts:<17}# most restarts per start (restart_collapsed)
subspace:
  eps: 0.0025                    # ε: a start has converged when its J < ε
  eps_relative: null             # ε as a fraction of J of the best constant function
                                 # (Problem.constant_loss); when set, eps is ignored and
                                 # the saved config records the ε it gave. A flag (or a
                                 # file over a preset) giving one replaces the other
  m: 2                           # directions of the plane (default dim of a grid)
  center: null                   # θ₀: index of a converged start (0: the first), null:
                                 # the best converged one
grids:                           # one sweep each, saved as grids/<name>/ (name, bound
                                 # and n required; dim optional)
  - name: plane2d
    bound: [-2, 2]               # [a, b] on every axis
    n: 100                       # points per axis
    dim: 2                       # axes (the plane's m for this grid; default subspace.m)
backend: auto                    # {" | ".join(BACKENDS)}
device: cpu                      # cpu | cuda | cuda:N: where search and sweep run
precision: full                  # {" | ".join(PRECISIONS)}: sweeps' Linear/Conv2d on tensor cores
                                 # (float32 on CUDA; README "Precision")
num_threads: null                # CPU threads (null: all)
chunk_points: null               # grid points per chunk file (null: ~2e11 flops each)
"""


class ConfigError(InputError):
    """A configuration value is missing, unknown or of the wrong kind; the message names
    the key (dotted: ``search.lr``, ``grids[1].n``) and what was expected."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}")


# --- value checks ---------------------------------------------------------------------------

Check = Callable[[object, str], object]


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


# PyYAML reads YAML 1.1, where a float in exponent form needs a dot and a signed exponent
# ("1.0e-3"): "1e-3", "9e-1" and "3.2e1" would be strings. YAML 1.2, and everyone writing a
# config, reads them as numbers, and so does every numeric key here: load_yaml reads them as
# floats, and _as_number takes them from a mapping that a YAML 1.1 reader made.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")

_EXACT_FLOAT_INTS = 2**53
"""Every int up to this size is a float exactly; a larger whole float may be a rounded one."""


def _as_number(value: object) -> object:
    """``value``, or the float that a string in exponent form spells (``"9e-1"``)."""
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        return float(value.replace("_", ""))
    return value


def _whole(value: object) -> object:
    """``value`` as a number (:func:`_as_number`), and a float that is a whole number
    (``1e4``, ``16384.0``) as an int: ``num_probes: 1e4`` is a count to anyone writing it."""
    value = _as_number(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INTS:
        return int(value)
    return value


def _int(minimum: int | None = None, *, optional: bool = False) -> Check:
    def check(value: object, key: str) -> object:
        if value is None and optional:
            return None
        value = _whole(value)
        if isinstance(value, bool) or not isinstance(value, int):
            kind = "an int" + (f" >= {minimum}" if minimum is not None else "")
            raise ConfigError(
                key, f"expected {kind}{' or null' if optional else ''}, got {_describe(value)}"
            )
        if minimum is not None and value < minimum:
            raise ConfigError(key, f"expected an int >= {minimum}, got {value}")
        return value

    return check


def _seed(*, optional: bool = False) -> Check:
    """A torch seed: an int in [0, 2**64 - 1] (or null where ``optional``)."""
    whole = _int(0, optional=optional)

    def check(value: object, key: str) -> object:
        seed = whole(value, key)
        if seed is not None and seed > MAX_SEED:  # type: ignore[operator]
            raise ConfigError(key, f"expected a seed in [0, 2**64 - 1] (torch's range), got {seed}")
        return seed

    return check


def _float(*, positive: bool = False, non_negative: bool = False, optional: bool = False) -> Check:
    def check(value: object, key: str) -> object:
        if value is None and optional:
            return None
        kind = (
            "a positive number" if positive else ("a number >= 0" if non_negative else "a number")
        )
        if optional:
            kind += " or null"
        value = _as_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected {kind}, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key, f"expected {kind} (finite), got {value}")
        if (positive and value <= 0) or (non_negative and value < 0):
            raise ConfigError(key, f"expected {kind}, got {value}")
        return value

    return check


def _choice(choices: Sequence[str], *, optional: bool = False) -> Check:
    def check(value: object, key: str) -> object:
        if value is None and optional:
            return None
        if not isinstance(value, str) or value not in choices:
            allowed = " | ".join(choices) + (" | null" if optional else "")
            raise ConfigError(key, f"expected one of {allowed}, got {_describe(value)}")
        return value

    return check


def _device(value: object, key: str) -> object:
    """ "cpu", "cuda" or "cuda:N", and only a CUDA device this machine has."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected cpu, cuda or cuda:N, got {_describe(value)}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ConfigError(key, f"expected cpu, cuda or cuda:N, got {value!r}") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index is not None):
        raise ConfigError(key, f"expected cpu, cuda or cuda:N, got {value!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                key, f"is {value!r} but this machine has no CUDA device torch can use; use cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                key,
                f"is {value!r} but this machine has {count} CUDA device(s): cuda:0.."
                f"cuda:{count - 1}",
            )
    return value


def _momentum(value: object, key: str) -> object:
    value = _as_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(key, f"expected a number in [0, 1), got {_describe(value)}")
    return float(value)


def _center(value: object, key: str) -> object:
    """The index of a start (0, 1, ...) or null; a negative index would count from the end,
    which picks a start by its place in the list rather than by what it found."""
    if value is None:
        return None
    index = _whole(value)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(
            key,
            f"expected the index of a start (0 for the first; counting from the end is not "
            f"taken) or null (the best converged start), got {_describe(value)}",
        )
    return index


def _bool(value: object, key: str) -> object:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_describe(value)}")
    return value


def _path(value: object, key: str) -> object:
    """An existing file, stored as its absolute path (so a saved config reads the same file
    from any working directory); null for none."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a file path or null, got {_describe(value)}")
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise ConfigError(key, f"no file {path}")
    return str(path)


def _text(value: object, key: str) -> object:
    if value is not None and not isinstance(value, str):
        raise ConfigError(key, f"expected a string or null, got {_describe(value)}")
    return value


def _resize(value: object, key: str) -> object:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(key, f"expected [H, W] or null, got {_describe(value)}")
    return [_int(1)(size, f"{key}[{index}]") for index, size in enumerate(value)]


def _probe_source(probes: dict[str, Any]) -> None:
    """One source of probes; Gaussian probes default to 16384 of them, data to all of it."""
    if probes["file"] is not None and probes["dataset"] is not None:
        raise ConfigError(
            "probes.dataset", "and probes.file are both set; give one source of probes"
        )
    data = probes["file"] is not None or probes["dataset"] is not None
    if not data:
        for key in ("key", "resize"):
            if probes[key] is not None:
                raise ConfigError(f"probes.{key}", "applies to probes.file or probes.dataset only")
        if probes["standardise"]:
            raise ConfigError("probes.standardise", "applies to probes.file or probes.dataset only")
        if probes["num_probes"] is None:
            probes["num_probes"] = GAUSSIAN_PROBES
    elif probes["key"] is not None and probes["file"] is None:
        raise ConfigError("probes.key", "applies to probes.file only")


def _name(value: object, key: str) -> object:

    if not isinstance(value, str):
        raise ConfigError(key, f"expected a name (a string), got {_describe(value)}")
    try:
        return check_name(value, "the name")
    except InputError as error:
        raise ConfigError(key, str(error)) from None


def _bound(value: object, key: str) -> object:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = [_as_number(v) for v in value]
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise ConfigError(key, f"expected a pair [a, b] of numbers, got {_describe(value)}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ConfigError(key, f"expected [a, b] with finite a < b, got {list(value)}")
    return [low, high]


def _sizes(value: object, key: str) -> object:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = [_whole(v) for v in value]
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) < 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ConfigError(
            key,
            f"expected a list of at least two positive ints (input, ..., output), "
            f"got {_describe(value)}",
        )
    return list(value)


# --- the schema -----------------------------------------------------------------------------

# section -> {key: (check, default)}; the default is used when the key is absent.
_SECTIONS: dict[str, dict[str, tuple[Check, object]]] = {
    "probes": {
        "num_probes": (_int(1, optional=True), None),  # filled in by validate_config
        "seed": (_seed(), 0),
        "file": (_path, None),
        "key": (_text, None),
        "dataset": (_choice(DATASETS, optional=True), None),
        "standardise": (_bool, False),
        "resize": (_resize, None),
    },
    "theta": {
        "weights": (_path, None),
    },
    "search": {
        "name": (_name, "search"),
        "starts": (_int(1), DEFAULT_STARTS),
        "steps": (_int(1), SearchOptions.steps),
        "lr": (_float(positive=True), SearchOptions.lr),
        "batch_size": (_int(1), SearchOptions.batch_size),
        "optimizer": (_choice(OPTIMIZERS), SearchOptions.optimizer),
        "momentum": (_momentum, SearchOptions.momentum),
        "tol": (_float(positive=True, optional=True), SearchOptions.tol),
        "seed": (_seed(optional=True), None),  # None: θ's seed
        "record_every": (_int(1), SearchOptions.record_every),
        "restart_collapsed": (_bool, SearchOptions.restart_collapsed),
        "max_restarts": (_int(0), SearchOptions.max_restarts),
    },
    "subspace": {
        "eps": (_float(positive=True), 0.0025),
        "eps_relative": (_float(positive=True, optional=True), None),
        "m": (_int(1), 2),
        "center": (_center, None),
    },
}
_TOP: dict[str, tuple[Check, object]] = {
    "seed": (_seed(), 0),
    "backend": (_choice(BACKENDS), "auto"),
    "device": (_device, "cpu"),
    "precision": (_choice(PRECISIONS), "full"),
    "num_threads": (_int(1, optional=True), None),
    "chunk_points": (_int(1, optional=True), None),
}
_MODEL_ARGS: dict[str, dict[str, tuple[Check, object]]] = {
    "two_neuron": {},
    "mlp": {
        "sizes": (_sizes, None),  # required
        "activation": (_choice(tuple(ACTIVATIONS)), "relu"),
        "bias": (_bool, True),
    },
    "lenet5": {
        "in_channels": (_int(1), 1),
        "input_size": (_int(1), 28),
        "num_outputs": (_int(1), 1),
        "activation": (_choice(tuple(ACTIVATIONS)), "relu"),
        "pool": (_choice(tuple(POOLS)), "max"),
        "padding": (_int(0), 2),
        "output_activation": (_choice(tuple(ACTIVATIONS), optional=True), None),
    },
}
_GRID_KEYS = ("name", "bound", "n", "dim")
TOP_KEYS = (
    "experiment",
    "model",
    "seed",
    "theta",
    "probes",
    "search",
    "subspace",
    "grids",
    *tuple(k for k in _TOP if k != "seed"),
)


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping (key: value lines), got {_describe(value)}")
    for inner in value:
        if not isinstance(inner, str):
            raise ConfigError(f"{key}.{inner}", "keys must be strings")
    return value


def _unknown(mapping: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(where, f"is not a known key; expected one of {', '.join(allowed)}")


def _kept_path(value: object, key: str) -> object:
    """A file path as :func:`_path` stores it, without looking for the file: for an
    experiment that keeps its problem (problem.zarr), whose θ and probes are not read again."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a file path or null, got {_describe(value)}")
    return str(Path(value).expanduser().absolute())


def _section(raw: Mapping[str, Any], name: str, kept: bool = False) -> dict[str, Any]:
    schema = _SECTIONS[name]
    if kept:  # the files of θ and the probes are not read: problem.zarr holds them
        schema = {
            key: (_kept_path if check is _path else check, default)
            for key, (check, default) in schema.items()
        }
    given = _mapping(raw.get(name) if raw.get(name) is not None else {}, name)
    _unknown(given, tuple(schema), name)
    return {
        key: check(given[key], f"{name}.{key}") if key in given else copy.deepcopy(default)
        for key, (check, default) in schema.items()
    }


def _model(value: object) -> dict[str, Any]:
    if value is None:
        raise ConfigError(
            "model",
            f"is missing: expected a mapping with name: {' | '.join(MODEL_NAMES)} "
            "and that model's arguments (e.g. model: {name: two_neuron}), or factory: "
            f"{SPEC_FORMS} for your own model",
        )
    given = _mapping(value, "model")
    if "factory" in given:
        _unknown(given, ("factory", "kwargs"), "model")
        factory = given["factory"]
        if not isinstance(factory, str):
            raise ConfigError("model.factory", f"expected {SPEC_FORMS}, got {_describe(factory)}")
        kwargs = _mapping(given.get("kwargs") or {}, "model.kwargs")
        where, colon, function = factory.rpartition(":")
        if where.endswith(".py"):  # a file: stored absolute, as the other paths are
            factory = f"{Path(where).expanduser().absolute()}{colon}{function}"
        return {"factory": factory, "kwargs": copy.deepcopy(dict(kwargs))}
    if "name" not in given:
        raise ConfigError(
            "model.name",
            f"is missing: expected one of {' | '.join(MODEL_NAMES)} (or model.factory)",
        )
    # "lenet", as `genni demo --model lenet` spells it, is LeNet-5.
    name = _choice(MODEL_NAMES)(MODEL_ALIASES.get(given["name"], given["name"]), "model.name")
    schema = _MODEL_ARGS[str(name)]
    _unknown(given, ("name", *schema), "model")
    model: dict[str, Any] = {"name": name}
    for key, (check, default) in schema.items():
        if key in given:
            model[key] = check(given[key], f"model.{key}")
        elif default is None and key == "sizes":
            raise ConfigError(
                "model.sizes",
                "is missing: expected the layer widths of the mlp, input "
                "first (e.g. sizes: [8, 32, 1])",
            )
        else:
            model[key] = default
    return model


def _grids(value: object, default_dim: int) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(
            "grids", f"expected a list of grids ({{name, bound, n, dim}}), got {_describe(value)}"
        )
    grids, names = [], set()
    for index, item in enumerate(value):
        key = f"grids[{index}]"
        given = _mapping(item, key)
        _unknown(given, _GRID_KEYS, key)
        for required in ("name", "bound", "n"):
            if required not in given:
                what = {"name": "a grid name", "bound": "[a, b]", "n": "points per axis"}
                raise ConfigError(f"{key}.{required}", f"is missing: expected {what[required]}")
        grid = {
            "name": _name(given["name"], f"{key}.name"),
            "bound": _bound(given["bound"], f"{key}.bound"),
            "n": _int(2)(given["n"], f"{key}.n"),
            "dim": _int(1)(given["dim"], f"{key}.dim") if "dim" in given else default_dim,
        }
        if grid["name"] in names:
            raise ConfigError(f"{key}.name", f"grid name {grid['name']!r} is used twice")
        names.add(grid["name"])
        grids.append(grid)
    return grids


def validate_config(
    raw: object, *, require: Sequence[str] = ("experiment", "model"), kept_problem: bool = False
) -> dict:
    """The complete configuration for the mapping ``raw``: every key checked, every
    default filled in. ``require`` lists top-level keys that must be present. Raises
    ConfigError naming the first bad key. ``kept_problem``: the config of an experiment
    that keeps its problem (problem.zarr), so ``theta.weights`` and ``probes.file`` are
    not read (they may have moved since) and the model is checked without its weights."""
    raw = _mapping({} if raw is None else raw, "(top level)")
    _unknown(raw, TOP_KEYS, "")
    for key in require:
        if raw.get(key) is None:
            if key == "model":
                _model(None)
            raise ConfigError(key, "is missing: expected the experiment's name (a folder name)")
    config: dict[str, Any] = {}
    config["experiment"] = (
        _name(raw["experiment"], "experiment") if raw.get("experiment") is not None else None
    )
    config["model"] = _model(raw["model"]) if raw.get("model") is not None else None
    config["seed"] = _TOP["seed"][0](raw["seed"], "seed") if "seed" in raw else 0
    for section in ("theta", "probes", "search", "subspace"):
        config[section] = _section(raw, section, kept_problem)
    _probe_source(config["probes"])
    config["grids"] = _grids(raw.get("grids"), config["subspace"]["m"])
    for key in ("backend", "device", "precision", "num_threads", "chunk_points"):
        check, default = _TOP[key]
        config[key] = check(raw[key], key) if key in raw else default
    if config["precision"] == "tf32" and not str(config["device"]).startswith("cuda"):
        raise ConfigError(
            "precision",
            f"is tf32 but device is {config['device']}: TF32 runs on CUDA tensor cores; set "
            "device: cuda or precision: full",
        )
    search = config["search"]
    if search["optimizer"] == "adam" and search["momentum"] != 0:
        raise ConfigError(
            "search.momentum",
            f"expected 0 with optimizer adam (Adam has its own betas), got {search['momentum']}",
        )
    if search["seed"] is None:
        search["seed"] = config["seed"]
    # start k: search.seed + 1 + k; its restart r: search.seed + 1 + k + starts (r + 1)
    seeds = search["starts"] * (1 + (search["max_restarts"] if search["restart_collapsed"] else 0))
    if search["seed"] + seeds > MAX_SEED:
        restarts = ", its restart r with that + starts (r + 1)" if seeds > search["starts"] else ""
        raise ConfigError(
            "search.seed",
            f"start k is seeded with search.seed + 1 + k{restarts}, so with {seeds} seeds "
            f"search.seed must be at most 2**64 - 1 - {seeds}, got {search['seed']}",
        )
    center = config["subspace"]["center"]
    if center is not None and center >= search["starts"]:
        raise ConfigError(
            "subspace.center",
            f"is {center} but the search has {search['starts']} starts (indices 0.."
            f"{search['starts'] - 1}); pick one of them or null (the best converged start)",
        )
    if search["seed"] < config["seed"] <= search["seed"] + seeds:
        what = "starts and their restarts" if seeds > search["starts"] else "starts"
        raise ConfigError(
            "search.seed",
            f"the {what} are initialised with seeds {search['seed'] + 1}..."
            f"{search['seed'] + seeds}, which include θ's seed {config['seed']}, "
            "so one start would be θ itself; pick a search.seed outside that range "
            f"(e.g. {config['seed']})",
        )
    if config["model"] is not None:
        try:
            build_model({**config, "theta": None} if kept_problem else config)
        except InputError as error:
            raise ConfigError("model", f"the model cannot be built: {error}") from None
    return config


# --- files and overrides --------------------------------------------------------------------


@functools.cache
def _loader() -> type:
    """yaml.SafeLoader that also reads every number in exponent form as a float."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # A copy of every resolver list: add_implicit_resolver appends to SafeLoader's own.
    Loader.yaml_implicit_resolvers = {
        first: list(resolvers)
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))
    return Loader


def load_yaml(text: str) -> object:
    """``text`` parsed as YAML the way config files and ``--set`` values are read: safe
    types only, and ``1e-3`` a number (see ``_EXPONENT_FLOAT``). Raises yaml.YAMLError."""
    import yaml

    return yaml.load(text, Loader=_loader())  # a SafeLoader: safe types only


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read the config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise InputError(
            f"config file {path} is not UTF-8 text: byte 0x{error.object[error.start]:02x} on "
            f"line {line} is not UTF-8; save the file as UTF-8"
        ) from None
    try:
        content = load_yaml(text)
    except yaml.YAMLError as error:
        raise InputError(f"config file {path} is not valid YAML: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise InputError(
            f"config file {path} must hold a mapping (key: value lines), got "
            f"{type(content).__name__}"
        )
    return dict(content)


def set_key(config: dict[str, Any], dotted: str, value: object) -> None:
    """Set ``config[a][b]...`` for the dotted key "a.b..." (creating mappings on the way)."""
    parts = dotted.split(".")
    if not all(parts):
        raise InputError(f"override key {dotted!r} is not a dotted key such as 'search.lr'")
    target = config
    for index, part in enumerate(parts[:-1]):
        inner = target.get(part)
        if inner is None:
            inner = target[part] = {}
        if not isinstance(inner, dict):
            where = ".".join(parts[: index + 1])
            raise ConfigError(where, f"is not a mapping, so {dotted!r} cannot be set")
        target = inner
    target[parts[-1]] = value


def parse_assignment(text: str) -> tuple[str, object]:
    """ "key.sub=VALUE" as (key, VALUE parsed as YAML: 3 -> int, [1, 2] -> list, x -> 'x')."""
    import yaml

    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY=VALUE, e.g. --set search.lr=0.01")
    key, _, value = text.partition("=")
    try:
        parsed = load_yaml(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise InputError(f"--set {text!r}: the value is not valid YAML: {error}") from None
    return key.strip(), parsed


def converged_center(config: Mapping[str, Any], result: Any) -> int | None:
    """``subspace.center`` of a validated ``config`` checked against the search ``result``
    (a SearchResult) at the config's ε: the index of a start that converged, or None (the
    plane then goes through the best converged start). A start that did not converge is
    refused: a plane through it does not pass through the equivalence class of θ."""
    index = config["subspace"]["center"]
    if index is None:
        return None
    eps = float(config["subspace"]["eps"])
    losses = result.losses
    if index >= losses.shape[0]:
        raise ConfigError(
            "subspace.center",
            f"is {index} but the search has {losses.shape[0]} starts (indices 0.."
            f"{losses.shape[0] - 1})",
        )
    converged = [int(i) for i in torch.nonzero(result.converged(eps)).flatten()]
    if index not in converged:
        choices = ", ".join(map(str, converged[:10])) + (" ..." if len(converged) > 10 else "")
        raise ConfigError(
            "subspace.center",
            f"start {index} did not converge (its J {float(losses[index]):.3g} is not below "
            f"ε = {eps:.3g}), so a plane through it misses the class of θ; pick a converged "
            f"start ({choices or 'none converged: raise ε or search longer'}) or null (the "
            "best one)",
        )
    return index


# --- building -------------------------------------------------------------------------------


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The model of a validated ``config``, initialised with ``torch.manual_seed(seed)``
    (in a forked RNG state: the caller's global RNG is untouched), then given the trained
    weights of ``theta.weights`` if set."""

    spec = dict(config["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))
        if "factory" in spec:
            # The function the network computes when used: BatchNorm's running statistics,
            # no dropout (a model in training mode makes J random).
            model = build_from_factory(spec["factory"], spec["kwargs"]).eval()
        elif spec["name"] == "two_neuron":
            model = TwoNeuronNet()
        elif spec["name"] == "mlp":
            model = mlp(spec["sizes"], spec["activation"], spec["bias"])
        else:
            model = LeNet5(**{key: value for key, value in spec.items() if key != "name"})
    weights = (config.get("theta") or {}).get("weights")
    if weights is not None:
        load_weights(model, weights)
    return model


def _data_probes(model: nn.Module, probes: Mapping[str, Any]) -> torch.Tensor:
    """The probes of a config that names data: read, fitted to the model's input, subsampled."""
    if probes["file"] is not None:
        samples = read_probe_file(probes["file"], probes["key"])
    else:
        samples = digits()
    shape = infer_input_shape(model)
    if shape is None:
        if probes["resize"] is not None:
            raise ConfigError(
                "probes.resize",
                f"needs the model's input shape, and {type(model).__name__} has no input_shape "
                "attribute; give the model one (input_shape = (C, H, W))",
            )
        shape = tuple(samples.shape[1:]) if samples.ndim > 1 else (1,)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return load_probes(
        samples,
        shape,
        dtype,
        standardised=probes["standardise"],
        resize=probes["resize"],
        num_probes=probes["num_probes"],
        seed=probes["seed"],
    )


def build_problem(config: Mapping[str, Any]):  # -> Problem
    """The :class:`genni_ext.Problem` of a validated ``config``: its model on the config's
    device, θ the model's parameters (initial, or the trained ``theta.weights``), and either
    ``probes.num_probes`` standard-normal probes drawn with ``probes.seed`` (the same values
    on every device) or the data that ``probes`` names, fitted to the model's input."""

    model = build_model(config)
    probes = config["probes"]
    device = config.get("device") or "cpu"
    if probes.get("file") is None and probes.get("dataset") is None:
        return Problem(model.to(device), num_probes=probes["num_probes"], seed=probes["seed"])
    inputs = _data_probes(model, probes)
    return Problem(model.to(device), inputs=inputs.to(device))


__all__ = [
    "ConfigError",
    "build_model",
    "build_problem",
    "converged_center",
    "load_config_file",
    "load_yaml",
    "parse_assignment",
    "set_key",
    "validate_config",
]
