"""Measure ``register`` on pairs that do not share a grid (issue 17; docs/register.md).

Case ``demo``: held-out demo pair 0 (``spikereg-neuro data export-demo``; 2.5 mm RAS, 18 labels).
Its moving image (and labels) is rotated about 10 degrees, shifted and resampled onto a 1.5 mm
LPS grid of another shape. Case ``mni``: the MNI ICBM152 2009a T1 at 1 mm (nilearn's wheel) as
fixed, a rotated, shifted copy on a 1.5 mm LPS grid as moving; labels GM / WM (probability > 0.5).

For each case: NCC (inside the fixed brain mask) and mean Dice before registration (the moving
file resampled onto the fixed grid by its affine), after ``register`` without and with
``--init affine``, and the affine stage alone; seconds of the in-process ``register`` call.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_register_world.py --out out/register_world
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from spikereg_neuro.cli import main  # noqa: E402
from spikereg_neuro.registration import world as W  # noqa: E402
from spikereg_neuro.registration.metrics import dice_mean  # noqa: E402


def rigid(deg, axis_deg, shift) -> np.ndarray:
    """4 x 4 rotation by ``deg`` about the unit axis ``axis_deg`` plus ``shift`` (mm)."""
    a = np.asarray(axis_deg, dtype=np.float64)
    a /= np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    m[:3, 3] = shift
    return m


def lps_grid(src: W.Grid, spacing: float, world_map: np.ndarray, margin_mm: float) -> W.Grid:
    """An LPS grid at ``spacing`` covering ``src``'s field of view moved by ``inv(world_map)``
    (+ margin), so the moved anatomy lies inside it; another shape than ``src``."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in src.shape], indexing="ij")).reshape(3, -1)
    pts = src.affine[:3, :3] @ corners + src.affine[:3, 3:]
    inv = np.linalg.inv(world_map)
    pts = inv[:3, :3] @ pts + inv[:3, 3:]
    lo, hi = pts.min(axis=1) - margin_mm, pts.max(axis=1) + margin_mm
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
    aff = np.diag([-spacing, -spacing, spacing, 1.0])
    aff[:3, 3] = [hi[0], hi[1], lo[2]]
    return W.Grid(shape, aff)


def save(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def make_case(name: str, out: Path, demo_dir: Path):
    """Write fixed / moving / labels for a case; returns their paths."""
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        f_img = nib.load(str(demo_dir / "pair_000" / "fixed.nii.gz"))
        fl_img = nib.load(str(demo_dir / "pair_000" / "fixed_labels.nii.gz"))
        m_img = nib.load(str(demo_dir / "pair_000" / "moving.nii.gz"))
        ml_img = nib.load(str(demo_dir / "pair_000" / "moving_labels.nii.gz"))
        fixed, flab = f_img.get_fdata(dtype=np.float32), np.asarray(fl_img.dataobj)
        mov, mlab, m_aff = m_img.get_fdata(dtype=np.float32), np.asarray(ml_img.dataobj), m_img.affine
        f_aff = f_img.affine
        s = rigid(10.0, (1, 2, 3), (6.0, -4.0, 5.0))
    else:
        from spikereg_neuro.data.template import _nilearn_data_dir

        root = _nilearn_data_dir()
        t1 = nib.load(str(root / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
        gm = nib.load(str(root / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).get_fdata()
        wm = nib.load(str(root / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).get_fdata()
        fixed, f_aff = t1.get_fdata(dtype=np.float32), t1.affine
        flab = np.where(gm > 0.5, 1, np.where(wm > 0.5, 2, 0)).astype(np.uint8)
        mov, mlab, m_aff = fixed, flab, f_aff
        s = rigid(10.0, (3, 1, 2), (7.0, -5.0, 4.0))
    g = lps_grid(W.Grid(mov.shape, m_aff), 1.5, s, margin_mm=4.0)
    # the new moving file shows at world point z what the old one shows at s z
    mov15 = W.resample(mov, m_aff, g, world_map=s, order=1, cval=float(mov.min()), antialias=False)
    lab15 = W.resample(mlab.astype(np.int32), m_aff, g, world_map=s, order=0, cval=0, antialias=False)
    paths = {"fixed": save(d / "fixed.nii.gz", fixed, f_aff),
             "fixed_labels": save(d / "fixed_labels.nii.gz", flab, f_aff, np.uint8),
             "moving": save(d / "moving_lps15.nii.gz", mov15, g.affine),
             "moving_labels": save(d / "moving_labels_lps15.nii.gz", lab15, g.affine, np.uint8)}
    if name == "demo":
        paths["moving_same_grid"] = demo_dir / "pair_000" / "moving.nii.gz"
        paths["moving_labels_same_grid"] = demo_dir / "pair_000" / "moving_labels.nii.gz"
    print(f"{name}: fixed {W.Grid(fixed.shape, f_aff).describe()} {''.join(nib.aff2axcodes(f_aff))}, "
          f"moving {g.describe()} {''.join(nib.aff2axcodes(g.affine))}, rotation 10 deg, shift {s[:3, 3]} mm")
    return paths


def evaluate(paths, warped_path, wl_path, mask, flab, n_labels):
    fixed = nib.load(str(paths["fixed"])).get_fdata(dtype=np.float32)
    w = nib.load(str(warped_path)).get_fdata(dtype=np.float32)
    wl = np.asarray(nib.load(str(wl_path)).dataobj).astype(np.int64)
    return {"ncc": ncc(fixed, w, mask), "dice": float(dice_mean(flab, wl, labels=list(range(1, n_labels + 1))))}


def run_case(name: str, out: Path, demo_dir: Path) -> dict:
    paths = make_case(name, out, demo_dir)
    d = out / name
    fimg = nib.load(str(paths["fixed"]))
    flab = np.asarray(nib.load(str(paths["fixed_labels"])).dataobj).astype(np.int64)
    mask = flab > 0
    n_labels = int(flab.max())
    rows = {}
    # before: the moving file resampled onto the fixed grid by its affine (world space)
    fgrid = W.Grid(fimg.shape, fimg.affine)
    zero = np.zeros((3, *fimg.shape), np.float32)
    mimg, mlimg = nib.load(str(paths["moving"])), nib.load(str(paths["moving_labels"]))
    mov = mimg.get_fdata(dtype=np.float32)
    mlab = np.asarray(mlimg.dataobj).astype(np.int32)
    before = W.compose_to_fixed(fgrid, fgrid, zero, None, (mov, mimg.affine), float(mov.min()),
                                labels=(mlab, mlimg.affine))
    save(d / "before.nii.gz", before["warped"], fimg.affine)
    save(d / "before_labels.nii.gz", before["warped_labels"], fimg.affine, np.uint8)
    rows["before (world-space resampling only)"] = {
        **evaluate(paths, d / "before.nii.gz", d / "before_labels.nii.gz", mask, flab, n_labels), "seconds": 0.0}
    t0 = time.time()
    fc = nib.as_closest_canonical(fimg)
    fixed_c = W.Grid(fc.shape, fc.affine)
    mc = nib.as_closest_canonical(mimg)
    mm = W.affine_spacing(fixed_c, 2.5)
    ga, gm = W.working_grid(fixed_c, mm), W.working_grid(W.Grid(mc.shape, mc.affine), mm)
    fcd, mcd = fc.get_fdata(dtype=np.float32), mc.get_fdata(dtype=np.float32)
    t = W.ants_affine(W.resample(fcd, fc.affine, ga), ga.affine,
                      W.resample(mcd, mc.affine, gm, cval=float(mcd.min())), gm.affine, seed=1, threads=1)
    aff = W.compose_to_fixed(fgrid, fgrid, zero, t, (mov, mimg.affine), float(mov.min()), labels=(mlab, mlimg.affine))
    secs = time.time() - t0
    save(d / "affine_only.nii.gz", aff["warped"], fimg.affine)
    save(d / "affine_only_labels.nii.gz", aff["warped_labels"], fimg.affine, np.uint8)
    rows["ANTs affine stage alone (as in --init affine, no network)"] = {
        **evaluate(paths, d / "affine_only.nii.gz", d / "affine_only_labels.nii.gz", mask, flab, n_labels),
        "seconds": secs}
    if "moving_same_grid" in paths:
        rows["reference: original same-grid pair, before"] = {
            **evaluate(paths, paths["moving_same_grid"], paths["moving_labels_same_grid"], mask, flab, n_labels),
            "seconds": 0.0}
        rows["reference: original same-grid pair, register"] = _register(
            paths, d / "same", paths["moving_same_grid"], paths["moving_labels_same_grid"], [], mask, flab, n_labels)
    rows["register (no --init)"] = _register(paths, d / "plain", paths["moving"], paths["moving_labels"], [],
                                             mask, flab, n_labels)
    rows["register --init affine"] = _register(paths, d / "affine", paths["moving"], paths["moving_labels"],
                                               ["--init", "affine"], mask, flab, n_labels)
    return {"case": name, "rows": rows}


def _register(paths, d: Path, moving, moving_labels, extra, mask, flab, n_labels) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    w, wl, u = d / "warped.nii.gz", d / "warped_labels.nii.gz", d / "field_itk.nii.gz"
    argv = ["register", str(paths["fixed"]), str(moving), "--out-warped", str(w), "--moving-labels",
            str(moving_labels), "--out-warped-labels", str(wl), "--out-field", str(u), "--field-format", "itk",
            *extra]
    print("spikereg-neuro " + " ".join(argv))
    t0 = time.time()
    rc = main(argv)
    secs = time.time() - t0
    if rc:
        raise SystemExit(f"register failed ({rc})")
    return {**evaluate(paths, w, wl, mask, flab, n_labels), "seconds": secs}


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/register_world")
    ap.add_argument("--demo", default=None, help="exported demo folder (default: export into OUT/demo_pairs)")
    ap.add_argument("--cases", default="demo,mni")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo_dir = Path(args.demo) if args.demo else out / "demo_pairs"
    if not (demo_dir / "pair_000").is_dir():
        assert main(["data", "export-demo", str(demo_dir), "-q"]) == 0
    results = [run_case(c, out, demo_dir) for c in args.cases.split(",")]
    lines = []
    for r in results:
        lines.append(f"\n{r['case']}:\n| run | NCC (brain) | Dice | s |\n| --- | --- | --- | --- |")
        for k, v in r["rows"].items():
            lines.append(f"| {k} | {v['ncc']:.3f} | {v['dice']:.3f} | {v['seconds']:.1f} |")
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main_cli()
