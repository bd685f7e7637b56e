"""Runtime against depth: the tLSTM (fast path, fused Triton step) vs torch.nn.LSTM of the same width.

The paper's claim (spec section 1): a stacked LSTM's runtime grows linearly with its L layers,
while the tLSTM merges depth into time. Times forward+backward of a (B, T) token batch for
L = 1, 2, 4, 8, each engine in its own process, each point the median of repeated runs.
Prints a table, tokens/s, the achieved FLOP rate against the device's peak, the tLSTM over
cuDNN ratio at the deepest L and t(L_max)/t(L_min) of each engine; writes a PNG of time
against depth (when matplotlib is installed) and, with --json, every figure.

    python bench/bench_depth.py --quick                        # a small CPU check (seconds)
    python bench/bench_depth.py                                # CPU, B=32, T=64, M=128
    python bench/bench_depth.py --device cuda --precision tf32 --json out.json
                                                               # GPU: B=128, T=100, M=512

On CUDA the default engines are tlstm-2d (the fast path, eager), tlstm-2d-fused (the fused
Triton step, model.kernels.FusedTLSTM, the one the trainer uses on CUDA) and lstm (cuDNN).
tlstm-2d-fused also runs on the CPU under TRITON_INTERPRET=1, to check this script only.

FLOPs: one step of the cross-layer convolution is a (B*P^(D-1), kappa*M) x (kappa*M, G) GEMM,
2*B*P^(D-1)*kappa*M*G FLOPs (G = config.gate_channels); a stacked LSTM step is
L * 2*B*(M*4M + M*4M); the head adds 2*B*M*S per output. Forward+backward counts 3x the
forward (the two backward GEMMs of every forward GEMM); pointwise work is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENGINES = {
    "tlstm-2d": "2D tLSTM, K=3, P=L (fast path, eager)",
    "tlstm-2d-fused": "2D tLSTM, K=3, P=L (fused Triton step)",
    "tlstm-3d": "3D tLSTM, K=3, P=L (fast path, eager)",
    "lstm": "torch.nn.LSTM, L layers (cuDNN on CUDA)",
    "slstm": "sLSTM, L layers sharing one cell",
}
DEFAULTS = {  # sizes and engines by device; --quick replaces them with a few-second CPU check
    "cpu": {"batch": 32, "length": 64, "channels": 128, "engines": "tlstm-2d,tlstm-3d,lstm,slstm", "depths": "1,2,4,8"},
    "cuda": {"batch": 128, "length": 100, "channels": 512, "engines": "tlstm-2d,tlstm-2d-fused,lstm", "depths": "1,2,4,8"},
    "quick": {"batch": 4, "length": 8, "channels": 16, "engines": "tlstm-2d,lstm", "depths": "1,2"},
}
# Dense peak FLOP rates (TFLOPS) by device name. H200 SXM datasheet (nvidia.com/en-us/data-center/h200):
# FP32 67 TFLOPS (= 132 SMs x 128 FP32 lanes x 2 x 1.98 GHz); TF32 Tensor Core 989 TFLOPS
# "with sparsity", i.e. 494.7 dense. The H200 NVL board is lower (FP32 60, TF32 835/2): pass
# --peak-fp32/--peak-tf32 for another board.
PEAKS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "source": "NVIDIA H200 SXM datasheet: FP32 67 TFLOPS, TF32 Tensor Core 989 TFLOPS with 2:4 sparsity (494.7 dense)"},
}
PRECISIONS = ("default", "fp32", "tf32")


def model_config(engine: str, depth: int, args: argparse.Namespace):
    from model import variant_config

    variant = "tlstm-2d" if engine == "tlstm-2d-fused" else engine
    return variant_config(variant, input_size=args.vocab, output_size=args.vocab, depth=depth, channels=args.channels)


def step_flops(cfg, batch: int) -> int:
    """Forward FLOPs of one step of the recurrence (GEMMs only), from the config."""
    m = cfg.channels
    if cfg.is_tlstm:
        return 2 * batch * cfg.num_locations * cfg.kappa * m * cfg.gate_channels
    return cfg.layers * 2 * batch * (m * 4 * m + m * 4 * m)


def train_flops(cfg, batch: int, length: int) -> int:
    """FLOPs of one forward+backward of model(x) on a (B, T) batch: 3x the forward GEMMs."""
    steps = length + cfg.delay  # model(x) runs the flush steps too, and the head on every step
    head = 2 * batch * cfg.channels * cfg.output_size
    return 3 * steps * (step_flops(cfg, batch) + head)


def set_precision(precision: str) -> dict[str, bool]:
    """fp32: no TF32 anywhere; tf32: TF32 for matmuls and cuDNN; default: torch's defaults."""
    import torch

    if precision != "default":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


def build(engine: str, cfg, device):
    """The product's own modules: build_model, or the trainer's FusedTLSTM for the fused engine."""
    from model import build_model

    if engine != "tlstm-2d-fused":
        return build_model(cfg)
    from model.kernels import FusedTLSTM, fused_supported, kernels_interpreted

    ok, reason = fused_supported(cfg, device)
    if not ok and not (device.type == "cpu" and kernels_interpreted()):
        raise SystemExit(f"engine tlstm-2d-fused: {reason} (on the CPU it runs only under TRITON_INTERPRET=1, as a check)")
    return FusedTLSTM(cfg)


def measure(engine: str, depths: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per forward+backward for each depth (runs inside the worker process)."""
    import torch

    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    precision = set_precision(args.precision)
    device = torch.device(args.device)
    results: dict[str, Any] = {"times": {}, "flops": {}, "precision_flags": precision}
    for depth in depths:
        cfg = model_config(engine, depth, args)
        model = build(engine, cfg, device).to(device)
        x = torch.randint(0, args.vocab, (args.batch, args.length), device=device)
        target = torch.randint(0, args.vocab, (args.batch, args.length), device=device)

        def run(model=model, x=x, target=target) -> None:
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, args.vocab), target.reshape(-1))
            loss.backward()
            model.zero_grad(set_to_none=True)

        for _ in range(args.warmup):
            run()
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        results["times"][depth] = times
        results["flops"][depth] = train_flops(cfg, args.batch, args.length)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def plot(table: dict[str, dict[int, float]], args: argparse.Namespace, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        print(f"{path} skipped: matplotlib is not installed")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for engine, row in table.items():
        depths = sorted(row)
        ax.plot(depths, [row[d] * 1e3 for d in depths], marker="o", label=ENGINES[engine])
    ax.set_xlabel("depth L")
    ax.set_ylabel("ms per forward+backward")
    ax.set_xscale("log", base=2)
    ax.set_title(f"{args.device} ({args.precision}): B={args.batch}, T={args.length}, M={args.channels}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return True


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, sm_count=props.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), total_memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def peak_for(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    if args.peak_fp32 or args.peak_tf32:
        return {"fp32": args.peak_fp32, "tf32": args.peak_tf32, "source": "given on the command line"}
    for key, peak in PEAKS.items():
        if args.device == "cuda" and key in str(info.get("name", "")):
            return dict(peak)
    return None


def _resolve(args: argparse.Namespace) -> None:
    preset = DEFAULTS["quick" if args.quick else args.device]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.warmup = 1 if args.warmup is None else args.warmup
        args.repeats = 2 if args.repeats is None else args.repeats
        args.vocab = 16 if args.vocab is None else args.vocab
    args.warmup = 2 if args.warmup is None else args.warmup
    args.repeats = 5 if args.repeats is None else args.repeats
    args.vocab = 64 if args.vocab is None else args.vocab


def summarize(table: dict[str, dict[int, float]], flops: dict[str, dict[int, int]], depths: list[int],
              args: argparse.Namespace, peak: dict[str, Any] | None) -> dict[str, Any]:
    """Every figure of the run: per engine and depth, and the headline ratios."""
    tokens = args.batch * args.length
    lo, hi = depths[0], depths[-1]
    engines: dict[str, Any] = {}
    for engine, row in table.items():
        points = {}
        for d in depths:
            seconds = row[d]
            tflops = flops[engine][d] / seconds / 1e12
            point = {"median_s": seconds, "tokens_per_s": tokens / seconds, "tflops": tflops, "flops": flops[engine][d]}
            if peak:
                point.update({f"frac_{k}_peak": tflops / peak[k] for k in ("fp32", "tf32") if peak.get(k)})
            points[str(d)] = point
        engines[engine] = {"label": ENGINES[engine], "depths": points, f"t_L{hi}_over_t_L{lo}": row[hi] / row[lo]}
    summary: dict[str, Any] = {"engines": engines, "depth_range": [lo, hi]}
    if "lstm" in table:
        best = "tlstm-2d-fused" if "tlstm-2d-fused" in table else "tlstm-2d" if "tlstm-2d" in table else None
        if best:
            summary[f"tlstm_over_cudnn_L{hi}"] = table["lstm"][hi] / table[best][hi]  # tokens/s ratio
            summary["tlstm_over_cudnn_engine"] = best
        if "tlstm-2d" in table:
            summary[f"eager_tlstm_over_cudnn_L{hi}"] = table["lstm"][hi] / table["tlstm-2d"][hi]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny CPU sizes, two depths: checks the script in seconds")
    parser.add_argument("--engines", default=None, help=f"comma-separated, from {sorted(ENGINES)}")
    parser.add_argument("--depths", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--precision", choices=PRECISIONS, default="default",
                        help="fp32: TF32 off for matmuls and cuDNN; tf32: on for both; default: torch's defaults "
                             "(matmul fp32, cuDNN TF32)")
    parser.add_argument("--peak-fp32", type=float, default=None, metavar="TFLOPS", help="the device's dense FP32 peak")
    parser.add_argument("--peak-tf32", type=float, default=None, metavar="TFLOPS", help="the device's dense TF32 peak")
    parser.add_argument("--out", default="bench/out/depth.png")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _resolve(args)
    depths = [int(d) for d in args.depths.split(",")]

    if args.worker:  # child process: one engine, print JSON
        print(json.dumps(measure(args.worker, depths, args)))
        return 0

    engines = args.engines.split(",")
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; expected some of {sorted(ENGINES)}")
    argv = list(sys.argv[1:] if argv is None else argv)
    table: dict[str, dict[int, float]] = {}
    flops: dict[str, dict[int, int]] = {}
    flags: dict[str, Any] = {}
    for engine in engines:  # each engine in its own process
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--worker", engine], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print(f"engine {engine} failed:\n{proc.stderr}", file=sys.stderr)
            return proc.returncode or 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        table[engine] = {int(d): statistics.median(t) for d, t in result["times"].items()}
        flops[engine] = {int(d): int(f) for d, f in result["flops"].items()}
        flags[engine] = result["precision_flags"]

    info = device_info(args.device)
    peak = peak_for(info, args)
    summary = summarize(table, flops, depths, args, peak)
    tokens = args.batch * args.length
    lo, hi = depths[0], depths[-1]
    print(f"forward+backward, device={args.device} ({info.get('name')}), precision={args.precision}, B={args.batch}, "
          f"T={args.length}, M={args.channels}, median of {args.repeats} (ms; tokens/s in parentheses)")
    print(f"{'engine':<16}" + "".join(f"{'L=' + str(d):>20}" for d in depths) + f"{'L=' + str(hi) + ' / L=' + str(lo):>14}")
    for engine, row in table.items():
        cells = "".join(f"{row[d] * 1e3:>10.1f} ({tokens / row[d]:>7.0f})" for d in depths)
        print(f"{engine:<16}{cells}{row[hi] / row[lo]:>14.2f}")
    print("achieved TFLOPS (GEMM FLOPs of forward+backward from the config / time)"
          + (f"; in parentheses the fraction of the peak, fp32 {peak['fp32']} / tf32 {peak['tf32']} TFLOPS ({peak['source']})"
             if peak else "; no peak known for this device (--peak-fp32, --peak-tf32)"))
    for engine, data in summary["engines"].items():
        figures = []
        for d in depths:
            point = data["depths"][str(d)]
            fracs = "/".join(f"{point[f'frac_{k}_peak']:.1%}" for k in ("fp32", "tf32") if f"frac_{k}_peak" in point)
            figures.append(f"L={d}: {point['tflops']:.3g}" + (f" ({fracs})" if fracs else ""))
        print(f"  {engine:<16}" + ", ".join(figures))
    if f"tlstm_over_cudnn_L{hi}" in summary:
        print(f"tlstm_over_cudnn_L{hi} ({summary['tlstm_over_cudnn_engine']} tokens/s over cuDNN's): {summary[f'tlstm_over_cudnn_L{hi}']:.3f}")
    if "tlstm-2d-fused" in table:
        print(f"fused 2D tLSTM t(L={hi})/t(L={lo}): {table['tlstm-2d-fused'][hi] / table['tlstm-2d-fused'][lo]:.3f}")
    command = "python bench/bench_depth.py " + " ".join(a for a in argv if not a.startswith("--worker"))
    if args.json:
        record = {"command": command, "info": info, "precision": args.precision, "precision_flags": flags,
                  "sizes": {"batch": args.batch, "length": args.length, "channels": args.channels, "vocab": args.vocab,
                            "depths": depths, "warmup": args.warmup, "repeats": args.repeats},
                  "peak_tflops": peak, "interpreted": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), **summary}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    out = Path(args.out)
    if plot(table, args, out):
        print(f"wrote {out}")
    print("reproduce: " + command)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
