"""The fused Triton step (model/kernels) against the reference (the specification).

Outputs, final states and gradients (parameters and start state) of a whole run with the
flush, per variant the kernels support, at tiny sizes. Tolerance table (max abs difference
on O(1) values; gradients scaled by their magnitude), the same as for the fast path:

    float64  1e-10
    float32  1e-5

Measured on the CPU interpreter: float64 differences of about 1e-15, float32 about 5e-7.

Where does the kernel code run? With a CUDA device (and TRITON_INTERPRET unset) it is
compiled and runs here on CUDA tensors. Without one, Triton's interpreter runs it on CPU
tensors in ONE subprocess started with TRITON_INTERPRET=1 (it must be set before triton is
imported, and it changes how every later ``@triton.jit`` is built, so it never enters this
process or other test modules); the subprocess saves its results and the comparisons happen
here. Everything is skipped, with the reason, when triton is not installed.

The selection logic (which variant and device get the fused step, the trainer's setting)
needs neither triton nor a GPU and always runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from model import TLSTM, TLSTMConfig, variant_config
from model.kernels import FusedTLSTM, check_supported, fused_supported, resolve_fused

ROOT = Path(__file__).resolve().parents[2]
R, S = 7, 5
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET_SET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
ON_GPU = torch.cuda.is_available() and not INTERPRET_SET
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install triton==3.9.0): the fused kernels cannot run"
)


@dataclass(frozen=True)
class Case:
    """One comparison: a variant at tiny sizes (P = depth for K=2 and 3)."""

    variant: str
    dtype: str
    depth: int = 3
    batch: int = 2
    length: int = 2
    channels: int = 4
    kernel_size: int | None = None
    block_m: int | None = None
    extras: bool = False  # also compare a no-grad run and classify() with lengths

    @property
    def id(self) -> str:
        k = f"-K{self.kernel_size}" if self.kernel_size else ""
        block = f"-block{self.block_m}" if self.block_m else ""
        return f"{self.variant}{k}-P{self.depth}-B{self.batch}-M{self.channels}{block}-{self.dtype}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def config(self) -> TLSTMConfig:
        extra = {"kernel_size": self.kernel_size} if self.kernel_size else {}
        return variant_config(self.variant, input_size=R, output_size=S, depth=self.depth, channels=self.channels, **extra)


CASES = [
    Case("tlstm-2d", "float64", extras=True),
    Case("tlstm-2d", "float32"),
    Case("tlstm-f", "float64"),
    Case("tlstm-f", "float32"),
    Case("tlstm-m", "float64"),
    Case("tlstm-m", "float32"),
    Case("tlstm-2d", "float64", depth=1),  # P=1: an LSTM cell, Cconv = C_{t-1}
    Case("tlstm-2d", "float64", depth=2, channels=6, block_m=4),  # two channel blocks, masked tail
    Case("tlstm-2d", "float64", depth=4, kernel_size=4, batch=1),  # K=4: u_t in two window rows
]


def _loss(out, dtype: torch.dtype) -> torch.Tensor:
    """Every output and both final states enter, the states with uneven weights."""
    loss = out.logits.square().sum()
    for s in out.state:
        loss = loss + (s * torch.linspace(-1.0, 2.0, s.numel(), dtype=dtype, device=s.device).view_as(s)).sum()
    return loss


def run_case(case: Case, device: str) -> dict:
    """Run the fused model for ``case`` on ``device``; everything needed to check it, on the CPU."""
    cfg, dtype = case.config(), case.torch_dtype
    torch.manual_seed(0)
    model = FusedTLSTM(cfg, block_m=case.block_m).to(dtype).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.input_size, (case.batch, case.length), generator=gen)
    start = [torch.randn((case.batch, *cfg.state_shape), generator=gen, dtype=dtype) for _ in cfg.state_names]
    start_dev = [s.to(device).requires_grad_() for s in start]
    out = model.run(x.to(device), state=tuple(start_dev), flush=cfg.delay)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(_loss(out, dtype), [*model.parameters(), *start_dev])
    result = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "x": x,
        "start": start,
        "logits": out.logits.detach().cpu(),
        "state": [s.detach().cpu() for s in out.state],
        "grads": dict(zip([*names, "h0", "c0"], [g.cpu() for g in grads], strict=True)),
    }
    if case.extras:
        lengths = torch.tensor([1, case.length])[: case.batch]
        with torch.no_grad():
            result["nograd_logits"] = model.run(x.to(device), state=tuple(s.to(device) for s in start), flush=cfg.delay).logits.cpu()
            result["classify"] = (lengths, model.classify(x.to(device), lengths.to(device)).cpu())
    return result


@pytest.fixture(scope="module")
def fused_results(tmp_path_factory) -> dict:
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton==3.9.0): the fused kernels cannot run")
    if ON_GPU:
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # the GEMM in fp32, as the reference
        try:
            return {case.id: run_case(case, "cuda") for case in CASES}
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    out = tmp_path_factory.mktemp("fused") / "results.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.model.test_fused_kernels", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"the interpreter run of the kernels failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return torch.load(out)


def _reference(case: Case, result: dict) -> tuple[TLSTM, torch.Tensor, list[torch.Tensor]]:
    dtype = case.torch_dtype
    reference = TLSTM(case.config().replace(impl="reference")).to(dtype)
    reference.load_state_dict(result["state_dict"])
    return reference, result["x"], result["start"]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fused_matches_reference(fused_results, case):
    result = fused_results[case.id]
    dtype, tol = case.torch_dtype, TOLERANCE[case.torch_dtype]
    reference, x, start = _reference(case, result)
    start = [s.clone().requires_grad_() for s in start]
    out = reference.run(x, state=tuple(start), flush=reference.delay)
    names = [n for n, _ in reference.named_parameters()]
    grads = dict(zip([*names, "h0", "c0"], torch.autograd.grad(_loss(out, dtype), [*reference.parameters(), *start]), strict=True))

    assert result["logits"].dtype == dtype and result["logits"].shape == out.logits.shape
    torch.testing.assert_close(result["logits"], out.logits.detach(), atol=tol, rtol=0)
    for name, got, want in zip(("h", "c"), result["state"], out.state, strict=True):
        torch.testing.assert_close(got, want.detach(), atol=tol, rtol=0, msg=lambda m, n=name: f"final {n}: {m}")
    assert sorted(result["grads"]) == sorted(grads)
    for name, want in grads.items():
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(result["grads"][name], want, atol=tol * scale, rtol=0, msg=lambda m, n=name: f"grad {n}: {m}")


@needs_triton
def test_fused_without_grad_and_classify_match_reference(fused_results):
    case = next(c for c in CASES if c.extras)
    result = fused_results[case.id]
    reference, x, start = _reference(case, result)
    tol = TOLERANCE[case.torch_dtype]
    with torch.no_grad():
        expected = reference.run(x, state=tuple(start), flush=reference.delay).logits
        lengths, got = result["classify"]
        expected_classify = reference.classify(x, lengths)
    torch.testing.assert_close(result["nograd_logits"], expected, atol=tol, rtol=0)
    torch.testing.assert_close(got, expected_classify, atol=tol, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="no CUDA device (or TRITON_INTERPRET is set)")
@needs_triton
@pytest.mark.parametrize("variant", ["tlstm-2d", "tlstm-f", "tlstm-m"])
def test_fused_on_gpu_matches_fast_path_at_real_block_sizes(variant):
    """Default channel blocks (several per row), a longer run; the fast path is itself tested
    against the reference."""
    torch.manual_seed(0)
    cfg = variant_config(variant, input_size=11, output_size=9, depth=4, channels=300)
    fast = TLSTM(cfg).double().cuda()
    fused = FusedTLSTM(cfg).double().cuda()
    fused.load_state_dict(fast.state_dict())
    x = torch.randint(0, 11, (5, 17), device="cuda")
    results = []
    for model in (fast, fused):
        out = model.run(x, flush=cfg.delay)
        loss = out.logits.square().sum() + sum(s.sum() for s in out.state)
        results.append((out, torch.autograd.grad(loss, list(model.parameters()))))
    (fast_out, fast_grads), (fused_out, fused_grads) = results
    torch.testing.assert_close(fused_out.logits, fast_out.logits, atol=1e-10, rtol=0)
    for a, b in zip(fused_out.state, fast_out.state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for a, b in zip(fused_grads, fast_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, float(b.abs().max())), rtol=0)


@needs_triton
@pytest.mark.skipif(INTERPRET_SET, reason="TRITON_INTERPRET is set in this process")
@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter does not type-check like the compiler (loop-carried dtypes, scalar and
    block masks): compile the forward and the main backward kernel to sm_90 machine code.
    (Every kernel, variant and dtype was compiled this way with Triton 3.6 and 3.9.)"""
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from model.kernels import triton_step

    base = {"K": 3, "BEFORE": 1, "MEMCONV": True, "KP": 4}
    jobs = [(triton_step.fwd_step_kernel, {**base, "BLOCK_M": 128}),
            (triton_step.bwd_step_kernel, {**base, "HAS_NEXT": True, "BLOCK_M": 256, "NBLOCKS": 2})]
    for kernel, constexprs in jobs:
        signature = {name: "constexpr" if name in constexprs else "*fp32" if name.endswith("_ptr") else "i32"
                     for name in kernel.arg_names}
        compiled = triton_compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32))
        assert f".visible .entry {kernel.__name__}" in compiled.asm["ptx"]
        assert len(compiled.asm["cubin"]) > 10_000  # ptxas produced machine code


# ---------------------------------------------------------------- refusals and selection
@pytest.mark.parametrize(
    ("variant", "named"),
    [("tlstm-3d", "order=3"), ("tlstm-2d+cn", "norm='cn'"), ("tlstm-2d+ln", "norm='ln'"), ("trnn", "cell='rnn'"),
     ("slstm", "arch='slstm'"), ("lstm", "arch='lstm'")],
)
def test_unsupported_variants_are_refused_by_name(variant, named):
    cfg = variant_config(variant, input_size=R, output_size=S, depth=2, channels=4)
    pattern = rf"does not implement variant {variant.replace('+', '[+]')} \(.*{named.replace('(', '[(]')}.*\); it supports the 2D tLSTM"
    with pytest.raises(ValueError, match=pattern):
        check_supported(cfg)
    if cfg.is_tlstm:
        with pytest.raises(ValueError, match=pattern):
            FusedTLSTM(cfg)
    ok, reason = fused_supported(cfg, "cuda")
    assert not ok and variant in reason


def test_fused_is_never_selected_on_the_cpu():
    cfg = variant_config("tlstm-2d", input_size=R, output_size=S, depth=3)
    assert fused_supported(cfg, "cpu") == (False, "the fused step runs on CUDA devices only; the device is cpu")
    assert resolve_fused("auto", cfg, torch.device("cpu"))[0] is False
    assert resolve_fused("off", cfg, "cuda") == (False, "the fused step is turned off (fused='off')")
    with pytest.raises(ValueError, match=r"fused='on' cannot be honoured: the fused step runs on CUDA devices only"):
        resolve_fused("on", cfg, "cpu")
    with pytest.raises(ValueError, match=r"fused: expected one of \['auto', 'on', 'off'\], got 'yes'"):
        resolve_fused("yes", cfg, "cpu")


def test_fused_selection_on_cuda_needs_triton_compiled_and_fast_impl(monkeypatch):
    cfg = variant_config("tlstm-2d", input_size=R, output_size=S, depth=3)
    ok, reason = fused_supported(cfg.replace(impl="reference"), "cuda")
    assert not ok and "impl='reference'" in reason
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ok, reason = fused_supported(cfg, "cuda")
    assert not ok and "TRITON_INTERPRET is set" in reason
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton -> ImportError (restored afterwards)
    ok, reason = fused_supported(cfg, "cuda")
    assert not ok and reason.startswith("triton is not importable")


@needs_triton
@pytest.mark.skipif(INTERPRET_SET, reason="TRITON_INTERPRET is set in this process")
def test_fused_selected_on_cuda_for_supported_variants():
    for variant in ("tlstm-2d", "tlstm-f", "tlstm-m"):
        cfg = variant_config(variant, input_size=R, output_size=S, depth=3)
        assert fused_supported(cfg, "cuda") == (True, f"fused Triton step for variant {variant} on cuda")


@needs_triton
@pytest.mark.skipif(INTERPRET_SET, reason="TRITON_INTERPRET is set in this process")
def test_compiled_kernels_refuse_cpu_tensors():
    model = FusedTLSTM(variant_config("tlstm-2d", input_size=R, output_size=S, depth=2, channels=4))
    with pytest.raises(ValueError, match=r"the kernels run on CUDA tensors .* got tensors on cpu"):
        model(torch.zeros(1, 3, dtype=torch.long))


def test_trainer_uses_the_fused_step_only_where_selected(tmp_path):
    from training.config import TrainConfig
    from training.trainer import Trainer

    options = {"length": 2, "symbols": 4, "valid_size": 2, "test_size": 2}
    base = {"task": "memorization", "task_options": options, "variant": "tlstm-2d", "depth": 2, "channels": 4,
            "device": "cpu", "threads": 1}
    with pytest.raises(ValueError, match=r"TrainConfig.fused: expected one of \['auto', 'on', 'off'\], got 'yes'"):
        TrainConfig(**base, fused="yes")
    with pytest.raises(ValueError, match=r"fused='on' cannot be honoured: the fused step runs on CUDA devices only"):
        Trainer(TrainConfig(**base, fused="on"), tmp_path / "on", stream=open(os.devnull, "w"))  # noqa: SIM115
    assert not (tmp_path / "on").exists()  # refused before the run directory is written
    trainer = Trainer(TrainConfig(**base, fused="auto"), tmp_path / "auto", stream=open(os.devnull, "w"))  # noqa: SIM115
    assert trainer.fused is False and type(trainer.model) is TLSTM
    assert trainer.describe()["fused_step"] == {"used": False, "reason": "the fused step runs on CUDA devices only; the device is cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="no CUDA device (or TRITON_INTERPRET is set)")
@needs_triton
def test_trainer_on_cuda_uses_the_fused_step_and_matches_the_eager_one(tmp_path):
    from training.config import TrainConfig
    from training.trainer import Trainer

    quiet = open(os.devnull, "w")  # noqa: SIM115
    base = {"task": "memorization", "task_options": {"length": 3, "symbols": 6, "valid_size": 4, "test_size": 4},
            "variant": "tlstm-2d", "depth": 3, "channels": 16, "batch_size": 8, "max_steps": 2, "eval_every": 2,
            "device": "cuda"}
    fused = Trainer(TrainConfig(**base, fused="auto"), tmp_path / "fused", stream=quiet)
    eager = Trainer(TrainConfig(**base, fused="off"), tmp_path / "eager", stream=quiet)
    assert fused.fused is True and type(fused.model) is FusedTLSTM and type(eager.model) is TLSTM
    batch = fused.task.train_batch(0, 8, seed=0, rank=0, world=1, delay=fused.model_config.delay).to(fused.ctx.device)
    results = []
    for trainer in (fused, eager):
        loss, _, _ = trainer.objective(batch)
        grads = torch.autograd.grad(loss, list(trainer.model.parameters()))
        results.append((loss.detach(), grads))
    (fused_loss, fused_grads), (eager_loss, eager_grads) = results
    torch.testing.assert_close(fused_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=0)
    summary = fused.run()
    assert summary["finished"] and summary["step"] == 2


def test_cli_passes_the_fused_setting():
    from training.cli import _config_from_args, resume_parser, train_parser

    args = train_parser().parse_args(["memorization", "--out", "run", "--fused", "off"])
    assert _config_from_args(args).fused == "off"
    assert train_parser().parse_args(["memorization", "--out", "run"]).fused == "auto"
    assert resume_parser().parse_args(["--resume", "run", "--fused", "on"]).fused == "on"


def test_fused_segment_refuses_mismatched_tensors():
    from model.kernels import fused_segment

    cfg = variant_config("tlstm-2d", input_size=R, output_size=S, depth=3, channels=4)
    model = TLSTM(cfg)
    u = torch.zeros(2, 5, 4)
    wrong = (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"expected H_0 of shape \(2, 3, 4\) \(M=4\), got \(2, 2, 4\)"):
        fused_segment(cfg, model.w_h, model.b_h, u, wrong)
    with pytest.raises(ValueError, match=r"expected u of shape \(B, T>=1, M\), got \(2, 0, 4\)"):
        fused_segment(cfg, model.w_h, model.b_h, u[:, :0], model.initial_state(2))
    with pytest.raises(ValueError, match=r"expected float32 or float64 tensors, got torch.bfloat16"):
        state = tuple(s.bfloat16() for s in model.initial_state(2))
        fused_segment(cfg, model.w_h.bfloat16(), model.b_h.bfloat16(), u.bfloat16(), state)


def test_fused_model_keeps_the_tlstm_state_dict():
    cfg = variant_config("tlstm-2d", input_size=R, output_size=S, depth=3, channels=4)
    torch.manual_seed(0)
    plain = TLSTM(cfg)
    torch.manual_seed(0)
    fused = FusedTLSTM(cfg)
    assert plain.state_dict().keys() == fused.state_dict().keys()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, fused.state_dict()[name]), name  # same initialisation from the same seed


if __name__ == "__main__":  # the interpreter run (TRITON_INTERPRET=1 set by the fixture above)
    torch.set_num_threads(1)
    torch.save({case.id: run_case(case, "cpu") for case in CASES}, sys.argv[1])
