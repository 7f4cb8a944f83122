"""``spikereg-neuro register FIXED MOVING``: register any two 3D NIfTI scans (world space, optional
affine stage), write the warped image, labels and field on the fixed file's grid (docs/register.md)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register", help="register any two 3D NIfTI scans with a SpikeReg model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Register MOVING onto FIXED (3D NIfTI, any orientation, shape and voxel size).\n"
                    "Both are resampled in world space (their affines) onto a working grid at the\n"
                    "model's training spacing that covers FIXED's field of view; with --init affine an\n"
                    "ANTs affine stage runs first. The outputs lie on FIXED's own grid (shape, affine,\n"
                    "orientation, header); the moving image is resampled once, through the whole\n"
                    "transform. A pair that shares one grid at the model's spacing is not resampled.\n"
                    "Without --model the shipped default model is used. Details: docs/register.md.")
    p.add_argument("fixed", metavar="FIXED")
    p.add_argument("moving", metavar="MOVING")
    p.add_argument("--out-warped", required=True, help="warped moving image on FIXED's grid (.nii/.nii.gz)")
    p.add_argument("--out-field", help="the whole transform as a displacement field on FIXED's grid (see --field-format)")
    p.add_argument("--field-format", choices=("voxel", "itk"), default="voxel",
                   help="voxel (default): displacement in voxels of FIXED's grid, channel k along its "
                        "array axis k, pull, (X,Y,Z,1,3) vector NIfTI (Learn2Reg style; with a pair on one "
                        "grid it applies to the MOVING array; when the grids differ it applies to MOVING "
                        "resampled onto FIXED's grid in world space, e.g. nibabel.processing."
                        "resample_from_to(moving, fixed)). itk: ITK/ANTs displacement field, mm in LPS "
                        "physical space, vector intent, (X,Y,Z,1,3): `ants.apply_transforms(fixed, moving, "
                        "[FIELD])` or `antsApplyTransforms -t FIELD` applies it to the MOVING file as is. "
                        "Both include the affine stage.")
    p.add_argument("--init", choices=("none", "affine"), default="none",
                   help="affine: ANTs affine pre-alignment (antspyx, Mattes MI, seeded) composed into the "
                        "result (default none)")
    p.add_argument("--working-grid", choices=("model", "fixed"), default="model",
                   help="model (default): register at the model's training spacing (recorded in the "
                        "checkpoint); fixed: on FIXED's own voxel grid (reoriented to RAS), whatever its spacing")
    p.add_argument("--moving-labels", help="label map of the moving image (any grid), warped nearest-neighbour")
    p.add_argument("--out-warped-labels", help="where to write the warped labels (their integer type is kept)")
    p.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                   help="register both ways and take the inverse-consistent mean (twice the network calls); "
                        "default: the checkpoint's inference.symmetric, off for the shipped model")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def _warn(message: str) -> None:
    print(f"spikereg-neuro register: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import DEFAULT_MODEL, read_checkpoint
    from ..inference import SpikeRegInference
    from ..io.nifti import load_geometry, load_labels, load_volume, save_field, save_itk_field, save_volume
    from ..io.paths import NIFTI_SUFFIXES, check_outputs
    from ..registration import world as W

    if bool(args.moving_labels) != bool(args.out_warped_labels):
        raise ValueError("--moving-labels and --out-warped-labels go together")
    model_path = Path(args.model) if args.model else DEFAULT_MODEL
    check_outputs(
        inputs={"FIXED": args.fixed, "MOVING": args.moving, "--moving-labels": args.moving_labels,
                "--model": model_path},
        outputs={"--out-warped": args.out_warped, "--out-field": args.out_field,
                 "--out-warped-labels": args.out_warped_labels},
        suffixes={k: NIFTI_SUFFIXES for k in ("--out-warped", "--out-field", "--out-warped-labels")})
    t_start = time.time()
    f_shape, f_aff, f_hdr = load_geometry(args.fixed)            # the fixed file's own grid
    f, fc_aff, _ = load_volume(args.fixed)                       # canonical (RAS) voxel order
    check_not_constant(f, "FIXED", args.fixed)
    m, mc_aff, _ = load_volume(args.moving)
    check_not_constant(m, "MOVING", args.moving)
    labels = l_aff = None
    if args.moving_labels:
        labels, l_aff, l_hdr = load_labels(args.moving_labels)
    fixed_file = W.Grid(f_shape, f_aff)
    fixed_c, moving_c = W.Grid(f.shape, fc_aff), W.Grid(m.shape, mc_aff)
    labels_c = W.Grid(labels.shape, l_aff) if labels is not None else None

    ckpt = read_checkpoint(model_path)
    model_mm, mm_source = W.model_spacing(ckpt)
    del ckpt
    for name, grid in (("FIXED", fixed_c), ("MOVING", moving_c)):
        then = None if args.working_grid == "model" else (
            "the model runs at this spacing (--working-grid fixed), which it was not trained at"
            if name == "FIXED" else "resampled onto FIXED's grid (--working-grid fixed)")
        msg = W.check_spacing(name, grid.spacing, model_mm, then)
        if msg:
            _warn(msg)
    if labels_c is not None and not labels_c.matches(moving_c):
        _warn(f"--moving-labels is on another grid ({labels_c.describe()}) than MOVING "
              f"({moving_c.describe()}): both are sampled in world space")
    work = fixed_c if args.working_grid == "fixed" else W.working_grid(fixed_c, model_mm)
    W.check_working_grid(work)
    resampled_fixed = not work.matches(fixed_c)
    print(f"model spacing {model_mm:g} mm (from {mm_source}); working grid {work.describe()}"
          + (" (FIXED resampled)" if resampled_fixed else " (FIXED's own grid)"))
    f_w = W.resample(f, fc_aff, work) if resampled_fixed else f

    threads = max(1, torch.get_num_threads())
    world_map = None
    t_aff = 0.0
    if args.init == "affine":
        t0 = time.time()
        ants_mm = W.affine_spacing(fixed_c, model_mm)
        ants_fixed, ants_moving = W.working_grid(fixed_c, ants_mm), W.working_grid(moving_c, ants_mm)
        fa = (f_w if ants_fixed.matches(work) else f if ants_fixed.matches(fixed_c)
              else W.resample(f, fc_aff, ants_fixed))
        ma = W.resample(m, mc_aff, ants_moving, cval=float(m.min()))
        world_map = W.ants_affine(fa, ants_fixed.affine, ma, ants_moving.affine, seed=1, threads=threads)
        t_aff = time.time() - t0
        lin = world_map[:3, :3]
        angle = float(np.degrees(np.arccos(np.clip((np.trace(_rotation_part(lin)) - 1) / 2, -1, 1))))
        centre = work.affine @ np.r_[(np.asarray(work.shape) - 1) / 2.0, 1.0]
        shift = float(np.linalg.norm((world_map @ centre - centre)[:3]))
        print(f"affine pre-alignment (ANTs) in {t_aff:.1f} s: rotation {angle:.1f} deg, "
              f"FIXED's centre moved {shift:.1f} mm, scales "
              f"{'x'.join(f'{v:.3f}' for v in np.linalg.svd(lin, compute_uv=False))}")
    overlap = W.overlap_fraction(work, moving_c, world_map)
    if overlap == 0.0:
        raise ValueError("FIXED and MOVING do not overlap in world space (their affines place them apart)"
                         + ("; try --init affine" if world_map is None else ""))
    if overlap < 0.5:
        _warn(f"only {overlap:.0%} of FIXED's field of view lies inside MOVING's"
              + (" (try --init affine)" if world_map is None else " after the affine stage"))

    if labels_c is not None and not labels_c.matches(moving_c):
        l_overlap = W.overlap_fraction(work, labels_c, world_map)
        if l_overlap == 0.0:
            raise ValueError(f"--moving-labels {args.moving_labels} does not overlap FIXED in world space "
                             "(its affine places it apart from the registered MOVING): the warped labels "
                             "would be all 0")
        if l_overlap < 0.5:
            _warn(f"only {l_overlap:.0%} of FIXED's field of view lies inside --moving-labels' grid")
    same_grid = world_map is None and moving_c.matches(fixed_c) and not resampled_fixed
    m_w = m if same_grid else W.resample(m, mc_aff, work, world_map, cval=float(m.min()))

    reg = SpikeRegInference(args.model, device=args.device, progress=not getattr(args, "quiet", False),
                            symmetric=getattr(args, "symmetric", None))
    t0 = time.time()
    field = reg.register(f_w, m_w)
    secs = time.time() - t0
    check_field(field, work.shape, args.model or "the shipped model")

    t0 = time.time()
    want_voxel = bool(args.out_field) and args.field_format == "voxel"
    want_itk = bool(args.out_field) and args.field_format == "itk"
    wl = out_field = None
    fast = same_grid and (labels_c is None or labels_c.matches(fixed_c))
    if fast:  # today's path: no resampling at all, exact reorientation to the file's axes
        warped = W.from_canonical(reg.apply_deformation(m, field), fixed_c, fixed_file)
        if labels is not None:
            wl = W.from_canonical(warp_labels_exact(reg, labels, field), fixed_c, fixed_file)
        if want_voxel:
            out_field = W.canonical_field_to_file(field, fixed_c, fixed_file)
        elif want_itk:
            out_field = W.compose_to_fixed(fixed_file, work, field, None, None, itk_field=True)["itk"]
    else:
        lab = None
        if labels is not None:
            values, index = np.unique(np.concatenate([[0], labels.ravel()]), return_inverse=True)
            if len(values) >= 2 ** 31:
                raise ValueError(f"{len(values)} distinct labels: too many to warp")
            lab = (index[1:].reshape(labels.shape).astype(np.int32), l_aff)
        res = W.compose_to_fixed(fixed_file, work, field, world_map, (m, mc_aff), float(m.min()),
                                 labels=lab, voxel_field=want_voxel, itk_field=want_itk)
        warped = res["warped"]
        if labels is not None:
            wl = values[res["warped_labels"]]
        out_field = res.get("voxel", res.get("itk"))
    t_out = time.time() - t0

    writes = [(args.out_warped, lambda: save_volume(args.out_warped, warped, f_aff, header=f_hdr))]
    if args.out_field:
        writes.append((args.out_field, lambda: (save_field if want_voxel else save_itk_field)(
            args.out_field, out_field, f_aff)))
    if wl is not None:
        dt = label_dtype(wl, l_hdr.get_data_dtype())
        writes.append((args.out_warped_labels,
                       lambda: save_volume(args.out_warped_labels, wl.astype(dt), f_aff, dtype=dt)))
    _write_all(writes)

    mag = np.linalg.norm(field * work.spacing.reshape(3, 1, 1, 1), axis=0)
    print(f"registered {args.moving} -> {args.fixed} in {secs:.1f} s (network on {work.describe()}; "
          f"mean |u| {mag.mean():.2f} mm, max {mag.max():.2f} mm{' after the affine stage' if world_map is not None else ''}); "
          f"outputs on FIXED's grid {fixed_file.describe()} in {t_out:.1f} s; total {time.time() - t_start:.1f} s; "
          f"wrote {args.out_warped}" + (f", {args.out_field} ({args.field_format})" if args.out_field else "")
          + (f", {args.out_warped_labels}" if wl is not None else ""))
    return 0


def _rotation_part(lin: np.ndarray) -> np.ndarray:
    """The rotation of a 3 x 3 matrix (polar decomposition)."""
    u, _, vt = np.linalg.svd(lin)
    r = u @ vt
    return r if np.linalg.det(r) > 0 else u @ np.diag([1.0, 1.0, -1.0]) @ vt


def _write_all(writes: List[Tuple[str, Callable[[], object]]]) -> None:
    """Run the (atomic) ``(path, write)`` pairs; if one fails, remove the outputs already
    written by this run, so a failed run leaves none of its outputs."""
    done: List[Path] = []
    try:
        for path, write in writes:
            write()
            done.append(Path(path))
    except BaseException:
        for path in done:
            try:
                path.unlink()
            except OSError:
                pass
        raise


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
