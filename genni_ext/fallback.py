"""The torch.func sweep: runs any ``nn.Module``, for models the fused engine cannot lower.

A chunk of B grid points becomes a batch of B parameter vectors
``center + coeffs_chunk @ directions``; ``torch.func.vmap`` over
``torch.func.functional_call`` evaluates the model for all of them on the probe inputs in
one call. Chunks are sized from a memory budget, and when even one grid point's
activations exceed it the probes are chunked as well.

The model is evaluated in its current mode: call ``model.eval()`` first if it has
BatchNorm or Dropout, so that φ(x, θ) is deterministic and its buffers are only read.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from ._checks import positive_int
from .errors import InputError
from .models import unflatten_params

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Bytes of activations one chunk may hold when no ``memory_budget`` is given."""

_PROBE_SAMPLES = 2


def _buffers_for(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's buffers on the inputs' device, floating ones in the inputs' dtype."""
    return {
        name: buffer.to(
            device=inputs.device,
            dtype=inputs.dtype if buffer.is_floating_point() else buffer.dtype,
        )
        for name, buffer in model.named_buffers()
    }


def _activation_numel_per_sample(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    output_size: int,
) -> int:
    """Scalars the leaf modules produce per sample, measured by one small forward pass.

    Also checks that the model's output has ``output_size`` values per sample, because a
    mismatch would otherwise broadcast silently against the targets.
    """
    sample = inputs[:_PROBE_SAMPLES]
    total = 0

    def count(_module: nn.Module, _args: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    handles = [
        module.register_forward_hook(count)
        for module in model.modules()
        if next(module.children(), None) is None
    ]
    try:
        output = functional_call(model, (params, buffers), (sample,), tie_weights=False)
    finally:
        for handle in handles:
            handle.remove()
    produced = output.numel() // sample.shape[0]
    if produced != output_size:
        raise InputError(
            f"targets has {output_size} values per probe but the model outputs {produced}; "
            "compute targets with the same model (targets = model(inputs).reshape(N, -1))"
        )
    return math.ceil(total / sample.shape[0]) + math.prod(sample.shape[1:])


def _every_path(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameters of ``flat`` named once for every module attribute that holds them.

    A weight tied between two modules is held by two attributes; naming both lets
    functional_call run with tie_weights=False. A module used twice is named once: torch
    swaps and restores names in the same order, so a second name for one attribute would
    restore vmap's BatchedTensor (and tie_weights=True fails the same way,
    pytorch/pytorch#164759).
    """
    views = unflatten_params(model, flat)
    canonical = {id(parameter): name for name, parameter in model.named_parameters()}
    return {
        f"{prefix}.{name}" if prefix else name: views[canonical[id(parameter)]]
        for prefix, module in model.named_modules()
        for name, parameter in module.named_parameters(recurse=False)
    }


def torch_sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """J(center + c @ directions) for every row c of ``coeffs``, as float64 [G].

    J(θ) = 1/N Σₙ ‖model(inputs[n]; θ) - targets[n]‖². The model runs in the inputs'
    dtype on the inputs' device (its own parameters are not used; its buffers are copied
    there); per-probe squared errors are summed in float64. ``chunk_size`` grid points
    are evaluated at once; when it is None it is derived from ``memory_budget`` bytes
    (default 1 GiB), and when one chunk over all probes would still exceed the budget the
    probes are chunked too. Expects tensors checked as :func:`genni_ext.sweep.sweep` does.
    """
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size")
    budget = DEFAULT_MEMORY_BUDGET
    if memory_budget is not None:
        budget = positive_int(memory_budget, "memory_budget")
    num_points, num_probes = coeffs.shape[0], inputs.shape[0]
    flat_targets = targets.reshape(num_probes, -1)
    values = torch.empty(num_points, dtype=torch.float64, device=inputs.device)

    with torch.no_grad():
        buffers = _buffers_for(model, inputs)
        per_sample = _activation_numel_per_sample(
            model, _every_path(model, center), buffers, inputs, flat_targets.shape[1]
        )
        # x2: autograd is off, but a layer's input and output are alive at the same time.
        bytes_per_sample = 2 * per_sample * inputs.element_size()
        if chunk_size is None:
            chunk_size = budget // (bytes_per_sample * num_probes)
        chunk_size = max(1, min(chunk_size, num_points))
        probe_chunk = max(1, min(num_probes, budget // (bytes_per_sample * chunk_size)))

        def run(params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, buffers), (batch,), tie_weights=False)

        batched = vmap(run, in_dims=(0, None))
        with tqdm(total=num_points, disable=not progress, unit="point") as bar:
            for start in range(0, num_points, chunk_size):
                stop = min(start + chunk_size, num_points)
                params = _every_path(model, center + coeffs[start:stop] @ directions)
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
