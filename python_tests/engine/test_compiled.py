"""The torch.func fallback compiled with torch.compile: the rule, the Decision, the fallback
to eager when a compile fails, and compiled J equal to eager J within float32 round-off."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn

from genni_ext.core.functional import buffers_for, every_path, probe_forward
from genni_ext.core.grid import Grid
from genni_ext.core.models import flatten_params
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.engine import torch_func
from genni_ext.engine.front_door import decide, explain_backend, sweep
from genni_ext.errors import InputError
from genni_ext.run.grid_sweep import sweep_grid

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _gelu_case(points: int = 37, probes: int = 96, dtype: torch.dtype = torch.float32) -> Case:
    """An MLP with GELU (the fused engine does not lower it) and a random grid around θ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.GELU(), nn.Linear(16, 2)).to(dtype).eval()
    center = flatten_params(model)
    directions = torch.linalg.qr(torch.randn(center.shape[0], 2, dtype=dtype))[0].T.contiguous()
    coeffs = 2 * torch.rand(points, 2, dtype=dtype) - 1
    inputs = torch.randn(probes, 3, dtype=dtype)
    with torch.no_grad():
        targets = model(inputs) + 0.1 * torch.randn(probes, 2, dtype=dtype)
    return model, center, directions, coeffs, inputs, targets


def _activations(model: nn.Module, inputs: torch.Tensor) -> int:
    center = flatten_params(model)
    params, buffers = every_path(model, center), buffers_for(model, inputs)
    return probe_forward(model, params, buffers, inputs).activations_per_sample


def _genni_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "genni_ext"]


# --- the rule (no compile) -------------------------------------------------------------------


def test_the_rule_compiles_from_compile_min_work_activation_scalars() -> None:
    cpu, probes, per_probe = torch.device("cpu"), 96, 37
    from_points = -(-int(torch_func.COMPILE_MIN_WORK) // (probes * per_probe))
    below = torch_func.compile_choice(None, from_points - 1, probes, per_probe, cpu)
    at = torch_func.compile_choice(None, from_points, probes, per_probe, cpu)
    assert not below.compiled and at.compiled
    assert below.reason.endswith("so eager") and at.reason.endswith("so compiled (torch.compile)")
    assert f"compiles from {from_points:,} grid points" in at.reason
    unknown = torch_func.compile_choice(None, None, probes, per_probe, cpu)
    assert not unknown.compiled and unknown.reason in at.reason
    for asked in (True, False):
        forced = torch_func.compile_choice(asked, 1 if asked else 10**12, probes, per_probe, cpu)
        assert forced.compiled is asked and f"compile={asked} was asked for" in forced.reason
    elsewhere = torch_func.compile_choice(None, 10**12, probes, per_probe, torch.device("meta"))
    assert not elsewhere.compiled and "CPU only" in elsewhere.reason


def test_the_decision_carries_the_choice_and_explain_backend_says_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _, _, _, inputs, targets = _gelu_case()
    per_probe = _activations(model, inputs)
    monkeypatch.setattr(torch_func, "COMPILE_MIN_WORK", 10 * inputs.shape[0] * per_probe)
    known = {"activations_per_sample": per_probe}
    short = decide(model, inputs, targets, "auto", num_points=9, **known)
    long = decide(model, inputs, targets, "auto", num_points=10, **known)
    asked = decide(model, inputs, targets, "torch", num_points=1, compile=True)
    later = decide(model, inputs, targets, "auto", num_points=10)  # the run counts activations
    assert (short.backend, short.compile) == ("torch", False)
    assert (long.backend, long.compile) == ("torch", True)
    assert (asked.backend, asked.compile) == ("torch", True)
    assert (later.backend, later.compile, later.num_points) == ("torch", None, 10)
    assert short.reason.startswith("torch: layer '1' cannot be lowered: GELU")
    assert "torch.func compiles from 10 grid points" in short.reason
    assert "COMPILE_MIN_WORK" in later.reason and later.reason.endswith("10 points here")
    assert explain_backend(model, inputs, num_points=10) == long.reason
    assert explain_backend(model, inputs, num_points=9) == short.reason
    assert short.reason.startswith(explain_backend(model, inputs))
    assert explain_backend(model, inputs) == decide(model, inputs, targets, "auto").reason
    lowered = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    fused = decide(lowered, inputs, targets, "auto", num_points=10**9, compile=True)
    assert fused.backend == "fused-cpu" and fused.compile is None


def test_sweep_logs_the_choice_as_explain_backend_gives_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _gelu_case()
    monkeypatch.setattr(torch_func, "_compile", _failing_at_compile)  # a compile would fail
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        sweep(*case)  # 37 points: eager
    explained = explain_backend(case[0], case[4], num_points=37)
    assert explained.endswith("37 points here, so eager")
    assert _genni_lines(caplog) == [f"sweep backend: {explained}"]


def test_compile_must_be_a_bool_or_none() -> None:
    model, center, directions, coeffs, inputs, targets = _gelu_case()
    with pytest.raises(InputError, match="compile must be True, False or None, got 'yes'"):
        sweep(model, center, directions, coeffs, inputs, targets, compile="yes")  # type: ignore[arg-type]


# --- a compile that fails: eager, with one log line ------------------------------------------


def _failing_at_call(function: torch_func.ChunkFunction) -> torch_func.ChunkFunction:
    def compiled(*args: object) -> torch.Tensor:
        raise RuntimeError("InductorError: no working C++ compiler found\nsecond line")

    return compiled


def _failing_at_compile(function: torch_func.ChunkFunction) -> torch_func.ChunkFunction:
    raise RuntimeError("backend 'inductor' is not available")


@pytest.mark.parametrize("failing", [_failing_at_call, _failing_at_compile])
def test_a_failing_compile_runs_eagerly_and_says_so_once(
    failing: Callable[[torch_func.ChunkFunction], torch_func.ChunkFunction],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    case = _gelu_case()
    eager = sweep(*case, compile=False, batch_points=8)
    monkeypatch.setattr(torch_func, "_compile", failing)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = sweep(*case, backend="torch", compile=True, batch_points=8)  # 5 chunks
    assert torch.equal(got, eager)
    lines = _genni_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("torch.compile failed (RuntimeError: ")
    assert lines[0].endswith("; the sweep runs eagerly") and "second line" not in lines[0]


# --- compiled J (compiles: tens of seconds on 2 cores) ----------------------------------------


@pytest.mark.slow
def test_compiled_equals_eager_within_float32_round_off_on_every_chunking() -> None:
    case = _gelu_case()
    eager = sweep(*case, compile=False)
    scale = eager.abs().max()
    for batch_points in (None, 8, 1):  # one compile: the sizes are dynamic
        compiled = sweep(*case, backend="torch", compile=True, batch_points=batch_points)
        assert compiled.dtype == torch.float64 and compiled.shape == eager.shape
        torch.testing.assert_close(compiled / scale, eager / scale, rtol=0.0, atol=1e-6)
    chunked_probes = torch_func.torch_sweep(*case, memory_budget=4096, compile=True)
    torch.testing.assert_close(chunked_probes / scale, eager / scale, rtol=0.0, atol=1e-6)


@pytest.mark.slow
def test_sweep_grid_runs_the_compiled_decision() -> None:
    model, center, directions, _, inputs, _ = _gelu_case()
    problem = Problem(model, inputs)
    subspace = Subspace.from_points(center, center + directions)
    grid = Grid.uniform((-1.0, 1.0), 6, 2)
    compiled = sweep_grid(problem, subspace, grid, compile=True)
    eager = sweep_grid(problem, subspace, grid, compile=False)
    scale = eager.values.abs().max()
    torch.testing.assert_close(compiled.values / scale, eager.values / scale, rtol=0, atol=1e-6)
