from __future__ import annotations

import pytest
import torch

from llmbook import hardware


def test_bf16_is_native_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert hardware.bf16_is_native("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert hardware.bf16_is_native(torch.device("cpu")) is True
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert hardware.bf16_is_native("cpu") is True


def test_bf16_is_native_elsewhere(monkeypatch):
    assert hardware.bf16_is_native("meta") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert hardware.bf16_is_native("cuda") is True
    # a T4 or V100 can hold bf16 tensors (is_bf16_supported() says True) but only emulates bf16 maths
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert hardware.bf16_is_native("cuda:0") is False
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: seen.append(device) or (9, 0))
    assert hardware.bf16_is_native("cuda:1") is True and seen == [torch.device("cuda:1")], "ask the device given"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.bf16_is_native("cuda") is False


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile", "native (AMX)"),
    ("fpu sse2 avx2 avx512f avx512_bf16", "native (AVX-512 BF16)"),
    ("fpu sse2 avx2 fma", "emulated"),
])
def test_cpu_bf16_support_reads_the_flags(flags, expected):
    cpuinfo = f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    assert hardware.cpu_bf16_support(cpuinfo) == expected


def test_cpu_bf16_support_arm_and_unknown():
    assert hardware.cpu_bf16_support("Features\t: fp asimd bf16 i8mm\n") == "native (Arm BF16)"
    assert hardware.cpu_bf16_support("Features\t: fp asimd\n") == "emulated"
    assert hardware.cpu_bf16_support("no flags here\n") == "unknown"
