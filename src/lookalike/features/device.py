"""Which device and precision to run on: CUDA when present, bf16 where the CPU has it."""

from __future__ import annotations

import functools
import os

import torch

from ..errors import ModelError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> the first CUDA device when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but no CUDA device is available")
    return dev


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose matrix units take bf16 natively (AMX or AVX-512 BF16).

    Elsewhere bf16 is emulated and slower than fp32. `LOOKALIKE_CPU_BF16=0/1` overrides.
    """
    env = os.environ.get("LOOKALIKE_CPU_BF16")
    if env is not None:
        return env == "1"
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_has_fast_int8() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX-INT8),
    where torch._int_mm runs about 3x fp32's GEMM. `LOOKALIKE_CPU_INT8=0/1` overrides."""
    env = os.environ.get("LOOKALIKE_CPU_INT8")
    if env is not None:
        return env == "1"
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def resolve_precision(precision: str, device: torch.device, bf16_safe: bool = True) -> torch.dtype:
    """'auto' -> bf16 where it is fast (CUDA, AMX/AVX-512 BF16 CPUs) and keeps the model's
    features within cosine 0.999 of fp32 (`bf16_safe`), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ModelError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
    if not bf16_safe:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
