"""The one Decision: what ``decide`` records, and ``sweep`` and ``explain_backend`` built on it."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext import _C
from genni_ext.core.grid import Grid
from genni_ext.core.models import flatten_params, mlp
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine import front_door, fused
from genni_ext.engine.front_door import decide, explain_backend, sweep
from genni_ext.engine.fused import uses_affine_first_layer
from genni_ext.errors import InputError
from genni_ext.run.resumable import run_sweep
from genni_ext.store import Experiment

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available() or not genni_ext.build_info()["cuda"],
            reason="needs a visible CUDA device and a CUDA build of genni_ext",
        ),
    ),
]


def _probes(model: nn.Module, width: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    count = 8
    inputs = torch.randn(count, width, dtype=torch.float64)
    with torch.no_grad():
        return inputs, model(inputs).reshape(count, -1)


@pytest.mark.parametrize(("m", "form"), [(1, "affine"), (2, "affine"), (3, "direct")])
def test_the_decision_fixes_the_first_layer_form_for_m_directions(m: int, form: str) -> None:
    model = mlp([30, 8, 1]).double()  # fan-in 30: affine up to m = 2 (10 (m + 1) <= 30)
    inputs, targets = _probes(model, 30)
    decision = decide(model, inputs, targets, "auto", num_directions=m)
    assert decision.backend == "fused-cpu" and decision.program is not None
    expected = "affine" if uses_affine_first_layer(decision.program, m) else "direct"
    assert decision.first_layer == expected == form
    assert (decision.cuda_kernel, decision.tile_plan) == (None, None)


def test_torch_and_auto_fallback_decisions_carry_no_program() -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double().eval()
    inputs, targets = _probes(model)
    fallback = decide(model, inputs, targets, "auto")
    assert (fallback.backend, fallback.program) == ("torch", None)
    assert fallback.reason == explain_backend(model, inputs)
    assert fallback.reason.startswith("torch: layer '1' cannot be lowered")
    asked = decide(mlp([6, 4, 1]).double(), inputs, targets, "torch")
    assert (asked.backend, asked.program) == ("torch", None)


def test_an_unknown_backend_or_precision_is_refused() -> None:
    model = mlp([6, 4, 1]).double()
    inputs, targets = _probes(model)
    with pytest.raises(InputError, match="backend='gpu' is not known"):
        decide(model, inputs, targets, "gpu")
    with pytest.raises(InputError, match="precision='tf32' runs float32 sweeps on CUDA"):
        decide(model, inputs, targets, "auto", precision="tf32")


def test_sweep_decides_once_and_runs_that_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp([6, 4, 1]).double()
    inputs, targets = _probes(model)
    decided: list[front_door.Decision] = []
    ran: list[front_door.Decision] = []
    original_decide, original_run = front_door.decide, front_door.run_decided

    def counted_decide(*args: object, **kwargs: object) -> front_door.Decision:
        decided.append(original_decide(*args, **kwargs))
        return decided[-1]

    def counted_run(decision: front_door.Decision, *args: object, **kwargs: object) -> object:
        ran.append(decision)
        return original_run(decision, *args, **kwargs)

    monkeypatch.setattr(front_door, "decide", counted_decide)
    monkeypatch.setattr(front_door, "run_decided", counted_run)
    center = flatten_params(model)
    directions = torch.eye(center.shape[0], dtype=torch.float64)[:2]
    coeffs = torch.zeros(3, 2, dtype=torch.float64)
    values = sweep(model, center, directions, coeffs, inputs, targets)
    assert len(decided) == 1 and ran == decided
    assert decided[0].first_layer in ("affine", "direct")
    assert float(values.abs().max()) < 1e-28  # at θ itself J is 0 up to round-off


@pytest.mark.parametrize(("lowers", "model_runs"), [(True, 0), (False, 1)])
def test_the_model_runs_on_the_probes_only_where_it_does_not_lower(
    lowers: bool, model_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that lowers is checked by its lowering (its layers' shapes for the probes'
    shape, each layer of a kind vmap runs); one that does not lower runs on two probes,
    plain and under vmap, before any work."""
    layers = [nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)]
    if not lowers:
        layers.insert(1, nn.BatchNorm1d(4))
    model = nn.Sequential(*layers).double().eval()
    inputs, targets = _probes(model)
    plain: list[None] = []
    vmapped: list[None] = []
    originals = front_door.probe_forward, front_door.check_vmap

    def counted_probe(*args: object, **kwargs: object) -> object:
        plain.append(None)
        return originals[0](*args, **kwargs)

    def counted_vmap(*args: object, **kwargs: object) -> None:
        vmapped.append(None)
        originals[1](*args, **kwargs)

    monkeypatch.setattr(front_door, "probe_forward", counted_probe)
    monkeypatch.setattr(front_door, "check_vmap", counted_vmap)
    center = flatten_params(model)
    directions = torch.eye(center.shape[0], dtype=torch.float64)[:1]
    coeffs = torch.zeros(2, 1, dtype=torch.float64)
    values = sweep(model, center, directions, coeffs, inputs, targets)
    assert (len(plain), len(vmapped)) == (model_runs, model_runs)
    assert float(values.abs().max()) < 1e-28
    with pytest.raises(InputError, match="targets has 2 values per probe but the model outputs 1"):
        sweep(model, center, directions, coeffs, inputs, targets.repeat(1, 2))


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[None]:
    """Patch ``owner.name`` to count its calls; return the list whose length is the count."""
    calls: list[None] = []
    original: Callable[..., Any] = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> Any:
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("device", DEVICES)
def test_a_multi_chunk_sweep_binds_the_program_and_plans_the_kernel_once(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five chunks of a grid run on one bound program (built from the rows once), one tile
    plan on CUDA (none on the CPU) and one availability check, all made at the front door;
    no chunk checks or plans again."""
    torch.manual_seed(0)
    model = mlp([6, 16, 1]).double().to(device)
    problem = Problem(model, inputs=torch.randn(64, 6, dtype=torch.float64, device=device))
    generator = torch.Generator().manual_seed(2)
    steps = 0.3 * torch.randn(2, problem.num_params, generator=generator, dtype=torch.float64)
    subspace = Subspace.from_points(problem.theta, problem.theta + steps.to(device))
    programs = _count_calls(monkeypatch, _C, "Program")
    tile_plans = _count_calls(monkeypatch, _C, "tile_plan")
    availability = _count_calls(monkeypatch, fused, "fused_unavailable_reason")
    engine_calls = _count_calls(monkeypatch, fused, "fused_sweep")
    grid = Grid.uniform((-1.0, 1.0), 9, 2)  # 81 points: chunks of 18 points make 5 chunks
    result = run_sweep(
        Experiment("bound", tmp_path), problem, subspace, grid, "g", chunk_points=18,
        backend="fused", progress=False,
    )  # fmt: skip
    assert result.metadata["store"]["num_chunks"] == 5
    assert len(engine_calls) >= 5  # every chunk (and the markers) ran the engine
    assert (len(programs), len(availability)) == (1, 1)
    assert len(tile_plans) == (1 if device == "cuda" else 0)


def test_bound_program_and_tile_plan_pickle_to_equal_objects() -> None:
    """A Decision goes to Dask workers pickled: its bound program and tile plan survive it."""
    program = _C.Program([[0, 3, 1, 1, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 6, 0]], [0.0], 8)
    again = pickle.loads(pickle.dumps(program))
    assert (again.rows, again.slopes, again.num_params) == (program.rows, [0.0], 8)
    plan = _C.tile_plan(program, 10, 4, 0, 0, 0, 0, False, 227 * 1024, 228 * 1024)
    assert plan.samples > 0
    assert pickle.loads(pickle.dumps(plan)).as_dict() == plan.as_dict()
    with pytest.raises(ValueError, match="outside the parameter vector"):
        _C.Program(program.rows, [0.0], 7)
