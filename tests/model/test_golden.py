"""Committed tiny checkpoints still give their committed outputs (regression artifact).

Regenerate with ``python -m tests.model.golden.regenerate`` only for an intended change.
"""

import pytest
import torch

from training.checkpoint import load_checkpoint

from .golden.regenerate import GOLDEN, HERE


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_checkpoint_outputs(name, impl):
    checkpoint = load_checkpoint(HERE / f"{name}.pt")
    assert checkpoint.config == GOLDEN[name]
    checkpoint.config = checkpoint.config.replace(impl=impl)
    model = checkpoint.build_model()
    data = torch.load(HERE / f"{name}.expected.pt", weights_only=True)
    with torch.no_grad():
        out = model(data["x"])
    torch.testing.assert_close(out, data["expected"], atol=2e-6, rtol=0)
