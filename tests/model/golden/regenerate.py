"""Regenerate the golden checkpoints and their expected outputs.

    python -m tests.model.golden.regenerate

Run it only when a change to the model is *meant* to change its numbers, and say so in the
commit. Expected outputs come from the reference implementation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model import TLSTMConfig, build_model
from training.checkpoint import Checkpoint, atomic_torch_save, save_checkpoint

HERE = Path(__file__).resolve().parent

GOLDEN = {
    "tlstm2d_cn_tokens": TLSTMConfig(input_size=11, output_size=11, channels=6, tensor_size=3, norm="cn"),
    "tlstm3d_features": TLSTMConfig(input_size=4, output_size=3, channels=5, tensor_size=3, order=3, input_type="features"),
    "trnn_k2_tokens": TLSTMConfig(input_size=11, output_size=11, channels=4, tensor_size=4, kernel_size=2, cell="rnn"),
}


def golden_inputs(cfg: TLSTMConfig) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    if cfg.input_type == "tokens":
        return torch.randint(0, cfg.input_size, (2, 9), generator=gen)
    return torch.randn(2, 9, cfg.input_size, generator=gen)


def main() -> None:
    for index, (name, cfg) in enumerate(GOLDEN.items()):
        torch.manual_seed(100 + index)
        model = build_model(cfg.replace(impl="reference")).eval()
        x = golden_inputs(cfg)
        with torch.no_grad():
            expected = model(x)
        task = {"name": "golden", "kind": "lm", "vocab": None, "labels": None,
                "input": {"type": cfg.input_type, "size": cfg.input_size, "max_length": 9}}
        save_checkpoint(Checkpoint(config=cfg, model_state=model.state_dict(), task=task), HERE / f"{name}.pt")
        atomic_torch_save({"x": x, "expected": expected}, HERE / f"{name}.expected.pt")
        print(f"wrote {name}.pt and {name}.expected.pt")


if __name__ == "__main__":
    main()
