"""``tlstm train``, ``tlstm eval`` and ``tlstm viz``.

    tlstm train TASK [task options] [model/optimizer/budget options] --out RUN
    tlstm train --resume RUN [--max-steps N] [--max-time S] [--device D] [--threads N] [--fused F]
    tlstm eval RUN|CHECKPOINT [--split test|valid] [--data PATH]
    tlstm viz RUN|CHECKPOINT [--out PNG] [--index I] [--data PATH]

Data-parallel: ``torchrun --nproc_per_node=N --no-python tlstm train ...`` (or
``python -m training.cli train ...`` under torchrun).

Exit codes: 0 done, 2 bad arguments or data, 130 interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from model import variant_names

from .tasks import TASK_NAMES, task_module

DEFAULTS_EPILOG = "Defaults follow the paper where it gives them (Adam, lr 1e-3); see recipes/ for full-size runs."
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so the *_main functions return codes."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message}\n\n{self.format_usage()}")


class _UsageError(Exception):
    pass


def _parse(
    parser: argparse.ArgumentParser, argv: list[str], check: Callable[[argparse.Namespace], None] | None = None
) -> argparse.Namespace | int:
    """Parse ``argv`` and run ``check(args)`` (which may call ``parser.error``).

    Returns the arguments, or the exit code to return instead: 2 with the usage message on
    stderr for bad arguments, 0 after ``--help``.
    """
    try:
        args = parser.parse_args(argv)
        if check is not None:
            check(args)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    return args


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="RUN", help="run directory to create (config, metrics, checkpoints, plots)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    run.add_argument("--fused", choices=["auto", "on", "off"], default="auto",
                     help="fused Triton step on CUDA: auto (where supported), on (required), off (default auto)")
    model = parser.add_argument_group("model")
    model.add_argument("--variant", default="tlstm-2d", choices=variant_names(), metavar="NAME",
                       help=f"one of {', '.join(variant_names())} (default tlstm-2d)")
    model.add_argument("--depth", type=int, default=3, help="L: tensor size P for tLSTMs, layers for baselines")
    model.add_argument("--channels", type=int, default=64, help="M: channels per location (hidden width)")
    model.add_argument("--impl", choices=["fast", "reference"], default="fast", help="tLSTM step implementation")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, default=32, help="global batch (LM: parallel streams)")
    opt.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    opt.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0 disables)")
    opt.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                     help="constant, or cosine from --lr down to a tenth of it over --max-steps")
    budget = parser.add_argument_group("budget, evaluation, logging")
    budget.add_argument("--max-steps", type=int, default=1000)
    budget.add_argument("--max-time", type=float, default=None, metavar="SECONDS", help="wall-clock budget")
    budget.add_argument("--eval-every", type=int, default=100)
    budget.add_argument("--eval-limit", type=int, default=None, help="validate on the first N examples (LM: symbols)")
    budget.add_argument("--eval-batch-size", type=int, default=None)
    budget.add_argument("--patience", type=int, default=None, help="early stopping: evaluations without improvement")
    budget.add_argument("--stop-at", type=float, default=None, metavar="VALUE",
                        help="stop once the validation metric reaches VALUE (e.g. 0.99 accuracy)")
    budget.add_argument("--checkpoint-every", type=int, default=None, help="steps between last.pt writes (default: --eval-every)")
    budget.add_argument("--log-every", type=int, default=10)


def train_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlstm train", description="Train a model on one of the paper's tasks.", epilog=DEFAULTS_EPILOG)
    sub = parser.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    for name in TASK_NAMES:
        module = task_module(name)
        task_parser = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0], description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(task_parser)
        _add_training_options(task_parser)
    return parser


def resume_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlstm train --resume", description="Continue a run from its last.pt.")
    parser.add_argument("--resume", required=True, metavar="RUN", help="the run directory")
    parser.add_argument("--max-steps", type=int, default=None, help="a new step budget")
    parser.add_argument("--max-time", type=float, default=None, metavar="SECONDS", help="a new wall-clock budget")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fused", choices=["auto", "on", "off"], default=None)
    return parser


TRAIN_KEYS = ("seed", "device", "threads", "fused", "variant", "depth", "channels", "batch_size", "lr", "lr_schedule", "clip",
              "max_steps", "max_time", "eval_every", "eval_limit", "eval_batch_size", "patience", "stop_at", "checkpoint_every", "log_every")


def _config_from_args(args: argparse.Namespace):
    from .config import TrainConfig

    values = vars(args)
    return TrainConfig(
        task=args.task,
        task_options={k: values[k] for k in task_module(args.task).OPTIONS},
        model_options={} if args.impl == "fast" else {"impl": args.impl},
        **{k: values[k] for k in TRAIN_KEYS},
    )


def _print_error(command: str, exc: BaseException) -> None:
    print(f"tlstm {command}: error: {exc}", file=sys.stderr)


def train_main(argv: list[str]) -> int:
    """``tlstm train``; returns the exit code."""
    argv = list(argv)
    resuming = "--resume" in argv or any(a.startswith("--resume=") for a in argv)
    parser = resume_parser() if resuming else train_parser()

    def check(args: argparse.Namespace) -> None:
        if not resuming and args.task is None:
            parser.error(f"expected a task: one of {', '.join(TASK_NAMES)} (or --resume RUN)")

    args = _parse(parser, argv, check)
    if isinstance(args, int):
        return args

    from .distributed import setup, teardown
    from .trainer import Trainer, resume_config

    try:
        if resuming:
            run_dir = Path(args.resume)
            config = resume_config(run_dir, max_steps=args.max_steps, max_time=args.max_time, device=args.device, threads=args.threads,
                                   fused=args.fused)
        else:
            run_dir = Path(args.out)
            config = _config_from_args(args)
        ctx = setup(config.device)
    except ValueError as exc:
        _print_error("train", exc)
        return EXIT_BAD_INPUT
    try:
        trainer = Trainer(config, run_dir, resume=resuming, ctx=ctx)
        summary = trainer.run()
    except ValueError as exc:
        _print_error("train", exc)
        return EXIT_BAD_INPUT
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return EXIT_INTERRUPTED if summary["stop_reason"] == "interrupted" else 0


# ---------------------------------------------------------------- eval and viz
def _checkpoint_path(target: str) -> Path:
    from . import runlog

    path = Path(target)
    if path.is_dir():
        best = path / runlog.BEST
        if not best.is_file():
            raise ValueError(f"{path}: no {runlog.BEST}; expected a run directory that has reached its first evaluation, or a checkpoint file")
        return best
    if not path.exists():
        raise ValueError(f"{path}: no such run directory or checkpoint file")
    return path


def _load(target: str, data: str | None) -> tuple[Any, Any, Path]:
    """(checkpoint, task rebuilt from it, checkpoint path); ``data`` replaces the data path."""
    from .checkpoint import load_checkpoint
    from .tasks import build_task

    path = _checkpoint_path(target)
    ckpt = load_checkpoint(path)
    settings = dict(ckpt.task.get("settings") or {})
    if data is not None:
        if "data" not in settings:
            raise ValueError(f"--data: the {ckpt.task['name']!r} task takes no data path")
        settings["data"] = data
    task = build_task(ckpt.task["name"], settings, info=ckpt.task.get("info"))
    return ckpt, task, path


def eval_main(argv: list[str]) -> int:
    """``tlstm eval RUN|CHECKPOINT``: the task's metrics on a split, printed as JSON."""
    parser = _Parser(prog="tlstm eval", description="Evaluate a run (its best.pt) or a checkpoint on its task.")
    parser.add_argument("target", metavar="RUN|CHECKPOINT")
    parser.add_argument("--split", choices=["test", "valid", "train"], default="test")
    parser.add_argument("--data", default=None, help="the task's data path, if it moved since training")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples (LM: symbols)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")

    def check(args: argparse.Namespace) -> None:
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            parser.error("--batch-size and --limit: expected positive integers")

    args = _parse(parser, argv, check)
    if isinstance(args, int):
        return args
    from .distributed import resolve_device

    try:
        ckpt, task, path = _load(args.target, args.data)
        if args.split == "train" and task.kind == "seq2seq":
            raise ValueError(f"--split train: the {task.name} task generates its training data; expected test or valid")
        device = resolve_device(args.device)
        model = ckpt.build_model().to(device)
        sums = task.evaluate(model, args.split, args.batch_size, limit=args.limit, device=device)
    except ValueError as exc:
        _print_error("eval", exc)
        return EXIT_BAD_INPUT
    result = {"checkpoint": str(path), "task": task.name, "split": args.split, **task.metrics(sums)}
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def viz_main(argv: list[str]) -> int:
    """``tlstm viz RUN|CHECKPOINT``: the memory-cell picture of one example as a PNG."""
    parser = _Parser(prog="tlstm viz", description="Draw the channel mean of the memory cell along the input-to-output "
                     "diagonal over time, for one example of the task's test split.")
    parser.add_argument("target", metavar="RUN|CHECKPOINT")
    parser.add_argument("--out", default=None, metavar="PNG", help="default: RUN/memory.png, or CHECKPOINT.memory.png")
    parser.add_argument("--split", choices=["test", "valid", "train"], default="test")
    parser.add_argument("--index", type=int, default=0, help="which example (LM: which segment)")
    parser.add_argument("--data", default=None, help="the task's data path, if it moved since training")

    def check(args: argparse.Namespace) -> None:
        if args.index < 0:
            parser.error(f"--index: expected a non-negative integer, got {args.index}")

    args = _parse(parser, argv, check)
    if isinstance(args, int):
        return args
    from .viz import draw_memory

    try:
        ckpt, task, path = _load(args.target, args.data)
        model = ckpt.build_model()
        x, labels = task.example(args.split, args.index)
        out = Path(args.out) if args.out else (path.parent / "memory.png" if Path(args.target).is_dir() else path.with_suffix(".memory.png"))
        cfg = ckpt.config
        title = f"{task.name}: {cfg.arch if not cfg.is_tlstm else 'tLSTM'} D={cfg.order} L={cfg.depth} M={cfg.channels}, {args.split} example {args.index}"
        info = draw_memory(model, x, labels, out, title)
    except ValueError as exc:
        _print_error("viz", exc)
        return EXIT_BAD_INPUT
    print(json.dumps({"png": str(out), **info}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.cli {train,eval,viz} ...`` (for torchrun without the tlstm script)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "eval": eval_main, "viz": viz_main}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m training.cli {{{','.join(commands)}}} ...", file=sys.stderr)
        return EXIT_BAD_INPUT
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
