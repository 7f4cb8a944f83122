"""The one convolution-geometry module (issue 19) and its users: lowering, quantizer, output sizes."""
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


# ------------------------------------------------------------------ the users
def test_axis_slots_are_the_groups():
    for n, k, s, p, up in SHAPES:
        out_len = G.conv_output_length(n * up, k, s, p)
        src, mask = G.axis_slots(n, out_len, k, s, p, up)
        for y, g in enumerate(G.axis_groups(out_len, n, k, s, p, up)):
            slots = [(int(q), tuple(int(t) for t in np.nonzero(mask[y, j])[0]))
                     for j, q in enumerate(src[y]) if q >= 0]
            assert slots == list(g), (n, k, s, p, up, y)
            assert not mask[y][src[y] < 0].any()


def test_lowering_reads_the_geometry():
    """sim.lowering builds its matrices from geometry.axis_slots: the matrix of 'upsample then
    conv' with one-hot kernels links exactly the (output, source, tap) triples of axis_groups."""
    lowering = pytest.importorskip("sim.lowering")
    for n, k, s, p, up in SHAPES[::11]:
        out_len = G.conv_output_length(n * up, k, s, p)
        groups = G.axis_groups(out_len, n, k, s, p, up)
        for t in range(k):
            w = np.zeros((1, 1, 1, 1, k), dtype=np.int64)
            w[..., t] = 1
            m = lowering.conv3d_matrix(w, (1, 1, 1, n), (1, 1, s), (0, 0, p), upsample=up == 2).tocoo()
            got = {(int(r), int(c)) for r, c in zip(m.row, m.col) if r < out_len}   # z = y = 0
            assert got == {(y, q) for y, g in enumerate(groups) for q, taps in g if t in taps}
    assert lowering.conv_output_size((8, 8, 8), (3, 3, 3), (2, 2, 2), (1, 1, 1)) == (4, 4, 4)
    with pytest.raises(lowering.LoweringError, match="too small"):
        lowering.conv_output_size((1, 8, 8), (5, 3, 3), (1, 1, 1), (0, 1, 1))


def test_quantizer_folded_range_is_the_lowered_range():
    """calibration.quantize's folded-synapse range (from geometry.up2_group_matrices) is the range
    of the matrix sim.lowering stores for the x2-upsampled connection."""
    quantize = pytest.importorskip("calibration.quantize")
    lowering = pytest.importorskip("sim.lowering")
    rng = np.random.default_rng(0)
    w = 2 * rng.integers(-128, 128, size=(3, 2, 3, 3, 3))
    m = lowering.conv3d_matrix(w, (2, 5, 5, 5), (1, 1, 1), (1, 1, 1), upsample=True)
    assert quantize.folded_upsample_range(w) == (min(0, int(m.data.min())), max(0, int(m.data.max())))


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="axis geometry"):
        G.axis_groups(4, 4, 0, 1, 1)


# ------------------------------------------------------------------ typed connections
def test_connection_labels_and_file_vocabularies():
    from spikereg_neuro.connections import Connection

    up, plain = Connection.parse("up(enc3)"), Connection.parse("enc2")
    assert (up.source, up.upsample, up.transform) == ("enc3", 2, "upsample2")
    assert (plain.source, plain.upsample, plain.transform) == ("enc2", 1, "identity")
    assert str(up) == "up(enc3)" and str(plain) == "enc2" and Connection.parse(up) is up
    assert Connection.from_transform("enc3", "upsample2") == up and Connection("input").reads_input
    assert {up, Connection("enc3", 2)} == {up}                       # frozen, hashable
    for bad in ("up(enc3", "up()", "a b", ""):
        with pytest.raises(ValueError, match="connection"):
            Connection.parse(bad)
    with pytest.raises(ValueError, match="transform"):
        Connection.from_transform("enc3", "upsample3")
    with pytest.raises(ValueError, match="upsampling"):
        Connection("enc3", 4)


def test_every_stage_reads_the_model_export_alike():
    """The export's labels -> net.h5 records (quantize) -> the mapper's layer list -> the counter's
    labels: one Connection all the way."""
    torch = pytest.importorskip("torch")
    from calibration.netfile import LayerInput
    from calibration.quantize import _inputs
    from spikereg_neuro.connections import Connection
    from spikereg_neuro.model.config import ModelConfig
    from spikereg_neuro.model.unet import SpikeRegUNet
    from spikereg_neuro.profiler.counting import NetworkCounter

    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), readout_levels=2))
    exported = {d["name"]: d["inputs"] for d in net.export()}
    assert all(isinstance(c, Connection) for cs in exported.values() for c in cs)   # typed, not labels
    edges = _inputs(net)
    assert {n: [e.connection for e in es] for n, es in edges.items()} == exported
    rec = LayerInput.from_dict({"source": "enc0", "channels": [0, 4]})      # older files: no transform
    assert rec.connection == Connection("enc0") and rec.upsample == 1
    counter = NetworkCounter(net.export(), (16, 16, 16))
    assert {n: [c.connection for c in l.connections] for n, l in counter.layers.items()} == exported
    assert counter.structure()[-1]["inputs"] == [str(c) for c in exported["readout"]]
    labels = [dict(d, inputs=[str(c) for c in exported[d["name"]]]) for d in net.export()]
    assert NetworkCounter(labels, (16, 16, 16)).structure() == counter.structure()   # labels still read
