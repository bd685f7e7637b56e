"""The default-models script trains exactly the configurations it declares."""

import pytest

from training.cli import _config_from_args, train_parser
from training.default_models import DEFAULT_MODELS, train_command


@pytest.mark.parametrize("name", sorted(DEFAULT_MODELS))
def test_the_command_line_rebuilds_the_declared_config(tmp_path, name):
    command = train_command(DEFAULT_MODELS[name], tmp_path / name)
    assert command[1:4] == ["-m", "training.cli", "train"]
    args = train_parser().parse_args(command[4:])
    assert _config_from_args(args) == DEFAULT_MODELS[name]


def test_an_existing_run_is_resumed(tmp_path):
    run = tmp_path / "chars"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert train_command(DEFAULT_MODELS["chars"], run)[4:] == ["--resume", str(run)]


def test_default_models_are_single_threaded_cpu_step_budgets():
    for config in DEFAULT_MODELS.values():  # reproducible: no time budget, one thread, CPU
        assert config.max_time is None and config.threads == 1 and config.device == "cpu"
