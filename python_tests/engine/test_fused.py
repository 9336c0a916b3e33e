"""The fused engine (genni_ext._C) against torch.func and the plain per-point loop.

Every comparison runs the same sweep three ways: ``sweep(..., backend="fused")``,
``sweep(..., backend="torch")`` and ``genni_ext.testing.loop_sweep`` (slow, so on the
first few grid points only where the grid is large). Tolerances are in conftest.py.
The CPU driver works on tiles of 16 samples (64 for nets with small activations) and,
below 64 grid points, splits the tiles of a chunk into groups, so the probe counts and
grid sizes straddle those sizes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import genni_ext
from genni_ext.core.models import LeNet5, TwoNeuronNet, flatten_params, mlp
from genni_ext.engine.fused import FirstLayer, fused_sweep, uses_affine_first_layer
from genni_ext.engine.lowering import lower
from genni_ext.errors import GenniError, LoweringError
from genni_ext.testing import CONV_NETS, loop_sweep

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]
ThreeWay = Callable[..., torch.Tensor]
FusedFirstLayer = Callable[..., torch.Tensor]

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
FIRST_LAYERS: list[FirstLayer] = ["affine", "direct"]
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]
LEAKY_SLOPE = 0.37  # not LeakyReLU's default 0.01, so a dropped slope shows in J

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not genni_ext.build_info()["cuda"],
    reason="needs a visible CUDA device and a CUDA build of genni_ext",
)


def _torch(case: Case) -> torch.Tensor:
    return genni_ext.sweep(*case, backend="torch")


def _fused(
    case: Case,
    *,
    num_threads: int | None = None,
    batch_points: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    return genni_ext.sweep(
        *case,
        backend="fused",
        num_threads=num_threads,
        batch_points=batch_points,
        progress=progress,
    )


def _with_leaky_slope(model: nn.Sequential, slope: float) -> nn.Sequential:
    for index, layer in enumerate(model):
        if isinstance(layer, nn.LeakyReLU):
            model[index] = nn.LeakyReLU(slope)
    return model


# --- random MLPs ------------------------------------------------------------------------


def _random_mlp(depth: int, activation: str, bias: bool) -> tuple[nn.Sequential, int]:
    """An MLP with ``depth`` Linear layers and widths in 1..64 (both ends often drawn)."""
    rng = random.Random(f"{depth}-{activation}-{bias}")
    sizes = [rng.choice((1, 64, rng.randint(2, 63))) for _ in range(depth + 1)]
    torch.manual_seed(rng.randrange(1 << 30))
    return _with_leaky_slope(mlp(sizes, activation=activation, bias=bias), LEAKY_SLOPE), sizes[0]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_mlp(
    activation: str,
    bias: bool,
    depth: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
) -> None:
    model, features = _random_mlp(depth, activation, bias)
    if activation == "leaky_relu" and depth > 1:
        assert LEAKY_SLOPE in lower(model, (features,)).slopes.tolist()
    three_way(make_case(model, (features,), dtype=dtype, seed=depth))


# --- LeNet-5 ----------------------------------------------------------------------------

# A two-level orthogonal array over seven factors: every pair of factor levels appears
# together in some row, with 8 LeNets instead of 128.
LENETS = [
    # input_size, in_channels, pool, padding, output_activation, num_outputs, dtype
    (28, 1, "max", 2, None, 1, torch.float32),
    (28, 1, "max", 0, "relu", 10, torch.float64),
    (28, 3, "avg", 2, None, 10, torch.float64),
    (28, 3, "avg", 0, "relu", 1, torch.float32),
    (32, 1, "avg", 2, "relu", 1, torch.float64),
    (32, 1, "avg", 0, None, 10, torch.float32),
    (32, 3, "max", 2, "relu", 10, torch.float32),
    (32, 3, "max", 0, None, 1, torch.float64),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "size, channels, pool, padding, output_activation, outputs, dtype",
    LENETS,
    ids=[f"{s}px-{c}ch-{p}-pad{q}-{a}-out{o}-{str(d)[-7:]}" for s, c, p, q, a, o, d in LENETS],
)
def test_lenet5(
    size: int,
    channels: int,
    pool: str,
    padding: int,
    output_activation: str | None,
    outputs: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
) -> None:
    torch.manual_seed(
        LENETS.index((size, channels, pool, padding, output_activation, outputs, dtype))
    )
    model = LeNet5(
        in_channels=channels,
        input_size=size,
        num_outputs=outputs,
        pool=pool,
        padding=padding,
        output_activation=output_activation,
    )
    case = make_case(model, (channels, size, size), dtype=dtype, num_points=6)
    three_way(case, loop_points=2)


# --- conv nets: strides, paddings, kernels, pools -----------------------------------------


def _conv_net(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    build, shape = CONV_NETS[name]
    torch.manual_seed(sorted(CONV_NETS).index(name))
    return build(), shape


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_NETS))
def test_conv_net(name: str, dtype: torch.dtype, make_case: MakeCase, three_way: ThreeWay) -> None:
    model, shape = _conv_net(name)
    three_way(make_case(model, shape, dtype=dtype))


# --- both first-layer paths -------------------------------------------------------------

FIRST_LAYER_NETS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    # m = 4 >= fan-in 3: "auto" would run this one directly; "affine" must still be right.
    "mlp_small_fan_in": (lambda: mlp([3, 16, 2], activation="tanh"), (3,)),
    "mlp_no_bias": (lambda: mlp([9, 8, 8, 4], activation="sigmoid", bias=False), (9,)),
    "lenet5": (lambda: LeNet5(input_size=16, padding=1, num_outputs=3), (1, 16, 16)),
    # The first Linear reads a flattened image.
    "flatten_first": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 2)),
        (2, 3, 4),
    ),
    **CONV_NETS,
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first_layer", FIRST_LAYERS)
@pytest.mark.parametrize("name", list(FIRST_LAYER_NETS))
def test_first_layer_path(
    name: str,
    first_layer: FirstLayer,
    dtype: torch.dtype,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    build, shape = FIRST_LAYER_NETS[name]
    torch.manual_seed(3)
    case = make_case(build(), shape, dtype=dtype, m=4, num_points=6)
    check_j(fused_first_layer(case, first_layer), _torch(case), case)


@pytest.mark.parametrize(
    "name, m", [("lenet5", 2), ("mlp_small_fan_in", 4), ("strided_nonsquare", 3)]
)
def test_default_first_layer_follows_the_policy(
    name: str, m: int, make_case: MakeCase, fused_first_layer: FusedFirstLayer
) -> None:
    """backend="fused" runs exactly (bitwise) the path uses_affine_first_layer picks, and
    the two paths round differently, so the comparison can tell them apart."""
    build, shape = FIRST_LAYER_NETS[name]
    torch.manual_seed(4)
    case = make_case(build(), shape, dtype=torch.float32, m=m)
    program = lower(case[0], shape)
    picked: FirstLayer = "affine" if uses_affine_first_layer(program, m) else "direct"
    other: FirstLayer = "direct" if picked == "affine" else "affine"
    got = _fused(case)
    assert torch.equal(got, fused_first_layer(case, picked))
    assert not torch.equal(got, fused_first_layer(case, other))


# --- number of directions m, grid size G, probe count N -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_number_of_directions(
    m: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape, dtype=dtype, m=m, num_points=4, seed=m)
    expected = three_way(case)
    for first_layer in FIRST_LAYERS:
        check_j(fused_first_layer(case, first_layer), expected, case)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_points", [1, 2, 63, 64, 65, 150])
def test_grid_sizes_around_the_work_split(
    num_points: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape, dtype=dtype, num_samples=40, num_points=num_points)
    expected = three_way(case, loop_points=2)
    for first_layer in FIRST_LAYERS:
        check_j(fused_first_layer(case, first_layer), expected, case)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_grid_on_a_tiny_net(dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ) -> None:
    torch.manual_seed(5)
    case = make_case(mlp([2, 3, 1], activation="tanh"), (2,), dtype=dtype, num_points=3000)
    got = _fused(case)
    check_j(got, _torch(case), case)
    assert float(got.std()) > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_points", [5, 70])
@pytest.mark.parametrize("num_samples", [1, 15, 16, 17, 63, 64, 65])
@pytest.mark.parametrize("name", ["tuple_stride_and_padding", "wide_activation"])
def test_probe_counts_around_the_tile(
    name: str,
    num_samples: int,
    num_points: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
) -> None:
    """Probe counts on both sides of the CPU driver's tile widths (16 and 64 samples)."""
    model, shape = _conv_net(name)
    case = make_case(model, shape, dtype=dtype, num_samples=num_samples, num_points=num_points)
    three_way(case, loop_points=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_points", [5, 70])
@pytest.mark.parametrize("num_samples", [1, 255, 256, 257, 600])
def test_narrow_net_in_widest_tiles(
    num_samples: int,
    num_points: int,
    dtype: torch.dtype,
    make_case: MakeCase,
    three_way: ThreeWay,
) -> None:
    """Networks of at most 8 features per layer run in 256-sample tiles: probe counts on
    both sides of the tile, and the same J for 1 and 2 threads."""
    torch.manual_seed(18)
    model = TwoNeuronNet()
    case = make_case(model, (1,), dtype=dtype, num_samples=num_samples, num_points=num_points)
    three_way(case, loop_points=5)
    assert torch.equal(_fused(case, num_threads=1), _fused(case, num_threads=2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_probes_in_several_chunks(
    dtype: torch.dtype,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    """The CPU driver transposes the probes (and, on the affine path, the m + 1 first-layer
    responses) chunk by chunk. Here one 16-sample tile of responses alone takes 6-13 MB,
    more than a chunk buffer holds (512 KiB when written), so 80 probes run in several
    chunks, the last one short."""
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 16, 2),
    )
    case = make_case(model, (1, 16, 16), dtype=dtype, num_samples=80, m=5, num_points=3)
    expected = _torch(case)
    affine = fused_first_layer(case, "affine", num_threads=2)
    check_j(affine, expected, case)
    assert torch.equal(affine, fused_first_layer(case, "affine", num_threads=1))
    check_j(fused_first_layer(case, "direct"), expected, case)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_many_probes(
    dtype: torch.dtype,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    """1100 probes of a small input through a wide activation: 69 tiles of 16 samples, so
    on the direct path one chunk holds more tiles than the driver's 64 groups (below 64
    grid points), and some groups sum two tiles."""
    torch.manual_seed(19)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(128, 1)
    )
    case = make_case(model, (1, 8, 8), dtype=dtype, num_samples=1100, num_points=3)
    got = fused_first_layer(case, "direct", num_threads=3)
    check_j(got, _torch(case), case)
    assert torch.equal(got, fused_first_layer(case, "direct", num_threads=1))
    check_j(fused_first_layer(case, "affine"), got, case)


# --- determinism across thread counts -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first_layer", FIRST_LAYERS)
@pytest.mark.parametrize("num_points", [7, 70])
@pytest.mark.parametrize("name", ["strided_nonsquare", "wide_activation"])
def test_bitwise_identical_across_thread_counts(
    name: str,
    num_points: int,
    first_layer: FirstLayer,
    dtype: torch.dtype,
    make_case: MakeCase,
    fused_first_layer: FusedFirstLayer,
) -> None:
    """Enough probes for several tiles of either width, so that below 64 grid points the
    driver splits them into groups, and above it spreads the points over the threads."""
    model, shape = _conv_net(name)
    case = make_case(model, shape, dtype=dtype, num_samples=300, num_points=num_points)
    one, two, three = (fused_first_layer(case, first_layer, num_threads=n) for n in (1, 2, 3))
    assert torch.equal(one, two) and torch.equal(one, three)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sweep_num_threads_is_bitwise_deterministic(
    dtype: torch.dtype, make_case: MakeCase
) -> None:
    torch.manual_seed(7)
    case = make_case(LeNet5(), (1, 28, 28), dtype=dtype, num_samples=40, num_points=4)
    one, two, three = (_fused(case, num_threads=n) for n in (1, 2, 3))
    assert torch.equal(one, two) and torch.equal(one, three)


# --- sweep options on the fused backend ---------------------------------------------------


def test_chunks_and_progress(
    make_case: MakeCase, check_j: CheckJ, capsys: pytest.CaptureFixture[str]
) -> None:
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape, num_points=9)
    whole = _fused(case)
    check_j(_fused(case, batch_points=2), whole, case)
    check_j(_fused(case, batch_points=100), whole, case)
    capsys.readouterr()
    check_j(_fused(case, progress=True), whole, case)
    assert "9/9" in capsys.readouterr().err


def test_strided_and_grad_tensors(make_case: MakeCase) -> None:
    """sweep copies non-contiguous tensors and detaches ones that need grad before the
    engine reads raw memory: the result is bitwise that of the plain tensors."""
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape, num_points=6)
    _, center, directions, coeffs, inputs, targets = case
    expected = _fused(case)
    strided_inputs = inputs.transpose(2, 3).contiguous().transpose(2, 3)
    strided_coeffs = coeffs.t().contiguous().t()
    wide = torch.zeros(directions.shape[0], 2 * directions.shape[1], dtype=directions.dtype)
    wide[:, ::2] = directions
    assert not strided_inputs.is_contiguous() and not strided_coeffs.is_contiguous()
    got = genni_ext.sweep(
        model,
        center.clone().requires_grad_(),
        wide[:, ::2],
        strided_coeffs,
        strided_inputs,
        targets,
        backend="fused",
    )
    assert not got.requires_grad
    assert torch.equal(got, expected)


def test_zero_at_the_reference_point(make_case: MakeCase) -> None:
    """At θ itself (c = 0, centre θ) the outputs equal the targets exactly: J = 0."""
    torch.manual_seed(8)
    model = LeNet5(input_size=16, padding=1)
    _, _, directions, _, inputs, targets = make_case(model, (1, 16, 16))
    theta = flatten_params(model).double()
    coeffs = torch.zeros(3, directions.shape[0], dtype=torch.float64)
    got = genni_ext.sweep(model, theta, directions, coeffs, inputs, targets, backend="fused")
    assert float(got.abs().max()) < 1e-20


def test_two_neuron_net_against_closed_form() -> None:
    """J for φ(x) = c·relu(a x) + d·relu(b x) on a grid over (a, d), by hand."""
    net = TwoNeuronNet().double()
    theta = torch.tensor([0.8, -1.2, 1.5, 0.5], dtype=torch.float64)
    x = torch.linspace(-2.0, 2.0, 33, dtype=torch.float64).unsqueeze(1)
    a, b, c, d = theta.tolist()
    y = c * torch.relu(a * x) + d * torch.relu(b * x)
    directions = torch.eye(4, dtype=torch.float64)[[0, 3]]
    axis = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    coeffs = torch.cartesian_prod(axis, axis)
    got = genni_ext.sweep(net, theta, directions, coeffs, x, y, backend="fused")
    expected = []
    for ca, cd in coeffs.tolist():
        phi = c * torch.relu((a + ca) * x) + (d + cd) * torch.relu(b * x)
        expected.append(float(((phi - y) ** 2).mean()))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_tied_parameters_share_one_offset(make_case: MakeCase, three_way: ThreeWay) -> None:
    torch.manual_seed(9)
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second)
    rows = lower(model, (4,)).ops
    assert int(rows[0, 13]) == int(rows[2, 13]) == 0
    three_way(make_case(model, (4,)))


def test_unused_root_parameter_shifts_the_offsets(make_case: MakeCase, three_way: ThreeWay) -> None:
    """A parameter of the root Sequential comes first in parameters() but feeds no layer."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    model.register_parameter("unused", nn.Parameter(torch.randn(7)))
    assert int(lower(model, (3,)).ops[0, 13]) == 7
    three_way(make_case(model, (3,)))


# --- hypothesis: random architectures -----------------------------------------------------


def _draw_activation(data: st.DataObject) -> nn.Module | None:
    kind = data.draw(st.sampled_from(["none", "relu", "leaky_relu", "tanh", "sigmoid"]))
    if kind == "leaky_relu":
        return nn.LeakyReLU(data.draw(st.floats(0.0, 1.5)))
    modules: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    return modules[kind]() if kind in modules else None


def _draw_dense_stack(data: st.DataObject, features: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(depth):
        if data.draw(st.booleans()):
            layers.append(data.draw(st.sampled_from([nn.Identity, nn.Flatten]))())
        width = data.draw(st.integers(1, 20))
        layers.append(nn.Linear(features, width, bias=data.draw(st.booleans())))
        features = width
        activation = _draw_activation(data)
        if activation is not None:
            layers.append(activation)
    return layers


def _fuzz_sweep(
    data: st.DataObject,
    model: nn.Module,
    shape: tuple[int, ...],
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    case = make_case(
        model,
        shape,
        dtype=dtype,
        num_samples=data.draw(st.integers(1, 40)),
        m=data.draw(st.integers(1, 5)),
        num_points=data.draw(st.integers(1, 80)),
    )
    first_layer = data.draw(st.sampled_from(["auto", "affine", "direct"]))
    check_j(fused_first_layer(case, first_layer), _torch(case), case)


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_fuzz_dense_stacks(
    data: st.DataObject,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    torch.manual_seed(data.draw(st.integers(0, 1 << 16)))
    features = data.draw(st.integers(1, 12))
    layers = _draw_dense_stack(data, features, data.draw(st.integers(1, 4)))
    _fuzz_sweep(data, nn.Sequential(*layers), (features,), make_case, check_j, fused_first_layer)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fuzz_conv_stacks(
    data: st.DataObject,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    torch.manual_seed(data.draw(st.integers(0, 1 << 16)))
    channels, height, width = (
        data.draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (3, 12), (3, 12))
    )
    shape = (channels, height, width)
    layers: list[nn.Module] = []
    for _ in range(data.draw(st.integers(1, 3))):
        pad = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
        kernel = (
            data.draw(st.integers(1, min(5, height + 2 * pad[0]))),
            data.draw(st.integers(1, min(5, width + 2 * pad[1]))),
        )
        stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
        out_channels = data.draw(st.integers(1, 4))
        layers.append(
            nn.Conv2d(channels, out_channels, kernel, stride, pad, bias=data.draw(st.booleans()))
        )
        channels = out_channels
        height = (height + 2 * pad[0] - kernel[0]) // stride[0] + 1
        width = (width + 2 * pad[1] - kernel[1]) // stride[1] + 1
        activation = _draw_activation(data)
        if activation is not None:
            layers.append(activation)
        pool_kind = data.draw(st.sampled_from(["none", "max", "avg"]))
        if pool_kind != "none":
            window = (
                data.draw(st.integers(1, min(3, height))),
                data.draw(st.integers(1, min(3, width))),
            )
            pool_pad = (
                data.draw(st.integers(0, window[0] // 2)),
                data.draw(st.integers(0, window[1] // 2)),
            )
            pool_stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
            if pool_kind == "max":
                layers.append(nn.MaxPool2d(window, pool_stride, pool_pad))
            else:
                include = data.draw(st.booleans())
                layers.append(
                    nn.AvgPool2d(window, pool_stride, pool_pad, count_include_pad=include)
                )
            height = (height + 2 * pool_pad[0] - window[0]) // pool_stride[0] + 1
            width = (width + 2 * pool_pad[1] - window[1]) // pool_stride[1] + 1
    if data.draw(st.booleans()):
        layers.append(nn.Flatten())
        layers += _draw_dense_stack(data, channels * height * width, data.draw(st.integers(0, 2)))
    _fuzz_sweep(data, nn.Sequential(*layers), shape, make_case, check_j, fused_first_layer)


# --- backend choice: explain_backend, LoweringError, "auto" -----------------------------


@pytest.mark.parametrize(
    "model, shape, ops",
    [
        (TwoNeuronNet(), (1,), 3),
        (mlp([5, 8, 8, 2], activation="leaky_relu"), (5,), 5),
        (mlp([5, 8, 2], activation="identity"), (5,), 2),
        (LeNet5(), (1, 28, 28), 11),
        (
            LeNet5(in_channels=3, input_size=32, pool="avg", output_activation="relu"),
            (3, 32, 32),
            12,
        ),
    ],
    ids=["two_neuron", "mlp_leaky", "mlp_identity", "lenet5", "lenet5_rgb_avg_relu"],
)
def test_explain_backend_says_fused_for_the_package_models(
    model: nn.Module, shape: tuple[int, ...], ops: int
) -> None:
    name = type(model).__name__
    assert genni_ext.explain_backend(model).startswith(f"fused (cpu): the layer types of {name}")
    inputs = torch.randn(2, *shape)
    assert genni_ext.explain_backend(model, inputs) == f"fused (cpu): {ops} ops lowered from {name}"


class _Scaled(nn.Module):
    """A custom module with its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.linear(x)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class _Doubling(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


def _unsupported(name: str) -> tuple[nn.Module, str, str]:
    """A model the fused engine cannot run, the path of the layer at fault and its class."""
    torch.manual_seed(11)
    if name == "batchnorm":
        norm = nn.BatchNorm1d(6)
        model = nn.Sequential(nn.Linear(4, 6), nn.Sequential(norm, nn.ReLU()), nn.Linear(6, 2))
        assert norm.running_mean is not None
        with torch.no_grad():  # statistics far from (0, 1), so the layer matters
            norm.running_mean.uniform_(-1.0, 1.0)
        return model.eval(), "1.0", "BatchNorm1d"
    if name == "custom_forward":
        return nn.Sequential(nn.Linear(4, 6), _Scaled(), nn.Linear(6, 2)), "1", "_Scaled"
    if name == "residual":
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), _Residual(6), nn.Linear(6, 2))
        return model, "2", "_Residual"
    assert name == "sequential_forward"
    return _Doubling(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), "", "_Doubling"


UNSUPPORTED = ["batchnorm", "custom_forward", "residual", "sequential_forward"]


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_explain_backend_names_the_unsupported_layer(name: str) -> None:
    model, path, cls = _unsupported(name)
    where = f"layer '{path}'" if path else "the model"
    for inputs in (None, torch.randn(3, 4)):
        line = genni_ext.explain_backend(model, inputs)
        assert line.startswith(f"torch: {where} cannot be lowered"), line
        assert cls in line


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_fused_backend_raises_naming_the_layer(name: str, make_case: MakeCase) -> None:
    model, path, cls = _unsupported(name)
    with pytest.raises(LoweringError) as error:
        _fused(make_case(model, (4,)))
    assert error.value.layer == path
    message = str(error.value)
    assert (f"layer '{path}'" if path else "the model") in message
    assert cls in message and "backend='torch'" in message


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_auto_falls_back_and_logs_why(
    name: str, make_case: MakeCase, caplog: pytest.LogCaptureFixture
) -> None:
    model, path, cls = _unsupported(name)
    case = make_case(model, (4,), num_points=4)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = genni_ext.sweep(*case)
    lines = [record.getMessage() for record in caplog.records if record.name == "genni_ext"]
    assert len(lines) == 1
    assert genni_ext.explain_backend(model, case[4]) in lines[0]
    assert cls in lines[0] and (f"layer '{path}'" if path else "the model") in lines[0]
    assert torch.equal(got, _torch(case))
    torch.testing.assert_close(got, loop_sweep(*case), rtol=1e-10, atol=1e-12)


def test_auto_uses_fused_and_logs_it(make_case: MakeCase, caplog: pytest.LogCaptureFixture) -> None:
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = genni_ext.sweep(*case)
    lines = [record.getMessage() for record in caplog.records if record.name == "genni_ext"]
    assert lines == ["sweep backend: fused (cpu): 7 ops lowered from Sequential"]
    assert torch.equal(got, _fused(case))


# --- the engine itself ----------------------------------------------------------------------


def test_build_info() -> None:
    info = genni_ext.build_info()
    assert info["cpu"] is True
    for key, kind in (("cuda", bool), ("openmp", bool), ("cuda_devices", int), ("cuda_archs", str)):
        assert isinstance(info[key], kind), f"{key}: {info[key]!r} is not {kind.__name__}"
    devices = info["cuda_devices"]
    assert isinstance(devices, int) and not isinstance(devices, bool) and devices >= 0
    if not info["cuda"]:
        assert devices == 0
    if torch.cuda.is_available() and info["cuda"]:
        assert devices == torch.cuda.device_count()


def test_engine_rejects_a_malformed_program(make_case: MakeCase) -> None:
    """The extension checks the op rows it is given instead of reading out of bounds."""
    torch.manual_seed(12)
    model = mlp([3, 4, 2])
    case = make_case(model, (3,))
    program = lower(model, (3,))

    def run(ops: torch.Tensor) -> None:
        fused_sweep(
            replace(program, ops=ops),
            *case[1:],
            num_threads=1,
            batch_points=None,
            progress=False,
        )

    outside = program.ops.clone()
    outside[2, 13] = program.num_params - 1  # the last Linear's weight past the end
    with pytest.raises(ValueError, match="outside the parameter vector"):
        run(outside)
    unknown = program.ops.clone()
    unknown[1, 0] = 99
    with pytest.raises(ValueError, match="unknown op kind"):
        run(unknown)
    chained = program.ops.clone()
    chained[2, 1] = 5  # the last Linear no longer takes the ReLU's 4 outputs
    with pytest.raises(ValueError, match="previous op's output"):
        run(chained)


# --- bugs: models that lower to a program that computes something else --------------------


def test_reused_activation_instance(make_case: MakeCase, three_way: ThreeWay) -> None:
    """One ReLU object used after both hidden layers (a common idiom) must act twice."""
    torch.manual_seed(13)
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3))
    three_way(make_case(model, (4,)))


def test_reused_linear_instance(make_case: MakeCase, check_j: CheckJ) -> None:
    """The same Linear applied twice (weight sharing by module reuse)."""
    torch.manual_seed(14)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    case = make_case(model, (4,))
    expected = loop_sweep(*case)
    check_j(_fused(case), expected, case)


def test_torch_backend_leaves_a_reused_module_intact(make_case: MakeCase) -> None:
    """sweep(backend="torch") must not replace the caller's parameters (torch.func's
    functional_call with tie_weights=True restores a module reachable by two paths
    wrongly, pytorch/pytorch#164759; the fallback leaves vmap's BatchedTensors behind)."""
    torch.manual_seed(15)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    weight, before = shared.weight, flatten_params(model)
    _torch(make_case(model, (4,)))
    assert shared.weight is weight
    assert torch.equal(flatten_params(model), before)


def test_program_longer_than_the_engine_takes(
    make_case: MakeCase, caplog: pytest.LogCaptureFixture
) -> None:
    """A 43-op MLP lowers in Python but the engine runs at most build_info()["max_ops"]
    ops: "auto" must fall back to torch (not crash) and "fused" raise a GenniError."""
    torch.manual_seed(16)
    model = mlp([3, *[4] * 21, 2])
    case = make_case(model, (3,), num_points=3)
    with caplog.at_level(logging.INFO, logger="genni_ext"):
        got = genni_ext.sweep(*case)
    torch.testing.assert_close(got, _torch(case), rtol=0.0, atol=0.0)
    lines = [record.getMessage() for record in caplog.records if record.name == "genni_ext"]
    assert len(lines) == 1 and lines[0].startswith("sweep backend: torch")
    assert genni_ext.explain_backend(model, case[4]).startswith("torch")
    with pytest.raises(GenniError):
        _fused(case)


# --- CUDA (skipped without a device) --------------------------------------------------------


def _to_cuda(case: Case) -> Case:
    model, center, directions, coeffs, inputs, targets = case
    return (
        model.cuda(),
        center.cuda(),
        directions.cuda(),
        coeffs.cuda(),
        inputs.cuda(),
        targets.cuda(),
    )


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first_layer", FIRST_LAYERS)
@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_cuda_against_torch(
    name: str,
    first_layer: FirstLayer,
    dtype: torch.dtype,
    make_case: MakeCase,
    check_j: CheckJ,
    fused_first_layer: FusedFirstLayer,
) -> None:
    torch.manual_seed(17)
    model: nn.Module
    shape: tuple[int, ...]
    if name == "mlp":
        model, shape = mlp([7, 33, 17, 3], activation="tanh"), (7,)
    else:
        model, shape = LeNet5(num_outputs=10), (1, 28, 28)
    cpu_case = make_case(model, shape, dtype=dtype, num_samples=300, num_points=70)
    case = _to_cuda(cpu_case)
    assert genni_ext.explain_backend(model, case[4]).startswith("fused (cuda)")
    got = fused_first_layer(case, first_layer)
    assert got.device.type == "cuda"
    expected = _torch(case)
    check_j(got.cpu(), expected.cpu(), cpu_case)
    check_j(got.cpu(), _fused(cpu_case), cpu_case)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_sweep_api(dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ) -> None:
    torch.manual_seed(18)
    model, shape = _conv_net("overlapping_padded_pools")
    cpu_case = make_case(model, shape, dtype=dtype, num_samples=33, num_points=9)
    got = _fused(_to_cuda(cpu_case), batch_points=4)
    check_j(got.cpu(), _fused(cpu_case), cpu_case)


def test_torch_backend_leaves_tied_weights_intact(make_case: MakeCase) -> None:
    """A weight tied between two modules keeps being the same Parameter after a torch sweep."""
    torch.manual_seed(17)
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second)
    weight, before = first.weight, flatten_params(model)
    case = make_case(model, (4,))
    torch.testing.assert_close(_torch(case), loop_sweep(*case), rtol=1e-10, atol=0.0)
    assert first.weight is weight and second.weight is weight
    assert torch.equal(flatten_params(model), before)
