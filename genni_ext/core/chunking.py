"""How a grid sweep is cut into chunks: one plan for the local, resumable and Dask runners.

A chunk is a contiguous run of grid points in C order. The store keeps J as an array of the
grid's shape, chunked along its first axis, so a chunk of the plan is always a whole number
of slabs of that axis (``row_points`` grid points each): every chunk of the plan is then
exactly one chunk of the stored array and is written by one task, never shared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genni_ext._validate import positive_int

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ChunkPlan:
    """``num_points`` grid points of a grid of ``shape``, in chunks of ``chunk_points``
    (a multiple of ``row_points``, the points in one slab of the first axis)."""

    shape: tuple[int, ...]
    chunk_points: int

    def __post_init__(self) -> None:
        if self.chunk_points % self.row_points != 0:
            raise ValueError("chunk_points must be a multiple of row_points")

    @classmethod
    def for_grid(cls, shape: Sequence[int], chunk_points: int) -> ChunkPlan:
        """The plan for a grid of ``shape`` with about ``chunk_points`` points a chunk,
        rounded up to whole slabs of the first axis (and at most the whole grid)."""
        positive_int(chunk_points, "chunk_points")
        shape = tuple(int(n) for n in shape)
        row = math.prod(shape[1:])
        slabs = min(shape[0], math.ceil(chunk_points / row))
        return cls(shape, slabs * row)

    @property
    def row_points(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def num_points(self) -> int:
        return math.prod(self.shape)

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.num_points / self.chunk_points)

    @property
    def array_chunks(self) -> tuple[int, ...]:
        """The chunk shape of the stored array: whole slabs of the first axis."""
        return (self.chunk_points // self.row_points, *self.shape[1:])

    def bounds(self, index: int) -> tuple[int, int]:
        """Grid points [first, last) of chunk ``index``."""
        if not 0 <= index < self.num_chunks:
            raise IndexError(f"chunk {index} of a plan of {self.num_chunks}")
        first = index * self.chunk_points
        return first, min(first + self.chunk_points, self.num_points)

    def slabs(self, index: int) -> slice:
        """Chunk ``index`` as a slice of the grid's first axis."""
        first, last = self.bounds(index)
        return slice(first // self.row_points, last // self.row_points)


def format_shape(shape: Sequence[int]) -> str:
    """``3000×3000``."""
    return "×".join(str(n) for n in shape)
