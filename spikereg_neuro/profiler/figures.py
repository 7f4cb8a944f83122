"""PNG figures of the benchmark report (matplotlib, Agg backend; every file written atomically).

* :func:`overlay_figure`: fixed / moving / warped mid slices and the warped-vs-fixed difference
  per method;
* :func:`field_figure`: displacement magnitude and det J of a field;
* :func:`spike_rate_figure`: spikes per neuron per step of every layer;
* :func:`energy_figure`: estimated dynamic energy per layer, split by term.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    from ..io.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _mid(v: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.take(np.asarray(v), np.asarray(v).shape[axis] // 2, axis=axis)


def overlay_figure(path: Path, fixed: np.ndarray, moving: np.ndarray,
                   warped: Mapping[str, np.ndarray], title: str = "") -> Path:
    """Rows: one per method; columns: fixed, moving, warped, |warped - fixed| (middle slice along the first axis),
    with the fixed image's edges drawn over the warped one."""
    plt = _plt()
    n = max(1, len(warped))
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    f, m = _mid(fixed), _mid(moving)
    edges = np.hypot(*np.gradient(f.astype(np.float64)))
    thr = np.percentile(edges, 90) if edges.size else 0.0
    for i, (name, w) in enumerate(warped.items() if warped else [("(none)", moving)]):
        wm = _mid(w)
        cells = [(f, "fixed"), (m, "moving"), (wm, f"warped ({name})"),
                 (np.abs(wm - f), f"|warped - fixed| mean {np.abs(wm - f).mean():.4f}")]
        for j, (img, t) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(img.T, cmap="magma" if j == 3 else "gray", origin="lower")
            if j == 2:
                ax.contour((edges > thr).T.astype(float), levels=[0.5], colors="c", linewidths=0.4,
                           origin="lower")
            ax.set_title(t, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def field_figure(path: Path, fields: Mapping[str, np.ndarray], title: str = "") -> Path:
    """Per field: |u| (voxels) and det J on the middle slice along the first axis (det J <= 0 marked)."""
    from ..registration.metrics import jacobian_determinant

    plt = _plt()
    n = max(1, len(fields))
    fig, axes = plt.subplots(n, 2, figsize=(8, 3.2 * n), squeeze=False)
    for i, (name, u) in enumerate(fields.items()):
        u = np.asarray(u, dtype=np.float64)
        mag = np.sqrt((u ** 2).sum(0))
        jac = jacobian_determinant(u, crop=0)
        a = axes[i, 0].imshow(_mid(mag).T, cmap="viridis", origin="lower")
        axes[i, 0].set_title(f"{name}: |u| (vox), max {mag.max():.2f}", fontsize=8)
        fig.colorbar(a, ax=axes[i, 0], fraction=0.046)
        b = axes[i, 1].imshow(_mid(jac).T, cmap="coolwarm", vmin=0.0, vmax=2.0, origin="lower")
        axes[i, 1].set_title(f"{name}: det J (min {jac.min():.2f}, <= 0: {(jac <= 0).mean() * 100:.3f} %)",
                             fontsize=8)
        fig.colorbar(b, ax=axes[i, 1], fraction=0.046)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def spike_rate_figure(path: Path, rates: Mapping[str, Optional[float]], title: str = "") -> Path:
    """Bar chart of spikes per neuron per step, one bar per spiking layer."""
    plt = _plt()
    names = [k for k, v in rates.items() if v is not None]
    vals = [float(rates[k]) for k in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(names, vals, color="tab:blue")
    for x, v in enumerate(vals):
        ax.text(x, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title(title or "spike rate per layer", fontsize=9)
    return _save(fig, path)


def energy_figure(path: Path, per_layer: Mapping[str, Mapping[str, float]],
                  terms: Sequence[str] = ("synaptic_ops", "neuron_updates", "idle_neuron_updates",
                                          "spike_routing"),
                  static_mj: Optional[float] = None, title: str = "") -> Path:
    """Stacked bars of the ESTIMATED dynamic energy per layer (mJ per registration)."""
    plt = _plt()
    names = list(per_layer)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bottom = np.zeros(len(names))
    for t in terms:
        v = np.array([float(per_layer[n].get(t, 0.0)) for n in names])
        ax.bar(names, v, bottom=bottom, label=t.replace("_", " "))
        bottom += v
    ax.set_ylabel("mJ per registration (estimated)")
    extra = f"; static (not per layer) {static_mj:.3g} mJ" if static_mj is not None else ""
    ax.set_title((title or "Loihi 2 dynamic energy per layer (estimated)") + extra, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


__all__ = ["overlay_figure", "field_figure", "spike_rate_figure", "energy_figure"]
