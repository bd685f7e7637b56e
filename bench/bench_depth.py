"""Runtime against depth: tLSTM (fast path) vs torch.nn.LSTM of the same width.

The paper's claim (spec section 1): a stacked LSTM's runtime grows linearly with its L layers,
while the tLSTM merges depth into time. Times forward+backward of a (B, T) token batch for
L = 1, 2, 4, 8, each engine in its own process, each point the median of repeated runs.
Prints a table and the command that reproduces it, and writes a PNG of time against depth.

    python bench/bench_depth.py                    # CPU, the defaults below
    python bench/bench_depth.py --device cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = {
    "tlstm-2d": "2D tLSTM, K=3, P=L (fast path)",
    "tlstm-3d": "3D tLSTM, K=3, P=L (fast path)",
    "lstm": "torch.nn.LSTM, L layers",
    "slstm": "sLSTM, L layers sharing one cell",
}


def measure(engine: str, depths: list[int], args: argparse.Namespace) -> dict[int, list[float]]:
    """Seconds per forward+backward for each depth (runs inside the worker process)."""
    import torch

    from model import build_model, variant_config

    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: dict[int, list[float]] = {}
    for depth in depths:
        cfg = variant_config(engine, input_size=args.vocab, output_size=args.vocab, depth=depth, channels=args.channels)
        model = build_model(cfg).to(device)
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
        results[depth] = times
    return results


def plot(table: dict[str, dict[int, float]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for engine, row in table.items():
        depths = sorted(row)
        ax.plot(depths, [row[d] * 1e3 for d in depths], marker="o", label=ENGINES[engine])
    ax.set_xlabel("depth L")
    ax.set_ylabel("ms per forward+backward")
    ax.set_xscale("log", base=2)
    ax.set_title(f"{args.device}: B={args.batch}, T={args.length}, M={args.channels}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", default="tlstm-2d,tlstm-3d,lstm,slstm")
    parser.add_argument("--depths", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/out/depth.png")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
    for engine in engines:  # each engine in its own process
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--worker", engine], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        times = json.loads(proc.stdout.strip().splitlines()[-1])
        table[engine] = {int(d): statistics.median(t) for d, t in times.items()}

    tokens = args.batch * args.length
    print(f"forward+backward, device={args.device}, B={args.batch}, T={args.length}, M={args.channels}, "
          f"median of {args.repeats} (ms; tokens/s in parentheses)")
    print(f"{'engine':<10}" + "".join(f"{'L=' + str(d):>20}" for d in depths) + f"{'L=' + str(depths[-1]) + ' / L=' + str(depths[0]):>14}")
    for engine, row in table.items():
        cells = "".join(f"{row[d] * 1e3:>10.1f} ({tokens / row[d]:>7.0f})" for d in depths)
        print(f"{engine:<10}{cells}{row[depths[-1]] / row[depths[0]]:>14.2f}")
    out = Path(args.out)
    plot(table, args, out)
    print(f"wrote {out}")
    print("reproduce: python bench/bench_depth.py " + " ".join(a for a in argv if not a.startswith("--worker")))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
