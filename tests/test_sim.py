"""sim/: the Lava CPU backend - lowering vs the emulator's integer convolution, a Lava run of a tiny
network spike for spike against the emulator, the timeout guard, and the simulate command."""
import dataclasses
import json
import os
import time

import numpy as np
import pytest
import torch

from calibration import loihi_rules as R
from calibration.emulator import connection_output, emulate, payload_of
from calibration.netfile import LayerInput, QuantizedLayer, save_qnet
from calibration.quantize import quantize_network
from sim.compare import compare_results, readout_sha256, spikes_per_step
from sim.graph import plan_layers
from sim.lowering import (LoweringError, conv3d_matrix, lower_connection, lower_network,
                          split_synapse_range)
from sim.run import SimTimeout, run_lava
from spikereg_neuro.cli import main
from spikereg_neuro.data.dataset import DataConfig
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.neuron import NeuronConfig
from spikereg_neuro.model.unet import SpikeRegUNet

torch.set_num_threads(1)

#: the brief's tiny network; weight_gain 16 so that every layer fires on a 16^3 patch (and the
#: folded upsampling weights overflow 8 bits, which exercises the split into several Sparse)
#: (readout_scale, readout_levels, binary spikes: the dataclass defaults these tests were written for)
TINY = ModelConfig(enc_channels=(2, 2, 4, 4), dec_channels=(4, 2, 2), enc_windows=(4, 3, 2, 2), dec_window=2,
                   weight_gain=16.0, readout_scale=0.5, readout_levels=1, neuron=NeuronConfig(graded_spike=False))
LAVA_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def qnet():
    torch.manual_seed(0)
    return quantize_network(SpikeRegUNet(TINY).eval(), source_checkpoint="tiny", source_sha256="0" * 64,
                            patch_size=(16, 16, 16), stride=(8, 8, 8))


def smooth_payload(size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 2, size, size, size, generator=g), 3, 1, 1)
    x = (x - x.min()) / (x.max() - x.min())
    return torch.round(x * 255).to(torch.int64)


def _layer(weight, stride=1, exp=0, inputs=None):
    """A bare conv layer (3x3x3, padding 1) for the emulator's connection_output."""
    inputs = inputs or [LayerInput("a", channels=(0, weight.shape[1]))]
    return QuantizedLayer(name="L", neuron="atrlif", weight=weight, weight_exp=exp, kernel_size=weight.shape[2:],
                          stride=(stride,) * 3, padding=(1, 1, 1), inputs=inputs, time_window=3, atrlif={})


# ============================================================================ lowering
@pytest.mark.parametrize("stride,exp,size", [(1, 0, (6, 5, 4)), (2, 0, (8, 6, 4)), (1, -2, (5, 5, 5)),
                                             (2, 1, (4, 8, 6)), (2, -3, (7, 5, 6))])
def test_lowered_conv_equals_emulator_conv(stride, exp, size):
    rng = np.random.default_rng(stride * 10 + exp + 7)
    w = 2 * rng.integers(-128, 128, size=(3, 2, 3, 3, 3))
    layer = _layer(w, stride, exp)
    src = torch.from_numpy(rng.random((1, 2, *size, 3)) < 0.3)
    ref = connection_output(layer, layer.inputs[0], src, 3)[0].numpy()            # (O, D', H', W', T)
    lc = lower_connection(layer, layer.inputs[0], (2, *size), ref.shape[:4])
    got = lc.apply(src[0].numpy().reshape(-1, 3)).reshape(ref.shape)
    assert np.array_equal(got, ref)
    assert len(lc.matrices) == 1 and lc.matrices[0].dtype == np.int32
    # the matrix itself = the conv's response to every unit impulse (columns), zero padding has
    # no synapse, zero weights have none either
    n_in = 2 * int(np.prod(size))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 2, *size)
    cols = torch.nn.functional.conv3d(eye, torch.from_numpy(w).double(), None, stride, 1)
    dense = cols.reshape(n_in, -1).T.numpy().astype(np.int64)
    assert np.array_equal(lc.matrices[0].toarray(), dense) and lc.synapses == int((dense != 0).sum())


def test_lowered_graded_input_equals_emulator():
    rng = np.random.default_rng(1)
    w = 2 * rng.integers(-128, 128, size=(4, 2, 3, 3, 3))
    layer = _layer(w, 1, -4, [LayerInput("input", channels=(0, 2))])
    payload = torch.from_numpy(rng.integers(0, 256, size=(1, 2, 6, 6, 6)))
    ref = connection_output(layer, layer.inputs[0], payload, 1, graded=True, max_payload=255)[0, ..., 0].numpy()
    lc = lower_connection(layer, layer.inputs[0], (2, 6, 6, 6), ref.shape, input_bits=8)
    assert lc.num_message_bits == 8 and lc.graded
    assert np.array_equal(lc.apply(payload[0].numpy().reshape(-1)).reshape(ref.shape), ref)


@pytest.mark.parametrize("exp", [0, -1])
def test_lowered_upsample_and_concat_equal_emulator(exp):
    """dec-style layer: conv over [upsample2(a), b]; one matrix per edge, summed at the neuron."""
    rng = np.random.default_rng(5 - exp)
    w = 2 * rng.integers(-20, 21, size=(3, 5, 3, 3, 3))        # folded sums stay in 8 bits
    inputs = [LayerInput("a", "upsample2", (0, 3), 1), LayerInput("b", "identity", (3, 5), 0)]
    layer = _layer(w, 1, exp, inputs)
    T = 2
    a = torch.from_numpy(rng.random((1, 3, 3, 4, 2, T + 1)) < 0.4)
    b = torch.from_numpy(rng.random((1, 2, 6, 8, 4, T)) < 0.4)
    ref = sum(connection_output(layer, e, s, T) for e, s in zip(inputs, (a, b)))[0].numpy()
    la = lower_connection(layer, inputs[0], (3, 3, 4, 2), ref.shape[:4])
    lb = lower_connection(layer, inputs[1], (2, 6, 8, 4), ref.shape[:4])
    got = la.apply(a[0, ..., 1:].numpy().reshape(-1, T)) + lb.apply(b[0].numpy().reshape(-1, T))
    assert np.array_equal(got.reshape(ref.shape), ref)
    # folding: at most 8 source synapses per (output, input channel) instead of 27, no
    # upsampled population (columns index the 3x3x4x2 source)
    assert la.matrices[0].shape == (3 * 6 * 8 * 4, 3 * 3 * 4 * 2)
    assert np.diff(la.matrices[0].indptr).max() <= 8 * 3 < 27 * 3


def test_split_of_folded_weights_out_of_8_bits():
    w = np.full((1, 1, 3, 3, 3), 254, dtype=np.int64)         # folded sums up to 8 * 254
    m = conv3d_matrix(w, (1, 3, 3, 3), padding=(1, 1, 1), upsample=True)
    assert m.data.max() == 8 * 254
    chunks = split_synapse_range(m)
    assert len(chunks) == 8
    total = sum(c.astype(np.int64) for c in chunks)
    assert (total != m).nnz == 0
    for c in chunks:
        assert c.data.min() >= R.WEIGHT_MIN and c.data.max() <= R.WEIGHT_MAX and not (c.data % 2).any()
        assert np.array_equal(R.lava_effective_weights(c.data), c.data)   # lava keeps them as they are
    layer = _layer(w, 1, 0, [LayerInput("a", "upsample2", (0, 1))])
    src = torch.from_numpy(np.random.default_rng(0).random((1, 1, 3, 3, 3, 2)) < 0.5)
    ref = connection_output(layer, layer.inputs[0], src, 2)[0].numpy()
    lc = lower_connection(layer, layer.inputs[0], (1, 3, 3, 3), ref.shape[:4])
    assert np.array_equal(lc.apply(src[0].numpy().reshape(-1, 2)).reshape(ref.shape), ref)
    with pytest.raises(LoweringError, match="weight exponent"):
        lower_connection(dataclasses.replace(layer, weight_exp=-1), layer.inputs[0], (1, 3, 3, 3), ref.shape[:4])


def test_lower_network_matches_emulator_layer_inputs(qnet):
    low = lower_network(qnet, (16, 16, 16))
    shapes = qnet.shapes((16, 16, 16))
    rng = np.random.default_rng(2)
    for layer in qnet.layers:
        for e, lc in zip(layer.inputs, low[layer.name]):
            assert lc.out_shape == shapes[layer.name] and lc.src_shape == shapes[e.source]
            if e.source == "input":
                continue
            src = torch.from_numpy(rng.random((1, *shapes[e.source], layer.time_window + e.source_step_offset)) < 0.3)
            ref = connection_output(layer, e, src, layer.time_window)[0].numpy()
            s = src[0, ..., e.source_step_offset:].numpy().reshape(-1, layer.time_window)
            assert np.array_equal(lc.apply(s).reshape(ref.shape), ref), lc.name
    assert max(len(lc.matrices) for lcs in low.values() for lc in lcs) > 1   # a split happened


@pytest.mark.parametrize("delay,max_delay", [(1, 1), (3, 3), (2, 5), (None, 3)])
def test_static_delay_matrix_equals_lavas(delay, max_delay):
    """The memoised DelaySparse model builds the same delay-weight matrix as lava's model."""
    import scipy.sparse as sp
    from lava.proc.sparse.models import PyDelaySparseModelBitAcc

    from sim.processes import delay_weight_matrix
    rng = np.random.default_rng(0)
    w = sp.random(50, 40, density=0.2, random_state=1, format="csr")
    w.data = 2 * rng.integers(-100, 100, w.nnz).astype(np.int32)
    w.eliminate_zeros()
    d = w.copy().astype(np.int64)
    d.data[:] = delay if delay is not None else rng.integers(0, max_delay + 1, d.nnz)   # None: mixed
    ref = PyDelaySparseModelBitAcc.get_delay_wgts_mat(w, d, max_delay).toarray()
    assert np.array_equal(delay_weight_matrix(w, d, max_delay).toarray(), ref)


def test_plan_layers_schedule(qnet):
    plans, n = plan_layers(qnet, (16, 16, 16))
    # lava time_step = global step + 1 of calibration's lava_schedule; windows 4/3/2/2, dec 2:
    # enc1 starts at 1 + (4 - 3) + 1 = 3, enc2 at 3 + 1 + 1 = 5, enc3 at 6, dec2 7, dec1 8, dec0 9
    assert {k: (p.t_start, p.t_end) for k, p in plans.items()} == {
        "enc0": (2, 5), "enc1": (4, 6), "enc2": (6, 7), "enc3": (7, 8), "dec2": (8, 9), "dec1": (9, 10),
        "dec0": (10, 11), "readout": (11, 12)}
    assert n == 12
    # gated (WindowedATRLIF): layers that would see earlier source steps, and the read-out
    assert sorted(k for k, p in plans.items() if p.windowed) == ["dec0", "dec1", "enc1", "enc2", "readout"]
    delayed = {(k, c["source"]): c["extra_delay"] for k, p in plans.items() for c in p.connections
               if c["process"] == "DelaySparse"}
    assert delayed == {("dec2", "enc2"): 1, ("dec1", "enc1"): 3, ("dec0", "enc0"): 5}


# ============================================================================ Lava run
@pytest.fixture(scope="module")
def lava_run(qnet):
    pl = smooth_payload(16)
    # one extra case in the same run: a binary layer with a negative weight exponent (floor shift)
    q = dataclasses.replace(qnet, layers=list(qnet.layers))
    i = q.names.index("enc1")
    q.layers[i] = dataclasses.replace(q.layers[i], weight_exp=-1,
                                      atrlif={**q.layers[i].atrlif, "theta_0": q.layers[i].atrlif["theta_0"] // 2})
    t0 = time.time()
    lines = []
    res = run_lava(q, pl, timeout=LAVA_TIMEOUT, progress=lines.append)
    return q, pl, res, time.time() - t0, lines


def test_lava_equals_emulator_spike_for_spike(lava_run):
    q, pl, res, secs, lines = lava_run
    ref = emulate(q, pl, record_spikes=True)
    c = compare_results(ref, res)
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0, (name, row)
        assert row["spikes_a"] > 0, f"{name} is silent: the test would prove little"
    assert c["readout"]["mismatches"] == 0 and c["readout"]["max_abs_diff"] == 0
    assert c["equal"] and set(c["layers"]) == {"enc0", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0"}
    assert int(ref.readout_v.abs().max()) > 0
    assert torch.equal(res.field, ref.field)
    assert readout_sha256(res.readout_v) == readout_sha256(ref.readout_v)
    for name in c["layers"]:
        assert spikes_per_step(res.spikes[name]) == spikes_per_step(ref.spikes[name])


def test_lava_equals_emulator_with_overflow_adaptation_and_exponents():
    """Corners through the real Lava graph: 24-bit current wraps and voltage saturation (enc0 at
    weight exponent 0 with the largest threshold), threshold adaptation and refractory decay,
    weight exponents -1 and +1, other windows (5/4/3/2, so other delays and gates)."""
    torch.manual_seed(1)
    cfg = dataclasses.replace(TINY, enc_windows=(5, 4, 3, 2))
    q = quantize_network(SpikeRegUNet(cfg).eval(), patch_size=(16, 16, 16), stride=(8, 8, 8))
    layers = list(q.layers)

    def mod(name, weight_exp, **atr):
        i = q.names.index(name)
        layers[i] = dataclasses.replace(layers[i], weight_exp=weight_exp, atrlif={**layers[i].atrlif, **atr})

    mod("enc0", 0, theta_0=4095, theta_step=300, delta_theta=512 / 4096, delta_r=1024 / 4096, delta_v=0.0)
    mod("enc1", -1, theta_step=40, delta_theta=0.25, delta_r=0.125)
    mod("dec1", 1, theta_step=100, delta_theta=0.0625, theta_0=700)
    q = dataclasses.replace(q, layers=layers)
    g = torch.Generator().manual_seed(3)
    pl = torch.round(torch.rand(1, 2, 16, 16, 16, generator=g) * 255).to(torch.int64)
    stats = {}
    ref = emulate(q, pl, record_spikes=True, stats=stats)
    assert stats["enc0"].current_wraps > 0 and stats["enc0"].voltage_saturations > 0
    c = compare_results(ref, run_lava(q, pl, timeout=LAVA_TIMEOUT))
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0 and row["spikes_a"] > 0, (name, row)
    assert c["readout"]["mismatches"] == 0 and c["equal"]


def test_lava_run_info(lava_run):
    q, pl, res, secs, lines = lava_run
    info = res.info
    assert info["run_cfg"] == "Loihi2SimCfg(select_tag='fixed_pt')" and info["num_steps"] == 12
    assert info["neurons"] == sum(int(np.prod(s)) for k, s in q.shapes((16, 16, 16)).items() if k != "input")
    assert info["neuron_updates_per_s"] > 0 and info["timings"]["run_s"] > 0
    assert info["process_models"] == {
        "RingBuffer": "lava.proc.io.source.PySendModelFixed",
        "Sparse": "lava.proc.sparse.models.PySparseModelBitAcc",
        "DelaySparse": "sim.processes.PyStaticDelaySparseModelBitAcc",
        "ATRLIF": "lava.proc.atrlif.models.PyATRLIFModelFixed",
        "WindowedATRLIF": "sim.processes.PyWindowedATRLIFModelFixed",
        "Extractor": "lava.proc.io.extractor.PyLoihiExtractorModel"}
    assert info["layers"]["enc1"]["neuron_process"] == "WindowedATRLIF"
    assert info["layers"]["enc0"]["neuron_process"] == "ATRLIF"
    assert info["synapses"] == sum(v["synapses"] for v in info["connections"].values())
    assert lines and lines[-1].startswith("step 12/12")       # progress, one line per step
    assert secs < LAVA_TIMEOUT


def test_timeout_kills_every_lava_process(qnet):
    """A run that hangs after step 1 is killed ``timeout`` s after that step (the clock starts at
    the first step: the start-up before it takes 5-30 s depending on the machine's load)."""
    pl = smooth_payload(8)
    seen = []
    with pytest.raises(SimTimeout, match="did not finish within 5 s of its first step") as ei:
        run_lava(qnet, pl, timeout=5, startup_timeout=LAVA_TIMEOUT, _stall_s=600,      # hangs after step 1
                 progress=lambda s: seen.append((time.monotonic(), s)))
    assert seen and seen[0][1].startswith("step 1/")    # it was killed while Lava was running
    assert time.monotonic() - seen[0][0] < 30           # 5 s after the first step, plus the kill
    with pytest.raises(ProcessLookupError):      # the worker's whole process group is gone
        os.killpg(ei.value.pid, 0)


def test_startup_timeout_kills_a_worker_that_never_steps(qnet):
    with pytest.raises(SimTimeout, match="did not reach its first step within 0.5 s") as ei:
        run_lava(qnet, smooth_payload(8), timeout=600, startup_timeout=0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(ei.value.pid, 0)


def test_bad_payload_is_refused(qnet):
    from sim.graph import build_graph
    with pytest.raises(ValueError, match="payload outside"):
        build_graph(qnet, np.full((2, 8, 8, 8), 256))
    with pytest.raises(ValueError, match="divisible"):
        build_graph(qnet, np.zeros((2, 12, 8, 8), dtype=np.int64))


# ============================================================================ command
TINY_DATA = DataConfig(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=2, n_val=2, n_test=3, seed=3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A tiny synthetic data set (demo test pairs of 16x24x16) in a module-wide cache."""
    from spikereg_neuro.data import build_dataset
    cache = tmp_path_factory.mktemp("simdata")
    return str(cache), build_dataset(TINY_DATA, cache, progress=False)


def test_simulate_command_contract_and_backends_agree(qnet, tiny_data, tmp_path, capsys):
    q = dataclasses.replace(qnet, calibration={"split": "train", "dataset_params": TINY_DATA.to_dict()})
    net = save_qnet(tmp_path / "net.h5", q)
    cache = tiny_data[0]
    out_l, out_e = tmp_path / "lava" / "run.json", tmp_path / "emu.json"
    rc = main(["simulate", "--net", str(net), "--pair", "1", "--patch", "16", "16", "16", "--backend", "lava",
               "--out", str(out_l), "--cache", cache, "--compare", "--timeout", str(LAVA_TIMEOUT)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    assert "step 12/12" in cap.err                 # progress indication
    assert "EQUAL (0 mismatches)" in cap.out
    assert sorted(p.name for p in out_l.parent.iterdir()) == ["run.json"]     # atomic, no temp files
    doc = json.loads(out_l.read_text())
    assert doc["backend"] == "lava"
    assert [l["name"] for l in doc["layers"]] == ["enc0", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0"]
    for l in doc["layers"]:
        assert len(l["spikes_per_step"]) == l["time_window"] and all(isinstance(x, int) for x in l["spikes_per_step"])
    assert len(doc["readout_sha256"]) == 64 and doc["pair"] == 1 and doc["patch"] == [16, 16, 16]
    assert doc["patch_origin"] == [0, 4, 0] and doc["pair_subjects"] == [1, 2]
    assert len(doc["readout"]["v"]) == 3 * 16 ** 3
    assert doc["lava"]["neuron_updates_per_s"] > 0
    assert doc["comparison"]["equal"] and doc["comparison"]["total_spike_mismatches"] == 0
    rc = main(["simulate", "--net", str(net), "--pair", "1", "--backend", "emulator", "--out", str(out_e),
               "--cache", cache, "--quiet"])
    assert rc == 0
    emu = json.loads(out_e.read_text())
    assert emu["backend"] == "emulator" and emu["readout_sha256"] == doc["readout_sha256"]
    assert emu["layers"] == doc["layers"] and emu["readout"]["v"] == doc["readout"]["v"]
    # clear one-line errors
    rc = main(["simulate", "--net", str(net), "--pair", "7", "--backend", "emulator", "--out", str(out_e),
               "--cache", cache])
    assert rc == 1 and "--pair 7 out of range" in capsys.readouterr().err
    rc = main(["simulate", "--net", str(net), "--patch", "12", "16", "16", "--backend", "emulator",
               "--out", str(out_e), "--cache", cache])
    assert rc == 1 and "multiples of 8" in capsys.readouterr().err


# ============================================================================ harness entry, run loop
def test_simulate_patch_default_architecture_on_a_demo_patch(tiny_data):
    """The public harness entry on a real demo patch with the DEFAULT architecture (the shipped
    model's weights when present, whatever they are): equal to the emulator, timings reported."""
    from spikereg_neuro.checkpoint import DEFAULT_MODEL, load_network
    from spikereg_neuro.data import load_pairs_numpy
    from sim.run import PatchSimulation, simulate_patch

    if DEFAULT_MODEL.is_file():
        net, _ = load_network(DEFAULT_MODEL)
    else:  # pragma: no cover - the package ships a model
        torch.manual_seed(0)
        net = SpikeRegUNet()
    q = quantize_network(net.eval(), source_checkpoint="default", source_sha256="0" * 64)
    pr = load_pairs_numpy(tiny_data[1], "test")[0]
    sl = (slice(4, 12), slice(8, 16), slice(4, 12))
    r = simulate_patch(q, pr["fixed"][sl], pr["moving"][sl], timeout=LAVA_TIMEOUT, check=True)
    assert isinstance(r, PatchSimulation) and r.emulator_mismatches == 0
    f, m = (torch.from_numpy(np.ascontiguousarray(pr[k][sl]))[None, None] for k in ("fixed", "moving"))
    ref = emulate(q, payload_of(q, f, m), record_spikes=True)
    assert r.readout_sha256 == readout_sha256(ref.readout_v)
    assert r.spikes_per_step == {k: spikes_per_step(v) for k, v in ref.spikes.items()}
    assert list(r.spikes_per_step) == [l.name for l in q.layers if l.neuron != "integrator"]
    assert r.spikes["enc0"] > 0
    assert r.field.shape == (3, 8, 8, 8) and r.readout_v.dtype == np.int64
    shapes = q.shapes((8, 8, 8))
    assert r.neurons == {l.name: int(np.prod(shapes[l.name])) for l in q.layers}
    assert r.num_steps == plan_layers(q, (8, 8, 8))[1]
    assert r.neuron_updates == sum(r.neurons.values()) * r.num_steps
    assert r.neuron_updates_per_s == pytest.approx(r.neuron_updates / r.timings["run_s"])
    for k in ("build_s", "compile_s", "init_s", "run_s", "stop_s", "worker_s", "wall_s"):
        assert r.timings[k] >= 0, k
    assert r.timings["wall_s"] >= r.timings["run_s"]
    with pytest.raises(ValueError, match="differ in shape"):
        simulate_patch(q, pr["fixed"][sl], pr["moving"][:8, :8, :16])
    with pytest.raises(ValueError, match=r"\(D, H, W\) patch"):
        simulate_patch(q, pr["fixed"][0], pr["moving"][0])


def test_compile_quietly_silences_only_lavas_module_scan_warnings():
    import warnings

    from sim.run import compile_quietly

    class FakeSource:
        def compile(self, cfg):
            warnings.warn_explicit("Cannot import module '<module 'run'>' when searching ProcessModels",
                                   UserWarning, "compiler_graphs.py", 895,
                                   module="lava.magma.compiler.compiler_graphs")
            warnings.warn_explicit("Cannot import module 'x'", UserWarning, "elsewhere.py", 1, module="elsewhere")
            warnings.warn("a real problem", RuntimeWarning)
            return "exe"

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert compile_quietly(FakeSource(), None) == "exe"
    msgs = sorted(str(w.message) for w in seen)
    assert msgs == ["Cannot import module 'x'", "a real problem"]


def test_real_compile_is_quiet_and_uses_the_fixed_point_models(qnet):
    """Compiling the real graph (no run) in this process: no module-scan warnings, lava's
    bit-accurate models selected by the default run configuration."""
    import warnings

    from sim.graph import build_graph
    from sim.run import compile_quietly, default_run_cfg, describe_run_cfg

    g = build_graph(qnet, smooth_payload(8).numpy(), monitors=False)
    cfg = default_run_cfg()
    assert describe_run_cfg(cfg) == "Loihi2SimCfg(select_tag='fixed_pt')"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        exe = compile_quietly(g.source, cfg)
    assert not [w for w in seen if "Cannot import module" in str(w.message)], [str(w.message) for w in seen]
    models = {type(p).__name__: b.proc_model.__name__ for p, b in exe.proc_builders.items()}
    assert models["ATRLIF"] == "PyATRLIFModelFixed" and models["Sparse"] == "PySparseModelBitAcc"


def test_ensure_lava_runtime(monkeypatch):
    """lava's runtime import (which sets the 'fork' start method) works in a fresh process after
    something fixed the start method to 'fork'; another start method is refused clearly."""
    import multiprocessing
    import subprocess
    import sys

    from sim.run import LAVA_MP_MODULE, SimError, ensure_lava_runtime
    code = ("import multiprocessing as mp\n"
            "mp.set_start_method('fork')\n"
            "from sim.run import ensure_lava_runtime\n"
            "ensure_lava_runtime()\n"
            "import lava.magma.runtime.message_infrastructure.multiprocessing\n"
            "print('OK', mp.get_start_method())\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("OK fork"), out.stdout + out.stderr[-2000:]
    monkeypatch.delitem(sys.modules, LAVA_MP_MODULE)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    with pytest.raises(SimError, match="needs the 'fork' multiprocessing start method"):
        ensure_lava_runtime()


def test_loihi_run_uses_the_shared_run_loop(qnet, tiny_data, tmp_path, monkeypatch):
    """`loihi run`'s hardware branch with the board replaced by Loihi2SimCfg: the shared run loop
    (sim.run.run_graph with a run_cfg) gives the same run.json as `simulate`."""
    import lava.magma.core.run_configs as rc
    import loihi.run as lr
    from sim.cli import simulate

    q = dataclasses.replace(qnet, calibration={"split": "train", "dataset_params": TINY_DATA.to_dict()})
    net = save_qnet(tmp_path / "net.h5", q)
    used = []

    def fake_hw_cfg(exception_proc_model_map=None, callback_fxs=None):
        used.append(callback_fxs)
        return rc.Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=exception_proc_model_map)

    monkeypatch.setattr(lr, "loihi_available", lambda: True)
    monkeypatch.setattr(rc, "Loihi2HwCfg", fake_hw_cfg)
    doc = lr.run_on_loihi(net, pair=1, patch=(8, 8, 8), out=tmp_path / "loihi.json", slurm=False, profile=False,
                          cache=tiny_data[0], log=lambda s: None)
    assert used == [[]]
    emu = simulate(str(net), backend="emulator", pair=1, patch=(8, 8, 8), out=None, cache=tiny_data[0],
                   progress=False, log=lambda s: None)
    assert doc["backend"] == "loihi2" and doc["loihi"]["run_cfg"] == "Loihi2SimCfg(select_tag='fixed_pt')"
    assert doc["readout_sha256"] == emu["readout_sha256"] and doc["layers"] == emu["layers"]
    assert json.loads((tmp_path / "loihi.json").read_text())["readout_sha256"] == emu["readout_sha256"]


def test_two_level_readout_float_emulator_and_lava_agree():
    """readout_levels 2 (read-out from dec0 and up2(dec1)): the emulator with the float network's
    spikes gives the float field bit for bit, and Lava equals the emulator spike for spike."""
    from calibration.calibrate import FloatRecorder
    torch.manual_seed(0)
    net = SpikeRegUNet(dataclasses.replace(TINY, readout_levels=2)).eval()
    q = quantize_network(net, source_checkpoint="tiny2", source_sha256="0" * 64,
                         patch_size=(16, 16, 16), stride=(8, 8, 8))
    assert [(e.source, e.transform) for e in q.readout.inputs] == [("dec0", "identity"), ("dec1", "upsample2")]
    pl = smooth_payload()
    with torch.no_grad(), FloatRecorder(net, keep_pre=False) as rec:
        u = net(pl[:, :1].float() / 255, pl[:, 1:].float() / 255)
    forced = {k: v > 0 for k, v in rec.out.items() if k != "readout"}
    assert torch.equal(emulate(q, pl, forced=forced).field, u)
    ref = emulate(q, pl, record_spikes=True)
    c = compare_results(ref, run_lava(q, pl, timeout=LAVA_TIMEOUT))
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0 and row["spikes_a"] > 0, (name, row)
    assert c["readout"]["mismatches"] == 0 and c["equal"] and int(ref.readout_v.abs().max()) > 0


def test_graded_spike_network_quantized_emulated_and_lava_agree(tmp_path):
    """neuron.graded_spike: every hidden layer sends v >> 14 (payload gain 255/16 per threshold,
    theta_0 4080 at weight exponent 0); Lava equals the emulator spike for spike AND payload for
    payload; the float network agrees with the emulator up to payload rounding."""
    from calibration.calibrate import FloatRecorder, forced_output
    from calibration.emulator import spike_agreement
    from calibration.netfile import load_qnet, qnet_equal
    from spikereg_neuro.model.neuron import NeuronConfig
    from spikereg_neuro.profiler.counting import NetworkCounter
    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2),
                      dec_window=2, readout_levels=2, weight_gain=3.0, readout_scale=0.1,
                      neuron=NeuronConfig(graded_spike=True))
    net = SpikeRegUNet(cfg).eval()
    q = quantize_network(net, source_checkpoint="tinyg", source_sha256="0" * 64,
                         patch_size=(16, 16, 16), stride=(8, 8, 8))
    assert q.graded_spikes and q.graded_sources == {"input", *q.names[:-1]}
    assert (q["enc0"].weight_exp, q["enc0"].num_message_bits, q["enc0"].input_gain) == (-4, 8, 255)
    for l in q.layers[:-1]:
        assert l.atrlif["theta_0"] == 4080 and l.payload_shift == 14 and l.payload_gain == 255 / 16
    for l in q.layers[1:]:
        assert l.weight_exp == 0 and l.num_message_bits == R.MAX_PAYLOAD_BITS and l.input_gain == 255 / 16
    assert q.readout.payload_shift == -1
    assert q.readout.output_scale == cfg.readout_scale / (4096 * 2 * 255 / 16)
    save_qnet(tmp_path / "g.h5", q)
    assert qnet_equal(load_qnet(tmp_path / "g.h5"), q)
    pl = smooth_payload()
    with torch.no_grad(), FloatRecorder(net, keep_pre=False) as rec:
        u = net(pl[:, :1].float() / 255, pl[:, 1:].float() / 255)
    forced = {k: forced_output(q.layer(k), v) for k, v in rec.out.items() if k != "readout"}
    tf = emulate(q, pl, forced=forced, record_spikes=True)
    ref = emulate(q, pl, record_spikes=True)
    for name, s in ref.spikes.items():
        assert s.dtype == torch.int64 and int(s.max()) > 16, name    # payloads, beyond 1 threshold
        assert torch.all((s == 0) | (s >= 15)), name                  # >= floor(15.94 * 1)
        assert spike_agreement(rec.out[name] > 0, tf.spikes[name])["agreement"] > 0.99, name
    assert float((tf.field - u).abs().max()) < 0.1 * float(u.abs().max())
    c = compare_results(ref, run_lava(q, pl, timeout=LAVA_TIMEOUT))
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0 and row["spikes_a"] > 0, (name, row)
    assert c["readout"]["mismatches"] == 0 and c["equal"]
    # a payload difference alone is a mismatch
    bad = dataclasses.replace(ref, spikes={**ref.spikes, "dec0": ref.spikes["dec0"] + (ref.spikes["dec0"] > 0)})
    assert compare_results(ref, bad)["layers"]["dec0"]["mismatches"] == int((ref.spikes["dec0"] > 0).sum())
    from loihi.mapping import build_mapping
    from loihi.resources import layers_from_qnet
    assert any(n.startswith("graded spikes: enc0") for n in build_mapping(layers_from_qnet(q), (16, 16, 16))["notes"])
    # the profiler counts events, not payload sums
    counter = NetworkCounter(net.export(), (16, 16, 16))
    ev = counter.count_spikes({k: (v != 0) for k, v in ref.spikes.items()}, pl)
    assert counter.count_spikes(ref.spikes, pl).totals() == ev.totals()
    assert ev.totals()["spikes"] == sum(int((v != 0).sum()) for v in ref.spikes.values())


def test_calibration_keeps_exponent_zero_where_folded_upsampling_weights_are_split():
    """Folded x2-upsampling synapses outside 8 bits need several Sparse matrices, exact only at
    weight exponent 0: calibration's range check equals the lowering's matrix, and it keeps those
    layers at 0 even when their statistics ask for a right shift (the others take it)."""
    from calibration.calibrate import FloatLayerStats, choose_weight_exps
    from calibration.quantize import folded_upsample_range, layers_with_split_folds
    rng = np.random.default_rng(3)
    w = 2 * rng.integers(-128, 128, size=(3, 2, 3, 3, 3))
    m = conv3d_matrix(w, (2, 4, 3, 5), (1, 1, 1), (1, 1, 1), upsample=True)
    assert folded_upsample_range(w) == (int(m.data.min()), int(m.data.max()))
    torch.manual_seed(0)
    net = SpikeRegUNet(TINY).eval()            # weight gain 16: folded weights overflow somewhere
    split = layers_with_split_folds(net)
    assert split and split <= {"dec2", "dec1", "dec0", "readout"}
    big = {b.name: FloatLayerStats(a_in_peak=1e5, i_peak=2e7, v_peak=2e7, r_peak=0.0) for b in net.blocks()}
    exps, why = choose_weight_exps(net, big)
    for name in split:
        assert exps[name] == 0 and why[name]["folded_upsampling_split"] and not why[name]["fits"], name
    assert all(exps[n] < 0 for n in ("enc1", "enc2", "enc3"))
    q = quantize_network(net, exps, patch_size=(16, 16, 16), stride=(8, 8, 8))
    lower_network(q, (16, 16, 16))             # no LoweringError: split edges are unshifted


# ============================================================================ full registration, static Sparse
def test_weights_already_valid_matches_lavas_clip_and_truncate():
    """The copy is skipped only where lava's clip + truncate would return the same weights."""
    import scipy.sparse as sp
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights

    from sim.processes import weights_already_valid
    rng = np.random.default_rng(4)
    cases = {"even in range": 2 * rng.integers(-128, 128, 400), "odd": rng.integers(-100, 100, 400) | 1,
             "too large": np.r_[300, 2 * rng.integers(-128, 128, 399)], "-256": np.r_[-256, np.zeros(399) + 2]}
    for mode in (SignMode.MIXED, SignMode.EXCITATORY, SignMode.INHIBITORY):
        for nwb in (8, 6):
            for name, vals in cases.items():
                for sign in (1, -1):
                    w = sp.random(40, 30, density=0.2, random_state=2, format="csr")
                    w.data = (sign * vals[:w.nnz]).astype(np.int32)
                    w.eliminate_zeros()
                    p = {"sign_mode": mode, "num_weight_bits": nwb}
                    lava = truncate_weights(clip_weights(w, mode, num_bits=8), mode, nwb)
                    same = (lava != w).nnz == 0 and lava.dtype == w.dtype
                    if weights_already_valid(w, p):
                        assert same, (mode, nwb, name, sign)
                    elif mode == SignMode.MIXED and nwb == 8 and name == "even in range":
                        pytest.fail("the backend's own weights must be recognised as valid")
    w = sp.csr_matrix(np.array([[2, -4]], dtype=np.int64))
    assert not weights_already_valid(w, {"sign_mode": SignMode.MIXED})     # not int32: lava casts (copies)


def test_static_delay_model_calc_act_equals_lavas():
    """The uniform-delay shortcut of calc_act (no stacked matrix) gives lava's values and dtype."""
    import scipy.sparse as sp
    from lava.proc.sparse.models import PyDelaySparseModelBitAcc

    from sim.processes import PyStaticDelaySparseModelBitAcc
    rng = np.random.default_rng(1)
    w = sp.random(30, 20, density=0.3, random_state=3, format="csr")
    w.data = 2 * rng.integers(-128, 128, w.nnz).astype(np.int32)
    w.eliminate_zeros()
    w = w.astype(np.int32)
    for k, max_delay in ((3, 3), (1, 1)):
        d = w.copy().astype(np.int32)
        d.data[:] = k
        ours, lavas = PyStaticDelaySparseModelBitAcc({}), PyDelaySparseModelBitAcc({})
        for m in (ours, lavas):
            m.weights, m.delays, m.a_buff = w, d, np.zeros((30, max_delay + 1), dtype=np.int32)
        for s_in in (rng.random(20) < 0.5, rng.integers(0, 1000, 20)):
            a, b = ours.calc_act(s_in), lavas.calc_act(s_in)
            assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
        assert ours._delay_wgts is None                  # the stacked matrix was never built


def test_static_sparse_model_gives_lavas_spikes(lava_run):
    """PyStaticSparseModelBitAcc (no first-step copy) against lava's own PySparseModelBitAcc on the
    same graph and patch: identical spikes, payloads and read-out."""
    q, pl, ref, _, _ = lava_run
    assert ref.info["process_models"]["Sparse"] == "lava.proc.sparse.models.PySparseModelBitAcc"
    res = run_lava(q, pl, timeout=LAVA_TIMEOUT, static_sparse=True)
    assert res.info["process_models"]["Sparse"] == "sim.processes.PyStaticSparseModelBitAcc"
    c = compare_results(ref, res)
    assert c["equal"] and c["total_spike_mismatches"] == 0 and c["readout"]["mismatches"] == 0
    for name in ref.spikes:
        assert torch.equal(ref.spikes[name], res.spikes[name]), name
    assert torch.equal(ref.readout_v, res.readout_v)


FULL_DATA = DataConfig(voxel_size_mm=5.0, shape=(32, 32, 32), n_train=2, n_val=2, n_test=2, seed=5)


def test_simulate_full_through_lava_equals_emulator(qnet, tmp_path, capsys):
    """`simulate --full`: a tiny network on a 32^3 demo pair with 16^3 tiles (stride 16): every
    patch of both residual iterations through ONE Lava graph (built once), the field equal to the
    emulator's through the same tiling."""
    from spikereg_neuro.data import build_dataset
    cache = tmp_path / "data"
    build_dataset(FULL_DATA, cache, progress=False)
    q = dataclasses.replace(qnet, calibration={"split": "train", "dataset_params": FULL_DATA.to_dict()})
    net = save_qnet(tmp_path / "net.h5", q)
    assert tuple(q.scales) == (2, 1)
    out = tmp_path / "full" / "run.json"
    rc = main(["simulate", "--net", str(net), "--pair", "0", "--full", "--backend", "lava", "--tile", "16", "16", "16",
               "--stride", "16", "16", "16", "--out", str(out), "--cache", str(cache), "--timeout", "300"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    assert "lava full registration" in cap.err and "9/9" in cap.err            # tqdm, per patch
    doc = json.loads(out.read_text())
    assert doc["backend"] == "lava" and doc["patches"] == 9 and doc["patches_per_iteration"] == [1, 8]
    assert doc["field_equal_emulator"] is True and doc["comparison"]["patches_equal"] == 9
    assert doc["comparison"]["field_equal"] and doc["seconds"] > 0
    assert doc["lava"]["graph_builds"] == {"16x16x16": 1} and doc["lava"]["lowering_builds"] == 1
    g = doc["lava"]["graphs"]["16x16x16"]
    assert g["patches"] == 9 and g["steps"] == 9 * g["steps_per_patch"] and g["batches"] == 3
    assert g["process_models"]["Sparse"] == "sim.processes.PyStaticSparseModelBitAcc"
    assert g["process_models"]["PatchInjector"] == "sim.processes.PyPatchInjectorModelFixed"
    fld = np.load(doc["field"])
    assert fld.shape == (3, 32, 32, 32) and fld.dtype == np.float32 and np.abs(fld).max() > 0
    assert doc["field_max_abs_vox"] > 0
    # the emulator backend through the same command: the same field, bit for bit
    out_e = tmp_path / "emu.json"
    rc = main(["simulate", "--net", str(net), "--full", "--backend", "emulator", "--tile", "16", "16", "16",
               "--stride", "16", "16", "16", "--out", str(out_e), "--cache", str(cache), "--quiet"])
    assert rc == 0
    emu = json.loads(out_e.read_text())
    assert emu["patches"] == 9 and emu["readouts_sha256"] == doc["readouts_sha256"]
    assert np.array_equal(np.load(emu["field"]), fld)
    # --timeout is respected (here it ends the session while Lava starts) with a clear error
    rc = main(["simulate", "--net", str(net), "--full", "--tile", "16", "16", "16", "--out", str(tmp_path / "t.json"),
               "--cache", str(cache), "--timeout", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "did not finish within 2 s" in err.splitlines()[0]
    assert not (tmp_path / "t.json").exists()


def test_lava_session_reuses_one_graph_for_patches_in_any_order(qnet):
    """A session runs batches of different patches on one started graph: each equals the emulator
    (nothing of the previous patch is left over); a second shape gets its own graph."""
    from sim.session import LavaSession
    pls = torch.cat([smooth_payload(16, seed=s) for s in range(3)])
    pls[1] = 0                                               # a silent patch between two active ones
    small = smooth_payload(8, seed=7)
    with LavaSession(qnet, timeout=300) as s:
        a = s.run_payloads(pls[:2])
        b = s.run_payloads(pls[2:])
        c = s.run_payloads(small)
        info = s.close()
    ref = emulate(qnet, pls).readout_v.numpy()
    assert np.array_equal(np.concatenate([a, b]), ref) and np.abs(ref[[0, 2]]).max() > 0
    assert np.array_equal(c, emulate(qnet, small).readout_v.numpy())
    assert info["graph_builds"] == {"16x16x16": 1, "8x8x8": 1} and info["patches"] == 4
    assert info["lowering_builds"] == 2 and len(s.readouts) == 4


def test_benchmark_lava_full_row_reads_a_measured_run(tmp_path):
    """benchmark --lava-run RUN_JSON: the 'Lava, full registration' row says measured, with the
    machine and date of the run; without it (or with a file that is not such a run) no row
    replaces the estimate."""
    import argparse

    from spikereg_neuro.commands.benchmark_table import _lava_full_row
    doc = {"backend": "lava", "mode": "full registration", "seconds": 412.5, "patches": 38,
           "patches_per_iteration": [2, 36], "volume_shape": [64, 72, 64], "crop": None, "pair": 0,
           "tile": [32, 32, 32], "stride": [16, 16, 16], "field_equal_emulator": True,
           "machine": {"cpu": "Some CPU", "usable_cpus": 2, "date": "2026-12-01T10:00:00Z"},
           "lava": {"graph_builds": {"32x32x32": 1}}}
    p = tmp_path / "run.json"
    p.write_text(json.dumps(doc))
    args = argparse.Namespace(lava_run=str(p), lava_full=False, quick=False, lava_timeout=60.0)
    row = _lava_full_row(args, None, {}, lambda s: None)
    assert row["platform"] == "CPU, Lava, full registration (measured)" and row["latency_source"] == "measured"
    assert row["latency_ms"] == 412500.0 and "2026-12-01" in row["note"] and "Some CPU" in row["note"]
    assert "whole 64x72x64" in row["note"] and row["details"]["field_equal_emulator"] is True
    assert _lava_full_row(argparse.Namespace(lava_run=None, lava_full=False), None, {}, print) is None
    p.write_text(json.dumps({**doc, "backend": "emulator"}))
    seen = []
    assert _lava_full_row(args, None, {}, seen.append) is None and "keeping the estimate" in seen[0]


def test_input_once_lava_equals_emulator_in_both_graphs(qnet):
    """model.input_once (the payload sent at step 0 only; enc0's current holds it, delta_i = 0),
    quantized from the float model: the single-patch graph's RingBuffer and the session's
    PatchInjector send one frame per patch, and Lava equals the emulator spike for spike (which
    differs from the every-step schedule)."""
    from sim.graph import build_graph
    from sim.session import LavaSession
    torch.manual_seed(0)
    q = quantize_network(SpikeRegUNet(dataclasses.replace(TINY, input_once=True)).eval(),
                         patch_size=(16, 16, 16), stride=(8, 8, 8))
    assert q.input_once and q.input_steps == 1 and qnet.input_steps == 4
    assert q["enc0"].atrlif["delta_i"] == 0.0 and np.array_equal(q["enc0"].weight, qnet["enc0"].weight)
    pl = smooth_payload(16, seed=2)
    for net, steps in ((q, 1), (qnet, 4)):
        data = np.asarray(build_graph(net, pl, monitors=False).source.data.init)
        assert np.array_equal(data[:, :steps], np.repeat(pl.numpy().reshape(-1, 1), steps, 1))
        assert not data[:, steps:].any()
    ref = emulate(q, pl, record_spikes=True)
    every = emulate(qnet, pl, record_spikes=True)
    assert not torch.equal(ref.spikes["enc0"], every.spikes["enc0"])
    assert bool(ref.spikes["enc0"][..., 1:].any())               # enc0 fires after step 0 too
    c = compare_results(ref, run_lava(q, pl, timeout=LAVA_TIMEOUT))
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0 and row["spikes_a"] > 0, (name, row)
    assert c["readout"]["mismatches"] == 0 and c["equal"] and int(ref.readout_v.abs().max()) > 0
    # the reusable graph (one PatchInjector frame per patch, periodic layers), two patches
    pls = torch.cat([pl, smooth_payload(16, seed=5)])
    with LavaSession(q, timeout=300) as s:
        v = s.run_payloads(pls)
    assert np.array_equal(v, emulate(q, pls).readout_v.numpy())


def _float_emulator_lava_agree(net, q, pl, agreement, field_rtol):
    """Every layer of ``net`` spikes on ``pl``; the emulator fed the float network's spikes
    agrees with them (``agreement``, payload rounding) and gives its field (``field_rtol`` of
    its peak); Lava equals the emulator. Returns the Lava comparison."""
    from calibration.calibrate import FloatRecorder, forced_output
    from calibration.emulator import spike_agreement
    with torch.no_grad(), FloatRecorder(net, keep_pre=False) as rec:
        u = net(pl[:, :1].float() / 255, pl[:, 1:].float() / 255)
    assert all(a.sum() > 0 for a in net.activity.values())     # every level spikes
    forced = {k: forced_output(q.layer(k), v) for k, v in rec.out.items() if k != "readout"}
    tf = emulate(q, pl, forced=forced, record_spikes=True)
    for name, s in rec.out.items():
        if name != "readout":
            assert spike_agreement(s > 0, tf.spikes[name])["agreement"] > agreement, name
    assert float((tf.field - u).abs().max()) < field_rtol * float(u.abs().max())
    c = compare_results(emulate(q, pl, record_spikes=True), run_lava(q, pl, timeout=LAVA_TIMEOUT))
    assert c["equal"] and c["readout"]["mismatches"] == 0
    return c


@pytest.mark.parametrize("levels", [3, 5])
def test_other_depths_float_emulator_lava_and_mapper_agree(levels):
    """A U-Net of 3 or 5 encoder levels (graded spikes, input sent once, read-out from dec0 and
    up2(dec1)): export names every level's connections, the emulator with the float network's
    spikes gives the float field, Lava equals the emulator spike for spike and payload for payload,
    and the counter and mapper take it."""
    from loihi.resources import NetworkResources
    from spikereg_neuro.connections import Connection
    from spikereg_neuro.profiler.counting import NetworkCounter
    torch.manual_seed(1)
    cfg = ModelConfig(enc_channels=(4, 4, 8, 8, 8)[:levels], dec_channels=(8, 8, 4, 4)[-(levels - 1):],
                      enc_windows=(6, 4, 3, 3, 3)[:levels], dec_window=2, readout_levels=2, weight_gain=6.0,
                      readout_scale=0.1, input_once=True, neuron=NeuronConfig(graded_spike=True))
    net = SpikeRegUNet(cfg).eval()
    deep = f"enc{levels - 1}"
    exp = {d["name"]: d["inputs"] for d in net.export()}
    assert list(exp) == [*(f"enc{l}" for l in range(levels)), *(f"dec{l}" for l in reversed(range(levels - 1))),
                         "readout"]
    assert exp[f"dec{levels - 2}"] == [Connection(deep, 2), Connection(f"enc{levels - 2}")]
    assert cfg.size_multiple == 2 ** (levels - 1) * 2
    q = quantize_network(net, source_checkpoint=f"tiny{levels}", source_sha256="0" * 64,
                         patch_size=(16, 16, 16), stride=(8, 8, 8))
    assert q.size_multiple == 2 ** (levels - 1)
    pl = smooth_payload()
    c = _float_emulator_lava_agree(net, q, pl, agreement=0.98, field_rtol=0.1)
    for name, row in c["layers"].items():
        assert row["mismatches"] == 0, (name, row)
    counter = NetworkCounter(net.export(), (16, 16, 16))
    assert set(counter.layers) == set(exp)
    res = NetworkResources(net.export(), (16, 16, 16))
    assert set(res.layers) == set(exp) and res.layers[deep].synapses > 0
    m, n = 2 ** (levels - 1), 3 * 2 ** (levels - 2)     # n is not a multiple of m
    with pytest.raises(ValueError, match=f"divisible by {m} \\({levels - 1} stride-2 levels\\)"):
        net(torch.rand(1, 1, n, n, n), torch.rand(1, 1, n, n, n))


def test_learned_decays_reach_calibration_emulator_and_lava():
    """A network whose layers learned other decays (``neuron.learn_decays``; here set by hand,
    different per layer): calibration takes each layer's own decays into its ATRLIF deltas, the
    emulator reproduces the float network's spikes, and Lava equals the emulator spike for spike."""
    torch.manual_seed(1)
    cfg = ModelConfig(enc_channels=(4, 4, 8), dec_channels=(8, 4), enc_windows=(6, 4, 3), dec_window=2,
                      readout_levels=2, weight_gain=6.0, readout_scale=0.1, input_once=True,
                      neuron=NeuronConfig(graded_spike=True, learn_decays=True))
    net = SpikeRegUNet(cfg).eval()
    chosen = {"enc1": (0.25, 0.125), "enc2": (0.75, 0.0), "dec1": (1.0, 0.5), "dec0": (0.5, 0.0625)}
    blocks = {b.name: b for b in net.blocks()}
    with torch.no_grad():
        for name, (c, v) in chosen.items():
            blocks[name].neuron.current_decay.fill_(c * 4096)
            blocks[name].neuron.voltage_decay.fill_(v * 4096)
    q = quantize_network(net, source_checkpoint="learned", source_sha256="0" * 64,
                         patch_size=(16, 16, 16), stride=(8, 8, 8))
    for name, (c, v) in chosen.items():
        assert q[name].atrlif["delta_v"] == v and q[name].atrlif["delta_i"] == pytest.approx(c - 1 / 4096), name
    # payload rounding: this network's dec0 agrees 0.978 with its decays left at the config's
    _float_emulator_lava_agree(net, q, smooth_payload(), agreement=0.96, field_rtol=0.02)
