"""The graded input payload: intensities in [0, 1] as the integers sent to the chip.

Written once and free of SLAYER and Lava, so that the model's input encoding
(:mod:`spikereg_neuro.model.encoding`) and the bit-accurate emulator (:mod:`calibration.emulator`)
share it without the emulator loading the model package.
"""
from __future__ import annotations

import torch


def graded_payload(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """``round(clamp(x, 0, 1) * (2**bits - 1))`` as int32: the payload of Loihi 2 graded input
    spikes (the model sees ``payload / (2**bits - 1)``)."""
    return torch.round(x.clamp(0.0, 1.0) * (2 ** bits - 1)).to(torch.int32)


__all__ = ["graded_payload"]
