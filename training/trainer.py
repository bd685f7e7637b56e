"""The training loop: Adam, clipping, evaluation, early stopping, budgets, checkpoints, resume.

A run lives in a directory (layout in :mod:`training.runlog`). Everything that decides the
next step is saved in ``last.pt``'s trainer state: the step (which fixes the data, see
:mod:`training.tasks.base`), the optimizer, the RNG states, the language model's carried
state, the early-stopping bookkeeping and the not yet logged training sums. Resuming from it
therefore continues bit for bit as the uninterrupted run would on the same machine, whether
the run was stopped by Ctrl-C (the step in flight finishes and ``last.pt`` is written) or by
``kill -9`` (the run continues from the last periodic checkpoint; the records logged after it
are dropped from ``metrics.jsonl`` and written again).

Data-parallel runs (see :mod:`training.distributed`) split each global batch over the
processes and average gradients with DistributedDataParallel; evaluation shards the split and
adds up the sums; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from model import RecurrentModel, build_model
from model.kernels import FusedTLSTM, resolve_fused
from tlstm.progress import Progress
from tlstm.version import code_version

from . import runlog
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext, setup
from .tasks import Batch, Task, build_task

TARGET = 0.99  # "training samples seen until 99%" is recorded for accuracy metrics


class RunExistsError(ValueError):
    """The output directory already holds a run and --resume was not given."""


@dataclass
class TrainerState:
    """The loop's bookkeeping, saved in ``last.pt`` (plain values only)."""

    step: int = 0
    samples: int = 0
    elapsed_s: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    last_eval_step: int | None = None
    reached: dict[str, int] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        return cls(**data)


class TaskObjective(nn.Module):
    """The model plus its task's loss, so that DistributedDataParallel wraps one forward."""

    def __init__(self, model: RecurrentModel, task: Task) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Batch, carry: Any = None) -> tuple[torch.Tensor, dict[str, float], Any]:
        return self.task.loss(self.model, batch, carry)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training (on the CPU, a multi-threaded embedding backward
    otherwise adds in a varying order); cuBLAS needs a fixed workspace for it on CUDA."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _flat(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()}


class Trainer:
    """One training run in ``run_dir``; :meth:`run` trains to a stop and returns a summary.

    Args:
        config: the run's configuration (ignored on resume when ``run_dir`` has one; see
            :func:`resume_config`).
        run_dir: the run directory.
        resume: continue the run in ``run_dir`` from its ``last.pt``.
        ctx: the data-parallel context (default: from the environment, see ``setup``).
        stream: where progress goes (default stderr).
    Raises:
        RunExistsError: ``run_dir`` holds a run and ``resume`` is False.
        ValueError: a model variant that cannot serve the task, bad data, bad options.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False, ctx: DistContext | None = None, stream: Any = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ctx = ctx or setup(config.device)
        self.stream = stream
        if config.threads:
            torch.set_num_threads(config.threads)
        self.task = build_task(config.task, config.task_options)
        self.model_config = config.model_config(self.task.input_size, self.task.output_size, self.task.input_type)
        if self.task.kind in ("lm", "seq2seq") and not self.model_config.is_causal and not config.allow_noncausal:
            raise ValueError(
                f"variant {config.variant!r} is not causal (LN pools later inputs into earlier outputs), "
                f"so it cannot be trained on the {self.task.kind} task {config.task!r}; "
                "expected a causal variant such as the +cn one (allow_noncausal=True trains it anyway, "
                "to measure the leak)"
            )
        if self.task.kind == "lm" and self.model_config.delay >= self.task.max_length:
            raise ValueError(f"bptt {self.task.max_length} must exceed the model's delay {self.model_config.delay} (depth - 1)")
        if config.batch_size % self.ctx.world:
            raise ValueError(f"batch size {config.batch_size} is not divisible by the {self.ctx.world} processes")
        torch.manual_seed(config.seed)
        # The fused Triton step on CUDA for supported variants (model.kernels); same parameters.
        self.fused, self.fused_reason = resolve_fused(config.fused, self.model_config, self.ctx.device)
        self.model = (FusedTLSTM if self.fused else build_model)(self.model_config).to(self.ctx.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.state = TrainerState()
        self.carry: Any = None
        self._stop_signal = False
        self._plot_warned = False
        if resume and (self.run_dir / runlog.LAST).is_file():
            self._restore()
        else:
            self._start(resume)
        objective: nn.Module = TaskObjective(self.model, self.task)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
            objective = DistributedDataParallel(objective, device_ids=device_ids)
        self.objective: nn.Module = objective

    # ------------------------------------------------------------ set-up
    def _start(self, resume: bool) -> None:
        existing = [n for n in (runlog.LAST, runlog.BEST) if (self.run_dir / n).exists()]
        taken = not resume and bool(existing or (self.run_dir / runlog.CONFIG).exists())
        # Every process looks before the main one writes: the collective is the fence, and all
        # of them agree on the answer (otherwise one would see the other's fresh config.json).
        if self.ctx.any(taken):
            raise RunExistsError(
                f"{self.run_dir} already holds a run ({', '.join(existing) or runlog.CONFIG}); pass --resume "
                "to continue it, or choose another output directory"
            )
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            runlog.write_config(self.run_dir, self.describe())
            runlog.truncate_metrics(self.run_dir, 0)
        self.ctx.barrier()

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.run_dir / runlog.LAST)
        if ckpt.config != self.model_config or ckpt.trainer is None:
            raise ValueError(
                f"{self.run_dir / runlog.LAST}: its model config {ckpt.config.to_dict()} differs from this run's "
                f"{self.model_config.to_dict()} (or it has no trainer state); expected the run's own last.pt"
            )
        self.model.load_state_dict(ckpt.model_state)
        trainer = ckpt.trainer
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.state = TrainerState.from_dict(trainer["state"])
        _set_rng_state(trainer["rng"])
        if trainer.get("carry") is not None:
            per = self.config.batch_size // self.ctx.world
            rows = slice(self.ctx.rank * per, (self.ctx.rank + 1) * per)
            self.carry = tuple(t[rows].to(self.ctx.device) for t in trainer["carry"])
        if self.state.finished and self.state.stop_reason in ("max_steps", "max_time") and self._budget_left():
            self.state.finished = False  # the budget was extended
        if self.ctx.is_main and not self.state.finished:
            runlog.truncate_metrics(self.run_dir, self.state.step)
        self.ctx.barrier()

    def describe(self) -> dict[str, Any]:
        """The resolved configuration written to config.json."""
        task = self.task.describe()
        return {
            "train": self.config.to_dict(),
            "model": self.model_config.to_dict(),
            "task": {k: task[k] for k in ("name", "kind", "input", "metric", "settings")},
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.ctx.world,
            "fused_step": {"used": self.fused, "reason": self.fused_reason},
            "code_version": code_version(),
        }

    # ------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a stop signal; returns :meth:`summary`."""
        if self.state.finished:
            return self.summary()
        with _deterministic_algorithms(self.ctx.device):
            return self._run()

    def _run(self) -> dict[str, Any]:
        progress = Progress(self.config.max_steps, self.state.step, enabled=self.ctx.is_main, stream=self.stream)
        restore = self._install_signal_handlers()
        self._clock = time.monotonic()
        self._elapsed_base = self.state.elapsed_s
        self._window_start = time.monotonic()
        reason = None
        try:
            while reason is None:
                reason = self._budget_reason()
                if reason is not None:
                    break
                self._train_step()
                progress.update()
                step = self.state.step
                if step % self.config.log_every == 0 or step == self.config.max_steps:
                    self._log_train(progress)
                evaluated = step % self.config.eval_every == 0 or step == self.config.max_steps
                if evaluated:
                    reason = self._evaluate(progress)
                if evaluated or step % self.config.checkpoint_interval == 0:
                    self._save_last()
        finally:
            restore()
            progress.close()
        if reason == "interrupted":
            self.state.stop_reason = reason
            self._save_last()
            if self.ctx.is_main:
                print(f"interrupted at step {self.state.step}; continue with --resume {self.run_dir}", file=self.stream or sys.stderr)
            return self.summary()
        self._finish(reason)
        return self.summary()

    def _budget_reason(self) -> str | None:
        self.state.elapsed_s = self._elapsed_base + time.monotonic() - self._clock
        if self.ctx.any(self._stop_signal):
            return "interrupted"
        if self.state.step >= self.config.max_steps:
            return "max_steps"
        if self.config.max_time is not None and self.ctx.any(self.state.elapsed_s >= self.config.max_time):
            return "max_time"
        return None

    def _budget_left(self) -> bool:
        if self.state.step < self.config.max_steps and self.state.stop_reason == "max_steps":
            return True
        return self.state.stop_reason == "max_time" and (self.config.max_time is None or self.state.elapsed_s < self.config.max_time)

    def _train_step(self) -> None:
        cfg, ctx = self.config, self.ctx
        batch = self.task.train_batch(
            self.state.step, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world=ctx.world, delay=self.model_config.delay
        ).to(ctx.device)
        self.model.train()
        loss, sums, self.carry = self.objective(batch, None if batch.reset else self.carry)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.state.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.optimizer.step()
        self.state.step += 1
        self.state.samples += cfg.batch_size
        for key, value in sums.items():
            self.state.pending[key] = self.state.pending.get(key, 0.0) + value

    def _log_train(self, progress: Progress) -> None:
        sums = self.ctx.sum(self.state.pending)
        self.state.pending = {}
        metrics = self.task.metrics(sums)
        now = time.monotonic()
        rate = sums.get("count", 0.0) / max(now - self._window_start, 1e-9)
        self._window_start = now
        record = {"split": "train", "step": self.state.step, "samples": self.state.samples, **metrics,
                  "lr": self.config.lr_at(self.state.step - 1), "elapsed_s": round(self.state.elapsed_s, 3), "items_per_s": round(rate, 1)}
        if self.ctx.is_main:
            runlog.append_metrics(self.run_dir, record)
        shown = {"loss": metrics["loss"], self.task.metric: metrics[self.task.metric], "items/s": round(rate)}
        progress.report(self.state.step, shown)

    def evaluate(self, split: str, model: RecurrentModel | None = None, limit: int | None = None) -> dict[str, float]:
        """The task's metrics on ``split`` (sharded over the processes and added up)."""
        model = model or self.model
        was_training = model.training
        model.eval()
        sums = self.task.evaluate(
            model, split, self.config.eval_batch, limit=limit, rank=self.ctx.rank, world=self.ctx.world, device=self.ctx.device
        )
        model.train(was_training)
        return self.task.metrics(self.ctx.sum(sums))

    def _evaluate(self, progress: Progress | None = None) -> str | None:
        """Validate, keep the best checkpoint, plot; the reason to stop, if there is one now."""
        st, task = self.state, self.task
        metrics = self.evaluate("valid", limit=self.config.eval_limit)
        value = metrics[task.metric]
        improved = st.best_value is None or (value > st.best_value if task.higher_is_better else value < st.best_value)
        if improved:
            st.best_value, st.best_step, st.evals_since_best = value, st.step, 0
        else:
            st.evals_since_best += 1
        for key in ("accuracy", "sequence_accuracy"):
            if metrics.get(key, 0.0) >= TARGET and key not in st.reached:
                st.reached[key] = st.samples
        st.last_eval_step = st.step
        st.latest = {"step": st.step, "samples": st.samples, **_flat("valid", metrics)}
        record = {"split": "valid", "step": st.step, "samples": st.samples, **metrics, "best": improved,
                  "elapsed_s": round(st.elapsed_s, 3)}
        if self.ctx.is_main:
            runlog.append_metrics(self.run_dir, record)
            if improved:
                save_checkpoint(self._checkpoint(with_trainer=False, metrics=self._best_metrics()), self.run_dir / runlog.BEST)
            self._plot()
            if progress is not None:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                progress.message(f"[valid] step {st.step}: {shown}{' (best)' if improved else ''}")
        target = self.config.stop_at
        if target is not None and (value >= target if task.higher_is_better else value <= target):
            return "stop_at"
        if self.config.patience is not None and st.evals_since_best >= self.config.patience:
            return "early_stopping"
        return None

    def _finish(self, reason: str | None) -> None:
        st = self.state
        if st.last_eval_step != st.step:
            self._evaluate()
        self.ctx.barrier()
        best = load_checkpoint(self.run_dir / runlog.BEST)
        test = self.evaluate("test", model=best.build_model().to(self.ctx.device))
        st.finished, st.stop_reason = True, reason
        if self.ctx.is_main:
            runlog.append_metrics(self.run_dir, {"split": "test", "step": best.metrics.get("step", st.best_step), **test})
            best.metrics.update(_flat("test", test))
            best.metrics.update(self._reached_metrics())
            save_checkpoint(best, self.run_dir / runlog.BEST)
            self._plot()
            shown = ", ".join(f"{k} {v:.4g}" for k, v in test.items())
            print(f"[test] best.pt (step {best.metrics.get('step')}): {shown}; stopped by {reason}", file=self.stream or sys.stderr)
        self._save_last()

    # ------------------------------------------------------------ checkpoints
    def _best_metrics(self) -> dict[str, float]:
        return {**self.state.latest, **self._reached_metrics()}

    def _reached_metrics(self) -> dict[str, float]:
        return {f"samples_to_99_{k}": v for k, v in self.state.reached.items()}

    def _checkpoint(self, with_trainer: bool, metrics: dict[str, float], carry: Any = None) -> Checkpoint:
        trainer = None
        if with_trainer:
            trainer = {
                "state": self.state.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": _rng_state(),
                "carry": [t.cpu() for t in carry] if carry is not None else None,
            }
        return Checkpoint(
            config=self.model_config,
            model_state={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            task=self.task.describe(),
            metrics=metrics,
            trainer=trainer,
        )

    def _save_last(self) -> None:
        carry = self.carry
        if carry is not None and self.ctx.distributed:
            carry = self.ctx.gather_rows(carry)  # each process carries its own streams' state
        if self.ctx.is_main:
            checkpoint = self._checkpoint(with_trainer=True, metrics=dict(self.state.latest), carry=carry)
            save_checkpoint(checkpoint, self.run_dir / runlog.LAST)
        self.ctx.barrier()

    def _plot(self) -> None:
        from .plots import plot_curves

        title = f"{self.config.task} / {self.config.variant} L={self.model_config.depth} M={self.model_config.channels}"
        try:
            plot_curves(runlog.read_metrics(self.run_dir), self.task.metric, self.run_dir / runlog.CURVES, title)
        except ImportError as exc:  # matplotlib belongs to the train extra; training goes on without it
            if not self._plot_warned:
                print(f"curves.png skipped: {exc}", file=self.stream or sys.stderr)
                self._plot_warned = True

    # ------------------------------------------------------------ signals and summary
    def _install_signal_handlers(self):
        """Ctrl-C / SIGTERM finish the step in flight, save last.pt and stop; a second Ctrl-C aborts."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_signal and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def summary(self) -> dict[str, Any]:
        """Where the run stands: steps, stop reason, best validation and test metrics."""
        st = self.state
        out: dict[str, Any] = {
            "run": str(self.run_dir), "step": st.step, "samples": st.samples, "stop_reason": st.stop_reason,
            "finished": st.finished, "best_step": st.best_step, "metric": self.task.metric, "best_valid": st.best_value,
        }
        if st.finished and (self.run_dir / runlog.BEST).is_file():
            out["best_metrics"] = load_checkpoint(self.run_dir / runlog.BEST).metrics
        return out


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The TrainConfig stored in ``run_dir/config.json``, with budget/device overrides applied."""
    data = runlog.read_config(Path(run_dir))
    try:
        config = TrainConfig.from_dict(data["train"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{Path(run_dir) / runlog.CONFIG}: no valid 'train' section ({exc})") from exc
    return config.replace(**{k: v for k, v in overrides.items() if v is not None})
