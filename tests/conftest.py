"""Suite-wide settings: deterministic, single-threaded torch so runs are fast and repeatable."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _torch_settings():
    try:
        import torch
    except ImportError:  # the service-only environment has no torch
        yield
        return
    torch.set_num_threads(1)
    yield
