"""Numeric precision of forward passes (prediction, and the steps of training).

``auto`` picks the fastest precision that keeps results faithful: float16 autocast on CUDA (as nnU-Net; training
adds a gradient scaler), bfloat16 autocast on CPUs whose oneDNN has native bfloat16 support (AVX512-BF16 or AMX,
where convolutions run about 2.4x faster than float32 in prediction and training steps 2.6x faster; the
validation Dice of a training matches float32's, documentation/benchmarks.md), float32 elsewhere (older CPUs
emulate bfloat16 slowly, MPS). Accumulation of the sliding-window logits and the losses are float32 in every case.
"""
import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bfloat16() -> bool:
    """True when oneDNN runs bfloat16 convolutions natively on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, requested: str = "auto") -> str:
    """The concrete precision (fp32, bf16 or fp16) for ``requested`` on ``device``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """A context that runs forward passes in ``precision`` (fp32: no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
