"""The sweep: the auxiliary loss J at every point of a grid in a parameter subspace.

For a centre θ₀ ([P]), directions θ̃ ([m, P]) and coefficients c ([G, m]),
``sweep`` returns J(θ₀ + c @ θ̃) = 1/N Σₙ ‖φ(xₙ; θ) - yₙ‖² for every row of c, as float64
[G]. Two backends compute it: the fused engine (csrc/, for models that
:mod:`genni_ext.engine.lowering` can lower) and the torch.func fallback (any ``nn.Module``).
``backend="auto"`` takes the fused engine where it can and says in a log line (logger
``genni_ext``, level INFO) which backend it used and why; :func:`explain_backend` gives
the same line without running anything.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

import genni_ext._C as _C
from genni_ext._validate import (
    BACKENDS,
    contiguous_finite,
    float_tensor,
    module_argument,
    positive_int,
    torch_precision,
    torch_threads,
)
from genni_ext.core.functional import (
    ProbeRun,
    buffers_for,
    check_output_size,
    check_vmap,
    check_vmap_layers,
    every_path,
    probe_forward,
)
from genni_ext.core.models import flatten_params, num_params
from genni_ext.core.problem import expected_input_shape
from genni_ext.engine import fused
from genni_ext.engine.fused import CudaKernel, FirstLayer
from genni_ext.engine.lowering import Program, check_lowerable, lower
from genni_ext.engine.torch_func import compile_choice, rule_text, torch_sweep
from genni_ext.errors import BackendUnavailableError, InputError, LoweringError

logger = logging.getLogger("genni_ext")


@dataclass(frozen=True)
class Decision:
    """Everything the engine needs to run a sweep, decided once per sweep.

    ``backend`` names the engine as the store records it ("fused-cpu", "fused-cuda" or
    "torch"); ``program`` is the lowered model (None for torch.func); ``compile`` whether
    torch.func runs its chunk function through ``torch.compile`` (True, False, or None: by
    :func:`genni_ext.engine.torch_func.compile_choice` for ``num_points``, the whole
    sweep's grid points, with the activations each run counts on its first probes, so that
    every chunk chooses the same; :func:`decide` resolves it where the model has run
    already); ``precision`` "full"
    or "tf32"; ``first_layer`` the fused engine's first-layer form ("affine" or "direct"
    for the grid's number of directions, "auto" where that was not known); ``cuda_kernel``
    "tiled" or "reference" on CUDA (None elsewhere) and ``tile_plan`` the tiled kernel's
    plan (None elsewhere); ``reason`` the one line ``backend="auto"`` logs. The program's
    engine copy (:attr:`Program.native`) and the tile plan are bound C++ objects, made once
    here (the program's on first use) and passed as they are to every chunk's call.
    """

    backend: str
    program: Program | None
    precision: str
    reason: str
    first_layer: FirstLayer = "auto"
    cuda_kernel: CudaKernel | None = None
    tile_plan: _C.TilePlan | None = None
    compile: bool | None = None
    num_points: int | None = None

    @property
    def engine_plan(self) -> fused.EnginePlan:
        """What the fused engine runs every chunk with, as decided here."""
        return fused.EnginePlan(self.first_layer, self.tile_plan, self.precision)


@dataclass(frozen=True)
class SweepInputs:
    """A sweep's arguments after every check the front door makes before any work: the
    tensors detached and contiguous, of one dtype and device, the model in eval mode and
    known to take the probes; ``outputs`` is its output width per probe, ``program`` the
    model lowered for the probes' shape (None where it does not lower) and
    ``activations_per_sample`` the activation scalars a probe where the checks ran the
    model (None where the lowering checked it)."""

    model: nn.Module
    center: torch.Tensor
    directions: torch.Tensor
    coeffs: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    outputs: int
    program: Program | None = None
    activations_per_sample: int | None = None


def _lowering_explanation(model: nn.Module, error: LoweringError) -> str:
    """The line for a model that does not lower, naming the layer by dotted path and class:
    "torch: layer 'features.1' cannot be lowered: BatchNorm2d is not supported (...)". The
    class is put before the reason where the reason does not name it already."""
    reason = error.reason
    if error.layer:
        try:
            kind = type(model.get_submodule(error.layer)).__name__
        except AttributeError:  # a path the error names but named_modules does not hold
            kind = ""
        if kind and kind not in reason:
            reason = f"{kind}: {reason}"
    where = f"layer '{error.layer}'" if error.layer else "the model"
    return f"torch: {where} cannot be lowered: {reason}"


def decide(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    backend: str = "auto",
    *,
    precision: str = "full",
    num_directions: int | None = None,
    num_points: int | None = None,
    compile: bool | None = None,
    activations_per_sample: int | None = None,
    program: Program | None = None,
    log: bool = False,
) -> Decision:
    """The one Decision for sweeping ``model`` on these probes (checked as :func:`sweep`
    checks them), with ``num_directions`` directions where known (it fixes the first-layer
    form) and ``num_points`` grid points where known (it decides, with ``compile``, whether
    torch.func compiles: :func:`genni_ext.engine.torch_func.compile_choice`, resolved here
    where ``activations_per_sample`` is known, else by each run); the grid runners make it
    once and run every chunk with it. ``program``: the
    model lowered for these probes' shape already (:attr:`SweepInputs.program`), else it
    is lowered here.

    "auto" takes the fused engine where the model lowers for the probes' shape and the
    engine runs on their device (on CUDA: where :func:`fused.cuda_auto_choice` says so) and
    logs which and why when ``log``; "fused" raises LoweringError or
    BackendUnavailableError where it cannot; "torch" is torch.func. A program whose output
    size differs from the targets' (None: not checked) raises InputError before the
    availability check, so the error is the same on every machine.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend={backend!r} is not known; use one of {', '.join(BACKENDS)}")
    if compile is not None and not isinstance(compile, bool):
        raise InputError(f"compile must be True, False or None, got {compile!r}")
    device, dtype = inputs.device, inputs.dtype
    fused.check_precision(precision, dtype, device)
    on_torch = _TorchChoice(inputs, num_points, compile, activations_per_sample, precision, log)
    if backend == "torch":
        return on_torch.decision("torch: backend='torch' was asked for", log=False)
    name = type(model).__name__
    try:
        if program is None:
            program = lower(model, tuple(inputs.shape[1:]))
    except LoweringError as error:
        if backend == "fused":
            raise
        return on_torch.decision(_lowering_explanation(model, error))
    unavailable = fused.fused_unavailable_reason(device)
    if backend == "auto" and unavailable is not None:
        reason = f"torch: the fused backend cannot run on {device}: {unavailable}"
        return on_torch.decision(reason)
    reason = f"fused ({device.type}): {program.ops.shape[0]} ops lowered from {name}"
    if backend == "auto" and device.type == "cuda":
        use_fused, why = fused.cuda_auto_choice(program, inputs.shape[0], dtype, device, precision)
        if not use_fused:
            return on_torch.decision(f"torch: {why}")
        reason = f"fused (cuda): {program.ops.shape[0]} ops lowered from {name}; {why}"
    if targets is not None:
        check_output_size(program.output_size, targets.shape[1])
    if unavailable is not None:
        raise BackendUnavailableError(
            f"backend='fused' cannot run on {device}: {unavailable}; use backend='auto' or 'torch'"
        )
    if log and backend == "auto":
        logger.info("sweep backend: %s", reason)
    first_layer: FirstLayer = "auto"
    if num_directions is not None:
        affine = fused.uses_affine_first_layer(program, num_directions)
        first_layer = "affine" if affine else "direct"
    if device.type != "cuda":
        return Decision(f"fused-{device.type}", program, precision, reason, first_layer)
    tile_plan = fused.cuda_tile_plan(
        program, inputs.shape[0], dtype, "auto", None, device, precision
    )
    fused.check_tf32_plan(tile_plan, precision)
    kernel: CudaKernel = "reference" if tile_plan is None else "tiled"
    return Decision("fused-cuda", program, precision, reason, first_layer, kernel, tile_plan)


@dataclass(frozen=True)
class _TorchChoice:
    """What a torch.func Decision holds besides why torch.func: ``compile`` and the sweep's
    grid points, from which each run chooses eager or compiled (the model is not run
    here: the rule needs its activation count, which the run measures anyway)."""

    inputs: torch.Tensor
    num_points: int | None
    compile: bool | None
    activations_per_sample: int | None
    precision: str
    log: bool

    def decision(self, reason: str, *, log: bool = True) -> Decision:
        """The torch.func Decision for ``reason`` (why torch.func), logged when asked; the
        reason says eager or compiled where the grid's size or ``compile`` is given."""
        compile, device = self.compile, self.inputs.device
        if compile is None and self.num_points is None:
            how = ""
        elif self.activations_per_sample is None:
            how = rule_text(compile, self.num_points, device)
        else:
            choice = compile_choice(
                compile, self.num_points, self.inputs.shape[0], self.activations_per_sample, device
            )
            how = choice.reason
            if self.num_points is not None:
                compile = choice.compiled
        reason = f"{reason}; {how}" if how else reason
        if self.log and log:
            logger.info("sweep backend: %s", reason)
        return Decision(
            "torch", None, self.precision, reason, compile=compile, num_points=self.num_points
        )


def explain_backend(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    *,
    precision: str = "full",
    num_points: int | None = None,
    compile: bool | None = None,
) -> str:
    """One line: which backend ``sweep(..., backend="auto")`` uses for ``model`` and why, or
    ``"refused: ..."`` with the error ``sweep`` would raise for this model before any work.
    Where that is torch.func and ``inputs`` and ``num_points`` (the grid's size) or
    ``compile`` (as ``sweep`` takes it) are given, the line also says whether that sweep
    runs eagerly or compiled and why (from how many grid points the rule compiles).

    With ``inputs`` ([N, ...], float32 or float64) the checks are those ``sweep`` makes: the
    model (parameters, eval mode), then a forward pass at the model's own parameters on two
    of the inputs, plain and under ``vmap``; then the model is lowered for their per-sample
    shape on their device. Without inputs only what needs none is checked: the model, the
    layers ``vmap`` cannot run, and the layer types, for the CPU. ``sweep`` also checks the
    targets' width against the model's output, which needs targets.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if inputs is not None:
        if not isinstance(inputs, torch.Tensor):
            raise InputError(f"inputs must be a torch.Tensor or None, got {type(inputs).__name__}")
        inputs = float_tensor("inputs", inputs)
        if inputs.ndim < 2 or inputs.shape[0] == 0:
            raise InputError(
                f"inputs must have shape [N, ...] with N >= 1 (one probe per row), got "
                f"{list(inputs.shape)}"
            )

        fused.check_precision(precision, inputs.dtype, inputs.device)
    try:
        module_argument(model)
        if inputs is None:
            check_vmap_layers(model)
        else:
            center = flatten_params(model).to(dtype=inputs.dtype, device=inputs.device)
            probe = _check_model_runs(model, center, inputs)
    except InputError as error:
        return f"refused: {error}"
    if inputs is not None:
        return decide(
            model,
            inputs,
            None,
            "auto",
            precision=precision,
            num_points=num_points,
            compile=compile,
            activations_per_sample=probe.activations_per_sample,
        ).reason
    name = type(model).__name__
    try:
        check_lowerable(model)
    except LoweringError as error:
        return _lowering_explanation(model, error)
    unavailable = fused.fused_unavailable_reason(torch.device("cpu"))
    if unavailable is not None:
        return f"torch: the fused backend cannot run on cpu: {unavailable}"
    return f"fused (cpu): the layer types of {name} lower; the input shape is checked at sweep time"


def _check_ndim(name: str, tensor: torch.Tensor, expected: str, ok: bool) -> None:
    if not ok:
        raise InputError(f"{name} must have shape {expected}, got {list(tensor.shape)}")


def _validate(
    model: object,
    center: object,
    directions: object,
    coeffs: object,
    inputs: object,
    targets: object,
) -> tuple[torch.Tensor, ...]:
    """Check the sweep's arguments; return the five tensors detached and contiguous."""
    model = module_argument(model)
    count = num_params(model)
    named = {
        "center": float_tensor("center", center),
        "directions": float_tensor("directions", directions),
        "coeffs": float_tensor("coeffs", coeffs),
        "inputs": float_tensor("inputs", inputs),
        "targets": float_tensor("targets", targets),
    }
    c, d, k, x, y = named.values()
    _check_ndim("center", c, "[P] (a flat parameter vector)", c.ndim == 1)
    _check_ndim("directions", d, "[m, P] (one direction per row)", d.ndim == 2)
    _check_ndim("coeffs", k, "[G, m] (one grid point per row)", k.ndim == 2)
    _check_ndim("inputs", x, "[N, ...] (one probe input per row)", x.ndim >= 2)
    _check_ndim("targets", y, "[N, outputs] (model(inputs).reshape(N, -1))", y.ndim == 2)
    if c.shape[0] != count:
        raise InputError(
            f"center has {c.shape[0]} values but the model has {count} parameters; pass a flat "
            "parameter vector in parameters_to_vector order (genni_ext.core.models.flatten_params)"
        )
    if d.shape[0] == 0:
        raise InputError("directions has no rows (m = 0); pass at least one direction")
    if d.shape[1] != c.shape[0]:
        raise InputError(
            f"directions has rows of {d.shape[1]} values but center has {c.shape[0]}; each "
            "direction must be a flat parameter vector like center"
        )
    if k.shape[0] == 0:
        raise InputError("coeffs is an empty grid (G = 0); pass at least one grid point")
    if k.shape[1] != d.shape[0]:
        raise InputError(
            f"coeffs has {k.shape[1]} columns but directions has {d.shape[0]} rows (m); "
            "pass one coefficient per direction"
        )
    if x.shape[0] == 0:
        raise InputError("inputs is an empty probe set (N = 0); pass at least one probe")
    if y.shape[0] != x.shape[0]:
        raise InputError(
            f"targets has {y.shape[0]} rows but inputs has {x.shape[0]} probes; "
            "pass one target row per probe input"
        )
    for name, tensor in named.items():
        if tensor.dtype != c.dtype:
            raise InputError(
                f"{name} is {tensor.dtype} but center is {c.dtype}; give all five tensors one "
                "dtype (.float() or .double())"
            )
        if tensor.device != c.device:
            raise InputError(
                f"{name} is on {tensor.device} but center is on {c.device}; move all five "
                "tensors to one device"
            )
    return tuple(contiguous_finite(name, tensor) for name, tensor in named.items())


def _check_model_runs(model: nn.Module, center: torch.Tensor, inputs: torch.Tensor) -> ProbeRun:
    """Run the model at ``center`` on two probes, plain and under vmap, so that inputs it
    cannot take, an output that is not one tensor or a model vmap cannot run raise
    InputError on every backend before any work (the fused engine would report them as
    lowering problems); return what the run showed (outputs and activations a probe)."""
    params, buffers = every_path(model, center), buffers_for(model, inputs)
    with torch.no_grad():
        probe = probe_forward(
            model, params, buffers, inputs, expected_shape=expected_input_shape(model)
        )
        check_vmap(model, params, buffers, inputs)
    return probe


def sweep(
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    backend: str = "auto",
    num_threads: int | None = None,
    batch_points: int | None = None,
    progress: bool = False,
    precision: str = "full",
    compile: bool | None = None,
) -> torch.Tensor:
    """J(center + c @ directions) for every row c of ``coeffs``, as float64 [G].

    Shapes: ``center`` [P] (flat parameters in ``parameters_to_vector`` order),
    ``directions`` [m, P], ``coeffs`` [G, m], ``inputs`` [N, ...], ``targets`` [N, outputs].
    All five must be float32 or float64 of one dtype, on one device, finite; the model
    computes in that dtype on that device and the result lies there too. The model's own
    parameter values are not used (its buffers are), and it runs in its current mode:
    BatchNorm or Dropout in training mode is refused (call ``model.eval()`` first).

    Before any work, on every backend, the model is lowered for the probes' shape (where
    that succeeds, its layers' shapes show that it takes them) or else runs once at
    ``center`` on two probes, plain and under ``vmap``: inputs whose per-sample shape it
    cannot take (the error names the shape it expects and the one given), a forward that
    returns anything but one float tensor [N, ...], one that cannot run under ``vmap``, and
    targets of another width raise InputError.

    Layout: tensors that need grad are detached and non-contiguous ones are copied to
    contiguous memory, since a copy of the caller's data is cheap next to the sweep.
    Expanded views (stride 0 along a dimension of size > 1, as ``expand`` makes) raise
    InputError instead: their entries repeat, which is nearly always a mistake (a probe
    set of copies of one sample), and copying them could allocate far more memory than
    the caller holds. Pass ``.contiguous()`` explicitly if it is intended.

    ``backend`` is "fused" (the csrc engine; raises LoweringError naming the layer it
    cannot run and BackendUnavailableError where it is not built or cannot run on the
    device), "torch" (torch.func fallback, any model) or "auto" (fused where possible,
    else torch; logs which and why). ``num_threads`` caps CPU threads (for the torch
    backend, torch's intra-op threads during the call); ``batch_points`` is the number of
    grid points evaluated at once (default: from a memory budget); ``progress`` shows a
    progress bar.

    ``precision`` is "full" (the dtype's own: float32 or float64 arithmetic throughout, also
    in the torch backend's cuBLAS and cuDNN calls) or "tf32" (float32 on CUDA only): every
    Linear and Conv2d multiplies TF32-rounded inputs and weights (10 mantissa bits) and
    sums in float32, on tensor cores; the fused kernel does it where its tile fits, else
    torch with cuBLAS/cuDNN in TF32. Measured error against float64: see the README
    ("Precision").

    ``compile`` applies where torch.func runs: True runs its chunk function (the model
    under vmap, the squared errors and their sum) through ``torch.compile``, False eagerly,
    None (default) compiles on the CPU where the sweep is long enough to repay the compile
    (:data:`genni_ext.engine.torch_func.COMPILE_MIN_WORK`). Compiled J equals eager J within
    the dtype's round-off; a compile that fails logs a warning and the sweep runs eagerly.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend={backend!r} is not known; use one of {', '.join(BACKENDS)}")
    if num_threads is not None:
        positive_int(num_threads, "num_threads")
    if batch_points is not None:
        positive_int(batch_points, "batch_points")
    if not isinstance(progress, bool):
        raise InputError(f"progress must be True or False, got {progress!r}")
    checked = check_sweep_inputs(model, center, directions, coeffs, inputs, targets)
    decision = decide(
        model,
        checked.inputs,
        checked.targets,
        backend,
        precision=precision,
        num_directions=checked.directions.shape[0],
        num_points=checked.coeffs.shape[0],
        compile=compile,
        activations_per_sample=checked.activations_per_sample,
        program=checked.program,
        log=True,
    )
    return run_decided(
        decision,
        model,
        checked.center,
        checked.directions,
        checked.coeffs,
        checked.inputs,
        checked.targets,
        num_threads=num_threads,
        batch_points=batch_points,
        progress=progress,
    )


def check_sweep_inputs(
    model: nn.Module,
    center: object,
    directions: object,
    coeffs: object,
    inputs: object,
    targets: object,
) -> SweepInputs:
    """The arguments as :func:`sweep` runs them, after every check it makes before any work
    (shapes, dtypes, devices, finite values, that the model takes the probes, the
    targets' width). A model that lowers for the probes' shape is checked by its lowering
    (kept for :func:`decide`); any other is run at ``center`` on two probes, plain and
    under vmap."""
    center, directions, coeffs, inputs, targets = _validate(
        model, center, directions, coeffs, inputs, targets
    )
    program = None
    with contextlib.suppress(LoweringError):
        program = lower(model, tuple(inputs.shape[1:]))
    # Lowering walked the model's layers for the probes' shape, each of a kind that vmap
    # runs, so a model that lowers takes these probes and returns one tensor of output_size
    # values a probe: running it on two of them would only say that again.
    if program is not None:
        outputs, activations = program.output_size, None
    else:
        probe = _check_model_runs(model, center, inputs)
        outputs, activations = probe.outputs_per_sample, probe.activations_per_sample
    check_output_size(outputs, targets.shape[1])
    return SweepInputs(
        model, center, directions, coeffs, inputs, targets, outputs, program, activations
    )


def run_decided(
    decision: Decision,
    model: nn.Module,
    center: torch.Tensor,
    directions: torch.Tensor,
    coeffs: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_threads: int | None = None,
    batch_points: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """J (float64 [G]) on the engine ``decision`` names, for tensors already checked as
    :func:`sweep` checks them (contiguous, one dtype and device, the model takes them);
    nothing is decided again here."""
    if decision.program is None:
        with torch_threads(num_threads, inputs.device), torch_precision(decision.precision):
            return torch_sweep(
                model,
                center,
                directions,
                coeffs,
                inputs,
                targets,
                batch_points=batch_points,
                progress=progress,
                compile=decision.compile,
                sweep_points=decision.num_points,
            )
    return fused.fused_sweep(
        decision.program,
        center,
        directions,
        coeffs,
        inputs,
        targets,
        num_threads=num_threads,
        batch_points=batch_points,
        progress=progress,
        plan=decision.engine_plan,
    )
