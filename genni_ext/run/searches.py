"""The search, in this process or on a Dask cluster: ``genni_ext.search``.

On a Dask cluster (``client=``, see :mod:`genni_ext.cluster`) the K starts of
a search (:func:`search`) are cut into contiguous groups, one per worker
thread and at least two starts each; every group runs the search's loop
(:func:`~genni_ext.core.sgd_search.run_group`) as one task, and the groups are put back
together in order, so the SearchResult has the local run's fields, order, seeds and config.
With ``tol`` a group that meets it before the others is run again up to the common stopping
point (its trajectory is deterministic). A worker's exception is raised on the client (same
type and message, as long as it pickles), and its NaN warning is logged there, as locally.
The values are the local run's bitwise where torch's batched kernels compute each start
alone: measured on CPU for the paper's net and MLPs (float32 and float64; SGD, momentum,
Adam; K = 1..8 on 2 workers), and for LeNet-5 in float32. Float64 conv kernels round
differently for another number of starts in the batch or another thread count: LeNet-5's J
differs by up to 9e-16 relative and its parameters by up to 6e-17 after 40 steps. A group of
one start would differ more (a conv's weight gradient under vmap takes another kernel for a
batch of one: 1e-7 in float32 after 60 steps), hence the two-start minimum. The tests
(``python_tests/run/test_search_dask.py``) assert bitwise equality for the first and the
measured bound for the second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from genni_ext.cluster import check_client, require_distributed
from genni_ext.core.problem import Problem
from genni_ext.core.sgd_search import (
    DEFAULT_STARTS,
    SearchOptions,
    SearchResult,
    Settings,
    plan_search,
    report_non_finite,
    run_group,
)

if TYPE_CHECKING:
    from distributed import Client


def search(
    problem: Problem,
    starts: int | torch.Tensor = DEFAULT_STARTS,
    *,
    steps: int = SearchOptions.steps,
    lr: float = SearchOptions.lr,
    batch_size: int = SearchOptions.batch_size,
    optimizer: str = SearchOptions.optimizer,
    momentum: float = SearchOptions.momentum,
    tol: float | None = SearchOptions.tol,
    seed: int = SearchOptions.seed,
    record_every: int = SearchOptions.record_every,
    progress: bool = SearchOptions.progress,
    restart_collapsed: bool = SearchOptions.restart_collapsed,
    max_restarts: int = SearchOptions.max_restarts,
    client: Client | None = None,
) -> SearchResult:
    """Minimise J from K starts by minibatch SGD or Adam, all starts in one batch, in this
    process or, with ``client``, on a Dask cluster (defaults from
    :class:`~genni_ext.core.sgd_search.SearchOptions`).

    ``starts``: the number K of random starts drawn from the model's own initialisation
    (start k with seed ``seed + 1 + k``; see the module docstring), or a tensor [K, P] of
    starts (cast to the problem's dtype and device). Each of ``steps`` steps takes
    ``batch_size`` probes per start (a per-start shuffle of the probe set per epoch,
    seeded by the start's seed; ``batch_size`` larger than the probe set is clipped to
    it, which is full-batch descent) and moves every start by ``optimizer``: "sgd"
    (``lr``, ``momentum`` in [0, 1), as ``torch.optim.SGD``) or "adam" (``lr``, betas
    (0.9, 0.999), eps 1e-8, as ``torch.optim.Adam``; momentum must stay 0).

    J on the whole probe set is recorded at the start and every ``record_every`` steps
    (and after the last step) in ``history``; with ``tol`` the search stops at the first
    record point where every start has J < ``tol`` (``config["steps_run"]``). A start
    whose J turns NaN or Inf (lr too large) is logged and kept; it is not converged.
    ``progress`` shows a tqdm bar with the best and worst J at the last record point.

    ``restart_collapsed`` (default False: the paper's Algorithm 1, unchanged) re-initialises a
    start that has collapsed, up to ``max_restarts`` times per start: at every record point
    before the last step, a start whose hidden ReLU units include more dead or merged ones than
    θ's (:class:`~genni_ext.core.sgd_search.CollapseDetector`) and, with ``tol``, whose J is at
    least ``tol``, gets new parameters from the model's own initialisation with seed ``seed + 1
    + k + K (r + 1)`` for restart r (0, 1, ...) of start k (no other start or restart uses it),
    a fresh optimizer state (momentum, Adam's moments and step count) and a minibatch shuffle
    from that seed, and continues for the steps left: ``steps`` is the budget of the whole
    search, restarts included. ``SearchResult.restarts`` counts them; ``seeds`` and ``starts``
    are those of each start's last trajectory. It needs a model with ``nn.ReLU`` modules whose
    parameters ``reset_parameters()`` redraws.

    Memory: one step holds K x ``batch_size`` samples' activations and their gradients.

    On a Dask cluster (``client``, a ``distributed.Client``, :mod:`genni_ext.cluster`) the
    starts run in contiguous groups, one per worker thread; the result is that of the local
    run (see the module docstring for how exactly) and ``progress`` counts groups. With
    ``restart_collapsed`` each group restarts its own starts: a start's restarts, seeds and
    trajectory depend only on its own seed, so they are those of the local run.
    """
    if client is not None:
        check_client(client)
    options = SearchOptions(
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        momentum=momentum,
        tol=tol,
        seed=seed,
        record_every=record_every,
        progress=progress,
        restart_collapsed=restart_collapsed,
        max_restarts=max_restarts,
    )
    plan = plan_search(problem, starts, options)
    if client is None:
        return plan.run()
    result = run_on_cluster(
        client, problem, plan.initial, plan.seeds, plan.settings, progress=progress
    )
    return plan.finish(result)


def _group_bounds(count: int, slots: int) -> list[tuple[int, int]]:
    """Contiguous ``[first, last)`` groups of ``count`` starts for ``slots`` worker threads:
    one per slot, sizes as even as possible (the larger first), and at least two starts per
    group when ``count`` >= 2 (a conv layer's weight gradient under vmap takes another kernel
    path for a batch of one; see :mod:`genni_ext.run.searches`)."""
    groups = max(1, min(slots, count // 2))
    size, extra = divmod(count, groups)
    bounds, first = [], 0
    for index in range(groups):
        last = first + size + (1 if index < extra else 0)
        bounds.append((first, last))
        first = last
    return bounds


def run_on_cluster(
    client: Client,
    problem: Problem,
    initial: torch.Tensor,
    seeds: list[int],
    settings: Settings,
    *,
    progress: bool,
) -> SearchResult:
    """Run the starts in groups on ``client``'s workers and put the groups back together.

    With ``tol``, a group that meets it at an earlier record point than the others is run
    again (its trajectory is deterministic) with ``stop_from`` at the latest group's point,
    until every group stops at the same point: the first where every start has J < tol.
    """
    distributed = require_distributed()
    bounds = _group_bounds(initial.shape[0], sum(client.nthreads().values()))
    shared = client.scatter(problem, broadcast=True, hash=False)
    results: list[SearchResult] = []
    pending = dict.fromkeys(range(len(bounds)), 0)  # group -> stop_from
    with tqdm(total=len(bounds), disable=not progress, unit="group", desc="search") as bar:
        while pending:
            futures = {
                client.submit(
                    run_group,
                    shared,
                    # A view may carry the whole [K, P] storage when pickled.
                    initial[bounds[index][0] : bounds[index][1]].clone(),
                    seeds[bounds[index][0] : bounds[index][1]],
                    settings,
                    stop_from=stop_from,
                    warn=False,
                    pure=False,
                ): index
                for index, stop_from in pending.items()
            }
            finished: dict[int, SearchResult] = {}
            try:
                for future in distributed.as_completed(futures):
                    finished[futures[future]] = future.result()  # a worker's error raises here
                    bar.update(1)
            except BaseException:
                client.cancel(list(futures))
                raise
            if not results:
                results = [finished[index] for index in range(len(bounds))]
            else:
                for index, result in finished.items():
                    results[index] = result
            losses = torch.cat([result.losses for result in results])
            bar.set_postfix(best=f"{float(losses.min()):.3g}", worst=f"{float(losses.max()):.3g}")
            stop = max(result.config["steps_run"] for result in results)
            pending = {
                index: stop
                for index, result in enumerate(results)
                if result.config["steps_run"] != stop
            }
            bar.total += len(pending)
    history = torch.cat([result.history for result in results])
    history_steps = results[0].history_steps
    report_non_finite(history, history_steps)
    return SearchResult(
        params=torch.cat([result.params for result in results]),
        losses=torch.cat([result.losses for result in results]),
        history=history,
        history_steps=history_steps,
        starts=torch.cat([result.starts for result in results]),
        seeds=[seed for result in results for seed in result.seeds],
        config={"steps_run": stop},
        restarts=torch.cat([result.restarts for result in results]),
    )


__all__ = ["run_on_cluster", "search"]
