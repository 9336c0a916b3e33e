"""The torch.func sweep: runs any ``nn.Module``, for models the fused engine cannot lower.

A chunk of B grid points becomes a batch of B parameter vectors
``center + coeffs_chunk @ directions``; ``torch.func.vmap`` over
``torch.func.functional_call`` evaluates the model for all of them on the probe inputs in
one call. Chunks are sized from a memory budget, and when even one grid point's
activations exceed it the probes are chunked as well.

That per-chunk function (the model under vmap, the squared errors and their float64 sum
over the probes) runs either eagerly or compiled with ``torch.compile``. Compiling costs
seconds to a minute once per process and model, and pays back on long sweeps only;
:func:`compile_choice` applies the rule (:data:`COMPILE_MIN_WORK`). A compile that fails
(no C++ compiler, an op Inductor cannot handle) logs one line and the sweep runs eagerly.

The model is evaluated in its current mode; ``sweep`` and ``Problem`` refuse BatchNorm or
Dropout in training mode (call ``model.eval()`` first), so that φ(x, θ) is deterministic and
its buffers are only read. The checks that a model runs on its probes are
in :mod:`genni_ext.core.functional`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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

logger = logging.getLogger("genni_ext")

COMPILE_MIN_WORK = 2e10
"""Activation scalars (grid points × probes × activations per probe) from which the
torch.func sweep compiles its chunk function on the CPU (``compile=None``).

From timings of this sweep, eager and compiled, on the 2-core development machine (torch
2.13, float32; shared, load average 5-9; benchmarks/README.md, "Compiled fallback") on a
residual CNN with BatchNorm and MLPs with GELU or Tanh: eager took 16-38 ns per activation
scalar, the compile 16-207 s (the first of a process), and the compiled sweep ran
0.95-2.6× as fast as eager. Where compiling paid, it paid back its compile after
2.7·10⁹ to 1.9·10¹⁰ activation scalars; the threshold is the largest of these. Where it
does not pay (one Tanh MLP run at 0.95×; 1.59× in another), a compile at the threshold
costs at most about two thirds of the eager sweep's 320-750 s."""

ChunkFunction = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor
]


@dataclass(frozen=True)
class CompileChoice:
    """Whether the torch.func sweep compiles its chunk function, and the log line saying why."""

    compiled: bool
    reason: str


def compile_choice(
    compile: bool | None,
    num_points: int | None,
    num_probes: int,
    activations_per_sample: int,
    device: torch.device,
) -> CompileChoice:
    """Eager or compiled for a sweep of ``num_points`` grid points (None: not known) on
    ``num_probes`` probes of a model that writes ``activations_per_sample`` activation
    scalars a probe: ``compile`` True or False as asked; None by the rule — on the CPU,
    compiled where points × probes × activations a probe (the activation scalars an eager
    sweep writes) reach :data:`COMPILE_MIN_WORK`, eager where the points are not known;
    on other devices eager, since the rule was measured on the CPU only."""
    if compile is not None:
        how = "compiled (torch.compile)" if compile else "eager"
        return CompileChoice(compile, f"torch.func {how}: compile={compile} was asked for")
    if device.type != "cpu":
        return CompileChoice(
            False, f"torch.func eager: compile=None compiles on the CPU only, not on {device}"
        )
    per_probe = max(1, activations_per_sample)
    from_points = -(-int(COMPILE_MIN_WORK) // (num_probes * per_probe))
    rule = (
        f"torch.func compiles from {from_points:,} grid points (points × {num_probes:,} "
        f"probes × {per_probe:,} activations a probe ≥ COMPILE_MIN_WORK = {COMPILE_MIN_WORK:.0e})"
    )
    if num_points is None:
        return CompileChoice(False, rule)
    compiled = num_points >= from_points
    how = "compiled (torch.compile)" if compiled else "eager"
    return CompileChoice(compiled, f"{rule}: {num_points:,} points here, so {how}")


def rule_text(compile: bool | None, num_points: int | None, device: torch.device) -> str:
    """What a Decision says of eager or compiled before the model has run (the rule needs
    its activation count, which the sweep measures on its first probes)."""
    if compile is not None or device.type != "cpu":
        return compile_choice(compile, num_points, 1, 1, device).reason
    points = "" if num_points is None else f"; {num_points:,} points here"
    return (
        "torch.func compiles where grid points × probes × activations a probe ≥ "
        f"COMPILE_MIN_WORK = {COMPILE_MIN_WORK:.0e}{points}"
    )


def _compile(function: ChunkFunction) -> ChunkFunction:
    """``torch.compile`` with dynamic sizes, so that chunks of other lengths reuse the code."""
    return torch.compile(function, dynamic=True)  # type: ignore[return-value]


class _Compiled:
    """The chunk function compiled, falling back to ``eager`` for good at its first failure."""

    def __init__(self, eager: ChunkFunction) -> None:
        self.eager = eager
        self.function: ChunkFunction | None = None
        try:
            self.function = _compile(eager)
        except Exception as error:  # any failure to compile means eager
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        logger.warning(
            "torch.compile failed (%s: %s); the sweep runs eagerly",
            type(error).__name__,
            first_line,
        )
        self.function = None

    def __call__(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        if self.function is not None:
            try:
                return self.function(params, buffers, inputs, targets)
            except Exception as error:  # a compile fails at its first call
                self._give_up(error)
        return self.eager(params, buffers, inputs, targets)


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
    compile: bool | None = False,
    sweep_points: int | None = None,
) -> torch.Tensor:
    """J(center + c @ directions) for every row c of ``coeffs``, as float64 [G].

    J(θ) = 1/N Σₙ ‖model(inputs[n]; θ) - targets[n]‖². The model runs in the inputs'
    dtype on the inputs' device (its own parameters are not used; its buffers are copied
    there); per-probe squared errors are summed in float64. ``batch_points`` grid points
    are evaluated at once; when it is None it is derived from ``memory_budget`` bytes
    (default 1 GiB), and when one chunk over all probes would still exceed the budget the
    probes are chunked too. ``compile``: run the chunk function through ``torch.compile``
    (True; equal to the eager one within the dtype's round-off, eager where the compile
    fails), eagerly (False) or as :func:`compile_choice` says for a sweep of
    ``sweep_points`` grid points (None; default: these coefficients' rows), with the
    activations counted on the first probes. Expects tensors checked as
    :func:`genni_ext.sweep` does.
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
        squared_errors = _squared_errors(model)
        total = num_points if sweep_points is None else sweep_points
        choice = compile_choice(compile, total, num_probes, per_sample, inputs.device)
        logger.debug("torch_sweep: %s", choice.reason)
        chunk = _Compiled(squared_errors) if choice.compiled else squared_errors

        with tqdm(total=num_points, disable=not progress, unit="point") as bar:
            for start in range(0, num_points, batch_points):
                stop = min(start + batch_points, num_points)
                params = every_path(model, center + coeffs[start:stop] @ directions)
                squared = torch.zeros(stop - start, dtype=torch.float64, device=inputs.device)
                for first in range(0, num_probes, probe_chunk):
                    last = min(first + probe_chunk, num_probes)
                    squared += chunk(params, buffers, inputs[first:last], flat_targets[first:last])
                values[start:stop] = squared / num_probes
                bar.update(stop - start)
    return values


def _squared_errors(model: nn.Module) -> ChunkFunction:
    """The chunk function: for parameters [B, ...] (one set per grid point), probes [n, ...]
    and targets [n, outputs], Σₙ ‖model(inputs[n]) - targets[n]‖² per grid point, float64 [B]
    (squared errors in the inputs' dtype, their sum over the probes in float64)."""

    def run(
        params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], batch: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(model, (params, buffers), (batch,), tie_weights=False)

    batched = vmap(run, in_dims=(0, None, None))

    def squared_errors(
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        out = batched(params, buffers, inputs)
        out = out.reshape(out.shape[0], inputs.shape[0], -1)
        return (out - targets).square().sum(dim=-1).double().sum(dim=-1)

    return squared_errors
