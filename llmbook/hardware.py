"""What the hardware does fast: the one place a chapter asks whether bf16 is worth using.

bfloat16 autocast is a large speed-up where the device multiplies in bf16 natively (CUDA GPUs
with bf16 support, CPUs with AMX or AVX-512 BF16) and a large slow-down where it is emulated
(on a 2-core AVX2-only CPU, one MiniLM training step on 32 sentences took 26.5 s under bf16
autocast against 1.5 s in fp32). Chapters call :func:`bf16_is_native` and use fp32 elsewhere.
"""

from __future__ import annotations


def bf16_is_native(device) -> bool:
    """Whether ``device`` (a ``torch.device`` or its name) multiplies in bfloat16 natively."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return any(getattr(torch.cpu, name, lambda: False)()
                   for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False  # MPS and other back-ends: no bf16 speed-up to count on
