"""``tlstm grid``: a tiny grid runs in worker processes, survives kill -9, and its tables match its runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model import variant_config
from training import runlog
from training.checkpoint import load_checkpoint
from training.grid import gradients
from training.grid import main as grid
from training.grid.results import summary_markdown
from training.grid.spec import GridError, parse_grid
from training.grid.status import cell_lock, read_status

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
MAX_STEPS, BATCH = 60, 16

MEMO = f"""
[[experiment]]
name = "memo"
task = "memorization"
task_options = {{ length = 3, symbols = 8, valid_size = 40, test_size = 40 }}
variants = ["slstm", "tlstm-2d+cn"]
depths = [1, 2]
channels = [12]
seeds = [0]

[experiment.train]
batch_size = {BATCH}
lr = 1e-2
max_steps = {MAX_STEPS}
eval_every = 30
checkpoint_every = 5
log_every = 2
"""
GRAD = """
[[experiment]]
name = "grad"
kind = "gradient"
variants = ["tlstm-m"]
depths = [3]
channels = [6]
seeds = [4]

[experiment.analysis]
lengths = [1, 6]
input_size = 3
output_size = 4
batch_size = 5
"""
BROKEN = """
[[experiment]]
name = "broken"
task = "chars"
task_options = { data = "no-such-corpus.txt" }
variants = ["tlstm-2d"]
depths = [1]
channels = [4]
seeds = [0]

[experiment.train]
max_steps = 2
"""
HEADER = '[grid]\ndescription = "a tiny grid of the test suite"\n'
GRID = HEADER + MEMO + GRAD + BROKEN
RESUMABLE = HEADER + MEMO + GRAD  # the same cells without the one that always fails


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _stamps(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(run_dir.iterdir()) if p.is_file()}


def _same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same result: weights, metrics and log (times aside)."""
    for name in (runlog.BEST, runlog.LAST):
        first, second = load_checkpoint(a / name), load_checkpoint(b / name)
        for key, value in first.model_state.items():
            assert torch.equal(value, second.model_state[key]), (name, key)
        assert first.metrics == second.metrics
    drop = ("elapsed_s", "items_per_s")
    logs = [[{k: v for k, v in r.items() if k not in drop} for r in runlog.read_metrics(d)] for d in (a, b)]
    assert logs[0] == logs[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, int]:
    """The tiny grid run to the end with 2 workers: (grid file, output directory, exit code)."""
    base = tmp_path_factory.mktemp("grid")
    grid_file, out = _write(base / "tiny.toml", GRID), base / "out"
    code = grid([str(grid_file), "--out", str(out), "--workers", "2", "--threads", "1"])
    return grid_file, out, code


# ---------------------------------------------------------------- a whole grid
@pytest.mark.slow
def test_results_csv_rows_are_the_run_directories_own_metrics(finished):
    _, out, code = finished
    assert code == 1  # every cell ran; the broken one failed and is reported, the grid went on
    rows = {(r["experiment"], r["variant"], int(r["depth"])): r for r in _rows(out)}
    assert sorted(rows) == [("broken", "tlstm-2d", 1), ("memo", "slstm", 1), ("memo", "slstm", 2),
                            ("memo", "tlstm-2d+cn", 1), ("memo", "tlstm-2d+cn", 2)]
    for (experiment, variant, depth), row in rows.items():
        if experiment != "memo":
            continue
        run = out / row["run_dir"]
        best = load_checkpoint(run / runlog.BEST).metrics
        records = runlog.read_metrics(run)
        valid = [r for r in records if r["split"] == "valid"]
        expected_parameters = variant_config(variant, input_size=9, output_size=9, depth=depth, channels=12).num_parameters
        assert row["status"] == "done" and row["error"] == ""
        assert int(row["parameters"]) == expected_parameters == runlog.read_config(run)["parameters"]
        assert row["metric"] == "accuracy"
        assert float(row["test"]) == best["test_accuracy"]
        assert float(row["test_sequence_accuracy"]) == best["test_sequence_accuracy"]
        assert float(row["valid_final"]) == valid[-1]["accuracy"]
        assert float(row["valid_best"]) == max(r["accuracy"] for r in valid)
        assert int(row["steps"]) == MAX_STEPS and int(row["samples"]) == MAX_STEPS * BATCH
        assert row["stop_reason"] == "max_steps"
        assert int(row["sample_budget"]) == MAX_STEPS * BATCH
        if "samples_to_99_accuracy" in best:
            assert row["solved"] == "yes" and int(row["samples_to_99"]) == best["samples_to_99_accuracy"]
        else:
            assert row["solved"] == "no" and row["samples_to_99"] == ""
        # the step time is the median of the trainer's own clock over logging windows
        train = [r for r in records if r["split"] == "train"]
        windows = [1000 * (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:], strict=False)]
        assert 0 < min(windows) <= float(row["ms_per_step"]) <= max(windows)
        assert float(row["train_s"]) == valid[-1]["elapsed_s"] <= float(row["wall_s"])
    broken = rows[("broken", "tlstm-2d", 1)]
    assert broken["status"] == "failed"
    assert "no-such-corpus.txt: no such file" in broken["error"]
    assert read_status(out / broken["run_dir"])["status"] == "failed"


@pytest.mark.slow
def test_summary_table_and_figures_are_written(finished):
    _, out, _ = finished
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Grid results: tiny.toml\n\na tiny grid of the test suite\n")
    assert "5 of 6 cells finished" in summary
    for row in _rows(out):
        if row["experiment"] == "memo":
            prefix = (f"| {row['variant']} | {row['depth']} | 12 | {int(row['parameters']):,} | 1/1 | "
                      f"{100 * float(row['test']):.1f}% | {100 * float(row['valid_final']):.1f}% | ")
            assert prefix in summary, prefix
    assert "## Failed cells" in summary and "runs/broken/tlstm-2d/L1-M4/seed0" in summary
    for name in ("memo-test_accuracy.png", "memo-samples_to_99.png", "memo-ms_per_step.png", "grad-grad_norm.png"):
        assert (out / "figures" / name).read_bytes()[:8] == PNG, name


@pytest.mark.slow
def test_gradient_cells_hold_the_measured_norms(finished):
    _, out, _ = finished
    with open(out / "gradients.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["variant"], int(r["length"])) for r in rows] == [("tlstm-m", 1), ("tlstm-m", 6)]
    expected = gradients.measure("tlstm-m", 3, 6, 4, lengths=[1, 6], input_size=3, output_size=4, batch_size=5)
    found = [float(r["grad_norm"]) for r in rows]
    assert found == pytest.approx(expected, rel=1e-12)
    assert all(g > 0 for g in found)


@pytest.mark.slow
def test_collect_only_rebuilds_the_same_tables_and_a_rerun_changes_nothing(finished, tmp_path):
    grid_file, out, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p: _stamps(p) for p in (copy / "runs" / "memo").glob("*/*/seed0")}
    csv_before, summary_before = (copy / "results.csv").read_text(), (copy / "summary.md").read_text()
    (copy / "results.csv").unlink()
    (copy / "summary.md").unlink()
    assert grid([str(grid_file), "--out", str(copy), "--collect-only", "--no-figures"]) == 0
    assert (copy / "results.csv").read_text() == csv_before
    assert (copy / "summary.md").read_text() == summary_before
    resumable = _write(tmp_path / "resumable.toml", RESUMABLE)  # the same grid without the failing cell
    assert grid([str(resumable), "--out", str(copy), "--workers", "2", "--no-figures"]) == 0  # all done: nothing runs
    assert {p: _stamps(p) for p in before} == before


# ---------------------------------------------------------------- kill -9 and resume
@pytest.mark.slow
def test_kill_9_of_the_grid_loses_only_the_cell_in_flight_which_resumes(finished, tmp_path):
    _, reference, _ = finished
    grid_file, out = _write(tmp_path / "tiny.toml", RESUMABLE), tmp_path / "out"
    victim_rel = "runs/memo/tlstm-2d+cn/L2-M12/seed0"
    # the other cells are finished already (copies of the uninterrupted grid's run directories)
    kept = [Path("runs/memo/slstm/L1-M12/seed0"), Path("runs/memo/slstm/L2-M12/seed0"),
            Path("runs/memo/tlstm-2d+cn/L1-M12/seed0"), Path("runs/grad/tlstm-m/L3-M6/seed4")]
    for rel in kept:
        shutil.copytree(reference / rel, out / rel)
    stamps = {rel: _stamps(out / rel) for rel in kept}

    log = open(tmp_path / "grid.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "training.grid", str(grid_file), "--out", str(out), "--workers", "1", "--threads", "1",
         "--no-figures"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    victim = out / victim_rel
    deadline = time.monotonic() + 120
    while max((r["step"] for r in runlog.read_metrics(victim) if r["split"] == "train"), default=0) < 10:
        assert process.poll() is None, (tmp_path / "grid.log").read_text()
        assert time.monotonic() < deadline, "the grid made no progress"
        time.sleep(0.02)
    # Freeze the worker so that the grid dies while the cell is surely in flight, however fast
    # the machine; it continues after the grid is gone, as a worker of a killed grid would.
    worker = read_status(victim)["pid"]
    os.kill(worker, signal.SIGSTOP)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    time.sleep(0.7)  # longer than the worker's look at its parent: it notices as soon as it runs
    os.kill(worker, signal.SIGCONT)
    with cell_lock(victim, wait_s=60):  # the orphaned worker saved its step and let go of the cell
        pass
    status = read_status(victim)
    assert status["status"] == "interrupted" and status["attempts"] == 1
    stopped_at = load_checkpoint(victim / runlog.LAST).trainer["state"]["step"]
    assert 10 <= stopped_at < MAX_STEPS
    assert not (out / "results.csv").exists()  # the grid process never got to write it

    assert grid([str(grid_file), "--out", str(out), "--workers", "2", "--threads", "1", "--no-figures"]) == 0
    assert {rel: _stamps(out / rel) for rel in kept} == stamps  # finished cells were not run again
    assert read_status(victim)["status"] == "done" and read_status(victim)["attempts"] == 2
    _same_run(reference / victim_rel, victim)  # resumed bit for bit: as if never interrupted
    assert [r["status"] for r in _rows(out)] == ["done"] * 4


@pytest.mark.slow
def test_changed_settings_over_an_existing_run_fail_that_cell_and_leave_it_alone(finished, tmp_path):
    _, reference, _ = finished
    out = tmp_path / "out"
    shutil.copytree(reference / "runs" / "memo", out / "runs" / "memo")
    before = _stamps(out / "runs/memo/slstm/L1-M12/seed0")
    changed = _write(tmp_path / "changed.toml", HEADER + MEMO.replace("lr = 1e-2", "lr = 2e-2"))
    assert grid([str(changed), "--out", str(out), "--workers", "2", "--no-figures"]) == 1
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["failed"] * 4
    assert "holds a run with other settings (lr: 0.01 there, 0.02 in the grid file)" in rows[0]["error"]
    after = _stamps(out / "runs/memo/slstm/L1-M12/seed0")
    assert {k: v for k, v in after.items() if k != "cell.json"} == {k: v for k, v in before.items() if k != "cell.json"}


@pytest.mark.slow
def test_runs_recorded_before_a_training_field_existed_are_still_the_same_cells(finished, tmp_path):
    _, reference, _ = finished
    out = tmp_path / "out"
    shutil.copytree(reference / "runs" / "memo", out / "runs" / "memo")
    added = ("stop_at", "allow_noncausal")  # fields whose defaults keep the behaviour of before
    for run_dir in (out / "runs" / "memo").glob("*/*/seed0"):
        for name, path in (("cell.json", ("identity", "train")), ("config.json", ("train",))):
            record = json.loads((run_dir / name).read_text())
            train = record
            for key in path:
                train = train[key]
            assert set(added) <= set(train)
            for key in added:
                del train[key]
            (run_dir / name).write_text(json.dumps(record))
    before = {p: _stamps(p) for p in (out / "runs" / "memo").glob("*/*/seed0")}
    memo_only = _write(tmp_path / "memo.toml", HEADER + MEMO)
    assert grid([str(memo_only), "--out", str(out), "--workers", "2", "--no-figures"]) == 0  # nothing runs again
    assert {p: _stamps(p) for p in before} == before
    changed = _write(tmp_path / "changed.toml", HEADER + MEMO.replace("lr = 1e-2", "lr = 1e-2\nstop_at = 0.5"))
    assert grid([str(changed), "--out", str(out), "--workers", "2", "--no-figures"]) == 1
    assert "(stop_at: the default there, 0.5 in the grid file)" in _rows(out)[0]["error"]


# ---------------------------------------------------------------- grid files
GOOD_TRAIN = "[experiment.train]\nmax_steps = 10\n"


def _experiment(**fields: str) -> str:
    base = {"name": '"e"', "task": '"memorization"', "variants": '["slstm", "tlstm-2d+cn"]', "depths": "[1, 2]",
            "channels": "[8]", "seeds": "2"}
    base.update(fields)
    return "[[experiment]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None) + GOOD_TRAIN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[experiment]\nname = 1", "not valid TOML"),
        ("[grid]\n", "expected at least one [[experiment]] table, got None"),
        (_experiment(variants='["slstm", "gru"]'), "experiment 'e': key 'variants': unknown variant(s) ['gru']; expected names from ['tlstm-2d',"),
        (_experiment(depths="[0, 2]"), "experiment 'e': key 'depths': expected a non-empty list of positive ints, got [0, 2]"),
        (_experiment(seeds="[1, 1]"), "experiment 'e': key 'seeds': expected distinct values, got [1, 1]"),
        (_experiment(channels='{ slstm = 8 }'),
         "key 'channels': the table must name exactly the experiment's variants ['slstm', 'tlstm-2d+cn']; missing ['tlstm-2d+cn']"),
        (_experiment(task='"poetry"'), "experiment 'e': key 'task': expected one of ['chars', 'addition', 'memorization', 'digits', 'mnist'], got 'poetry'"),
        (_experiment(task_options="{ lenght = 3 }"),
         "experiment 'e' task_options: unknown key(s) ['lenght']; expected keys among ['length', 'symbols', 'valid_size', 'test_size']"),
        (_experiment(variants='["tlstm-2d+ln"]'), "'tlstm-2d+ln' is not causal"),
        (_experiment(name='"bad name"'), "experiment #1: key 'name': expected a name of letters, digits"),
        (_experiment() + _experiment(), "experiment #2: key 'name': 'e' is used twice; expected unique names"),
        (_experiment().replace("max_steps = 10", "learning_rate = 0.1"),
         "experiment 'e' [experiment.train]: unknown key(s) ['learning_rate']; expected keys among ['batch_size', 'lr',"),
        (_experiment().replace("max_steps = 10", "lr = -1"), "cell slstm L=1 M=8: TrainConfig.lr: expected a positive number, got -1"),
    ],
)
def test_bad_grid_files_name_the_key_the_value_and_what_is_accepted(text, message):
    with pytest.raises(GridError) as info:
        parse_grid(text, "bad.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("bad.toml")


def test_the_command_reports_a_bad_grid_file_and_exits_2(tmp_path, capsys):
    bad = _write(tmp_path / "bad.toml", _experiment(depths="[0]"))
    assert grid([str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"tlstm grid: error: {bad}: experiment 'e': key 'depths': expected a non-empty list of positive "
                   "ints, got [0]\n")
    assert not (tmp_path / "out").exists()
    assert grid([str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "no such grid file" in capsys.readouterr().err


def test_cells_cover_the_grid_in_order_with_per_variant_widths():
    spec = parse_grid(HEADER + _experiment(channels='{ slstm = 10, "tlstm-2d+cn" = [6, 8] }'), "g.toml")
    ids = [c.id for c in spec.cells]
    assert ids == [f"e/slstm/L{d}-M10/seed{s}" for d in (1, 2) for s in (0, 1)] + [
        f"e/tlstm-2d+cn/L{d}-M{m}/seed{s}" for d in (1, 2) for m in (6, 8) for s in (0, 1)]
    cell = spec.cells[0]
    assert cell.train == {"task": "memorization", "task_options": {}, "variant": "slstm", "depth": 1, "channels": 10,
                          "seed": 0, "max_steps": 10}
    assert cell.train_config("cpu", 1).threads == 1
    assert cell.rel_dir.as_posix() == "runs/e/slstm/L1-M10/seed0"


def test_the_summary_reports_unsolved_seeds_as_a_bound_not_a_value():
    spec = parse_grid(HEADER + _experiment(variants='["slstm"]', depths="[1]", seeds="3"), "g.toml")

    def row(seed: int, reached: int | str) -> dict:
        return {"experiment": "e", "variant": "slstm", "depth": 1, "channels": 8, "seed": seed, "status": "done",
                "metric": "accuracy", "parameters": 100, "test": 0.5, "valid_final": 0.5, "ms_per_step": 2.0,
                "samples_to_99": reached, "samples": 320, "run_dir": f"runs/e/{seed}"}

    some = summary_markdown(spec, [row(0, 64), row(1, 96), row(2, "")], [])
    assert "| slstm | 1 | 8 | 100 | 3/3 | 50.0% ± 0.0 | 50.0% ± 0.0 | 80 ± 23 (2/3 solved) | 2 ± 0 |" in some
    none = summary_markdown(spec, [row(0, ""), row(1, ""), row(2, "")], [])
    assert "| not solved (> 320) |" in none


def test_importing_the_package_does_not_import_torch():
    code = "import sys, training.grid; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert result.stdout.strip() == "False"


def test_shipped_grid_files_are_valid():
    files = sorted((ROOT / "recipes" / "grids").glob("*.toml"))
    assert {f.name for f in files} >= {"paper-cpu.toml", "pilot-cpu.toml"}
    for path in files:
        spec = parse_grid(path.read_text(encoding="utf-8"), path)
        assert spec.cells, path
    cpu = parse_grid((ROOT / "recipes/grids/paper-cpu.toml").read_text(encoding="utf-8"), "paper-cpu.toml")
    for experiment in cpu.experiments:
        assert len(experiment.seeds) >= 3, experiment.name
    # every variant of an experiment shares its hyperparameters: the cells differ in model and seed only
    for experiment in cpu.experiments:
        shared = [{k: v for k, v in (c.train or {}).items() if k not in ("variant", "depth", "channels", "seed")}
                  for c in experiment.cells]
        assert all(s == shared[0] for s in shared), experiment.name
