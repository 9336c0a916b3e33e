"""Thin adapter between validated torch tensors and the compiled engine ``genni_ext._C``.

The extension takes raw addresses (``tensor.data_ptr()``) and knows no torch types, so it
builds without torch and is not tied to one torch version. This module checks what the
extension cannot (dtype, device, contiguity), decides whether the affine first-layer
shortcut pays, cuts the grid into chunks for progress and interruption, and on CUDA
allocates scratch with torch's caching allocator and launches on the current stream.

CUDA has two kernels (csrc/cuda/sweep_cuda.cu): "tiled" keeps a tile of samples'
activations in shared memory (the default wherever its smallest tile fits), "reference"
runs one sample per thread with activations in global memory (the twin the tiled kernel
is tested against, and the path for models whose activations do not fit on chip).

On the CPU the engine runs on :func:`cpu_threads` threads: the calling thread and workers
of the engine's own pool (csrc/cpu/thread_pool.h), which take the next item of a step
whenever they run and sleep when idle. No thread waits for another that the scheduler
has parked, so the defaults keep their speed on a machine where other work runs, with no
environment variable (benchmarks/README.md, "Threads under load").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, get_args

import torch
from tqdm.auto import tqdm

import genni_ext._C as _C
from genni_ext._validate import PRECISIONS, Precision
from genni_ext.engine.lowering import CONV2D, Program
from genni_ext.errors import BackendUnavailableError, InputError

FirstLayer = Literal["auto", "affine", "direct"]
CudaKernel = Literal["auto", "tiled", "reference"]


@dataclass(frozen=True)
class TileOptions:
    """Overrides of the tiled CUDA kernel's plan (0: the engine's default), for tuning.

    ``samples`` per tile (a multiple of 8), ``threads`` per block (a multiple of 32, at most
    256), ``max_lanes``: the most samples one thread's register tile takes (1, 2, 4 or 8),
    ``layout``: of the weights, 1 torch's or 2 transposed (outputs contiguous, so that a
    register tile's weights load as vectors); the default is transposed for float32 and
    torch's for float64, the faster of the two for each on an H200 (benchmarks/README.md).
    """

    samples: int = 0
    threads: int = 0
    max_lanes: int = 0
    layout: int = 0


@dataclass(frozen=True)
class EnginePlan:
    """How the fused engine runs a sweep, decided once for all its chunks: the first-layer
    form ("affine", "direct", or "auto" to choose for the grid's number of directions), the
    tiled CUDA kernel's plan (None on the CPU, and on CUDA for the reference kernel) and the
    precision. The front door's Decision carries one; :func:`plan_fused_sweep` makes one for
    direct callers of :func:`fused_sweep`."""

    first_layer: FirstLayer
    tile_plan: _C.TilePlan | None
    precision: Precision


# Work per call into the engine when progress is shown: enough to amortise the call,
# small enough that the bar moves and Ctrl-C is honoured between chunks.
_FLOPS_PER_CHUNK = 2e9
# Device memory for the grid points' parameters that one tiled CUDA launch builds.
_CUDA_PARAM_BYTES = 512 << 20


def _extension() -> ModuleType:
    """The compiled engine (benchmarks/test_threads.py swaps in another build here)."""
    return _C


def cpu_threads(num_threads: int | None) -> int:
    """Threads a CPU sweep runs on: ``num_threads``, else torch's intra-op thread count.

    ``torch.get_num_threads()`` is the machine's physical cores unless ``OMP_NUM_THREADS``
    or ``torch.set_num_threads`` says otherwise, so one setting caps torch and the engine.
    It is a ceiling: each step of a sweep starts on the calling thread alone, and the
    workers join only when it lasts longer than a wake-up is worth (``kWakeDelay`` in
    csrc/cpu/thread_pool.h), so a sweep of a few points wakes no thread. The workers are
    started once per process, when first needed, and then reused.
    """
    return num_threads or torch.get_num_threads()


def fused_unavailable_reason(device: torch.device) -> str | None:
    """Why the fused engine cannot run on ``device`` here, or None when it can."""
    try:
        info = _extension().build_info()
    except BackendUnavailableError as error:
        return str(error)
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not info["cuda"]:
            return f"this install was built without CUDA: {info['cuda_note']}"
        if info["cuda_devices"] == 0:
            return "the CUDA kernel is built but no CUDA device is visible"
        return None
    return f"the fused engine runs on cpu and cuda tensors, not on {device.type}"


def uses_affine_first_layer(program: Program, m: int, first_layer: FirstLayer = "auto") -> bool:
    """Whether to combine m + 1 precomputed first-layer responses instead of running it.

    Combining costs m multiply-adds per first-layer output but streams m + 1 stored
    responses from memory; running the layer costs its fan-in from cache. So the shortcut
    pays only where the fan-in is large against m + 1: "auto" takes it from a fan-in of
    10 (m + 1), below which it was no faster on the CPU (benchmarks/README.md, "First
    layer"; the ratios are in benchmarks/gpu/NOTES.md, "Moved from the code").
    """
    if first_layer == "direct" or not program.first_is_parametric:
        return False
    if first_layer == "affine":
        return True
    return program.first_fan_in >= 10 * (m + 1)


def _chunk_points(program: Program, num_samples: int, num_points: int, progress: bool) -> int:
    if not progress:
        return num_points
    flops_per_point = max(1, program.flops_per_sample) * num_samples
    return max(1, min(num_points, math.ceil(_FLOPS_PER_CHUNK / flops_per_point)))


def fused_sweep(
    program: Program,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_threads: int | None,
    batch_points: int | None,
    progress: bool,
    first_layer: FirstLayer = "auto",
    cuda_kernel: CudaKernel = "auto",
    tile: TileOptions | None = None,
    precision: Precision = "full",
    plan: EnginePlan | None = None,
) -> torch.Tensor:
    """J for every row of ``coeffs`` (float64 [G], on the inputs' device) on the fused engine.

    The tensors must be validated already (genni_ext.sweep does it): one dtype, float32 or
    float64, one device, C-contiguous. On the CPU it runs on ``cpu_threads(num_threads)``
    threads, with J bitwise the same for any number. ``first_layer`` applies to the CPU and
    the reference CUDA kernel; ``cuda_kernel`` and ``tile`` choose and tune the CUDA kernel;
    ``precision="tf32"`` runs its Linear and Conv2d layers on tensor cores (float32 on CUDA,
    tiled kernel only).

    ``plan``: what the front door decided (its Decision's), trusted as it is: nothing is
    checked or planned again, and ``first_layer``, ``cuda_kernel``, ``tile`` and
    ``precision`` are not read. Without it (a direct call) :func:`plan_fused_sweep` checks
    the tensors and makes the plan from those arguments.
    """
    if plan is None:
        plan = plan_fused_sweep(
            program, center, directions, coeffs, inputs, targets,
            first_layer=first_layer, cuda_kernel=cuda_kernel, tile=tile, precision=precision,
        )  # fmt: skip
    ext = _extension()
    native = program.native
    device = center.device
    num_points, m = coeffs.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    dtype_name = "float32" if center.dtype == torch.float32 else "float64"
    affine = uses_affine_first_layer(program, m, plan.first_layer)
    step = batch_points or _chunk_points(program, num_samples, num_points, progress)
    tile_plan = plan.tile_plan if device.type == "cuda" else None
    if tile_plan is not None:
        per_point = tile_plan.param_elems * center.element_size()
        step = min(step, max(1, _CUDA_PARAM_BYTES // per_point))
    loss = torch.empty(num_points, dtype=torch.float64, device=device)
    tensors = _Tensors(center, directions, inputs, targets, native, dtype_name)
    reference = None
    if device.type == "cuda" and tile_plan is None:
        reference = _plan_reference(ext, tensors, m, min(step, num_points), affine)

    with tqdm(total=num_points, disable=not progress, unit="pt", desc="sweep (fused)") as bar:
        for start in range(0, num_points, step):
            stop = min(num_points, start + step)
            chunk = coeffs[start:stop]
            if device.type == "cpu":
                ext.sweep_cpu(
                    native, dtype_name, center.data_ptr(), directions.data_ptr(),
                    chunk.data_ptr(), inputs.data_ptr(), targets.data_ptr(), num_params, m,
                    stop - start, num_samples, affine, loss[start:stop].data_ptr(),
                    cpu_threads(num_threads),
                )  # fmt: skip
            elif tile_plan is not None:
                loss[start:stop] = _sweep_cuda_tiled_chunk(ext, tensors, chunk, tile_plan)
            else:
                loss[start:stop] = _sweep_cuda_chunk(ext, tensors, chunk, reference)
            bar.update(stop - start)
    return loss


def plan_fused_sweep(
    program: Program,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    first_layer: FirstLayer = "auto",
    cuda_kernel: CudaKernel = "auto",
    tile: TileOptions | None = None,
    precision: Precision = "full",
) -> EnginePlan:
    """The checks and the plan of a direct :func:`fused_sweep` call, which the front door
    makes once per sweep instead: one dtype (float32 or float64), device and contiguous
    layout for the tensors, the engine available on their device, the precision, the
    model's input and output sizes, and on CUDA the tiled kernel's plan."""
    tensors = {
        "center": center,
        "directions": directions,
        "coeffs": coeffs,
        "inputs": inputs,
        "targets": targets,
    }
    dtype, device = center.dtype, center.device
    for name, tensor in tensors.items():
        if tensor.dtype != dtype or tensor.device != device or not tensor.is_contiguous():
            raise InputError(
                f"{name} must be a contiguous {dtype} tensor on {device}; "
                "pass it through genni_ext.sweep, which validates and converts"
            )
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"the fused engine computes in float32 or float64, not {dtype}")
    reason = fused_unavailable_reason(device)
    if reason is not None:
        raise BackendUnavailableError(f"the fused backend cannot run: {reason}")
    check_precision(precision, dtype, device)
    if inputs[0].numel() != program.input_size or targets.shape[1] != program.output_size:
        raise InputError(
            f"the model takes {program.input_size} input values and gives {program.output_size} "
            f"outputs per sample, but inputs have {inputs[0].numel()} and targets "
            f"{targets.shape[1]}"
        )
    tile_plan = None
    if device.type == "cuda":
        tile_plan = cuda_tile_plan(
            program, inputs.shape[0], dtype, cuda_kernel, tile, device, precision
        )
        check_tf32_plan(tile_plan, precision)
    return EnginePlan(first_layer, tile_plan, precision)


def check_tf32_plan(tile_plan: _C.TilePlan | None, precision: str) -> None:
    """BackendUnavailableError where TF32 was asked for and the tiled kernel cannot run."""
    if tile_plan is None and precision == "tf32":
        raise BackendUnavailableError(
            "precision='tf32' runs on the tiled CUDA kernel, and this model's smallest tile "
            "does not fit in shared memory; use backend='torch' (cuBLAS/cuDNN in TF32)"
        )


@dataclass(frozen=True)
class _Tensors:
    """What every CUDA chunk of one sweep shares: its tensors, program and scalar type."""

    center: torch.Tensor
    directions: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    native: _C.Program
    dtype_name: str


@dataclass(frozen=True)
class _ReferenceLaunch:
    """The reference CUDA kernel's plan for one sweep and the device buffers it sizes."""

    plan: _C.CudaPlan
    scratch: torch.Tensor
    responses: torch.Tensor


def _plan_reference(
    ext: ModuleType, tensors: _Tensors, m: int, points: int, affine: bool
) -> _ReferenceLaunch:
    """Planned once per sweep for its largest chunk (``points`` grid points): the kernel
    strides over its items, so the plan and buffers serve every smaller chunk as well."""
    center, inputs = tensors.center, tensors.inputs
    device = center.device
    with torch.cuda.device(device):
        plan = ext.cuda_plan(
            tensors.native, m, points, inputs.shape[0], center.element_size(), affine
        )
        scratch = torch.empty(plan.scratch_bytes, dtype=torch.uint8, device=device)
        responses = torch.empty(max(1, plan.affine_bytes), dtype=torch.uint8, device=device)
    return _ReferenceLaunch(plan, scratch, responses)


def _sweep_cuda_chunk(
    ext: ModuleType, tensors: _Tensors, chunk: torch.Tensor, launch: _ReferenceLaunch
) -> torch.Tensor:
    """One chunk of grid points on the current CUDA stream; returns J [chunk] (float64)."""
    center, inputs = tensors.center, tensors.inputs
    num_points, m = chunk.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    device = center.device
    with torch.cuda.device(device):
        partial = torch.empty(
            (num_points, launch.plan.sample_blocks), dtype=torch.float64, device=device
        )
        ext.sweep_cuda(
            tensors.native, tensors.dtype_name, center.data_ptr(),
            tensors.directions.data_ptr(), chunk.data_ptr(), inputs.data_ptr(),
            tensors.targets.data_ptr(), num_params, m, num_points, num_samples, launch.plan,
            partial.data_ptr(), launch.scratch.data_ptr(), launch.responses.data_ptr(),
            torch.cuda.current_stream(device).cuda_stream,
        )  # fmt: skip
        return partial.sum(dim=1) / num_samples


def check_precision(precision: str, dtype: torch.dtype, device: torch.device) -> None:
    """InputError unless ``precision`` is known and can run in ``dtype`` on ``device``."""
    if precision not in PRECISIONS:
        raise InputError(
            f"precision={precision!r} is not known; use {' or '.join(map(repr, PRECISIONS))}"
        )
    if precision == "tf32" and (device.type != "cuda" or dtype != torch.float32):
        raise InputError(
            f"precision='tf32' runs float32 sweeps on CUDA tensor cores, not {dtype} on "
            f"{device.type}; use precision='full' (the dtype's own precision)"
        )


def cuda_auto_choice(
    program: Program,
    num_samples: int,
    dtype: torch.dtype,
    device: torch.device,
    precision: Precision = "full",
) -> tuple[bool, str]:
    """Whether ``backend="auto"`` runs the fused engine on this CUDA device, and why.

    The rule follows benchmarks/test_sweep_cuda.py (numbers in benchmarks/README.md, GPU
    section, and benchmarks/gpu/NOTES.md): the tiled kernel was faster than torch.func on
    every workload timed, so it runs wherever its tile fits. Where it does not, the
    reference kernel would run: slower than torch.func on LeNet-5, so networks with a Conv2d
    go to torch.func; on par or faster on MLPs, so they stay fused. In TF32 the tiled kernel
    was slower than torch.func in TF32 on LeNet-5, so conv nets go to torch.func; on the
    MLPs it was on par or faster, so they stay fused.
    """
    has_conv = bool((program.ops[:, 0] == CONV2D).any())
    if precision == "tf32" and has_conv:
        return False, (
            "precision='tf32' on a conv net: backend='auto' runs conv nets in TF32 on "
            "torch.func (cuDNN in TF32), not on the tiled kernel"
        )
    plan = cuda_tile_plan(program, num_samples, dtype, "auto", None, device, precision)
    if plan is not None:
        if plan.tf32:
            return True, (
                f"tiled kernel, TF32 tensor cores, {plan.samples} samples per tile (no "
                "Conv2d, and the tile fits in shared memory)"
            )
        return True, (
            f"tiled kernel, {plan.samples} samples per tile, {plan.threads} threads "
            "per block (the tile fits in shared memory)"
        )
    if precision == "tf32":
        return False, (
            "precision='tf32' runs on the tiled kernel, whose smallest tile does not fit in "
            "shared memory; torch.func runs with cuBLAS in TF32"
        )
    if has_conv:
        return False, (
            "the tiled kernel's smallest tile does not fit in shared memory, and "
            "backend='auto' runs conv nets on torch.func rather than the reference kernel"
        )
    return True, (
        "reference kernel (the tiled kernel's smallest tile does not fit in shared memory; "
        "backend='auto' keeps networks without a Conv2d on the reference kernel)"
    )


def cuda_tile_plan(
    program: Program,
    num_samples: int,
    dtype: torch.dtype,
    cuda_kernel: CudaKernel = "auto",
    tile: TileOptions | None = None,
    device: torch.device | None = None,
    precision: Precision = "full",
) -> _C.TilePlan | None:
    """The tiled CUDA kernel's plan, or None where the reference kernel runs instead.

    "auto" takes the tiled kernel wherever its smallest tile fits in shared memory;
    "tiled" raises BackendUnavailableError where it does not; "reference" returns None
    (and raises for precision="tf32", which only the tiled kernel runs).
    """
    if cuda_kernel not in get_args(CudaKernel):
        raise InputError(f"cuda_kernel={cuda_kernel!r}; use 'auto', 'tiled' or 'reference'")
    tf32 = precision == "tf32"
    if cuda_kernel == "reference":
        if tf32:
            raise InputError(
                "precision='tf32' runs on the tiled kernel, not cuda_kernel='reference'"
            )
        return None
    ext = _extension()
    with torch.cuda.device(device):
        limits = ext.cuda_limits()
    if tf32 and limits["compute_capability"] < 80:
        raise BackendUnavailableError(
            "precision='tf32' needs tensor cores with TF32 (compute capability 8.0 or newer); "
            f"this GPU has {limits['compute_capability'] / 10:.1f}"
        )
    plan = _tile_plan(
        ext, program, num_samples, torch.empty((), dtype=dtype).element_size(), tile,
        limits["smem_optin"], limits["smem_per_sm"], tf32=tf32,
    )  # fmt: skip
    if plan.samples > 0:
        return plan
    if cuda_kernel == "tiled":
        raise BackendUnavailableError(
            "the tiled CUDA kernel cannot hold the smallest tile of this model's activations in "
            f"{limits['smem_optin']} bytes of shared memory; use cuda_kernel='reference'"
        )
    return None


def _tile_plan(
    ext: ModuleType,
    program: Program,
    num_samples: int,
    scalar_bytes: int,
    tile: TileOptions | None,
    smem_limit: int,
    smem_per_sm: int,
    *,
    tf32: bool = False,
) -> _C.TilePlan:
    """The tiled kernel's plan for ``program`` (samples == 0 where no tile fits)."""
    options = tile or TileOptions()
    if tf32 and options.layout == 1:
        raise InputError("precision='tf32' runs the transposed weight layout; drop layout=1")
    if tf32 and options.samples % 16 != 0:
        raise InputError(
            f"precision='tf32' takes tiles of a multiple of 16 samples, not {options.samples}"
        )
    return ext.tile_plan(
        program.native, num_samples, scalar_bytes, options.samples, options.threads,
        options.max_lanes, options.layout, tf32, smem_limit, smem_per_sm,
    )  # fmt: skip


def _sweep_cuda_tiled_chunk(
    ext: ModuleType, tensors: _Tensors, chunk: torch.Tensor, plan: _C.TilePlan
) -> torch.Tensor:
    """One chunk of grid points on the tiled kernel; returns J [chunk] (float64)."""
    center, inputs = tensors.center, tensors.inputs
    num_points, m = chunk.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    device = center.device
    with torch.cuda.device(device):
        params = torch.empty((num_points, plan.param_elems), dtype=center.dtype, device=device)
        partial = torch.empty((num_points, plan.tiles), dtype=torch.float64, device=device)
        ext.sweep_cuda_tiled(
            tensors.native, tensors.dtype_name, center.data_ptr(),
            tensors.directions.data_ptr(), chunk.data_ptr(), inputs.data_ptr(),
            tensors.targets.data_ptr(), num_params, m, num_points, num_samples, plan,
            params.data_ptr(), partial.data_ptr(), torch.cuda.current_stream(device).cuda_stream,
        )  # fmt: skip
        return partial.sum(dim=1) / num_samples


# Opt-in shared memory per block of an H100/H200, less the kernel's static shared memory,
# and per multiprocessor: the limits the harness plans with, so that it runs the plans those
# GPUs run.
HOPPER_SMEM_LIMIT = 227 * 1024 - 8 * 8
HOPPER_SMEM_PER_SM = 228 * 1024


def emulate_tiled_sweep(
    program: Program,
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
    """J (float64 [G]) from the tiled CUDA kernel's block steps run on the CPU.

    Validated CPU tensors as for :func:`fused_sweep`. Threads run one after another
    between the kernel's barriers (in reverse order with ``reverse``), with shared memory
    poisoned with NaN before every tile. With ``precision="tf32"`` (float32) the TF32 steps
    run with their tensor-core multiply emulated on the same fragments.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not known; use 'full' or 'tf32'")
    ext = _extension()
    num_points, m = coeffs.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    plan = _tile_plan(
        ext, program, num_samples, center.element_size(), tile, smem_limit, HOPPER_SMEM_PER_SM,
        tf32=precision == "tf32",
    )  # fmt: skip
    if plan.samples == 0:
        raise BackendUnavailableError("the tile does not fit the shared memory limit")
    partial = torch.empty((num_points, plan.tiles), dtype=torch.float64)
    ext.sweep_tile_emulated(
        program.native, "float32" if center.dtype == torch.float32 else "float64",
        center.data_ptr(), directions.data_ptr(), coeffs.data_ptr(), inputs.data_ptr(),
        targets.data_ptr(), num_params, m, num_points, num_samples, plan, partial.data_ptr(),
        reverse,
    )  # fmt: skip
    return partial.sum(dim=1) / num_samples
