"""Exceptions raised by genni_ext.

Every error message says what was wrong and what to do about it. The classes subclass
``ValueError`` or ``RuntimeError`` so that callers who catch the built-in types keep
working.
"""

from __future__ import annotations


class GenniError(Exception):
    """Base class of every error genni_ext raises on purpose."""


class InputError(GenniError, ValueError):
    """An argument has the wrong shape, dtype, device, values or layout."""


class LoweringError(GenniError, ValueError):
    """A model cannot be lowered to the fused engine's op program.

    ``layer`` is the dotted module path (as in ``model.named_modules()``) of the layer that
    could not be lowered, and ``reason`` says why.
    """

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        where = f"layer '{layer}'" if layer else "the model"
        super().__init__(
            f"{where} cannot run on the fused backend: {reason}. "
            "Use backend='torch' (or 'auto', which falls back to torch.func) for this model."
        )


class BackendUnavailableError(GenniError, RuntimeError):
    """The requested backend is not built into this install or cannot run here."""


class StoreError(GenniError, RuntimeError):
    """What is on disk does not fit the request: a missing, partial or damaged result, or a
    sweep resumed with different inputs. The message says what to do."""
