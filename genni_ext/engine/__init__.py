"""The engine layer: J(θ₀ + c @ B) for a list of coefficient vectors, and the choice of how.

What is here: ``sweep`` and ``explain_backend`` (``front_door``: the checks, into one
``SweepInputs``; ``decide``, the one ``Decision`` of backend, program, first-layer form,
precision, CUDA kernel and tile plan, with its reason; ``run_decided``, which runs it), the
lowering of a model to the fused
engine's program (``lowering``), the adapter to the compiled engine ``genni_ext._C``
(``fused``) and the batched torch.func fallback for every other model (``torch_func``).

May import: ``genni_ext.core``, ``genni_ext.errors``, ``genni_ext._validate``, the compiled
extension. Nothing from run, store, analysis, plot or cli.
"""

from __future__ import annotations

from genni_ext.engine.front_door import Decision, decide, explain_backend, sweep

__all__ = ["Decision", "decide", "explain_backend", "sweep"]
