"""The demo presets: what ``genni demo`` runs, and the help text written from it.

Each preset is a config of the :data:`genni_ext.store.config.CONFIG_SCHEMA` kind. The settings in
``genni demo --help`` are formatted from these values (after :func:`validate_config` fills
in the defaults), so the help cannot disagree with what a run does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genni_ext.cli.configure import merge
from genni_ext.errors import InputError
from genni_ext.store.config import validate_config

NET = "φ(x) = c·ReLU(a x) + d·ReLU(b x)"

# The paper's two-neuron experiment, exactly: θ from seed 10 computes a function so small
# (mean φ² = 1.4e-4) that its ε = 0.0025 is 18× the zero function's J.
DEMO_TWO_NEURON_PAPER: dict[str, Any] = {
    "experiment": "demo_paper",
    "model": {"name": "two_neuron"},
    "seed": 10,
    "probes": {"num_probes": 16384, "seed": 10},
    "search": {
        "starts": 16,
        "steps": 2000,
        "lr": 0.015,
        "batch_size": 256,
        "optimizer": "sgd",
        "seed": 11,
        "record_every": 100,
    },
    "subspace": {"eps": 0.0025, "m": 2},
    "grids": [
        {"name": "plane2d", "bound": [-2, 2], "n": 100, "dim": 2},
        {"name": "space3d", "bound": [-2, 2], "n": 50, "dim": 3},
    ],
}
# The default demo: the paper's net and settings, but a θ whose function is not trivial
# (seed 5: a and b of opposite sign, so [θ] is the 2-D rescaling orbit) and ε relative to J
# of the best constant function (5 % of it is about the paper's 0.0025), so every point of the
# ε-set fits θ 20× better than any constant; 32 starts, since fewer reach that ε. Collapsed
# starts (both hidden units on one side of 0, or one dead) are restarted, up to 5 times each,
# within the same 2000 steps (README "Restarting collapsed starts" has the yield with and
# without; `--set search.restart_collapsed=false` runs the paper's Algorithm 1).
DEMO_TWO_NEURON: dict[str, Any] = {
    **DEMO_TWO_NEURON_PAPER,
    "experiment": "demo",
    "seed": 5,
    "probes": {"num_probes": 16384, "seed": 5},
    "search": {
        **DEMO_TWO_NEURON_PAPER["search"],
        "starts": 32,
        "seed": 40,
        "restart_collapsed": True,
        "max_restarts": 5,
    },
    "subspace": {"eps_relative": 0.05, "m": 2},
    # Odd sizes put c = 0, the plane of the found points, on the grid; ±2.5 holds them all
    # (at ±2, two of them fell just outside).
    "grids": [
        {"name": "plane2d", "bound": [-2.5, 2.5], "n": 101, "dim": 2},
        {"name": "space3d", "bound": [-2.5, 2.5], "n": 51, "dim": 3},
    ],
}
# J of the best constant function for the default demo's θ on its probes (measured with
# Baselines.of): what its relative ε is a fraction of.
DEMO_TWO_NEURON_CONSTANT_LOSS = 0.0467

# LeNet-5 sized to finish in a few minutes on two cores. Adam, because plain SGD at lr 0.001
# barely moves LeNet-5 in a few hundred steps (J from 2.9·10⁻² to 7·10⁻³ in 60 steps, where
# Adam reaches 2·10⁻⁴); after 100 Adam steps every start is at J ≈ 1.3–2.1·10⁻⁴ and stays
# there on fresh probes. The paper gives no ε; 5·10⁻⁴ against the targets' mean square of
# 8.8·10⁻³. The sweep costs about 6 ms per grid point at 1024 probes (fused engine, two
# cores), so the paper's grids (10⁴ and 4.3·10⁴ points at 8192 probes) take about 8 min and
# 36 min; run them with --config or flags.
DEMO_LENET: dict[str, Any] = {
    "experiment": "demo_lenet",
    "model": {"name": "lenet5"},
    "seed": 10,
    "probes": {"num_probes": 1024, "seed": 10},
    "search": {
        "starts": 6,
        "steps": 100,
        "lr": 0.001,
        "batch_size": 256,
        "optimizer": "adam",
        "seed": 11,
        "record_every": 25,
    },
    "subspace": {"eps": 0.0005, "m": 2},
    "grids": [
        {"name": "plane2d", "bound": [-13, 13], "n": 40, "dim": 2},
        {"name": "space3d", "bound": [-13, 13], "n": 14, "dim": 3},
    ],
}
# The paper's LeNet-5 settings (not a preset: the paper's grids take most of an hour).
LENET_PAPER: dict[str, Any] = {
    "probes": {"num_probes": 8192},
    "search": {"batch_size": 256, "lr": 0.001},
    "grids": [
        {"name": "plane2d", "bound": [-13, 13], "n": 100, "dim": 2},
        {"name": "space3d", "bound": [-13, 13], "n": 35, "dim": 3},
    ],
}

# --quick (hidden, for tests): the same experiments, tiny; keyed by model name.
QUICK: dict[str, dict[str, Any]] = {
    "two_neuron": {
        "probes": {"num_probes": 2048},
        "search": {"steps": 1500},
        "grids": [
            {"name": "plane2d", "bound": [-2.5, 2.5], "n": 21, "dim": 2},
            {"name": "space3d", "bound": [-2.5, 2.5], "n": 9, "dim": 3},
        ],
    },
    "lenet5": {
        "probes": {"num_probes": 64},
        "search": {"starts": 4, "steps": 20, "batch_size": 32},
        "subspace": {"eps": 1.0},
        "grids": [
            {"name": "plane2d", "bound": [-13, 13], "n": 4, "dim": 2},
            {"name": "space3d", "bound": [-13, 13], "n": 3, "dim": 3},  # analysis needs 3
        ],
    },
}

# --model of genni demo, the default first: its name -> the model it runs.
DEMO_MODELS = {"two_neuron": "two_neuron", "lenet": "lenet5", "lenet5": "lenet5"}
DEMO_MODEL_HELP = "two_neuron (default) | lenet"


def demo_preset(model: str | None, *, paper: bool, quick: bool) -> tuple[dict[str, Any], str]:
    """The config ``genni demo`` starts from (before --config and the flags) and the title
    it prints, for ``--model``, ``--paper`` and ``--quick``."""
    key = DEMO_MODELS.get(model or "two_neuron")
    if key == "lenet5":
        if paper:
            raise InputError(
                "--paper runs the paper's two-neuron experiment; for LeNet-5 set the paper's "
                f"sizes with flags (--num-probes {LENET_PAPER['probes']['num_probes']}, --set "
                "grids=...), see genni demo --help"
            )
        preset = DEMO_LENET
        title = f"LeNet-5 ({_lenet_shape(DEMO_LENET)} input, {_outputs(DEMO_LENET)})"
    elif key == "two_neuron":
        preset = DEMO_TWO_NEURON_PAPER if paper else DEMO_TWO_NEURON
        title = f"the GENNI paper's 4-parameter net {NET}"
    else:
        raise InputError(f"--model {model!r}: genni demo runs two_neuron (default) or lenet")
    if quick:
        preset = merge(preset, QUICK[key])
        preset["experiment"] = f"{preset['experiment']}_quick"
    return preset, title


def demo_help() -> list[str]:
    """The paragraphs of ``genni demo --help`` that say what each preset runs."""
    demo = validate_config(DEMO_TWO_NEURON)
    paper = validate_config(DEMO_TWO_NEURON_PAPER)
    lenet = validate_config(DEMO_LENET)
    search, lenet_search = demo["search"], lenet["search"]
    relative = demo["subspace"]["eps_relative"]
    return [
        f"two_neuron (default): the paper's net {NET} and its search settings "
        f"({demo['probes']['num_probes']} probes, {_optimizer(demo)}, batch "
        f"{search['batch_size']}, lr {search['lr']:g}, {search['steps']} steps), with θ from "
        f"seed {demo['seed']} and ε = {100 * relative:g} % of the J of the best constant "
        f"function ({relative * DEMO_TWO_NEURON_CONSTANT_LOSS:.2g}), {search['starts']} "
        f"starts (a start whose hidden units collapsed is restarted with a fresh seed, at "
        f"most {search['max_restarts']} times, within the same steps; --set "
        "search.restart_collapsed=false runs the paper's Algorithm 1), grids "
        f"{_grids(demo['grids'])}. Why not the paper's θ and ε: its θ (seed "
        f"{paper['seed']}) computes a function so small that ε = {_number(_eps(paper))} is "
        "18× the J of the zero function, so most of that ε-set is functions that ignore "
        f"their input; seed {demo['seed']} has a and b of opposite sign, so [θ] is the 2-D "
        "rescaling orbit, and the relative ε keeps every point of the ε-set "
        f"{1 / relative:g}× better than a constant. Measured on two cores with a benchmark "
        "running beside it: 5.4 min end to end, 3.7 min of it the analysis (87 s its "
        "resolution check's 101³ sweep).",
        f"--paper: the paper's exact settings (seed {paper['seed']}, "
        f"{paper['search']['starts']} starts, ε = {_number(_eps(paper))}, grids "
        f"{_grids(paper['grids'], dims=False)}; no restarts: Algorithm 1); the run warns "
        "that its ε-set holds trivial functions.",
        f"lenet: LeNet-5 ({_lenet_shape(lenet)}, {_outputs(lenet)}), sized to finish in a few "
        f"minutes on two cores: seed {lenet['seed']}, {lenet['probes']['num_probes']} probes, "
        f"{lenet_search['starts']} starts × {lenet_search['steps']} {_optimizer(lenet)} "
        f"steps, batch {lenet_search['batch_size']}, lr {lenet_search['lr']:g}, ε = "
        f"{_number(_eps(lenet))}, grids {_grids(lenet['grids'])}. The paper's settings: "
        f"{LENET_PAPER['probes']['num_probes']} probes, batch "
        f"{LENET_PAPER['search']['batch_size']}, lr {LENET_PAPER['search']['lr']:g}, grids "
        f"{_grids(LENET_PAPER['grids'])}.",
    ]


def paper_flag_help() -> str:
    """The help of ``genni demo --paper``."""
    paper = validate_config(DEMO_TWO_NEURON_PAPER)
    return (
        f"the paper's exact two-neuron settings (θ from seed {paper['seed']}, ε = "
        f"{_number(_eps(paper))}), whose ε-set is mostly functions that ignore their input "
        "(the run says so)"
    )


def _eps(config: Mapping[str, Any]) -> float:
    return float(config["subspace"]["eps"])


def _optimizer(config: Mapping[str, Any]) -> str:
    return {"sgd": "SGD", "adam": "Adam"}[config["search"]["optimizer"]]


def _lenet_shape(config: Mapping[str, Any]) -> str:
    model = validate_config(config)["model"]
    return f"{model['input_size']}×{model['input_size']}×{model['in_channels']}"


def _outputs(config: Mapping[str, Any]) -> str:
    count = validate_config(config)["model"]["num_outputs"]
    return "one output" if count == 1 else f"{count} outputs"


def _number(value: float) -> str:
    """``value`` as ``0.0025``, or below 10⁻³ as ``5e-4``."""
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:g}"
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _grids(grids: Sequence[Mapping[str, Any]], *, dims: bool = True) -> str:
    """``[−2, 2]×100 (2-D) and ×50 (3-D)``: each grid's size, its bound where it changes."""
    parts = []
    bound = None
    for spec in grids:
        low, high = (f"{float(end):g}".replace("-", "−") for end in spec["bound"])
        text = "" if spec["bound"] == bound else f"[{low},\u00a0{high}]"
        bound = spec["bound"]
        text += f"×{spec['n']}" + (f" ({spec['dim']}-D)" if dims else "")
        parts.append(text)
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
