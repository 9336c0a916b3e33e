"""Small argument checks shared by the public functions."""

from __future__ import annotations

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
