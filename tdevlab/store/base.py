"""What a run store keeps, and branch lineage helpers both stores (SQLite, memory) use.

The interface the stores implement is the engine's :class:`tdevlab.engine.storage.RunStore`.

A run is a tree of *branches*: branch 0 starts at generation 0; a rollback to generation
``g`` opens a new branch whose parent is the branch ``g`` belongs to. A branch's
*lineage* is the chain of (branch, first generation, last generation) ranges that make
up its history, so the abandoned generations stay stored under their own branch.
"""

from __future__ import annotations

from tdevlab.engine.storage import BranchInfo, RunInfo, RunStore

__all__ = ["BranchInfo", "RunInfo", "RunStore", "branch_holding", "lineage_of"]


def lineage_of(branches: dict[int, BranchInfo], branch: int) -> list[tuple[int, int, int | None]]:
    """Return ``branch``'s history as (branch, first generation, last generation or None).

    The list runs from the newest range back to branch 0. ``None`` means "open ended".
    """
    out: list[tuple[int, int, int | None]] = []
    upper: int | None = None
    current: int | None = branch
    while current is not None:
        info = branches[current]
        out.append((current, info.fork_generation + 1, upper))
        upper = info.fork_generation
        current = info.parent_branch
    return out


def branch_holding(branches: dict[int, BranchInfo], branch: int, generation: int) -> int | None:
    """Return which branch stores ``generation`` in ``branch``'s lineage (None if beyond it)."""
    for b, low, high in lineage_of(branches, branch):
        if generation >= low and (high is None or generation <= high):
            return b
    return None
