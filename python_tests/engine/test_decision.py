"""The one Decision: what ``decide`` records, and ``sweep`` and ``explain_backend`` built on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genni_ext.core.models import flatten_params, mlp
from genni_ext.engine import front_door
from genni_ext.engine.front_door import decide, explain_backend, sweep
from genni_ext.engine.fused import uses_affine_first_layer
from genni_ext.errors import InputError


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
