"""Pure-PyTorch twins of the sweep, for tests and benchmarks.

:func:`loop_sweep` is what a plain PyTorch user writes: one grid point at a time, load
the parameters into a model, run the probes in minibatches. It is the reference that
the fused engine and the torch.func fallback are compared with (``assert_close``), and
the baseline the benchmarks report speed-ups against.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._checks import positive_int


def loop_sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """J(center + c @ directions) for every row c of ``coeffs``, as float64 [G].

    Each grid point's parameters are loaded with ``vector_to_parameters`` into a deep copy
    of ``model`` (moved to the inputs' dtype and device, mode unchanged); the probes run in
    batches of ``batch_size``; per-probe squared errors are summed in float64 and divided
    by N.
    """
    positive_int(batch_size, "batch_size")
    local = copy.deepcopy(model).to(device=inputs.device, dtype=inputs.dtype)
    num_probes = inputs.shape[0]
    flat_targets = targets.reshape(num_probes, -1)
    values = torch.empty(coeffs.shape[0], dtype=torch.float64, device=inputs.device)
    with torch.no_grad():
        for index, point in enumerate(coeffs):
            nn.utils.vector_to_parameters(center + point @ directions, local.parameters())
            total = torch.zeros((), dtype=torch.float64, device=inputs.device)
            for first in range(0, num_probes, batch_size):
                batch = inputs[first : first + batch_size]
                out = local(batch).reshape(batch.shape[0], -1)
                errors = (out - flat_targets[first : first + batch_size]).square().sum(dim=-1)
                total += errors.double().sum()
            values[index] = total / num_probes
    return values
