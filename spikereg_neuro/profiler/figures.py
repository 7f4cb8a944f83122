"""PNG figures of the benchmark report (matplotlib, Agg backend; every file written atomically).

Each figure has a builder that returns the matplotlib figure (``*_fig``, for inspection) and a
writer that saves it as a PNG (``*_figure``):

* :func:`overlay_figure`: one pair: fixed and moving once, then each method's warped image, in
  three orthogonal mid slices with the fixed image's edges drawn over them, and |image - fixed|
  on one shared colour scale;
* :func:`field_figure`: |u| of every field on ONE shared colour scale (one colour bar), det J on
  a fixed 0..2 scale, and a det J histogram of every field;
* :func:`dice_per_label_figure`: Dice per label, methods side by side (box plots with several
  pairs, bars and points with one);
* :func:`energy_breakdown_figure`: gross energy of every row with energy, split into static
  (or idle) and dynamic, and gross / dynamic energy against Dice;
* :func:`spike_rate_figure`: spikes per neuron per step of every layer;
* :func:`energy_figure`: estimated dynamic energy per layer, split by term, with the static
  energy of the whole system as its own bar.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

#: the views of :func:`overlay_figure`: (axis of the slice, name)
VIEWS: Tuple[Tuple[int, str], ...] = ((0, "axis 0"), (1, "axis 1"), (2, "axis 2"))


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


def _wrap(s: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(str(s), width)) or str(s)


# ============================================================================ images
def overlay_fig(fixed: np.ndarray, moving: np.ndarray, warped: Mapping[str, np.ndarray], title: str = ""):
    """Columns: fixed, moving (no registration), then one per method's warped image. Rows: the
    middle slice along each axis (fixed image's edges in cyan over moving and warped images), then
    |image - fixed| along the first axis on one shared colour scale (one colour bar)."""
    plt = _plt()
    cols = [("fixed", np.asarray(fixed)), ("moving (no registration)", np.asarray(moving))]
    cols += [(str(k), np.asarray(v)) for k, v in warped.items()]
    nv = len(VIEWS)
    fig, axes = plt.subplots(nv + 1, len(cols), figsize=(2.3 * len(cols) + 0.8, 2.2 * (nv + 1)), squeeze=False,
                             layout="constrained")
    f = np.asarray(fixed, dtype=np.float64)
    lo, hi = (np.percentile(f, [1, 99.5]) if f.size else (0.0, 1.0))
    diffs = [np.abs(_mid(img, 0).astype(np.float64) - _mid(f, 0)) for _, img in cols[1:]]
    dmax = max([float(d.max()) for d in diffs] + [1e-12])
    for r, (axis, vname) in enumerate(VIEWS):
        fs = _mid(f, axis)
        edges = np.hypot(*np.gradient(fs))
        thr = np.percentile(edges, 90) if edges.size else 0.0
        for c, (name, img) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(_mid(img, axis).T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            if c > 0:
                ax.contour((edges > thr).T.astype(float), levels=[0.5], colors="c", linewidths=0.4, origin="lower")
            if r == 0:
                ax.set_title(_wrap(name, 24), fontsize=8)
            if c == 0:
                ax.text(-0.08, 0.5, vname, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=8)
            ax.axis("off")
    axes[nv, 0].axis("off")
    axes[nv, 0].text(0.5, 0.5, "|image - fixed|\n(axis 0, shared\ncolour scale)", ha="center", va="center",
                     fontsize=8, transform=axes[nv, 0].transAxes)
    im = None
    for c, d in enumerate(diffs, start=1):
        ax = axes[nv, c]
        im = ax.imshow(d.T, cmap="magma", vmin=0.0, vmax=dmax, origin="lower")
        ax.set_title(f"mean {d.mean():.4f}", fontsize=8)
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=list(axes[nv, 1:]), shrink=0.9, label="|image - fixed|")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def overlay_figure(path: Path, fixed: np.ndarray, moving: np.ndarray,
                   warped: Mapping[str, np.ndarray], title: str = "") -> Path:
    """Write :func:`overlay_fig` as a PNG; returns the path."""
    return _save(overlay_fig(fixed, moving, warped, title), path)


def field_fig(fields: Mapping[str, np.ndarray], title: str = ""):
    """One row per field (the identity's zero field included when given): |u| (voxels) on ONE
    colour scale shared by every field (0 .. the largest |u| of any of them, one colour bar) and
    det J on 0..2 (one colour bar; det J <= 0 counted in the title), middle slice along the first
    axis; the last row: the det J histogram of every field."""
    from ..registration.metrics import jacobian_determinant

    plt = _plt()
    items = [(str(k), np.asarray(u, dtype=np.float64)) for k, u in fields.items()]
    n = max(1, len(items))
    fig, axes = plt.subplots(n + 1, 2, figsize=(8, 2.8 * n + 2.6), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1.0] * n + [1.1]})
    mags = [np.sqrt((u ** 2).sum(0)) for _, u in items]
    umax = max([float(m.max()) for m in mags] + [1e-6])
    jacs = [jacobian_determinant(u, crop=0) for _, u in items]
    ia = ib = None
    for i, ((name, _), mag, jac) in enumerate(zip(items, mags, jacs)):
        ia = axes[i, 0].imshow(_mid(mag).T, cmap="viridis", vmin=0.0, vmax=umax, origin="lower")
        axes[i, 0].set_title(f"{name}: |u| max {mag.max():.2f} vox", fontsize=8)
        ib = axes[i, 1].imshow(_mid(jac).T, cmap="coolwarm", vmin=0.0, vmax=2.0, origin="lower")
        axes[i, 1].set_title(f"{name}: det J min {jac.min():.2f}, <= 0: {(jac <= 0).mean() * 100:.3f} %",
                             fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if ia is not None:
        fig.colorbar(ia, ax=list(axes[:n, 0]), shrink=0.6, label="|u| (voxels), shared scale")
        fig.colorbar(ib, ax=list(axes[:n, 1]), shrink=0.6, label="det J")
    gs = axes[n, 0].get_gridspec()
    for ax in axes[n]:
        ax.remove()
    hax = fig.add_subplot(gs[n, :])
    lo = min([float(j.min()) for j in jacs] + [0.0])
    hi = max([float(j.max()) for j in jacs] + [2.0])
    bins = np.linspace(lo, hi, 81)
    for (name, _), jac in zip(items, jacs):
        hax.hist(jac.ravel(), bins=bins, histtype="step", label=name)
    hax.axvline(0.0, color="k", lw=0.6, ls="--")
    hax.set_yscale("log")
    hax.set_xlabel("det J (whole volume)")
    hax.set_ylabel("voxels")
    hax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def field_figure(path: Path, fields: Mapping[str, np.ndarray], title: str = "") -> Path:
    """Write :func:`field_fig` as a PNG; returns the path."""
    return _save(field_fig(fields, title), path)


# ============================================================================ plots
def dice_per_label_fig(per_label: Mapping[str, Mapping[str, Sequence[float]]], title: str = ""):
    """Dice per label (x, named), methods side by side: box plots of the per-pair values when any
    label has two or more pairs, otherwise bars with the values as points. ``per_label``:
    ``{method: {label name: [Dice per pair]}}``."""
    plt = _plt()
    methods = list(per_label)
    labels = list(dict.fromkeys(l for m in methods for l in per_label[m]))
    fig, ax = plt.subplots(figsize=(min(14.0, max(7.0, 0.1 * len(labels) * max(1, len(methods)) + 2)), 4.2))
    width = 0.8 / max(1, len(methods))
    several = any(len([v for v in per_label[m].get(l, []) if v is not None]) > 1 for m in methods for l in labels)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, m in enumerate(methods):
        xs = np.arange(len(labels)) + (k - (len(methods) - 1) / 2) * width
        vals = [[float(v) for v in per_label[m].get(l, []) if v is not None and np.isfinite(v)] for l in labels]
        col = colours[k % len(colours)]
        if several:
            keep = [(x, v) for x, v in zip(xs, vals) if v]
            if keep:
                bp = ax.boxplot([v for _, v in keep], positions=[x for x, _ in keep], widths=width * 0.9,
                                patch_artist=True, manage_ticks=False, showfliers=True)
                for b in bp["boxes"]:
                    b.set(facecolor=col, alpha=0.6)
            ax.plot([], [], color=col, lw=6, alpha=0.6, label=m)
        else:
            means = [np.mean(v) if v else np.nan for v in vals]
            ax.bar(xs, means, width=width, color=col, label=m)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=7, ncol=max(1, len(methods)), loc="upper center", frameon=False)
    ax.set_title(title or "Dice per label", fontsize=9)
    return fig


def dice_per_label_figure(path: Path, per_label: Mapping[str, Mapping[str, Sequence[float]]],
                          title: str = "") -> Path:
    """Write :func:`dice_per_label_fig` as a PNG; returns the path."""
    return _save(dice_per_label_fig(per_label, title), path)


def energy_breakdown_fig(rows: Sequence[Mapping[str, Any]], identity_dice: Optional[float] = None, title: str = ""):
    """Left: every row with an energy, its gross energy as static (or idle; gross - dynamic) plus
    dynamic, labelled estimated / measured. Right: gross (filled) and dynamic (open) energy against
    Dice, joined by a line (its length is the static part), the identity's Dice dashed.
    ``rows``: benchmark.json rows (``method``, ``platform``, ``energy_mj``, ``dynamic_mj``,
    ``energy_source``, ``dice``)."""
    plt = _plt()
    rs = [r for r in rows if r.get("energy_mj") is not None]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.55 * max(3, len(rs)) + 1.8),
                               gridspec_kw={"width_ratios": [1.4, 1.0]})
    names = [_wrap(f"{r['method']}, {r['platform']} [{r.get('energy_source')}]", 48) for r in rs]
    gross = np.array([float(r["energy_mj"]) for r in rs])
    dyn = np.array([float(r["dynamic_mj"]) if r.get("dynamic_mj") is not None else np.nan for r in rs])
    known = np.isfinite(dyn)
    static = np.where(known, gross - np.nan_to_num(dyn), np.nan)
    y = np.arange(len(rs))[::-1]
    a.barh(y[known], static[known], color="0.6", label="static / idle")
    a.barh(y[known], dyn[known], left=static[known], color="tab:orange", label="dynamic")
    if (~known).any():
        a.barh(y[~known], gross[~known], color="tab:blue", hatch="//", label="gross (not split)")
    for yy, g in zip(y, gross):
        a.text(g, yy, f" {g:.3g}", va="center", fontsize=7)
    a.set_yticks(y)
    a.set_yticklabels(names, fontsize=7)
    a.set_xlabel("mJ per registration (gross)")
    a.legend(fontsize=7, loc="lower right")
    a.set_title("energy: static vs dynamic", fontsize=9)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(rs):
        d = r.get("dice")
        if d is None:
            continue
        col = colours[k % len(colours)]
        b.plot([gross[k]], [d], "o", color=col, label=_wrap(f"{r['method']}, {r['platform']}", 40))
        if known[k]:
            b.plot([dyn[k], gross[k]], [d, d], "-", color=col, lw=1)
            b.plot([dyn[k]], [d], "o", mfc="none", color=col)
    if identity_dice is not None:
        b.axhline(identity_dice, color="k", ls="--", lw=0.8, label="identity (no registration)")
    pos = [v for v in np.concatenate([gross, dyn[known]]) if v > 0]
    if pos and max(pos) / min(pos) > 30:
        b.set_xscale("log")
    b.set_xlabel("mJ per registration (filled: gross, open: dynamic)")
    b.set_ylabel("Dice")
    b.legend(fontsize=6, loc="best")
    b.set_title("energy vs Dice", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def energy_breakdown_figure(path: Path, rows: Sequence[Mapping[str, Any]], identity_dice: Optional[float] = None,
                            title: str = "") -> Path:
    """Write :func:`energy_breakdown_fig` as a PNG; returns the path."""
    return _save(energy_breakdown_fig(rows, identity_dice, title), path)


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
    """Stacked bars of the ESTIMATED dynamic energy per layer (mJ per registration); the static
    energy of the whole system (not per layer) as its own grey bar when given."""
    plt = _plt()
    names = list(per_layer)
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    bottom = np.zeros(len(names))
    for t in terms:
        v = np.array([float(per_layer[n].get(t, 0.0)) for n in names])
        ax.bar(names, v, bottom=bottom, label=t.replace("_", " "))
        bottom += v
    if static_mj is not None:
        ax.bar(["static\n(all chips)"], [float(static_mj)], color="0.6", label="static (whole system)")
        ax.text(len(names), float(static_mj), f"{static_mj:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("mJ per registration (estimated)")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title or "Loihi 2 energy per layer (estimated): dynamic per layer, static of the system", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


__all__ = ["overlay_fig", "overlay_figure", "field_fig", "field_figure", "dice_per_label_fig",
           "dice_per_label_figure", "energy_breakdown_fig", "energy_breakdown_figure", "spike_rate_figure",
           "energy_figure", "VIEWS"]
