"""``spikereg-neuro register FIXED MOVING``: register two NIfTI volumes, write warped + field."""
from __future__ import annotations

import argparse
import time
from typing import Tuple

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register a NIfTI pair with a SpikeReg model",
                       description="Register MOVING onto FIXED (NIfTI). Outputs keep the fixed image's "
                                   "affine and header. Without --model the shipped default model is used.")
    p.add_argument("fixed")
    p.add_argument("moving")
    p.add_argument("--out-warped", required=True, help="warped moving image (.nii.gz)")
    p.add_argument("--out-field", help="displacement field in voxels, (D,H,W,1,3) vector NIfTI")
    p.add_argument("--moving-labels", help="label map of the moving image, warped nearest-neighbour")
    p.add_argument("--out-warped-labels", help="where to write the warped labels")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import DEFAULT_MODEL
    from ..inference import SpikeRegInference
    from ..io.paths import NIFTI_SUFFIXES, check_outputs
    from ..io.nifti import check_pair, load_labels, load_volume, save_field, save_volume

    if bool(args.moving_labels) != bool(args.out_warped_labels):
        raise ValueError("--moving-labels and --out-warped-labels go together")
    check_outputs(
        inputs={"FIXED": args.fixed, "MOVING": args.moving, "--moving-labels": args.moving_labels,
                "--model": args.model if args.model else DEFAULT_MODEL},
        outputs={"--out-warped": args.out_warped, "--out-field": args.out_field,
                 "--out-warped-labels": args.out_warped_labels},
        suffixes={k: NIFTI_SUFFIXES for k in ("--out-warped", "--out-field", "--out-warped-labels")})
    f, f_aff, f_hdr = load_volume(args.fixed)
    check_not_constant(f, "FIXED", args.fixed)
    m, m_aff, m_hdr = load_volume(args.moving)
    check_not_constant(m, "MOVING", args.moving)
    check_pair((f, f_aff), (m, m_aff))
    labels = None
    if args.moving_labels:
        labels, l_aff, l_hdr = load_labels(args.moving_labels)
        check_pair((m, m_aff), (labels, l_aff))
    reg = SpikeRegInference(args.model, device=args.device, progress=True)
    t0 = time.time()
    field = reg.register(f, m)
    secs = time.time() - t0
    check_field(field, f.shape, args.model or "the shipped model")
    warped = reg.apply_deformation(m, field)
    wl = warp_labels_exact(reg, labels, field) if labels is not None else None
    save_volume(args.out_warped, warped, f_aff, header=f_hdr)
    if args.out_field:
        save_field(args.out_field, field, f_aff)
    if wl is not None:
        dt = label_dtype(wl, l_hdr.get_data_dtype())
        save_volume(args.out_warped_labels, wl.astype(dt), f_aff, dtype=dt)
    mag = np.linalg.norm(field, axis=0)
    print(f"registered {args.moving} -> {args.fixed} in {secs:.1f} s "
          f"(mean |u| {mag.mean():.2f} vox, max {mag.max():.2f} vox); wrote {args.out_warped}")
    return 0


def check_not_constant(volume: np.ndarray, name: str, path: str) -> None:
    """A constant (e.g. all-zero) image has nothing to register: one-line ``ValueError``."""
    if volume.size == 0 or float(volume.max()) == float(volume.min()):
        v = float(volume.flat[0]) if volume.size else float("nan")
        raise ValueError(f"{name} {path} is constant (every voxel is {v:g}): nothing to register")


def check_field(field: np.ndarray, shape: Tuple[int, ...], model: str) -> None:
    """Refuse a non-finite field or one that moves voxels farther than the volume is large."""
    if not np.all(np.isfinite(field)):
        raise ValueError(f"{model} produced a non-finite displacement field (NaN or inf); "
                         f"is the checkpoint damaged?")
    mag = float(np.abs(field).max()) if field.size else 0.0
    if mag > max(shape):
        raise ValueError(f"{model} produced an absurd displacement field (|u| up to {mag:.3g} voxels "
                         f"for a {'x'.join(map(str, shape))} volume); is the checkpoint damaged?")


def warp_labels_exact(reg, labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Nearest-neighbour warp of an int64 label map that keeps every label value exactly
    (the warp runs on indices of the distinct labels, which float32 represents exactly)."""
    values, index = np.unique(labels, return_inverse=True)
    if len(values) >= 2 ** 24:
        raise ValueError(f"{len(values)} distinct labels: too many to warp exactly")
    warped = reg.apply_deformation(index.reshape(labels.shape).astype(np.int32), field, labels=True)
    return values[np.clip(np.asarray(warped, dtype=np.int64), 0, len(values) - 1)]


def label_dtype(labels: np.ndarray, on_disk: np.dtype) -> np.dtype:
    """The input's integer type if the labels fit it, else the smallest of uint8, int16,
    int32, int64 that holds them."""
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    cands = ([np.dtype(on_disk)] if np.dtype(on_disk).kind in "iu" else []) + \
        [np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.int64)]
    for dt in cands:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    raise ValueError(f"labels {lo}..{hi} do not fit int64")
