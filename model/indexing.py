"""Index tuples for tensors with a variable number of location axes (D-1 of them).

``x[at(slice(None), *location)]`` reads one location of a (B, *location_shape, M) tensor
whatever D is; ``at`` only gives the tuple its type.
"""

from __future__ import annotations

Index = tuple[int | slice, ...]


def at(*parts: int | slice) -> Index:
    """The index tuple of ``parts``."""
    return parts
