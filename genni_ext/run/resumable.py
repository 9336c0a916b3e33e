"""The resumable sweep into an experiment: :func:`run_sweep` computes a grid in the chunks of a
ChunkPlan, each written to the store as soon as it is computed, in this process or on a Dask
cluster, and after an interruption computes only what is missing or damaged."""

from __future__ import annotations

import json
from typing import Any

import torch

from genni_ext._validate import positive_int
from genni_ext.cluster import check_client
from genni_ext.core.grid import Grid, GridResult, grid_markers, grid_metadata
from genni_ext.core.problem import Problem
from genni_ext.core.subspace import Subspace
from genni_ext.errors import InputError, StoreError
from genni_ext.run.chunk_runs import ChunkTask, ProblemSource, run_local, run_on_cluster
from genni_ext.run.plan import SweepPlan, marker_losses, plan_sweep
from genni_ext.store import zarr_grids
from genni_ext.store.experiment import LOCK, Experiment, clear_grid_folder
from genni_ext.store.files import (
    CHECKSUMS,
    exclusive,
    json_text,
    now,
    remove_partials,
    remove_temporaries,
    room_for,
)
from genni_ext.store.manifest import sweep_manifest


def run_sweep(
    experiment: Experiment,
    problem: Problem,
    subspace: Subspace,
    grid: Grid,
    name: str,
    *,
    chunk_points: int | None = None,
    backend: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
    precision: str = "full",
    client: Any = None,
    source: ProblemSource | None = None,
    search: str | None = None,
) -> GridResult:
    """Sweep ``grid`` on ``subspace`` for ``problem`` into ``grids/<name>/``, resumably.

    The grid's points are evaluated in the chunks of a :class:`ChunkPlan` (about
    ``chunk_points`` points each, rounded up to whole slabs of the grid's first axis;
    None: at most about 2·10¹¹ flops, at least 16 chunks where the grid allows, see
    :func:`auto_chunk_points`); each chunk is written to the zarr array as soon as it is
    computed. Run again with the same arguments after an interruption, it computes only
    the missing chunks, recomputes any whose values no longer match their checksum, and
    writes anew any other file that is damaged; a finished grid is loaded, not
    recomputed; a folder left before any chunk was written is started afresh. With a
    different problem, subspace, grid, dtype, precision, backend or chunk size it raises
    StoreError naming what differs. Returns the same GridResult as
    :func:`genni_ext.core.grid.sweep_grid` (values bitwise equal on the fused CPU engine;
    ``wall_time_s`` is the sum over the chunks' compute times, and ``metadata["store"]``
    records the chunking).

    ``search`` names the experiment's search the subspace was built from: recorded, so
    that the search is not replaced by accident (:meth:`save_search`).

    ``client`` (a ``distributed.Client``) runs one task per missing chunk on its
    workers, which must see this experiment's folder at the same path (a shared file
    system). Each worker gets the problem from ``source`` (default: the problem
    itself, shipped once to every worker; :class:`ConfigSource` rebuilds it, once per
    worker, from the experiment's config; :class:`StoreSource` reads it from the
    experiment's problem.zarr), checks its θ, probe and target hashes against
    the grid's manifest, and writes its chunk.
    """
    experiment.grid_dir(name)  # a bad name is refused before anything else
    if not isinstance(grid, Grid):
        raise InputError(f"grid must be a Grid, got {type(grid).__name__}")
    if num_threads is not None:
        positive_int(num_threads, "num_threads")
    if not isinstance(progress, bool):
        raise InputError(f"progress must be True or False, got {progress!r}")
    if client is not None:
        check_client(client)
    plan = plan_sweep(
        problem,
        subspace,
        grid,
        backend=backend,
        precision=precision,
        chunk_points=chunk_points,
        experiment=experiment,
        name=name,
    )
    return run_planned_sweep(
        experiment,
        plan,
        name,
        num_threads=num_threads,
        progress=progress,
        client=client,
        source=source,
        search=search,
    )


def run_planned_sweep(
    experiment: Experiment,
    plan: SweepPlan,
    name: str,
    *,
    num_threads: int | None = None,
    progress: bool = True,
    client: Any = None,
    source: ProblemSource | None = None,
    search: str | None = None,
) -> GridResult:
    """:func:`run_sweep` for a sweep planned already (:func:`plan_sweep` with ``experiment``
    and ``name``); the arguments are trusted as run_sweep checks them."""
    problem, subspace, grid, decision = plan.problem, plan.subspace, plan.grid, plan.decision
    chunks = plan.chunks
    if chunks is None:
        raise InputError("a resumable sweep needs a plan in chunks (plan_sweep(chunked=True))")
    precision = decision.precision
    folder = experiment.grid_dir(name)
    coeffs = plan.inputs.coeffs
    first_coeffs = coeffs[slice(*chunks.bounds(0))]
    manifest = sweep_manifest(problem, subspace, grid, decision.backend, chunks, precision)
    if search is not None:
        manifest["search"] = {"name": search, "id": experiment.search_id(search)}
    task = ChunkTask(folder, chunks, decision, num_threads, manifest["problem"])

    experiment.chunks_computed = 0
    if experiment.grid_layout(folder) == 1:  # genni_ext.store.format1: read, never resumed
        return experiment.first_format_result(folder, name, manifest)
    fresh = not experiment.has_results(folder)
    if not fresh:
        experiment.resumable_manifest(folder, name, manifest)
    first_chunk: tuple[torch.Tensor, float] | None = None
    if fresh:
        # Compute before writing anything, so that bad input that only the sweep
        # detects leaves no files behind: the first chunk here, or with a cluster (which
        # then computes every chunk, none waiting on this one) its first point.
        if client is None:
            first_chunk = task.compute(problem, subspace, first_coeffs, 0)
        else:
            task.compute(problem, subspace, first_coeffs[:1], 0)

    with room_for(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / LOCK, f"grid '{name}' of experiment '{experiment.name}'"):
        remove_temporaries(folder)
        remove_temporaries(folder / zarr_grids.DONE_DIR)
        remove_partials(folder / zarr_grids.ZARR_NAME)
        if fresh and experiment.has_results(folder):  # another process began it meanwhile
            fresh, first_chunk = False, None
        if fresh:
            clear_grid_folder(folder)  # what a sweep stopped before its first chunk left
            kept = {**manifest, "created": now()}
            experiment.write_grid_skeleton(folder, grid, subspace, chunks, kept)
            if first_chunk is not None:
                zarr_grids.write_chunk(folder, chunks, 0, *first_chunk)
                experiment.chunks_computed = 1
        else:
            stored = experiment.resumable_manifest(folder, name, manifest)
            # The manifest on disk is kept (its "created" too), with what it lacks.
            kept = {**manifest, **stored, "checksums": CHECKSUMS}
            files = experiment.grid_files(folder)
            if files.damage or files.legacy:
                for item in files.damage:
                    if progress:
                        print(f"grid '{name}': {item}; writing it anew")
                (folder / "metadata.json").unlink(missing_ok=True)
                experiment.write_grid_skeleton(folder, grid, subspace, chunks, kept)
            elif (folder / "metadata.json").is_file():
                try:
                    return experiment.load_grid(name)
                except StoreError:
                    (folder / "metadata.json").unlink()  # damaged: redo what is bad
        good, damage = zarr_grids.check_chunks(folder, chunks)
        for item in damage:
            zarr_grids.forget_chunk(folder, item.index)
            if progress:
                print(f"grid '{name}': {item.reason}; recomputing it")
        missing = [index for index in range(chunks.num_chunks) if index not in good]
        if client is None:
            experiment.chunks_computed += run_local(
                task, problem, subspace, coeffs, missing, progress, name
            )
        else:
            experiment.chunks_computed += run_on_cluster(
                client, task, source or problem, subspace, coeffs, missing, progress, name
            )
        try:
            values, wall_time = zarr_grids.read_all(folder, chunks)
        except ValueError as error:
            raise StoreError(
                f"grid '{name}' of experiment '{experiment.name}': {error} after the sweep; run "
                "it again to recompute that chunk"
            ) from None
        metadata = grid_metadata(
            problem, grid, backend=decision.backend, wall_time_s=wall_time, precision=precision
        )
        metadata["store"] = {
            "experiment": experiment.name,
            "grid": name,
            "chunk_points": chunks.chunk_points,
            "num_chunks": chunks.num_chunks,
        }
        result = GridResult(
            values=values,
            grid=grid,
            markers=grid_markers(problem, subspace, marker_losses(plan, num_threads)),
            metadata=json.loads(json_text(metadata)),
        )
        zarr_grids.finish(folder, result.metadata)
        experiment.write_finished_grid(folder, result, kept)
        return result
