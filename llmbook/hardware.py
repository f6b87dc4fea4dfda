"""What the hardware does fast, and the one switch that decides the precision the book computes in.

bfloat16 autocast is a large speed-up where the device multiplies in bf16 natively (CUDA GPUs
with bf16 support, CPUs with AMX or AVX-512 BF16) and a large slow-down where it is emulated
(on a 2-core AVX2-only CPU, one MiniLM training step on 32 sentences took 26.5 s under bf16
autocast against 1.5 s in fp32).

- :func:`bf16_is_native`: whether a device multiplies in bf16 natively (asked of torch: AMX or
  AVX-512 BF16 on an x86 CPU, compute capability 8.0 or more on a CUDA GPU);
  :func:`cpu_bf16_support`: what the CPU flags say, for the stamp. It also names Arm's BF16
  extension, which :func:`bf16_is_native` does not count (torch has no probe for it).
- :func:`precision`: ``$LLMBOOK_PRECISION``, ``fp32`` (the default, and what every stamped run
  uses, so the book's numbers do not depend on the machine that stamped them) or ``auto``
  (bf16 wherever it is native, for readers who want speed over reproducing the book).
- :func:`use_bf16`, :func:`inference_dtype`: what a chapter calls to decide, honouring both.
  A chapter that measures bf16 as a lever asks :func:`bf16_is_native` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

PRECISION_ENV = "LLMBOOK_PRECISION"
PRECISIONS = ("fp32", "auto")
DEFAULT_PRECISION = "fp32"


def bf16_is_native(device) -> bool:
    """Whether ``device`` (a ``torch.device`` or its name) multiplies in bfloat16 natively."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":  # Ampere (compute capability 8.0) and newer; older GPUs only emulate bf16
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return any(getattr(torch.cpu, name, lambda: False)()
                   for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False  # MPS and other back-ends: no bf16 speed-up to count on


def cpu_bf16_support(cpuinfo: str | None = None) -> str:
    """Whether this CPU multiplies in bfloat16 natively: "native (AMX)", "native (AVX-512 BF16)",
    "native (Arm BF16)", "emulated" (none of these: bf16 runs many times slower than fp32) or
    "unknown" (no flags to read).

    Stamped with each CPU run, because a chapter's run time depends on it as much as on the
    number of cores. ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when not given).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return "unknown"
    if "amx_bf16" in flags:
        return "native (AMX)"
    if "avx512_bf16" in flags:
        return "native (AVX-512 BF16)"
    if "bf16" in flags:  # Arm (Features line)
        return "native (Arm BF16)"
    return "emulated"


def precision() -> str:
    """The active precision policy from ``$LLMBOOK_PRECISION``: ``fp32`` (default) or ``auto``."""
    name = os.environ.get(PRECISION_ENV, DEFAULT_PRECISION).strip().lower() or DEFAULT_PRECISION
    if name not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={os.environ.get(PRECISION_ENV)!r} is not a known precision; "
                         f"use one of {', '.join(PRECISIONS)} (default {DEFAULT_PRECISION!r})")
    return name


def use_bf16(device) -> bool:
    """Whether a chapter should compute in bf16 on ``device``: only under ``auto`` and where it is native."""
    return precision() == "auto" and bf16_is_native(device)


def inference_dtype(device=None):
    """``torch.bfloat16`` where :func:`use_bf16` says so, else ``torch.float32``."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    return torch.bfloat16 if use_bf16(device) else torch.float32


def autocast(device, enabled: bool):
    """``torch.autocast`` to bfloat16 on ``device`` when ``enabled``, else a context that changes nothing."""
    import torch

    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bool(enabled))


def describe_precision(device) -> str:
    """One line for a chapter's set-up cell: the precision it computes in on ``device``, and why."""
    bf16 = use_bf16(device)
    native = "native" if bf16_is_native(device) else "emulated"
    return (f"{'bf16 autocast' if bf16 else 'fp32'} ({PRECISION_ENV}={precision()}; "
            f"bf16 {native} on this device)")
