"""The torch.func sweep: runs any ``nn.Module``, for models the fused engine cannot lower.

A chunk of B grid points becomes a batch of B parameter vectors
``center + coeffs_chunk @ directions``; ``torch.func.vmap`` over
``torch.func.functional_call`` evaluates the model for all of them on the probe inputs in
one call. Chunks are sized from a memory budget, and when even one grid point's
activations exceed it the probes are chunked as well.

The model is evaluated in its current mode; ``sweep`` and ``Problem`` refuse BatchNorm or
Dropout in training mode (call ``model.eval()`` first), so that φ(x, θ) is deterministic and
its buffers are only read. The checks that a model runs on its probes are
in :mod:`genni_ext.core.functional`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from genni_ext._validate import positive_int
from genni_ext.core.functional import (
    DEFAULT_MEMORY_BUDGET,
    buffers_for,
    check_output_size,
    every_path,
    probe_forward,
)


def torch_sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_points: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """J(center + c @ directions) for every row c of ``coeffs``, as float64 [G].

    J(θ) = 1/N Σₙ ‖model(inputs[n]; θ) - targets[n]‖². The model runs in the inputs'
    dtype on the inputs' device (its own parameters are not used; its buffers are copied
    there); per-probe squared errors are summed in float64. ``batch_points`` grid points
    are evaluated at once; when it is None it is derived from ``memory_budget`` bytes
    (default 1 GiB), and when one chunk over all probes would still exceed the budget the
    probes are chunked too. Expects tensors checked as :func:`genni_ext.sweep` does.
    """
    if batch_points is not None:
        positive_int(batch_points, "batch_points")
    budget = DEFAULT_MEMORY_BUDGET
    if memory_budget is not None:
        budget = positive_int(memory_budget, "memory_budget")
    num_points, num_probes = coeffs.shape[0], inputs.shape[0]
    flat_targets = targets.reshape(num_probes, -1)
    values = torch.empty(num_points, dtype=torch.float64, device=inputs.device)

    with torch.no_grad():
        buffers = buffers_for(model, inputs)
        probe = probe_forward(model, every_path(model, center), buffers, inputs)
        check_output_size(probe.outputs_per_sample, flat_targets.shape[1])
        per_sample = probe.activations_per_sample
        # x2: autograd is off, but a layer's input and output are alive at the same time.
        bytes_per_sample = 2 * per_sample * inputs.element_size()
        if batch_points is None:
            batch_points = budget // (bytes_per_sample * num_probes)
        batch_points = max(1, min(batch_points, num_points))
        probe_chunk = max(1, min(num_probes, budget // (bytes_per_sample * batch_points)))

        def run(params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, buffers), (batch,), tie_weights=False)

        batched = vmap(run, in_dims=(0, None))
        with tqdm(total=num_points, disable=not progress, unit="point") as bar:
            for start in range(0, num_points, batch_points):
                stop = min(start + batch_points, num_points)
                params = every_path(model, center + coeffs[start:stop] @ directions)
                squared = torch.zeros(stop - start, dtype=torch.float64, device=inputs.device)
                for first in range(0, num_probes, probe_chunk):
                    last = min(first + probe_chunk, num_probes)
                    out = batched(params, inputs[first:last]).reshape(
                        stop - start, last - first, -1
                    )
                    errors = (out - flat_targets[first:last]).square().sum(dim=-1)
                    squared += errors.double().sum(dim=-1)
                values[start:stop] = squared / num_probes
                bar.update(stop - start)
    return values
