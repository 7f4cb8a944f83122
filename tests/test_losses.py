"""Tests of spikereg_neuro.registration.losses against brute-force / analytic references."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikereg_neuro.registration.losses import (
    MSE,
    BendingEnergy,
    DiceLoss,
    GradientSmoothness,
    LocalNCC,
    one_hot,
)
from spikereg_neuro.registration.transform import warp

SHAPE = (6, 7, 8)


def rand(*shape, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=shape))


# --------------------------------------------------------------------------- LocalNCC
def _brute_force_ncc(i, j, win, eps, squared):
    """Loop over voxels; the window is clipped to the volume (voxels outside are not counted)."""
    i, j = i.numpy(), j.numpy()
    r = win // 2
    vals = []
    for z, y, x in itertools.product(*(range(s) for s in i.shape)):
        sl = tuple(slice(max(c - r, 0), c + r + 1) for c in (z, y, x))
        a, b = i[sl].ravel(), j[sl].ravel()
        a, b = a - a.mean(), b - b.mean()
        cross, va, vb = (a * b).sum(), (a * a).sum(), (b * b).sum()
        vals.append(cross**2 / (va * vb + eps) if squared else cross / np.sqrt(va * vb + eps))
    return -float(np.mean(vals))


@pytest.mark.parametrize("squared", [True, False])
def test_ncc_matches_brute_force(squared):
    i, j = rand(1, 1, *SHAPE, seed=1), rand(1, 1, *SHAPE, seed=2)
    j = 0.5 * i + j  # partially correlated
    loss = LocalNCC(window=3, squared=squared)(i, j)
    ref = _brute_force_ncc(i[0, 0], j[0, 0], 3, 1e-5, squared)
    assert loss.item() == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("squared", [True, False])
def test_ncc_identical_is_minus_one(squared):
    i = rand(2, 1, *SHAPE, seed=3)
    for win in (3, 5, 9):
        assert LocalNCC(window=win, squared=squared)(i, i).item() == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("squared", [True, False])
def test_ncc_invariant_to_affine_intensity(squared):
    i, j = rand(1, 1, *SHAPE, seed=4), rand(1, 1, *SHAPE, seed=5)
    ncc = LocalNCC(window=5, squared=squared)
    base = ncc(i, j).item()
    assert ncc(i, 2.5 * j - 1.3).item() == pytest.approx(base, abs=1e-6)
    assert ncc(0.2 * i + 7.0, j).item() == pytest.approx(base, abs=1e-6)
    assert ncc(i, 3.0 * i + 2.0).item() == pytest.approx(-1.0, abs=1e-4)
    # a negative scale: anti-correlated (+1) for plain NCC, still -1 for squared NCC
    expected = -1.0 if squared else 1.0
    assert ncc(i, -2.0 * i + 1.0).item() == pytest.approx(expected, abs=1e-4)


def test_ncc_float32_and_gradient_through_warp():
    fixed = rand(1, 1, *SHAPE, seed=6).float()
    moving = rand(1, 1, *SHAPE, seed=7).float()
    field = (0.3 * rand(1, 3, *SHAPE, seed=8)).float().requires_grad_(True)
    loss = LocalNCC(window=3)(fixed, warp(moving, field))
    assert loss.dtype == torch.float32
    loss.backward()
    assert field.grad is not None
    assert torch.isfinite(field.grad).all() and field.grad.abs().sum() > 0


def test_ncc_constant_image_is_finite():
    i = torch.ones(1, 1, *SHAPE)
    j = rand(1, 1, *SHAPE, seed=9).float().requires_grad_(True)
    loss = LocalNCC(window=3)(i, j)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(j.grad).all()


def test_ncc_bad_input():
    with pytest.raises(ValueError, match="window must be an odd positive int"):
        LocalNCC(window=4)
    with pytest.raises(ValueError, match="window must be an odd positive int"):
        LocalNCC(window=(3, 3))
    ncc = LocalNCC(window=3)
    with pytest.raises(ValueError, match="shape mismatch"):
        ncc(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match=r"must have shape \(N, C, D, H, W\)"):
        ncc(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4))


def test_ncc_mask_weights_the_mean():
    i, j = rand(1, 1, *SHAPE, seed=3), rand(1, 1, *SHAPE, seed=4)
    ncc = LocalNCC(window=3)
    ones = torch.ones(1, 1, *SHAPE, dtype=i.dtype)
    assert ncc(i, j, ones).item() == pytest.approx(ncc(i, j).item(), rel=1e-9)
    # j equals i inside the mask's neighbourhood and is noise elsewhere: the masked loss sees
    # only the perfect match (-1), the plain one also the unrelated background
    mask = torch.zeros_like(ones)
    mask[..., 2:4, 2:5, 2:6] = 1
    j2 = j.clone()
    j2[..., 1:5, 1:6, 1:7] = i[..., 1:5, 1:6, 1:7]
    assert ncc(i, j2, mask).item() == pytest.approx(-1.0, abs=1e-4)
    assert ncc(i, j2).item() > -0.9
    # an empty mask gives no signal (0, with a gradient graph), a misshaped one an error
    jj = j.clone().requires_grad_(True)
    empty = ncc(i, jj, torch.zeros_like(ones))
    empty.backward()
    assert empty.item() == 0.0 and torch.all(jj.grad == 0)
    with pytest.raises(ValueError, match="mask must be"):
        ncc(i, j, torch.ones(1, 2, *SHAPE))


# --------------------------------------------------------------------------- MSE
def test_mse():
    a, b = rand(2, 1, *SHAPE, seed=10), rand(2, 1, *SHAPE, seed=11)
    assert MSE()(a, b).item() == pytest.approx(float(np.mean((a.numpy() - b.numpy()) ** 2)))
    assert MSE()(a, a).item() == 0.0
    with pytest.raises(ValueError, match="shape mismatch"):
        MSE()(a, b[:1])


# --------------------------------------------------------------------------- regularisers
def _grid(shape=SHAPE):
    return torch.as_tensor(np.indices(shape, dtype=np.float64))


def test_gradient_smoothness():
    const = torch.ones(2, 3, *SHAPE) * torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1, 1)
    assert GradientSmoothness()(const).item() == 0.0
    assert GradientSmoothness("l1")(const).item() == 0.0
    # u_0 = a x_0: only d_0 u_0 = a is non-zero -> mean over 3 channels, then over 3 axes
    a = 0.7
    u = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
    u[0, 0] = a * _grid()[0]
    assert GradientSmoothness("l2")(u).item() == pytest.approx(a**2 / 9)
    assert GradientSmoothness("l1")(u).item() == pytest.approx(a / 9)
    r = rand(1, 3, *SHAPE, seed=12).requires_grad_(True)
    loss = GradientSmoothness()(r)
    assert loss.item() > 0
    loss.backward()
    assert r.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="penalty must be 'l1' or 'l2'"):
        GradientSmoothness("l3")
    with pytest.raises(ValueError, match=r"\(N, 3, D, H, W\)"):
        GradientSmoothness()(torch.zeros(1, 2, *SHAPE))


def test_bending_energy():
    g = _grid()
    be = BendingEnergy()
    # affine field -> 0
    u = torch.stack([0.3 * g[0] - 0.1 * g[2] + 2.0, 0.2 * g[1], -0.4 * g[0] + 1.0])[None]
    assert be(u).item() == pytest.approx(0.0, abs=1e-12)
    # u_0 = c x_0^2: d_00 u_0 = 2c, mean over 3 channels -> 4 c^2 / 3
    c = 0.25
    u = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
    u[0, 0] = c * g[0] ** 2
    assert be(u).item() == pytest.approx(4 * c**2 / 3)
    # u_2 = c x_0 x_1: only the mixed term d_01 u_2 = c, counted twice -> 2 c^2 / 3
    u = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
    u[0, 2] = c * g[0] * g[1]
    assert be(u).item() == pytest.approx(2 * c**2 / 3)
    with pytest.raises(ValueError, match=">= 3 voxels"):
        be(torch.zeros(1, 3, 2, 4, 4))


# --------------------------------------------------------------------------- Dice loss
def test_one_hot():
    lab = torch.tensor([[[[0, 1], [2, 1]]]])  # (1, 1, 2, 2) -> treat as (N, D, H, W)
    oh = one_hot(lab, 3)
    assert oh.shape == (1, 3, 1, 2, 2) and oh.dtype == torch.float32
    assert torch.equal(oh.argmax(1), lab)
    assert torch.equal(oh.sum(1), torch.ones(1, 1, 2, 2))
    lab5 = torch.randint(0, 4, (2, 1, *SHAPE))
    assert torch.equal(one_hot(lab5, 4), F.one_hot(lab5[:, 0], 4).permute(0, 4, 1, 2, 3).float())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\], got range \[0, 2\]"):
        one_hot(lab, 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        one_hot(torch.zeros(1, 2, 2, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="integer"):
        one_hot(torch.full((1, 2, 2, 2), 0.5), 2)


def test_dice_loss():
    lab = torch.randint(0, 4, (2, 1, *SHAPE), generator=torch.Generator().manual_seed(0))
    oh = one_hot(lab, 4)
    dl = DiceLoss()
    assert dl(oh, oh).item() == pytest.approx(0.0, abs=1e-6)
    # hand-made: label 1 in x<4 vs x in [2, 6): dice 0.5 -> loss 0.5
    a = torch.zeros(1, 1, 8, 4, 4, dtype=torch.long)
    b = torch.zeros_like(a)
    a[..., 0:4, :, :] = 1
    b[..., 2:6, :, :] = 1
    assert dl(one_hot(a, 2), one_hot(b, 2)).item() == pytest.approx(0.5, abs=1e-6)
    # disjoint -> ~1
    c = torch.zeros_like(a)
    c[..., 4:8, :, :] = 1
    assert dl(one_hot(a, 2), one_hot(c, 2)).item() == pytest.approx(1.0, abs=1e-6)
    # background included: background of a is x >= 4, of c is x < 4 -> also disjoint
    with_bg = DiceLoss(include_background=True)(one_hot(a, 2), one_hot(c, 2))
    assert with_bg.item() == pytest.approx(1.0, abs=1e-6)
    # soft predictions are differentiable
    logits = torch.zeros(2, 4, *SHAPE, requires_grad=True)
    loss = dl(oh, torch.softmax(logits, 1))
    loss.backward()
    assert 0 < loss.item() < 1 and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="need at least 2 channels"):
        dl(torch.zeros(1, 1, *SHAPE), torch.zeros(1, 1, *SHAPE))
    with pytest.raises(ValueError, match="shape mismatch"):
        dl(oh, oh[:, :3])


def test_ncc_sigma_smooths_both_images_like_scipy_and_cuts_the_blur_reward():
    """``sigma`` = scipy's gaussian_filter (nearest edges, 3 sigma) on both inputs; on a noisy
    image, blurring the moving image raises raw NCC far more than smoothed NCC."""
    from scipy import ndimage

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 12, 10, 8, generator=g, dtype=torch.float64)
    ref = ndimage.gaussian_filter(x[0, 0].numpy(), 1.5, mode="nearest", truncate=3.0)
    assert np.allclose(LocalNCC(5, sigma=1.5)._smooth(x)[0, 0].numpy(), ref, atol=1e-12)
    # a smooth anatomy-like image plus noise; "registration" = nothing, "blur" = a 0.5-voxel blur
    base = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 24, 24, generator=g), 5, 1, 2)
    base = (base - base.min()) / (base.max() - base.min())
    f = base + 0.05 * torch.randn(base.shape, generator=g)
    m = base + 0.05 * torch.randn(base.shape, generator=g)
    mb = torch.from_numpy(ndimage.gaussian_filter(m[0, 0].numpy(), 0.5))[None, None]
    raw, smooth = LocalNCC(9), LocalNCC(9, sigma=1.0)
    gain_raw = float(raw(f, m) - raw(f, mb))
    gain_smooth = float(smooth(f, m) - smooth(f, mb))
    assert gain_raw > 0 and gain_smooth < 0.5 * gain_raw
    with pytest.raises(ValueError, match="sigma"):
        LocalNCC(9, sigma=-1.0)


@pytest.mark.parametrize("shape,scale,background", [((8, 8, 8), 0.7, False), ((5, 7, 9), 3.0, True),
                                                     ((1, 6, 4), 2.0, False)])
def test_dice_of_warped_labels_equals_the_warped_one_hot_maps(shape, scale, background):
    """Same value and gradient as warping every one-hot class, also for displacements that
    leave the grid (border padding) and a one-voxel axis; absent classes are allowed."""
    from spikereg_neuro.registration.losses import DiceLoss, one_hot
    from spikereg_neuro.registration.transform import warp

    g = torch.Generator().manual_seed(0)
    fixed = torch.randint(0, 6, (2, 1, *shape), generator=g)
    moving = torch.randint(0, 4, (2, 1, *shape), generator=g)       # classes 4, 5 absent
    u = (torch.randn(2, 3, *shape, generator=g) * scale).requires_grad_()
    d = DiceLoss(include_background=background)
    ref = d(one_hot(fixed, 6), warp(one_hot(moving, 6), u))
    (g_ref,) = torch.autograd.grad(ref, u)
    val = d.warped_labels(fixed, moving, u, 6)
    (g_val,) = torch.autograd.grad(val, u)
    assert torch.allclose(val, ref, atol=1e-6) and torch.allclose(g_val, g_ref, atol=1e-7, rtol=1e-4)
    assert g_ref.abs().max() > 1e-4          # the gradient compared is not trivially zero
    with pytest.raises(ValueError, match="lie in"):
        d.warped_labels(fixed, moving + 3, u, 6)
