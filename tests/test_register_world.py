"""``register`` on any two 3D scans (issue 17): world-space resampling onto the model's spacing,
``--init affine`` (ANTs), outputs on the fixed file's own grid, ``--field-format {voxel,itk}``.

Small analytic volumes (a sum of Gaussian blobs sampled in world space, so a rotated, shifted
copy on another grid is known exactly) and a tiny untrained network: seconds on one thread.
"""
from __future__ import annotations

import os

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from spikereg_neuro.checkpoint import save_checkpoint  # noqa: E402
from spikereg_neuro.cli import main  # noqa: E402
from spikereg_neuro.inference import SpikeRegInference  # noqa: E402
from spikereg_neuro.io.nifti import load_field, save_itk_field  # noqa: E402
from spikereg_neuro.model.config import ModelConfig  # noqa: E402
from spikereg_neuro.model.unet import SpikeRegUNet  # noqa: E402
from spikereg_neuro.registration import world as W  # noqa: E402

ants = pytest.importorskip("ants")

TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
MODEL_MM = 4.0
RNG = np.random.default_rng(3)
CENTRES = RNG.uniform(-18, 18, (14, 3))
WIDTHS = RNG.uniform(4, 8, 14)
AMPS = RNG.uniform(0.3, 1.0, 14)


def blobs(p: np.ndarray) -> np.ndarray:
    """The analytic 'anatomy' at world points ``p`` (3, N) (RAS mm)."""
    v = np.zeros(p.shape[1])
    for c, w, a in zip(CENTRES, WIDTHS, AMPS):
        v += a * np.exp(-np.sum((p - c[:, None]) ** 2, axis=0) / (2 * w * w))
    return v


def sampled(shape, affine, world_map=None) -> np.ndarray:
    """``blobs`` on a grid; with ``world_map`` the image whose world point z shows blobs(inv(T) z)."""
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    p = affine[:3, :3] @ idx + affine[:3, 3:]
    if world_map is not None:
        inv = np.linalg.inv(world_map)
        p = inv[:3, :3] @ p + inv[:3, 3:]
    return blobs(p).reshape(shape).astype(np.float32)


def rotation(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    out = np.eye(3)
    for axis, deg in enumerate((deg_x, deg_y, deg_z)):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


FIXED_AFF = np.array([[2.0, 0, 0, -23.0], [0, 2.0, 0, -25.0], [0, 0, 2.0, -21.0], [0, 0, 0, 1]])
FIXED_SHAPE = (24, 26, 22)
#: moving: LIP orientation, 3 mm, another shape
MOVING_AFF = np.array([[-3.0, 0, 0, 30.0], [0, 0, -3.0, 30.0], [0, -3.0, 0, 28.0], [0, 0, 0, 1]])
MOVING_SHAPE = (21, 20, 22)
TRUE = np.eye(4)
TRUE[:3, :3] = rotation(6, -4, 10)
TRUE[:3, 3] = [3.0, -2.0, 4.0]   # pull map: fixed world x -> moving world TRUE x


def _save(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    inf = {"inference": {"patch_size": 16, "stride": 16, "batch_size": 2}}
    paths = {"root": root,
             "ckpt": save_checkpoint(root / "tiny.pt", net, {**inf, "data_config": {"voxel_size_mm": MODEL_MM}}),
             "ckpt_bare": save_checkpoint(root / "bare.pt", net, inf)}
    paths["fixed"] = _save(root / "fixed.nii.gz", sampled(FIXED_SHAPE, FIXED_AFF), FIXED_AFF)
    paths["moving"] = _save(root / "moving.nii.gz", sampled(MOVING_SHAPE, MOVING_AFF, TRUE), MOVING_AFF)
    lab = (sampled(MOVING_SHAPE, MOVING_AFF, TRUE) > 0.5).astype(np.int16) * 300
    paths["labels"] = _save(root / "labels.nii.gz", lab, MOVING_AFF, np.int16)
    return paths


def _run(files, tmp_path, *extra, model="ckpt"):
    out = {"w": tmp_path / "w.nii.gz", "u": tmp_path / "u.nii.gz", "wl": tmp_path / "wl.nii.gz"}
    argv = ["register", str(files["fixed"]), str(files["moving"]), "--out-warped", str(out["w"]),
            "--out-field", str(out["u"]), "--moving-labels", str(files["labels"]),
            "--out-warped-labels", str(out["wl"]), "--model", str(files[model]), *extra]
    return main(argv), out


# ============================================================================ geometry units
def test_working_grid_keeps_a_grid_at_the_model_spacing_and_covers_the_fov():
    g = W.Grid((64, 72, 64), np.diag([2.5, 2.5, 2.5, 1.0]))
    assert W.working_grid(g, 2.5) is not g and W.working_grid(g, 2.5).matches(g)
    a = np.array([[1.0, 0, 0, -98], [0, 1.0, 0, -134], [0, 0, 1.0, -72], [0, 0, 0, 1]])
    fine = W.Grid((197, 233, 189), a)
    w = W.working_grid(fine, 2.5)
    assert w.shape == (79, 93, 76) and np.allclose(w.spacing, 2.5)
    centre = lambda gr: gr.affine[:3, :3] @ ((np.asarray(gr.shape) - 1) / 2) + gr.affine[:3, 3]  # noqa: E731
    assert np.allclose(centre(w), centre(fine))
    aniso = W.working_grid(W.Grid((40, 40, 20), np.diag([2.5, 2.5, 5.0, 1.0])), 2.5)
    assert aniso.shape == (40, 40, 40) and np.allclose(aniso.spacing, 2.5)
    assert np.allclose(aniso.affine[:2], np.diag([2.5, 2.5, 2.5, 1.0])[:2])  # kept axes unchanged


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("L", "I", "P"), ("A", "S", "R")])
def test_from_canonical_is_the_exact_inverse_of_nibabel_reorientation(codes):
    ornt = nib.orientations.axcodes2ornt(codes)
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    ras = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    img = ras.as_reoriented(nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt))
    assert nib.aff2axcodes(img.affine) == codes
    canon = nib.as_closest_canonical(img)
    file_grid, canon_grid = W.Grid(img.shape, img.affine), W.Grid(canon.shape, canon.affine)
    back = W.from_canonical(np.asarray(canon.dataobj), canon_grid, file_grid)
    assert np.array_equal(back, np.asarray(img.dataobj))
    # a canonical voxel field points at the same world displacement after conversion
    u = np.random.default_rng(0).normal(size=(3, *canon.shape)).astype(np.float32)
    uf = W.canonical_field_to_file(u, canon_grid, file_grid)
    world_c = np.einsum("ab,b...->a...", canon.affine[:3, :3], u)
    world_f = np.einsum("ab,b...->a...", img.affine[:3, :3], uf)
    assert np.allclose(W.from_canonical(np.moveaxis(world_c, 0, -1), canon_grid, file_grid),
                       np.moveaxis(world_f, 0, -1), atol=1e-5)


def test_model_spacing_is_read_from_the_checkpoint_or_the_packaged_config():
    assert W.model_spacing({"data_config": {"voxel_size_mm": 2.0}}) == (2.0, "the checkpoint's data_config")
    mm, where = W.model_spacing({"config": {"data": {"voxel_size_mm": 3.0}}})
    assert mm == 3.0 and "config (data section)" in where
    mm, where = W.model_spacing({})
    assert mm == 2.5 and "packaged default" in where and "records no" in where
    with pytest.raises(ValueError, match="not a positive size"):
        W.model_spacing({"data_config": {"voxel_size_mm": -1}})
    # a model trained on a --data folder ran at the folder's spacing, not the config's
    mm, where = W.model_spacing({"data": {"kind": "folder", "spacing_mm": [1.5, 1.5, 1.5]},
                                 "data_config": {"voxel_size_mm": 2.5}})
    assert mm == 1.5 and "training folder" in where


def test_spacing_checks_warn_and_refuse():
    assert W.check_spacing("FIXED", np.array([2.5, 2.5, 2.5]), 2.5) is None
    assert W.check_spacing("FIXED", np.array([2.0, 2.0, 2.0]), 2.5) is None
    assert "2.5x finer" in W.check_spacing("FIXED", np.array([1.0, 1.0, 1.0]), 2.5)
    assert "was not trained at" in W.check_spacing("FIXED", np.array([1.0, 1.0, 1.0]), 2.5, "was not trained at")
    assert "anisotropic (2:1)" in W.check_spacing("MOVING", np.array([2.5, 2.5, 5.0]), 2.5)
    assert "coarser" in W.check_spacing("MOVING", np.array([2.5, 2.5, 5.0]), 2.5)
    with pytest.raises(ValueError, match="too far from the 2.5 mm"):
        W.check_spacing("FIXED", np.array([0.1, 0.1, 0.1]), 2.5)
    with pytest.raises(ValueError, match="fewer than 4 voxels"):
        W.check_working_grid(W.Grid((40, 40, 3), np.eye(4)))


def test_ants_affine_recovers_a_known_transform_and_matches_ants_resampling():
    fix, mov = sampled(FIXED_SHAPE, FIXED_AFF), sampled(MOVING_SHAPE, MOVING_AFF, TRUE)
    est = W.ants_affine(fix, FIXED_AFF, mov, MOVING_AFF, seed=1, threads=1)
    assert np.abs(est[:3, :3] - TRUE[:3, :3]).max() < 0.05 and np.abs(est[:3, 3] - TRUE[:3, 3]).max() < 1.5
    fg = W.Grid(FIXED_SHAPE, FIXED_AFF)
    zero = np.zeros((3, *FIXED_SHAPE), np.float32)
    aligned = W.compose_to_fixed(fg, fg, zero, est, (mov, MOVING_AFF), 0.0)["warped"]
    before = W.compose_to_fixed(fg, fg, zero, None, (mov, MOVING_AFF), 0.0)["warped"]
    assert ncc(aligned, fix) > 0.99 > ncc(before, fix) + 0.1


# ============================================================================ ITK field vs ANTs
def test_itk_field_is_applied_unchanged_by_ants(tmp_path):
    """A known transform (rotation + shift, another grid, LIP) plus a deformable field, composed
    by us on the fixed grid and written as ITK: ants.apply_transforms reproduces our warp."""
    fix, mov = sampled(FIXED_SHAPE, FIXED_AFF), sampled(MOVING_SHAPE, MOVING_AFF, TRUE)
    fpath, mpath = _save(tmp_path / "f.nii.gz", fix, FIXED_AFF), _save(tmp_path / "m.nii.gz", mov, MOVING_AFF)
    fg = W.Grid(FIXED_SHAPE, FIXED_AFF)
    work = W.working_grid(fg, MODEL_MM)
    u = np.zeros((3, *work.shape), np.float32)
    u[0] = 0.4 * np.sin(np.linspace(0, 3, work.shape[0]))[:, None, None]
    u[2] = 0.3
    res = W.compose_to_fixed(fg, work, u, TRUE, (mov, MOVING_AFF), 0.0, itk_field=True)
    save_itk_field(tmp_path / "itk.nii.gz", res["itk"], FIXED_AFF)
    img = nib.load(str(tmp_path / "itk.nii.gz"))
    assert img.shape == (*FIXED_SHAPE, 1, 3) and img.header.get_intent()[0] == "vector"
    out = ants.apply_transforms(ants.image_read(str(fpath)), ants.image_read(str(mpath)),
                                [str(tmp_path / "itk.nii.gz")]).numpy()
    assert np.abs(out - res["warped"]).max() < 1e-4
    # without the deformable part the known transform brings the moving image onto the fixed one
    exact = W.compose_to_fixed(fg, work, np.zeros_like(u), TRUE, (mov, MOVING_AFF), 0.0)["warped"]
    assert ncc(exact, fix) > 0.995


# ============================================================================ the command
def test_register_any_pair_with_affine_init_and_itk_field(files, tmp_path, capsys):
    fix = nib.load(str(files["fixed"]))
    rc, out = _run(files, tmp_path / "none")
    assert rc == 0
    base = np.asarray(nib.load(str(out["w"])).dataobj)
    rc, out = _run(files, tmp_path / "aff", "--init", "affine", "--field-format", "itk")
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "model spacing 4 mm (from the checkpoint's data_config)" in text and "affine pre-alignment" in text
    angle = float(text.split("rotation ")[1].split(" deg")[0])
    true_angle = np.degrees(np.arccos((np.trace(TRUE[:3, :3]) - 1) / 2))
    assert abs(angle - true_angle) < 2.0, (angle, true_angle)
    w, wl, u = (nib.load(str(out[k])) for k in ("w", "wl", "u"))
    for img in (w, wl, u):  # the fixed file's own grid
        assert img.shape[:3] == FIXED_SHAPE and np.allclose(img.affine, fix.affine)
    assert wl.get_data_dtype() == np.int16 and set(np.unique(np.asarray(wl.dataobj))) <= {0, 300}
    assert u.shape == (*FIXED_SHAPE, 1, 3) and u.header.get_intent()[0] == "vector"
    warped = np.asarray(w.dataobj)
    fixed = np.asarray(fix.dataobj)
    assert ncc(warped, fixed) > ncc(base, fixed) + 0.05 and ncc(warped, fixed) > 0.95
    fi, mi = ants.image_read(str(files["fixed"])), ants.image_read(str(files["moving"]))
    by_ants = ants.apply_transforms(fi, mi, [str(out["u"])]).numpy()
    assert ncc(by_ants, warped) > 0.9999 and np.abs(by_ants - warped).max() < 1e-3
    lab_ants = ants.apply_transforms(fi, ants.image_read(str(files["labels"])), [str(out["u"])],
                                     interpolator="nearestNeighbor").numpy()
    assert np.mean(lab_ants == np.asarray(wl.dataobj)) > 0.99


def test_voxel_field_round_trips(files, tmp_path):
    """Different grids: the voxel field applies to MOVING resampled onto FIXED in world space."""
    from nibabel.processing import resample_from_to

    rc, out = _run(files, tmp_path, "--init", "affine")
    assert rc == 0
    u, aff = load_field(out["u"])
    fix = nib.load(str(files["fixed"]))
    assert u.shape == (3, *FIXED_SHAPE) and np.allclose(aff, fix.affine)
    on_fixed = resample_from_to(nib.load(str(files["moving"])), fix, order=1).get_fdata(dtype=np.float32)
    again = SpikeRegInference.apply_deformation(on_fixed, u)
    warped = np.asarray(nib.load(str(out["w"])).dataobj)
    # where the field points inside FIXED's grid (beyond it the resampled copy has no data)
    target = u + np.indices(FIXED_SHAPE)
    inside = np.all((target >= 0) & (target <= np.array(FIXED_SHAPE).reshape(3, 1, 1, 1) - 1), axis=0)
    assert inside.mean() > 0.7
    assert ncc(again[inside], warped[inside]) > 0.995


@pytest.mark.parametrize("model, extra", [("ckpt", []), ("ckpt_bare", ["--working-grid", "fixed"])])
def test_same_grid_pair_at_model_spacing_is_not_resampled(files, tmp_path, model, extra):
    """A pair on one LPS grid at the model's spacing (or any spacing with --working-grid fixed):
    the network sees the canonical arrays (today's path), outputs come back exactly in the
    file's axes and the voxel field applies to the MOVING array as today."""
    aff = np.array([[-4.0, 0, 0, 40.0], [0, -4.0, 0, 44.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])  # LPS
    shape = (16, 18, 14)
    fix, mov = sampled(shape, aff), sampled(shape, aff, TRUE)
    fp, mp = _save(tmp_path / "f.nii.gz", fix, aff), _save(tmp_path / "m.nii.gz", mov, aff)
    w, up = tmp_path / "w.nii.gz", tmp_path / "u.nii.gz"
    assert main(["register", str(fp), str(mp), "--out-warped", str(w), "--out-field", str(up),
                 "--model", str(files[model]), *extra]) == 0
    reg = SpikeRegInference(files[model])
    fc, mc = (np.asarray(nib.as_closest_canonical(nib.load(str(p))).dataobj) for p in (fp, mp))
    field_c = reg.register(fc, mc)
    canon = W.Grid(fc.shape, nib.as_closest_canonical(nib.load(str(fp))).affine)
    grid = W.Grid(shape, aff)
    u, uaff = load_field(up)
    assert np.allclose(uaff, aff) and np.array_equal(u, W.canonical_field_to_file(field_c, canon, grid))
    warped = np.asarray(nib.load(str(w)).dataobj)
    assert np.array_equal(warped, W.from_canonical(reg.apply_deformation(mc, field_c), canon, grid))
    assert np.allclose(reg.apply_deformation(mov, u), warped, atol=1e-5)   # round trip on the file's axes


def test_fallback_spacing_is_announced(files, tmp_path, capsys):
    rc, _ = _run(files, tmp_path, model="ckpt_bare")
    assert rc == 0
    assert "from the packaged default config (data.voxel_size_mm)" in capsys.readouterr().out


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip() and "warning:" not in line]
    assert len(lines) == 1 and lines[0].startswith("spikereg-neuro register: error: "), err
    return lines[0]


def test_bad_geometry_is_a_one_line_error_and_writes_nothing(files, tmp_path, capsys):
    far = MOVING_AFF.copy()
    far[:3, 3] += 1000.0
    mp = _save(tmp_path / "far.nii.gz", sampled(MOVING_SHAPE, MOVING_AFF, TRUE), far)
    out = tmp_path / "o" / "w.nii.gz"
    assert main(["register", str(files["fixed"]), str(mp), "--out-warped", str(out),
                 "--model", str(files["ckpt"])]) == 1
    assert "do not overlap in world space" in _one_error_line(capsys.readouterr().err)
    tiny = _save(tmp_path / "tiny.nii.gz", sampled((20, 20, 20), np.diag([0.2, 0.2, 0.2, 1.0])),
                 np.diag([0.2, 0.2, 0.2, 1.0]))
    assert main(["register", str(tiny), str(files["moving"]), "--out-warped", str(out),
                 "--model", str(files["ckpt"])]) == 1
    assert "too far from the 4 mm" in _one_error_line(capsys.readouterr().err)
    assert not out.parent.exists()


def test_spacing_warning_on_stderr(files, tmp_path, capsys):
    coarse = np.diag([4.0, 4.0, 8.0, 1.0])
    coarse[:3, 3] = [-22.0, -24.0, -20.0]
    mp = _save(tmp_path / "coarse.nii.gz", sampled((12, 13, 6), coarse), coarse)
    assert main(["register", str(files["fixed"]), str(mp), "--out-warped", str(tmp_path / "w.nii.gz"),
                 "--model", str(files["ckpt"])]) == 0
    err = capsys.readouterr().err
    assert "warning: MOVING voxel size 4x4x8 mm is" in err and "anisotropic (2:1)" in err


def test_a_failed_write_leaves_no_output(files, tmp_path, monkeypatch):
    import spikereg_neuro.io.nifti as nifti

    def broken(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "wl.nii.gz"))

    monkeypatch.setattr(nifti, "save_volume", lambda *a, real=nifti.save_volume, **k:
                        broken() if str(a[0]).endswith("wl.nii.gz") else real(*a, **k))
    rc, out = _run(files, tmp_path)
    assert rc == 1 and not any(p.exists() for p in out.values())


def test_ants_affine_refuses_images_too_small_for_its_pyramid():
    tiny = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"at least 12 voxels per axis .*FIXED has 4x4x4"):
        W.ants_affine(tiny, np.eye(4), tiny, np.eye(4))
