"""Unit tests of llmbook.hardware: bf16 capability and the precision switch ($LLMBOOK_PRECISION)."""

from __future__ import annotations

from pathlib import Path

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


# --------------------------------------------------------------------------- the precision switch



@pytest.fixture
def native_cpu(monkeypatch):
    """A CPU that multiplies in bf16 natively (AVX-512 BF16), whatever this machine has."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert hardware.bf16_is_native("cpu")


@pytest.fixture
def emulated_cpu(monkeypatch):
    """A CPU without native bf16 (no AMX, no AVX-512 BF16)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not hardware.bf16_is_native("cpu")


def test_the_variable_name():
    assert hardware.PRECISION_ENV == "LLMBOOK_PRECISION"


def test_precision_defaults_to_fp32(monkeypatch):
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)
    assert hardware.precision() == "fp32"
    monkeypatch.setenv(hardware.PRECISION_ENV, "")
    assert hardware.precision() == "fp32"


@pytest.mark.parametrize("value, expected", [("fp32", "fp32"), ("auto", "auto"), (" AUTO ", "auto"), ("FP32", "fp32")])
def test_precision_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv(hardware.PRECISION_ENV, value)
    assert hardware.precision() == expected


@pytest.mark.parametrize("value", ["bf16", "fp16", "fast", "32"])
def test_precision_refuses_unknown_values_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(hardware.PRECISION_ENV, value)
    with pytest.raises(ValueError, match="LLMBOOK_PRECISION") as err:
        hardware.precision()
    assert repr(value) in str(err.value) and "fp32" in str(err.value) and "auto" in str(err.value)
    with pytest.raises(ValueError, match="LLMBOOK_PRECISION"):
        hardware.use_bf16("cpu")


def test_fp32_never_uses_bf16_even_where_it_is_native(monkeypatch, native_cpu):
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)
    assert hardware.use_bf16("cpu") is False
    assert hardware.inference_dtype("cpu") == torch.float32
    assert hardware.inference_dtype() == torch.float32
    monkeypatch.setenv(hardware.PRECISION_ENV, "fp32")
    assert hardware.use_bf16(torch.device("cpu")) is False
    assert hardware.inference_dtype("cpu") == torch.float32


def test_auto_uses_bf16_where_it_is_native(monkeypatch, native_cpu):
    monkeypatch.setenv(hardware.PRECISION_ENV, "auto")
    assert hardware.use_bf16("cpu") is True
    assert hardware.inference_dtype("cpu") == torch.bfloat16
    assert hardware.inference_dtype() == torch.bfloat16  # the CPU when no device is given
    assert hardware.use_bf16("meta") is False  # no back-end to count on


def test_auto_stays_in_fp32_where_bf16_is_emulated(monkeypatch, emulated_cpu):
    monkeypatch.setenv(hardware.PRECISION_ENV, "auto")
    assert hardware.use_bf16("cpu") is False
    assert hardware.inference_dtype("cpu") == torch.float32


def test_auto_on_cuda_follows_the_gpu(monkeypatch):
    monkeypatch.setenv(hardware.PRECISION_ENV, "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert hardware.use_bf16("cuda") is True
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert hardware.use_bf16("cuda:0") is False
    monkeypatch.setenv(hardware.PRECISION_ENV, "fp32")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert hardware.use_bf16("cuda") is False


def test_autocast_switches_matmuls_to_bf16_only_when_enabled():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with hardware.autocast("cpu", True):
        assert (a @ b).dtype == torch.bfloat16
    with hardware.autocast(torch.device("cpu"), False):
        assert (a @ b).dtype == torch.float32
    assert (a @ b).dtype == torch.float32


def test_cpu_bf16_support_reads_this_machine_when_not_given_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = None
    assert hardware.cpu_bf16_support() == (hardware.cpu_bf16_support(text) if text is not None else "unknown")
    assert hardware.cpu_bf16_support("") == "unknown"


def test_describe_precision_says_what_runs_and_why(monkeypatch, native_cpu):
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)
    assert hardware.describe_precision("cpu") == "fp32 (LLMBOOK_PRECISION=fp32; bf16 native on this device)"
    monkeypatch.setenv(hardware.PRECISION_ENV, "auto")
    assert hardware.describe_precision("cpu").startswith("bf16 autocast (LLMBOOK_PRECISION=auto;")
