"""The fast path against the reference (the specification): outputs, final state, gradients.

Tolerance table (max abs difference on O(1) values; gradients scaled by their magnitude):
float64 1e-10, float32 1e-5. The models have M=8 channels: with very few channels the
normalizations divide by the spread of a handful of numbers, and float32 rounding of that
spread (not a difference between the paths) dominates the gradients.
"""

import pytest
import torch

from model import TLSTM

from .variants import config_id, tlstm_configs

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def _pair(cfg, dtype):
    cfg = cfg.replace(channels=8)
    torch.manual_seed(0)
    reference = TLSTM(cfg.replace(impl="reference")).to(dtype)
    fast = TLSTM(cfg.replace(impl="fast")).to(dtype)
    fast.load_state_dict(reference.state_dict())
    with torch.no_grad():  # non-trivial norm parameters, so gamma/beta are really exercised
        for model in (reference, fast):
            for name in ("gamma_a", "beta_a", "gamma_c", "beta_c"):
                if hasattr(model, name):
                    getattr(model, name).copy_(torch.linspace(0.5, 1.5, getattr(model, name).numel()).view_as(getattr(model, name)))
    return reference, fast


def _inputs(cfg, dtype, batch=2, length=5):
    gen = torch.Generator().manual_seed(1)
    if cfg.input_type == "tokens":
        return torch.randint(0, cfg.input_size, (batch, length), generator=gen)
    return torch.randn(batch, length, cfg.input_size, generator=gen, dtype=dtype)


CONFIGS = tlstm_configs() + [c for c in tlstm_configs("features") if c.cell == "lstm" and c.norm == "cn"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_fast_matches_reference(cfg, dtype):
    reference, fast = _pair(cfg, dtype)
    x = _inputs(cfg, dtype)
    tol = TOLERANCE[dtype]
    gen = torch.Generator().manual_seed(2)
    start = tuple(torch.randn(s.shape, generator=gen, dtype=dtype) for s in reference.initial_state(2))
    runs = []
    for model in (reference, fast):
        out = model.run(x, state=start, flush=cfg.delay)  # a non-zero start state
        loss = out.logits.square().sum() + sum(s.square().sum() for s in out.state)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        runs.append((out, grads))
    (ref_out, ref_grads), (fast_out, fast_grads) = runs
    assert ref_out.logits.dtype == dtype
    torch.testing.assert_close(fast_out.logits, ref_out.logits, atol=tol, rtol=0)
    for a, b in zip(fast_out.state, ref_out.state, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    names = [n for n, _ in reference.named_parameters()]
    for name, a, b in zip(names, fast_grads, ref_grads, strict=True):
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a, b, atol=tol * scale, rtol=0, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize(
    "cfg",
    [c for c in tlstm_configs() if c.norm in ("none", "cn") and c.kernel_size == 3 and c.cell == "lstm" and c.memory_conv],
    ids=config_id,
)
def test_gradcheck_fast_path(cfg):
    torch.manual_seed(0)
    model = TLSTM(cfg.replace(channels=2, tensor_size=2)).double()
    x = torch.randint(0, cfg.input_size, (1, 3))
    params = dict(model.named_parameters())
    names = ["w_h", "b_h", "w_x"] + (["gamma_a", "gamma_c"] if cfg.norm == "cn" else [])

    def f(*tensors):
        replaced = {**params, **dict(zip(names, tensors, strict=True))}
        return torch.func.functional_call(model, replaced, (x,))

    assert torch.autograd.gradcheck(f, tuple(params[n].detach().clone().requires_grad_() for n in names))
