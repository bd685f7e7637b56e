"""Tiny checkpoints and their exported packages, shared by the export tests.

Export is the slow part (a few seconds per graph), so every package is exported once per test
session and cached here; tests that damage a package work on a copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from export.exporter import export_package
from model import RecurrentModel, build_model, variant_config
from service.package import ModelPackage, load_package
from tests.parallel import run_side_by_side
from training.checkpoint import Checkpoint

VOCAB = list("abcde")
LABELS = ["red", "green", "blue"]
FEATURES = 3
DEPTH = 3  # P (and L) for the tLSTM variants; layers for the stacked baselines
CHANNELS = 4
MAX_LENGTH = 6  # the "training" max length; verification and tests go beyond it

# key -> (variant, kind, input type, impl). Together they cover 2D and 3D, K=2 and K=3,
# no/LN/CN normalization, tRNN and tLSTM (with and without the memory-cell convolution),
# token and feature inputs, both package kinds and both stacked baselines. The "reference"
# ones are verified against the per-location reference implementation.
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "2d-lm-tokens-reference": ("tlstm-2d", "lm", "tokens", "reference"),
    "3d+cn-classifier-features": ("tlstm-3d+cn", "classifier", "features", "fast"),
    "f+ln-classifier-tokens": ("tlstm-f+ln", "classifier", "tokens", "fast"),
    "trnn+cn-lm-tokens": ("trnn+cn", "lm", "tokens", "fast"),
    "m+ln-classifier-features-reference": ("tlstm-m+ln", "classifier", "features", "reference"),
    "3d-lm-tokens": ("tlstm-3d", "lm", "tokens", "fast"),
    "slstm-lm-tokens": ("slstm", "lm", "tokens", "fast"),
    "lstm-classifier-features": ("lstm", "classifier", "features", "fast"),
}


def make_checkpoint(variant: str, kind: str, input_type: str, impl: str = "fast", *, seed: int = 0,
                    channels: int = CHANNELS, vocab: list[str] | None = None) -> Checkpoint:
    """A checkpoint of a freshly initialised tiny model, parameters jittered so that
    normalization gains and biases are not the identity."""
    vocab = vocab or VOCAB
    size = len(vocab) if input_type == "tokens" else FEATURES
    outputs = len(vocab) if kind == "lm" else len(LABELS)
    config = variant_config(variant, input_size=size, output_size=outputs, depth=DEPTH,
                            channels=channels, input_type=input_type, impl=impl)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    task = {
        "name": f"tiny-{kind}",
        "kind": kind,
        "vocab": vocab if input_type == "tokens" else None,
        "labels": LABELS if kind == "classifier" else None,
        "input": {"type": input_type, "size": size, "max_length": MAX_LENGTH},
    }
    return Checkpoint(config=config, model_state=model.state_dict(), task=task, metrics={"loss": 1.5})


@dataclass
class Exported:
    """A checkpoint, its PyTorch model and its verified package."""

    checkpoint: Checkpoint
    model: RecurrentModel
    path: Path

    def load(self) -> ModelPackage:
        return load_package(self.path)

    def copy_to(self, where: Path) -> Path:
        return Path(shutil.copytree(self.path, where / self.path.name))


def export_variant(key: str, root: Path) -> Path:
    """Export the package of ``VARIANTS[key]`` under ``root`` (fixed seeds: the same package in
    any process)."""
    return export_package(make_checkpoint(*VARIANTS[key]), root / key, seed=1234)


class PackageCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Exported] = {}

    def get(self, key: str) -> Exported:
        if key not in self._cache:
            self._cache[key] = self._exported(key, export_variant(key, self.root))
        return self._cache[key]

    def export_all(self) -> None:
        """Export every variant now, side by side (tests/parallel.py)."""
        # the slowest first (3D graphs, then the per-location reference), so the two cores end together
        keys = sorted((key for key in VARIANTS if key not in self._cache),
                      key=lambda key: (not key.startswith("3d"), "reference" not in key))
        paths = run_side_by_side([(export_variant, (key, self.root)) for key in keys])
        for key, path in zip(keys, paths, strict=True):
            self._cache[key] = self._exported(key, path)

    @staticmethod
    def _exported(key: str, path: Path) -> Exported:
        checkpoint = make_checkpoint(*VARIANTS[key])  # the exporter's, rebuilt from the same seed
        return Exported(checkpoint, checkpoint.build_model(), path)


@pytest.fixture(scope="session")
def packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PackageCache:
    cache = PackageCache(tmp_path_factory.mktemp("packages"))
    here = Path(__file__).parent
    users = [item for item in request.session.items
             if "packages" in getattr(item, "fixturenames", ()) and Path(item.path).is_relative_to(here)]
    if len(users) > len(VARIANTS):  # a whole run of these tests: every variant is needed
        cache.export_all()
    return cache


def draw_inputs(rng: np.random.Generator, model: RecurrentModel, batch: int, length: int) -> np.ndarray:
    """(B, T) token ids or (B, T, R) features for ``model``."""
    cfg = model.config
    if cfg.input_type == "tokens":
        return rng.integers(0, cfg.input_size, size=(batch, length), dtype=np.int64)
    return rng.standard_normal((batch, length, cfg.input_size)).astype(np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray | torch.Tensor, what: str, tol: float = 1e-4) -> None:
    """max|a - e| <= tol * max(1, max|e|), the export's float32 criterion."""
    from export.verify import relative_difference

    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    diff = relative_difference(np.asarray(actual), expected)
    assert diff <= tol, f"{what}: difference {diff:.3g} > {tol:g} (shapes {np.shape(actual)} vs {expected.shape})"
