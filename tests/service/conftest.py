"""Tiny untrained models, exported once per session, and a live server over them.

Packages (all float32, CPU):

- ``chars``: a language model over 13 characters (2D tLSTM, L=3, M=8);
- ``digits``: a classifier of feature sequences (R=4, up to 12 steps, labels x/y/z);
- ``names``: a classifier of strings over 6 characters (up to 10 steps, labels a/b).

The PyTorch models they came from are returned too, as the reference the tests compare with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .live import LiveServer, live_server, make_settings

LM_VOCAB = list("abcdefghij .\n")
NAME_VOCAB = list("abcdef")


@dataclass
class Packages:
    root: Path
    models: dict[str, Any]  # name -> torch model in eval mode (the reference)

    @property
    def lm(self) -> Any:
        return self.models["chars"]


def _model(name: str, config: Any) -> Any:
    """The untrained model of package ``name``, from a seed of its own (the same in any process)."""
    import torch

    from model import build_model

    torch.manual_seed(sum(map(ord, name)))
    return build_model(config).eval()


def _export(root: Path, name: str, config: Any, task: dict[str, Any]) -> Any:
    """Export package ``name`` of an untrained model to ``root``; returns that model."""
    from export.exporter import export_package
    from training.checkpoint import Checkpoint

    model = _model(name, config)
    export_package(Checkpoint(config=config, model_state=model.state_dict(), task=task), root / name, seed=0)
    return model


def _specs() -> dict[str, tuple[Any, dict[str, Any]]]:
    from model import variant_config

    return {
        "chars": (
            variant_config("tlstm-2d", input_size=len(LM_VOCAB), output_size=len(LM_VOCAB), depth=3, channels=8),
            {"name": "tiny-lm", "kind": "lm", "vocab": LM_VOCAB,
             "input": {"type": "tokens", "size": len(LM_VOCAB), "max_length": 64}},
        ),
        "digits": (
            variant_config("tlstm-2d", input_size=4, output_size=3, depth=2, channels=8, input_type="features"),
            {"name": "tiny-features", "kind": "classifier", "labels": ["x", "y", "z"],
             "input": {"type": "features", "size": 4, "max_length": 12}},
        ),
        "names": (
            variant_config("tlstm-2d", input_size=len(NAME_VOCAB), output_size=2, depth=2, channels=8),
            {"name": "tiny-tokens", "kind": "classifier", "vocab": NAME_VOCAB, "labels": ["a", "b"],
             "input": {"type": "tokens", "size": len(NAME_VOCAB), "max_length": 10}},
        ),
    }


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    from tests.parallel import run_side_by_side

    root = tmp_path_factory.mktemp("models")
    specs = _specs()
    run_side_by_side([(_export, (root, name, config, task)) for name, (config, task) in specs.items()])
    return Packages(root, {name: _model(name, config) for name, (config, _) in specs.items()})


@pytest.fixture(scope="session")
def server(packages: Packages) -> Iterator[LiveServer]:
    """The shared server with default limits (tests must not change its state for others)."""
    with live_server(make_settings(packages.root)) as live:
        yield live
