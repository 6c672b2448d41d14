"""What the machine has: CUDA devices, CPU flags. The ground floor: every layer may use it."""

from __future__ import annotations

import functools
import os
import platform
import time

import torch

from .errors import InvalidParameter


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> the first CUDA device when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InvalidParameter(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter(f"device {device!r} asked for, but no CUDA device is available")
    return dev


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_identity(device: torch.device) -> dict:
    """What a measurement of speed on this machine is valid for (the calibrations' key): CPU
    model, cores, torch threads, torch version, architecture, and the CUDA device's name."""
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_device_name(device)
    return out


def load_average() -> float | None:
    """The one-minute load average (None where the platform has none): how busy the machine was
    when something was timed."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def when() -> str:
    """Now, in UTC, to the second (ISO 8601): when a measurement was made."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# a measurement is busy when other processes took more than this share of the machine's CPUs
# while it ran (or, where that was not measured, by the load average before it)
BUSY_SHARE = 0.25


def cpu_snapshot() -> tuple[float, float, float, int] | None:
    """(monotonic seconds, CPU seconds the whole machine spent busy, this process's CPU seconds,
    CPUs) now, for `others_share`; None where /proc/stat cannot be read (not Linux). Busy time
    includes `steal`: time a virtual machine's CPUs were taken by its host's other guests."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        fields = [int(v) for v in lines[0].split()[1:]] + [0] * 8
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    own = os.times()
    return (time.monotonic(), (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system, max(1, cpus))


def others_share(start: tuple | None, end: tuple | None = None) -> float | None:
    """The share of the machine's CPUs (0 to 1) that other processes (and a host's other guests)
    used between snapshot `start` and `end` (default: now): the machine's busy CPU time less this
    process's, over the wall time and the CPUs. None when either snapshot is missing."""
    end = end if end is not None else (cpu_snapshot() if start is not None else None)
    if start is None or end is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return round(min(1.0, max(0.0, others / ((end[0] - start[0]) * end[3]))), 3)


def busy(load: float | None, cores: int | None = None, others: float | None = None) -> bool:
    """Whether a measurement ran on a busy machine: other processes took more than `BUSY_SHARE`
    of its CPUs while it ran (`others`); where that was not measured, a load average before it
    above three quarters of the cores (which counts the measuring process's own threads too)."""
    if others is not None:
        return others > BUSY_SHARE
    cores = cores or os.cpu_count() or 1
    return load is not None and load > max(1.0, 0.75 * cores)


def busy_words(load: float | None, others: float | None) -> str:
    """How busy the machine was for a measurement, in a few words."""
    parts = [] if others is None else [f"other processes used {others:.0%} of the CPUs meanwhile"]
    if load is not None:
        parts.append(f"load average {load:g} before")
    return ", ".join(parts) or "how busy not known"


def busy_note(load: float | None, others: float | None = None) -> str:
    """What a choice's line adds when it was measured on a busy machine ('' when not)."""
    if not busy(load, others=others):
        return ""
    return (f"; measured while the machine was busy ({busy_words(load, others)}): `lookalike calibrate --again` "
            "redoes it")


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


def free_memory() -> int | None:
    """Bytes of physical memory free now (free pages: Linux, macOS); None if the system does
    not say. The cautious figure, for refusing work that would not fit."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available now: Linux's MemAvailable (free pages plus what the kernel
    can reclaim), else `free_memory()`; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return free_memory()
