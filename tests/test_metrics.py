"""Tests of spikereg_neuro.registration.metrics on hand-made / analytic cases."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from spikereg_neuro.registration.metrics import (
    dice_mean,
    dice_per_label,
    endpoint_error,
    folding_percent,
    hd95,
    hd95_mean,
    jacobian_determinant,
    sdlogj_learn2reg,
    std_log_jacobian,
)


# --------------------------------------------------------------------------- Dice
def test_dice_identical_is_one_and_background_ignored():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(6, 7, 8))
    d = dice_per_label(lab, lab)
    assert set(d) == {1, 2, 3}
    assert all(v == 1.0 for v in d.values())
    assert dice_mean(lab, lab) == 1.0


def test_dice_disjoint_is_zero():
    a = np.zeros((4, 4, 4), dtype=np.int32)
    b = np.zeros_like(a)
    a[:2] = 1
    b[2:] = 1
    assert dice_per_label(a, b) == {1: 0.0}
    assert dice_mean(a, b) == 0.0


def test_dice_known_overlap():
    a = np.zeros((8, 4, 4), dtype=np.int64)
    b = np.zeros_like(a)
    a[0:4] = 1  # 64 voxels
    b[2:6] = 1  # 64 voxels, 32 shared -> 2*32/128
    a[6:8, :2] = 2  # 16 voxels
    b[6:8, :1] = 2  # 8 voxels, all shared -> 2*8/24
    d = dice_per_label(a, b)
    assert d[1] == pytest.approx(0.5)
    assert d[2] == pytest.approx(2 / 3)
    assert dice_mean(a, b) == pytest.approx((0.5 + 2 / 3) / 2)


def test_dice_absent_label_is_nan_and_skipped():
    a = np.zeros((4, 4, 4), dtype=np.int64)
    a[:2] = 1
    a[2:, :2] = 2
    b = np.zeros_like(a)
    b[:2] = 1  # label 2 missing from the warped map
    d = dice_per_label(a, b)
    assert d[1] == 1.0 and math.isnan(d[2])
    assert dice_mean(a, b) == 1.0
    # label only in the warped map -> NaN as well
    assert math.isnan(dice_per_label(b, a)[2])
    # explicitly requested labels, one absent from both
    d = dice_per_label(a, b, labels=[1, 5])
    assert set(d) == {1, 5} and math.isnan(d[5])
    assert math.isnan(dice_mean(a, b, labels=[5]))
    assert math.isnan(dice_mean(np.zeros_like(a), np.zeros_like(a)))


def test_dice_accepts_torch_and_batch_shaped_input():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, size=(5, 6, 7))
    b = rng.integers(0, 3, size=(5, 6, 7))
    ref = dice_per_label(a, b)
    got = dice_per_label(
        torch.as_tensor(a)[None, None], torch.as_tensor(b.astype(np.float32))[None, None]
    )
    assert got == pytest.approx(ref)


def test_dice_bad_input():
    a = np.zeros((4, 4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="shape mismatch"):
        dice_per_label(a, np.zeros((4, 4, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="3D label volume"):
        dice_per_label(a[0], a[0])
    with pytest.raises(ValueError, match="3D label volume"):
        dice_per_label(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="integer"):
        dice_per_label(a + 0.5, a)
    with pytest.raises(ValueError, match="NaN or inf"):
        dice_per_label(np.full((4, 4, 4), np.nan), a)
    with pytest.raises(ValueError, match="foreground"):
        dice_per_label(a, a, labels=[0, 1])


# --------------------------------------------------------------------------- HD95
def _cube(shape, start, size, axis=None, shift=0):
    m = np.zeros(shape, dtype=np.int64)
    sl = [slice(start, start + size)] * 3
    if axis is not None:
        sl[axis] = slice(start + shift, start + size + shift)
    m[tuple(sl)] = 1
    return m


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_shifted_cubes_anisotropic(axis):
    spacing = (2.0, 1.0, 0.5)
    d = 2
    a = _cube((16, 16, 16), 4, 6)
    b = _cube((16, 16, 16), 4, 6, axis=axis, shift=d)
    expected = d * spacing[axis]
    assert hd95(a, b, spacing=spacing)[1] == pytest.approx(expected)
    assert hd95(b, a, spacing=spacing)[1] == pytest.approx(expected)
    assert hd95(a, b, spacing=spacing, percentile=100)[1] == pytest.approx(expected)
    # spacing matters: isotropic 1 mm gives d
    assert hd95(a, b)[1] == pytest.approx(float(d))


def test_hd95_identical_is_zero_and_empty_is_nan():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 3, size=(8, 9, 10))
    assert all(v == 0.0 for v in hd95(lab, lab, spacing=(1.5, 1.0, 0.7)).values())
    a = _cube((10, 10, 10), 2, 4)
    b = np.zeros_like(a)
    b[a == 1] = 2  # label 1 absent from b, label 2 absent from a
    h = hd95(a, b)
    assert set(h) == {1, 2} and all(math.isnan(v) for v in h.values())
    assert math.isnan(hd95_mean(a, b))
    c = a.copy()
    c[0:2, 0:2, 0:2] = 3  # label 3 only in c
    assert hd95_mean(a, c) == 0.0


def _brute_force_hd(a, b, spacing, q):
    """Independent reference: surface = voxel with a 26-neighbour outside the (zero-padded)
    mask, pairwise distances with cdist, max of both directed q-th percentiles."""

    def surface_points(m):
        p = np.pad(m, 1)
        inside_all = np.ones_like(m, dtype=bool)
        for off in itertools.product((-1, 0, 1), repeat=3):
            sl = tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, m.shape))
            inside_all &= p[sl]
        return np.argwhere(m & ~inside_all) * np.asarray(spacing)

    pa, pb = surface_points(a.astype(bool)), surface_points(b.astype(bool))
    dist = cdist(pa, pb)
    return max(np.percentile(dist.min(1), q), np.percentile(dist.min(0), q))


def test_hd95_matches_brute_force_on_random_blobs():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    shape = (12, 14, 10)
    spacing = (1.2, 0.8, 2.0)
    for _ in range(3):
        a = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.05
        b = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.05
        for q in (95, 100):
            got = hd95(a.astype(np.int64), b.astype(np.int64), spacing=spacing, percentile=q)[1]
            assert got == pytest.approx(_brute_force_hd(a, b, spacing, q), abs=1e-9)


def test_hd95_bad_input():
    a = _cube((8, 8, 8), 2, 3)
    with pytest.raises(ValueError, match="spacing must have 3 entries"):
        hd95(a, a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing entries must be finite and > 0"):
        hd95(a, a, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape mismatch"):
        hd95(a, a[:-1])
    with pytest.raises(ValueError, match="percentile"):
        hd95(a, a, percentile=120)


# --------------------------------------------------------------------------- Jacobian
SHAPE = (9, 10, 11)


def _linear_field(matrix, shape=SHAPE):
    """u(x) = A x, i.e. u_i = sum_j A_ij x_j."""
    g = np.indices(shape, dtype=np.float64)
    return np.einsum("ij,j...->i...", np.asarray(matrix, dtype=np.float64), g)


def test_jacobian_zero_field_is_one_and_cropped():
    det = jacobian_determinant(np.zeros((3,) + SHAPE))
    assert det.shape == (5, 6, 7)
    np.testing.assert_allclose(det, 1.0)
    assert jacobian_determinant(np.zeros((3,) + SHAPE), crop=0).shape == SHAPE
    assert folding_percent(np.zeros((3,) + SHAPE)) == 0.0
    assert std_log_jacobian(np.zeros((3,) + SHAPE)) == 0.0


def test_jacobian_diagonal_scaling():
    s = (0.1, -0.3, 0.5)
    det = jacobian_determinant(_linear_field(np.diag(s)))
    np.testing.assert_allclose(det, 1.1 * 0.7 * 1.5, atol=1e-12)
    assert std_log_jacobian(_linear_field(np.diag(s))) == pytest.approx(0.0, abs=1e-12)


def test_jacobian_general_linear_field_matches_numpy_det():
    rng = np.random.default_rng(4)
    a = rng.normal(scale=0.3, size=(3, 3))
    det = jacobian_determinant(_linear_field(a), crop=0)  # exact even with one-sided borders
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + a), atol=1e-12)


def test_jacobian_quadratic_field_and_log_stats():
    """u_0 = c x_0^2 -> J = 1 + 2 c x_0 (central differences are exact for quadratics)."""
    c = 0.02
    g = np.indices(SHAPE, dtype=np.float64)
    u = np.zeros((3,) + SHAPE)
    u[0] = c * g[0] ** 2
    det = jacobian_determinant(u)
    expected = (1 + 2 * c * g[0])[2:-2, 2:-2, 2:-2]
    np.testing.assert_allclose(det, expected, atol=1e-12)
    assert std_log_jacobian(u) == pytest.approx(np.std(np.log(expected)))
    assert sdlogj_learn2reg(u) == pytest.approx(np.std(np.log(expected + 3)))


def test_folding_field():
    u = _linear_field(np.diag([-2.0, 0.0, 0.0]))  # u_0 = -2 x_0 -> det = -1
    det = jacobian_determinant(u)
    np.testing.assert_allclose(det, -1.0, atol=1e-12)
    assert folding_percent(u) == 100.0
    assert math.isnan(std_log_jacobian(u))
    assert sdlogj_learn2reg(u) == pytest.approx(0.0, abs=1e-12)  # log(-1 + 3) everywhere
    # half folded: det <= 0 counts (det == 0 exactly folds too)
    u = np.zeros((3,) + SHAPE)
    u[0, :5] = _linear_field(np.diag([-1.0, 0, 0]))[0, :5]
    det = jacobian_determinant(u, crop=0)
    assert folding_percent(u, crop=0) == pytest.approx(100.0 * np.mean(det <= 0))
    assert 0 < folding_percent(u, crop=0) < 100


def test_jacobian_batch_and_torch_input():
    s = (0.2, 0.0, -0.1)
    u = np.stack([_linear_field(np.diag(s)), np.zeros((3,) + SHAPE)])
    det = jacobian_determinant(torch.as_tensor(u, dtype=torch.float32))
    assert det.shape == (2, 5, 6, 7)
    np.testing.assert_allclose(det[0], 1.2 * 0.9, atol=1e-6)
    np.testing.assert_allclose(det[1], 1.0)


def test_jacobian_bad_input():
    with pytest.raises(ValueError, match=r"displacement field must have shape \(3, D, H, W\)"):
        jacobian_determinant(np.zeros((2,) + SHAPE))
    with pytest.raises(ValueError, match="displacement field must have shape"):
        folding_percent(np.zeros(SHAPE))
    u = np.zeros((3,) + SHAPE)
    u[1, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        folding_percent(u)
    u[1, 3, 3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        sdlogj_learn2reg(u)
    with pytest.raises(ValueError, match="crop=5 leaves no voxel"):
        jacobian_determinant(np.zeros((3,) + SHAPE), crop=5)
    with pytest.raises(ValueError, match="crop must be >= 0"):
        jacobian_determinant(np.zeros((3,) + SHAPE), crop=-1)


# --------------------------------------------------------------------------- endpoint error
def test_endpoint_error_hand_computed_masked_and_in_mm():
    true = np.zeros((3, 4, 5, 6))
    u = np.zeros_like(true)
    u[0, :2] = 3.0          # error 3 in the first two slices
    u[1, :2] = 4.0          # -> |(3, 4)| = 5 there, 0 elsewhere
    assert endpoint_error(u, true) == pytest.approx(5.0 * 2 / 4)
    mask = np.zeros((4, 5, 6), bool)
    mask[:2] = True
    assert endpoint_error(u, true, mask) == pytest.approx(5.0)
    assert endpoint_error(u, true, ~mask) == 0.0
    # in mm: axis 0 at 2 mm, axis 1 at 1 mm -> |(6, 4)|
    assert endpoint_error(u, true, mask, spacing=(2.0, 1.0, 1.0)) == pytest.approx(math.hypot(6, 4))
    assert endpoint_error(torch.from_numpy(u), torch.from_numpy(true), mask) == pytest.approx(5.0)
    assert math.isnan(endpoint_error(u, true, np.zeros((4, 5, 6), bool)))
    with pytest.raises(ValueError, match="differ in shape"):
        endpoint_error(u, true[:, :3])
    with pytest.raises(ValueError, match="mask"):
        endpoint_error(u, true, mask[:3])
    with pytest.raises(ValueError, match="NaN"):
        endpoint_error(np.full_like(u, np.nan), true)


def test_paired_gain_hand_computed_interval_and_wilcoxon():
    from spikereg_neuro.evaluate import paired_gain

    before = [0.60, 0.62, 0.64, 0.66, 0.68]
    diffs = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    g = paired_gain(list(np.add(before, diffs)), before)
    # mean 0.03, sd (ddof 1) = 0.0158114, t(0.975, 4) = 2.776445 -> half width 0.019632
    assert g["n"] == 5 and g["n_better"] == 5
    assert g["mean"] == pytest.approx(0.03)
    assert g["ci_low"] == pytest.approx(0.03 - 0.019632, abs=1e-6)
    assert g["ci_high"] == pytest.approx(0.03 + 0.019632, abs=1e-6)
    assert g["p_wilcoxon"] == pytest.approx(1 / 32)   # every pair better: the exact minimum
    # one pair worse: fewer improved, larger p; NaN pairs are left out
    g2 = paired_gain([0.61, 0.64, 0.67, 0.70, 0.60, float("nan")], before + [0.5])
    assert g2["n"] == 5 and g2["n_better"] == 4 and g2["p_wilcoxon"] > 0.1 and g2["ci_low"] < 0
    # lower is better (endpoint error): improvements are negative differences
    e = paired_gain([1.0, 0.9, 1.1], [1.1, 1.0, 1.3], higher_is_better=False)
    assert e["n_better"] == 3 and e["mean"] == pytest.approx(-4 / 30) and e["p_wilcoxon"] == pytest.approx(1 / 8)
    # no change at all (the identity): no p-value, zero interval
    z = paired_gain(before, before)
    assert z["n_better"] == 0 and math.isnan(z["p_wilcoxon"]) and z["ci_low"] == z["ci_high"] == 0
    with pytest.raises(ValueError, match="equal length"):
        paired_gain([1, 2], [1])
    with pytest.raises(ValueError, match="confidence"):
        paired_gain([1, 2], [1, 2], confidence=1.5)
