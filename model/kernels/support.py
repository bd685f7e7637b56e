"""Which configs and devices the fused step serves, decided without importing triton on the CPU."""

from __future__ import annotations

import importlib
import os

import torch

from ..config import TLSTMConfig
from ..variants import variant_config, variant_names

SUPPORTED = (
    "the 2D tLSTM without normalization: variants tlstm-2d, tlstm-m and tlstm-f "
    "(arch='tlstm', order=2, cell='lstm', norm='none', any kernel_size >= 2, with or without memory_conv)"
)
FUSED_SETTINGS = ("auto", "on", "off")
_VARIANT_FIELDS = ("arch", "order", "kernel_size", "cell", "memory_conv", "norm")


def variant_label(config: TLSTMConfig) -> str:
    """The variant name of ``config`` (e.g. ``tlstm-3d+cn``), or its fields when it has none."""
    for name in variant_names():
        named = variant_config(name, input_size=1, output_size=1, depth=config.depth)
        if all(getattr(named, f) == getattr(config, f) for f in _VARIANT_FIELDS):
            return name
    return ", ".join(f"{f}={getattr(config, f)!r}" for f in _VARIANT_FIELDS)


def unsupported_reason(config: TLSTMConfig) -> str | None:
    """None when the kernels implement ``config``'s step, else why not (naming the variant)."""
    problems = []
    if config.arch != "tlstm":
        problems.append(f"arch={config.arch!r}")
    else:
        if config.order != 2:
            problems.append(f"order={config.order}")
        if config.cell != "lstm":
            problems.append(f"cell={config.cell!r}")
        if config.norm != "none":
            problems.append(f"norm={config.norm!r}")
    if not problems:
        return None
    return f"the fused step does not implement variant {variant_label(config)} ({', '.join(problems)}); it supports {SUPPORTED}"


def check_supported(config: TLSTMConfig) -> None:
    """Raise ValueError (naming the variant and what is supported) unless the kernels fit ``config``."""
    reason = unsupported_reason(config)
    if reason is not None:
        raise ValueError(reason)


def fused_supported(config: TLSTMConfig, device: torch.device | str) -> tuple[bool, str]:
    """Whether training ``config`` on ``device`` can use the fused step, and why (not).

    The CPU never uses it (the interpreter that runs the kernels there is for tests); CUDA
    needs an importable triton and TRITON_INTERPRET unset.
    """
    device = torch.device(device)
    reason = unsupported_reason(config)
    if reason is not None:
        return False, reason
    if config.impl == "reference":
        return False, "impl='reference' asks for the per-step reference; the fused step only replaces impl='fast'"
    if device.type != "cuda":
        return False, f"the fused step runs on CUDA devices only; the device is {device.type}"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False, "TRITON_INTERPRET is set, which would run the kernels in the CPU interpreter; unset it"
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        return False, f"triton is not importable ({exc}); install it to use the fused step"
    return True, f"fused Triton step for variant {variant_label(config)} on {device}"


def resolve_fused(setting: str, config: TLSTMConfig, device: torch.device | str) -> tuple[bool, str]:
    """Apply a fused setting: ``off`` never, ``auto`` where supported, ``on`` or ValueError.

    Returns:
        (use the fused step, the reason).
    """
    if setting not in FUSED_SETTINGS:
        raise ValueError(f"fused: expected one of {list(FUSED_SETTINGS)}, got {setting!r}")
    if setting == "off":
        return False, "the fused step is turned off (fused='off')"
    ok, reason = fused_supported(config, device)
    if setting == "on" and not ok:
        raise ValueError(f"fused='on' cannot be honoured: {reason}; expected fused='auto' or 'off' here")
    return ok, reason
