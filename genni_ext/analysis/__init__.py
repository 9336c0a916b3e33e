"""What the ε-set is: trivial baselines, local identifiability, known symmetries, topology.

- :class:`Baselines`: J of the zero and of the best constant function; ε relative to them,
  and a warning when the ε-set can hold functions that ignore their input.
- :func:`identifiability`: the dimension of [θ] at θ (null space of the output Jacobian on
  the probes) against the dimension of the known-symmetry orbit (G_ReLU rescalings, the
  linear group of activation-free layers).
- :func:`align` and :func:`explain`: the closest G_ReLU image of θ to a found point, and
  what each found point is: a G_ReLU image of θ, another exact equivalent (dead unit, zero
  outgoing weights, an always-active unit trading bias), near-constant, collapsed (hidden
  units dead or merged), approximate or not converged; :data:`SYMMETRY_TOL` is the one
  tolerance both use.
- :func:`betti` and :func:`topology`: Betti numbers, persistence and components of
  {J < ε} on a swept grid, with a resolution check on a grid twice as fine.
- :func:`cka`, :func:`procrustes`, :func:`relu_cka` and :func:`compare`: how alike the
  representations of θ and a found point are, layer by layer, up to the symmetries of the
  activations; :func:`stitch` and :func:`stitch_all`: whether one network's layer can be
  fed into the other's next layers through a linear (or permutation) layer.
- :func:`lowest_passes`: the lowest pass (minimax J over grid paths) between every pair of
  found points and local minima on a swept grid, and which pairs the ε-set joins.
- :func:`connect` and :func:`connect_many`: a path between two points in the full
  parameter space (segment, G_ReLU orbit, trained curve, nudged elastic band), optionally
  after matching one network's units to the other's, and the barrier of J along it;
  :func:`connectivity_graph`: which of θ and the found points such paths join below ε.
- :func:`morse_graph`: the Morse decomposition of gradient descent on J restricted to the
  swept plane or space (CMGDB): attracting minima, saddles between them, and which part of
  the plane flows where.

Every result has a ``summary()`` in plain sentences; ``genni analyse`` runs them all on a
stored experiment (``genni_ext.cli.analyse``).
"""

from genni_ext.analysis.alignment import (
    SYMMETRY_TOL,
    Alignment,
    Explanation,
    align,
    explain,
)
from genni_ext.analysis.baselines import Baselines
from genni_ext.analysis.connections import Connection, connect, connect_many
from genni_ext.analysis.connectivity import ConnectivityGraph, connectivity_graph
from genni_ext.analysis.dynamics import (
    MorseDecomposition,
    MorseGraph,
    MorseSet,
    morse_decomposition,
    morse_graph,
)
from genni_ext.analysis.local_dimension import Identifiability, identifiability
from genni_ext.analysis.passes import Passes, lowest_passes
from genni_ext.analysis.persistence import ResolutionCheck, Topology, betti, topology
from genni_ext.analysis.representations import hidden_layer_names, layer_outputs
from genni_ext.analysis.similarity import Comparison, cka, compare, procrustes, relu_cka
from genni_ext.analysis.stitching import Stitch, stitch, stitch_all
from genni_ext.analysis.structure import HiddenLayer, hidden_layers

__all__ = [
    "SYMMETRY_TOL",
    "Alignment",
    "Baselines",
    "Comparison",
    "Connection",
    "ConnectivityGraph",
    "Explanation",
    "HiddenLayer",
    "Identifiability",
    "MorseDecomposition",
    "MorseGraph",
    "MorseSet",
    "Passes",
    "ResolutionCheck",
    "Stitch",
    "Topology",
    "align",
    "betti",
    "cka",
    "compare",
    "connect",
    "connect_many",
    "connectivity_graph",
    "explain",
    "hidden_layer_names",
    "hidden_layers",
    "identifiability",
    "layer_outputs",
    "lowest_passes",
    "morse_decomposition",
    "morse_graph",
    "procrustes",
    "relu_cka",
    "stitch",
    "stitch_all",
    "topology",
]
