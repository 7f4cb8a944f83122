"""``spikereg-neuro register FIXED MOVING``: register two NIfTI volumes, write warped + field."""
from __future__ import annotations

import argparse
import time

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
    m, m_aff, m_hdr = load_volume(args.moving)
    check_pair((f, f_aff), (m, m_aff))
    labels = None
    if args.moving_labels:
        labels, l_aff, _ = load_labels(args.moving_labels)
        check_pair((m, m_aff), (labels, l_aff))
    reg = SpikeRegInference(args.model, device=args.device, progress=True)
    t0 = time.time()
    field = reg.register(f, m)
    secs = time.time() - t0
    save_volume(args.out_warped, reg.apply_deformation(m, field), f_aff, header=f_hdr)
    if args.out_field:
        save_field(args.out_field, field, f_aff)
    if labels is not None:
        wl = reg.apply_deformation(labels, field, labels=True)
        save_volume(args.out_warped_labels, wl.astype(np.int16), f_aff, dtype=np.int16)
    mag = np.linalg.norm(field, axis=0)
    print(f"registered {args.moving} -> {args.fixed} in {secs:.1f} s "
          f"(mean |u| {mag.mean():.2f} vox, max {mag.max():.2f} vox); wrote {args.out_warped}")
    return 0
