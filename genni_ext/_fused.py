"""Thin adapter between validated torch tensors and the compiled engine ``genni_ext._C``.

The extension takes raw addresses (``tensor.data_ptr()``) and knows no torch types, so it
builds without torch and is not tied to one torch version. This module checks what the
extension cannot (dtype, device, contiguity), decides whether the affine first-layer
shortcut pays, cuts the grid into chunks for progress and interruption, and on CUDA
allocates scratch with torch's caching allocator and launches on the current stream.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Literal

import torch
from tqdm.auto import tqdm

from .errors import BackendUnavailableError, InputError
from .lowering import Program

FirstLayer = Literal["auto", "affine", "direct"]

# Work per call into the engine when progress is shown: enough to amortise the call,
# small enough that the bar moves and Ctrl-C is honoured between chunks.
_FLOPS_PER_CHUNK = 2e9


def _extension() -> ModuleType:
    try:
        from . import _C
    except ImportError as error:  # pragma: no cover - only without a build
        raise BackendUnavailableError(
            f"the compiled engine genni_ext._C is not importable ({error}); "
            "reinstall with `pip install .` from the source tree"
        ) from error
    return _C


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
            return "this install was built without CUDA (nvcc was not found at build time)"
        if info["cuda_devices"] == 0:
            return "the CUDA kernel is built but no CUDA device is visible"
        return None
    return f"the fused engine runs on cpu and cuda tensors, not on {device.type}"


def uses_affine_first_layer(program: Program, m: int, first_layer: FirstLayer = "auto") -> bool:
    """Whether to combine m + 1 precomputed first-layer responses instead of running it.

    Combining costs m multiply-adds per first-layer output but streams m + 1 stored
    responses from memory; running the layer costs its fan-in from cache. On the CPU the
    shortcut paid from a fan-in of about 10 (m + 1) on (1.3x for a 64-input MLP, 4-6x for
    784 inputs) and tied or lost below (LeNet-5's 25-tap first conv: 0.7-1.0x), so "auto"
    takes it from there.
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
    chunk_size: int | None,
    progress: bool,
    first_layer: FirstLayer = "auto",
) -> torch.Tensor:
    """J for every row of ``coeffs`` (float64 [G], on the inputs' device) on the fused engine.

    The tensors must be validated already (genni_ext.sweep does it): one dtype, float32 or
    float64, one device, C-contiguous.
    """
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

    ext = _extension()
    num_points, m = coeffs.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    if inputs[0].numel() != program.input_size or targets.shape[1] != program.output_size:
        raise InputError(
            f"the model takes {program.input_size} input values and gives {program.output_size} "
            f"outputs per sample, but inputs have {inputs[0].numel()} and targets "
            f"{targets.shape[1]}"
        )
    rows, slopes = program.ops.tolist(), program.slopes.tolist()
    dtype_name = "float32" if dtype == torch.float32 else "float64"
    affine = uses_affine_first_layer(program, m, first_layer)
    step = chunk_size or _chunk_points(program, num_samples, num_points, progress)
    loss = torch.empty(num_points, dtype=torch.float64, device=device)
    common = (center.data_ptr(), directions.data_ptr())
    data = (inputs.data_ptr(), targets.data_ptr())

    with tqdm(total=num_points, disable=not progress, unit="pt", desc="sweep (fused)") as bar:
        for start in range(0, num_points, step):
            stop = min(num_points, start + step)
            chunk = coeffs[start:stop]
            if device.type == "cpu":
                ext.sweep_cpu(
                    rows, slopes, dtype_name, *common, chunk.data_ptr(), *data,
                    num_params, m, stop - start, num_samples, affine,
                    loss[start:stop].data_ptr(), num_threads or torch.get_num_threads(),
                )  # fmt: skip
            else:
                loss[start:stop] = _sweep_cuda_chunk(
                    ext, rows, slopes, dtype_name, tensors, chunk, affine
                )
            bar.update(stop - start)
    return loss


def _sweep_cuda_chunk(
    ext: ModuleType,
    rows: list[list[int]],
    slopes: list[float],
    dtype_name: str,
    tensors: dict[str, torch.Tensor],
    chunk: torch.Tensor,
    affine: bool,
) -> torch.Tensor:
    """One chunk of grid points on the current CUDA stream; returns J [chunk] (float64)."""
    center, inputs = tensors["center"], tensors["inputs"]
    num_points, m = chunk.shape
    num_samples, num_params = inputs.shape[0], center.numel()
    device = center.device
    with torch.cuda.device(device):
        plan = ext.cuda_plan(
            rows, slopes, num_params, m, num_points, num_samples, center.element_size(), affine
        )
        partial = torch.empty(
            (num_points, plan["sample_blocks"]), dtype=torch.float64, device=device
        )
        scratch = torch.empty(plan["scratch_bytes"], dtype=torch.uint8, device=device)
        responses = torch.empty(max(1, plan["affine_bytes"]), dtype=torch.uint8, device=device)
        ext.sweep_cuda(
            rows, slopes, dtype_name, center.data_ptr(), tensors["directions"].data_ptr(),
            chunk.data_ptr(), inputs.data_ptr(), tensors["targets"].data_ptr(), num_params, m,
            num_points, num_samples, plan, partial.data_ptr(), scratch.data_ptr(),
            responses.data_ptr(), torch.cuda.current_stream(device).cuda_stream,
        )  # fmt: skip
        return partial.sum(dim=1) / num_samples
