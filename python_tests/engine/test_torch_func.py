"""The torch.func fallback against the plain-PyTorch reference ``testing.loop_sweep``."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from genni_ext.core.models import TwoNeuronNet, flatten_params, load_flat_params, mlp
from genni_ext.engine.front_door import explain_backend, sweep
from genni_ext.engine.torch_func import torch_sweep
from genni_ext.testing import loop_sweep

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _tolerances(dtype: torch.dtype) -> dict[str, float]:
    """J is float64 either way; float32 compute agrees with the reference to ~1e-6."""
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 0.0}


def _mlp_case(dtype: torch.dtype, seed: int = 0) -> Case:
    torch.manual_seed(seed)
    model = mlp([5, 16, 8, 3], activation="tanh")
    inputs = torch.randn(40, 5, dtype=dtype)
    return _case(model, inputs, num_points=9)


def _conv_bn_case(dtype: torch.dtype, seed: int = 0) -> Case:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 2),
    )
    with torch.no_grad():  # running statistics far from (0, 1), so ignoring them would show
        model[1].running_mean.uniform_(-2.0, 2.0)
        model[1].running_var.uniform_(0.2, 3.0)
    model.eval()
    inputs = torch.randn(30, 2, 8, 8, dtype=dtype)
    return _case(model, inputs, num_points=6)


def _case(model: nn.Module, inputs: torch.Tensor, num_points: int) -> Case:
    """Targets from the model in the inputs' dtype; the model itself stays float32, so a
    float64 case also checks that its buffers are cast to the compute dtype."""
    dtype = inputs.dtype
    theta = flatten_params(model).to(dtype)
    with torch.no_grad():
        targets = copy.deepcopy(model).to(dtype)(inputs).reshape(inputs.shape[0], -1)
    center = theta + 0.1 * torch.randn_like(theta)
    directions = torch.linalg.qr(torch.randn(theta.numel(), 2, dtype=dtype)).Q.T.contiguous()
    coeffs = torch.randn(num_points, 2, dtype=dtype)
    return model, center, directions, coeffs, inputs, targets


CASES: dict[str, Callable[[torch.dtype], Case]] = {"mlp": _mlp_case, "conv_bn": _conv_bn_case}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_torch_sweep_matches_loop_sweep(name: str, dtype: torch.dtype) -> None:
    case = CASES[name](dtype)
    got = torch_sweep(*case)
    expected = loop_sweep(*case, batch_size=7)
    assert got.dtype == torch.float64 and got.shape == (case[3].shape[0],)
    assert bool((expected > 0).all())
    torch.testing.assert_close(got, expected, **_tolerances(dtype))


def test_buffers_are_used() -> None:
    """Resetting BatchNorm's running statistics changes J: the fallback reads the buffers."""
    model, *tensors = _conv_bn_case(torch.float64)
    before = torch_sweep(model, *tensors)
    model[1].reset_running_stats()
    after = torch_sweep(model, *tensors)
    torch.testing.assert_close(after, loop_sweep(model, *tensors), rtol=1e-10, atol=0.0)
    assert not torch.allclose(before, after)


def test_zero_at_reference_point() -> None:
    model, _, directions, _, inputs, targets = _mlp_case(torch.float64)
    theta = flatten_params(model).double()
    values = torch_sweep(
        model, theta, directions, torch.zeros(3, 2, dtype=torch.float64), inputs, targets
    )
    assert float(values.abs().max()) < 1e-20


def test_two_neuron_net_against_closed_form() -> None:
    """J on a grid for φ(x) = c·relu(a x) + d·relu(b x), computed by hand."""
    net = TwoNeuronNet().double()
    theta = torch.tensor([0.8, -1.2, 1.5, 0.5], dtype=torch.float64)
    load_flat_params(net, theta)
    x = torch.randn(64, 1, dtype=torch.float64)
    y = net(x).detach()
    directions = torch.eye(4, dtype=torch.float64)[[0, 3]]
    axis = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)
    coeffs = torch.cartesian_prod(axis, axis)
    got = torch_sweep(net, theta, directions, coeffs, x, y)
    a, b, c, d = theta.tolist()
    expected = []
    for ca, cd in coeffs.tolist():
        phi = c * torch.relu((a + ca) * x) + (d + cd) * torch.relu(b * x)
        expected.append(float(((phi - y) ** 2).mean()))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_single_grid_point() -> None:
    model, center, directions, coeffs, inputs, targets = _mlp_case(torch.float32)
    got = torch_sweep(model, center, directions, coeffs[:1], inputs, targets)
    assert got.shape == (1,)
    expected = loop_sweep(model, center, directions, coeffs[:1], inputs, targets)
    torch.testing.assert_close(got, expected, **_tolerances(torch.float32))


def _probe_batch_sizes(model: nn.Module) -> list[int]:
    """Record the probe count of every forward call of ``model`` (also under vmap)."""
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(batch_points=st.integers(1, 10), budget=st.sampled_from([None, 1, 5_000, 50_000]))
def test_chunking_gives_the_same_answer(batch_points: int, budget: int | None) -> None:
    model, *tensors = _conv_bn_case(torch.float64)
    whole = torch_sweep(model, *tensors, batch_points=6)
    chunked = torch_sweep(model, *tensors, batch_points=batch_points, memory_budget=budget)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0.0)


def test_budget_chunks_the_probes() -> None:
    model, *tensors = _mlp_case(torch.float64)
    whole = torch_sweep(model, *tensors)
    sizes = _probe_batch_sizes(model)
    chunked = torch_sweep(model, *tensors, memory_budget=2_000)
    num_probes = tensors[3].shape[0]
    # sizes[0] is the two-sample measuring pass; the sweep's calls follow it.
    assert sizes[0] == 2 and max(sizes[1:]) < num_probes
    assert sum(sizes[1:]) % num_probes == 0
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0.0)


def test_default_budget_runs_one_chunk() -> None:
    model, *tensors = _mlp_case(torch.float64)
    sizes = _probe_batch_sizes(model)
    torch_sweep(model, *tensors)
    assert sizes == [2, tensors[3].shape[0]]


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    case = _mlp_case(torch.float64)
    torch_sweep(*case, batch_points=4, progress=True)
    assert "9/9" in capsys.readouterr().err


def test_sweep_torch_backend_matches_reference() -> None:
    case = _conv_bn_case(torch.float32)
    got = sweep(*case, backend="torch", num_threads=1, batch_points=4)
    torch.testing.assert_close(got, loop_sweep(*case), **_tolerances(torch.float32))


def test_sweep_accepts_strided_and_grad_tensors() -> None:
    model, center, directions, coeffs, inputs, targets = _mlp_case(torch.float64)
    expected = sweep(model, center, directions, coeffs, inputs, targets, backend="torch")
    strided_inputs = inputs.t().contiguous().t()
    assert not strided_inputs.is_contiguous()
    got = sweep(
        model,
        center.clone().requires_grad_(),
        directions,
        coeffs,
        strided_inputs,
        targets,
        backend="torch",
    )
    assert not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=0.0, atol=0.0)


def test_auto_falls_back_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    case = _conv_bn_case(torch.float64)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = sweep(*case)
    torch.testing.assert_close(got, loop_sweep(*case), rtol=1e-10, atol=0.0)
    lines = [record.getMessage() for record in caplog.records if record.name == "genni_ext"]
    assert len(lines) == 1
    assert "torch: layer '1'" in lines[0] and "BatchNorm2d" in lines[0]
    assert explain_backend(case[0], case[4]) in lines[0]
    assert explain_backend(case[0]).startswith("torch: layer '1'")
