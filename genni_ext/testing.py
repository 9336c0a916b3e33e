"""Twins of the sweep, for tests and benchmarks.

:func:`loop_sweep` is what a plain PyTorch user writes: one grid point at a time, load
the parameters into a model, run the probes in minibatches. It is the reference that
the fused engine and the torch.func fallback are compared with (``assert_close``), and
the baseline the benchmarks report speed-ups against.

:func:`emulated_tiled_sweep` runs the tiled CUDA kernel's block steps on the CPU, thread
by thread between its barriers, so that its indexing is tested on machines without a GPU.

Also shared by tests and benchmarks: :data:`CONV_NETS` (conv nets that cover the
lowering's and the engines' paths), :func:`benchmark_problem` (the benchmarks' set-up) and
:func:`plant_relu_symmetry` (a G_ReLU image of θ with its exact stitch: a known answer).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from genni_ext._validate import positive_int
from genni_ext.core.models import flatten_params
from genni_ext.engine.fused import HOPPER_SMEM_LIMIT, Precision, TileOptions, emulate_tiled_sweep
from genni_ext.engine.lowering import lower


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


def round_to_tf32(values: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to TF32 (10 mantissa bits, nearest with ties away from zero, as
    the GPU's cvt.rna.tf32.f32 does), as float32; infinities and NaN pass through."""
    bits = values.float().contiguous().view(torch.int32)
    finite = (bits & 0x7F800000) != 0x7F800000
    rounded = torch.where(finite, bits + 0x1000, bits) & -0x2000  # 0xffffe000
    return rounded.view(torch.float32)


def tf32_twin_sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """J (float64 [G]) as ``precision="tf32"`` defines it, computed in plain torch.

    Each grid point's parameters are combined in float32 (centre, then each direction in
    turn, each step one fused multiply-add, as the kernel builds them: the sum rounds once,
    which matters here because a last-bit difference can move a weight to the next TF32
    value); every Linear and Conv2d then multiplies TF32-rounded
    weights by TF32-rounded inputs, and everything else (sums, biases, activations,
    pooling, the loss) runs in float64. The twin of the TF32 kernel: the two differ only by
    the kernel's float32 sums and activations.
    """
    local = copy.deepcopy(model).to(dtype=torch.float64)
    layers = [m for m in local.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    hooks = [
        layer.register_forward_pre_hook(
            lambda _module, args: (round_to_tf32(args[0]).double(), *args[1:])
        )
        for layer in layers
    ]
    num_probes = inputs.shape[0]
    flat_targets = targets.reshape(num_probes, -1).double()
    values = torch.empty(coeffs.shape[0], dtype=torch.float64)
    try:
        with torch.no_grad():
            for index, point in enumerate(coeffs.float()):
                params = center.float().clone()
                for weight, direction in zip(point, directions.float(), strict=True):
                    # float32 products are exact in float64: one rounding, as an FMA.
                    params = (params.double() + weight.double() * direction.double()).float()
                nn.utils.vector_to_parameters(params.double(), local.parameters())
                for layer in layers:
                    layer.weight.copy_(round_to_tf32(layer.weight))
                out = local(inputs.double()).reshape(num_probes, -1)
                values[index] = (out - flat_targets).square().sum(dim=-1).mean()
    finally:
        for hook in hooks:
            hook.remove()
    return values


def emulated_tiled_sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    tile: TileOptions | None = None,
    reverse: bool = False,
    smem_limit: int = HOPPER_SMEM_LIMIT,
    precision: Precision = "full",
) -> torch.Tensor:
    """J (float64 [G]) as the tiled CUDA kernel computes it, its steps run on the CPU.

    The tensors are CPU tensors of one dtype, as ``sweep`` takes them. ``tile`` overrides
    the plan (samples per tile, threads, largest register tile); ``reverse`` runs the
    threads of each step last to first; ``smem_limit`` is the shared memory a block may use
    (an H100's by default); ``precision="tf32"`` runs the TF32 steps, the tensor-core
    multiply emulated on the kernel's own fragments.
    """
    program = lower(model, tuple(inputs.shape[1:]))
    tensors = [t.detach().contiguous() for t in (center, directions, coeffs, inputs, targets)]
    return emulate_tiled_sweep(
        program, *tensors, tile=tile, reverse=reverse, smem_limit=smem_limit, precision=precision
    )


def _strided_nonsquare() -> nn.Module:
    return nn.Sequential(  # (2, 11, 9)
        nn.Conv2d(2, 3, (3, 2), stride=2, padding=1),  # (3, 6, 5)
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),  # (3, 3, 3)
        nn.Conv2d(3, 4, 2, stride=3, padding=2),  # (4, 2, 2)
        nn.Tanh(),
        nn.AvgPool2d((2, 3), stride=1, padding=1, count_include_pad=False),  # (4, 3, 2)
        nn.Flatten(),
        nn.Linear(24, 3),
    )


def _pointwise_padded_map_output() -> nn.Module:
    """Kernel 1 with padding 2: border pixels are bias only; the output is a feature map."""
    return nn.Sequential(  # (2, 5, 6)
        nn.Conv2d(2, 3, 1, padding=2),  # (3, 9, 10)
        nn.Sigmoid(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),  # (3, 5, 5)
    )


def _stride3_without_bias() -> nn.Module:
    return nn.Sequential(  # (1, 13, 10)
        nn.Conv2d(1, 4, 3, stride=3, bias=False),  # (4, 4, 3)
        nn.LeakyReLU(0.2),
        nn.MaxPool2d((2, 1), stride=(1, 2)),  # (4, 3, 2)
        nn.Flatten(),
        nn.Linear(24, 2, bias=False),
    )


def _tuple_stride_and_padding() -> nn.Module:
    return nn.Sequential(  # (3, 7, 8)
        nn.Conv2d(3, 2, (2, 4), stride=(2, 1), padding=(2, 0)),  # (2, 5, 5)
        nn.ReLU(),
        nn.AvgPool2d(2, stride=3, padding=1),  # (2, 2, 2), count_include_pad=True
        nn.Flatten(),
        nn.Linear(8, 1),
    )


def _overlapping_padded_pools() -> nn.Module:
    return nn.Sequential(  # (1, 6, 6)
        nn.Conv2d(1, 3, 3, padding=1),  # (3, 6, 6)
        nn.Tanh(),
        nn.MaxPool2d(3, stride=1, padding=1),  # (3, 6, 6)
        nn.Conv2d(3, 2, 3, stride=2, padding=2),  # (2, 4, 4)
        nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),  # (2, 2, 2)
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _pool_first() -> nn.Module:
    """The first op is not parametric, so there is no affine first layer to use."""
    return nn.Sequential(  # (2, 8, 8)
        nn.MaxPool2d(2),  # (2, 4, 4)
        nn.Conv2d(2, 3, 3, padding=1),  # (3, 4, 4)
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 2),
    )


def _nested_identity_flatten() -> nn.Module:
    """Nested Sequentials, Identity and Flatten (also on an already flat activation)."""
    return nn.Sequential(  # (1, 6, 6)
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Identity(), nn.Sequential(nn.ReLU(), nn.Identity())),
        nn.Identity(),
        nn.Flatten(),
        nn.Sequential(
            nn.Identity(),
            nn.Linear(2 * 4 * 4, 5),
            nn.Flatten(),
            nn.Sigmoid(),
            nn.Sequential(nn.Sequential(nn.Linear(5, 2))),
        ),
    )


def _wide_activation() -> nn.Module:
    """1152 values per sample after the first conv: too many for the CPU driver's wide
    (64-sample) tiles, so it runs 16-sample tiles, unlike the small nets above."""
    return nn.Sequential(  # (1, 12, 12)
        nn.Conv2d(1, 8, 3, padding=1),  # (8, 12, 12)
        nn.ReLU(),
        nn.MaxPool2d(4),  # (8, 3, 3)
        nn.Flatten(),
        nn.Linear(72, 2),
    )


def _valid_string_padding() -> nn.Module:
    return nn.Sequential(  # (2, 4, 7)
        nn.Conv2d(2, 2, (1, 3), padding="valid"),  # (2, 4, 5)
        nn.LeakyReLU(),
        nn.Flatten(),
        nn.Linear(40, 3),
    )


@dataclass(frozen=True)
class BenchmarkProblem:
    """The tensors of one benchmark sweep (see :func:`benchmark_problem`)."""

    model: nn.Module
    center: torch.Tensor
    directions: torch.Tensor
    coeffs: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, *, device: str | torch.device, dtype: torch.dtype) -> BenchmarkProblem:
        """The same problem on ``device`` in ``dtype`` (the targets recomputed there)."""
        model = copy.deepcopy(self.model).to(device=device, dtype=dtype)
        inputs = self.inputs.to(device=device, dtype=dtype)
        with torch.no_grad():
            targets = model(inputs).reshape(inputs.shape[0], -1).contiguous()
        return replace(
            self,
            model=model,
            center=self.center.to(device=device, dtype=dtype),
            directions=self.directions.to(device=device, dtype=dtype),
            coeffs=self.coeffs.to(device=device, dtype=dtype),
            inputs=inputs,
            targets=targets,
        )

    def subset(self, count: int | None) -> torch.Tensor:
        """``count`` grid points spread evenly over the grid (all of them for None)."""
        total = self.coeffs.shape[0]
        if count is None or count >= total:
            return self.coeffs
        # Spacing (total - 1) / (count - 1) >= 1, so the rounded indices are distinct.
        index = torch.linspace(0, total - 1, count).round().long().to(self.coeffs.device)
        return self.coeffs[index].contiguous()


def benchmark_problem(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    *,
    m: int,
    points_per_axis: int,
    bound: float,
    probes: int,
    theta_seed: int = 0,
    probe_seed: int = 100,
) -> BenchmarkProblem:
    """The benchmarks' sweep set-up, float32 on the CPU.

    θ is ``build()``'s initialisation after ``torch.manual_seed(theta_seed)`` and is the
    centre; the m directions are the differences of m further initialisations (seeds
    theta_seed + 1..m) from θ, orthonormalised by QR (the unit-norm basis GENNI's
    Gram-Schmidt gives); the grid has ``points_per_axis`` points on [-bound, bound] per axis
    in C order; the probes are standard normal (``probe_seed``) and the targets are the
    model's outputs at θ.
    """

    def init(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build().eval()

    model = init(theta_seed)
    theta = flatten_params(model)
    offsets = [flatten_params(init(theta_seed + 1 + i)) - theta for i in range(m)]
    basis, _ = torch.linalg.qr(torch.stack(offsets, dim=1))
    axis = torch.linspace(-bound, bound, points_per_axis)
    grid = torch.meshgrid(*([axis] * m), indexing="ij")
    generator = torch.Generator().manual_seed(probe_seed)
    inputs = torch.randn(probes, *input_shape, generator=generator)
    with torch.no_grad():
        targets = model(inputs).reshape(probes, -1)
    return BenchmarkProblem(
        model=model,
        center=theta,
        directions=basis.T.contiguous(),
        coeffs=torch.stack(grid, dim=-1).reshape(-1, m).contiguous(),
        inputs=inputs,
        targets=targets.contiguous(),
    )


# Conv nets that cover the lowering's and the engines' paths: name -> (builder, input shape).
CONV_NETS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "strided_nonsquare": (_strided_nonsquare, (2, 11, 9)),
    "pointwise_padded_map_output": (_pointwise_padded_map_output, (2, 5, 6)),
    "stride3_without_bias": (_stride3_without_bias, (1, 13, 10)),
    "tuple_stride_and_padding": (_tuple_stride_and_padding, (3, 7, 8)),
    "overlapping_padded_pools": (_overlapping_padded_pools, (1, 6, 6)),
    "pool_first": (_pool_first, (2, 8, 8)),
    "nested_identity_flatten": (_nested_identity_flatten, (1, 6, 6)),
    "valid_string_padding": (_valid_string_padding, (2, 4, 7)),
    "wide_activation": (_wide_activation, (1, 12, 12)),
}


@torch.no_grad()
def plant_relu_symmetry(
    model: nn.Sequential, pairs: tuple[tuple[int, int, int], ...], seed: int
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """A G_ReLU image of the nn.Sequential ``model``'s θ, for tests with a known answer:
    for each (layer, next layer, inputs per unit in the next layer) of ``pairs``, unit i of
    the layer becomes s_i × unit p(i) (a random permutation p and scales s in [0.3, 3],
    from ``seed``) and the next layer reads it. Returns the image's flat parameters and,
    per pair, the exact stitch D·P (out × in: entry (i, p(i)) is s_i)."""
    image = copy.deepcopy(model)
    matrices = []
    for offset, (first, second, block) in enumerate(pairs):
        units = image[first].weight.shape[0]
        order = torch.randperm(units, generator=torch.Generator().manual_seed(seed + offset))
        scales = 0.3 + 2.7 * torch.rand(
            units, generator=torch.Generator().manual_seed(seed + 50 + offset), dtype=torch.float64
        )
        layer, following = image[first], image[second]
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight.copy_(layer.weight[order] * scales.view(shape))
        layer.bias.copy_(layer.bias[order] * scales)
        grouped = following.weight.reshape(following.weight.shape[0], units, block, -1)
        grouped = grouped[:, order] / scales.view(1, -1, 1, 1)
        following.weight.copy_(grouped.reshape(following.weight.shape))
        matrix = np.zeros((units, units))
        matrix[np.arange(units), order.numpy()] = scales.numpy()
        matrices.append(matrix)
    return flatten_params(image), matrices
