"""Input encoding: intensities to Loihi 2 graded spikes.

Scheme: the fixed and moving intensities (in [0, 1]) are quantized to ``bits`` bits and sent,
at every step of the first time window, as graded spikes whose payload is that integer
(``round(x * (2**bits - 1))``; Loihi 2 graded spikes carry up to 24 bits). The first conv layer is
the only layer with analog (multi-bit) input from outside the network: its operations are counted
as MACs; later layers receive spikes (binary, or graded spikes carrying the voltage with
``neuron.graded_spike``; their ops are counted per event). The network sees
``payload / (2**bits - 1)``.
"""
from __future__ import annotations

import torch

from ..payload import graded_payload  # noqa: F401  (the integer payloads of encode_graded)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D401
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def encode_graded(x: torch.Tensor, steps: int, bits: int = 8) -> torch.Tensor:
    """``(N, C, D, H, W)`` in [0, 1] -> ``(N, C, D, H, W, steps)`` quantized graded input."""
    if not torch.isfinite(x).all():
        raise ValueError("input volume contains NaN or inf")
    levels = float(2 ** bits - 1)
    q = _RoundSTE.apply(x.clamp(0.0, 1.0) * levels) / levels
    return q.unsqueeze(-1).expand(*q.shape, steps)
