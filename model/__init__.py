"""The Tensorized LSTM (He et al., NIPS 2017) in PyTorch; see docs/tlstm-spec.md.

    >>> from model import TLSTMConfig, TLSTM
    >>> model = TLSTM(TLSTMConfig(input_size=205, output_size=205, channels=64, tensor_size=4))
    >>> model.depth
    4
"""

from .base import RecurrentModel, RunOutput, State
from .baselines import SharedStackedLSTM, StackedLSTM
from .config import TLSTMConfig
from .tlstm import TLSTM
from .variants import VARIANTS, build_model, build_variant, variant_config, variant_names

__all__ = [
    "TLSTM",
    "VARIANTS",
    "RecurrentModel",
    "RunOutput",
    "SharedStackedLSTM",
    "StackedLSTM",
    "State",
    "TLSTMConfig",
    "build_model",
    "build_variant",
    "variant_config",
    "variant_names",
]
