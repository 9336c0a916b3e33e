"""The base layer's finiteness check: the same answer as torch, without torch's thread team."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import profile

import genni_ext
from genni_ext._validate import all_finite, check_finite
from genni_ext.core.models import LeNet5
from genni_ext.errors import InputError

# torch reductions that run on torch's OpenMP team for large CPU tensors; on a busy machine
# each can wait tens of milliseconds at its barrier, so the front door must not call them.
TEAM_REDUCTIONS = {"aten::isfinite", "aten::all", "aten::any", "aten::isnan"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_all_finite_agrees_with_torch(dtype: torch.dtype, bad: float | None, layout: str) -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, dtype=dtype, generator=generator)
    if bad is not None:
        base[37, 5] = bad
    tensor = {"contiguous": base, "transposed": base.t(), "strided": base[1::2, 5::3]}[layout]
    expected = bool(torch.isfinite(tensor).all())
    assert all_finite(tensor) is expected
    assert all_finite(tensor.clone().requires_grad_(True)) is expected


@pytest.mark.parametrize(("bad", "kind"), [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_check_finite_names_the_tensor_and_the_value(bad: float, kind: str) -> None:
    tensor = torch.zeros(5)
    tensor[3] = bad
    with pytest.raises(InputError, match=rf"^probes contains {kind}; every value must be finite$"):
        check_finite("probes", tensor)
    check_finite("probes", torch.zeros(5))


def test_sweep_checks_run_no_torch_team_reduction_on_cpu() -> None:
    torch.manual_seed(0)
    model = LeNet5()
    inputs = torch.randn(256, 1, 28, 28)
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    with torch.no_grad():
        targets = model(inputs)
    args = (model, theta, torch.randn(1, theta.numel()), torch.zeros(1, 1), inputs, targets)
    genni_ext.sweep(*args, backend="fused")
    with profile() as recorded:
        genni_ext.sweep(*args, backend="fused")
    names = {event.name for event in recorded.events()}
    assert not names & TEAM_REDUCTIONS, sorted(names & TEAM_REDUCTIONS)
