"""Which of θ and the found points are joined below ε in the full parameter space.

:func:`connectivity_graph` tries paths (:func:`~genni_ext.analysis.connections.connect_many`)
between θ and every point, keeps for each pair the path with the lowest peak J it found,
and groups the points into components joined by paths whose J stays below ε at every
evaluated point. A path certifies what it joins; the converse is not known: two points in
different components here had no path found below ε, which does not prove that none
exists. Pairs tried, in this order, each batch in one call:

1. the segment from θ to every point (``linear``);
2. the G_ReLU orbit path from θ to every point that is a G_ReLU image of θ without a
   permutation (``orbit``: J is θ's along it); an image that needs a permutation is not
   joined by it, since a permutation is not continuous;
3. segments between points of different components (at most ``max_pairs``, the pairs
   closest in parameter space first), which can join two components through a point
   other than θ;
4. a trained path (``curve`` by default, or ``neb``) from θ to one point of every other
   component (the one whose segment from θ peaks lowest), at most ``max_curves``; then
   step 3 again for the components it joined.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from genni_ext._validate import positive_int
from genni_ext.analysis.alignment import SYMMETRY_TOL, align
from genni_ext.analysis.connections import Connection, connect_many
from genni_ext.core.problem import Problem
from genni_ext.errors import InputError

THETA = "θ"
"""The name of the reference point in a graph."""


@dataclass(frozen=True)
class ConnectivityGraph:
    """θ and the found points (``names``, θ first) with, for each pair tried, the path of
    lowest peak J found (``edges``); ``tried`` counts the paths per method."""

    names: list[str]
    edges: dict[tuple[str, str], Connection]
    eps: float
    tried: dict[str, int]
    seconds: float

    def components(self) -> list[list[str]]:
        """The points grouped by paths below ε (θ's group first), in ``names`` order."""
        group = {name: name for name in self.names}

        def root(name: str) -> str:
            while group[name] != name:
                name = group[name]
            return name

        for (a, b), path in self.edges.items():
            if path.below_eps:
                group[root(b)] = root(a)
        groups: dict[str, list[str]] = {}
        for name in self.names:
            groups.setdefault(root(name), []).append(name)
        return sorted(groups.values(), key=lambda members: (THETA not in members, -len(members)))

    def lowest_between(self, one: list[str], other: list[str]) -> Connection | None:
        """The path of lowest peak found between a point of ``one`` and one of ``other``."""
        found = [
            path
            for (a, b), path in self.edges.items()
            if (a in one and b in other) or (a in other and b in one)
        ]
        return min(found, key=lambda path: path.peak, default=None)

    def summary(self) -> str:
        """The components with what certifies them, and the lowest barrier found between
        θ's component and each other one, worded as what was found, not as a proof."""
        groups = self.components()
        tried = ", ".join(f"{count} {method}" for method, count in self.tried.items() if count)
        parts = [
            f"Connectivity of θ and {len(self.names) - 1} found points in the full parameter "
            f"space (ε = {self.eps:.3g}; paths tried: {tried}; {self.seconds:.1f} s): "
            f"{len(groups)} {'group' if len(groups) == 1 else 'groups'} joined by paths "
            "whose J stays below ε at every evaluated point."
        ]
        for members in groups:
            shown = ", ".join(members[:8]) + (
                f" and {len(members) - 8} more" if len(members) > 8 else ""
            )
            parts.append(f"{{{shown}}} ({len(members)}).")
        for members in groups[1:]:
            path = self.lowest_between(groups[0], members)
            if path is None:
                continue
            parts.append(
                f"Between θ's group and {{{members[0]}, …}} the lowest path found ({path.method}) "
                f"peaks at J = {path.peak:.3g} ({path.peak / self.eps:.3g} ε): no path was found "
                "below ε, which is not a proof that none exists."
            )
        return " ".join(parts)


def _orbit_ready(problem: Problem, point: torch.Tensor) -> bool:
    """Whether ``point`` is a G_ReLU image of θ with no permutation (an orbit path joins them)."""
    try:
        found = align(problem.model, problem.theta, point, input_shape=problem.input_shape)
    except InputError:  # a model whose units the alignment cannot read
        return False
    identity = all(np.array_equal(p, np.arange(len(p))) for p in found.permutations)
    return found.residual <= SYMMETRY_TOL and identity


def connectivity_graph(
    problem: Problem,
    points: Mapping[str, torch.Tensor],
    eps: float,
    *,
    trained: str = "curve",
    max_curves: int = 8,
    max_pairs: int = 200,
    curve_steps: int = 400,
    seed: int = 0,
) -> ConnectivityGraph:
    """Paths between θ and every point of ``points`` (name → flat parameters [P]) as in the
    module docstring, at level ``eps``; the graph of the lowest paths found."""
    if not isinstance(problem, Problem):
        raise InputError(f"problem must be a genni_ext.Problem, got {type(problem).__name__}")
    if not points:
        raise InputError("connectivity needs at least one point besides θ")
    if THETA in points:
        raise InputError(f"{THETA!r} names θ itself; give the found points other names")
    if trained not in ("curve", "neb"):
        raise InputError(f"trained must be 'curve' or 'neb', got {trained!r}")
    positive_int(max_curves, "max_curves")
    positive_int(max_pairs, "max_pairs")
    started = time.perf_counter()
    names = [THETA, *points]
    where = {THETA: problem.theta, **{name: point.reshape(-1) for name, point in points.items()}}
    edges: dict[tuple[str, str], Connection] = {}
    tried = {"linear": 0, "orbit": 0, trained: 0}

    def run(pairs: list[tuple[str, str]], method: str, **options: object) -> None:
        if not pairs:
            return
        found = connect_many(problem, [(where[a], where[b]) for a, b in pairs], method,
                             eps=eps, **options)  # fmt: skip
        tried[method] += len(pairs)
        for pair, path in zip(pairs, found, strict=True):
            if path.discontinuous:  # joins a permuted copy, not the pair itself
                continue
            if pair not in edges or path.peak < edges[pair].peak:
                edges[pair] = path

    def groups() -> list[list[str]]:
        return ConnectivityGraph(names, edges, float(eps), tried, 0.0).components()

    def join_across() -> None:
        component = {name: index for index, group in enumerate(groups()) for name in group}
        across = sorted(
            (
                (a, b)
                for a, b in itertools.combinations(points, 2)
                if component[a] != component[b] and (a, b) not in edges
            ),
            key=lambda pair: float(torch.dist(where[pair[0]], where[pair[1]])),
        )
        run(across[:max_pairs], "linear")

    star = [(THETA, name) for name in points]
    run(star, "linear")
    run([pair for pair in star if _orbit_ready(problem, where[pair[1]])], "orbit")
    join_across()
    others = groups()[1:]
    representatives = [
        (THETA, min(group, key=lambda name: edges[(THETA, name)].peak)) for group in others
    ]
    run(representatives[:max_curves], trained, steps=curve_steps, seed=seed)
    join_across()
    return ConnectivityGraph(names, edges, float(eps), tried, time.perf_counter() - started)


__all__ = ["THETA", "ConnectivityGraph", "connectivity_graph"]
