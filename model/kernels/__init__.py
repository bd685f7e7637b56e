"""Fused Triton kernels of the tLSTM step for CUDA training (tested on the CPU interpreter).

    >>> from model import TLSTMConfig
    >>> from model.kernels import fused_supported
    >>> fused_supported(TLSTMConfig(input_size=5, output_size=5), "cpu")[0]
    False

:class:`FusedTLSTM` is a :class:`model.TLSTM` whose sequence runs go through
:func:`fused_segment`: per step one cuBLAS GEMM and one Triton kernel forward, the same
backward, the weight gradient in one GEMM at the end. Importing this package does not import
triton; the kernels load on first use.
"""

from .fused import FusedTLSTM, fused_segment, kernels_interpreted  # noqa: E402  (needs .support)
from .support import (
    FUSED_SETTINGS,
    SUPPORTED,
    check_supported,
    fused_supported,
    resolve_fused,
    unsupported_reason,
    variant_label,
)

__all__ = [
    "FUSED_SETTINGS",
    "SUPPORTED",
    "FusedTLSTM",
    "check_supported",
    "fused_segment",
    "fused_supported",
    "kernels_interpreted",
    "resolve_fused",
    "unsupported_reason",
    "variant_label",
]
