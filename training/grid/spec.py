"""Grid files: a declarative list of experiments, parsed and validated into cells.

A grid file is TOML (committed under ``recipes/grids/``)::

    [grid]
    description = "what this grid reproduces"
    device = "cpu"                       # optional; ``tlstm grid --device`` overrides it

    [[experiment]]
    name = "memorization"                # names the experiment's run directories and figures
    task = "memorization"                # a training task (training.tasks.TASK_NAMES)
    task_options = { length = 8, symbols = 16 }
    variants = ["slstm", "tlstm-2d+cn"]  # model.variant_names()
    depths = [2, 4]                      # L
    channels = [32]                      # M for every variant, or one entry per variant:
    # channels = { slstm = 48, "tlstm-2d+cn" = [32, 64] }
    seeds = 3                            # [0, 1, 2]; or an explicit list such as [0, 5]
    figures = ["test", "ms_per_step"]    # optional; default every figure that applies

    [experiment.train]                   # shared by every variant of this experiment
    batch_size = 32
    lr = 1e-2
    max_steps = 1000
    eval_every = 50

    [[experiment]]
    name = "gradients"
    kind = "gradient"                    # not a training run: gradient norms at initialisation
    variants = ["tlstm-2d", "tlstm-m"]
    depths = [4]
    channels = [32]
    seeds = 3

    [experiment.analysis]
    lengths = [10, 50, 100]              # T
    input_size = 8                       # R (features); output_size, batch_size likewise

Every cell (experiment x variant x L x M x seed) is one run directory. Every variant of an
experiment gets the same hyperparameters (``[experiment.train]``); only the channels may
differ per variant, so that parameter counts can be held about equal. Every mistake raises
:class:`GridError` naming the file, the experiment, the key, the value and what is accepted.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("train", "gradient")
DEVICES = ("auto", "cpu", "cuda")
GRID_KEYS = ("grid", "experiment")
HEADER_KEYS = ("description", "device")
EXPERIMENT_KEYS = {
    "train": ("name", "kind", "description", "task", "task_options", "variants", "depths", "channels", "seeds", "train",
              "figures"),
    "gradient": ("name", "kind", "description", "variants", "depths", "channels", "seeds", "analysis"),
}
# [experiment.train]: every TrainConfig field that is not set per cell (task, variant, L, M, seed)
TRAIN_KEYS = ("batch_size", "lr", "clip", "max_steps", "max_time", "eval_every", "eval_limit", "eval_batch_size",
              "patience", "stop_at", "checkpoint_every", "log_every", "model_options", "allow_noncausal")
# TrainConfig fields that may change between invocations of a grid without making a cell another
# cell: where it runs, and its budget (a longer budget continues a finished run, as
# ``tlstm train --resume --max-steps`` does).
RUNTIME_KEYS = ("device", "threads")
BUDGET_KEYS = ("max_steps", "max_time")
FIGURES = ("test", "samples_to_99", "ms_per_step")  # per training experiment; samples_to_99 for addition, memorization
ANALYSIS_DEFAULTS: dict[str, Any] = {"lengths": None, "input_size": 8, "output_size": 8, "batch_size": 16}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class GridError(ValueError):
    """A grid file that cannot be run: the message names the key, the value and what is accepted."""


@dataclass(frozen=True)
class Cell:
    """One run of a grid: an experiment's variant at depth L, width M and one seed.

    Attributes:
        experiment: the experiment's name; kind: ``"train"`` or ``"gradient"``.
        task: the training task (None for gradient cells).
        variant, depth, channels, seed: the model (L = ``depth``, M = ``channels``) and seed.
        train: the resolved ``TrainConfig`` as a dict (train cells; device and threads unset).
        analysis: the gradient analysis settings (gradient cells).
    """

    experiment: str
    kind: str
    task: str | None
    variant: str
    depth: int
    channels: int
    seed: int
    train: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """``experiment/variant/L<depth>-M<channels>/seed<seed>``, also its run directory under ``runs/``."""
        return f"{self.experiment}/{self.variant}/L{self.depth}-M{self.channels}/seed{self.seed}"

    @property
    def rel_dir(self) -> Path:
        """The run directory relative to the grid's output directory."""
        return Path("runs", self.experiment, self.variant, f"L{self.depth}-M{self.channels}", f"seed{self.seed}")

    def identity(self) -> dict[str, Any]:
        """What makes this cell this cell (a finished run is reused only when it matches): for a
        training cell its resolved TrainConfig (defaults filled in) without device and threads."""
        if self.kind == "train":
            resolved = self.train_config("cpu", None).to_dict()
            return {"kind": self.kind, "train": {k: v for k, v in resolved.items() if k not in RUNTIME_KEYS}}
        return {"kind": self.kind, "variant": self.variant, "depth": self.depth, "channels": self.channels,
                "seed": self.seed, "analysis": self.analysis}

    def train_config(self, device: str, threads: int | None) -> Any:
        """The cell's ``TrainConfig``, to run on ``device`` with ``threads`` torch threads."""
        from training.config import TrainConfig

        if self.train is None:
            raise ValueError(f"cell {self.id}: a {self.kind} cell has no training configuration")
        return TrainConfig.from_dict({**self.train, "device": device, "threads": threads})


@dataclass(frozen=True)
class Experiment:
    """One ``[[experiment]]`` table, validated; ``cells`` in variant, L, M, seed order."""

    name: str
    kind: str
    description: str
    task: str | None
    task_options: dict[str, Any]
    variants: tuple[str, ...]
    depths: tuple[int, ...]
    channels: dict[str, tuple[int, ...]]
    seeds: tuple[int, ...]
    train: dict[str, Any]
    analysis: dict[str, Any]
    figures: tuple[str, ...]
    cells: tuple[Cell, ...] = field(repr=False)


@dataclass(frozen=True)
class GridSpec:
    """A parsed grid file: its experiments and every cell, in file order."""

    path: Path
    text: str
    description: str
    device: str
    experiments: tuple[Experiment, ...]

    @property
    def cells(self) -> list[Cell]:
        return [cell for experiment in self.experiments for cell in experiment.cells]


# ---------------------------------------------------------------- loading
def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file.

    Raises:
        GridError: a missing or unreadable file, bad TOML, or any invalid key or value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise GridError(f"{path}: no such grid file; expected a TOML file such as recipes/grids/paper-cpu.toml") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"{path}: cannot read the grid file ({exc})") from exc
    return parse_grid(text, path)


def parse_grid(text: str, path: str | Path = "<grid>") -> GridSpec:
    """Validate grid-file ``text`` (``path`` names it in messages). Raises GridError."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML ({exc})") from exc
    where = str(path)
    _known_keys(where, data, GRID_KEYS)
    header = data.get("grid", {})
    if not isinstance(header, dict):
        raise GridError(f"{where}: key 'grid': expected a table ([grid]), got {header!r}")
    _known_keys(f"{where} [grid]", header, HEADER_KEYS)
    description = _string(f"{where} [grid]", "description", header.get("description", ""))
    device = header.get("device", "cpu")
    if device not in DEVICES:
        raise GridError(f"{where} [grid]: key 'device': expected one of {list(DEVICES)}, got {device!r}")
    tables = data.get("experiment")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise GridError(f"{where}: expected at least one [[experiment]] table, got {tables!r}")
    experiments: list[Experiment] = []
    for number, table in enumerate(tables, start=1):
        experiment = _experiment(where, number, table)
        if any(e.name == experiment.name for e in experiments):
            raise GridError(f"{where}: experiment #{number}: key 'name': {experiment.name!r} is used twice; expected unique names")
        experiments.append(experiment)
    return GridSpec(path=path, text=text, description=description, device=device, experiments=tuple(experiments))


# ---------------------------------------------------------------- one experiment
def _experiment(where: str, number: int, table: dict[str, Any]) -> Experiment:
    name = table.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise GridError(
            f"{where}: experiment #{number}: key 'name': expected a name of letters, digits, '_', '.' and '-' "
            f"(starting with a letter or digit), got {name!r}"
        )
    where = f"{where}: experiment {name!r}"
    kind = table.get("kind", "train")
    if kind not in KINDS:
        raise GridError(f"{where}: key 'kind': expected one of {list(KINDS)}, got {kind!r}")
    _known_keys(where, table, EXPERIMENT_KEYS[kind])
    for key in ("variants", "depths", "channels", "seeds"):
        if key not in table:
            raise GridError(f"{where}: missing key {key!r}")
    description = _string(where, "description", table.get("description", ""))
    variants = _variants(where, table["variants"])
    depths = _int_list(where, "depths", table["depths"], low=1)
    channels = _channels(where, table["channels"], variants)
    seeds = _seeds(where, table["seeds"])
    figures = table.get("figures", list(FIGURES))
    if not isinstance(figures, list) or not all(f in FIGURES for f in figures):
        raise GridError(f"{where}: key 'figures': expected a list of figure names from {list(FIGURES)}, got {figures!r}")
    if kind == "train":
        task, task_options, train = _training(where, table)
        analysis: dict[str, Any] = {}
    else:
        task, task_options, train = None, {}, {}
        analysis = _analysis(where, table.get("analysis"))
    cells = []
    for variant in variants:
        for depth in depths:
            for width in channels[variant]:
                for seed in seeds:
                    cell_train = None
                    if kind == "train":
                        cell_train = {"task": task, "task_options": task_options, "variant": variant, "depth": depth,
                                      "channels": width, "seed": seed, **train}
                    cells.append(Cell(name, kind, task, variant, depth, width, seed, cell_train, analysis or None))
    if kind == "train":
        _check_train_cells(where, cells)
    else:
        _check_gradient_cells(where, cells)
    return Experiment(name, kind, description, task, task_options, variants, depths, channels, seeds, train, analysis,
                      tuple(figures), tuple(cells))


def _training(where: str, table: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from training.tasks import TASK_NAMES, task_module

    task = table.get("task")
    if task not in TASK_NAMES:
        raise GridError(f"{where}: key 'task': expected one of {list(TASK_NAMES)}, got {task!r}")
    options = table.get("task_options", {})
    if not isinstance(options, dict):
        raise GridError(f"{where}: key 'task_options': expected a table of the {task} task's options, got {options!r}")
    accepted = task_module(task).OPTIONS
    _known_keys(f"{where} task_options", options, accepted)
    train = table.get("train")
    if not isinstance(train, dict):
        raise GridError(
            f"{where}: missing [experiment.train] table (the hyperparameters every variant shares); "
            f"expected keys among {list(TRAIN_KEYS)}, got {train!r}"
        )
    _known_keys(f"{where} [experiment.train]", train, TRAIN_KEYS)
    return task, dict(options), dict(train)


def _check_train_cells(where: str, cells: list[Cell]) -> None:
    """Each cell's TrainConfig and model config are valid, and the trainer would accept the variant."""
    from training.config import TrainConfig

    kind, input_type = _task_traits(cells[0].task or "")
    for cell in cells:
        assert cell.train is not None
        try:
            config = TrainConfig.from_dict({**cell.train, "device": "cpu"})
            model = config.model_config(2, 2, input_type)
        except ValueError as exc:
            raise GridError(f"{where}: cell {cell.variant} L={cell.depth} M={cell.channels}: {exc}") from exc
        if kind in ("lm", "seq2seq") and not model.is_causal and not config.allow_noncausal:
            raise GridError(
                f"{where}: key 'variants': {cell.variant!r} is not causal (LN pools later inputs into earlier "
                f"outputs), and the trainer refuses it for the {kind} task {cell.task!r}; expected a causal "
                "variant (no suffix or +cn), a classification task for +ln, or allow_noncausal = true in "
                "[experiment.train] to measure the leak"
            )


def _check_gradient_cells(where: str, cells: list[Cell]) -> None:
    from model import variant_config

    for cell in cells:
        try:
            variant_config(cell.variant, input_size=2, output_size=2, depth=cell.depth, channels=cell.channels, input_type="features")
        except ValueError as exc:
            raise GridError(f"{where}: cell {cell.variant} L={cell.depth} M={cell.channels}: {exc}") from exc


def _task_traits(task: str) -> tuple[str, str]:
    """(kind, input_type) of a task, read from its Task class without building its data."""
    from training.tasks import Task, task_module

    module = task_module(task)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Task) and value.__module__ == module.__name__:
            return value.kind, value.input_type
    raise GridError(f"task {task!r}: its module defines no Task class")  # pragma: no cover


def _analysis(where: str, table: Any) -> dict[str, Any]:
    where = f"{where} [experiment.analysis]"
    if not isinstance(table, dict):
        raise GridError(f"{where}: missing table; expected keys {list(ANALYSIS_DEFAULTS)}, got {table!r}")
    _known_keys(where, table, tuple(ANALYSIS_DEFAULTS))
    if "lengths" not in table:
        raise GridError(f"{where}: missing key 'lengths' (the sequence lengths T to measure)")
    settings = {**ANALYSIS_DEFAULTS, **table}
    settings["lengths"] = list(_int_list(where, "lengths", settings["lengths"], low=1))
    for key in ("input_size", "output_size", "batch_size"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GridError(f"{where}: key {key!r}: expected a positive int, got {value!r}")
    return settings


# ---------------------------------------------------------------- values
def _known_keys(where: str, table: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(accepted))
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; expected keys among {list(accepted)}")


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise GridError(f"{where}: key {key!r}: expected a string, got {value!r}")
    return value


def _variants(where: str, value: Any) -> tuple[str, ...]:
    from model import variant_names

    names = variant_names()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise GridError(f"{where}: key 'variants': expected a non-empty list of variant names from {names}, got {value!r}")
    unknown = [v for v in value if v not in names]
    if unknown:
        raise GridError(f"{where}: key 'variants': unknown variant(s) {unknown}; expected names from {names}")
    if len(set(value)) != len(value):
        raise GridError(f"{where}: key 'variants': expected each variant once, got {value!r}")
    return tuple(value)


def _int_list(where: str, key: str, value: Any, low: int) -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
    if not ok:
        kind = "positive" if low == 1 else f">= {low}"
        raise GridError(f"{where}: key {key!r}: expected a non-empty list of {kind} ints, got {value!r}")
    if len(set(value)) != len(value):
        raise GridError(f"{where}: key {key!r}: expected distinct values, got {value!r}")
    return tuple(value)


def _channels(where: str, value: Any, variants: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    if isinstance(value, list):
        widths = _int_list(where, "channels", value, low=1)
        return dict.fromkeys(variants, widths)
    if not isinstance(value, dict):
        raise GridError(
            f"{where}: key 'channels': expected a list of positive ints (M for every variant) or a table "
            f"variant -> M or [M, ...], got {value!r}"
        )
    missing = [v for v in variants if v not in value]
    extra = sorted(set(value) - set(variants))
    if missing or extra:
        raise GridError(
            f"{where}: key 'channels': the table must name exactly the experiment's variants {list(variants)}; "
            f"missing {missing}, not a variant of this experiment {extra}"
        )
    out = {}
    for variant in variants:
        entry = value[variant]
        out[variant] = _int_list(where, f"channels.{variant}", [entry] if isinstance(entry, int) and not isinstance(entry, bool) else entry, low=1)
    return out


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise GridError(f"{where}: key 'seeds': expected a positive number of seeds or a list of seeds, got {value!r}")
        return tuple(range(value))
    return _int_list(where, "seeds", value, low=0)
