"""Small argument checks and helpers shared by the public functions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float64)


def positive_int(value: object, argument: str) -> int:
    """Return ``value`` if it is a positive int (not a bool), else raise InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{argument} must be a positive int, got {value!r}")
    return value


def float_tensor(name: str, value: object) -> torch.Tensor:
    """Reject what is not a dense real float32/float64 tensor with data."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise InputError(f"{name} is a {value.layout} tensor; pass a dense one ({name}.to_dense())")
    if value.is_quantized:
        raise InputError(f"{name} is quantized; pass {name}.dequantize()")
    if value.is_complex():
        raise InputError(f"{name} is complex ({value.dtype}); genni_ext needs real values")
    if value.dtype not in FLOAT_DTYPES:
        raise InputError(
            f"{name} has dtype {value.dtype}; use float32 or float64 "
            f"({name}.float() or {name}.double())"
        )
    if value.device.type == "meta":
        raise InputError(f"{name} is on the meta device and has no values")
    return value.detach()


def contiguous_finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Reject broadcast views, make other strided tensors contiguous, reject NaN/Inf."""
    for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride(), strict=True)):
        if stride == 0 and size > 1:
            raise InputError(
                f"{name} is an expanded view (stride 0 in dimension {dim} of size {size}), so "
                f"its entries repeat; if that is intended, pass {name}.contiguous() or "
                f"{name}.clone()"
            )
    tensor = tensor.contiguous()
    if not bool(torch.isfinite(tensor).all()):
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise InputError(f"{name} contains {kind}; every value must be finite")
    return tensor


def device_label(device: torch.device) -> str:
    """What results on ``device`` are reproducible across: "cpu", or "cuda (<GPU name>)"
    (devices of one GPU model compute bitwise the same J; other models may differ)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@contextlib.contextmanager
def torch_threads(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """Use ``num_threads`` intra-op threads for CPU work inside the block, then restore."""
    if num_threads is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
