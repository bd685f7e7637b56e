"""ONNX Runtime availability and execution providers.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` install the same module and exactly one must be
present; ``onnxruntime-gpu`` lists CUDA among the *available* providers even on a machine
without a GPU and silently falls back to the CPU. So the providers a session really uses are
read back from the session (``ModelPackage.providers``) and checked here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType

from .errors import StartupError

log = logging.getLogger("tlstm.engine")

GPU_PROVIDER = "CUDAExecutionProvider"


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a StartupError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise StartupError(
            "onnxruntime is not importable "
            f"({exc}); install exactly one build: pip install 'tlstm[cpu]' or, on a CUDA "
            "machine, pip install 'tlstm[gpu]'"
        ) from exc
    return onnxruntime


def usable_providers(requested: Sequence[str]) -> list[str]:
    """The requested providers this ONNX Runtime build offers, in the requested order.

    Raises:
        StartupError: when none of them is offered (the message lists what is).
    """
    available = import_onnxruntime().get_available_providers()
    chosen = [name for name in requested if name in available]
    skipped = [name for name in requested if name not in available]
    if skipped:
        log.info("execution providers not offered by this onnxruntime build, skipped: %s", skipped)
    if not chosen:
        raise StartupError(
            f"none of the requested execution providers {list(requested)} is available; "
            f"this onnxruntime offers {available}"
        )
    return chosen


def check_gpu(model: str, providers: Sequence[str], require_gpu: bool) -> None:
    """Log the providers in use; with ``require_gpu``, a model not on CUDA is fatal."""
    log.info("model %s runs on %s", model, list(providers))
    if require_gpu and GPU_PROVIDER not in providers:
        raise StartupError(
            f"model {model}: {GPU_PROVIDER} is required (TLSTM_REQUIRE_GPU=true) but the session "
            f"runs on {list(providers)}; check the GPU, the CUDA/cuDNN libraries and that "
            "onnxruntime-gpu (not onnxruntime) is installed"
        )
