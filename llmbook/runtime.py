"""Notebook set-up: seeds, threads, device and a record of library versions."""

from __future__ import annotations

import os
import platform
import random
from importlib import metadata

from llmbook import profile

REPORTED_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "evaluate",
                     "scikit-learn", "numpy", "pandas")


def pick_device(prefer: str | None = None):
    """CUDA, then Apple MPS, then CPU; ``prefer`` (e.g. ``"cpu"``) overrides."""
    import torch

    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Python and the versions of the libraries the book depends on."""
    out = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device=None) -> str:
    """A one-line description of the compute device (GPU name, or CPU and its threads)."""
    import torch

    device = device or pick_device()
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _quiet_library_progress_bars() -> None:
    """Weight-loading and dataset-map progress bars say nothing a reader needs in a chapter."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # transformers/datasets are optional for the package's lighter helpers
        pass


def setup(seed: int = 0, threads: int | None = None, device: str | None = None, quiet: bool = False):
    """Fix seeds and threads, choose the device, print versions; return the device.

    Threads come from ``threads``, else ``$OMP_NUM_THREADS``, else the CPU count.
    """
    import torch

    wanted = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    torch.set_num_threads(wanted)
    set_seed(seed)
    chosen = pick_device(device)
    _quiet_library_progress_bars()
    if not quiet:
        info = versions()
        print(f"profile: {profile.current()}   seed: {seed}   device: {device_description(chosen)}")
        print("   ".join(f"{k} {v}" for k, v in info.items()))
    return chosen
