"""Per-pair evaluation: the metrics every command and benchmark reports, computed one way."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from .registration.metrics import (dice_mean, dice_per_label, folding_percent, hd95_mean,
                                   sdlogj_learn2reg, std_log_jacobian)


def evaluate_registration(fixed_labels: np.ndarray, moving_labels: np.ndarray, warped_labels: np.ndarray,
                          field: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Dice before/after (mean over foreground labels), HD95 in mm, folding %, SDlogJ.

    ``field`` is ``(3, D, H, W)`` in voxels; ``warped_labels`` are the moving labels warped by
    it (nearest neighbour).
    """
    return {
        "dice_before": dice_mean(fixed_labels, moving_labels),
        "dice": dice_mean(fixed_labels, warped_labels),
        "hd95_before": hd95_mean(fixed_labels, moving_labels, spacing=spacing),
        "hd95": hd95_mean(fixed_labels, warped_labels, spacing=spacing),
        "folding_pct": folding_percent(field),
        "sdlogj": std_log_jacobian(field),
        "sdlogj_learn2reg": sdlogj_learn2reg(field),
        "dice_per_label": {int(k): float(v) for k, v in dice_per_label(fixed_labels, warped_labels).items()},
    }


def mean_metrics(records: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """nan-mean of every scalar metric over pair records."""
    keys = [k for k, v in records[0].items() if isinstance(v, (int, float))] if records else []
    return {k: float(np.nanmean([r[k] for r in records])) for k in keys}
