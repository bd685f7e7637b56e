"""Is ONNX Runtime's CUDA execution provider really in use here? Figures only count if it is.

An onnxruntime-gpu build lists CUDAExecutionProvider as *available* even where it cannot run,
and a session asked for ["CUDAExecutionProvider", "CPUExecutionProvider"] then falls back to the
CPU with only a logged error. So this script opens a session and reads
``session.get_providers()``, the providers actually in use, then checks the session's output
against numpy and times it on each provider. The graph is one tLSTM step's shape of work
(MatMul of (B*P, K*M) windows by (K*M, G) weights, Add, Tanh; no other operators), built
with onnx.helper so that it depends on nothing else in this repository.

    PYTHONPATH=DIR python bench/gpu_ort_check.py --json ort.json [--require-cuda]

Exit code 0 when the CUDA provider is in use, or when it is not and --require-cuda is not
given (the JSON says which); 1 when --require-cuda is given and it is not in use.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WANTED = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def step_graph(rows: int, inner: int, out: int) -> bytes:
    """Y = tanh(X @ W + b) with W and b as initializers: (rows, inner) -> (rows, out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((inner, out)) / np.sqrt(inner)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["a"]),
         helper.make_node("Tanh", ["a"], ["y"])],
        "tlstm_step_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def time_session(session, x: np.ndarray, repeats: int) -> dict[str, float]:
    session.run(None, {"x": x})  # warm-up (CUDA: kernel selection, allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - start)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3}


def check(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"wanted_providers": WANTED}
    try:  # torch first: its CUDA and cuDNN libraries are what preload_dlls() can find
        import torch

        result["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    except ImportError as exc:
        result["torch"] = {"error": str(exc)}
    import onnxruntime as ort

    result["onnxruntime"] = {"version": ort.__version__, "file": ort.__file__, "device": ort.get_device(),
                             "available_providers": ort.get_available_providers()}
    if hasattr(ort, "get_build_info"):
        result["onnxruntime"]["build_info"] = ort.get_build_info()
    if hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                ort.preload_dlls()
            result["preload_dlls"] = {"ok": True, "printed": printed.getvalue()}
        except Exception as exc:  # noqa: BLE001 - recorded, the session below is the real test
            result["preload_dlls"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "printed": printed.getvalue()}
    else:
        result["preload_dlls"] = {"ok": False, "error": "this onnxruntime has no preload_dlls()"}

    rows, inner, out = args.rows, args.inner, args.out
    graph = step_graph(rows, inner, out)
    x = np.random.default_rng(1).standard_normal((rows, inner)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions: dict[str, Any] = {}
    wanted = [p for p in WANTED if p in ort.get_available_providers()]
    session = ort.InferenceSession(graph, options, providers=wanted)
    used = session.get_providers()
    result["session_providers"] = used
    result["cuda_in_use"] = bool(used) and used[0] == "CUDAExecutionProvider"
    cpu = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    expected = cpu.run(None, {"x": x})[0]
    got = session.run(None, {"x": x})[0]
    result["max_abs_diff_vs_cpu"] = float(np.abs(got - expected).max())
    sessions["requested"] = {"providers": used, **time_session(session, x, args.repeats)}
    sessions["cpu"] = {"providers": cpu.get_providers(), **time_session(cpu, x, min(args.repeats, 3))}
    result["timings"] = sessions
    result["graph"] = {"ops": ["MatMul", "Add", "Tanh"], "x": [rows, inner], "y": [rows, out],
                       "flops": 2 * rows * inner * out}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--require-cuda", action="store_true", help="exit 1 unless the session uses the CUDA provider")
    parser.add_argument("--rows", type=int, default=1024, help="B*P rows (B=128, P=8)")
    parser.add_argument("--inner", type=int, default=1536, help="K*M (K=3, M=512)")
    parser.add_argument("--out", type=int, default=2051, help="G = 4M+K")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    result = check(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if not result["cuda_in_use"]:
        print(f"CUDAExecutionProvider is NOT in use: session providers {result['session_providers']}", file=sys.stderr)
        return 1 if args.require_cuda else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
