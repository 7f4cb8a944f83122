"""NIfTI I/O and atomic writes (spikereg_neuro.io)."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spikereg_neuro.io import (
    atomic_write,
    atomic_write_text,
    check_pair,
    load_field,
    load_labels,
    load_volume,
    save_field,
    save_volume,
)


def _ras_affine(spacing=(2.0, 3.0, 4.0), origin=(-10.0, -20.0, -30.0)) -> np.ndarray:
    aff = np.diag(list(spacing) + [1.0])
    aff[:3, 3] = origin
    return aff


def _volume(shape=(5, 6, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _leftovers(folder: Path) -> list:
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


# ----------------------------------------------------------------------------- atomic
def test_atomic_write_success_replaces(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "old")
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith("a.txt") and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert _leftovers(target.parent) == []


def test_atomic_write_exception_leaves_no_file(tmp_path):
    target = tmp_path / "b.nii.gz"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_exception_keeps_old_version(tmp_path):
    target = tmp_path / "c.txt"
    atomic_write_text(target, "good")
    with pytest.raises(ValueError):
        with atomic_write(target) as tmp:
            tmp.write_text("bad")
            raise ValueError("fail")
    assert target.read_text() == "good"
    assert _leftovers(tmp_path) == []


def test_atomic_write_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_write(tmp_path / "d.txt"):
            pass
    assert not (tmp_path / "d.txt").exists()


def test_save_volume_failure_is_atomic(tmp_path):
    target = tmp_path / "e.nii.gz"
    with pytest.raises(ValueError, match="non-finite"):
        save_volume(target, np.full((3, 3, 3), np.nan, np.float32), np.eye(4))
    assert not target.exists() and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_volume_round_trip(tmp_path, name):
    data, aff = _volume(), _ras_affine()
    path = save_volume(tmp_path / name, data, aff)
    assert path == tmp_path / name and path.exists()
    out, out_aff, hdr = load_volume(path)
    assert out.dtype == np.float32 and out.shape == data.shape
    np.testing.assert_array_equal(out, data)
    np.testing.assert_allclose(out_aff, aff, atol=1e-6)
    assert hdr.get_xyzt_units()[0] == "mm"
    assert _leftovers(tmp_path) == []


def test_save_volume_dtype_and_header(tmp_path):
    labels = np.random.default_rng(1).integers(0, 19, (4, 5, 6)).astype(np.int64)
    aff = _ras_affine()
    p = save_volume(tmp_path / "lab.nii.gz", labels, aff, dtype=np.uint8)
    assert nib.load(str(p)).get_data_dtype() == np.uint8
    out, out_aff, hdr = load_labels(p)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, labels)
    # reuse the header of a loaded file
    p2 = save_volume(tmp_path / "lab2.nii.gz", out.astype(np.float32) * 0.5, out_aff, header=hdr, dtype=np.float32)
    out2, _, _ = load_volume(p2)
    np.testing.assert_allclose(out2, labels * 0.5)


def test_las_input_is_canonicalised(tmp_path):
    ras = _volume((6, 5, 4), seed=3)
    ras_aff = _ras_affine((2.0, 2.0, 2.0), (-5.0, -4.0, -3.0))
    # the same image stored LAS: array axis 0 runs right -> left
    las = ras[::-1].copy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, ras.shape[0] - 1
    las_aff = ras_aff @ flip
    assert nib.aff2axcodes(las_aff) == ("L", "A", "S")
    nib.save(nib.Nifti1Image(las, las_aff), str(tmp_path / "las.nii.gz"))

    data, aff, _ = load_volume(tmp_path / "las.nii.gz")  # canonical=True by default
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    np.testing.assert_array_equal(data, ras)
    np.testing.assert_allclose(aff, ras_aff, atol=1e-6)
    # every voxel keeps its world position
    ijk = np.array([1, 2, 3, 1.0])
    src_ijk = np.linalg.inv(las_aff) @ aff @ ijk
    assert data[1, 2, 3] == las[tuple(int(round(v)) for v in src_ijk[:3])]

    raw, raw_aff, _ = load_volume(tmp_path / "las.nii.gz", canonical=False)
    np.testing.assert_array_equal(raw, las)
    np.testing.assert_allclose(raw_aff, las_aff, atol=1e-6)


def test_trailing_singleton_dimension_is_accepted(tmp_path):
    data = _volume((4, 4, 4))
    nib.save(nib.Nifti1Image(data[..., None], np.eye(4)), str(tmp_path / "4d.nii.gz"))
    out, _, _ = load_volume(tmp_path / "4d.nii.gz")
    assert out.shape == (4, 4, 4)
    np.testing.assert_array_equal(out, data)


# ----------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")


def test_not_3d(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(tmp_path / "2d.nii.gz"))
    with pytest.raises(ValueError, match="expected a 3D volume"):
        load_volume(tmp_path / "2d.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(ValueError, match=r"expected a 3D volume.*\(4, 5, 6, 2\)"):
        load_volume(tmp_path / "4d.nii.gz")
    with pytest.raises(ValueError, match="3D array"):
        save_volume(tmp_path / "x.nii.gz", np.zeros((4, 5), np.float32), np.eye(4))


def test_nan_and_inf(tmp_path):
    for bad in (np.nan, np.inf):
        data = _volume((3, 3, 3))
        data[1, 1, 1] = bad
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "bad.nii.gz"))
        with pytest.raises(ValueError, match="1 non-finite"):
            load_volume(tmp_path / "bad.nii.gz")


def test_unreadable_and_bad_names(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match="cannot read"):
        load_volume(tmp_path / "junk.nii.gz")
    with pytest.raises(ValueError, match=r"\.nii"):
        save_volume(tmp_path / "x.img", _volume(), np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        save_volume(tmp_path / "x.nii.gz", _volume(), np.eye(3))


def test_labels_must_be_integers(tmp_path):
    save_volume(tmp_path / "l.nii.gz", np.full((3, 3, 3), 1.5, np.float32), np.eye(4))
    with pytest.raises(ValueError, match="non-integer"):
        load_labels(tmp_path / "l.nii.gz")


def test_check_pair():
    aff = _ras_affine()
    a = nib.Nifti1Image(_volume(), aff)
    check_pair(a, nib.Nifti1Image(_volume(seed=1), aff + 1e-4))  # within atol
    check_pair((_volume(), aff), (_volume(), aff))  # tuples as returned by load_volume
    with pytest.raises(ValueError, match=r"shape mismatch: fixed \(5, 6, 7\) vs moving \(5, 6, 8\)"):
        check_pair(a, nib.Nifti1Image(_volume((5, 6, 8)), aff))
    shifted = aff.copy()
    shifted[0, 3] += 1.0
    with pytest.raises(ValueError, match="affine mismatch"):
        check_pair(a, nib.Nifti1Image(_volume(), shifted))
    with pytest.raises(ValueError, match="affine mismatch"):
        check_pair(a, nib.Nifti1Image(_volume(), shifted), atol=0.5)
    check_pair(a, nib.Nifti1Image(_volume(), shifted), atol=1.5)


# ----------------------------------------------------------------------------- fields
def test_field_round_trip(tmp_path):
    field = np.random.default_rng(2).normal(size=(3, 5, 6, 7)).astype(np.float32)
    aff = _ras_affine()
    p = save_field(tmp_path / "u.nii.gz", field, aff)
    img = nib.load(str(p))
    assert img.shape == (5, 6, 7, 1, 3)
    assert img.header.get_intent()[0] == "vector"
    np.testing.assert_array_equal(np.asarray(img.dataobj)[2, 3, 4, 0], field[:, 2, 3, 4])
    out, out_aff = load_field(p)
    np.testing.assert_array_equal(out, field)
    np.testing.assert_allclose(out_aff, aff, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(3, D, H, W\)"):
        save_field(tmp_path / "bad.nii.gz", field[:2], aff)
    save_volume(tmp_path / "vol.nii.gz", field[0], aff)
    with pytest.raises(ValueError, match="not a 3D vector field"):
        load_field(tmp_path / "vol.nii.gz")


def test_field_accepts_torch(tmp_path):
    torch = pytest.importorskip("torch")
    field = torch.randn(1, 3, 4, 4, 4)
    p = save_field(tmp_path / "t.nii.gz", field, np.eye(4))
    out, _ = load_field(p)
    np.testing.assert_allclose(out, field[0].numpy())
    assert os.path.getsize(p) > 0


def test_a_qform_that_differs_from_the_sform_is_kept(tmp_path):
    """Scanner qform + template sform: an output on the same grid keeps both (issue 18)."""
    aff = _ras_affine()
    q = aff.copy()
    q[:3, 3] += [1.0, -2.0, 0.5]
    img = nib.Nifti1Image(np.random.default_rng(0).random((4, 5, 6)).astype(np.float32), aff)
    img.set_sform(aff, code=2)
    img.set_qform(q, code=1)
    src = tmp_path / "in.nii.gz"
    nib.save(img, str(src))
    vol, vaff, hdr = load_volume(src)
    out = nib.load(str(save_volume(tmp_path / "out.nii.gz", vol, vaff, header=hdr)))
    np.testing.assert_allclose(out.get_sform(), aff)
    np.testing.assert_allclose(out.get_qform(), q, atol=1e-5)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    # on another grid the qform follows the output's affine
    other = aff.copy()
    other[:3, 3] += 10
    out2 = nib.load(str(save_volume(tmp_path / "o2.nii.gz", vol, other, header=hdr)))
    np.testing.assert_allclose(out2.get_qform(), other, atol=1e-5)


def test_a_nifti2_header_is_written_as_nifti2_without_warnings(tmp_path):
    import warnings

    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    nib.save(nib.Nifti2Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp_path / "in.nii.gz"))
    arr, aff, hdr = load_volume(tmp_path / "in.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # nibabel warned "sizeof_hdr should be 348"
        save_volume(tmp_path / "out.nii.gz", arr, aff, header=hdr)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert isinstance(out, nib.Nifti2Image) and np.array_equal(np.asarray(out.dataobj), np.asarray(arr))
