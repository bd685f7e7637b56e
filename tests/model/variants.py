"""Variant grids shared by the model tests (tiny sizes: the reference loops are slow)."""

from model import TLSTMConfig

R, S = 7, 5


def tlstm_configs(input_type: str = "tokens") -> list[TLSTMConfig]:
    """Every tLSTM variant the spec names, 2D and 3D, K=2 and K=3, none/CN/LN, LSTM and tRNN."""
    configs = []
    for order in (2, 3):
        for kernel in (2, 3):
            for norm in ("none", "cn", "ln"):
                for cell, memory_conv in (("lstm", True), ("lstm", False), ("rnn", True)):
                    configs.append(
                        TLSTMConfig(
                            input_size=R, output_size=S, channels=3, tensor_size=3, order=order,
                            kernel_size=kernel, norm=norm, cell=cell, memory_conv=memory_conv,
                            input_type=input_type,
                        )
                    )
    return configs


def config_id(cfg: TLSTMConfig) -> str:
    cell = "trnn" if cfg.cell == "rnn" else ("tlstm" if cfg.memory_conv else "tlstm-m")
    return f"{cfg.arch if cfg.arch != 'tlstm' else cell}-D{cfg.order}-K{cfg.kernel_size}-{cfg.norm}-{cfg.input_type}"


def baseline_configs() -> list[TLSTMConfig]:
    return [
        TLSTMConfig(input_size=R, output_size=S, channels=4, arch="slstm", layers=3),
        TLSTMConfig(input_size=R, output_size=S, channels=4, arch="lstm", layers=3),
    ]
