"""What the ε-set is: trivial baselines, local identifiability, known symmetries, topology.

- :class:`Baselines`: J of the zero and of the best constant function; ε relative to them,
  and a warning when the ε-set can hold functions that ignore their input.
- :func:`identifiability`: the dimension of [θ] at θ (null space of the output Jacobian on
  the probes) against the dimension of the known-symmetry orbit (G_ReLU rescalings, the
  linear group of activation-free layers).
- :func:`align` and :func:`explain`: which found points are G_ReLU images of θ, exact
  equivalents of another kind (dead units, zero outgoing weights), approximate or trivial.
- :func:`betti` and :func:`topology`: Betti numbers, persistence and components of
  {J < ε} on a swept grid, with a resolution check on a grid twice as fine.

Every result has a ``summary()`` in plain sentences; ``genni analyse`` runs them all on a
stored experiment (``genni_ext.experiment_analysis``).
"""

from .alignment import Alignment, Explanation, align, explain
from .baselines import Baselines
from .local_dimension import Identifiability, identifiability
from .persistence import ResolutionCheck, Topology, betti, topology
from .structure import HiddenLayer, hidden_layers

__all__ = [
    "Alignment",
    "Baselines",
    "Explanation",
    "HiddenLayer",
    "Identifiability",
    "ResolutionCheck",
    "Topology",
    "align",
    "betti",
    "explain",
    "hidden_layers",
    "identifiability",
    "topology",
]
