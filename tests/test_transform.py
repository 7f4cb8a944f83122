"""Tests of registration.transform against independent (scipy / analytic) references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from spikereg_neuro.registration.transform import (
    compose,
    identity_grid,
    integrate_velocity,
    invert_field,
    resize_field,
    symmetric_field,
    warp,
    warp_labels,
)

SHAPE = (10, 12, 14)  # distinct sizes so that any axis mix-up changes shapes/results


def smooth_field(shape, amplitude, seed, sigma=2.0):
    """Random smooth (3, D, H, W) float64 field with max |u| == amplitude."""
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), sigma) for _ in range(3)])
    return u * (amplitude / np.abs(u).max())


def scipy_pull(image, field, order=1):
    """Reference pull warp: image(x + u(x)) with scipy map_coordinates, edge replication."""
    coords = np.indices(image.shape, dtype=np.float64) + field
    return ndimage.map_coordinates(image, coords, order=order, mode="nearest")


def t(a, dtype=torch.float64):
    """numpy (C, D, H, W) -> torch (1, C, D, H, W)."""
    return torch.as_tensor(np.asarray(a)[None], dtype=dtype)


# --------------------------------------------------------------------------- identity grid
def test_identity_grid_is_voxel_coordinates():
    g = identity_grid(SHAPE, dtype=torch.float64)
    assert g.shape == (1, 3) + SHAPE
    np.testing.assert_array_equal(g[0].numpy(), np.indices(SHAPE))


# --------------------------------------------------------------------------- warp
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_warp_matches_scipy_map_coordinates(dtype, tol):
    rng = np.random.default_rng(0)
    img = rng.normal(size=SHAPE)
    u = smooth_field(SHAPE, amplitude=3.0, seed=1)  # large enough to leave the volume (border)
    out = warp(t(img[None], dtype), t(u, dtype))
    assert out.shape == (1, 1) + SHAPE and out.dtype == dtype
    np.testing.assert_allclose(out[0, 0].double().numpy(), scipy_pull(img, u), atol=tol, rtol=0)


def test_warp_batch_and_broadcast_field():
    rng = np.random.default_rng(2)
    imgs = rng.normal(size=(2, 1) + SHAPE)
    fields = np.stack([smooth_field(SHAPE, 2.0, seed=s) for s in (3, 4)])
    out = warp(torch.as_tensor(imgs), torch.as_tensor(fields))
    for n in range(2):
        np.testing.assert_allclose(out[n, 0].numpy(), scipy_pull(imgs[n, 0], fields[n]), atol=1e-10)
    # a single field is broadcast over the batch
    out1 = warp(torch.as_tensor(imgs), torch.as_tensor(fields[:1]))
    for n in range(2):
        ref = scipy_pull(imgs[n, 0], fields[0])
        np.testing.assert_allclose(out1[n, 0].numpy(), ref, atol=1e-10)


def test_zero_field_is_identity():
    rng = np.random.default_rng(5)
    img = torch.as_tensor(rng.normal(size=(1, 2) + SHAPE))
    lab = torch.as_tensor(rng.integers(0, 5, size=(1, 1) + SHAPE))
    zero = torch.zeros((1, 3) + SHAPE, dtype=torch.float64)
    torch.testing.assert_close(warp(img, zero), img, atol=1e-12, rtol=0)
    out = warp_labels(lab, zero)
    assert out.dtype == lab.dtype
    assert torch.equal(out, lab)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [2, -3])
def test_constant_integer_shift_moves_along_channel_axis(axis, shift):
    """u = shift * e_axis gives warped[x] = moving[x + shift * e_axis] (pull)."""
    rng = np.random.default_rng(6)
    img = rng.normal(size=SHAPE)
    u = np.zeros((3,) + SHAPE)
    u[axis] = shift
    out = warp(t(img[None]), t(u))[0, 0].numpy()
    n = SHAPE[axis]
    dst = [slice(None)] * 3
    src = [slice(None)] * 3
    if shift > 0:
        dst[axis], src[axis] = slice(0, n - shift), slice(shift, n)
    else:
        dst[axis], src[axis] = slice(-shift, n), slice(0, n + shift)
    np.testing.assert_allclose(out[tuple(dst)], img[tuple(src)], atol=1e-12)
    # the same integer shift on labels is exact too
    lab = rng.integers(0, 7, size=SHAPE)
    out_lab = warp_labels(t(lab[None], torch.int64), t(u))[0, 0].numpy()
    np.testing.assert_array_equal(out_lab[tuple(dst)], lab[tuple(src)])


def test_nearest_label_warp_keeps_label_set_and_matches_scipy_order0():
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 6, size=(5, 6, 7))
    lab = np.kron(coarse, np.ones((2, 2, 2), dtype=np.int64))  # SHAPE, blocky labels
    assert lab.shape == SHAPE
    u = smooth_field(SHAPE, 2.5, seed=8)
    out = warp_labels(t(lab[None], torch.int64), t(u))
    assert out.dtype == torch.int64
    out = out[0, 0].numpy()
    assert set(np.unique(out)) <= set(np.unique(lab))
    np.testing.assert_array_equal(out, scipy_pull(lab.astype(np.float64), u, order=0))


# --------------------------------------------------------------------------- compose
def test_compose_matches_scipy_reference():
    u1 = smooth_field(SHAPE, 2.0, seed=10)
    u2 = smooth_field(SHAPE, 2.0, seed=11)
    c = compose(t(u1), t(u2))[0].numpy()
    ref = u2 + np.stack([scipy_pull(u1[k], u2) for k in range(3)])
    np.testing.assert_allclose(c, ref, atol=1e-10)


def test_compose_equals_sequential_warping():
    u1 = smooth_field(SHAPE, 2.5, seed=12, sigma=3.0)
    u2 = smooth_field(SHAPE, 2.5, seed=13, sigma=3.0)
    grid = np.indices(SHAPE, dtype=np.float64)
    # smooth image: the two routes differ only by interpolation error
    img = np.sin(0.35 * grid[0]) * np.cos(0.3 * grid[1]) + 0.5 * np.sin(0.25 * grid[2])
    inner = (slice(3, -3),) * 3

    def err(field):
        seq = warp(warp(t(img[None]), t(u1)), t(u2))[0, 0].numpy()
        return np.abs(seq - warp(t(img[None]), field)[0, 0].numpy())[inner].max()

    e = err(compose(t(u1), t(u2)))
    assert e < 0.035  # image range is ~3
    # and the test discriminates: naive addition or the wrong order are clearly worse
    assert err(t(u1 + u2)) > 2 * e
    assert err(compose(t(u2), t(u1))) > 2 * e
    # on a linear image trilinear interpolation is exact, so the routes agree to rounding
    lin = 0.3 * grid[0] - 0.2 * grid[1] + 0.1 * grid[2]
    seq = warp(warp(t(lin[None]), t(u1)), t(u2))[0, 0].numpy()
    one = warp(t(lin[None]), compose(t(u1), t(u2)))[0, 0].numpy()
    # the analytic answer there is lin(x + compose(u1, u2)(x))
    c = compose(t(u1), t(u2))[0].numpy()
    ana = 0.3 * (grid[0] + c[0]) - 0.2 * (grid[1] + c[1]) + 0.1 * (grid[2] + c[2])
    np.testing.assert_allclose(seq[inner], one[inner], atol=1e-10)
    np.testing.assert_allclose(one[inner], ana[inner], atol=1e-10)


# --------------------------------------------------------------------------- integrate_velocity
def test_integrate_constant_velocity_is_translation():
    v = np.zeros((3,) + SHAPE)
    for k, val in enumerate((1.3, -0.7, 2.1)):
        v[k] = val
    for steps in (0, 1, 7):
        d = integrate_velocity(t(v), steps=steps)[0].numpy()
        np.testing.assert_allclose(d, v, atol=1e-10)


def test_integrate_then_inverse_is_identity():
    v = smooth_field(SHAPE, 1.0, seed=14, sigma=3.0)
    phi = integrate_velocity(t(v), steps=7)
    phi_inv = integrate_velocity(t(-v), steps=7)
    inner = (slice(None),) + (slice(3, -3),) * 3
    for a, b in ((phi, phi_inv), (phi_inv, phi)):
        res = compose(a, b)[0].numpy()
        assert np.abs(res[inner]).max() < 0.02  # vs |v| = 1 voxel
    # a non-trivial displacement was produced
    assert np.abs(phi[0].numpy()).max() > 0.5


def test_invert_field_undoes_a_smooth_field_and_symmetric_field_cancels_a_shared_bias():
    u = t(smooth_field(SHAPE, 1.5, seed=21, sigma=3.0))
    w = invert_field(u)
    inner = (slice(None),) + (slice(3, -3),) * 3
    # warping with u then w is the identity: w + u o (id + w) = 0
    assert np.abs(compose(u, w)[0].numpy()[inner]).max() < 1e-3
    assert np.abs(compose(u, invert_field(u, iterations=0))[0].numpy()[inner]).max() > 0.05  # -u alone is not it
    shift = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
    shift[:, 1] = 0.7
    assert torch.allclose(invert_field(shift), -shift)
    # a bias both directions predict cancels; a consistent pair (u, its inverse) keeps u
    assert torch.allclose(symmetric_field(shift, shift), torch.zeros_like(shift))
    assert np.abs((symmetric_field(u, w) - u)[0].numpy()[inner]).max() < 0.03   # trilinear error, |u| = 1.5
    with pytest.raises(ValueError, match="iterations"):
        invert_field(u, iterations=-1)


# --------------------------------------------------------------------------- resize_field
def test_resize_linear_field_keeps_pointing_at_same_anatomy():
    """u_k = a_k x_k on the old grid must become u_k = a_k y_k on the new grid (new voxels)."""
    old, new = (9, 11, 13), (17, 6, 25)
    a = (0.1, -0.2, 0.05)
    gx = np.indices(old, dtype=np.float64)
    u = np.stack([a[k] * gx[k] for k in range(3)])
    r = resize_field(t(u), new)
    assert r.shape == (1, 3) + new
    gy = np.indices(new, dtype=np.float64)
    np.testing.assert_allclose(r[0].numpy(), np.stack([a[k] * gy[k] for k in range(3)]), atol=1e-10)


def test_resize_constant_field_rescales_per_axis():
    u = np.zeros((3, 5, 9, 11))
    u[0], u[1], u[2] = 1.0, 2.0, -1.0
    r = resize_field(t(u), (9, 5, 21))[0].numpy()
    # factors (new-1)/(old-1) per axis: 8/4, 4/8, 20/10
    np.testing.assert_allclose(r[0], 2.0)
    np.testing.assert_allclose(r[1], 1.0)
    np.testing.assert_allclose(r[2], -2.0)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    img = torch.zeros((1, 1) + SHAPE)
    field = torch.zeros((1, 3) + SHAPE)
    with pytest.raises(ValueError, match=r"displacement field must have shape \(N, 3, D, H, W\)"):
        warp(img, torch.zeros((1, 2) + SHAPE))
    with pytest.raises(ValueError, match=r"image must have shape \(N, C, D, H, W\)"):
        warp(img[0], field)
    with pytest.raises(ValueError, match="spatial shape"):
        warp(torch.zeros(1, 1, 4, 4, 4), field)
    with pytest.raises(ValueError, match="batch sizes differ"):
        warp(torch.zeros((3, 1) + SHAPE), torch.zeros((2, 3) + SHAPE))
    with pytest.raises(ValueError, match="displacement field must have shape"):
        compose(field, field[:, :2])
    with pytest.raises(ValueError, match="steps must be >= 0"):
        integrate_velocity(field, steps=-1)
    with pytest.raises(ValueError, match="size must have 3 entries"):
        resize_field(field, (4, 4))
