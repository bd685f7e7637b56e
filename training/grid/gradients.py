"""Gradient norm with respect to the first input at initialisation, against sequence length.

For a freshly initialised model (the variant's own PyTorch-default initialisation, seeded) and
B random sequences of T feature vectors x_1..x_T ~ N(0, I_R), the loss is the cross-entropy of
the final prediction y_T (read after the whole sequence, the delay's flush included) against a
random class. The result is the batch mean of ||d loss_b / d x_1|| for each T: how much the
first input can still move the last output. Comparing 2D tLSTM with tLSTM-M (no memory-cell
convolution) isolates what the memory-cell convolution does to it. Computed in float64, so
that small norms are not lost to rounding.

A cell's result is ``RUN/gradients.json``: ``{"lengths": [T, ...], "grad_norm": [g, ...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlstm.files import write_json_atomic

RESULT = "gradients.json"


def measure(variant: str, depth: int, channels: int, seed: int, *, lengths: list[int], input_size: int = 8,
            output_size: int = 8, batch_size: int = 16) -> list[float]:
    """Mean ||d loss / d x_1|| over the batch, one value per T in ``lengths``."""
    import torch
    import torch.nn.functional as F

    from model import build_model, variant_config

    torch.manual_seed(seed)
    config = variant_config(variant, input_size=input_size, output_size=output_size, depth=depth,
                            channels=channels, input_type="features")
    model = build_model(config).double().train()
    generator = torch.Generator().manual_seed(seed)
    norms = []
    for length in lengths:
        x = torch.randn(batch_size, length, input_size, generator=generator, dtype=torch.float64, requires_grad=True)
        target = torch.randint(0, output_size, (batch_size,), generator=generator)
        logits = model(x)[:, -1]  # (B, S): y_T
        loss = F.cross_entropy(logits, target, reduction="sum")  # each row's loss sees only its own x
        (grad,) = torch.autograd.grad(loss, x)  # (B, T, R)
        norms.append(float(grad[:, 0].norm(dim=-1).mean()))
    return norms


def write_result(run_dir: Path, lengths: list[int], norms: list[float]) -> None:
    write_json_atomic(run_dir / RESULT, {"lengths": list(lengths), "grad_norm": list(norms)})


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
