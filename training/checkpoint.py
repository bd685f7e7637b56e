"""Self-describing checkpoints: everything needed to rebuild a model, written atomically.

A checkpoint is a ``torch.save`` dict:

    format            "tlstm-checkpoint"
    format_version    1
    config            TLSTMConfig.to_dict()
    model             the unwrapped module's state_dict (no DDP/compile prefixes)
    task              what export and serving need (``Task.describe()``):
                      name      "chars" | "addition" | "memorization" | "digits" | "mnist"
                      kind      "lm" (chars: next-symbol prediction on a stream),
                                "classifier" (digits, mnist: one label per sequence),
                                "seq2seq" (addition, memorization: one target per step,
                                aligned; trained and evaluated here, not served)
                      vocab     one string per token id (lm, seq2seq): the corpus' characters,
                                or chr(byte) for byte-level models; None for features
                      labels    class names (classifier), else None
                      input     {"type": "tokens"|"features", "size": R, "max_length": T}
                                (the LM's max_length is its training segment length; the
                                carried state makes longer inputs work)
                      metric, higher_is_better   the validation metric that chose best.pt
                      settings  the options that rebuild the task (training.tasks.build_task)
                      info      facts derived from the data: a fingerprint of the text, the
                                image shape, scale and pixel permutation of image tasks
    metrics           flat floats: "step", "samples", "valid_<metric>", and in a finished
                      run's best.pt "test_<metric>" and "samples_to_99_<metric>"
    code_version      tlstm.version.code_version() of the writer
    trainer           last.pt only: step/optimizer/RNG/carried-state/early-stopping state
                      for --resume (None in best.pt)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model import RecurrentModel, TLSTMConfig, build_model
from tlstm.files import atomic_write
from tlstm.version import code_version

FORMAT = "tlstm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    config: TLSTMConfig
    model_state: dict[str, torch.Tensor]
    task: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    code_version: str = field(default_factory=code_version)
    trainer: dict[str, Any] | None = None

    def build_model(self) -> RecurrentModel:
        """The model with these weights, in eval mode, on the CPU."""
        model = build_model(self.config)
        model.load_state_dict(self.model_state)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "model": self.model_state,
            "task": self.task,
            "metrics": self.metrics,
            "code_version": self.code_version,
            "trainer": self.trainer,
        }


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save, written atomically (:func:`tlstm.files.atomic_write`)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` atomically: a half-written file never exists under ``path``."""
    atomic_torch_save(checkpoint.to_dict(), path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated or foreign file, or an unsupported version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tlstm checkpoint (expected format {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format_version {data.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    try:
        config = TLSTMConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    return Checkpoint(
        config=config,
        model_state=data["model"],
        task=data["task"],
        metrics=data.get("metrics") or {},
        code_version=data.get("code_version", "unknown"),
        trainer=data.get("trainer"),
    )
