"""loihi/: resource mapping (limits, totals, hand-computed cores, brute-force axons), mapping.json
contract, profiler estimate on the mapping, deployable export round trip and validation, and
`loihi run` without lava-loihi."""
import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calibration.quantize import quantize_network
from loihi.export import DeployFileError, export_deployable, load_deployable, netx_verdict
from loihi.limits import LIMIT_CONSTANTS, CoreLimits
from loihi.mapping import CONTRACT_KEYS, build_mapping, load_mapping, write_mapping
from loihi.partition import partition_network
from loihi.resources import NetworkResources, layers_from_qnet, weight_chunks
from loihi.run import INRC_MESSAGE, loihi_available
from spikereg_neuro.checkpoint import save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet, upsample_spikes
from spikereg_neuro.profiler import NetworkCounter, count_patch, estimate_loihi2

torch.set_num_threads(1)
TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
ESTIMATE_KEYS = ("neurons", "synops_per_step", "spikes_out_per_step", "chip")


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    return SpikeRegUNet(ModelConfig(**TINY))


@pytest.fixture(scope="module")
def default_mapping():
    torch.manual_seed(0)
    layers = SpikeRegUNet().export()
    res = NetworkResources(layers, (32, 32, 32))
    return layers, res, partition_network(res, CoreLimits(encoding="sparse"))   # explicit-Sparse bound


@pytest.fixture(scope="module")
def shared_mapping():
    torch.manual_seed(0)
    layers = SpikeRegUNet().export()
    res = NetworkResources(layers, (32, 32, 32))
    return layers, res, partition_network(res, CoreLimits())                    # shared kernels (default)


@pytest.fixture(scope="module")
def tiny_qnet():
    return quantize_network(_tiny_net(), patch_size=(16, 16, 16))


# ============================================================================ mapping
def test_default_network_every_core_within_limits(default_mapping):
    layers, res, part = default_mapping
    L = part.limits
    assert part.violations() == []
    for c in part.cores:
        assert 1 <= c.neurons <= L.neurons_per_core
        assert c.memory_bytes <= L.memory_budget_bytes == LIMIT_CONSTANTS["memory_bytes_per_core"].value
        assert c.fan_in_axons <= L.fan_in_axons_per_core and c.fan_out_axons <= L.fan_out_axons_per_core
    for ch in part.chips:
        assert len(ch.cores) <= L.cores_per_chip == 120
        assert ch.neurons <= L.neurons_per_chip and ch.synapses <= L.synapses_per_chip
    # every neuron of every layer sits on exactly one core
    for name, plan in part.plans.items():
        lr = res.layers[name]
        cover = np.zeros((lr.out_channels, *lr.output_shape), dtype=np.int64)
        for c in plan.cores:
            (z0, z1), (y0, y1), (x0, x1) = c.block
            cover[c.channels[0]:c.channels[1], z0:z1, y0:y1, x0:x1] += 1
            assert c.neurons == (c.channels[1] - c.channels[0]) * (z1 - z0) * (y1 - y0) * (x1 - x0)
        assert (cover == 1).all()
    assert [c.id for c in part.cores] == list(range(len(part.cores)))


def test_default_network_totals_equal_network_counter(default_mapping):
    layers, res, part = default_mapping
    counter = NetworkCounter(layers, (32, 32, 32))
    assert sum(c.neurons for c in part.cores) == sum(l.neurons for l in counter.layers.values())
    # folded (upsampling merged), non-zero synapses: what the Sparse lowering stores
    extra = sum(c.extra_synapses for l in res.layers.values() for c in l.connections)
    assert extra == 0   # no folded weight of this network leaves the 8-bit range
    assert sum(c.synapses for c in part.cores) == sum(l.synapses("merged_nonzero") for l in counter.layers.values())
    for name, plan in part.plans.items():
        assert sum(c.synapses for c in plan.cores) == counter.layers[name].synapses("merged_nonzero")
        assert sum(c.neurons for c in plan.cores) == counter.layers[name].neurons


def test_shared_kernel_default_mapping(shared_mapping):
    """Loihi 2 default: every core stores its connections' kernels once (64 polyphase-folded taps
    for an upsampled source), within the shared-kernel neuron cap and memory, and its cores carry
    exactly the counter's folded non-zero connections."""
    layers, res, part = shared_mapping
    L = part.limits
    assert L.encoding == "shared" and L.neuron_cap == LIMIT_CONSTANTS["shared_neurons_per_core"].value == 3168
    assert part.violations() == []
    counter = NetworkCounter(layers, (32, 32, 32))
    for name, plan in part.plans.items():
        lr = res.layers[name]
        per_ch = sum(c.source_channels * (64 if c.upsample == 2 else 27) for c in lr.connections)
        assert lr.shared_kernel_entries_per_channel == per_ch
        for c in plan.cores:
            assert c.neurons <= 3168 and c.memory_bytes <= L.memory_budget_bytes
            assert c.synapses == (c.channels[1] - c.channels[0]) * per_ch
            assert c.synaptic_memory_bits == 8 * c.synapses
        assert sum(c.connections for c in plan.cores) == counter.layers[name].synapses("merged_nonzero")
    # far fewer cores than the explicit-Sparse bound, on a few chips
    assert len(part.cores) < 400 and len(part.chips) <= 4
    assert part.plans["enc0"].cores[0].fan_in_axons == 1          # the host's graded input
    d = L.describe()
    assert d["fan_in_axons_per_core"]["loihi1"] and not d["fan_in_axons_per_core"]["enforced"]
    assert not d["memory_bytes_per_core"]["loihi1"]


def _layer(name, cin, cout, inputs, k=3, stride=1, pad=1, window=2, weight=None):
    d = {"name": name, "type": "conv3d", "in_channels": cin, "out_channels": cout,
         "kernel_size": [k] * 3, "stride": [stride] * 3, "padding": [pad] * 3, "inputs": inputs,
         "time_window": window, "neuron_kind": "alif"}
    if weight is not None:
        d["weight"] = weight
    return d


def test_tiny_network_hand_computed_cores():
    # 1x1x1 conv, 1 -> 4 channels on 8^3: 2048 neurons, one synapse each. With at most 256 neurons
    # per core (memory far from binding: 256 x (12 B state + 16-bit synapse) + axons < 8 KiB) the
    # layer needs 2048 / 256 = 8 cores; 3 cores per chip -> ceil(8 / 3) = 3 chips.
    layers = [_layer("l0", 1, 4, ["input"], k=1, pad=0, weight=np.full((4, 1, 1, 1, 1), 2.0))]
    res = NetworkResources(layers, (8, 8, 8))
    lim = CoreLimits(encoding="sparse", neurons_per_core=256, cores_per_chip=3, fan_in_axons_per_core=None,
                     fan_out_axons_per_core=None)
    part = partition_network(res, lim)
    assert len(part.cores) == 8 and len(part.chips) == 3
    assert [len(ch.cores) for ch in part.chips] == [3, 3, 2]
    assert all(c.neurons == 256 and c.synapses == 256 for c in part.cores)
    # sparse memory: 256 synapses x (8-bit weight + 8-bit index) + axons x 10 bits; state 256 x 12 B
    for c in part.cores:
        assert c.synaptic_memory_bits == 256 * 16 + c.fan_in_axons * 10
        assert c.state_bytes == 256 * 12
    # 3x3x3 conv 1 -> 2 channels on 4^3 (128 neurons), 64 neurons per core -> 2 cores
    layers = [_layer("l0", 1, 2, ["input"])]
    part = partition_network(NetworkResources(layers, (4, 4, 4)),
                             CoreLimits(encoding="sparse", neurons_per_core=64, fan_in_axons_per_core=None,
                                        fan_out_axons_per_core=None))
    assert len(part.cores) == 2 and len(part.chips) == 1


def test_memory_limit_forces_more_cores():
    layers = [_layer("l0", 1, 4, ["input"], k=1, pad=0)]
    res = NetworkResources(layers, (8, 8, 8))
    # shared encoding: a core of n neurons in gc channels needs gc bytes of kernel + 12 n bytes of
    # state; 1600 bytes allow at most 128 neurons (a 4-channel slice: 4 + 12 x 128 = 1540)
    lim = CoreLimits(encoding="shared", memory_bytes_per_core=1600, fan_in_axons_per_core=None,
                     fan_out_axons_per_core=None)
    part = partition_network(res, lim)
    assert len(part.cores) == 2048 // 128
    assert max(c.memory_bytes for c in part.cores) <= 1600


def test_infeasible_limits_are_an_error():
    layers = [_layer("l0", 1, 4, ["input"])]
    with pytest.raises(ValueError, match="no slicing fits the per-core limits"):
        partition_network(NetworkResources(layers, (8, 8, 8)), CoreLimits(memory_bytes_per_core=16))
    with pytest.raises(ValueError, match="encoding must be one of"):
        CoreLimits(encoding="zip")


@pytest.mark.parametrize("encoding", ["sparse", "shared"])
def test_axon_counts_match_brute_force(tiny_qnet, encoding):
    """Explicit synapses: fan-in = distinct source neurons per core, fan-out = destination cores
    summed over neurons. Shared kernels: fan-in = distinct source cores (the host's input = 1),
    fan-out = distinct destination cores. Checked against the lowered connectivity (all-ones
    kernels: the structural connections)."""
    from sim.lowering import conv3d_matrix
    q = tiny_qnet
    res = NetworkResources(layers_from_qnet(q), (16, 16, 16))
    part = partition_network(res, CoreLimits(encoding=encoding, neurons_per_core=96, fan_in_axons_per_core=None,
                                             fan_out_axons_per_core=None))
    shapes = q.shapes((16, 16, 16))
    core_of = {}  # layer -> flat neuron index -> core id
    for name, plan in part.plans.items():
        a = np.empty(math.prod(shapes[name]), dtype=np.int64)
        idx = np.arange(a.size).reshape(shapes[name])
        for c in plan.cores:
            (z0, z1), (y0, y1), (x0, x1) = c.block
            a[idx[c.channels[0]:c.channels[1], z0:z1, y0:y1, x0:x1].ravel()] = c.id
        core_of[name] = a
    fan_in = {c.id: 0 for c in part.cores}
    fan_out = {c.id: 0 for c in part.cores}
    for l in q.layers:
        for e in l.inputs:
            ones = np.ones((l.out_channels, e.channels[1] - e.channels[0], *l.kernel_size), dtype=np.int64)
            m = conv3d_matrix(ones, shapes[e.source], l.stride, l.padding, upsample=e.transform == "upsample2").tocoo()
            dst = core_of[l.name][m.row]
            if encoding == "shared":
                if e.source == "input":
                    for i in np.unique(dst):
                        fan_in[int(i)] += 1
                    continue
                pairs = np.unique(np.stack([dst, core_of[e.source][m.col]]), axis=1)   # (dest, src core)
                for i, n in zip(*np.unique(pairs[0], return_counts=True)):
                    fan_in[int(i)] += int(n)
                for i, n in zip(*np.unique(pairs[1], return_counts=True)):
                    fan_out[int(i)] += int(n)
                continue
            pairs = np.unique(np.stack([dst, m.col]), axis=1)      # (dest core, source neuron)
            ids, cnt = np.unique(pairs[0], return_counts=True)
            for i, n in zip(ids, cnt):
                fan_in[int(i)] += int(n)
            if e.source != "input":
                src_core = core_of[e.source][pairs[1]]
                ids, cnt = np.unique(src_core, return_counts=True)
                for i, n in zip(ids, cnt):
                    fan_out[int(i)] += int(n)
    for c in part.cores:
        assert c.fan_in_axons == fan_in[c.id], c
        assert c.fan_out_axons == fan_out[c.id], c


def test_fanin_maps_match_lowered_rows(tiny_qnet):
    """Stored synapses per target neuron = non-zeros of that row of the Lava Sparse matrices."""
    from sim.lowering import lower_network
    q = tiny_qnet
    res = NetworkResources(layers_from_qnet(q), (16, 16, 16))
    low = lower_network(q, (16, 16, 16))
    for l in q.layers:
        for cr, lc in zip(res.layers[l.name].connections, low[l.name]):
            rows = sum(np.diff(m.tocsr().indptr) for m in lc.matrices)
            np.testing.assert_array_equal(cr.fanin.ravel(), rows)
            assert cr.chunks == len(lc.matrices) and cr.synapses == lc.synapses
    np.testing.assert_array_equal(weight_chunks(np.array([0, 2, 254, 256, -256, -258, 600])),
                                  [0, 1, 1, 2, 1, 2, 3])


def test_mapping_json_contract_and_summary(tmp_path):
    net = _tiny_net()
    m = build_mapping(net.export(), (16, 16, 16), source={"kind": "test"})
    paths = write_mapping(m, tmp_path / "map")
    loaded = load_mapping(paths["json"])
    for k in CONTRACT_KEYS:
        assert isinstance(loaded[k], list) and loaded[k]
    assert len(loaded["cores"]) == loaded["totals"]["cores"] and len(loaded["chips"]) == loaded["totals"]["chips"]
    assert [r["layer"] for r in loaded["layers"]] == [b.name for b in net.blocks()]
    for c in loaded["cores"]:
        for k in ESTIMATE_KEYS + ("layer", "synapses", "memory_bytes", "fan_in_axons", "fan_out_axons"):
            assert k in c
    assert set(loaded["limits"]) >= {"neurons_per_core", "memory_bytes_per_core", "fan_in_axons_per_core",
                                     "fan_out_axons_per_core", "cores_per_chip", "neurons_per_chip"}
    assert all(v["citation"] and v["kind"] for v in loaded["limits"].values())
    assert loaded["valid"] and loaded["network_counter_check"]["synapses_equal"]
    text = paths["summary"].read_text()
    assert "neuro-cores on" in text and "mapped once for one patch shape" in text
    bad = dict(loaded)
    del bad["chips"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="missing or malformed"):
        load_mapping(tmp_path / "bad.json")


def test_profiler_estimate_accepts_mapping(tmp_path):
    net = _tiny_net()
    g = torch.Generator().manual_seed(1)
    f, mv = torch.rand(1, 1, 16, 16, 16, generator=g), torch.rand(1, 1, 16, 16, 16, generator=g)
    counts = count_patch(net, f, mv)
    m = build_mapping(net.export(), (16, 16, 16), counts=counts)
    assert m["activity"]["given"]
    # per-core ops sum back to the layer's exact ops on every step
    T = counts.timeline_steps
    for name, lc in counts.layers.items():
        per = np.sum([c["synops_per_step"] for c in m["cores"] if c["layer"] == name], axis=0)
        np.testing.assert_allclose(per, lc.ops["merged_nonzero"] / counts.samples, rtol=1e-9, atol=1e-9)
        assert len(per) == T
    row = estimate_loihi2(counts, mapping=m["cores"])
    assert row["n_chips"] == len(m["chips"]) and row["chips_basis"] == "chips named in the mapping"
    assert f"{len(m['cores'])} cores" in row["latency_basis"]
    assert row["energy_mj"] > 0 and row["latency_ms"] > 0
    # and the JSON file's cores are accepted as they are
    p = write_mapping(m, tmp_path)["json"]
    row2 = estimate_loihi2(counts, mapping=load_mapping(p)["cores"])
    assert row2["latency_ms"] == pytest.approx(row["latency_ms"])


# ============================================================================ export
def test_netx_verdict_nothing_expressible(tiny_qnet):
    v = netx_verdict(tiny_qnet)
    assert [r["layer"] for r in v] == tiny_qnet.names
    assert not any(r["netx_expressible"] for r in v)
    assert all(any("3D convolution" in s for s in r["reasons"]) for r in v)
    assert any("concat" in s for s in v[4]["reasons"]) and any("ATRLIF" in s for s in v[0]["reasons"])


def test_export_round_trip(tiny_qnet, tmp_path):
    from calibration.emulator import lava_schedule
    q = tiny_qnet
    info = export_deployable(q, tmp_path / "deploy.h5")
    assert info["netx_expressible_layers"] == [] and info["netx_file"] is None
    d = load_deployable(tmp_path / "deploy.h5")
    assert d.layer_order == q.names and d.patch_shape == (16, 16, 16)
    sched = lava_schedule(q)
    shapes = q.shapes()
    total = 0
    for l in q.layers:
        pop = d.populations[l.name]
        assert pop["shape"] == tuple(shapes[l.name]) and pop["neuron"] == l.neuron
        for k in ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step", "bias_mant", "bias_exp"):
            assert pop[k] == l.atrlif[k]
        for k, (e, c) in enumerate(zip(l.inputs, d.connections[l.name])):
            np.testing.assert_array_equal(c.lava_weights, l.weight[:, e.channels[0]:e.channels[1]])
            assert c.weight_mant.dtype == np.int8
            assert (c.source, c.transform, c.channels, c.weight_exp) == (e.source, e.transform, e.channels, l.weight_exp)
            assert c.extra_delay == sched[l.name]["inputs"][k]["extra_delay"]
            mats = d.matrices(l.name, k)
            assert len(mats) == c.sparse_matrices and sum(m.nnz for m in mats) == c.stored_synapses
            total += c.stored_synapses
            # the matrices are the convolution of the (upsampled) source spikes, exactly
            src = d.populations[c.source]["shape"]
            x = (torch.rand(1, *src, generator=torch.Generator().manual_seed(k)) < 0.3).double()
            xu = upsample_spikes(x.unsqueeze(-1))[..., 0] if c.transform == "upsample2" else x
            y = F.conv3d(xu, torch.from_numpy(c.lava_weights).double(), stride=c.stride, padding=c.padding)
            np.testing.assert_array_equal(sum(m @ x.numpy().ravel() for m in mats), y.numpy().ravel())
    assert total == info["stored_synapses"]


def _corrupt(src, dst, fn):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


@pytest.mark.parametrize("fn, match", [
    (lambda f: f.attrs.__setitem__("format", "something/else"), "is not a spikereg-neuro/loihi-deploy"),
    (lambda f: f.attrs.__setitem__("format_version", 99), "unsupported format_version"),
    (lambda f: f["connections/enc1/0"].__delitem__("weight_mant"), "missing dataset 'weight_mant'"),
    (lambda f: (f["connections/enc1/0"].__delitem__("weight_mant"),
                f["connections/enc1/0"].create_dataset("weight_mant", data=np.zeros((4, 4, 3, 3, 3), np.int16))),
     "must be int8"),
    (lambda f: f["connections/dec2/1"].attrs.__setitem__("channels", np.array([0, 8])), "do not continue"),
    (lambda f: f["connections/enc2/0"].attrs.__setitem__("source", "dec0"), "not the input or an earlier layer"),
    (lambda f: f["populations/enc1"].attrs.__setitem__("shape", np.array([4, 4, 4, 4])), "gives spatial shape"),
    (lambda f: f["populations/enc1"].attrs.__delitem__("theta_0"), "missing attribute 'theta_0'"),
    (lambda f: f["populations/enc1"].attrs.__setitem__("neuron", "lif"), "neuron 'lif' not in"),
    (lambda f: f["connections/enc1/0"].attrs.__setitem__("weight_exp", 12), r"outside \[-8, 7\]"),
    (lambda f: f["populations"].create_group("ghost"), "not in layer_order"),
])
def test_export_validation_errors(tiny_qnet, tmp_path, fn, match):
    good = tmp_path / "good.h5"
    export_deployable(tiny_qnet, good)
    bad = _corrupt(good, tmp_path / "bad.h5", fn)
    with pytest.raises(DeployFileError, match=match):
        load_deployable(bad)


def test_deploy_field_lists_cover_the_connection_and_populations(tiny_qnet, tmp_path):
    """CONNECTION_ATTRS holds every stored DeployConnection field; a written file holds exactly the
    listed attributes (plus the derived matrix_shape)."""
    import dataclasses
    from loihi.export import CONNECTION_ATTRS, DeployConnection, INPUT_POPULATION_ATTRS, POPULATION_ATTRS
    names = [a.name for a in CONNECTION_ATTRS]
    assert sorted(names + ["target", "index", "weight_mant"]) == sorted(f.name for f in dataclasses.fields(DeployConnection))
    export_deployable(tiny_qnet, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert set(f["populations/input"].attrs) == {a.name for a in INPUT_POPULATION_ATTRS}
        for l in tiny_qnet.layers:
            want = {a.name for a in POPULATION_ATTRS} - ({"output_scale"} if l.output_scale is None else set())
            assert set(f["populations"][l.name].attrs) == want
            for h in f["connections"][l.name].values():
                assert set(h.attrs) == set(names) | {"matrix_shape"}


def test_export_not_hdf5(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("not hdf5")
    with pytest.raises(DeployFileError, match="not an HDF5 file"):
        load_deployable(p)


# ============================================================================ CLI
def test_cli_map_and_export_from_checkpoint(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "tiny.pt", _tiny_net())
    rc = main(["loihi", "map", "--net", str(ckpt), "--out", str(tmp_path / "map"), "--patch", "16", "16", "16",
               "--no-sensitivity"])
    assert rc == 0
    m = load_mapping(tmp_path / "map" / "mapping.json")
    assert m["source"]["kind"] == "checkpoint" and m["patch_shape"] == [16, 16, 16]
    rc = main(["loihi", "export", "--net", str(ckpt), "--out", str(tmp_path / "d.h5"), "--patch", "16", "16", "16"])
    assert rc == 0
    out = capsys.readouterr()
    assert "netx-expressible layers: 0 of 8" in out.out and "NOT data-calibrated" in out.err
    assert load_deployable(tmp_path / "d.h5").patch_shape == (16, 16, 16)
    # a patch off the size multiple, or beyond any volume the toolkit registers: one line, nothing written
    for patch, msg in ((["7", "7", "7"], "positive multiple of 8"), (["0", "8", "8"], "positive multiple of 8"),
                       (["4096"] * 3, "68,719,476,736 voxels")):
        for cmd, out in (("map", tmp_path / "map2"), ("export", tmp_path / "d2.h5")):
            assert main(["loihi", cmd, "--net", str(ckpt), "--out", str(out), "--patch", *patch]) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert msg in err[-1] and err[-1].startswith(f"spikereg-neuro loihi {cmd}: error: --patch")
            assert not out.exists()


def test_loihi_run_without_lava_loihi_exits_nonzero(tiny_qnet, tmp_path, capsys):
    if loihi_available():  # pragma: no cover - only on INRC systems
        pytest.skip("lava-loihi is installed: the hardware path applies")
    from calibration.netfile import save_qnet
    net_h5 = save_qnet(tmp_path / "net.h5", tiny_qnet)
    rc = main(["loihi", "run", "--net", str(net_h5)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lava-loihi" in err and "INRC" in err and "spikereg-neuro simulate" in err
    assert INRC_MESSAGE in err
    assert not (tmp_path / "loihi_run.json").exists()


def test_shared_mapping_balances_synaptic_ops():
    """With counts, shared-kernel layers are cut finer where their cores carry the most ops: the
    modelled chips x time does not grow, and the per-core ops still sum to the layer's ops."""
    from loihi.partition import balance_neuron_caps, layer_step_loads_ns
    net = _tiny_net()
    g = torch.Generator().manual_seed(3)
    f, mv = torch.rand(1, 1, 16, 16, 16, generator=g), torch.rand(1, 1, 16, 16, 16, generator=g)
    counts = count_patch(net, f, mv)
    res = NetworkResources(net.export(), (16, 16, 16))
    lim = CoreLimits(shared_neurons_per_core=512)
    caps, rep = balance_neuron_caps(res, lim, counts)
    assert rep["cores_balanced"] >= rep["cores_min"]
    t = rep["estimated_patch_time_us"]
    assert rep["chips"]["balanced"] * t["balanced"] <= rep["chips"]["min_cores"] * t["min_cores"] + 1e-9
    assert all(1 <= v <= 512 for v in caps.values())
    loads = layer_step_loads_ns(res, counts)
    assert set(loads) == set(res.layers) and all(len(v) == counts.timeline_steps for v in loads.values())
    m = build_mapping(net.export(), (16, 16, 16), lim, counts=counts)
    assert m["balance"] is not None and m["valid"]
    for name, lc in counts.layers.items():
        per = np.sum([c["synops_per_step"] for c in m["cores"] if c["layer"] == name], axis=0)
        np.testing.assert_allclose(per, lc.ops["merged_nonzero"] / counts.samples, rtol=1e-9, atol=1e-9)
    unbalanced = build_mapping(net.export(), (16, 16, 16), lim, counts=counts, balance=False)
    assert unbalanced["balance"] is None and len(m["cores"]) >= len(unbalanced["cores"])
