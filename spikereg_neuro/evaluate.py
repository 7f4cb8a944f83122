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
    return {k: _nanmean([r[k] for r in records]) for k in keys}


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN (without numpy's empty-slice warning) when there
    are none, e.g. Dice of pairs without labels."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def paired_gain(after: Sequence[float], before: Sequence[float], confidence: float = 0.95,
                higher_is_better: bool = True) -> Dict[str, float]:
    """Paired comparison of a metric after vs before registration, over the same pairs.

    Returns ``mean`` (of ``after - before``), a two-sided Student-t confidence interval
    ``ci_low``/``ci_high`` at ``confidence``, ``n`` (pairs with both values finite),
    ``n_better`` (pairs that improved: ``after > before``, or ``<`` when lower is better) and
    ``p_wilcoxon``: the one-sided Wilcoxon signed-rank p-value for "improves" (exact for small
    ``n``; 5 pairs that all improve give 1/32). Fewer than 2 pairs give NaN interval and p.
    """
    from scipy import stats

    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"after and before must be 1D and of equal length, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = int(d.size)
    nan = float("nan")
    out = {"mean": float(d.mean()) if n else nan, "ci_low": nan, "ci_high": nan, "n": n,
           "n_better": int((d > 0).sum() if higher_is_better else (d < 0).sum()), "p_wilcoxon": nan,
           "confidence": float(confidence)}
    if n >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
        if np.any(d != 0):
            alt = "greater" if higher_is_better else "less"
            out["p_wilcoxon"] = float(stats.wilcoxon(d, alternative=alt).pvalue)
    return out
