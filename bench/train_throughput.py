"""Training throughput: symbols per second of one optimizer step (forward, backward, Adam).

Language-model shapes (token inputs, bptt segments, the state carried between segments), for
each variant and depth. Each configuration runs in this process after a warm-up; the figures
are medians over the timed steps. Prints a table and the command that reproduces it.

    python bench/train_throughput.py [--device cpu|cuda] [--variants tlstm-2d+cn,lstm]
        [--depths 1,2,4] [--channels 128] [--batch-size 32] [--bptt 100] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 96  # the default corpus' character set


def measure(variant: str, depth: int, channels: int, batch: int, bptt: int, steps: int, device: torch.device) -> float:
    """Median symbols/s of a training step for one configuration."""
    from model import build_model, variant_config

    torch.manual_seed(0)
    model = build_model(variant_config(variant, input_size=VOCAB, output_size=VOCAB, depth=depth, channels=channels)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (batch, bptt + 1), device=device)
    state = None
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.run(x[:, :-1], state)
        loss = F.cross_entropy(out.logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state = tuple(s.detach() for s in out.state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return batch * bptt / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--variants", default="tlstm-2d+cn,tlstm-3d+cn,slstm,lstm")
    parser.add_argument("--depths", default="1,2,4")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    depths = [int(d) for d in args.depths.split(",")]
    variants = args.variants.split(",")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput, symbols/s (B={args.batch_size}, bptt={args.bptt}, M={args.channels}, "
          f"vocab {VOCAB}; torch {torch.__version__}, {where})")
    print(f"{'variant':<14}" + "".join(f"{'L=' + str(d):>12}" for d in depths))
    for variant in variants:
        row = [measure(variant, d, args.channels, args.batch_size, args.bptt, args.steps, device) for d in depths]
        print(f"{variant:<14}" + "".join(f"{v:>12,.0f}" for v in row), flush=True)
    print("reproduce: python bench/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the model package, when run from a checkout
    sys.exit(main())
