"""Per-character streaming cost: the simple step (L full steps) against exact incremental decoding.

Both engines run as ONNX Runtime sessions of loop-free step graphs, each timed in its own
subprocess with ``intra_op_num_threads`` set explicitly (ORT's and PyTorch's thread pools slow
each other down in one process). For every model and batch size the table gives the time per
character, the speed-up, the target (spec section 8, issue 7: at L >= 4 and M >= 256, 0.5*L at
batch 1 and 0.7*L at batch 32) and each engine's FLOP efficiency against this machine's
measured sgemm peak (numpy float32 matmul, same thread count). Where a target is missed, the
script says which cost dominates the incremental step: per-node overhead (measured as the time
of the same graph built for M=8, whose matrices are negligible), and the rest split between
matrix products (small matrices: the level-by-level products of one band each), data
movement around the bands (the halo: slices, concatenations, padding) and elementwise nodes,
in the proportions of an ONNX Runtime profile.

Beside each model runs its peer, what a user would otherwise deploy: a ``torch.nn.LSTM`` of the
same depth (layers) and width (M), with an embedding and the same head, exported as one step
that ONNX Runtime runs with its own fused LSTM op. Its FLOP efficiency counts its four gates
from two inputs of width M per layer; the tLSTM's counts the taps of its convolution that read a
location, not those on the zero padding (``_flops``).

    python bench/bench_incremental.py                      # L = 2, 4, 8 at M = 256, batch 1 and 32
    python bench/bench_incremental.py --depths 4 --batches 1 --rounds 1   # a quick look
    python bench/bench_incremental.py --norm cn --chars ''                # CN models: fused graphs too

The models have random weights (the timing does not depend on their values); the default
character model's configuration is added when ``--chars`` names a model package (default
``models/chars``) that exists, and that package's own ``step.onnx`` and (where it has one)
``step_incremental.onnx`` are timed too, the graphs the service runs. Times are the minimum over ``--rounds`` rounds of interleaved
measurements, which keeps other load on the machine from biasing one engine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlstm import ort_ops
from tlstm.contract import (
    MANIFEST_FILE,
    X,
    disabled_optimizers,
    input_for_output,
    state_input_name,
    state_name,
)
from tlstm.files import write_json_atomic
from tlstm.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
MATMUL_OPS = {"MatMul", "Gemm", "FusedMatMul", "MatMulNBits"}
BATCH_AXIS = "__batch_axis__"  # in a states .npz: the axis that holds the batch, where it is not 0
FUSED = "fused"  # step_incremental with each band's cell as one ai.tlstm::LstmCell node (tlstm/ort_ops)
PEER = "nn_lstm"  # torch.nn.LSTM of the same depth and width, exported as one step: ONNX Runtime's LSTM op
HALO_OPS = {"Slice", "Concat", "Pad", "Gather", "GatherND", "Split", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Expand"}


# ---------------------------------------------------------------------------- worker side
# Imports nothing but numpy and onnxruntime: it runs in a fresh process per measurement.


def _session(path: str, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    ort_ops.register(options)  # the fused graphs need the project's kernels; the others ignore them
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=providers, disabled_optimizers=disabled_optimizers(providers))


def _feeds(session, states: dict[str, Any], batch: int, vocab: int, steps: int, seed: int = 0):
    """Inputs for ``steps`` characters: token ids and the start state tiled to ``batch``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(steps, batch), dtype=np.int64)
    axis = int(states[BATCH_AXIS][0]) if BATCH_AXIS in states else 0  # nn.LSTM's states are (layers, B, M)
    start = {}
    for info in session.get_inputs():
        if info.name == X:
            continue
        one = states[info.name]  # batch 1 on ``axis``
        start[info.name] = np.ascontiguousarray(np.repeat(one, batch, axis=axis))
    return tokens, start


def _stream(session, tokens, start):
    """Run one character per row of ``tokens``, feeding every state output back in."""
    outputs = [o.name for o in session.get_outputs()]
    feeds = dict(start)
    for row in tokens:
        feeds[X] = row
        values = session.run(outputs, feeds)
        for name, value in zip(outputs, values, strict=True):
            if state_name(name) is not None:
                feeds[input_for_output(name)] = value


def worker_time(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per character of one graph at one batch size (min over repeats of the mean)."""
    import numpy as np

    session = _session(args.graph, args.threads)
    states = dict(np.load(args.states))
    tokens, start = _feeds(session, states, args.batch, args.vocab, args.steps)
    _stream(session, tokens[: max(10, args.steps // 10)], start)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _stream(session, tokens, start)
        best = min(best, (time.perf_counter() - t0) / args.steps)
    return {"seconds_per_char": best}


def worker_profile(args: argparse.Namespace) -> dict[str, Any]:
    """Share of kernel time by kind (matrix products, data movement, other nodes) and the
    framework time between kernels, from an ORT profile of ``args.steps`` characters."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        session = _session(args.graph, args.threads, profile_prefix=os.path.join(tmp, "profile"))
        states = dict(np.load(args.states))
        tokens, start = _feeds(session, states, args.batch, args.vocab, args.steps)
        _stream(session, tokens, start)
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    kinds = {"matmul": 0.0, "halo": 0.0, "other": 0.0}
    nodes = 0
    runs = []
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            kind = "matmul" if op in MATMUL_OPS else "halo" if op in HALO_OPS else "other"
            kinds[kind] += event["dur"]
            nodes += 1
        elif event.get("name") == "model_run":
            runs.append(event["dur"])
    total = sum(runs) or 1.0
    shares = {k: v / total for k, v in kinds.items()}
    shares["between_nodes"] = max(0.0, 1.0 - sum(shares.values()))
    return {"shares": shares, "nodes_per_step": nodes / max(1, len(runs))}


def worker_peak(args: argparse.Namespace) -> dict[str, Any]:
    """Measured float32 matmul rate (numpy; BLAS threads set by the parent's environment)."""
    import numpy as np

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(args.repeats * 3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return {"flops_per_second": 2 * n**3 / best}


# ---------------------------------------------------------------------------- parent side


@dataclass
class Case:
    """One model to measure: a name, its config and the exported graphs."""

    name: str
    config: Any  # model.TLSTMConfig
    graphs: dict[str, Path]  # engine -> step graph
    states: dict[str, Path]  # engine -> .npz of the batch-1 start state
    flops: dict[str, float]  # engine -> multiply-add FLOPs per character and sequence


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _flops(config, engine: str) -> float:
    """Matrix-product FLOPs per character for one sequence: the model's arithmetic, whichever
    way an engine arranges it.

    Only taps that read a location of H^cat count (for the simple path the input row too);
    a tap that reads the convolution's zero padding adds nothing and is not counted, so an
    engine that multiplies zeros gains no efficiency by it. Simple path: L full steps over
    every location plus the memory-cell convolution. Incremental: each band's taps that read
    known values (the committed state, old levels, the band just built), the memory-cell
    convolution of the bands; for token inputs the taps that read u_t are a table lookup, not
    a product. The head once. The peer: per layer, four gates from two inputs of width M.
    """
    import itertools

    from model.incremental import StaircaseLayout
    from model.incremental_band import band_rects

    m, g, kappa = config.channels, config.gate_channels, config.kappa
    memory = 2 * kappa * m if config.uses_q else 0
    head = 2 * m * config.output_size
    if engine == PEER:
        return config.depth * 2 * (2 * m) * (4 * m) + head
    p, k, axes = config.tensor_size, config.kernel_size, config.order - 1
    taps = list(itertools.product(range(k), repeat=axes))

    def reads(location: tuple[int, ...], tap: tuple[int, ...]) -> str:
        read = [q + t - k // 2 for q, t in zip(location, tap, strict=True)]
        return "state" if all(0 <= r < p for r in read) else "input" if all(r == -1 for r in read) else "padding"

    def useful(locations, count_input: bool) -> int:
        kinds = ("state", "input") if count_input else ("state",)
        return sum(1 for loc in locations for tap in taps if reads(loc, tap) in kinds)

    everywhere = list(itertools.product(range(p), repeat=axes))
    layout = StaircaseLayout.of(config)
    if engine == "naive" or not layout.exact:
        return config.depth * (useful(everywhere, True) * 2 * m * g + len(everywhere) * memory) + head
    inners = layout.starts[1:] + (p,)
    total = 0.0
    for j in range(layout.levels):
        band = [loc for rect in band_rects(config.order, layout.starts[j], inners[j], p)
                for loc in itertools.product(*(range(lo, hi) for lo, hi in rect))]
        total += useful(band, config.input_type != "tokens") * 2 * m * g + len(band) * memory
    return total + head


def _spec(model, engine: str):
    """The package exporter's own spec of one engine's step graph: the simple path's ``step``
    (the real step, then L-1 flush steps on a copy), ``step_incremental`` or its fused file."""
    from export.graphs import fused_step_incremental_spec, step_incremental_spec, step_spec

    if engine == FUSED:
        return fused_step_incremental_spec(model)
    return step_spec(model) if engine == "naive" else step_incremental_spec(model)


def _export_case(model, engine: str, stem: Path) -> tuple[Path, Path]:
    """Export one engine's graph to ``stem``.onnx as the package exporter does (its graph spec,
    ``export_graph`` and its verification against PyTorch), and its batch-1 start state to
    ``stem``.npz (keyed by graph input name)."""
    import numpy as np

    from export.exporter import export_graph
    from export.graphs import export_copy
    from export.verify import compare_with_torch, verification_cases
    from model.incremental import staircase_from_state

    frozen = export_copy(model)
    spec = _spec(frozen, engine)
    graph, states = stem.with_suffix(".onnx"), stem.with_suffix(".npz")
    export_graph(spec, graph)
    result = compare_with_torch(spec, graph, model, verification_cases(spec, 8), np.random.default_rng(3))
    if result["max_difference"] > 1e-4:
        raise RuntimeError(f"{graph.name}: the exported graph differs from PyTorch by {result['max_difference']:.3g}")
    start = frozen.initial_state(1) if engine == "naive" else staircase_from_state(frozen, frozen.initial_state(1))
    names = [state_input_name(state_name(n) or "") for n in spec.inputs if state_name(n) is not None]
    np.savez(states, **{n: t.numpy() for n, t in zip(names, start, strict=True)})
    return graph, states


def _export_peer(config, stem: Path) -> tuple[Path, Path]:
    """What a user would build instead: an embedding, a ``torch.nn.LSTM`` of ``config.depth``
    layers of ``config.channels`` and a linear head, exported as one step (TorchScript exporter,
    which maps ``nn.LSTM`` to ONNX Runtime's own LSTM op), checked against PyTorch."""
    import numpy as np
    import torch
    from torch import nn

    class LSTMStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.input_size, config.channels)
            self.lstm = nn.LSTM(config.channels, config.channels, num_layers=config.depth)
            self.head = nn.Linear(config.channels, config.output_size)

        def forward(self, x, h, c):
            y, (h_out, c_out) = self.lstm(self.embed(x).unsqueeze(0), (h, c))
            return self.head(y[0]), h_out, c_out

    torch.manual_seed(0)
    model = LSTMStep().eval()
    names = {"inputs": [X, state_input_name("h"), state_input_name("c")],
             "outputs": ["logits", "state_h_out", "state_c_out"]}
    batch_axes = {X: {0: "B"}, "logits": {0: "B"}, **{n: {1: "B"} for n in names["inputs"][1:] + names["outputs"][1:]}}
    shape = (config.depth, 2, config.channels)
    example = (torch.zeros(2, dtype=torch.long), torch.zeros(shape), torch.zeros(shape))
    graph, states = stem.with_suffix(".onnx"), stem.with_suffix(".npz")
    torch.onnx.export(model, example, str(graph), dynamo=False, input_names=names["inputs"], output_names=names["outputs"],
                      dynamic_axes=batch_axes, opset_version=17)
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    x = rng.integers(0, config.input_size, size=5)
    h, c = (rng.standard_normal((config.depth, 5, config.channels)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c))
    actual = session.run(None, dict(zip(names["inputs"], (x, h, c), strict=True)))
    difference = max(float(np.abs(a - e.numpy()).max()) for a, e in zip(actual, expected, strict=True))
    if difference > 1e-4:
        raise RuntimeError(f"{graph.name}: the exported nn.LSTM step differs from PyTorch by {difference:.3g}")
    zeros = np.zeros((config.depth, 1, config.channels), dtype=np.float32)
    np.savez(states, **{names["inputs"][1]: zeros, names["inputs"][2]: zeros, BATCH_AXIS: np.array([1])})
    return graph, states


def _cases(args: argparse.Namespace, workdir: Path) -> list[Case]:
    import torch

    from model import TLSTMConfig, build_model

    specs: list[tuple[str, TLSTMConfig]] = []
    shipped: dict[str, dict[str, Path]] = {}  # case name -> engine -> the package's own graph
    for depth in args.depths:
        cfg = TLSTMConfig(
            input_size=args.vocab, output_size=args.vocab, channels=args.channels,
            tensor_size=depth * (args.kernel // 2), order=args.order, kernel_size=args.kernel, norm=args.norm,
        )
        specs.append((f"D{args.order} K{args.kernel}{'' if args.norm == 'none' else ' ' + args.norm.upper()} L={cfg.depth}", cfg))
    manifest = Path(args.chars) / MANIFEST_FILE if args.chars else None
    if manifest and manifest.is_file():
        from service.package import read_manifest

        package = read_manifest(Path(args.chars))
        cfg = TLSTMConfig.from_dict(package.config)
        if cfg.input_type == "tokens":
            name = f"{Path(args.chars).name} package L={cfg.depth}"
            specs.append((name, cfg))
            own = {"shipped": "step", "shipped_incremental": "step_incremental"}
            files = {engine: Path(args.chars) / package.graphs[graph].file
                     for engine, graph in own.items() if graph in package.graphs}
            fused_file = package.graphs["step_incremental"].fused if "step_incremental" in package.graphs else None
            if fused_file and ort_ops.why_unavailable() is None:
                files["shipped_fused"] = Path(args.chars) / fused_file
            if package.precision == "float32":
                shipped[name] = {engine: path for engine, path in files.items() if path.is_file()}
        else:
            _log(f"note: {args.chars} reads features, not characters; left out")
    elif args.chars:
        _log(f"note: no model package at {args.chars}; the default character model is left out")

    torch.manual_seed(0)
    cases = []
    for index, (name, cfg) in enumerate(specs):
        model = build_model(cfg).eval()
        graphs, states = {}, {}
        from model.incremental_band import fused_cell_supported

        fused = fused_cell_supported(cfg) and ort_ops.why_unavailable() is None
        for engine in ("naive", "incremental", *((FUSED,) if fused else ())):
            t0 = time.perf_counter()
            graphs[engine], states[engine] = _export_case(model, engine, workdir / f"case{index}_{engine}")
            _log(f"exported and verified {name} {engine} ({time.perf_counter() - t0:.0f} s)")
        graphs[PEER], states[PEER] = _export_peer(cfg, workdir / f"case{index}_{PEER}")
        _log(f"exported and checked the nn.LSTM peer of {name} ({cfg.depth} layers of {cfg.channels})")
        flops = {engine: _flops(cfg, engine) for engine in graphs}
        for engine, path in shipped.get(name, {}).items():  # the package's own graphs (same state names)
            graphs[engine], states[engine] = path, states["naive" if engine == "shipped" else "incremental"]
        cases.append(Case(name, cfg, graphs, states, flops))
    return cases


def _run_worker(mode: str, threads: int, extra: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--threads", str(threads), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {mode} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _target(config, batch: int) -> float | None:
    """The issue's target speed-up, or None where it sets none (L < 4 or M < 256)."""
    if config.depth < 4 or config.channels < 256:
        return None
    if batch == 1:
        return 0.5 * config.depth
    if batch == 32:
        return 0.7 * config.depth
    return None


def _diagnose(case: Case, batch: int, seconds: float, args: argparse.Namespace, workdir: Path) -> str:
    """Which cost dominates the incremental step where it misses its target.

    Per-node overhead: the same graph (same levels, bands and nodes) for M=8, whose matrices
    are negligible, timed the same way. The rest of the time grows with the sizes; it is split
    between matrix products, data movement around the bands (the halo: slices,
    concatenations, padding) and elementwise nodes in the proportions of an ORT profile's
    kernel times.
    """
    from model import build_model

    small = build_model(case.config.replace(channels=8)).eval()
    graph, states = _export_case(small, "incremental", workdir / "overhead_probe")
    timing = ["--states", str(states), "--batch", str(batch), "--vocab", str(case.config.input_size)]
    floor = min(
        _run_worker("time", args.threads, ["--graph", str(graph), *timing, "--steps", str(args.steps), "--repeats", str(args.repeats)])[
            "seconds_per_char"
        ]
        for _ in range(args.rounds)
    )
    real = ["--graph", str(case.graphs["incremental"]), "--states", str(case.states["incremental"])]
    real += ["--batch", str(batch), "--vocab", str(case.config.input_size), "--steps", str(min(args.steps, 100))]
    profile = _run_worker("profile", args.threads, real)
    kernels = {k: profile["shares"][k] for k in ("matmul", "halo", "other")}
    overhead = min(1.0, floor / seconds)
    scale = (1.0 - overhead) / (sum(kernels.values()) or 1.0)
    named = {
        "per-node overhead": overhead,
        "small matrices (matrix products)": kernels["matmul"] * scale,
        "halo (slices, concatenations, padding)": kernels["halo"] * scale,
        "elementwise nodes": kernels["other"] * scale,
    }
    worst = max(named, key=lambda k: named[k])
    detail = ", ".join(f"{k.split(' (')[0]} {v:.0%}" for k, v in named.items())
    return (
        f"{profile['nodes_per_step']:.0f} nodes per step; the same graph at M=8 takes {floor * 1e6:.0f} us; "
        f"{worst} dominates ({detail})"
    )


def parent(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench_incremental_") as tmp:
        cases = _cases(args, Path(tmp))
        jobs = [(c, e, b) for c in cases for b in args.batches for e in c.graphs]
        results: dict[tuple[str, str, int], float] = {}
        peak = 0.0
        progress = Progress(args.rounds * (len(jobs) + 1), desc="timing")
        for round_index in range(args.rounds):
            flops = _run_worker("peak", args.threads, ["--repeats", str(args.repeats)])["flops_per_second"]
            peak = max(peak, flops)
            progress.update()
            progress.message(f"round {round_index + 1}: sgemm {flops / 1e9:.1f} GFLOP/s")
            for case, engine, batch in jobs:
                extra = [
                    "--graph", str(case.graphs[engine]), "--states", str(case.states[engine]), "--batch", str(batch),
                    "--vocab", str(case.config.input_size), "--steps", str(args.steps), "--repeats", str(args.repeats),
                ]
                seconds = _run_worker("time", args.threads, extra)["seconds_per_char"]
                key = (case.name, engine, batch)
                results[key] = min(results.get(key, float("inf")), seconds)
                progress.update()
                progress.message(f"round {round_index + 1}: {case.name} {engine} batch {batch}: {seconds * 1e6:.0f} us/char")
        progress.close()

        rows, notes = [], []
        for case in cases:
            for batch in args.batches:
                naive, incremental = results[(case.name, "naive", batch)], results[(case.name, "incremental", batch)]
                speedup = naive / incremental
                target = _target(case.config, batch)
                eff = {e: case.flops[e] * batch / results[(case.name, e, batch)] / peak for e in ("naive", "incremental", PEER)}
                met = "-" if target is None else ("yes" if speedup >= target else "NO")
                peer = results[(case.name, PEER, batch)]
                fused = results.get((case.name, FUSED, batch))
                eff_fused = case.flops[FUSED] * batch / fused / peak if fused else None
                rows.append((case.name, case.config.channels, batch, naive * 1e6, incremental * 1e6, speedup, target, met,
                             eff["naive"], eff["incremental"], peer * 1e6, eff[PEER],
                             fused * 1e6 if fused else None, eff_fused))
                if "shipped_fused" in case.graphs:
                    own = results[(case.name, "shipped_fused", batch)]
                    notes.append(
                        f"{case.name}, batch {batch}: the package's own {case.graphs['shipped_fused'].name} takes "
                        f"{own * 1e6:.0f} us/char, the fused graph exported here {fused * 1e6:.0f}"
                    )
                if "shipped_incremental" in case.graphs:
                    own = results[(case.name, "shipped_incremental", batch)]
                    notes.append(
                        f"{case.name}, batch {batch}: the package's own {case.graphs['shipped_incremental'].name} takes "
                        f"{own * 1e6:.0f} us/char, the incremental graph exported here {incremental * 1e6:.0f}"
                    )
                if "shipped" in case.graphs:
                    own = results[(case.name, "shipped", batch)]
                    notes.append(
                        f"{case.name}, batch {batch}: the package's own {case.graphs['shipped'].name} (simple path) takes "
                        f"{own * 1e6:.0f} us/char, the simple-path graph exported here {naive * 1e6:.0f}"
                    )
                if target is not None and speedup < target:
                    why = _diagnose(case, batch, incremental, args, Path(tmp))
                    notes.append(f"{case.name}, batch {batch}: {speedup:.2f}x < {target:.1f}x; {why}")

    print(f"\nsgemm peak (numpy float32 1024^3, {args.threads} thread(s)): {peak / 1e9:.1f} GFLOP/s")
    header = ("| model | M | batch | simple us/char | incremental us/char | speed-up | target | met | simple %peak | "
              "incremental %peak | nn.LSTM+ORT us/char | nn.LSTM+ORT %peak | fused us/char | fused %peak |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, m, batch, naive, incr, speedup, target, met, e_naive, e_incr, peer, e_peer, fused, e_fused in rows:
        target_text = "-" if target is None else f"{target:.1f}x"
        fused_text = "- | -" if fused is None else f"{fused:.0f} | {e_fused:.0%}"
        print(f"| {name} | {m} | {batch} | {naive:.0f} | {incr:.0f} | {speedup:.2f}x | {target_text} | {met} | {e_naive:.0%} | "
              f"{e_incr:.0%} | {peer:.0f} | {e_peer:.0%} | {fused_text} |")
    print("(%peak: the engine's matrix-product FLOPs per character over the sgemm peak; nn.LSTM+ORT is a torch.nn.LSTM "
          "of the same depth and width run as ONNX Runtime's LSTM op, what a user would otherwise deploy; fused: the "
          "incremental graph with the project's fused cell kernel, '-' where the kernels are not built or the cell is not "
          "the LSTM cell with CN)")
    for note in notes:
        print(f"- {note}")
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "bench/bench_incremental.py", *sys.argv[1:]])
    print(f"\nreproduce: {command}")
    if args.json:
        write_json_atomic(Path(args.json), {"peak_flops": peak, "rows": rows, "notes": notes, "command": command})
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=_positive, nargs="+", default=[2, 4, 8], help="depths L of the synthetic models")
    parser.add_argument("--channels", type=_positive, default=256, help="M of the synthetic models")
    parser.add_argument("--order", type=int, choices=(2, 3), default=2, help="D of the synthetic models")
    parser.add_argument("--kernel", type=int, choices=(2, 3, 5), default=3, help="K of the synthetic models")
    parser.add_argument("--norm", choices=("none", "cn"), default="none",
                        help="normalization of the synthetic models (cn: they get a fused graph too)")
    parser.add_argument("--vocab", type=_positive, default=205, help="R = S of the synthetic models (enwik8's 205)")
    parser.add_argument("--chars", default=str(ROOT / "models" / "chars"), help="default character model package ('' to skip)")
    parser.add_argument("--batches", type=_positive, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=_positive, default=1, help="intra_op_num_threads (and BLAS threads for the peak)")
    parser.add_argument("--steps", type=_positive, default=200, help="characters per timed run")
    parser.add_argument("--repeats", type=_positive, default=3, help="timed runs per measurement (the minimum is kept)")
    parser.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds over all measurements")
    parser.add_argument("--json", help="also write the results to this JSON file")
    # internal: one measurement in a fresh process
    parser.add_argument("--worker", choices=("time", "profile", "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    parser.add_argument("--states", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=_positive, default=1, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        run = {"time": worker_time, "profile": worker_profile, "peak": worker_peak}[args.worker]
        print(json.dumps(run(args)))
        return 0
    sys.path.insert(0, str(ROOT))  # the model package, when run from a checkout
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
