"""The search (GENNI's Algorithm 1): minimise J from K random starts, all at once.

Each start θ̃ₖ follows minibatch SGD (or Adam) on J(θ̃) = 1/|C| Σ ‖φ(x, θ) - φ(x, θ̃)‖²;
the starts that reach J < ε are elements of θ's approximate equivalence class. The K
starts train together: one ``torch.func.vmap`` of ``torch.func.grad`` of the per-start
minibatch loss gives all K gradients per step, and the optimizers are written out on the
[K, P] batch. Start k's trajectory depends only on its start, its seed and the problem,
never on K or on the other starts, so ``search(problem, starts=S)`` equals the K runs
``search(problem, starts=S[k:k+1], seed=seed + k)`` (up to float round-off of batched
kernels); ``python_tests/core/test_search.py`` shows it.

Seeds: start k has seed ``seed + 1 + k`` (``SearchResult.seeds``). The 1 keeps the common
pattern of one seed for everything safe: a θ drawn after ``torch.manual_seed(seed)`` is not
one of the starts (were a start equal to θ, a warning would say so). The seed serves two
things:

* the start, when ``starts`` is an int: a deep copy of the model on the CPU,
  ``torch.manual_seed(seed_k)`` (the CPU generator only; the caller's RNG state is restored
  afterwards), ``reset_parameters()`` on every submodule that has one, in
  ``model.modules()`` order, then flattened. That is the model's own initialisation: for
  the package's models, the parameters of the model built after ``torch.manual_seed(seed_k)``.
* its minibatches: a ``torch.Generator`` seeded with ``seed_k`` shuffles the probe set
  once per epoch (``torch.randperm``), and the steps take consecutive slices of
  ``batch_size`` probes from it (the last slice of an epoch holds the remainder), like a
  shuffling DataLoader.

Threads: a step whose activations are small (K x batch x per-sample activation scalars
below ``SMALL_STEP``, as for the 4-parameter net) runs on one torch thread, restored
afterwards. ``vmap`` turns every Linear into a batched matmul of K small matrices, which
torch parallelises over the K starts one matrix at a time; a second thread then adds only
a hand-off per op, and on a shared machine a stall whenever the other thread is not
scheduled. Measured on 2 cores with another process busy: 6.6 ms instead of 10 µs per such
matmul, and the paper's search at 55 ms instead of 1.9 ms per step.

Restarts (``search(..., restart_collapsed=True)``; default off, which is Algorithm 1 as
above): a start whose hidden ReLU units collapsed (more dead or merged units than θ has, on
the probes) is re-initialised at a record point with the seed ``seed + 1 + k + K (r + 1)``
for its restart r, which serves its start and minibatches as above; see :func:`genni_ext.search`.
Its trajectory then depends on K only through that seed, so a group of starts on a Dask
worker restarts them as the whole search does.

On a Dask cluster the starts run in groups, one task each: :mod:`genni_ext.run.searches`
(``genni_ext.search(..., client=)``) runs :func:`run_group` on the workers.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from genni_ext._validate import (
    contiguous_finite,
    float_tensor,
    module_argument,
    positive_int,
    positive_number,
    resolve_eps,
    seed_argument,
    torch_threads,
)
from genni_ext.core.functional import DEFAULT_MEMORY_BUDGET, every_path
from genni_ext.core.models import flatten_params
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError

logger = logging.getLogger("genni_ext")

OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MAX_STARTS = 10**6
"""More random starts than this is almost certainly a typo (the seeds alone would fill memory)."""
SMALL_STEP = 1 << 18
"""Activation scalars per step (K x batch x per sample) below which a search uses one thread."""


@dataclass
class SearchResult:
    """What a search found: final parameters, their J, the J histories and how it ran.

    ``params`` and ``starts`` are [K, P] in the problem's dtype; ``losses`` ([K]) and
    ``history`` ([K, R]) are float64 J on the whole probe set, ``history[:, r]`` after
    ``history_steps[r]`` steps (0 is the start; the last column is ``losses``). ``config``
    holds the search's arguments, ``steps_run``, the steps actually taken (fewer than
    ``steps`` when ``tol`` stopped it early), and the problem's ``theta_hash`` and
    ``probes_hash`` (so that :meth:`Subspace.from_search` can tell which problem the points
    solve; a result saved before they were recorded lacks them).

    ``restarts`` (int64 [K]) counts how often ``restart_collapsed`` re-initialised each start
    (zeros without it, and for a result saved before restarts existed). ``seeds[k]`` and
    ``starts[k]`` are those of start k's last trajectory, the one that ended at
    ``params[k]``: its first seed and start unless it was restarted; ``history[k]`` holds
    all of start k's record points, before and after its restarts.
    """

    params: torch.Tensor
    losses: torch.Tensor
    history: torch.Tensor
    history_steps: torch.Tensor
    starts: torch.Tensor
    seeds: list[int]
    config: dict
    restarts: torch.Tensor = dataclasses.field(
        default_factory=lambda: torch.empty(0, dtype=torch.int64)
    )

    def __post_init__(self) -> None:
        if self.restarts.numel() == 0 and self.losses.numel() > 0:
            self.restarts = torch.zeros(self.losses.shape[0], dtype=torch.int64)

    def converged(
        self, eps: float | None = None, *, eps_relative: float | None = None
    ) -> torch.Tensor:
        """Bool [K]: which starts ended with J < ε (NaN counts as not converged).

        ε is ``eps``, or ``eps_relative`` × the problem's constant-function loss (recorded in
        ``config`` by the search).
        """
        eps = resolve_eps(eps, eps_relative, self.config.get("constant_loss"), "this search")
        return self.losses < eps

    def restarts_summary(self) -> str:
        """How many collapsed starts the search restarted (``restart_collapsed``)."""
        total, starts = int(self.restarts.sum()), int((self.restarts > 0).sum())
        return (
            f"restarts of collapsed starts: {total} ({starts} of {self.restarts.shape[0]} "
            f"starts restarted, at most {self.config.get('max_restarts')} each)"
        )


def _reset_owners(model: nn.Module) -> list[str]:
    """Names of parameters that no ``reset_parameters()`` of their owning module redraws."""
    covered: set[int] = set()
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            covered.update(id(p) for p in module.parameters(recurse=False))
    return [name for name, p in model.named_parameters() if id(p) not in covered]


def initial_params(problem: Problem, seeds: list[int]) -> torch.Tensor:
    """[K, P] starts: the model's own initialisation with ``torch.manual_seed(seeds[k])``.

    See the module docstring. Raises InputError when some parameter belongs to a module
    without ``reset_parameters()`` (it could not be redrawn): pass the starts instead.
    """
    model = problem.model
    missing = _reset_owners(model)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(
            f"cannot draw starts from {type(model).__name__}'s initialisation: parameters "
            f"{shown} belong to modules without reset_parameters(); pass starts as a "
            f"tensor [K, {problem.num_params}]"
        )
    local = copy.deepcopy(model).to("cpu")
    rows = []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.random.default_generator.manual_seed(seed)
            for module in local.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
            rows.append(flatten_params(local))
    return torch.stack(rows).to(dtype=problem.theta.dtype, device=problem.theta.device)


COLLAPSE_PROBES = 2048
"""Collapse is judged on at most this many probes: a fixed subset, the same for θ and every
start (see :class:`CollapseDetector`)."""
MERGE_TOLERANCE = 1e-6
"""Two live units are merged when their normalised output vectors are this close (2-norm)."""


def relu_modules(model: nn.Module) -> list[nn.Module]:
    """The model's ``nn.ReLU`` modules: the units whose collapse a search can detect."""
    return [module for module in model.modules() if isinstance(module, nn.ReLU)]


def collapse_probes(problem: Problem) -> torch.Tensor:
    """The probes collapse is judged on: all of them up to ``COLLAPSE_PROBES``, else a
    subset of that size drawn with seed 0 (in probe order), fixed for the problem."""
    count = problem.num_probes
    if count <= COLLAPSE_PROBES:
        return problem.inputs
    index = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    return problem.inputs[index[:COLLAPSE_PROBES].sort().values.to(problem.inputs.device)]


def collapsed_units(activations: torch.Tensor) -> torch.Tensor:
    """Per row of ``activations`` ([R, N, C, ...]: a ReLU's output for R parameter vectors
    on N probes), how many of its C units (features, or conv channels over all positions)
    are dead or merged, as int64 [R] on the CPU.

    Dead: 0 on every probe. Merged: not dead, and its output vector over the probes
    (normalised to norm 1) within ``MERGE_TOLERANCE`` of an earlier live unit's, i.e. a
    positive multiple of it. Computed in float64 from the Gram matrix of the normalised
    vectors.
    """
    rows, num = activations.shape[:2]
    units = activations.shape[2] if activations.ndim > 2 else 1
    vectors = activations.reshape(rows, num, units, -1).transpose(1, 2).reshape(rows, units, -1)
    vectors = vectors.double()
    dead = ~(vectors != 0).any(dim=2)
    unit = vectors / vectors.norm(dim=2, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    gram = unit @ unit.transpose(1, 2)
    # |u - v|² = 2 - 2 u·v for unit vectors
    close = gram >= 1 - MERGE_TOLERANCE**2 / 2
    live = ~dead
    earlier = torch.ones(units, units, dtype=torch.bool, device=gram.device).triu(diagonal=1)
    merged = (close & live[:, :, None] & live[:, None, :] & earlier).any(dim=1)
    return (dead | merged).sum(dim=1).cpu()


class CollapseDetector:
    """Counts the collapsed hidden units of K parameter vectors in one ``vmap`` batch.

    Every ``nn.ReLU`` module's output on :func:`collapse_probes` is read with a forward hook
    (a module called twice counts as two layers) and each layer's dead and merged units
    are counted (:func:`collapsed_units`). The hooks sit on a private copy of the model:
    the threads of a Dask worker share the problem's model. ``reference`` is θ's count; a
    start is collapsed when it has more. The probe subset keeps the cost of a check to one
    forward pass over at most ``COLLAPSE_PROBES`` probes per start, whatever the probe
    set's size; θ is judged on the same probes, so a unit dead only on the subset is dead
    for θ's count as well.
    """

    def __init__(self, problem: Problem) -> None:
        self.model = copy.deepcopy(problem.model)
        self.inputs = collapse_probes(problem)
        self._captured: list[torch.Tensor] = []
        for module in relu_modules(self.model):
            module.register_forward_hook(self._capture)
        per_row = 3 * 8 * problem.activations_per_sample * self.inputs.shape[0]
        self.rows = max(1, DEFAULT_MEMORY_BUDGET // per_row)
        self._batched = vmap(self._activations, in_dims=(0, None))
        self.reference = int(self.counts(problem.theta[None])[0])

    def _capture(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._captured.append(output)

    def _activations(
        self, named: dict[str, torch.Tensor], inputs: torch.Tensor
    ) -> list[torch.Tensor]:
        self._captured.clear()
        functional_call(self.model, named, (inputs,), tie_weights=False)
        captured, self._captured = self._captured, []
        return captured

    def counts(self, params: torch.Tensor) -> torch.Tensor:
        """Collapsed units of every row of ``params`` ([K, P]) as int64 [K] on the CPU."""
        total = torch.zeros(params.shape[0], dtype=torch.int64)
        with torch.no_grad():
            for first in range(0, params.shape[0], self.rows):
                chunk = params[first : first + self.rows]
                for layer in self._batched(every_path(self.model, chunk), self.inputs):
                    total[first : first + chunk.shape[0]] += collapsed_units(layer)
        return total

    def collapsed(self, params: torch.Tensor) -> torch.Tensor:
        """Bool [K] on the CPU: which rows have more collapsed units than θ."""
        return self.counts(params) > self.reference


DEFAULT_STARTS = 10
"""Random starts when none are asked for."""


@dataclass(frozen=True)
class SearchOptions:
    """A search's options with their defaults, written once: :func:`genni_ext.search`, the
    config's ``search:`` section and the ``genni`` command take their defaults from here
    (:func:`genni_ext.search` says what each option does)."""

    steps: int = 2000
    lr: float = 0.015
    batch_size: int = 256
    optimizer: str = "sgd"
    momentum: float = 0.0
    tol: float | None = None
    seed: int = 0
    record_every: int = 100
    progress: bool = True
    restart_collapsed: bool = False
    max_restarts: int = 3


def _check_starts(problem: Problem, starts: object) -> torch.Tensor | int:
    if isinstance(starts, torch.Tensor):
        tensor = float_tensor("starts", starts)
        if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] != problem.num_params:
            hint = " (for one start use starts[None])" if tensor.ndim == 1 else ""
            raise InputError(
                f"starts has shape {list(tensor.shape)}; pass a tensor [K, "
                f"{problem.num_params}] (K >= 1 flat parameter vectors){hint} or a number "
                "of starts"
            )
        tensor = tensor.to(dtype=problem.theta.dtype, device=problem.theta.device)
        return contiguous_finite("starts", tensor).clone()
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise InputError(
            f"starts must be a positive int (number of random starts) or a tensor [K, "
            f"{problem.num_params}], got {starts!r}"
        )
    if starts > MAX_STARTS:
        raise InputError(
            f"starts={starts} is more than the {MAX_STARTS:.0e} random starts allowed: all "
            f"starts train at once, each a vector of {problem.num_params} parameters with its "
            "gradient and optimizer state; use fewer starts (run several searches with other "
            "seeds to get more)"
        )
    return starts


def _validate(problem: object, options: SearchOptions) -> None:
    steps, lr, batch_size = options.steps, options.lr, options.batch_size
    optimizer, momentum, tol = options.optimizer, options.momentum, options.tol
    record_every, progress = options.record_every, options.progress
    restart_collapsed, max_restarts = options.restart_collapsed, options.max_restarts
    if not isinstance(problem, Problem):
        raise InputError(
            f"problem must be a genni_ext.Problem, got {type(problem).__name__}; build one "
            "with Problem(model, ...)"
        )
    # The Problem checked the model's mode when it was built; the caller may have switched
    # it to training mode since.
    module_argument(problem.model)
    positive_int(steps, "steps")
    positive_number(lr, "lr")
    positive_int(batch_size, "batch_size")
    if optimizer not in OPTIMIZERS:
        raise InputError(
            f"optimizer={optimizer!r} is not known; use one of {', '.join(map(repr, OPTIMIZERS))}"
        )
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not 0.0 <= momentum < 1.0
    ):
        raise InputError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if optimizer == "adam" and momentum != 0:
        raise InputError(
            f"momentum={momentum!r} applies to optimizer='sgd' only; leave it at 0 with "
            "optimizer='adam' (Adam uses betas (0.9, 0.999))"
        )
    if tol is not None:
        positive_number(tol, "tol")
    positive_int(record_every, "record_every")
    if not isinstance(progress, bool):
        raise InputError(f"progress must be True or False, got {progress!r}")
    if not isinstance(restart_collapsed, bool):
        raise InputError(f"restart_collapsed must be True or False, got {restart_collapsed!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise InputError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if restart_collapsed:
        if not relu_modules(problem.model):
            raise InputError(
                f"restart_collapsed=True needs nn.ReLU modules, and {type(problem.model).__name__} "
                "has none: collapse (dead or merged hidden units) is defined for ReLU units "
                "only; search with restart_collapsed=False"
            )
        missing = _reset_owners(problem.model)
        if missing:
            raise InputError(
                f"restart_collapsed=True draws new starts from {type(problem.model).__name__}'s "
                f"initialisation, but parameters {', '.join(missing[:5])} belong to modules "
                "without reset_parameters(); search with restart_collapsed=False"
            )


@dataclass(frozen=True)
class Settings:
    """A search's checked settings: what a group of starts needs to run, here or on a worker."""

    steps: int
    lr: float
    batch: int
    optimizer: str
    momentum: float
    tol: float | None
    record_every: int
    restart_collapsed: bool = False
    max_restarts: int = 0
    restart_stride: int = 0
    """K, the whole search's number of starts: restart r of the start seeded s is seeded
    ``s + restart_stride * (r + 1)`` (the same in every group of a Dask run)."""


class _Optimizer:
    """SGD (with momentum) or Adam on a [K, P] batch, as torch.optim computes them.

    Adam's step count is per start (``step_count``, [K]) so that a restarted start (see
    :meth:`reset`) gets the bias correction of a fresh run; rows with the same count are
    updated together, with the count as a Python scalar, as torch.optim.Adam computes it.
    """

    def __init__(self, name: str, lr: float, momentum: float, params: torch.Tensor) -> None:
        self.name, self.lr, self.momentum = name, lr, momentum
        self.step_count = torch.zeros(params.shape[0], dtype=torch.int64)
        self.first = torch.zeros_like(params)
        self.second = torch.zeros_like(params) if name == "adam" else None

    def reset(self, rows: torch.Tensor) -> None:
        """Forget the state of starts ``rows`` (a restart): momentum, moments, step count."""
        self.step_count[rows] = 0
        self.first[rows.to(self.first.device)] = 0
        if self.second is not None:
            self.second[rows.to(self.second.device)] = 0

    def update(self, params: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        self.step_count += 1
        if self.name == "sgd":
            if self.momentum == 0:
                return params.add(gradient, alpha=-self.lr)
            # torch.optim.SGD: buf = g on the first step, then momentum * buf + g.
            self.first.mul_(self.momentum).add_(gradient)
            return params.add(self.first, alpha=-self.lr)
        assert self.second is not None
        beta1, beta2 = ADAM_BETAS
        self.first.lerp_(gradient, 1 - beta1)
        self.second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        counts = self.step_count.unique().tolist()
        if len(counts) == 1:
            return self._adam_step(params, self.first, self.second, counts[0])
        result = torch.empty_like(params)
        for count in counts:
            rows = (self.step_count == count).nonzero().flatten().to(params.device)
            result[rows] = self._adam_step(params[rows], self.first[rows], self.second[rows], count)
        return result

    def _adam_step(
        self, params: torch.Tensor, first: torch.Tensor, second: torch.Tensor, count: int
    ) -> torch.Tensor:
        beta1, beta2 = ADAM_BETAS
        correction1 = 1 - beta1**count
        correction2 = 1 - beta2**count
        denom = (second.sqrt() / math.sqrt(correction2)).add_(ADAM_EPS)
        return params.addcdiv(first, denom, value=-self.lr / correction1)


@dataclass(frozen=True)
class SearchPlan:
    """A search's checked arguments: the starts, their seeds, the settings every group of
    starts runs with, and the ``config`` its result records."""

    problem: Problem
    initial: torch.Tensor
    seeds: list[int]
    settings: Settings
    config: dict
    progress: bool

    def run(self) -> SearchResult:
        """The whole search in this process, all starts in one batch."""
        result = run_group(
            self.problem, self.initial, self.seeds, self.settings, progress=self.progress
        )
        return self.finish(result)

    def finish(self, result: SearchResult) -> SearchResult:
        """``result`` of the whole plan with the plan's config (and the steps it ran)."""
        return dataclasses.replace(
            result, config={**self.config, "steps_run": result.config["steps_run"]}
        )


def plan_search(problem: Problem, starts: int | torch.Tensor, options: SearchOptions) -> SearchPlan:
    """Check a search's arguments once and draw its starts (:func:`genni_ext.search`)."""
    _validate(problem, options)
    checked = _check_starts(problem, starts)
    count = checked if isinstance(checked, int) else checked.shape[0]
    seed = options.seed
    # start k uses seed + 1 + k, its restart r seed + 1 + k + K (r + 1)
    trajectories = 1 + (options.max_restarts if options.restart_collapsed else 0)
    seed_argument(seed, "seed", draws=count * trajectories + 1)
    seeds = [seed + 1 + k for k in range(count)]
    if isinstance(checked, int):
        initial = initial_params(problem, seeds)
        same = (initial == problem.theta).all(dim=1).nonzero().flatten().tolist()
        if same:
            logger.warning(
                "search: start(s) %s equal theta (theta was drawn with the same seed, "
                "seed + 1 + k, as those starts); pick another search seed",
                same,
            )
    else:
        initial = checked

    batch = min(options.batch_size, problem.num_probes)
    lr, momentum = float(options.lr), float(options.momentum)
    tol = None if options.tol is None else float(options.tol)
    settings = Settings(
        steps=options.steps,
        lr=lr,
        batch=batch,
        optimizer=options.optimizer,
        momentum=momentum,
        tol=tol,
        record_every=options.record_every,
        restart_collapsed=options.restart_collapsed,
        max_restarts=options.max_restarts,
        restart_stride=count,
    )
    config = {
        "steps": options.steps,
        "lr": lr,
        "batch_size": batch,
        "optimizer": options.optimizer,
        "momentum": momentum,
        "tol": tol,
        "seed": seed,
        "record_every": options.record_every,
        "restart_collapsed": options.restart_collapsed,
        "max_restarts": options.max_restarts,
        "steps_run": options.steps,
        "theta_hash": problem.theta_hash,
        "probes_hash": problem.probes_hash,
        "constant_loss": problem.constant_loss,
    }
    return SearchPlan(problem, initial, seeds, settings, config, options.progress)


def run_group(
    problem: Problem,
    initial: torch.Tensor,
    seeds: list[int],
    settings: Settings,
    *,
    stop_from: int = 0,
    progress: bool = False,
    warn: bool = True,
) -> SearchResult:
    """Run the starts ``initial`` (seeds ``seeds``) as one vmap batch: the whole local search,
    or one Dask task. ``config`` of the result holds only ``steps_run``; ``stop_from`` and
    ``warn`` as in :func:`_descend`."""
    gradients = vmap(grad(problem.minibatch_loss))
    update = _Optimizer(settings.optimizer, settings.lr, settings.momentum, initial)
    small = initial.shape[0] * settings.batch * problem.activations_per_sample < SMALL_STEP
    with torch_threads(1 if small else None, problem.theta.device):
        restarter = (
            _Restarter(problem, seeds, settings)
            if settings.restart_collapsed and settings.max_restarts > 0
            else None
        )
        return _descend(
            problem,
            initial,
            seeds,
            gradients,
            update,
            restarter=restarter,
            steps=settings.steps,
            batch=settings.batch,
            tol=settings.tol,
            record_every=settings.record_every,
            progress=progress,
            config={},
            stop_from=stop_from,
            warn=warn,
        )


class _Restarter:
    """The restart rule of ``search(restart_collapsed=True)`` for one group of starts."""

    def __init__(self, problem: Problem, seeds: list[int], settings: Settings) -> None:
        self.problem = problem
        self.detector = CollapseDetector(problem)
        self.first_seeds = list(seeds)
        self.stride = settings.restart_stride
        self.max_restarts = settings.max_restarts
        self.tol = settings.tol
        self.counts = torch.zeros(len(seeds), dtype=torch.int64)

    def restart(
        self,
        params: torch.Tensor,
        losses: torch.Tensor,
        state: _Trajectories,
        update: _Optimizer,
        *,
        new_epoch: bool,
    ) -> None:
        """Re-initialise, in ``params`` and ``state``, the collapsed starts that may be
        restarted; ``new_epoch``: the next step draws every start's shuffle anyway."""
        eligible = self.counts < self.max_restarts
        if self.tol is not None:
            eligible &= (losses >= self.tol).cpu()
        rows = eligible.nonzero().flatten()
        if rows.numel() == 0:
            return
        rows = rows[self.detector.collapsed(params[rows.to(params.device)])]
        if rows.numel() == 0:
            return
        seeds = [
            self.first_seeds[k] + self.stride * (int(self.counts[k]) + 1) for k in rows.tolist()
        ]
        fresh = initial_params(self.problem, seeds)
        on_device = rows.to(params.device)
        params[on_device] = fresh
        state.starts[on_device] = fresh
        update.reset(rows)
        self.counts[rows] += 1
        for k, seed in zip(rows.tolist(), seeds, strict=True):
            state.seeds[k] = seed
            state.generators[k] = torch.Generator().manual_seed(seed)
            if not new_epoch:
                shuffle = torch.randperm(self.problem.num_probes, generator=state.generators[k])
                state.order[k] = shuffle.to(state.order.device)


@dataclass
class _Trajectories:
    """Where each start's current trajectory began: its start, seed and minibatch shuffle."""

    starts: torch.Tensor
    seeds: list[int]
    generators: list[torch.Generator]
    order: torch.Tensor


def _warn_non_finite(losses: torch.Tensor, step: int) -> None:
    """Log which starts' J (``losses``, [K]) is NaN or Inf after ``step`` steps."""
    bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    logger.warning("search: J of start(s) %s is NaN or Inf after %d steps; lower lr", bad, step)


def report_non_finite(history: torch.Tensor, history_steps: torch.Tensor) -> None:
    """The warning of a local run, from the whole history: the first record point after
    the start where some J is NaN or Inf."""
    finite = torch.isfinite(history[:, 1:]).all(dim=0)
    columns = (~finite).nonzero().flatten().tolist()
    if columns:
        column = columns[0] + 1
        _warn_non_finite(history[:, column], int(history_steps[column]))


def _descend(
    problem: Problem,
    initial: torch.Tensor,
    seeds: list[int],
    gradients: Callable[..., torch.Tensor],
    update: _Optimizer,
    *,
    restarter: _Restarter | None = None,
    steps: int,
    batch: int,
    tol: float | None,
    record_every: int,
    progress: bool,
    config: dict,
    stop_from: int = 0,
    warn: bool = True,
) -> SearchResult:
    """The loop of the search on checked arguments; fills in ``config["steps_run"]``.

    With ``tol``, stop at the first record point at or after step ``stop_from`` where every
    start has J < tol. ``warn``: log the first record point with a NaN or Inf J.
    ``restarter``: restart collapsed starts at the record points before the last step.
    """
    num_probes = problem.num_probes
    per_epoch = math.ceil(num_probes / batch)
    device = problem.theta.device
    state = _Trajectories(
        starts=initial.clone(),
        seeds=list(seeds),
        generators=[torch.Generator().manual_seed(s) for s in seeds],
        order=torch.empty(0, dtype=torch.int64),
    )
    params = initial.clone()
    losses = problem.unchecked_loss(params)
    history, recorded = [losses], [0]
    at_start = tol is not None and stop_from == 0 and bool((losses < tol).all())
    steps_run = 0 if at_start else steps
    warned = False
    with tqdm(total=steps_run, disable=not progress, unit="step", desc="search") as bar:
        for step in range(1, steps_run + 1):
            position = (step - 1) % per_epoch
            if position == 0:
                order = [torch.randperm(num_probes, generator=g) for g in state.generators]
                state.order = torch.stack(order).to(device)
            index = state.order[:, position * batch : (position + 1) * batch]
            # grad ignores the outer no_grad; the update itself needs no graph.
            with torch.no_grad():
                step_grads = gradients(params, problem.inputs[index], problem.targets[index])
                params = update.update(params, step_grads)
            bar.update(1)
            if step % record_every != 0 and step != steps:
                continue
            losses = problem.unchecked_loss(params)
            history.append(losses)
            recorded.append(step)
            bar.set_postfix(best=f"{float(losses.min()):.3g}", worst=f"{float(losses.max()):.3g}")
            if warn and not warned and not bool(torch.isfinite(losses).all()):
                warned = True
                _warn_non_finite(losses, step)
            if tol is not None and step >= stop_from and bool((losses < tol).all()):
                steps_run = step
                break
            if restarter is not None and step < steps:
                restarter.restart(params, losses, state, update, new_epoch=step % per_epoch == 0)

    config["steps_run"] = steps_run
    return SearchResult(
        params=params,
        losses=history[-1],
        history=torch.stack(history, dim=1),
        history_steps=torch.tensor(recorded, dtype=torch.int64),
        starts=state.starts if restarter is not None else initial,
        seeds=state.seeds,
        config=config,
        restarts=(
            restarter.counts
            if restarter is not None
            else torch.zeros(len(seeds), dtype=torch.int64)
        ),
    )


__all__ = [
    "COLLAPSE_PROBES",
    "DEFAULT_STARTS",
    "MERGE_TOLERANCE",
    "OPTIMIZERS",
    "CollapseDetector",
    "SearchOptions",
    "SearchPlan",
    "SearchResult",
    "Settings",
    "collapse_probes",
    "collapsed_units",
    "initial_params",
    "plan_search",
    "relu_modules",
    "report_non_finite",
    "run_group",
]
