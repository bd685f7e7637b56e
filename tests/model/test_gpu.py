"""GPU cases: skipped per test where no CUDA device is present."""

import pytest
import torch

from model import TLSTM, build_model

from .variants import baseline_configs, config_id, tlstm_configs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
pytestmark = [pytest.mark.gpu, cuda]


@pytest.mark.parametrize("cfg", [c for c in tlstm_configs() if c.cell == "lstm"], ids=config_id)
def test_fast_path_on_gpu_matches_cpu_reference(cfg):
    torch.manual_seed(0)
    reference = TLSTM(cfg.replace(impl="reference")).double()
    fast = TLSTM(cfg).double().cuda()
    fast.load_state_dict(reference.state_dict())
    x = torch.randint(0, cfg.input_size, (3, 6))
    expected = reference(x)
    got = fast(x.cuda())
    torch.testing.assert_close(got.cpu(), expected, atol=1e-10, rtol=0)
    grad_ref = torch.autograd.grad(expected.square().sum(), reference.w_h)[0]
    grad_gpu = torch.autograd.grad(got.square().sum(), fast.w_h)[0]
    torch.testing.assert_close(grad_gpu.cpu(), grad_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cfg", baseline_configs(), ids=config_id)
def test_baselines_on_gpu_match_cpu(cfg):
    # float64: cuDNN may compute float32 RNNs in TF32, which is not what is being tested here
    torch.manual_seed(0)
    cpu = build_model(cfg).double()
    gpu = build_model(cfg).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randint(0, cfg.input_size, (3, 6))
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), atol=1e-10, rtol=0)
