"""Manifests of older package formats, written from current ones, to test the reading path."""

from __future__ import annotations

from typing import Any

from tlstm.contract import GRAPH_STATE


def as_version_1(manifest: dict[str, Any]) -> None:
    """Rewrite a manifest in format version 1, in place.

    Version 1 listed the state in three places: the top-level ``state`` (committed), each
    graph's ``state``/``state_out`` names and ``decoding.incremental.state`` (the staircase);
    ``decoding.simple`` was written too.
    """
    state = manifest.pop("state")
    names = {which: [e["name"] for e in entries] for which, entries in state.items()}
    manifest["format_version"] = 1
    manifest["state"] = state["committed"]
    for graph, entry in manifest["graphs"].items():
        reads, returns = GRAPH_STATE[graph]
        entry["state"] = names.get(reads, []) if reads else []
        if returns != reads and returns is not None:
            entry["state_out"] = names[returns]
    prefill = "prefill" if "prefill" in manifest["graphs"] else None
    manifest["decoding"]["simple"] = {"available": True, "step": "step", "prefill": prefill}
    if manifest["decoding"]["incremental"]["available"]:
        manifest["decoding"]["incremental"]["state"] = state["staircase"]
