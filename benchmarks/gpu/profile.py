"""One tiled-kernel launch per workload, for Nsight Compute (``ncu``) to read counters of.

``ncu --kernel-name regex:tile_kernel python3 benchmarks/gpu/profile.py``: LeNet-5 at the
paper's 8192 probes on 40 grid points, mlp([12, 64, 64, 1]) at 4096 probes on 256 points,
and the two-neuron net at 16384 probes on 1000 points (each one launch of the tiled kernel),
then LeNet-5 and the MLP again with ``precision="tf32"``.
"""

from __future__ import annotations

import functools

import torch

import genni_ext
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.testing import benchmark_problem

WORKLOADS = (
    ("lenet5", LeNet5, (1, 28, 28), 8192, 40, 13.0, "full"),
    ("mlp", functools.partial(mlp, [12, 64, 64, 1]), (12,), 4096, 256, 2.0, "full"),
    ("two_neuron", TwoNeuronNet, (1,), 16384, 1000, 2.0, "full"),
    ("lenet5-tf32", LeNet5, (1, 28, 28), 8192, 40, 13.0, "tf32"),
    ("mlp-tf32", functools.partial(mlp, [12, 64, 64, 1]), (12,), 4096, 256, 2.0, "tf32"),
)


def main() -> None:
    for name, build, shape, probes, points, bound, precision in WORKLOADS:
        data = benchmark_problem(
            build, shape, m=2, points_per_axis=100, bound=bound, probes=probes
        ).to(device="cuda", dtype=torch.float32)
        coeffs = data.subset(points)
        genni_ext.sweep(
            data.model, data.center, data.directions, coeffs, data.inputs, data.targets,
            backend="fused", precision=precision,
        )  # fmt: skip
        torch.cuda.synchronize()
        print(name, "done")


if __name__ == "__main__":
    main()
