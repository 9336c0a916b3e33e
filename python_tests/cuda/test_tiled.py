"""The tiled CUDA kernel: its block steps on the CPU (everywhere) and the kernel on a GPU.

``genni_ext.testing.emulated_tiled_sweep`` runs the steps of csrc/genni/tile.h thread by
thread between the kernel's barriers, forwards and backwards, with shared memory poisoned
with NaN before every tile: a wrong index, a missing barrier between two steps (a thread
reading what another writes in the same step) or a read of memory no step wrote changes
J or makes it NaN. The CUDA section runs the kernel itself against torch in float64; it
skips without a GPU.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from torch import nn

import genni_ext
from genni_ext import _C
from genni_ext.core.models import LeNet5, TwoNeuronNet, mlp
from genni_ext.engine import fused
from genni_ext.engine.fused import TileOptions, cuda_tile_plan, fused_sweep
from genni_ext.engine.lowering import OP_NAMES, lower
from genni_ext.errors import BackendUnavailableError, InputError
from genni_ext.testing import CONV_NETS, emulated_tiled_sweep, tf32_twin_sweep

Case = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeCase = Callable[..., Case]
CheckJ = Callable[[torch.Tensor, torch.Tensor, Case], None]

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not genni_ext.build_info()["cuda"],
    reason="needs a visible CUDA device and a CUDA build of genni_ext",
)


def _torch(case: Case) -> torch.Tensor:
    return genni_ext.sweep(*case, backend="torch")


def _emulated_both_orders(case: Case, check_j: CheckJ, tile: TileOptions | None = None) -> None:
    """The emulated kernel, threads forwards and backwards, equals torch."""
    expected = _torch(case)
    assert float(expected.max()) > 0.0, "degenerate case: J is zero everywhere"
    forwards = emulated_tiled_sweep(*case, tile=tile)
    check_j(forwards, expected, case)
    backwards = emulated_tiled_sweep(*case, tile=tile, reverse=True)
    check_j(backwards, expected, case)


def _random_mlp(depth: int, activation: str, bias: bool) -> tuple[nn.Sequential, int]:
    rng = random.Random(f"tiled-{depth}-{activation}-{bias}")
    sizes = [rng.choice((1, 64, rng.randint(2, 63))) for _ in range(depth + 1)]
    torch.manual_seed(rng.randrange(1 << 30))
    model = mlp(sizes, activation=activation, bias=bias)
    for index, layer in enumerate(model):
        if isinstance(layer, nn.LeakyReLU):
            model[index] = nn.LeakyReLU(0.37)
    return model, sizes[0]


def _conv_net(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    build, shape = CONV_NETS[name]
    torch.manual_seed(sorted(CONV_NETS).index(name))
    return build(), shape


# LeNet-5 variants (input size, channels, pool, padding, output activation, outputs).
LENETS = [
    (28, 1, "max", 2, None, 1),
    (28, 1, "max", 0, "relu", 10),
    (28, 3, "avg", 2, None, 10),
    (32, 3, "max", 0, None, 1),
]
LENET_IDS = [f"{s}px-{c}ch-{p}-pad{q}-{a}-out{o}" for s, c, p, q, a, o in LENETS]


def _lenet(spec: tuple) -> tuple[nn.Module, tuple[int, int, int]]:
    """The LeNet-5 of one LENETS row (seeded by its index) and its input shape."""
    size, channels, pool, padding, output_activation, outputs = spec
    torch.manual_seed(LENETS.index(spec))
    model = LeNet5(
        in_channels=channels,
        input_size=size,
        num_outputs=outputs,
        pool=pool,
        padding=padding,
        output_activation=output_activation,
    )
    return model, (channels, size, size)


# --- the block steps on the CPU -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_emulated_random_mlp(
    activation: str, bias: bool, depth: int, make_case: MakeCase, check_j: CheckJ
) -> None:
    model, features = _random_mlp(depth, activation, bias)
    _emulated_both_orders(make_case(model, (features,), num_samples=40, num_points=3), check_j)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_NETS))
def test_emulated_conv_net(
    name: str, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    model, shape = _conv_net(name)
    _emulated_both_orders(make_case(model, shape, dtype=dtype, num_samples=21), check_j)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lenet", LENETS, ids=LENET_IDS)
def test_emulated_lenet5(
    lenet: tuple, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    model, shape = _lenet(lenet)
    channels = shape[0]
    case = make_case(model, shape, dtype=dtype, num_samples=11, num_points=2)
    if _plan(model, shape, 11, scalar_bytes=case[1].element_size()).samples == 0:
        # 8 samples of a 3-channel input and its first pooled conv, plus conv2's weights,
        # are over 227 KB in float64 (245 KB at 28x28): more than a block may have. Such a
        # sweep runs on the reference kernel; in float32 it fits.
        assert (channels, dtype) == (3, torch.float64)
        assert _plan(model, shape, 11, scalar_bytes=4).samples == 8
        return
    _emulated_both_orders(case, check_j)


TILE_OPTIONS = [
    TileOptions(samples=8, threads=32, max_lanes=1),
    TileOptions(samples=8, threads=64, max_lanes=8, layout=1),
    TileOptions(samples=16, threads=96, max_lanes=2),
    TileOptions(samples=24, threads=128, max_lanes=4, layout=1),
    TileOptions(samples=64, threads=256, max_lanes=8),
    TileOptions(samples=16, threads=256, layout=2),
]


@pytest.mark.slow
@pytest.mark.parametrize("tile", TILE_OPTIONS, ids=str)
@pytest.mark.parametrize("name", ["lenet5", "mlp", "strided_nonsquare", "wide_activation"])
def test_emulated_tile_options(
    name: str, tile: TileOptions, make_case: MakeCase, check_j: CheckJ
) -> None:
    """Every tile size, thread count and register-tile width computes the same J."""
    torch.manual_seed(7)
    if name == "lenet5":
        model, shape = LeNet5(input_size=16, padding=1, num_outputs=3), (1, 16, 16)
    elif name == "mlp":
        model, shape = mlp([12, 64, 64, 3], activation="tanh"), (12,)
    else:
        model, shape = _conv_net(name)
    case = make_case(model, shape, dtype=torch.float32, num_samples=61, num_points=2)
    _emulated_both_orders(case, check_j, tile)


@pytest.mark.slow
@pytest.mark.parametrize("num_samples", [1, 7, 8, 9, 15, 16, 17, 31, 33])
def test_emulated_probe_counts_around_the_tile(
    num_samples: int, make_case: MakeCase, check_j: CheckJ
) -> None:
    """Partial last tiles (samples past N are zeros and must not count) at tiles of 8 and 16."""
    model, shape = _conv_net("tuple_stride_and_padding")
    case = make_case(model, shape, num_samples=num_samples, num_points=3)
    for samples in (8, 16):
        _emulated_both_orders(case, check_j, TileOptions(samples=samples, threads=64))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_emulated_number_of_directions(m: int, make_case: MakeCase, check_j: CheckJ) -> None:
    model, shape = _conv_net("strided_nonsquare")
    _emulated_both_orders(make_case(model, shape, m=m, num_points=4, seed=m), check_j)


def test_emulated_two_neuron_net_in_wide_tiles(make_case: MakeCase, check_j: CheckJ) -> None:
    torch.manual_seed(8)
    case = make_case(TwoNeuronNet(), (1,), num_samples=5000, num_points=4)
    plan = _plan(case[0], (1,), 5000)
    assert plan.samples == 2048 and plan.params_in_shared
    _emulated_both_orders(case, check_j)


# --- TF32 (precision="tf32") on the CPU ----------------------------------------------------
# Two checks: the TF32 steps equal their pure-torch twin (TF32-rounded weights and inputs
# of every Linear/Conv2d, float64 elsewhere) within TF32_TWIN_TOLERANCE, which a wrong
# fragment index fails; and they stay within TF32_TOLERANCE of float64, the error the
# README states. Measured over these tests (CPU harness and H200):
# - against float64: |J_tf32 - J_float64| <= 1.2e-4 S (S as in conftest), relative up to
#   1.6e-2 where J is small next to S;
# - against the twin: up to 1.3e-5 S (one probe, LeNet-5 on the H200), 0.9e-6 S on the CPU.
#   Not float32's 1e-6: a last-bit difference in a float32 sum can move an activation
#   across a TF32 rounding boundary (one TF32 step is 2^-11 of it) before the next layer.
TF32_TOLERANCE = (2e-2, 5e-4)  # rtol, atol as a fraction of S
TF32_TWIN_TOLERANCE = (1e-3, 5e-5)


def _float64_j(case: Case) -> torch.Tensor:
    model, *tensors = case
    return genni_ext.sweep(model, *(t.double() for t in tensors), backend="torch")


def _close(got: torch.Tensor, expected: torch.Tensor, case: Case, tolerance: tuple) -> None:
    assert got.dtype == torch.float64 and bool(torch.isfinite(got).all()), got
    scale = max(float(case[5].double().square().sum(dim=1).mean()), float(expected.abs().max()))
    rtol, atol_fraction = tolerance
    torch.testing.assert_close(got.cpu(), expected, rtol=rtol, atol=atol_fraction * scale)


def check_tf32(got: torch.Tensor, case: Case, twin: bool = True) -> None:
    """``got`` (TF32 J of a float32 case) is close to the twin (where ``twin``) and to
    float64 within TF32_TOLERANCE."""
    if twin:
        _close(got, tf32_twin_sweep(*case), case, TF32_TWIN_TOLERANCE)
    _close(got, _float64_j(case), case, TF32_TOLERANCE)


def _emulated_tf32_both_orders(case: Case, tile: TileOptions | None = None) -> None:
    forwards = emulated_tiled_sweep(*case, tile=tile, precision="tf32")
    check_tf32(forwards, case)
    backwards = emulated_tiled_sweep(*case, tile=tile, precision="tf32", reverse=True)
    assert torch.equal(forwards, backwards)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_emulated_tf32_random_mlp(activation: str, depth: int, make_case: MakeCase) -> None:
    model, features = _random_mlp(depth, activation, bias=depth % 2 == 1)
    case = make_case(model, (features,), dtype=torch.float32, num_samples=40, num_points=3)
    _emulated_tf32_both_orders(case)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONV_NETS))
def test_emulated_tf32_conv_net(name: str, make_case: MakeCase) -> None:
    model, shape = _conv_net(name)
    _emulated_tf32_both_orders(make_case(model, shape, dtype=torch.float32, num_samples=37))


@pytest.mark.parametrize("lenet", LENETS, ids=LENET_IDS)
def test_emulated_tf32_lenet5(lenet: tuple, make_case: MakeCase) -> None:
    model, shape = _lenet(lenet)
    case = make_case(model, shape, dtype=torch.float32, num_samples=21, num_points=2)
    if _plan(model, shape, 21, scalar_bytes=4, tf32=True).samples == 0:
        # TF32 tiles hold 16 samples at least: a 3-channel LeNet-5 (272 KB) does not fit.
        assert shape[0] == 3
        with pytest.raises(BackendUnavailableError):
            emulated_tiled_sweep(*case, precision="tf32")
        return
    _emulated_tf32_both_orders(case)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tile",
    [
        TileOptions(samples=16, threads=32),
        TileOptions(samples=32, threads=96),
        TileOptions(samples=48),
    ],
    ids=str,
)
@pytest.mark.parametrize("num_samples", [1, 15, 17, 40])
def test_emulated_tf32_tiles_and_probe_counts(
    tile: TileOptions, num_samples: int, make_case: MakeCase
) -> None:
    """One or two 16-sample row tiles per warp item, partial last tiles, one or more warps."""
    torch.manual_seed(13)
    model = LeNet5(input_size=16, padding=1, num_outputs=11)
    case = make_case(model, (1, 16, 16), dtype=torch.float32, num_samples=num_samples, num_points=2)
    _emulated_tf32_both_orders(case, tile)


def test_tf32_plans_run_16_sample_tiles_of_float32() -> None:
    model, shape = LeNet5(), (1, 28, 28)
    plan = _plan(model, shape, 100, scalar_bytes=4, tf32=True)
    assert plan.tf32 and plan.samples % 16 == 0
    assert _plan(model, shape, 3, scalar_bytes=4, tf32=True).samples == 16
    with pytest.raises(ValueError, match="float32"):
        _plan(model, shape, 100, scalar_bytes=8, tf32=True)
    with pytest.raises(ValueError, match="16"):
        _plan(model, shape, 100, TileOptions(samples=8), scalar_bytes=4, tf32=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "bf16"}, "not known"),
        ({"precision": "tf32"}, "CUDA"),
        ({"precision": "tf32", "dtype": torch.float64}, "float32"),
    ],
)
def test_bad_precision_is_refused(kwargs: dict, match: str, make_case: MakeCase) -> None:
    dtype = kwargs.pop("dtype", torch.float32)
    case = make_case(mlp([3, 4, 1]), (3,), dtype=dtype)
    with pytest.raises(InputError, match=match):
        genni_ext.sweep(*case, **kwargs)


def test_tf32_options_are_checked_before_the_kernel(make_case: MakeCase) -> None:
    case = make_case(mlp([3, 4, 1]), (3,), dtype=torch.float32)
    with pytest.raises(InputError, match="transposed"):
        emulated_tiled_sweep(*case, tile=TileOptions(layout=1), precision="tf32")
    with pytest.raises(InputError, match="multiple of 16"):
        emulated_tiled_sweep(*case, tile=TileOptions(samples=24), precision="tf32")


def test_torch_precision_sets_and_restores_torch_flags() -> None:
    from genni_ext._validate import torch_precision

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    new_api = hasattr(matmul, "fp32_precision")  # torch >= 2.9; mixing the two APIs raises

    def flags() -> tuple[object, object]:
        if new_api:
            return matmul.fp32_precision, cudnn.conv.fp32_precision
        return matmul.allow_tf32, cudnn.allow_tf32

    tf32, full = (("tf32", "tf32"), ("ieee", "ieee")) if new_api else ((True, True), (False, False))
    before = flags()
    with torch_precision("tf32"):
        assert flags() == tf32
    with torch_precision("full"):
        assert flags() == full
    assert flags() == before


# --- the plan and the schedule ------------------------------------------------------------


def _plan(
    model: nn.Module,
    shape: tuple[int, ...],
    num_samples: int,
    tile: TileOptions | None = None,
    scalar_bytes: int = 8,
    tf32: bool = False,
) -> _C.TilePlan:
    """The tiled plan on an H100/H200's shared memory."""
    program = lower(model, shape)
    ext = fused._extension()
    options = tile or TileOptions()
    return ext.tile_plan(
        program.native, num_samples, scalar_bytes, options.samples, options.threads,
        options.max_lanes, options.layout, tf32, fused.HOPPER_SMEM_LIMIT,
        fused.HOPPER_SMEM_PER_SM,
    )  # fmt: skip


def _schedule(model: nn.Module, shape: tuple[int, ...], plan: _C.TilePlan) -> list[dict]:
    return fused._extension().tile_schedule(lower(model, shape).native, plan, "float32")


def test_lenet5_plan_fuses_conv_activation_and_pool() -> None:
    """LeNet-5's two conv blocks run as two steps each (conv + ReLU + max pool in one), its
    small layers are staged in shared memory and its first Linear (48,000 weights) is not."""
    model, shape = LeNet5(), (1, 28, 28)
    program = lower(model, shape)
    plan = _plan(model, shape, 8192, scalar_bytes=4)
    assert plan.samples % 8 == 0 and plan.smem_bytes <= fused.HOPPER_SMEM_LIMIT
    assert not plan.params_in_shared
    steps = _schedule(model, shape, plan)
    kinds = [OP_NAMES[int(program.ops[step["op"], 0])] for step in steps]
    assert kinds == ["conv2d", "conv2d", "linear", "linear", "linear"]
    assert [step["pool"] >= 0 for step in steps] == [True, True, False, False, False]
    assert [step["staged"] for step in steps] == [True, True, False, False, True]


def test_overlapping_pool_is_not_fused() -> None:
    """Windows that overlap (stride < kernel) would compute conv outputs twice: the pools
    run as steps of their own."""
    model, shape = _conv_net("overlapping_padded_pools")
    steps = _schedule(model, shape, _plan(model, shape, 4))
    assert all(step["pool"] < 0 for step in steps)
    assert len(steps) == 5  # conv + tanh, max pool, conv + relu, avg pool, linear


def test_tile_size_depends_on_the_probes_not_the_grid() -> None:
    """The plan takes no grid size, so every chunking of a grid runs the same tiles; it
    takes no more samples than N needs and fits the shared memory it plans for."""
    model, shape = _conv_net("wide_activation")
    small = _plan(model, shape, 5)
    large = _plan(model, shape, 5000)
    assert small.samples == 8 and small.tiles == 1
    assert large.samples >= small.samples and large.samples % 8 == 0
    for plan in (small, large):
        assert plan.smem_bytes <= fused.HOPPER_SMEM_LIMIT


def test_a_model_too_wide_for_shared_memory_has_no_tile() -> None:
    """A 3 x 224 x 224 input does not fit 8 samples in shared memory: no tiled plan (auto
    then runs the reference kernel on a GPU)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 222 * 222, 1))
    assert _plan(model, (3, 224, 224), 100, scalar_bytes=4).samples == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("samples", 12),
        ("threads", 48),
        ("threads", 512),
        ("max_lanes", 3),
        ("layout", 3),
    ],
)
def test_bad_tile_options_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field.replace("samples", "tile samples")):
        _plan(mlp([3, 4, 1]), (3,), 10, TileOptions(**{field: value}))


def test_a_plan_the_kernel_would_misrun_is_refused(make_case: MakeCase) -> None:
    """Lanes over a fused pooling step's register cap, or not dividing the tile: refused."""
    model, shape = LeNet5(input_size=16, padding=1), (1, 16, 16)
    case = make_case(model, shape, dtype=torch.float32, num_samples=8, num_points=1)
    program = lower(model, shape)
    ext = fused._extension()
    plan = _plan(model, shape, 8, scalar_bytes=4)
    for lanes in (8, 3):
        fields = dict(plan.as_dict(), lanes=[lanes if value else 0 for value in plan.lanes])
        with pytest.raises(ValueError, match="lanes"):  # lanes 3 already in from_dict
            bad = ext.TilePlan.from_dict(fields)
            ext.sweep_tile_emulated(
                program.native, "float32",
                *(t.data_ptr() for t in case[1:]), program.num_params, 2, 1, 8, bad,
                torch.empty(1, dtype=torch.float64).data_ptr(), False,
            )  # fmt: skip


# --- the kernel on a GPU --------------------------------------------------------------------


def _to_cuda(case: Case) -> Case:
    model, *tensors = case
    return (model.cuda(), *(tensor.cuda() for tensor in tensors))  # type: ignore[return-value]


def _cuda_fused(case: Case, **options: object) -> torch.Tensor:
    model, center, directions, coeffs, inputs, targets = case
    program = lower(model, tuple(inputs.shape[1:]))
    return fused_sweep(
        program,
        center,
        directions,
        coeffs,
        inputs,
        targets,
        num_threads=None,
        batch_points=options.pop("batch_points", None),  # type: ignore[arg-type]
        progress=False,
        **options,  # type: ignore[arg-type]
    )


def _against_torch(
    cpu_case: Case, check_j: CheckJ, kernel: str = "tiled", **options: object
) -> torch.Tensor:
    """The CUDA kernel (tiled unless said) equals torch's float64 J on the CPU."""
    got = _cuda_fused(_to_cuda(cpu_case), cuda_kernel=kernel, **options)
    assert got.device.type == "cuda"
    check_j(got.cpu(), _torch(cpu_case), cpu_case)
    return got


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_random_mlp(
    activation: str, depth: int, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    model, features = _random_mlp(depth, activation, bias=depth % 2 == 0)
    _against_torch(
        make_case(model, (features,), dtype=dtype, num_samples=300, num_points=20), check_j
    )


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_NETS))
def test_cuda_conv_net(name: str, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ) -> None:
    model, shape = _conv_net(name)
    _against_torch(make_case(model, shape, dtype=dtype, num_samples=77, num_points=30), check_j)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lenet", LENETS, ids=LENET_IDS)
def test_cuda_lenet5(
    lenet: tuple, dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    model, shape = _lenet(lenet)
    channels = shape[0]
    case = make_case(model, shape, dtype=dtype, num_samples=100, num_points=12)
    # "auto": the tiled kernel, except for 3-channel inputs in float64, whose smallest tile
    # does not fit a block's shared memory (test_emulated_lenet5): the reference kernel.
    fits = cuda_tile_plan(lower(model, shape), 100, dtype, device=torch.device("cuda"))
    assert (fits is None) == (channels == 3 and dtype == torch.float64)
    _against_torch(case, check_j, kernel="auto")


@needs_cuda
@pytest.mark.parametrize("tile", TILE_OPTIONS, ids=str)
def test_cuda_tile_options(tile: TileOptions, make_case: MakeCase, check_j: CheckJ) -> None:
    torch.manual_seed(9)
    model = LeNet5(input_size=16, padding=1, num_outputs=3)
    case = make_case(model, (1, 16, 16), dtype=torch.float32, num_samples=200, num_points=9)
    _against_torch(case, check_j, tile=tile)


@needs_cuda
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("num_samples", [1, 7, 8, 9, 2047, 2048, 2049])
def test_cuda_directions_and_probe_counts(
    m: int, num_samples: int, make_case: MakeCase, check_j: CheckJ
) -> None:
    """m = 1..5, and N around the tile sizes of the two-neuron net (2048) and of 8."""
    torch.manual_seed(m)
    case = make_case(TwoNeuronNet(), (1,), m=m, num_samples=num_samples, num_points=33, seed=m)
    _against_torch(case, check_j)


@needs_cuda
@pytest.mark.parametrize("num_points", [1, 2, 131, 1000])
def test_cuda_grid_sizes_and_launches(
    num_points: int, make_case: MakeCase, check_j: CheckJ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G from 1 to beyond one launch (the parameter budget cut to 50 grid points)."""
    model, shape = _conv_net("strided_nonsquare")
    case = make_case(model, shape, num_samples=50, num_points=num_points)
    whole = _against_torch(case, check_j)
    num_params = case[1].numel()
    monkeypatch.setattr(fused, "_CUDA_PARAM_BYTES", 50 * num_params * 8)
    assert torch.equal(_against_torch(case, check_j), whole)


@needs_cuda
def test_cuda_chunks_streams_and_repeats_are_bitwise_equal(make_case: MakeCase) -> None:
    torch.manual_seed(10)
    model = LeNet5(input_size=16, padding=1, num_outputs=3)
    case = _to_cuda(
        make_case(model, (1, 16, 16), dtype=torch.float32, num_samples=333, num_points=40)
    )
    first = _cuda_fused(case)
    assert torch.equal(_cuda_fused(case), first)
    assert torch.equal(_cuda_fused(case, batch_points=7), first)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_stream = _cuda_fused(case)
    stream.synchronize()
    assert torch.equal(on_stream, first)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_tiled_equals_the_reference_kernel(
    dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ
) -> None:
    torch.manual_seed(11)
    cpu_case = make_case(
        LeNet5(num_outputs=10), (1, 28, 28), dtype=dtype, num_samples=130, num_points=16
    )
    case = _to_cuda(cpu_case)
    tiled = _cuda_fused(case, cuda_kernel="tiled")
    reference = _cuda_fused(case, cuda_kernel="reference")
    check_j(tiled.cpu(), reference.cpu(), cpu_case)


@needs_cuda
def test_cuda_auto_kernel_falls_back_where_the_tile_does_not_fit(make_case: MakeCase) -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 222 * 222, 1))
    program = lower(model, (3, 224, 224))
    assert cuda_tile_plan(program, 10, torch.float32, device=torch.device("cuda")) is None
    with pytest.raises(BackendUnavailableError, match="reference"):
        cuda_tile_plan(program, 10, torch.float32, "tiled", device=torch.device("cuda"))


@needs_cuda
def test_cuda_auto_backend_follows_the_measured_rule(make_case: MakeCase, check_j: CheckJ) -> None:
    """auto: the tiled kernel where it fits; where it does not, torch.func for conv nets and
    the reference kernel for MLPs (the rule in fused.cuda_auto_choice)."""
    lenet = LeNet5()
    probes = torch.randn(64, 1, 28, 28, device="cuda")
    assert "tiled kernel" in genni_ext.explain_backend(lenet.cuda(), probes)
    wide_conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 222 * 222, 1))
    wide_probes = torch.randn(4, 3, 224, 224, device="cuda")
    assert genni_ext.explain_backend(wide_conv.cuda(), wide_probes).startswith("torch")
    torch.manual_seed(12)
    wide_mlp = mlp([40000, 3, 1])
    explanation = genni_ext.explain_backend(wide_mlp.cuda(), torch.randn(4, 40000, device="cuda"))
    assert explanation.startswith("fused (cuda)") and "reference kernel" in explanation
    cpu_case = make_case(mlp([40000, 3, 1]), (40000,), num_samples=20, num_points=3)
    check_j(genni_ext.sweep(*_to_cuda(cpu_case)).cpu(), _torch(cpu_case), cpu_case)


@needs_cuda
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_tf32_random_mlp(activation: str, depth: int, make_case: MakeCase) -> None:
    model, features = _random_mlp(depth, activation, bias=depth % 2 == 1)
    case = make_case(model, (features,), dtype=torch.float32, num_samples=300, num_points=20)
    check_tf32(_cuda_fused(_to_cuda(case), precision="tf32"), case)


@needs_cuda
@pytest.mark.parametrize("name", list(CONV_NETS))
def test_cuda_tf32_conv_net(name: str, make_case: MakeCase) -> None:
    model, shape = _conv_net(name)
    case = make_case(model, shape, dtype=torch.float32, num_samples=77, num_points=30)
    check_tf32(_cuda_fused(_to_cuda(case), precision="tf32"), case)


@needs_cuda
@pytest.mark.parametrize("num_samples", [1, 16, 17, 300])
@pytest.mark.parametrize("lenet", LENETS[:2], ids=LENET_IDS[:2])
def test_cuda_tf32_lenet5(lenet: tuple, num_samples: int, make_case: MakeCase) -> None:
    model, shape = _lenet(lenet)
    case = make_case(model, shape, dtype=torch.float32, num_samples=num_samples, num_points=12)
    got = _cuda_fused(_to_cuda(case), precision="tf32")
    check_tf32(got, case)
    assert torch.equal(_cuda_fused(_to_cuda(case), precision="tf32", batch_points=5), got)


@needs_cuda
def test_cuda_tf32_through_sweep_and_the_torch_backend(make_case: MakeCase) -> None:
    """sweep(precision="tf32"): auto takes the tiled TF32 kernel for an MLP and torch.func
    (cuDNN in TF32) for LeNet-5, as measured; fused and torch within TF32_TOLERANCE."""
    torch.manual_seed(14)
    case = make_case(LeNet5(), (1, 28, 28), dtype=torch.float32, num_samples=256, num_points=6)
    cuda_case = _to_cuda(case)
    explanation = genni_ext.explain_backend(cuda_case[0], cuda_case[4], precision="tf32")
    assert explanation.startswith("torch") and "TF32" in explanation
    check_tf32(genni_ext.sweep(*cuda_case, backend="fused", precision="tf32"), case)
    check_tf32(genni_ext.sweep(*cuda_case, precision="tf32"), case, twin=False)
    mlp_case = make_case(mlp([12, 64, 64, 1]), (12,), dtype=torch.float32, num_samples=256)
    mlp_cuda = _to_cuda(mlp_case)
    explanation = genni_ext.explain_backend(mlp_cuda[0], mlp_cuda[4], precision="tf32")
    assert explanation.startswith("fused (cuda)") and "TF32 tensor cores" in explanation
    check_tf32(genni_ext.sweep(*mlp_cuda, precision="tf32"), mlp_case)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_kernel_plans_once_for_all_chunks(
    dtype: torch.dtype, make_case: MakeCase, check_j: CheckJ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One engine call of 5 chunks (the last one shorter) makes one CudaPlan, for the
    largest chunk, and every chunk runs on it with the same J as one chunk of them all."""
    torch.manual_seed(12)
    cpu_case = make_case(mlp([6, 16, 1]), (6,), dtype=dtype, num_samples=300, num_points=27)
    case = _to_cuda(cpu_case)
    plans: list[_C.CudaPlan] = []
    original = _C.cuda_plan

    def counted(*args: object) -> _C.CudaPlan:
        plans.append(original(*args))
        return plans[-1]

    monkeypatch.setattr(_C, "cuda_plan", counted)
    chunked = _cuda_fused(case, cuda_kernel="reference", batch_points=6)
    assert len(plans) == 1 and isinstance(plans[0], _C.CudaPlan)
    whole = _cuda_fused(case, cuda_kernel="reference")
    assert torch.equal(chunked, whole)
    check_j(whole.cpu(), _cuda_fused(case, cuda_kernel="tiled").cpu(), cpu_case)
