"""Small sweeps on CUDA for compute-sanitizer (memcheck, racecheck): every kernel path once.

Run under the sanitizer: ``compute-sanitizer --tool memcheck python3 benchmarks/gpu/sanitize.py``
(``--quick``: four models, float32 only, for the slower racecheck). Each sweep is checked
against torch's J so that a run that completes is also right (TF32 within 3 %).
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

import genni_ext
from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, mlp
from genni_ext.engine.fused import TileOptions, fused_sweep
from genni_ext.engine.lowering import lower
from genni_ext.testing import CONV_NETS


def _case(model: nn.Module, shape: tuple[int, ...], samples: int, points: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(0)
    theta = flatten_params(model).to(dtype)
    inputs = torch.randn(samples, *shape, generator=generator).to(dtype)
    with torch.no_grad():
        targets = copy.deepcopy(model).to(dtype)(inputs).reshape(samples, -1)
    scale = 0.05 * float(theta.square().mean().sqrt())
    center = theta + scale * torch.randn(theta.shape, generator=generator).to(dtype)
    directions = (scale * torch.randn(2, theta.numel(), generator=generator)).to(dtype)
    coeffs = (2 * torch.rand(points, 2, generator=generator) - 1).to(dtype)
    return model, center, directions, coeffs, inputs, targets


def main() -> None:
    torch.manual_seed(0)
    models = [
        ("two_neuron", TwoNeuronNet(), (1,), 2100),
        ("mlp", mlp([12, 64, 64, 3], activation="tanh"), (12,), 200),
        ("lenet16", LeNet5(input_size=16, padding=1, num_outputs=3), (1, 16, 16), 20),
        *((name, build(), shape, 19) for name, (build, shape) in CONV_NETS.items()),
    ]
    quick = "--quick" in sys.argv
    if quick:
        models = [
            entry
            for entry in models
            if entry[0] in ("two_neuron", "mlp", "lenet16", "strided_nonsquare")
        ]
    for name, model, shape, samples in models:
        for dtype in (torch.float32,) if quick else (torch.float32, torch.float64):
            case = _case(copy.deepcopy(model), shape, samples, 3, dtype)
            expected = genni_ext.sweep(*case, backend="torch")
            cuda = (copy.deepcopy(model).cuda(), *(t.cuda() for t in case[1:]))
            program = lower(model, shape)
            runs = [
                ("tiled", None, "full"),
                ("tiled", TileOptions(samples=16, threads=64), "full"),
                ("reference", None, "full"),
            ]
            if dtype == torch.float32:
                runs += [("tiled", None, "tf32"), ("tiled", TileOptions(samples=16), "tf32")]
            for kernel, tile, precision in runs:
                got = fused_sweep(
                    program, *cuda[1:], num_threads=None, batch_points=None, progress=False,
                    cuda_kernel=kernel, tile=tile, precision=precision,
                ).cpu()  # fmt: skip
                error = float(((got - expected).abs() / expected.abs().clamp_min(1e-30)).max())
                limit = 1e-9 if dtype == torch.float64 else 3e-2 if precision == "tf32" else 1e-3
                status = "ok" if error < limit else "WRONG"
                print(
                    f"{name:28s} {dtype!s:14s} {kernel:9s} {precision:4s} {tile} "
                    f"rel. error {error:.1e} {status}"
                )
                if status != "ok":
                    raise SystemExit(1)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
