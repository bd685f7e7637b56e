"""Train and export the default models the service ships (``make models``).

    python -m training.default_models [--runs runs/default] [--models models] [--only NAME]
                                      [--jobs 2] [--no-export]

Two models, from fixed seeds, each trained with one torch thread (the two run side by side on
a 2-core machine; step budgets, so every run of this script gives the same weights on the
same software):

* ``chars``: a 2D tLSTM+CN language model on the default corpus (the Python standard
  library's docstrings), modelled as characters;
* ``digits``: a 2D tLSTM+CN classifier of scikit-learn's 8x8 digits read as 8 rows of 8
  pixels; it must reach at least 95% test accuracy, or the script fails.

Each run goes to ``RUNS/NAME`` (an unfinished run there is resumed, a finished one reused),
then ``tlstm export RUNS/NAME --out MODELS/NAME`` writes the package. The held-out metrics
are printed and saved to ``RUNS/summary.json``. After the export, the exported ``chars``
package is served over loopback and asked for (a) its bits per character on held-out prose
(``training.heldout``: the licence texts in /usr/share/common-licenses, which no corpus here
holds) and (b) a greedy and a temperature-0.7 sample (seed 0) after ``SAMPLE_PROMPT``; both go
into ``summary.json`` (the README quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tlstm.files import write_json_atomic

from .cli import TRAIN_KEYS
from .config import TrainConfig

SEED = 20171117
DIGITS_MIN_ACCURACY = 0.95
SAMPLE_PROMPT = "The "
SAMPLE_CHARS = 300
SAMPLES = {"greedy": {"temperature": 0.0}, "temperature 0.7": {"temperature": 0.7, "seed": 0}}

DEFAULT_MODELS: dict[str, TrainConfig] = {
    "chars": TrainConfig(
        task="chars", task_options={"data": None, "corpus": "python-docs", "uniform": None, "encoding": "auto", "bptt": 100},
        variant="tlstm-2d+cn", depth=3, channels=128, batch_size=32, lr=2e-3, lr_schedule="cosine", clip=1.0,
        max_steps=4800, eval_every=400, eval_limit=40_000, patience=None,
        log_every=50, seed=SEED, device="cpu", threads=1,
    ),
    "digits": TrainConfig(
        task="digits", task_options={"rows": True, "permute": False},
        variant="tlstm-2d+cn", depth=3, channels=64, batch_size=32, lr=2e-3, clip=1.0,
        max_steps=3000, eval_every=100, patience=10,
        log_every=50, seed=SEED, device="cpu", threads=1,
    ),
}


def train_command(config: TrainConfig, run_dir: Path) -> list[str]:
    """The ``tlstm train`` command line that trains ``config`` into ``run_dir``."""
    args = [sys.executable, "-m", "training.cli", "train"]
    if (run_dir / "config.json").is_file():
        return [*args, "--resume", str(run_dir)]
    args += [config.task, "--out", str(run_dir)]
    for key, value in config.task_options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    for key in TRAIN_KEYS:  # every option `tlstm train` takes, so that none is dropped on the way
        value = getattr(config, key)
        if value is not None:
            args += ["--" + key.replace("_", "-"), str(value)]
    return args


def _finished(run_dir: Path) -> bool:
    from .checkpoint import load_checkpoint

    last = run_dir / "last.pt"
    if not last.is_file():
        return False
    trainer = load_checkpoint(last).trainer or {}
    return bool(trainer.get("state", {}).get("finished"))


def _latest(run_dir: Path) -> str:
    from .runlog import read_metrics

    records = read_metrics(run_dir)
    if not records:
        return "starting"
    last = records[-1]
    metric = next((k for k in ("bpc", "accuracy") if k in last), "loss")
    return f"step {last['step']} {last['split']} {metric} {last[metric]:.4g}"


def train_all(names: list[str], runs: Path, jobs: int) -> None:
    """Train the named models, ``jobs`` at a time, reporting progress every 30 s."""
    pending = [n for n in names if not _finished(runs / n)]
    running: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last_report = 0.0
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            run_dir = runs / name
            run_dir.mkdir(parents=True, exist_ok=True)
            command = train_command(DEFAULT_MODELS[name], run_dir)
            print(f"[models] {name}: {' '.join(command[1:])}", flush=True)
            log = open(runs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process ends
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        time.sleep(1.0)
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print("[models] " + "; ".join(f"{n}: {_latest(runs / n)}" for n in running), flush=True)
        for name, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            if process.returncode != 0:
                for other, _ in running.values():
                    other.terminate()
                raise RuntimeError(f"training {name} failed with exit code {process.returncode}; see {runs / (name + '.log')}")
            print(f"[models] {name}: done ({_latest(runs / name)})", flush=True)


def export_all(names: list[str], runs: Path, models: Path) -> None:
    for name in names:
        command = [sys.executable, "-m", "tlstm.cli", "export", str(runs / name), "--out", str(models / name), "--force", "--seed", "0"]
        print(f"[models] {name}: {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True)


def summarize(names: list[str], runs: Path) -> dict[str, Any]:
    from .checkpoint import load_checkpoint

    summary = {}
    for name in names:
        ckpt = load_checkpoint(runs / name / "best.pt")
        summary[name] = {
            "metrics": ckpt.metrics,
            "parameters": sum(t.numel() for t in ckpt.model_state.values()),
            "config": ckpt.config.to_dict(),
            "task": {k: ckpt.task[k] for k in ("name", "kind", "input", "settings")},
            "code_version": ckpt.code_version,
        }
    return summary


def served_report(models: Path, model: str = "chars", texts: dict[str, str] | None = None,
                  prompt: str = SAMPLE_PROMPT) -> dict[str, Any]:
    """Held-out prose bits per character and text samples of ``model``, served from ``models`` over loopback.

    ``texts`` default to :func:`training.heldout.heldout_texts`; the samples continue ``prompt``.
    """
    import httpx

    from .heldout import HELDOUT_DIR, heldout_texts, score_texts, server_for

    source = "the texts given" if texts is not None else str(HELDOUT_DIR)
    texts = heldout_texts() if texts is None else texts
    with server_for(models, texts) as server:
        heldout = score_texts(server.url, model, texts)
        samples = {}
        for label, sampling in SAMPLES.items():
            body = {"model": model, "prompt": prompt, "max_tokens": SAMPLE_CHARS, **sampling}
            response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=600)
            response.raise_for_status()
            samples[label] = {"request": body, "text": prompt + response.json()["choices"][0]["text"]}
    return {"heldout": {"source": source, **heldout}, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.default_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/default", help="where the training runs go")
    parser.add_argument("--models", default="models", help="where the exported packages go")
    parser.add_argument("--only", choices=sorted(DEFAULT_MODELS), action="append", help="train only this model (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run side by side (each uses one thread)")
    parser.add_argument("--no-export", action="store_true", help="train only")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive integer, got {args.jobs}")
    names = args.only or sorted(DEFAULT_MODELS)
    runs, models = Path(args.runs), Path(args.models)
    runs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        train_all(names, runs, args.jobs)
    except RuntimeError as exc:
        print(f"[models] error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(names, runs)
    previous = runs / "summary.json"  # the other models' entries stay when --only trains some
    everything = {**(json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {}), **summary}
    write_json_atomic(previous, everything, sort_keys=True)
    print(json.dumps({n: s["metrics"] for n, s in summary.items()}, indent=2, sort_keys=True))
    print(f"[models] trained in {time.monotonic() - started:.0f} s", flush=True)
    if "digits" in summary and summary["digits"]["metrics"].get("test_accuracy", 0.0) < DIGITS_MIN_ACCURACY:
        print(f"[models] error: digits test accuracy {summary['digits']['metrics'].get('test_accuracy')} is below "
              f"{DIGITS_MIN_ACCURACY}", file=sys.stderr)
        return 1
    if not args.no_export:
        try:
            export_all(names, runs, models)
        except subprocess.CalledProcessError as exc:
            print(f"[models] error: export failed ({exc})", file=sys.stderr)
            return 1
        if "chars" in names:
            summary["chars"].update(served_report(models))
            write_json_atomic(previous, {**everything, **summary}, sort_keys=True)
            print(f"[models] chars: held-out prose {summary['chars']['heldout']['bpc']:.3f} bits/char "
                  f"over {summary['chars']['heldout']['chars']} characters of {summary['chars']['heldout']['source']}")
            for label, sample in summary["chars"]["samples"].items():
                print(f"[models] chars, {label}: {sample['text']!r}")
    print(f"[models] done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
