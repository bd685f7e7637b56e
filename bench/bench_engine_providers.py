"""The service's engine on each ONNX Runtime execution provider: streams, classifications, batching.

For the CPU provider and, where this onnxruntime offers it, CUDAExecutionProvider, each in its
own process (ONNX Runtime's thread pools interfere within one), the engine as ``tlstm serve``
builds it (``service.engine.engine.Engine`` with 1 intra-op thread, room for 1024 streams, and
the default ``TLSTM_IO_BINDING=auto``: IOBinding with the state kept on the device for CUDA,
plain ``session.run`` for the CPU) on the shipped packages ``models/chars`` and
``models/digits``:

* generation: aggregate characters/s of 1, 32, 256 and 1024 concurrent streams (continuous
  batching, sampling at temperature 1; every stream starts from the same prompt's prefill and is
  opened through ``GenerationEngine.open_stream``, as the HTTP layer does), with the state
  copies the bound step function counted (``BoundStepFunction.transfers``);
* classification: classifications/s of the engine's classify function (``classify.onnx``,
  bound on CUDA) at batch 1, 64 and 1024, one call per batch, back to back;
* micro-batching: classifications/s of 64 and of 1024 concurrent clients, each submitting one
  input and the next as soon as its answer comes, through the engine's micro-batcher with
  ``max_batch`` = the number of clients and with ``max_batch=1``; the gain is their ratio;
* a check: the engine's step function against the unbound one on the same sessions and against
  the CPU provider (largest logit difference over 16 steps at batch 8), and where the batch
  state lives (``OrtValue.device_name()``);
* with CUDA also the generation figures with ``TLSTM_IO_BINDING=off`` (state through the host
  at every step), last and at half the time per figure, as a comparison.

The providers of every session are read back (``session.get_providers()``) and recorded: a CUDA
figure counts only when ``cuda_in_use`` is true (a CUDA build that cannot reach a GPU falls
back to the CPU silently; such a run is recorded as skipped). The CUDA process imports torch
(when present) and calls ``onnxruntime.preload_dlls()`` first, as bench/gpu_ort_check.py does,
so that onnxruntime-gpu finds the CUDA and cuDNN libraries. Each figure runs for about
``--seconds`` (the characters per stream are set from a short calibration run). Each process
saves its record after every figure and the JSON is written after every run; a run cut short
(SIGTERM, a time limit) still leaves what it measured.

    python bench/bench_engine_providers.py --json bench/out/engine-providers.json
    python bench/bench_engine_providers.py --json FILE --providers CPU --quick   # about 30 s on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GPU = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDERS = {"CPU": (CPU,), "CUDA": (GPU, CPU)}
STREAMS = (1, 32, 256, 1024)
BATCHES = (1, 64, 1024)
CLIENTS = (64, 1024)
CALIBRATION_CHARS = 4  # characters per stream of the first calibration run
MIN_CHARS, MAX_CHARS = 8, 20000
CHILD_TIMEOUT_S = 600


# ---------------------------------------------------------------------- one provider (child process)
class Partial:
    """The child's record, written to ``path`` after every figure (the parent reads it if the
    child is stopped early)."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path, self.record = path, record

    def save(self) -> None:
        self.path.write_text(json.dumps(self.record, indent=2) + "\n")


def preload_cuda() -> dict[str, Any]:
    """Make the CUDA and cuDNN libraries findable for onnxruntime-gpu: torch first, when
    importable (its CUDA libraries are what ``preload_dlls()`` finds), then ``preload_dlls()``."""
    info: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        import torch

        info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda}
    except ImportError as exc:
        info["torch"] = {"error": str(exc)}
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                ort.preload_dlls()
            info["preload_dlls"] = {"ok": True, "printed": printed.getvalue()[-2000:]}
        except Exception as exc:  # noqa: BLE001 - recorded; the sessions' providers are the real test
            info["preload_dlls"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        info["preload_dlls"] = {"ok": False, "error": "this onnxruntime has no preload_dlls()"}
    info["seconds"] = round(time.perf_counter() - started, 2)
    return info


def session_providers(engine: Any) -> dict[str, list[str]]:
    """``model/graph`` -> the providers that session really uses (read back)."""
    return {f"{name}/{graph}": list(session.get_providers())
            for name, served in engine.models.items() for graph, session in served.package.sessions.items()}


def streams_rate(generation: Any, prefill: Any, streams: int, max_new: int) -> dict[str, Any]:
    """``streams`` streams of ``max_new`` characters opened at once; aggregate characters/s
    from the first open to the last character."""
    from service.engine.sampling import SamplingParams

    lock = threading.Lock()
    done = threading.Event()
    counts = {"chars": 0, "open": streams}

    def listen(update: Any) -> None:
        with lock:
            counts["chars"] += len(update.tokens)
            if update.final:
                counts["open"] -= 1
                if counts["open"] == 0:
                    done.set()

    params = [SamplingParams(max_new=max_new, seed=i) for i in range(streams)]
    ticks = generation.scheduler.ticks
    started = time.perf_counter()
    for p in params:
        generation.reserve()
        generation.open_stream(prefill, p, listen)
    if not done.wait(CHILD_TIMEOUT_S):
        raise RuntimeError(f"{streams} streams of {max_new} characters did not finish")
    seconds = time.perf_counter() - started
    return {"chars_per_s": counts["chars"] / seconds, "chars": counts["chars"], "max_new": max_new,
            "seconds": round(seconds, 3), "ticks": generation.scheduler.ticks - ticks}


def generation_figures(generation: Any, seconds: float, partial: Partial, key: str) -> None:
    from service.engine.binding import BoundStepFunction

    step_fn = generation.step_fn
    prompt = "".join(c for c in "def main():\n    " if c in generation.vocab) or generation.vocab[0]
    prefill = generation.prefill(generation.encode(prompt))
    figures: dict[str, Any] = {}
    partial.record[key] = figures
    for streams in STREAMS:
        chars = CALIBRATION_CHARS  # doubled until the calibration run takes a tenth of the figure's time
        while True:
            calibration = streams_rate(generation, prefill, streams, chars)
            if calibration["seconds"] >= seconds / 10 or chars >= MAX_CHARS:
                break
            chars *= 2
        max_new = int(min(MAX_CHARS, max(MIN_CHARS, seconds * chars / calibration["seconds"])))
        before = step_fn.transfers.as_dict() if isinstance(step_fn, BoundStepFunction) else None
        point = streams_rate(generation, prefill, streams, max_new)
        if before is not None:
            after = step_fn.transfers.as_dict()
            point["state_transfers"] = {k: after[k] - before[k] for k in after}
        figures[str(streams)] = point
        partial.save()
        print(f"[{partial.record['label']}] {streams:>5} streams: {point['chars_per_s']:>12,.0f} chars/s "
              f"({max_new} chars each, {point['ticks']} ticks, {point['seconds']} s)", file=sys.stderr, flush=True)


def classification_figures(engine: Any, seconds: float, partial: Partial) -> None:
    import numpy as np

    from service.engine.classification import ClassificationBatcher
    from service.engine.inputs import pad_batch

    served = engine.model("digits")
    spec, classify_fn = served.spec, served.classifier.classify_fn
    rng = np.random.default_rng(0)
    one = (rng.random((spec.max_length, spec.size)).astype(np.float32) if spec.type == "features"
           else rng.integers(0, spec.size, spec.max_length).astype(np.int64))
    batch: dict[str, Any] = {}
    clients: dict[str, Any] = {}
    partial.record["classification"] = {"batch": batch, "clients": clients, "input_length": spec.max_length}
    for size in BATCHES:
        x, lengths = pad_batch([one] * size, spec)
        classify_fn(x, lengths)  # warm-up of this batch size
        calls, started = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - started < seconds:
            classify_fn(x, lengths)
            calls += 1
        elapsed = time.perf_counter() - started
        batch[str(size)] = {"per_s": size * calls / elapsed, "calls": calls, "seconds": round(elapsed, 3)}
        partial.save()
        print(f"[{partial.record['label']}] classify batch {size:>5}: {batch[str(size)]['per_s']:>12,.0f} /s",
              file=sys.stderr, flush=True)
    for count in CLIENTS:
        point: dict[str, Any] = {}
        for name, max_batch in (("batched", count), ("unbatched", 1)):
            batcher = ClassificationBatcher("digits", classify_fn, spec, max_batch=max_batch, max_wait_s=0.0,
                                            max_queued=4 * count)
            batcher.start()
            try:
                point[name] = closed_loop(batcher, one, count, seconds)
            finally:
                batcher.stop()
        point["gain"] = point["batched"]["per_s"] / point["unbatched"]["per_s"]
        clients[str(count)] = point
        partial.save()
        print(f"[{partial.record['label']}] {count:>5} clients: batched {point['batched']['per_s']:>10,.0f} /s, "
              f"unbatched {point['unbatched']['per_s']:>10,.0f} /s, gain {point['gain']:.2f}x", file=sys.stderr, flush=True)


def closed_loop(batcher: Any, x: Any, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent clients, each submitting one input and the next as soon as its
    answer comes (on the collector's thread, no client threads), until ``seconds`` have passed."""
    lock = threading.Lock()
    done = threading.Event()
    state = {"answers": 0, "open": clients}
    batches = batcher.batches
    deadline = time.perf_counter() + seconds

    def submit() -> None:
        batcher.submit([x]).add_done_callback(answered)

    def answered(future: Any) -> None:
        future.result()
        with lock:
            state["answers"] += 1
            more = time.perf_counter() < deadline
            if not more:
                state["open"] -= 1
                if state["open"] == 0:
                    done.set()
        if more:
            submit()

    started = time.perf_counter()
    for _ in range(clients):
        submit()
    if not done.wait(CHILD_TIMEOUT_S):
        raise RuntimeError(f"{clients} classification clients did not finish")
    elapsed = time.perf_counter() - started
    made = batcher.batches - batches
    return {"per_s": state["answers"] / elapsed, "answers": state["answers"], "batches": made,
            "mean_batch": state["answers"] / max(made, 1), "seconds": round(elapsed, 3)}


def check(engine: Any, models: Path) -> dict[str, Any]:
    """The engine's step function against the unbound one on the same sessions and against the
    CPU provider: largest logit difference over 16 steps at batch 8, and where the state lives."""
    import numpy as np

    from service.engine.binding import BoundStepFunction, DeviceState
    from service.engine.graphs import make_step_function
    from service.package import load_package

    served = engine.model("chars")
    package = served.package
    decoding = served.generation.step_fn.decoding
    used = served.generation.step_fn
    other = make_step_function(package, decoding, "off" if isinstance(used, BoundStepFunction) else "on")
    cpu = make_step_function(load_package(models / "chars", providers=[CPU]), decoding, "off")
    rng = np.random.default_rng(1)
    states = [fn.concat([fn.initial_state(8)]) for fn in (used, other, cpu)]
    bound_diff = cpu_diff = 0.0
    for _ in range(16):
        x = rng.integers(0, len(served.vocab or ()), 8).astype(np.int64)
        outputs = [fn.step(x, s) for fn, s in zip((used, other, cpu), states, strict=True)]
        states = [s for _, s in outputs]
        logits = [np.asarray(lg) for lg, _ in outputs]
        bound_diff = max(bound_diff, float(np.abs(logits[0] - logits[1]).max()))
        cpu_diff = max(cpu_diff, float(np.abs(logits[0] - logits[2]).max()))
    where = {type(fn).__name__: sorted({v.device_name() for v in s.values.values()}) if isinstance(s, DeviceState) else "host"
             for fn, s in zip((used, other), states[:2], strict=True)}
    return {"max_abs_diff_bound_vs_unbound": bound_diff, "max_abs_diff_vs_cpu_provider": cpu_diff, "state_lives_on": where}


def phase(args: argparse.Namespace) -> int:
    """One provider, in this process: the figures of the module docstring."""
    partial = Partial(args.partial, {"label": args.label, "requested": list(PROVIDERS[args.provider]),
                                     "io_binding": args.io_binding, "parts": args.parts, "status": "running"})
    try:
        return measure(args, partial)
    except Exception as exc:  # recorded with what was measured before it
        partial.record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        partial.save()
        raise


def measure(args: argparse.Namespace, partial: Partial) -> int:
    record = partial.record
    started = time.perf_counter()
    if args.provider == "CUDA":
        record["cuda_libraries"] = preload_cuda()
    import onnxruntime as ort

    record["onnxruntime"] = {"version": ort.__version__, "device": ort.get_device(), "available": ort.get_available_providers()}
    if args.provider == "CUDA" and GPU not in ort.get_available_providers():
        record.update(status="skipped", reason=f"this onnxruntime ({ort.__version__}) offers no {GPU}")
        partial.save()
        return 0

    from service.engine.binding import BoundClassifyFunction, BoundStepFunction
    from service.engine.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(providers=PROVIDERS[args.provider], intra_op_threads=1, warmup_runs=1,
                                 max_streams=max(STREAMS), max_queued=4 * max(CLIENTS), io_binding=args.io_binding))
    engine.load(args.models)
    engine.warm_up()
    try:
        record["session_providers"] = session_providers(engine)
        firsts = sorted({p[0] for p in record["session_providers"].values()})
        record["providers"] = firsts
        record["cuda_in_use"] = firsts == [GPU]
        if args.provider == "CUDA" and not record["cuda_in_use"]:
            record.update(status="skipped", reason=f"{GPU} is offered but the sessions run on {firsts}")
            partial.save()
            return 0
        generation, classifier = engine.model("chars").generation, engine.model("digits").classifier
        if generation is None or classifier is None:
            raise RuntimeError(f"{args.models}: expected chars to be a language model and digits a classifier")
        step_fn = generation.step_fn
        record["decoding"] = step_fn.decoding
        record["bound"] = isinstance(step_fn, BoundStepFunction)
        record["state_device"] = "{}:{}".format(*step_fn.device) if isinstance(step_fn, BoundStepFunction) else "host"
        record["classify_bound"] = isinstance(classifier.classify_fn, BoundClassifyFunction)
        record["load_seconds"] = round(time.perf_counter() - started, 2)
        partial.save()
        if "check" in args.parts:
            record["check"] = check(engine, args.models)
            partial.save()
        if "generation" in args.parts:
            generation_figures(generation, args.seconds, partial, "generation")
        if "classification" in args.parts:
            classification_figures(engine, args.seconds, partial)
        record["status"] = "ok"
        record["seconds"] = round(time.perf_counter() - started, 2)
        partial.save()
    finally:
        engine.stop()
    return 0


# ---------------------------------------------------------------------- the runs (parent process)
class Stopped(Exception):
    """SIGTERM arrived (a time limit): write what there is and stop."""


def plan(providers: str, io_binding: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    if providers in ("CUDA", "both"):
        runs.append({"label": "CUDA", "provider": "CUDA", "io_binding": io_binding, "parts": "check,generation,classification"})
    if providers in ("CPU", "both"):
        runs.append({"label": "CPU", "provider": "CPU", "io_binding": io_binding, "parts": "check,generation,classification"})
    if providers in ("CUDA", "both") and io_binding != "off":
        runs.append({"label": "CUDA, io_binding off", "provider": "CUDA", "io_binding": "off", "parts": "generation",
                     "seconds_scale": 0.5})
    return runs


def run_child(run: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    partial = work / f"run-{len(list(work.iterdir()))}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", "--label", run["label"], "--provider", run["provider"],
               "--io-binding", run["io_binding"], "--parts", run["parts"],
               "--seconds", str(args.seconds * run.get("seconds_scale", 1.0)),
               "--models", str(args.models), "--partial", str(partial)]
    print(f"[bench] {run['label']} (TLSTM_IO_BINDING={run['io_binding']}) ...", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, cwd=ROOT)
    try:
        rc = child.wait(timeout=CHILD_TIMEOUT_S)
    except (subprocess.TimeoutExpired, Stopped):
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(3)
        child.kill()
        result = _read(partial, run)
        result.update(status="stopped", reason="time limit reached before this run finished")
        raise Stopped(json.dumps(result)) from None
    result = _read(partial, run)
    if rc != 0:
        result.update(status="failed", exit_code=rc)
        result.setdefault("reason", f"exit code {rc}")
    return result


def _read(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"label": run["label"], "requested": list(PROVIDERS[run["provider"]]), "io_binding": run["io_binding"],
                "status": "failed", "reason": "the run wrote no record"}


def summarize(record: dict[str, Any]) -> None:
    used: list[str] = []
    summary: dict[str, Any] = {}
    for run in record["runs"]:
        for name in run.get("providers", []) if run.get("status") in ("ok", "stopped") else []:
            if name not in used:
                used.append(name)
        if "generation" not in run and "classification" not in run:
            continue
        entry: dict[str, Any] = {"io_binding": run["io_binding"], "bound": run.get("bound"), "status": run.get("status")}
        entry["chars_per_s"] = {n: p["chars_per_s"] for n, p in run.get("generation", {}).items()}
        classification = run.get("classification", {})
        entry["classify_per_s"] = {n: p["per_s"] for n, p in classification.get("batch", {}).items()}
        entry["micro_batching_gain"] = {n: p["gain"] for n, p in classification.get("clients", {}).items()}
        summary[run["label"]] = entry
    record["providers"] = used
    record["cuda_in_use"] = GPU in used
    record["summary"] = summary


def table(record: dict[str, Any]) -> str:
    runs = [r for r in record["runs"] if r.get("status") in ("ok", "stopped")]
    rows: list[tuple[str, list[str]]] = [
        ("sessions run on", [",".join(r.get("providers", [])) or "-" for r in runs]),
        ("TLSTM_IO_BINDING (bound)", [f"{r['io_binding']} ({'yes' if r.get('bound') else 'no'})" for r in runs]),
    ]

    def cell(value: Any, fmt: str = "{:,.0f}") -> str:
        return fmt.format(value) if isinstance(value, int | float) else "-"

    for n in STREAMS:
        rows.append((f"chars/s, {n} stream{'s' if n > 1 else ''}", [cell(r.get("generation", {}).get(str(n), {}).get("chars_per_s")) for r in runs]))
    for n in BATCHES:
        rows.append((f"classify/s, batch {n}",
                     [cell(r.get("classification", {}).get("batch", {}).get(str(n), {}).get("per_s")) for r in runs]))
    for n in CLIENTS:
        points = [r.get("classification", {}).get("clients", {}).get(str(n), {}) for r in runs]
        rows.append((f"classify/s, {n} clients, micro-batched", [cell(p.get("batched", {}).get("per_s")) for p in points]))
        rows.append((f"classify/s, {n} clients, max_batch=1", [cell(p.get("unbatched", {}).get("per_s")) for p in points]))
        rows.append((f"micro-batching gain, {n} clients", [cell(p.get("gain"), "{:.2f}x") for p in points]))
    rows.append(("logits, bound vs unbound (max |diff|)",
                 [cell(r.get("check", {}).get("max_abs_diff_bound_vs_unbound"), "{:.1e}") for r in runs]))
    if not runs:
        rows = []
    width = max((len(name) for name, _ in rows), default=0)
    columns = [max(len(r["label"]), *(len(v[i]) for _, v in rows)) for i, r in enumerate(runs)]
    lines = [" " * width + "".join(f"  {r['label']:>{w}}" for r, w in zip(runs, columns, strict=True))] if runs else []
    lines += [f"{name:<{width}}" + "".join(f"  {v:>{w}}" for v, w in zip(values, columns, strict=True)) for name, values in rows]
    for r in record["runs"]:
        if r.get("status") not in ("ok",):
            lines.append(f"{r['label']}: {r.get('status')}: {r.get('reason', '')}")
    return "\n".join(lines)


def write(path: Path, record: dict[str, Any]) -> None:
    summarize(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "engine-providers.json", help="where to write the figures")
    parser.add_argument("--providers", choices=["CPU", "CUDA", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="half as long per figure (--seconds 0.5)")
    parser.add_argument("--seconds", type=float, default=None, help="time per figure (default 1.0, --quick 0.5)")
    parser.add_argument("--io-binding", choices=["auto", "on", "off"], default="auto", help="TLSTM_IO_BINDING of the runs")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="directory with the chars and digits packages")
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="check,generation,classification", help=argparse.SUPPRESS)
    parser.add_argument("--partial", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 1.0
    if args.phase:
        return phase(args)

    command = "python bench/bench_engine_providers.py --json " + str(args.json) + \
        ("" if args.providers == "both" else f" --providers {args.providers}") + (" --quick" if args.quick else "") + \
        ("" if args.io_binding == "auto" else f" --io-binding {args.io_binding}") + \
        ("" if args.seconds == (0.5 if args.quick else 1.0) else f" --seconds {args.seconds:g}") + \
        ("" if args.models == ROOT / "models" else f" --models {args.models}")
    record: dict[str, Any] = {
        "providers": [], "cuda_in_use": False, "command": command, "quick": args.quick, "seconds_per_figure": args.seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": [round(v, 2) for v in os.getloadavg()]},
        "figures": {"streams": list(STREAMS), "batches": list(BATCHES), "clients": list(CLIENTS)},
        "runs": [],
    }

    def stop(signum: int, frame: Any) -> None:
        raise Stopped()

    signal.signal(signal.SIGTERM, stop)
    started = time.perf_counter()
    status = 0
    with tempfile.TemporaryDirectory(prefix="tlstm-providers-") as tmp:
        for run in plan(args.providers, args.io_binding):
            if run["provider"] == "CUDA" and any(r["requested"][0] == GPU and r.get("status") == "skipped" for r in record["runs"]):
                continue  # the first CUDA run found no usable GPU; the comparison would find none either
            try:
                record["runs"].append(run_child(run, args, Path(tmp)))
            except Stopped as stopped:
                if stopped.args:
                    record["runs"].append(json.loads(stopped.args[0]))
                status = 124
                break
            finally:
                record["seconds"] = round(time.perf_counter() - started, 1)
                write(args.json, record)
    print()
    print(f"engine on ONNX Runtime execution providers; {os.cpu_count()} CPUs, 1 intra-op thread, about {args.seconds:g} s "
          f"per figure; providers read back from the sessions: {record['providers']}")
    print(table(record))
    print(f"\nwrote {args.json}\nreproduce: {command}")
    if status == 0 and any(r.get("status") == "failed" for r in record["runs"]):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
