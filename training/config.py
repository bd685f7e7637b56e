"""The trainer's one configuration object: what to train, how, and for how long."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from model import TLSTMConfig, variant_config, variant_names
from model.config import dataclass_from_dict

DEVICES = ("auto", "cpu", "cuda")
FUSED = ("auto", "on", "off")  # model.kernels.FUSED_SETTINGS
LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of lr


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TrainConfig.{name}: expected a positive int{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """A training run, fully resolved (written to ``RUN/config.json``).

    Attributes:
        task: task name (``training.tasks.TASK_NAMES``); task_options: its options.
        variant: model variant (``model.variant_names()``), e.g. ``tlstm-3d+cn`` or ``lstm``.
        depth: L (P for the tLSTM variants, layers for the stacked baselines).
        channels: M.
        model_options: further ``TLSTMConfig`` fields (e.g. ``{"impl": "reference"}``).
        batch_size: the global batch (split evenly over data-parallel processes).
        lr: Adam's learning rate. clip: gradient-norm clipping threshold (0 disables).
        max_steps: step budget. max_time: optional wall-clock budget in seconds (a run
            stopped by time is not reproducible step for step; a step budget is).
        eval_every: evaluate on the validation split every this many steps (and at the end).
        eval_limit: evaluate on the first this many validation examples (LM: symbols);
            None for the whole split. The final test evaluation always uses the whole split.
        eval_batch_size: batch (LM: streams) for evaluation; None means ``batch_size``.
        patience: stop after this many evaluations without improvement; None never stops.
        stop_at: stop at the first validation evaluation whose task metric reaches this value
            (at least it where higher is better, at most it where lower is better), e.g. 0.99
            for an algorithmic task that is solved; None never stops.
        checkpoint_every: write ``last.pt`` every this many steps; None means ``eval_every``.
        log_every: report the training loss every this many steps.
        seed: initialisation and data-order seed.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: torch intra-op threads; None leaves torch's default.
        fused: the fused Triton step (``model.kernels``) for CUDA training: ``auto`` uses it
            where supported (a CUDA device and a supported variant), ``on`` requires it (an
            error otherwise), ``off`` never. The CPU never uses it.
        allow_noncausal: train a non-causal variant (LN) on a language-model or seq2seq task,
            which the trainer otherwise refuses. Such a model reads inputs after the one it
            predicts, so its loss is not a causal model's; the one use is to measure that
            leak (docs/reproduction.md, "LN reads the future").
        lr_schedule: ``constant`` (``lr`` throughout) or ``cosine`` (from ``lr`` down to
            ``COSINE_FLOOR * lr`` over ``max_steps``); see :meth:`lr_at`.
    """

    task: str
    task_options: dict[str, Any] = field(default_factory=dict)
    variant: str = "tlstm-2d"
    depth: int = 3
    channels: int = 64
    model_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    lr: float = 1e-3
    clip: float = 1.0
    max_steps: int = 1000
    max_time: float | None = None
    eval_every: int = 100
    eval_limit: int | None = None
    eval_batch_size: int | None = None
    patience: int | None = None
    stop_at: float | None = None
    checkpoint_every: int | None = None
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    fused: str = "auto"
    allow_noncausal: bool = False
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        from .tasks import TASK_NAMES

        if self.task not in TASK_NAMES:
            raise ValueError(f"TrainConfig.task: expected one of {list(TASK_NAMES)}, got {self.task!r}")
        if self.variant not in variant_names():
            raise ValueError(f"TrainConfig.variant: expected one of {variant_names()}, got {self.variant!r}")
        for name in ("depth", "channels", "batch_size", "max_steps", "eval_every", "log_every"):
            _positive_int(name, getattr(self, name))
        for name in ("eval_limit", "eval_batch_size", "patience", "checkpoint_every", "threads"):
            _positive_int(name, getattr(self, name), allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed: expected a non-negative int, got {self.seed!r}")
        if not isinstance(self.lr, int | float) or isinstance(self.lr, bool) or not self.lr > 0:
            raise ValueError(f"TrainConfig.lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.clip, int | float) or isinstance(self.clip, bool) or self.clip < 0:
            raise ValueError(f"TrainConfig.clip: expected a number >= 0 (0 disables clipping), got {self.clip!r}")
        if self.max_time is not None and (isinstance(self.max_time, bool) or not isinstance(self.max_time, int | float) or self.max_time <= 0):
            raise ValueError(f"TrainConfig.max_time: expected a positive number of seconds or None, got {self.max_time!r}")
        if self.stop_at is not None and (isinstance(self.stop_at, bool) or not isinstance(self.stop_at, int | float)):
            raise ValueError(f"TrainConfig.stop_at: expected a value of the task's metric or None, got {self.stop_at!r}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device: expected one of {list(DEVICES)}, got {self.device!r}")
        if not isinstance(self.allow_noncausal, bool):
            raise ValueError(f"TrainConfig.allow_noncausal: expected true or false, got {self.allow_noncausal!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule: expected one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.fused not in FUSED:
            raise ValueError(f"TrainConfig.fused: expected one of {list(FUSED)}, got {self.fused!r}")
        reserved = {"input_size", "output_size", "input_type", "channels"} & set(self.model_options)
        if reserved:
            raise ValueError(
                f"TrainConfig.model_options: {sorted(reserved)} come from the task and --channels; "
                "expected only other TLSTMConfig fields"
            )

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) under ``lr_schedule``.

        ``constant``: ``lr`` throughout. ``cosine``: half a cosine from ``lr`` at step 0 down to
        ``lr * COSINE_FLOOR`` at ``max_steps``, so the schedule follows the run's budget.
        """
        if self.lr_schedule == "constant":
            return self.lr
        progress = min(step / self.max_steps, 1.0)
        return self.lr * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.eval_every

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    def model_config(self, input_size: int, output_size: int, input_type: str) -> TLSTMConfig:
        """The model's config for a task with these sizes."""
        return variant_config(
            self.variant, input_size=input_size, output_size=output_size, depth=self.depth,
            channels=self.channels, input_type=input_type, **self.model_options,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def without_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """A ``TrainConfig`` dict less the entries that hold their field's default.

    Two descriptions of one run compare equal this way even when one was written before a
    field (with a default that keeps the old behaviour) was added.
    """
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in fields.items() if k not in defaults or defaults[k] is dataclasses.MISSING or v != defaults[k]}
