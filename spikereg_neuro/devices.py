"""Checking a ``--device`` or ``--threads`` before any work (a clear error instead of a torch
traceback later)."""
from __future__ import annotations

from typing import Optional

__all__ = ["check_device", "check_threads"]


def check_threads(threads: Optional[int], flag: str = "--threads") -> int:
    """``threads`` as an int >= 1, else a one-line ``ValueError`` (before torch sees it)."""
    if threads is None or int(threads) < 1:
        raise ValueError(f"{flag} must be >= 1, got {threads}")
    return int(threads)


def check_device(spec: str, what: str = "--device") -> str:
    """Return ``spec`` if torch can run on it here; else raise a one-line ``ValueError``.

    ``what`` names the setting in the messages (``--device``, ``train.device``). Accepts ``cpu``, ``cuda``/``cuda:N`` (needs a visible CUDA GPU, N below the GPU count) and
    ``mps`` (Apple GPUs). Any other device type is refused.
    """
    import torch

    try:
        dev = torch.device(str(spec))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what} {spec!r} is not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return str(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{what} {spec}: {build} (torch {torch.__version__}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{what} {spec}: only {n} CUDA GPU(s) are visible (cuda:0..cuda:{n - 1})")
        return str(spec)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{what} {spec}: no Apple MPS device is available; use --device cpu")
        return str(spec)
    raise ValueError(f"{what} {spec}: device type {dev.type!r} is not supported (use cpu or cuda)")
