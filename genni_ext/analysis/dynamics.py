"""Morse graphs of gradient descent on a swept landscape, computed with CMGDB.

DOODL3 reads the global dynamics of descent on a loss landscape off a Morse graph: cover
the domain with boxes, approximate the map by a digraph of boxes (each box points to every
box its image meets), take the recurrent strongly connected components as Morse sets and
order them by reachability. :func:`morse_graph` does this for J swept on a 2-D or 3-D grid
of a subspace: which minima attract what, and where the saddles between the pieces of the
ε-set are. :func:`morse_decomposition` runs the same box-map machinery on any map.

**The dynamics.** One step of gradient descent on F restricted to the swept plane (space),
with the move capped and points clipped to the domain (the swept box):

    p ↦ clip(p − min(h, L / |∇F(p)|) ∇F(p))

- F = log(J + δ) with ``log=True`` (the default), else J. A landscape spans many decades
  (J ~ 1e-12 in the ε-set, ~1 on the plateaus around it): on J descent crawls inside the
  ε-set and leaps off the walls; on log J a step is the same relative decrease everywhere.
  δ = 10⁻³ × the smallest positive J on the grid keeps exact zeros finite (and lowest).
- ∇F: central differences of the grid values (``numpy.gradient`` with the axes' spacing Δ,
  second order at the edges too), interpolated multilinearly between grid points. Both are
  second order: the error is about Δ²/6·|∂³F| + Δ²/8·|∂²∇F|, and nothing narrower than a
  cell is resolved (the sweep is all there is). Multilinear rather than cubic: on a cell
  each component is a convex combination of its values at the cell's corners, so it never
  overshoots them and vanishes only where they change sign (which the artefact test below
  relies on).
- The cap L = (1 + 2√m) × the widest box side (m = 2 or 3). The box map gives a box a
  self-loop whenever its images move less than two boxes along every axis; a move of more
  than 2√m boxes is more than two along some axis, so only boxes near critical points stay
  recurrent. The cap also keeps descent local: on J an uncapped step off a steep wall
  jumps across the plane, and on log J the gradient is unbounded next to an exact zero;
  capped, the basins follow the gradient flow's.
- The step h (``step``) is a learning rate for F. Default: h = L / q, q the 5th percentile
  of |∇F| over the grid points where it is not zero, so that everywhere but the flattest
  5 % of the plane a step moves the full L.

**The box map.** ``subdivisions`` bisections cut the domain into boxes, axis j split
⌈(s − j)/m⌉ times (CMGDB's order); by default every axis is split until a box is at most a
grid cell (⌈log₂(n − 1)⌉ times for n points). The image of a box is the bounding box of the
images of its 2^m corners and its centre, padded by one box width on every side (CMGDB's
``padding``): the usual outer approximation, which holds the image of every point of the
box as long as the map bends by less than a box width across a box (not a rigorous
enclosure). The map is evaluated once per lattice point (neighbouring boxes share
corners). CMGDB computes the Morse sets and their order on this one level of boxes, and
their Conley indices with ``conley=True``.

**Artefacts dropped** (:func:`morse_graph` only). Where descent moves between one and two
boxes per step (around every critical point), a box or a row of boxes is recurrent in the
box map but reaches no other recurrent box: a Morse set of its own, stacked in a chain above
the true one. A Morse set that is not a sink is dropped when 0 lies outside the convex hull
of the descent directions possible in its boxes (the interpolated gradient at the corners
of the pieces in which its boxes meet grid cells, plus, on faces of the domain, the same
with the outward component zeroed, since clipping can stop a move there): then some fixed
direction w has w·p strictly decreasing on every step inside the set, so it holds no
invariant set of the descent map. The order of the others is kept by transitivity;
``dropped`` counts the dropped sets.

**Kinds.** attracting: a sink of the Morse graph (every box reachable from it is in it, so
it is forward invariant under the box map). repelling: no box outside it can reach it.
saddle: the rest.

**Retraction** (computed here from the same box map; CMGDB's order retraction is a separate
program). For every box of the finest grid: the index of the Morse set that holds it; else
the index of the attracting set that its forward orbits under the box map reach, when they
reach exactly one (the lowest Morse sets a box can reach are always attracting); else -1:
its orbits reach several (the box straddles a basin boundary at this resolution), or, for a
map of :func:`morse_decomposition` that leaves the domain, none.

**Consistency with the ε-set** (:func:`morse_graph` with ``topology``, the
:class:`~genni_ext.analysis.persistence.Topology` of the same grid). Every component of the
ε-set {J < ε} is a component of a sublevel set of J: the gradient flow cannot leave it, so
it holds at least one attractor of the flow (and the grid minimum of J on it). The box
map can merge what the flow keeps apart: a padded image one box wider on every side joins
minima a few boxes apart. So the Morse sets are compared with the components: a set
"meets" a component when a grid point of that component lies in one of its closed boxes
(or, for a box holding no grid point, is the grid point nearest its centre). The result
is inconsistent when a Morse set meets several components (the box map merged them at
this resolution) or a component meets no attracting set. Then the computation is run
again with every axis split once more (``subdivisions`` + m: boxes half as wide, a padding
half as wide, 2^m times the boxes), and again, until a run is consistent, the next run's
estimated time (4^m × the last run's box-map stages, :data:`REFINE_COST_FACTOR`) would
exceed what is left of ``refine_seconds``, or the subdivision limit is reached; the
summary reports the last run, and how to run the next. The descent field is the same (the
grid's values): only the boxes are finer.

Costs: the box graph has 3^m to 4^m edges per box (more where descent turns within a box);
one breadth-first search of it per Morse set gives the retraction and the kinds. CMGDB and
networkx are optional (``pip install "genni_ext[dynamics]"``) and imported only when needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import linprog
from scipy.sparse import csgraph

from genni_ext._validate import positive_number
from genni_ext.analysis.persistence import Topology
from genni_ext.core.grid import GridResult, Marker
from genni_ext.errors import BackendUnavailableError, InputError

if TYPE_CHECKING:
    import networkx as nx

SUPPORTED_DIMS = (2, 3)
KINDS = ("attracting", "saddle", "repelling")
# A finer grid of boxes makes a box graph of gigabytes (tens of edges per box).
MAX_SUBDIVISIONS = 20
# Fraction of the grid whose gradient sets the default step (see the module docstring).
STEP_QUANTILE = 0.05
# δ of log(J + δ), relative to the smallest positive J.
LOG_FLOOR = 1e-3
# Relative spread of an axis's steps still read as uniform: float32 axes (torch.linspace's
# default) jitter by ~1e-5; the gradient then uses the mean step, off by as little.
UNIFORM_RTOL = 1e-3
# Slack, in box widths, when deciding which boxes an image meets (closed boxes, as CMGDB).
COVER_SLACK = 1e-9
# Directions in the first, cheap convex-hull test of a large Morse set.
HULL_SUBSET = 2000
# Edges built per chunk of boxes, to bound the memory of the box graph's construction.
EDGE_CHUNK = 1_000_000
# Seconds the consistency check may spend on finer box maps (see the module docstring).
DEFAULT_REFINE_SECONDS = 60.0
# A box map with every axis split once more is estimated at this ^ m times the last one's
# time: CMGDB's time grows faster than the 2^m times as many boxes (on the demo's plane,
# 5.6× from 256² to 512² boxes and 31× from 512² to 1024²).
REFINE_COST_FACTOR = 4
# Components without a marker whose lowest grid point a summary sentence names.
LISTED_COMPONENTS = 3

PointMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class MorseSet:
    """One Morse set of descent on a swept grid.

    ``boxes`` [k, 2·m]: each box's lower bounds, then its upper bounds (CMGDB's layout), in
    plane coordinates. ``volume``: their total area (2-D) or volume (3-D). ``min_loss``: the
    smallest J at the grid points whose box is in the set and at the boxes' centres
    (interpolated). ``markers``: names of the markers whose box is in the set (a point on a
    box boundary belongs to the upper box, as for the retraction). ``share``: the
    fraction of all boxes that the retraction gives it. ``conley_index``: CMGDB's Conley
    index, one string per homology dimension 0..m ("0" when trivial, else the
    characteristic polynomial of the index map: "x-1" in dimension k for a non-degenerate
    critical point with k descending directions), or None without ``conley=True``.
    """

    index: int
    kind: str
    boxes: np.ndarray
    volume: float
    min_loss: float
    markers: tuple[str, ...]
    share: float
    conley_index: tuple[str, ...] | None


@dataclass(frozen=True, eq=False)
class MorseConsistency:
    """The Morse sets against the components of the ε-set of the same grid.

    ``eps`` and ``components`` (their number; labels 1.. as in ``Topology.labels``);
    ``attracting`` the number of attracting sets. ``set_components``: Morse set index → the
    component labels it meets; ``component_attractors``: component label → the attracting
    sets that meet it. ``merged``: Morse sets meeting several components; ``unattracted``:
    components meeting no attracting set; ``merged_markers``: the markers in the
    components of either (or in the merged sets); ``marker_components`` the topology's
    marker → component label (0: outside the ε-set); ``component_minima`` label → (the
    coordinates of its lowest grid point, J there); ``components_confirmed`` whether the
    topology's resolution check found as many components at 2× resolution (None: not
    checked). ``consistent``: no merge and no component without an attracting set.
    ``refined``: the last of the finer Morse graphs computed (every axis split once more
    per run, until one is consistent or the budget or the subdivision limit stops it; its
    own ``consistency`` is not refined again), or None; ``refine_note``: why refining
    stopped short of a consistent box map, and how to run the next one ("" when it did not).
    """

    eps: float
    components: int
    attracting: int
    set_components: dict[int, tuple[int, ...]]
    component_attractors: dict[int, tuple[int, ...]]
    merged: tuple[int, ...]
    unattracted: tuple[int, ...]
    merged_markers: tuple[str, ...]
    marker_components: dict[str, int]
    component_minima: dict[int, tuple[tuple[float, ...], float]]
    components_confirmed: bool | None
    consistent: bool
    refined: MorseGraph | None
    refine_note: str


@dataclass(frozen=True, eq=False)
class MorseGraph:
    """The Morse graph of descent on a swept grid (see the module docstring for the method).

    - ``morse_sets``: the :class:`MorseSet` s, numbered by increasing ``min_loss``.
    - ``graph``: a ``networkx.DiGraph`` on their indices, an edge i → j when j is reachable
      from i and nothing lies between (the Hasse diagram; ``networkx.descendants`` gives
      everything reachable). Nodes carry ``kind``, ``min_loss``, ``volume``, ``share``,
      ``markers``, ``boxes`` (their count) and ``conley_index``.
    - ``retraction``: int64, shaped ``box_shape`` (C order, axis i along direction i): the
      Morse set index of every box (-1: undecided). ``grid_retraction``: the same read at
      every grid point (the box holding it; a point on a box boundary goes to the upper box),
      shaped like the grid.
    - ``marker_basins``: marker name -> the retraction at its box (-1 outside the domain).
    - ``lower_bounds``, ``upper_bounds``, ``box_shape``, ``subdivisions``: the boxes;
      ``num_boxes`` their count. ``step`` (h), ``max_move`` (L) and ``log``: the dynamics.
    - ``dropped``: Morse sets of the box map dropped as holding no invariant set.
    - ``timings``: seconds per stage ("box_map", "cmgdb", "artefacts" (the tests that drop
      sets, and the order of the rest), "box_graph", "retraction", "total" (this box map),
      "refined" (the consistency check's finer box map, when run)).
    - ``consistency``: the :class:`MorseConsistency` with the ε-set, or None without
      ``topology``.
    """

    morse_sets: tuple[MorseSet, ...]
    graph: nx.DiGraph
    retraction: np.ndarray
    grid_retraction: np.ndarray
    marker_basins: dict[str, int]
    lower_bounds: tuple[float, ...]
    upper_bounds: tuple[float, ...]
    box_shape: tuple[int, ...]
    subdivisions: int
    num_boxes: int
    step: float
    max_move: float
    log: bool
    dropped: int
    timings: dict[str, float]
    consistency: MorseConsistency | None

    @property
    def conley_indices(self) -> tuple[tuple[str, ...], ...] | None:
        """Every Morse set's Conley index (in index order), or None without ``conley=True``."""
        if not self.morse_sets or self.morse_sets[0].conley_index is None:
            return None
        return tuple(morse_set.conley_index for morse_set in self.morse_sets)

    def rectangles(self, dims: tuple[int, int] = (0, 1)) -> list[np.ndarray]:
        """Per Morse set, its boxes projected on the plane of axes ``dims`` as rectangles
        [k, 4] (x, y, width, height) in plane coordinates, duplicates of a projection
        removed: what ``matplotlib.patches.Rectangle`` takes."""
        dim = len(self.box_shape)
        if (
            not isinstance(dims, Sequence)
            or len(dims) != 2
            or any(isinstance(d, bool) or not isinstance(d, int) for d in dims)
            or not all(0 <= d < dim for d in dims)
            or dims[0] == dims[1]
        ):
            raise InputError(
                f"dims must be two different axes in 0..{dim - 1} (the plane to draw on), "
                f"got {dims!r}"
            )
        first, second = dims
        rectangles = []
        for morse_set in self.morse_sets:
            lower = morse_set.boxes[:, [first, second]]
            size = morse_set.boxes[:, [dim + first, dim + second]] - lower
            rectangles.append(np.unique(np.hstack([lower, size]), axis=0))
        return rectangles

    def summary(self) -> str:
        """Plain sentences for a report: the Morse sets, what lies above what, and how the
        retraction shares the plane."""
        return _summary_text(self)


@dataclass(frozen=True, eq=False)
class MorseDecomposition:
    """The Morse decomposition of any map's box map (:func:`morse_decomposition`).

    ``morse_sets``: per Morse set (CMGDB's numbering), its boxes [k, 2·m] (lower bounds,
    then upper bounds); ``kinds`` their kinds; ``graph`` the Hasse diagram of their order
    (``networkx.DiGraph``, edge i → j when j is reachable from i); ``conley_indices`` as in
    :class:`MorseSet` (None without ``conley=True``); ``retraction`` int64 shaped
    ``box_shape`` (see the module docstring); ``timings`` in seconds.
    """

    morse_sets: tuple[np.ndarray, ...]
    kinds: tuple[str, ...]
    graph: nx.DiGraph
    conley_indices: tuple[tuple[str, ...], ...] | None
    retraction: np.ndarray
    lower_bounds: tuple[float, ...]
    upper_bounds: tuple[float, ...]
    box_shape: tuple[int, ...]
    subdivisions: int
    timings: dict[str, float]


def morse_graph(
    result: GridResult,
    *,
    subdivisions: int | None = None,
    step: float | None = None,
    log: bool = True,
    conley: bool = False,
    topology: Topology | None = None,
    refine_seconds: float = DEFAULT_REFINE_SECONDS,
) -> MorseGraph:
    """The Morse graph of gradient descent on J (``log=False``) or log J swept on a 2-D or
    3-D grid with evenly spaced axes.

    ``subdivisions``: bisections of the domain (default: until a box is at most a grid
    cell; at most 20). ``step``: the learning rate h (default from the gradient's scale).
    ``conley``: also compute Conley indices (CMGDB). ``topology``: the
    :class:`~genni_ext.analysis.persistence.Topology` of the same grid, to check the Morse
    sets against the ε-set's components; when they disagree, a finer box map is computed
    if it fits in ``refine_seconds`` (>= 0; 0: never). The module docstring says what is
    computed and why. Needs CMGDB and networkx (``pip install "genni_ext[dynamics]"``).
    """
    started = time.perf_counter()
    if not isinstance(result, GridResult):
        raise InputError(f"result must be a GridResult, got {type(result).__name__}")
    axes = _uniform_axes(result)
    values = _finite_values(result)
    _flag(log, "log")
    _flag(conley, "conley")
    if step is not None:
        step = positive_number(step, "step")
    given_step = step
    if topology is not None and (
        not isinstance(topology, Topology) or topology.labels.shape != values.shape
    ):
        raise InputError(
            "topology must be the Topology of the same grid (genni_ext.analysis.topology("
            f"result, eps)), shaped {list(values.shape)}; got "
            + (
                f"one shaped {list(topology.labels.shape)}"
                if isinstance(topology, Topology)
                else type(topology).__name__
            )
        )
    if isinstance(refine_seconds, bool) or not isinstance(refine_seconds, Real):
        raise InputError(f"refine_seconds must be a number >= 0, got {refine_seconds!r}")
    if not math.isfinite(refine_seconds) or refine_seconds < 0:
        raise InputError(f"refine_seconds must be a finite number >= 0, got {refine_seconds!r}")
    if log and values.min() < 0:
        raise InputError(
            f"result.values has negative entries (down to {values.min():.3g}), so log J is "
            "undefined; a loss J is >= 0: pass log=False to descend on the values as they are"
        )
    lattice = _BoxLattice.build(
        tuple(axis[0] for axis in axes),
        tuple(axis[-1] for axis in axes),
        _default_subdivisions(axes) if subdivisions is None else subdivisions,
    )
    marker_names, marker_boxes = _marker_boxes(result.markers, lattice)
    cmgdb, networkx = _backends()

    field = _log_field(values) if log else values
    spacing = np.array([(axis[-1] - axis[0]) / (axis.shape[0] - 1) for axis in axes])
    gradient = np.stack(np.gradient(field, *spacing.tolist(), edge_order=2), axis=-1)
    max_move = (1 + 2 * math.sqrt(lattice.dim)) * float(lattice.widths.max())
    if step is None:
        step = _default_step(gradient, max_move)
    interpolate_gradient = _Multilinear(gradient, lattice.lower, spacing)
    descent = _descent_map(interpolate_gradient, step, max_move, lattice)
    directions = _DescentDirections(interpolate_gradient, lattice)
    pieces = _decompose(cmgdb, networkx, descent, lattice, conley, directions.holds_no_zero)

    # Number the Morse sets by their lowest J, and read everything per set in that order.
    grid_boxes = lattice.box_of_points(_grid_points(axes))
    interpolate_loss = _Multilinear(values[..., None], lattice.lower, spacing)
    min_losses = np.array(
        [
            _min_loss(boxes, values.reshape(-1), grid_boxes, interpolate_loss, lattice)
            for boxes in pieces.sets
        ]
    )
    order = np.lexsort((np.arange(len(pieces.sets)), min_losses))
    renumber = np.empty(len(order), dtype=np.int64)
    renumber[order] = np.arange(len(order))
    retraction = np.where(pieces.retraction >= 0, renumber[pieces.retraction], -1)
    morse_sets = tuple(
        MorseSet(
            index=new,
            kind=pieces.kinds[old],
            boxes=lattice.bounds(pieces.sets[old]),
            volume=float(len(pieces.sets[old]) * np.prod(lattice.widths)),
            min_loss=float(min_losses[old]),
            markers=tuple(
                name
                for name, held in zip(
                    marker_names, np.isin(marker_boxes, pieces.sets[old]), strict=True
                )
                if held
            ),
            share=float(np.count_nonzero(retraction == new) / lattice.count),
            conley_index=None if pieces.conley is None else pieces.conley[old],
        )
        for new, old in enumerate(order.tolist())
    )
    graph = networkx.relabel_nodes(pieces.graph, dict(enumerate(renumber.tolist())))
    _annotate(graph, morse_sets)
    timings = dict(pieces.timings)
    timings["total"] = time.perf_counter() - started
    consistency = None
    if topology is not None:
        met = _components_met(morse_sets, lattice, axes, topology.labels)
        refine = (
            _Refine(result, given_step, log, conley, topology, float(refine_seconds))
            if refine_seconds > 0
            else None
        )
        consistency = _consistency(
            morse_sets, met, topology, lattice, (axes, values), _stage_seconds(timings), refine
        )
        if consistency.refined is not None:
            timings["refined"] = time.perf_counter() - started - timings["total"]
    return MorseGraph(
        morse_sets=morse_sets,
        graph=graph,
        retraction=retraction.reshape(lattice.shape),
        grid_retraction=np.where(grid_boxes >= 0, retraction[grid_boxes], -1).reshape(values.shape),
        marker_basins={
            name: int(retraction[box]) if box >= 0 else -1
            for name, box in zip(marker_names, marker_boxes, strict=True)
        },
        lower_bounds=tuple(lattice.lower.tolist()),
        upper_bounds=tuple(lattice.upper.tolist()),
        box_shape=lattice.shape,
        subdivisions=lattice.subdivisions,
        num_boxes=lattice.count,
        step=float(step),
        max_move=max_move,
        log=log,
        dropped=pieces.dropped,
        timings=timings,
        consistency=consistency,
    )


@dataclass(frozen=True)
class _Refine:
    """The arguments of :func:`morse_graph` for its finer run (``run(subdivisions)``);
    ``step`` the caller's (None: the default, recomputed for the finer boxes)."""

    result: GridResult
    step: float | None
    log: bool
    conley: bool
    topology: Topology
    seconds: float

    def run(self, subdivisions: int) -> MorseGraph:
        return morse_graph(
            self.result,
            subdivisions=subdivisions,
            step=self.step,
            log=self.log,
            conley=self.conley,
            topology=self.topology,
            refine_seconds=0.0,
        )


def _components_met(
    morse_sets: Sequence[MorseSet],
    lattice: _BoxLattice,
    axes: tuple[np.ndarray, ...],
    labels: np.ndarray,
) -> dict[int, tuple[int, ...]]:
    """Per Morse set, the ε-set components (labels > 0) of the grid points in its closed
    boxes, or of the grid point nearest the centre of a box holding none."""
    lower = np.array([axis[0] for axis in axes])
    spacing = np.array([(axis[-1] - axis[0]) / (axis.shape[0] - 1) for axis in axes])
    last = np.array(labels.shape) - 1
    met = {}
    for morse_set in morse_sets:
        dim = lattice.dim
        low = (morse_set.boxes[:, :dim] - lower) / spacing
        high = (morse_set.boxes[:, dim:] - lower) / spacing
        first = np.clip(np.ceil(low - COVER_SLACK).astype(np.int64), 0, last)
        stop = np.clip(np.floor(high + COVER_SLACK).astype(np.int64), 0, last)
        nearest = np.clip(np.rint((low + high) / 2).astype(np.int64), 0, last)
        empty = np.any(stop < first, axis=1)
        first[empty] = nearest[empty]
        stop[empty] = nearest[empty]
        found: set[int] = set()
        for offset in np.ndindex(*(stop - first).max(axis=0) + 1):
            index = first + np.array(offset)
            inside = np.all(index <= stop, axis=1)
            found.update(int(label) for label in labels[tuple(index[inside].T)] if label > 0)
        met[morse_set.index] = tuple(sorted(found))
    return met


def _consistency(
    morse_sets: Sequence[MorseSet],
    met: dict[int, tuple[int, ...]],
    topology: Topology,
    lattice: _BoxLattice,
    grid: tuple[tuple[np.ndarray, ...], np.ndarray],
    seconds: float,
    refine: _Refine | None,
) -> MorseConsistency:
    """Compare ``met`` with the components; refine when they disagree (module docstring).
    ``grid``: the axes and J, for each component's lowest grid point."""
    count = len(topology.component_sizes)
    attracting = [s.index for s in morse_sets if s.kind == "attracting"]
    attractors = {
        label: tuple(index for index in attracting if label in met[index])
        for label in range(1, count + 1)
    }
    merged = tuple(index for index, labels in met.items() if len(labels) > 1)
    unattracted = tuple(label for label, held in attractors.items() if not held)
    involved = {label for index in merged for label in met[index]} | set(unattracted)
    in_merged = {name for index in merged for name in morse_sets[index].markers}
    markers = tuple(
        name
        for name, label in topology.marker_components.items()
        if label in involved or name in in_merged
    )
    axes, values = grid
    lowest = ndimage.minimum_position(values, topology.labels, list(range(1, count + 1)))
    minima = {
        label: (
            tuple(float(axis[i]) for axis, i in zip(axes, position, strict=True)),
            float(values[position]),
        )
        for label, position in enumerate(lowest, start=1)
    }
    consistent = not merged and not unattracted
    refined, note = (None, "") if consistent else _refined(lattice, seconds, refine)
    check = topology.resolution
    confirmed = None
    if check.checked and check.betti_coarse and check.betti_refined:
        confirmed = check.betti_coarse[0] == check.betti_refined[0]
    return MorseConsistency(
        eps=topology.eps,
        components=count,
        attracting=len(attracting),
        set_components=met,
        component_attractors=attractors,
        merged=merged,
        unattracted=unattracted,
        merged_markers=markers,
        marker_components=dict(topology.marker_components),
        component_minima=minima,
        components_confirmed=confirmed,
        consistent=consistent,
        refined=refined,
        refine_note=note,
    )


def _stage_seconds(timings: dict[str, float]) -> float:
    """Seconds of a run's box-map stages: its "total" without the libraries' import and
    the set-up, which a finer run does not repeat at a larger scale."""
    return sum(value for key, value in timings.items() if key not in ("total", "refined"))


def _refined(
    lattice: _BoxLattice, seconds: float, refine: _Refine | None
) -> tuple[MorseGraph | None, str]:
    """Finer box maps, every axis split once more each time, until one is consistent, the
    next would not fit in the budget, or the subdivision limit is reached: the last one
    run (None: none), and why it stopped ("" when consistent)."""
    subdivisions, last, spent, done = lattice.subdivisions, seconds, 0.0, None
    while True:
        finer = subdivisions + lattice.dim
        estimate = REFINE_COST_FACTOR**lattice.dim * last
        call = f"morse_graph(result, subdivisions={finer}, topology=topology(result, eps))"
        if finer > MAX_SUBDIVISIONS:
            return done, (
                f"a finer box map needs subdivisions={finer}, above the limit of "
                f"{MAX_SUBDIVISIONS} (2^{MAX_SUBDIVISIONS} boxes); sweep a smaller region "
                "around the merged points instead"
            )
        if refine is None:
            return (
                done,
                f"refine_seconds=0; to refine, run {call} (about {estimate:.0f} s)",
            )
        if spent + estimate > refine.seconds:
            left = f"the {refine.seconds - spent:.0f} s left of " if spent else ""
            return done, (
                f"subdivisions={finer} would take about {estimate:.0f} s "
                f"({REFINE_COST_FACTOR}^{lattice.dim} × the last run's {last:.1f} s), more than "
                f"{left}the budget of {refine.seconds:g} s; to run it: {call}"
            )
        done = refine.run(finer)
        last = _stage_seconds(done.timings)
        spent += last
        subdivisions = finer
        if done.consistency is not None and done.consistency.consistent:
            return done, ""


def morse_decomposition(
    point_map: PointMap,
    lower_bounds: Sequence[float],
    upper_bounds: Sequence[float],
    subdivisions: int,
    *,
    conley: bool = False,
) -> MorseDecomposition:
    """Morse sets, their order, Conley indices and retraction of the box map of any map.

    ``point_map`` takes points [P, m] (float64, m = 2 or 3) and returns their images
    [P, m]; it is called on the lattice of box corners and centres. The box map and the
    retraction are those of :func:`morse_graph` (corners and centre, padded by a box); no
    Morse set is dropped. Images outside the domain are cut to it, as CMGDB does.
    """
    started = time.perf_counter()
    if not callable(point_map):
        raise InputError(
            f"point_map must be a callable from points [P, m] to their images [P, m], got "
            f"{type(point_map).__name__}"
        )
    lower = _bounds(lower_bounds, "lower_bounds")
    upper = _bounds(upper_bounds, "upper_bounds")
    if len(lower) != len(upper) or not all(a < b for a, b in zip(lower, upper, strict=True)):
        raise InputError(
            f"lower_bounds {list(lower)} and upper_bounds {list(upper)} must have the same "
            "length and lower < upper on every axis"
        )
    _flag(conley, "conley")
    lattice = _BoxLattice.build(lower, upper, subdivisions)
    cmgdb, networkx = _backends()
    pieces = _decompose(cmgdb, networkx, _checked(point_map, lattice.dim), lattice, conley, None)
    timings = dict(pieces.timings)
    timings["total"] = time.perf_counter() - started
    return MorseDecomposition(
        morse_sets=tuple(lattice.bounds(boxes) for boxes in pieces.sets),
        kinds=pieces.kinds,
        graph=pieces.graph,
        conley_indices=pieces.conley,
        retraction=pieces.retraction.reshape(lattice.shape),
        lower_bounds=tuple(lattice.lower.tolist()),
        upper_bounds=tuple(lattice.upper.tolist()),
        box_shape=lattice.shape,
        subdivisions=lattice.subdivisions,
        timings=timings,
    )


# ---------------------------------------------------------------------------------------
# Arguments


def _backends() -> tuple[Any, Any]:
    """CMGDB and networkx, or BackendUnavailableError saying how to install them."""
    try:
        import CMGDB
        import networkx
    except ImportError as error:
        raise BackendUnavailableError(
            f"Morse graphs need CMGDB and networkx ({error.name or 'one of them'} is not "
            'installed); install them with pip install "genni_ext[dynamics]"'
        ) from error
    return CMGDB, networkx


def _flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")


def _bounds(value: object, name: str) -> tuple[float, ...]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) not in SUPPORTED_DIMS
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise InputError(f"{name} must be 2 or 3 finite numbers (one per axis), got {value!r}")
    return tuple(float(v) for v in value)


def _uniform_axes(result: GridResult) -> tuple[np.ndarray, ...]:
    """The axes of a 2-D or 3-D grid, each increasing, evenly spaced, >= 3 points."""
    grid = result.grid
    if grid.axes is None:
        raise InputError(
            f"result's grid is a list of {grid.size} coefficient vectors without axes; a Morse "
            "graph needs a 2-D or 3-D axis grid (Grid.uniform or Grid.from_axes)"
        )
    if grid.dim not in SUPPORTED_DIMS:
        raise InputError(
            f"result's grid has {grid.dim} axes; a Morse graph needs a 2-D or 3-D grid (for "
            "more dimensions, sweep a 2-D or 3-D slice)"
        )
    axes = tuple(axis.numpy() for axis in grid.axes)
    for index, axis in enumerate(axes):
        if axis.shape[0] < 3:
            raise InputError(
                f"axis {index} of result's grid has {axis.shape[0]} points; the gradient needs "
                "at least 3 per axis"
            )
        steps = np.diff(axis)
        if not bool(np.all(steps > 0)) or np.ptp(steps) > UNIFORM_RTOL * steps.mean():
            raise InputError(
                f"axis {index} of result's grid is not increasing and evenly spaced (steps from "
                f"{steps.min():.6g} to {steps.max():.6g}); the gradient and the boxes need a "
                "uniform grid such as Grid.uniform"
            )
    return axes


def _finite_values(result: GridResult) -> np.ndarray:
    values = result.values.numpy()
    finite = np.isfinite(values)
    if not finite.all():
        nans = int(np.isnan(values).sum())
        raise InputError(
            f"result.values has {nans} NaN and {values.size - int(finite.sum()) - nans} "
            f"infinite values out of {values.size}; descent needs J everywhere (rerun the "
            "sweep in float64, or on smaller bounds)"
        )
    return values


def _default_subdivisions(axes: tuple[np.ndarray, ...]) -> int:
    """Bisections that make every box at most a grid cell."""
    per_axis = max(math.ceil(math.log2(axis.shape[0] - 1)) for axis in axes)
    return min(len(axes) * per_axis, MAX_SUBDIVISIONS)


def _checked(point_map: PointMap, dim: int) -> PointMap:
    """``point_map`` with its images checked: [P, m] finite floats."""

    def images(points: np.ndarray) -> np.ndarray:
        mapped = np.asarray(point_map(points), dtype=np.float64)
        if mapped.shape != points.shape:
            raise InputError(
                f"point_map returned shape {list(mapped.shape)} for points of shape "
                f"{list(points.shape)}; it must return one image per point [P, {dim}]"
            )
        if not np.isfinite(mapped).all():
            raise InputError(
                "point_map returned NaN or infinite images; every image must be finite"
            )
        return mapped

    return images


# ---------------------------------------------------------------------------------------
# Boxes


@dataclass(frozen=True, eq=False)
class _BoxLattice:
    """The finest boxes: ``shape`` boxes per axis on [lower, upper], C order."""

    lower: np.ndarray
    upper: np.ndarray
    shape: tuple[int, ...]
    subdivisions: int

    @classmethod
    def build(
        cls, lower: Sequence[float], upper: Sequence[float], subdivisions: object
    ) -> _BoxLattice:
        dim = len(lower)
        if (
            isinstance(subdivisions, bool)
            or not isinstance(subdivisions, int)
            or not dim <= subdivisions <= MAX_SUBDIVISIONS
        ):
            raise InputError(
                f"subdivisions must be an int from {dim} (one bisection per axis) to "
                f"{MAX_SUBDIVISIONS} (2^{MAX_SUBDIVISIONS} boxes; a finer box graph takes "
                f"gigabytes), got {subdivisions!r}"
            )
        shape = tuple(2 ** math.ceil((subdivisions - axis) / dim) for axis in range(dim))
        return cls(
            np.asarray(lower, dtype=np.float64),
            np.asarray(upper, dtype=np.float64),
            shape,
            subdivisions,
        )

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def widths(self) -> np.ndarray:
        return (self.upper - self.lower) / np.array(self.shape)

    def bounds(self, boxes: np.ndarray) -> np.ndarray:
        """[k, 2·m] lower then upper bounds of the boxes with flat indices ``boxes``."""
        index = np.stack(np.unravel_index(boxes, self.shape), axis=1)
        low = self.lower + index * self.widths
        return np.hstack([low, low + self.widths])

    def flat_index(self, low_corners: np.ndarray) -> np.ndarray:
        """Flat indices of the boxes whose lower corners are ``low_corners`` [k, m]."""
        index = np.rint((low_corners - self.lower) / self.widths).astype(np.int64)
        return np.ravel_multi_index(tuple(index.T), self.shape)

    def box_of_points(self, points: np.ndarray) -> np.ndarray:
        """Flat index of the box holding each point (upper box on a boundary), -1 outside."""
        relative = (points - self.lower) / self.widths
        inside = np.all((relative >= -COVER_SLACK) & (relative <= np.array(self.shape)), axis=1)
        index = np.clip(np.floor(relative).astype(np.int64), 0, np.array(self.shape) - 1)
        flat = np.ravel_multi_index(tuple(index.T), self.shape)
        return np.where(inside, flat, -1)

    def axis_points(self, halves: bool) -> list[np.ndarray]:
        """Per axis the box corners (``halves=False``) or the box centres."""
        return [
            np.linspace(lo, hi, n + 1)[:-1] + (hi - lo) / n / 2
            if halves
            else np.linspace(lo, hi, n + 1)
            for lo, hi, n in zip(self.lower, self.upper, self.shape, strict=True)
        ]


def _box_images(point_map: PointMap, lattice: _BoxLattice) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds [N, m] of every box's image: the bounding box of the images
    of its corners and centre, padded by one box width."""
    dim = lattice.dim
    corners = _grid_points(tuple(lattice.axis_points(halves=False)))
    corner_images = point_map(corners).reshape(*(n + 1 for n in lattice.shape), dim)
    centre_images = point_map(_grid_points(tuple(lattice.axis_points(halves=True))))
    low = centre_images.reshape(*lattice.shape, dim).copy()
    high = low.copy()
    for corner in range(2**dim):
        offset = tuple(
            slice((corner >> axis) & 1, ((corner >> axis) & 1) + n)
            for axis, n in enumerate(lattice.shape)
        )
        np.minimum(low, corner_images[offset], out=low)
        np.maximum(high, corner_images[offset], out=high)
    return (low.reshape(-1, dim) - lattice.widths, high.reshape(-1, dim) + lattice.widths)


def _box_graph(low: np.ndarray, high: np.ndarray, lattice: _BoxLattice) -> sparse.csr_matrix:
    """Box i → every box whose closed box meets i's image (CMGDB's cover), as CSR."""
    shape = np.array(lattice.shape)
    first = np.ceil((low - lattice.lower) / lattice.widths - COVER_SLACK).astype(np.int64) - 1
    last = np.floor((high - lattice.lower) / lattice.widths + COVER_SLACK).astype(np.int64)
    meets = np.all((last >= 0) & (first < shape), axis=1)
    first = np.clip(first, 0, shape - 1)
    last = np.clip(last, 0, shape - 1)
    sizes = np.where(meets[:, None], last - first + 1, 0)
    counts = sizes.prod(axis=1)
    strides = np.array([math.prod(lattice.shape[axis + 1 :]) for axis in range(lattice.dim)])
    ends = np.cumsum(counts)
    targets = []
    start = 0
    while start < lattice.count:
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + EDGE_CHUNK, side="right")))
        chunk_counts = counts[start:stop]
        offsets = np.concatenate([[0], np.cumsum(chunk_counts)[:-1]])
        remainder = np.arange(int(chunk_counts.sum())) - np.repeat(offsets, chunk_counts)
        flat = np.zeros(remainder.shape[0], dtype=np.int64)
        for axis in reversed(range(lattice.dim)):
            size = np.repeat(sizes[start:stop, axis], chunk_counts)
            coordinate = np.repeat(first[start:stop, axis], chunk_counts) + remainder % size
            remainder //= size
            flat += coordinate * strides[axis]
        targets.append(flat.astype(np.int32))
        start = stop
    indices = np.concatenate(targets)
    indptr = np.concatenate([[0], ends]).astype(np.int64)
    return sparse.csr_matrix(
        (np.ones(indices.shape[0]), indices, indptr), shape=(lattice.count, lattice.count)
    )


# ---------------------------------------------------------------------------------------
# The decomposition shared by both entry points


@dataclass(frozen=True)
class _Pieces:
    sets: list[np.ndarray]
    kinds: tuple[str, ...]
    graph: Any
    conley: tuple[tuple[str, ...], ...] | None
    retraction: np.ndarray
    dropped: int
    timings: dict[str, float]


def _decompose(
    cmgdb: Any,
    networkx: Any,
    point_map: PointMap,
    lattice: _BoxLattice,
    conley: bool,
    holds_no_invariant_set: Callable[[np.ndarray], bool] | None,
) -> _Pieces:
    """Box map → CMGDB Morse sets and order → (drop artefacts) → kinds and retraction."""
    clock = time.perf_counter()
    low, high = _box_images(point_map, lattice)
    images = np.hstack([low, high])
    timings = {"box_map": time.perf_counter() - clock}

    clock = time.perf_counter()
    raw_sets, raw_graph, raw_conley = _cmgdb_morse_graph(cmgdb, networkx, images, lattice, conley)
    timings["cmgdb"] = time.perf_counter() - clock

    clock = time.perf_counter()
    keep = [
        index
        for index, boxes in enumerate(raw_sets)
        if holds_no_invariant_set is None
        or raw_graph.out_degree(index) == 0
        or not holds_no_invariant_set(boxes)
    ]
    renumber = {old: new for new, old in enumerate(keep)}
    closure = networkx.DiGraph()
    closure.add_nodes_from(range(len(keep)))
    for old, new in renumber.items():
        below = networkx.descendants(raw_graph, old)
        closure.add_edges_from((new, renumber[other]) for other in below if other in renumber)
    graph = networkx.transitive_reduction(closure)
    sets = [raw_sets[old] for old in keep]
    timings["artefacts"] = time.perf_counter() - clock

    clock = time.perf_counter()
    predecessors = _box_graph(low, high, lattice).transpose().tocsr()
    timings["box_graph"] = time.perf_counter() - clock

    clock = time.perf_counter()
    kinds, retraction = _kinds_and_retraction(predecessors, sets, graph, lattice.count)
    timings["retraction"] = time.perf_counter() - clock
    return _Pieces(
        sets=sets,
        kinds=kinds,
        graph=graph,
        conley=None if raw_conley is None else tuple(raw_conley[old] for old in keep),
        retraction=retraction,
        dropped=len(raw_sets) - len(keep),
        timings=timings,
    )


def _cmgdb_morse_graph(
    cmgdb: Any, networkx: Any, images: np.ndarray, lattice: _BoxLattice, conley: bool
) -> tuple[list[np.ndarray], Any, list[tuple[str, ...]] | None]:
    """CMGDB's Morse sets (flat box indices), their order (a DAG on CMGDB's numbering,
    edge i → j when j is below i) and Conley indices, on one level of boxes."""
    dim = lattice.dim

    def batch(rects: Any) -> np.ndarray:
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 2 * dim)
        sides = rects[:, dim:] - rects[:, :dim]
        if not np.allclose(sides, lattice.widths, rtol=1e-6, atol=0):
            raise RuntimeError(
                "CMGDB asked for the image of a box that is not one of the finest boxes; this "
                "is a bug in genni_ext's CMGDB wrapper"
            )
        return images[lattice.box_of_points((rects[:, :dim] + rects[:, dim:]) / 2)]

    model = cmgdb.Model(
        lattice.subdivisions,
        lattice.lower.tolist(),
        lattice.upper.tolist(),
        lambda rect: batch([rect])[0].tolist(),
    )
    model.set_batch_map(batch)
    compute = cmgdb.ComputeConleyMorseGraph if conley else cmgdb.ComputeMorseGraph
    graph, _ = compute(model)
    first_box = np.array(graph.phase_space_box(0))
    if not np.allclose(first_box[dim:] - first_box[:dim], lattice.widths, rtol=1e-9, atol=0):
        raise RuntimeError(
            "CMGDB split the domain differently from genni_ext's box lattice; this is a bug in "
            "genni_ext's CMGDB wrapper (or an incompatible CMGDB version)"
        )
    count = graph.num_vertices()
    sets = [
        np.sort(
            lattice.flat_index(np.array(graph.morse_set_boxes(i)).reshape(-1, 2 * dim)[:, :dim])
        )
        for i in range(count)
    ]
    order = networkx.DiGraph()
    order.add_nodes_from(range(count))
    order.add_edges_from(graph.edges())
    indices = [tuple(graph.annotations(i)) for i in range(count)] if conley else None
    return sets, order, indices


def _kinds_and_retraction(
    predecessors: sparse.csr_matrix, sets: list[np.ndarray], graph: Any, count: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """Each Morse set's kind, and every box's retraction, from breadth-first searches of
    the box graph backwards (``predecessors``: box → the boxes whose images meet it) from
    each Morse set."""
    label = np.full(count, -1, dtype=np.int64)
    for index, boxes in enumerate(sets):
        label[boxes] = index
    reaching = np.zeros(count, dtype=np.int64)
    attractor = np.full(count, -1, dtype=np.int64)
    kinds = []
    for index, boxes in enumerate(sets):
        ancestors = csgraph.breadth_first_order(
            predecessors, int(boxes[0]), directed=True, return_predecessors=False
        )
        if graph.out_degree(index) == 0:
            kinds.append("attracting")
            reaching[ancestors] += 1
            attractor[ancestors] = index
        elif ancestors.shape[0] == boxes.shape[0]:
            kinds.append("repelling")
        else:
            kinds.append("saddle")
    retraction = np.where(reaching == 1, attractor, -1)
    retraction = np.where(label >= 0, label, retraction)
    return tuple(kinds), retraction


# ---------------------------------------------------------------------------------------
# Descent on the swept grid


class _Multilinear:
    """Multilinear interpolation of ``table`` [*n, c] given on a uniform grid."""

    def __init__(self, table: np.ndarray, lower: np.ndarray, spacing: np.ndarray) -> None:
        self.table = table
        self.lower = lower
        self.spacing = spacing
        self.last_cell = np.array(table.shape[:-1]) - 2

    def __call__(self, points: np.ndarray) -> np.ndarray:
        relative = (points - self.lower) / self.spacing
        cell = np.clip(np.floor(relative).astype(np.int64), 0, self.last_cell)
        fraction = np.clip(relative - cell, 0.0, 1.0)
        dim = points.shape[1]
        out = np.zeros((points.shape[0], self.table.shape[-1]))
        for corner in range(2**dim):
            weight = np.ones(points.shape[0])
            index = []
            for axis in range(dim):
                bit = (corner >> axis) & 1
                weight *= fraction[:, axis] if bit else 1.0 - fraction[:, axis]
                index.append(cell[:, axis] + bit)
            out += weight[:, None] * self.table[tuple(index)]
        return out


def _log_field(values: np.ndarray) -> np.ndarray:
    """log(J + δ), δ = 10⁻³ × the smallest positive J (1 when there is none)."""
    positive = values[values > 0]
    floor = LOG_FLOOR * float(positive.min()) if positive.size else 1.0
    return np.log(values + floor)


def _default_step(gradient: np.ndarray, max_move: float) -> float:
    """L / (5th percentile of the non-zero |∇F| on the grid)."""
    norms = np.linalg.norm(gradient, axis=-1)
    norms = norms[norms > 0]
    if norms.size == 0:
        return 1.0  # F is constant: nothing moves, whatever the step
    return max_move / float(np.quantile(norms, STEP_QUANTILE))


def _descent_map(
    gradient: _Multilinear, step: float, max_move: float, lattice: _BoxLattice
) -> PointMap:
    def descend(points: np.ndarray) -> np.ndarray:
        slope = gradient(points)
        norm = np.linalg.norm(slope, axis=1)
        scale = np.minimum(step, max_move / np.maximum(norm, np.finfo(np.float64).tiny))
        return np.clip(points - scale[:, None] * slope, lattice.lower, lattice.upper)

    return descend


class _DescentDirections:
    """Decides whether a set of boxes provably holds no invariant set of the descent map:
    0 outside the convex hull of the descent directions possible in its boxes."""

    def __init__(self, gradient: _Multilinear, lattice: _BoxLattice) -> None:
        self.gradient = gradient
        self.lattice = lattice
        # Per axis and box: the box's ends and the grid nodes strictly inside it, padded to
        # a common count by repeating the upper end (the interpolant is multilinear between).
        self.breakpoints = []
        for axis, edges in enumerate(lattice.axis_points(halves=False)):
            nodes = gradient.lower[axis] + gradient.spacing[axis] * np.arange(
                gradient.table.shape[axis]
            )
            first = np.searchsorted(nodes, edges[:-1], side="right")
            last = np.searchsorted(nodes, edges[1:], side="left")
            width = int((last - first).max()) + 2
            points = np.repeat(edges[1:, None], width, axis=1)
            points[:, 0] = edges[:-1]
            for box, (start, stop) in enumerate(zip(first, last, strict=True)):
                points[box, 1 : 1 + stop - start] = nodes[start:stop]
            self.breakpoints.append(points)

    def holds_no_zero(self, boxes: np.ndarray) -> bool:
        dim = self.lattice.dim
        index = np.unravel_index(boxes, self.lattice.shape)
        coordinates = np.meshgrid(
            *[np.arange(points.shape[1]) for points in self.breakpoints], indexing="ij"
        )
        points = np.stack(
            [
                self.breakpoints[axis][index[axis]][:, coordinates[axis].reshape(-1)]
                for axis in range(dim)
            ],
            axis=-1,
        )
        directions = self.gradient(points.reshape(-1, dim)).reshape(len(boxes), -1, dim)
        # On a face of the domain clipping can shorten the move across it down to 0: add the
        # directions with that component zeroed (every combination, at edges and corners).
        on_faces = np.stack(
            [
                (index[axis] == 0) | (index[axis] == n - 1)
                for axis, n in enumerate(self.lattice.shape)
            ],
            axis=1,
        )
        for axis in range(dim):
            touching = on_faces[:, axis]
            if touching.any():
                stopped = directions[touching].copy()
                stopped[..., axis] = 0.0
                directions = np.concatenate([directions, stopped])
                on_faces = np.concatenate([on_faces, on_faces[touching]])
        return not _hull_holds_zero(directions.reshape(-1, dim))


def _hull_holds_zero(vectors: np.ndarray) -> bool:
    """Whether 0 lies in the convex hull of ``vectors`` [k, m]: quick sign checks, then a
    linear program, first on an evenly spaced subset of at most HULL_SUBSET directions (0
    in its hull is in the whole's) and, only if that says no, on all of them."""
    norms = np.linalg.norm(vectors, axis=1)
    if not bool(np.all(norms > 0)):
        return True
    for axis in range(vectors.shape[1]):
        if bool(np.all(vectors[:, axis] > 0)) or bool(np.all(vectors[:, axis] < 0)):
            return False
    unit = np.unique(vectors / norms[:, None], axis=0)
    if unit.shape[0] > HULL_SUBSET and _convex_combination_exists(
        unit[:: math.ceil(unit.shape[0] / HULL_SUBSET)]
    ):
        return True
    return _convex_combination_exists(unit)


def _convex_combination_exists(unit: np.ndarray) -> bool:
    """Whether some convex combination of the rows of ``unit`` is 0 (kept when unsure)."""
    solution = linprog(
        np.zeros(unit.shape[0]),
        A_eq=np.vstack([unit.T, np.ones(unit.shape[0])]),
        b_eq=np.append(np.zeros(unit.shape[1]), 1.0),
        bounds=(0, None),
        method="highs",
    )
    return solution.status != 2  # 2: infeasible, so 0 is outside the hull


# ---------------------------------------------------------------------------------------
# Reading the result


def _grid_points(axes: tuple[np.ndarray, ...]) -> np.ndarray:
    """The points of the product of ``axes`` [Π n, m], C order."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([part.reshape(-1) for part in mesh], axis=1)


def _min_loss(
    boxes: np.ndarray,
    flat_values: np.ndarray,
    grid_boxes: np.ndarray,
    interpolate: _Multilinear,
    lattice: _BoxLattice,
) -> float:
    """Smallest J at the grid points in ``boxes`` and at their centres (interpolated)."""
    bounds = lattice.bounds(boxes)
    centres = (bounds[:, : lattice.dim] + bounds[:, lattice.dim :]) / 2
    lowest = float(interpolate(centres).min())
    inside = np.isin(grid_boxes, boxes)
    return min(lowest, float(flat_values[inside].min())) if inside.any() else lowest


def _marker_boxes(markers: list[Marker], lattice: _BoxLattice) -> tuple[list[str], np.ndarray]:
    """Marker names and the flat index of each one's box (-1 outside the domain)."""
    names, points = [], []
    for marker in markers:
        coords = marker.coords.detach().to(device="cpu").numpy().astype(np.float64).reshape(-1)
        if coords.shape[0] != lattice.dim or not np.isfinite(coords).all():
            raise InputError(
                f"marker {marker.name!r} has coordinates {coords.tolist()}; a marker of a "
                f"{lattice.dim}-D grid needs {lattice.dim} finite coordinates"
            )
        names.append(marker.name)
        points.append(coords)
    if not points:
        return names, np.zeros(0, dtype=np.int64)
    return names, lattice.box_of_points(np.array(points))


def _annotate(graph: Any, morse_sets: Sequence[MorseSet]) -> None:
    for morse_set in morse_sets:
        graph.nodes[morse_set.index].update(
            kind=morse_set.kind,
            min_loss=morse_set.min_loss,
            volume=morse_set.volume,
            share=morse_set.share,
            markers=morse_set.markers,
            boxes=int(morse_set.boxes.shape[0]),
            conley_index=morse_set.conley_index,
        )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _summary_text(result: MorseGraph) -> str:
    import networkx

    sets = result.morse_sets
    plane = "plane" if len(result.box_shape) == 2 else "space"
    shape = "×".join(str(n) for n in result.box_shape)
    field = "log J" if result.log else "J"
    opening = f"{_plural(len(sets), 'Morse set')} of descent on {field} ({shape} boxes)"
    parts = []
    for kind in KINDS:
        members = [s for s in sets if s.kind == kind]
        if not members:
            continue
        described = []
        for member in members:
            boxes = member.boxes.shape[0]
            text = (
                f"set {member.index} at J = {member.min_loss:.3g}, "
                f"{boxes} {'box' if boxes == 1 else 'boxes'} "
                f"({_percent(boxes / result.num_boxes)} of the {plane})"
            )
            if member.markers:
                text += f" holding {_joined(list(member.markers))}"
            below = sorted(networkx.descendants(result.graph, member.index))
            if below:
                text += f", above {_joined([str(i) for i in below])}"
            described.append(text)
        count = f"{len(members)} {kind}" if kind != "saddle" else _plural(len(members), kind)
        parts.append(f"{count} ({'; '.join(described)})")
    text = f"{opening}: {_joined(parts)}." if parts else f"{opening}."
    attracting = [s for s in sets if s.kind == "attracting"]
    if attracting:
        shares = [f"{s.share:.0%} to set {s.index}" for s in attracting]
        shares[0] = shares[0].replace(" to ", f" of the {plane} to ", 1)
        undecided = float(np.count_nonzero(result.retraction == -1) / result.num_boxes)
        text += f" The retraction gives {_joined(shares)}"
        if undecided > 0:
            text += (
                f"; {undecided:.0%} is undecided (boxes whose images reach several attracting sets)"
            )
        text += "."
    outside = [
        f"{name} descends into set {basin}"
        for name, basin in result.marker_basins.items()
        if basin >= 0 and not any(name in s.markers for s in sets)
    ]
    if outside:
        text += f" {_joined(outside)}."
    trivial = [str(s.index) for s in sets if s.conley_index and set(s.conley_index) == {"0"}]
    if trivial:
        text += (
            f" Set{'s' if len(trivial) > 1 else ''} {_joined(trivial)} "
            f"{'have' if len(trivial) > 1 else 'has'} a trivial Conley index: it may hold no "
            "invariant set (a box-map artefact, or a flat or kinked stretch of the landscape)."
        )
    if result.dropped:
        text += (
            f" {_plural(result.dropped, 'Morse set')} of the box map holding no invariant set "
            "of descent (bands where a step moves one to two boxes) dropped."
        )
    if result.consistency is not None:
        text += " " + _consistency_text(result, result.consistency)
    return text


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _percent(fraction: float) -> str:
    """A share as a percentage: whole percents from 1 %, else two significant digits
    (0.0038% rather than 0%)."""
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.2g}%"


def _consistency_text(result: MorseGraph, check: MorseConsistency) -> str:
    """The comparison with the ε-set's components, and the finer runs' outcome."""
    widths = (np.array(result.upper_bounds) - np.array(result.lower_bounds)) / np.array(
        result.box_shape
    )
    text = (
        f"Against the ε-set (J < {check.eps:.3g}) of the same grid: "
        f"{_plural(check.components, 'component')}; descent cannot leave a component of a "
        "sublevel set of J, so each should hold an attracting set"
    )
    if check.components_confirmed is False:
        text += (
            " (the topology's check at 2× resolution did not confirm this count: some "
            "components may be grid artefacts)"
        )
    text += f". The box map has {_plural(check.attracting, 'attracting set')}"
    if check.consistent:
        return (
            text + ", every component meets one and no Morse set meets two: consistent at "
            "this resolution."
        )
    text += "."
    for index in check.merged:
        labels = check.set_components[index]
        text += (
            f" Set {index} ({result.morse_sets[index].kind}) meets components "
            f"{_components_text(check, labels, result.morse_sets[index].markers)}: the box "
            f"map merged them at this resolution (boxes {'×'.join(f'{w:.2g}' for w in widths)} "
            "wide)."
        )
    if check.unattracted:
        labels = check.unattracted
        text += (
            f" {'Component' if len(labels) == 1 else 'Components'} "
            f"{_components_text(check, labels, ())} "
            f"{'meets' if len(labels) == 1 else 'meet'} no attracting set of the box map."
        )
    refined = check.refined
    if refined is None or refined.consistency is None:
        return f"{text} Not refined: {check.refine_note}."
    finer = refined.consistency
    attracting = [s for s in refined.morse_sets if s.kind == "attracting"]
    holding = "; ".join(
        f"set {s.index} holding {_joined(list(s.markers))}" for s in attracting if s.markers
    )
    splits = (refined.subdivisions - result.subdivisions) // len(result.box_shape)
    text += (
        f" With every axis split {_times(splits)} more "
        f"({'×'.join(map(str, refined.box_shape))} boxes, "
        f"{result.timings.get('refined', refined.timings['total']):.1f} s): "
        f"{_plural(len(attracting), 'attracting set')}" + (f" ({holding})" if holding else "")
    )
    if finer.consistent:
        return text + ", consistent with the ε-set's components."
    problems = [
        f"set {index} meets components {_joined([str(c) for c in finer.set_components[index]])}"
        for index in finer.merged
    ] + [f"component {label} meets no attracting set" for label in finer.unattracted]
    return (
        f"{text}; still inconsistent ({'; '.join(problems)}). Not refined further: "
        f"{check.refine_note}."
    )


def _components_text(check: MorseConsistency, labels: Sequence[int], extra: Sequence[str]) -> str:
    """The components ``labels`` in words: the markers in them (or in ``extra``), and the
    lowest grid point of each one that holds no marker."""
    names = _markers_of(check, labels, extra)
    marked = {check.marker_components.get(name, 0) for name in names}
    unmarked = [
        f"component {label}'s lowest grid point "
        f"({', '.join(f'{x:.3g}' for x in check.component_minima[label][0])}), "
        f"J = {check.component_minima[label][1]:.2g}"
        for label in labels
        if label not in marked
    ]
    if len(unmarked) > LISTED_COMPONENTS:
        more = len(unmarked) - LISTED_COMPONENTS
        unmarked = [*unmarked[:LISTED_COMPONENTS], f"{more} more without a marker"]
    details = ([f"holding {_joined(names)}"] if names else []) + unmarked
    listed = _joined([str(label) for label in labels])
    return f"{listed} ({'; '.join(details)})" if details else listed


def _markers_of(check: MorseConsistency, labels: Sequence[int], extra: Sequence[str]) -> list[str]:
    """The markers in components ``labels`` or in ``extra``."""
    return [
        name
        for name in check.merged_markers
        if check.marker_components.get(name, 0) in labels or name in extra
    ]
