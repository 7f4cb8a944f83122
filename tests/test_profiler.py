"""Profiler: exact counting on hand-made spike trains, the Loihi 2 energy model on hand numbers,
YAML overrides, GPU measurement/estimate labels."""
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.neuron import NeuronConfig
from spikereg_neuro.model.unet import SpikeRegUNet, upsample_spikes
from spikereg_neuro.profiler import (DEFAULT_CONSTANTS_YAML, VARIANTS, LayerCounts, Loihi2Constants,
                                     NetworkCounter, ProfileCounts, calibration_check, count_patch,
                                     counts_from_inference, estimate_gpu, estimate_loihi2,
                                     load_constants, measure_cpu, measure_gpu,
                                     patches_per_scale, record_spikes, register_and_count)
from spikereg_neuro.profiler import gpu_energy
from spikereg_neuro.connections import Connection

torch.set_num_threads(1)
# the dataclass defaults of before they became the packaged config's, which these tests were written for
TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
            readout_scale=0.5, weight_gain=8.0, readout_levels=1, neuron=NeuronConfig(graded_spike=False))


def _tiny_net_and_patches(batch, seed):
    """The TINY network (eval, weights from torch seed 0) and ``batch`` random 16^3 fixed and
    moving patches drawn from generator ``seed``."""
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, 16, 16, 16)
    return net, torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


def _layer(name, cin, cout, inputs, stride=1, window=2, weight=None, type="conv3d"):
    d = {"name": name, "type": type, "in_channels": cin, "out_channels": cout,
         "kernel_size": [3, 3, 3], "stride": [stride] * 3, "padding": [1, 1, 1],
         "inputs": inputs, "time_window": window}
    if weight is not None:
        d["weight"] = weight
    return d


def _one_spike(shape, pos, channels=1, T=2, t=1):
    s = torch.zeros(1, channels, *shape, T)
    s[(0, 0, *pos, t)] = 1.0
    return s


def _count_l1(layers, shape, src_shape, pos, l0_window=2):
    counter = NetworkCounter(layers, shape)
    l1 = counter.layers["l1"]
    spikes = {"l0": _one_spike(src_shape, pos, T=l0_window),
              "l1": torch.zeros(1, l1.out_channels, *l1.output_shape, l1.window)}
    counts = counter.count_spikes(spikes, torch.zeros(1, 1, *shape))
    return counts, counter


# -- counting: single spikes with hand-computed fan-outs -----------------------------------------
@pytest.mark.parametrize("pos, fan", [((3, 4, 3), 27), ((0, 0, 0), 8), ((0, 4, 4), 18), ((7, 7, 3), 12)])
def test_single_spike_stride1_fanout(pos, fan):
    layers = [_layer("l0", 1, 1, ["input"]), _layer("l1", 1, 4, ["l0"])]
    counts, _ = _count_l1(layers, (8, 8, 8), (8, 8, 8), pos)
    l1 = counts.layers["l1"]
    for v in VARIANTS:  # no weights given: every synapse counts; not upsampled: merged == taps
        assert l1.ops[v].sum() == fan * 4
    assert l1.ops["dense"].tolist() == [0.0, fan * 4.0]  # the spike was on step 1
    assert l1.messages.sum() == 1 and counts.totals()["synops"] == fan * 4
    assert counts.totals()["graded_macs"] == 0


@pytest.mark.parametrize("pos, fan", [((2, 2, 2), 1), ((3, 3, 3), 8), ((3, 2, 2), 2), ((7, 7, 7), 1), ((7, 3, 0), 2)])
def test_single_spike_stride2_fanout(pos, fan):
    # out y reads source 2y-1, 2y, 2y+1: even p by one output, odd p by two (p=7 only y=3 of 4)
    layers = [_layer("l0", 1, 1, ["input"]), _layer("l1", 1, 3, ["l0"], stride=2)]
    counts, counter = _count_l1(layers, (8, 8, 8), (8, 8, 8), pos)
    assert counter.layers["l1"].output_shape == (4, 4, 4)
    assert counts.layers["l1"].ops["dense"].sum() == fan * 3


@pytest.mark.parametrize("pos, taps, merged", [((1, 2, 1), 6 ** 3, 4 ** 3), ((0, 0, 0), 5 ** 3, 3 ** 3),
                                               ((3, 1, 2), 5 * 6 * 6, 3 * 4 * 4)])
def test_single_spike_upsampled_source(pos, taps, merged):
    # source 4^3 -> nearest x2 -> 8^3 -> conv 3^3 pad 1: an interior source neuron covers a 2-voxel
    # block per axis, read through 6 (output, tap) pairs by 4 distinct outputs; 5 and 3 at a border
    layers = [_layer("l0", 1, 1, ["input"], stride=2), _layer("l1", 1, 2, ["up(l0)"])]
    counts, counter = _count_l1(layers, (8, 8, 8), (4, 4, 4), pos)
    assert counter.layers["l1"].output_shape == (8, 8, 8)
    ops = counts.layers["l1"].ops
    assert ops["dense"].sum() == taps * 2 and ops["nonzero"].sum() == taps * 2
    assert ops["merged"].sum() == merged * 2 and ops["merged_nonzero"].sum() == merged * 2


def test_nonzero_and_merged_counts_match_the_composite_operator():
    """Fan-out maps vs the Jacobian of upsample+conv (random integer weights with cancellations)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-1, 2, (3, 2, 3, 3, 3), generator=g).double()
    src = (3, 4, 3)
    layers = [_layer("l0", 1, 2, ["input"], stride=2), _layer("l1", 2, 3, ["up(l0)"], weight=w.numpy())]
    counter = NetworkCounter(layers, tuple(2 * s for s in src))
    assert counter.layers["l0"].output_shape == src

    def jac(weight):
        f = lambda x: F.conv3d(upsample_spikes(x[..., None])[..., 0], weight, None, 1, 1).flatten()
        return torch.autograd.functional.jacobian(f, torch.zeros(1, 2, *src, dtype=torch.float64))\
            .reshape(-1, 2, *src)

    ones = torch.ones_like(w)
    maps = {"dense": jac(ones).sum(0), "nonzero": jac((w != 0).double()).sum(0),
            "merged": (jac(ones) != 0).sum(0), "merged_nonzero": (jac(w) != 0).sum(0)}
    for v in VARIANTS:
        assert np.array_equal(counter.fanout_map("l1", "up(l0)", v), maps[v].numpy()), v
    assert counter.layers["l1"].synapses("merged_nonzero") < counter.layers["l1"].synapses("merged")
    assert counter.layers["l1"].zero_weights == int((w == 0).sum())


def test_exact_counts_of_a_real_forward_pass_match_brute_force():
    net, f, m = _tiny_net_and_patches(batch=1, seed=1)
    rec = record_spikes(net, f, m)
    layers = net.export()
    counter = NetworkCounter(layers, (16, 16, 16))
    counts = counter.count_spikes(rec["spikes"], rec["graded_input"])
    for name, a in net.activity.items():
        assert np.array_equal(counts.layers[name].spikes[-len(a):], a.numpy())
    for d in layers:
        L = counter.layers[d["name"]]
        xs = []
        for s in d["inputs"]:
            src, up = Connection.parse(s).source, Connection.parse(s).upsample
            x = (rec["graded_input"] != 0).float() if src == "input" else rec["spikes"][src]
            x = x[..., -L.window:]
            xs.append(upsample_spikes(x) if up == 2 else x)
        x = torch.cat(xs, 1).double()
        frames = x.permute(0, 5, 1, 2, 3, 4).reshape(-1, *x.shape[1:5])
        w = torch.from_numpy(np.asarray(d["weight"], dtype=np.float64))
        for v, k in (("dense", torch.ones_like(w)), ("nonzero", (w != 0).double())):
            brute = F.conv3d(frames, k, None, tuple(d["stride"]), tuple(d["padding"])).sum(dim=(1, 2, 3, 4))
            assert np.array_equal(counts.layers[d["name"]].ops[v][L.offset:], brute.numpy()), (d["name"], v)
        ann = F.conv3d(torch.ones(1, d["in_channels"], *L.input_shape, dtype=torch.float64),
                       torch.ones_like(w), None, tuple(d["stride"]), tuple(d["padding"])).sum()
        assert L.ann_macs == int(ann) < L.ann_macs_padded
    # graded first layer: MACs, not ACs
    t = counts.totals("dense")
    assert t["graded_macs"] == counts.layers["enc0"].ops["dense"].sum() > 0
    assert t["synops"] == sum(counts.layers[n].ops["dense"].sum() for n in counts.layers if n != "enc0")
    nb = counts.neurobench()
    assert nb["effective_macs"] == t["graded_macs"] and nb["effective_acs"] == t["synops"]
    spk = sum(a.sum().item() for a in net.activity.values())
    neuron_steps = sum(counter.layers[n].neurons * counter.layers[n].window for n in net.activity)
    assert nb["activation_sparsity"] == pytest.approx(1 - spk / neuron_steps)
    zeros = sum(int((np.asarray(d["weight"]) == 0).sum()) for d in layers)
    alls = sum(np.asarray(d["weight"]).size for d in layers)
    assert nb["connection_sparsity"] == pytest.approx(zeros / alls)
    assert nb["footprint_weight_bytes"] == alls
    # neuron updates: neurons x window, on the last `window` steps of the timeline
    assert counts.timeline_steps == 4
    dec0 = counts.layers["dec0"]
    assert dec0.neuron_updates.tolist() == [0, 0, dec0.neurons, dec0.neurons]
    assert dec0.idle_neuron_updates.tolist() == [dec0.neurons, dec0.neurons, 0, 0]


def test_counts_add_over_patches_and_batches():
    net, f, m = _tiny_net_and_patches(batch=2, seed=2)
    both = count_patch(net, f, m)
    a, b = count_patch(net, f[:1], m[:1]), count_patch(net, f[1:], m[1:])
    s = a + b
    assert s.samples == both.samples == 2 and sum([a, b]).samples == 2
    for v in VARIANTS:
        assert s.totals(v) == both.totals(v)
    assert np.array_equal(s.layers["dec1"].ops["merged_nonzero"], both.layers["dec1"].ops["merged_nonzero"])
    other = count_patch(net, torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="different"):
        a + other


def test_mean_fanout_path_equals_exact_for_uniform_activity():
    """All neurons firing on all steps: spikes x mean fan-out is then exact."""
    net = SpikeRegUNet(ModelConfig(**TINY))
    counter = NetworkCounter(net.export(), (16, 16, 16))
    spikes = {n: torch.ones(1, l.out_channels, *l.output_shape, l.window)
              for n, l in counter.layers.items() if l.spiking}
    exact = counter.count_spikes(spikes, torch.ones(1, 2, 16, 16, 16))
    activity = {n: s.sum(dim=(0, 1, 2, 3, 4)).numpy() for n, s in spikes.items()}
    approx = counter.count_activity(activity, samples=1)
    assert not approx.exact and any("dense" in n for n in approx.notes)
    for v in VARIANTS:
        te, ta = exact.totals(v), approx.totals(v)
        for k in ("synops", "graded_macs", "spikes", "neuron_updates", "spike_messages"):
            assert ta[k] == pytest.approx(te[k], rel=1e-12), (v, k)
    assert exact.totals()["synops"] + exact.totals()["graded_macs"] == counter.dense_ops_all_steps()
    with pytest.raises(ValueError, match="steps"):
        counter.count_activity({**activity, "enc1": np.ones(5)}, samples=1)


def test_input_once_counts_enc0_input_only_on_step_0():
    """With the input sent once (QuantizedNet / ModelConfig ``input_once``) enc0's graded input
    events and MACs exist only on step 0; without the flag (getattr default False) every step."""
    net = SpikeRegUNet(ModelConfig(**TINY))
    counter = NetworkCounter(net.export(), (16, 16, 16))
    spikes = {n: torch.zeros(1, l.out_channels, *l.output_shape, l.window)
              for n, l in counter.layers.items() if l.spiking}
    x = torch.ones(1, 2, 16, 16, 16)
    every = counter.count_spikes(spikes, x)
    once = counter.count_spikes(spikes, x, input_once=True)
    e0, o0 = every.layers["enc0"], once.layers["enc0"]
    assert o0.ops["dense"][0] == e0.ops["dense"][0] > 0 and not o0.ops["dense"][1:].any()
    assert o0.messages[0] == 2 * 16 ** 3 and not o0.messages[1:].any()
    assert once.totals()["graded_macs"] * e0.window == every.totals()["graded_macs"]
    impulse = types.SimpleNamespace(value=x, steps=e0.window)        # the model's Impulse part
    assert counter.count_spikes(spikes, impulse).totals() == once.totals()
    act = {n: np.zeros(l.window) for n, l in counter.layers.items() if l.spiking}
    a = counter.count_activity(act, 1, input_once=True).layers["enc0"]
    assert a.ops["dense"][0] == o0.ops["dense"][0] and not a.ops["dense"][1:].any()
    from spikereg_neuro.profiler.counting import input_sent_once
    assert not input_sent_once(types.SimpleNamespace()) and input_sent_once(types.SimpleNamespace(input_once=True))
    assert input_sent_once(types.SimpleNamespace(cfg=types.SimpleNamespace(input_once=True)))


def test_whole_registration_counts(tmp_path):
    from spikereg_neuro.checkpoint import save_checkpoint
    from spikereg_neuro.inference import SpikeRegInference
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", SpikeRegUNet(ModelConfig(**TINY)))
    reg = SpikeRegInference(path, patch_size=16, stride=8)
    rng = np.random.default_rng(0)
    f, m = rng.random((20, 17, 16)).astype(np.float32), rng.random((20, 17, 16)).astype(np.float32)
    u, exact = register_and_count(reg, f, m)
    assert u.shape == (3, 20, 17, 16)
    per_scale = patches_per_scale(f.shape, reg.patch, reg.stride, reg.net.cfg.scales)
    assert exact.samples == sum(per_scale) and exact.exact
    approx = counts_from_inference(reg, volume_shape=f.shape)
    assert approx.samples == exact.samples and not approx.exact
    te, ta = exact.totals(), approx.totals()
    for k in ("spikes", "neuron_updates", "spike_messages", "idle_neuron_updates"):
        assert te[k] == ta[k], k
    assert ta["synops"] == pytest.approx(te["synops"], rel=0.1)  # mean fan-out: close, not equal
    with pytest.raises(ValueError, match="tiling"):
        counts_from_inference(reg, volume_shape=(64, 64, 64))


# -- Loihi 2 energy model on hand numbers ------------------------------------------------------------
def _hand_counts(samples=1):
    """One layer: 10 neurons, 4 steps, 1000 synaptic ops (250 per step), 50 spikes delivered."""
    T = 4
    lc = LayerCounts(
        name="l", spiking=True, graded_input=False, neurons=10, window=4, state_bytes=60,
        weights=100, zero_weights=20, synapses={v: 100 for v in VARIANTS}, ann_macs=100,
        ann_macs_padded=120, fan_out={}, fan_in={},
        spikes=np.full(T, 5.0) * samples, ops={v: np.full(T, 250.0) * samples for v in VARIANTS},
        messages=np.full(T, 12.5) * samples, neuron_updates=np.full(T, 10.0) * samples,
        idle_neuron_updates=np.zeros(T))
    return ProfileCounts(T, samples, True, {"l": lc})


def test_loihi2_energy_on_hand_numbers():
    """The formulas, on the Loihi 1 Table 2 preset (round numbers)."""
    t2 = load_constants(preset="loihi1_table2")
    r = estimate_loihi2(_hand_counts(), t2)
    assert r["source"] == r["energy_source"] == r["latency_source"] == "estimated"
    assert "estimated" in r["label"] and "ASSUMED" in r["latency_basis"]
    b = r["energy_breakdown_mj"]
    assert b["synaptic_ops"] == pytest.approx(1000 * 23.6e-9)
    assert b["neuron_updates"] == pytest.approx(40 * 81e-9)
    assert b["spike_routing"] == pytest.approx(50 * 1.7e-9)
    assert b["graded_input_ops"] == 0 and b["idle_neuron_updates"] == 0
    assert r["latency_ms"] == pytest.approx(4 * 152.84e-3)
    assert b["static"] == pytest.approx(0.232078 * 4 * 152.84e-6 * 1e3)
    assert r["energy_mj"] == pytest.approx((23600 + 3240 + 85) * 1e-9 + 0.232078 * 4 * 152.84e-3)
    assert r["n_chips"] == 1 and r["energy_basis"] == "gross"
    assert r["dynamic_mj"] + b["static"] == pytest.approx(r["energy_mj"])
    assert set(r["constants"]) == set(Loihi2Constants().as_dict())
    assert all(c["citation"] for c in r["constants"].values())
    # with a mapping: t_step = 250 x 3.5 + 10 x 8.4 + 465 = 1424 ns
    r = estimate_loihi2(_hand_counts(), t2, mapping=[{"neurons": 10, "synops_per_step": 250, "hops_per_step": 2}])
    assert r["step_time_us"] == pytest.approx(1.424)
    assert r["latency_ms"] == pytest.approx(4 * 1.424e-3)
    assert r["energy_breakdown_mj"]["static"] == pytest.approx(0.232078 * 4 * 1.424e-6 * 1e3)
    assert r["energy_breakdown_mj"]["spike_routing"] == pytest.approx((50 * 1.7 + 8 * 3.5) * 1e-9)
    assert "mapping" in r["latency_basis"]
    # two samples: everything doubles, per-sample figures stay
    r2 = estimate_loihi2(_hand_counts(2), t2, mapping=[{"neurons": 10, "synops_per_step": 250}])
    r1 = estimate_loihi2(_hand_counts(1), t2, mapping=[{"neurons": 10, "synops_per_step": 250}])
    assert r2["energy_mj"] == pytest.approx(2 * r1["energy_mj"])
    assert r2["energy_mj_per_sample"] == pytest.approx(r1["energy_mj_per_sample"])
    naive = estimate_loihi2(_hand_counts(), t2, mapping="naive")  # one core; + 5 spikes x 2.1 ns
    assert naive["step_time_us"] == pytest.approx(1.424 + 5 * 2.1e-3) and naive["n_chips"] == 1


def test_presets_take_energy_and_time_from_one_source():
    """Default: Hala Point-derived (Loihi 2) synaptic-op energy and time; the bracket's other end:
    Loihi 1 Table 2. Each pair shares its source (citation)."""
    from spikereg_neuro.profiler.loihi2_energy import HALA_POINT, PRESETS
    d, t2 = Loihi2Constants(), load_constants(preset="loihi1_table2")
    dyn = HALA_POINT["max_power_w"] - HALA_POINT["chips"] * d.value("static_power_w")
    assert d.value("e_synop_pj") == pytest.approx(dyn / HALA_POINT["synops_per_s"] * 1e12)
    assert d.value("t_synop_ns") == pytest.approx(HALA_POINT["cores"] / HALA_POINT["synops_per_s"] * 1e9)
    assert "Hala Point" in d.e_synop_pj.citation and "Hala Point" in d.t_synop_ns.citation
    assert t2.value("e_synop_pj") == 23.6 and t2.value("t_synop_ns") == 3.5
    assert "LOIHI 1" in t2.e_synop_pj.citation and "LOIHI 1" in t2.t_synop_ns.citation
    assert set(PRESETS) == {"hala_point", "loihi1_table2"} and load_constants(preset="hala_point") == d
    with pytest.raises(ValueError, match="preset"):
        load_constants(preset="loihi3")


def test_yaml_constants_override(tmp_path):
    assert load_constants(DEFAULT_CONSTANTS_YAML) == Loihi2Constants()  # shipped YAML == code
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"e_synop_pj": 10.0,
                                 "static_power_w": {"value": 0.0, "unit": "W", "citation": "test"}}))
    c = load_constants(p)
    assert c.e_synop_pj.value == 10.0 and c.e_synop_pj.kind == "override"
    assert "overridden" in c.e_synop_pj.citation and c.static_power_w.citation == "test"
    base, new = estimate_loihi2(_hand_counts()), estimate_loihi2(_hand_counts(), c)
    assert new["energy_breakdown_mj"]["synaptic_ops"] == pytest.approx(1000 * 10e-9)
    assert new["energy_breakdown_mj"]["static"] == 0
    assert new["energy_mj"] < base["energy_mj"]
    assert new["constants"]["e_synop_pj"]["value"] == 10.0
    p.write_text(yaml.safe_dump({"e_synop_pj": {"value": 0.01, "unit": "nJ"}}))
    with pytest.raises(ValueError, match="unit"):
        load_constants(p)
    p.write_text(yaml.safe_dump({"e_synapse": 1.0}))
    with pytest.raises(ValueError, match="unknown"):
        load_constants(p)
    assert load_constants(overrides={"t_barrier_ns": 0}).t_barrier_ns.value == 0
    assert load_constants(overrides={"e_synop_pj": "1e-3"}).e_synop_pj.value == 1e-3  # YAML 1.1 string
    for bad in (-5, float("nan"), float("inf"), "many", {"value": True}):
        with pytest.raises(ValueError, match=r"e_synop_pj: value must be a finite number >= 0 \(pJ\)"):
            load_constants(overrides={"e_synop_pj": bad})
    p.write_text("e_synop_pj: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_constants(p)


def test_calibration_check_against_pilotnet():
    r = calibration_check()
    pn = r["pilotnet_structure"]
    assert pn["neurons"] == 200 * 66 * 3 + 99 * 32 * 24 + 49 * 15 * 36 + 24 * 7 * 48 + 22 * 4 * 64 \
        + 20 * 2 * 64 + 100 + 50 + 10 + 1
    assert pn["cores"] == 74  # the notebook's mapping total
    conv4 = next(x for x in pn["layers"] if x["layer"] == "conv4")
    assert conv4["synapses"] == 64 * 48 * (22 * 3) * 10  # H: 2 + 3 + 3 + 2 valid taps (pad 1, stride 2)
    assert r["measured"]["step_time_us"] == pytest.approx(1e6 / (408.91 * 16))
    lo, hi = r["model_dynamic_energy_per_step_uj"].values()
    assert lo < r["measured"]["dynamic_energy_per_step_uj"] < hi and r["measured_within_bracket"]
    assert 0 < r["implied_fraction_of_dense_synaptic_load"] < 1
    assert "Hala Point" in r["verdict"] and r["source"] == "estimated"
    assert "Loihi 1" in calibration_check(load_constants(preset="loihi1_table2"))["verdict"]


# -- GPU / CPU ------------------------------------------------------------------------------------
def test_gpu_estimate_is_labelled_estimated():
    # default: TF32 tensor-core peak energy per MAC; with a latency, idle power x latency is added (gross)
    r = estimate_gpu(1e9)
    assert r["energy_per_mac_basis"] == "h100_sxm_tf32_peak_pj_per_mac" and r["energy_mj"] == pytest.approx(2.831)
    assert r["latency_ms"] is None and r["energy_basis"] == "dynamic"
    from spikereg_neuro.profiler import estimate_gpu_latency
    lat = estimate_gpu_latency(1e9, layers=[(5e8, 1e6), (5e8, 3.35e9)])   # 2nd layer memory-bound: 1 ms
    assert lat["latency_ms"] == pytest.approx(5e8 / 247.25e12 * 1e3 + 1.0) and lat["best_case"]
    g = estimate_gpu(1e9, latency_ms=lat["latency_ms"])
    assert g["energy_basis"] == "gross" and g["dynamic_mj"] == pytest.approx(2.831)
    assert g["energy_mj"] == pytest.approx(2.831 + 26.0 * lat["latency_ms"])
    assert "arXiv:2605.23918" in g["constants"]["h100_idle_power_w_lower_bound"]["citation"]
    r = estimate_gpu(1e9, basis="horowitz_fp32_mac_pj")
    assert r["energy_source"] == "estimated" and r["energy_mj"] == pytest.approx(4.6)
    assert r["latency_ms"] is None and r["latency_source"] == "not measured" and r["lower_bound"]
    assert "Horowitz" in r["constants"]["horowitz_fp32_mac_pj"]["citation"]
    r = estimate_gpu(1e9, basis="h100_sxm_fp32_peak_pj_per_mac")
    assert r["energy_mj"] == pytest.approx(20.9) and not r["lower_bound"]
    with pytest.raises(ValueError, match="citation"):
        estimate_gpu(1e9, pj_per_mac=1.0)
    with pytest.raises(ValueError):
        estimate_gpu(1e9, basis="nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_measure_gpu_refuses_without_cuda():
    with pytest.raises(RuntimeError, match="estimate_gpu"):
        measure_gpu(lambda: None)


def test_measure_gpu_arithmetic_with_a_fake_nvml(monkeypatch):
    """Idle power subtraction and per-call division, on a simulated 50 W idle + 5 mJ per call."""
    import time as _time
    state = {"busy_mj": 0.0, "t0": _time.perf_counter()}
    fake = types.SimpleNamespace(
        nvmlDeviceGetTotalEnergyConsumption=lambda h: int(50.0 * (_time.perf_counter() - state["t0"]) * 1e3
                                                          + state["busy_mj"]),
        nvmlDeviceGetName=lambda h: "FakeGPU", nvmlShutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_energy, "_nvml_handle", lambda device: object())

    def fn():
        _time.sleep(0.002)
        state["busy_mj"] += 5.0

    r = measure_gpu(fn, n_repeats=5, device="cpu", min_seconds=0.1, idle_seconds=0.1, warmup=1)
    assert r["energy_source"] == r["latency_source"] == "measured"
    assert r["idle_power_w"] == pytest.approx(50.0, rel=0.02)
    assert r["dynamic_mj"] == pytest.approx(5.0, abs=0.5) and r["energy_basis"] == "gross"
    assert r["gross_energy_mj"] == r["energy_mj"] > r["dynamic_mj"] and r["n_calls"] >= 5 and r["latency_ms"] >= 2.0


@pytest.mark.skipif(not torch.cuda.is_available() or not gpu_energy.nvml_available(),
                    reason="needs a CUDA GPU with an NVML energy counter")
def test_measure_gpu_on_a_real_gpu():
    x = torch.randn(2048, 2048, device="cuda")
    r = measure_gpu(lambda: x @ x, n_repeats=10, min_seconds=1.0, idle_seconds=1.0)
    assert r["energy_source"] == "measured" and r["latency_ms"] > 0 and r["gross_energy_mj"] > 0


def test_measure_cpu():
    r = measure_cpu(lambda: sum(range(1000)), repeats=3)
    assert r["latency_source"] == "measured" and r["repeats"] == 3 and r["latency_ms"] >= 0
    assert r["energy_source"] == "not measured"
