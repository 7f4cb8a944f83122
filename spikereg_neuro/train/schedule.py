"""The learning-rate schedule shared by the SpikeReg trainer and the VoxelMorph baseline.

Config keys (``train`` section): ``lr`` (the base rate), ``lr_schedule`` (``"cosine"`` or
``"constant"``), ``epochs`` x ``steps_per_epoch`` (the planned number of optimiser steps: where
the cosine reaches 0). The rate is a closed form of the global step, so a resumed run needs only
the step and the planned end (:func:`resumed_total`) to continue the same curve; no warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable

__all__ = ["cosine_lr", "LRSchedule", "resumed_total"]


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``total``; stays at 0 past the end (no restart)."""
    if total <= 0:
        return base
    s = min(max(int(step), 0), int(total))
    return 0.5 * base * (1.0 + math.cos(math.pi * s / total))


def resumed_total(global_step: int, epoch: int, epochs: int, steps_per_epoch: int) -> int:
    """The schedule's end for a run resumed at ``global_step`` (after ``epoch`` epochs).

    The remaining epochs of the plan (``epochs``) are added to the steps already done: with the
    checkpoint's own config this is the original end, a longer plan moves the end further.
    """
    return int(global_step) + max(int(epochs) - int(epoch), 0) * int(steps_per_epoch)


@dataclass
class LRSchedule:
    """``lr_schedule`` of base rate ``base_lr`` ending at ``total_steps`` (0-based global steps)."""

    kind: str
    base_lr: float
    total_steps: int

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "constant"):
            raise ValueError(f"train.lr_schedule must be 'cosine' or 'constant', got {self.kind!r}")
        self.base_lr = float(self.base_lr)
        self.total_steps = int(self.total_steps)

    @classmethod
    def from_train(cls, tc: Any, total_steps: int | None = None) -> "LRSchedule":
        """The schedule of a ``TrainConfig`` (end: ``epochs x steps_per_epoch`` unless given)."""
        total = tc.epochs * tc.steps_per_epoch if total_steps is None else total_steps
        return cls(tc.lr_schedule, tc.lr, total)

    def lr_at(self, step: int) -> float:
        """Learning rate of global step ``step`` (0-based)."""
        if self.kind == "constant":
            return self.base_lr
        return cosine_lr(self.base_lr, step, self.total_steps)

    def apply(self, param_groups: Iterable[Dict[str, Any]], step: int) -> float:
        """Set every parameter group's ``lr`` to the rate of ``step`` (times the group's
        ``lr_scale``, 1 when absent); returns the rate."""
        lr = self.lr_at(step)
        for group in param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state(self, step: int) -> Dict[str, Any]:
        """What checkpoints record as ``scheduler`` (plain numbers and strings)."""
        return {"kind": self.kind, "step": int(step), "total_steps": self.total_steps, "base_lr": self.base_lr}
