"""The one convolution-geometry module, and the copies that must agree with it (issue 19)."""
from itertools import product

import numpy as np
import pytest

from spikereg_neuro import geometry as G

#: (source length, kernel, stride, padding, upsampling) covering borders, strides and x2 upsampling
SHAPES = [(n, k, s, p, up) for n, k, s, p, up in product(range(1, 9), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2))
          if G.conv_output_length(n * up, k, s, p) >= 1]


def _brute_force(src_len, k, s, p, up):
    """Jacobian of 1D 'upsample then conv' with one-hot kernels: tap t links output y to source q."""
    out_len = G.conv_output_length(src_len * up, k, s, p)
    links = set()
    for t in range(k):
        for q in range(src_len):
            x = np.zeros(src_len)
            x[q] = 1
            xu = np.pad(np.repeat(x, up), p)
            y = np.array([xu[o * s + t] for o in range(out_len)])
            for o in np.nonzero(y)[0]:
                links.add((int(o), q, t))
    return out_len, links


@pytest.mark.parametrize("n,k,s,p,up", SHAPES[::7])
def test_axis_groups_equal_the_upsample_conv_jacobian(n, k, s, p, up):
    out_len, links = _brute_force(n, k, s, p, up)
    got = {(y, q, t) for y, g in enumerate(G.axis_groups(out_len, n, k, s, p, up)) for q, taps in g for t in taps}
    assert got == links


def test_tapsets_and_fanin_are_sums_of_the_groups():
    for n, k, s, p, up in SHAPES[::5]:
        out_len = G.conv_output_length(n * up, k, s, p)
        groups = G.axis_groups(out_len, n, k, s, p, up)
        taps, uniq = G.fanin(out_len, n, k, s, p, up)
        assert taps.tolist() == [sum(len(t) for _, t in g) for g in groups]
        assert uniq.tolist() == [len(g) for g in groups]
        ts = G.tapsets(out_len, n, k, s, p, up)
        assert sum(int(c.sum()) for c in ts.values()) == int(uniq.sum())
        assert sum(len(t) * int(c.sum()) for t, c in ts.items()) == int(taps.sum())


def test_output_shape_and_polyphase_folding():
    assert G.conv_output_shape((32, 36, 32), (3, 3, 3), (2, 2, 2), (1, 1, 1)) == (16, 18, 16)
    assert G.interior_phases(3) == [((0,), (1, 2)), ((0, 1), (2,))]
    assert G.folded_kernel_taps(3, 1, 1, 2) == 4 and G.folded_kernel_taps(3, 2, 1, 1) == 3
    # an interior x2-upsampled source reaches 4 outputs per axis (the folded 'merged' count)
    out_len = G.conv_output_length(2 * 8, 3, 1, 1)
    reach = np.zeros(8, dtype=int)
    for g in G.axis_groups(out_len, 8, 3, 1, 1, 2):
        for q, _ in g:
            reach[q] += 1
    assert reach[1:-1].tolist() == [4] * 6 and reach[0] == 3


def test_border_outputs_lose_whole_groups_only():
    for n, up in product(range(2, 9), (1, 2)):
        out_len = G.conv_output_length(n * up, 3, 1, 1)
        phases = G.interior_phases(3, 1, 1, up) if up > 1 else [((0,), (1,), (2,))]
        for y, g in enumerate(G.axis_groups(out_len, n, 3, 1, 1, up)):
            assert set(t for _, t in g) <= set(phases[y % up])


# ------------------------------------------------------------------ copies owned elsewhere
def test_sim_lowering_axis_slots_agree():
    lowering = pytest.importorskip("sim.lowering")
    for n, k, s, p, up in SHAPES:
        out_len = G.conv_output_length(n * up, k, s, p)
        src, mask = lowering._axis_slots(n, out_len, k, s, p, up)
        gsrc, gmask = G.axis_slots(n, out_len, k, s, p, up)
        assert np.array_equal(src, gsrc) and np.array_equal(mask, gmask), (n, k, s, p, up)


def test_sim_lowering_output_size_agrees():
    lowering = pytest.importorskip("sim.lowering")
    for shape, k, s, p in product([(4, 5, 6), (8, 8, 8), (7, 3, 9)], [(3, 3, 3), (1, 3, 5)], [(1, 1, 1), (2, 2, 2)],
                                  [(0, 0, 0), (1, 1, 1)]):
        if min(G.conv_output_shape(shape, k, s, p)) >= 1:
            assert lowering.conv_output_size(shape, k, s, p) == G.conv_output_shape(shape, k, s, p)


def test_quantize_up2_groups_agree():
    quantize = pytest.importorskip("calibration.quantize")
    ours = G.up2_group_matrices(3, 1, 1)
    assert len(ours) == len(quantize._UP2_GROUPS)
    for a, b in zip(quantize._UP2_GROUPS, ours):
        assert np.array_equal(np.asarray(a), b)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="axis geometry"):
        G.axis_groups(4, 4, 0, 1, 1)
