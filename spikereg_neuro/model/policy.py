"""Iterative residual registration policy, coarse to fine, with true field composition."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..registration.transform import compose, integrate_velocity, resize_field, warp

#: ``predict(fixed, moving) -> residual field`` at the resolution it is given
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool a volume by an integer factor (identity for 1)."""
    return x if factor == 1 else F.avg_pool3d(x, factor)


def residual_registration(
    predict: Predictor,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    scales: Sequence[int],
    init_field: Optional[torch.Tensor] = None,
    integration_steps: int = 0,
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run the residual policy.

    For each iteration ``k`` with downsampling factor ``s = scales[k]``: warp ``moving`` with the
    current field, downsample fixed and warped by ``s``, predict a residual there (with
    ``integration_steps > 0`` the prediction is a velocity field and the residual its
    exponential, :func:`integrate_velocity`, taken at the prediction's resolution), bring it back
    to full resolution (:func:`resize_field`) and compose it with the current field
    (``u <- u o r``, i.e. ``compose(u, r)``). Returns the final field and the field after each
    iteration.
    """
    n, _, *size = fixed.shape
    u = init_field if init_field is not None else fixed.new_zeros(n, 3, *size)
    history = []
    for s in scales:
        warped = warp(moving, u) if history or init_field is not None else moving
        r = predict(downsample(fixed, s), downsample(warped, s))
        if integration_steps:
            r = integrate_velocity(r, integration_steps)
        if s != 1:
            r = resize_field(r, size)
        u = compose(u, r)
        history.append(u)
    return u, history


class ResidualPolicy(torch.nn.Module):
    """A network plus the iterative residual policy of its config (``net.cfg.scales``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def scales(self) -> Tuple[int, ...]:
        return tuple(self.net.cfg.scales)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor,
                predict: Optional[Predictor] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return residual_registration(predict or self.net, fixed, moving, self.scales,
                                     integration_steps=self.net.cfg.integration_steps)
