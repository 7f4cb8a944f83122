"""Calibration: Loihi 2 fixed-point rules, the bit-accurate emulator (vs hand-computed traces,
vs lava-nc's own PyATRLIFModelFixed, vs the float SLAYER model), net.h5 and the command."""
import copy
import json
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from calibration import loihi_rules as R
from calibration.emulator import (NeuronParams, atrlif_run, emulate, emulate_pair, emulator_predictor,
                                  lava_schedule, payload_of, spike_agreement)
from calibration.netfile import NetFileError, load_qnet, qnet_equal, save_qnet, validate_qnet
from calibration.quantize import feasible_weight_exps, quantize_network, theta_mantissa
from spikereg_neuro.checkpoint import save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.data.dataset import DataConfig
from spikereg_neuro.inference import register_tensors
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.neuron import NeuronConfig
from spikereg_neuro.model.unet import SpikeRegUNet

torch.set_num_threads(1)

# the dataclass defaults of before they became the packaged config's, which these tests were written for
TINY = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
                   readout_scale=0.5, weight_gain=8.0, readout_levels=1, neuron=NeuronConfig(graded_spike=False))


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return SpikeRegUNet(TINY).eval()


@pytest.fixture(scope="module")
def qnet(tiny_net):
    return quantize_network(tiny_net, source_checkpoint="tiny", source_sha256="0" * 64,
                            calibration={"split": "train", "note": "test"}, patch_size=(16, 16, 16),
                            stride=(8, 8, 8))


def smooth_patches(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * n, 1, size, size, size, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, 1, 1)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return x[:n].contiguous(), x[n:].contiguous()


# ============================================================================ rules
def test_weight_rules_match_lava_weightutils():
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights
    assert (R.WEIGHT_MIN, R.WEIGHT_MAX, R.WEIGHT_EXP_MIN, R.WEIGHT_EXP_MAX) == (-256, 254, -8, 7)
    rng = np.random.default_rng(0)
    w = rng.integers(-300, 300, size=500)
    lava = truncate_weights(clip_weights(w, SignMode.MIXED, num_bits=8), SignMode.MIXED, 8)
    assert np.array_equal(R.lava_effective_weights(w), lava)
    grid = np.arange(-256, 255, 2)                    # SLAYER's 8-bit grid survives lava unchanged
    assert np.array_equal(R.lava_effective_weights(grid), grid)
    R.check_weights(grid)
    with pytest.raises(ValueError, match="out of range"):
        R.check_weights(np.array([0, 256]))
    with pytest.raises(ValueError, match="out of range"):
        R.check_weights(np.array([-258, 2]))
    with pytest.raises(ValueError, match="LSB"):
        R.check_weights(np.array([-4, 3]))
    with pytest.raises(ValueError, match="integers"):
        R.check_weights(np.array([0.5, 2.0]))
    with pytest.raises(ValueError, match="weight exponent"):
        R.check_weight_exp(8)


def test_weight_quantizer_is_slayers_8bit_grid(tiny_net):
    neuron = tiny_net.enc[0].neuron
    w = torch.tensor([1 / 64, 3 / 64, -1 / 64, -3 / 64, 5.0, -5.0, 0.3, -0.2])
    ref = neuron.quantize_8bit(w, descale=True).numpy()
    assert np.array_equal(R.quantize_weight(w), ref)
    # round half to even on the 2/64 grid: 1/64 -> 0, 3/64 -> 4/64; clamped to [-256, 254]
    assert R.quantize_weight(w).tolist() == [0, 4, 0, -4, 254, -256, 20, -12]


def test_shifts_and_overflow_rules():
    from lava.lib.dl.slayer.utils.int_utils import right_shift_to_zero
    x = np.array([-8193, -4097, -4096, -4095, -1, 0, 1, 4095, 4096, 8191])
    expect = [-2, -1, -1, 0, 0, 0, 0, 0, 1, 1]                 # toward zero
    assert R.sign_magnitude_shift(x, 12).tolist() == expect
    assert R.sign_magnitude_shift(torch.from_numpy(x), 12).tolist() == expect
    assert right_shift_to_zero(torch.from_numpy(x), 12).tolist() == expect   # SLAYER agrees
    # a connection's weight exponent is an arithmetic shift: floor, not toward zero
    assert R.shift_activation(np.array([-5, -4, 5]), -1).tolist() == [-3, -2, 2]
    assert R.shift_activation(torch.tensor([-5, 5]), 2).tolist() == [-20, 20]
    m = 2 ** 23
    cur = np.array([m - 1, m, m + 1, m + 5, -m + 1, -m, -m - 1])
    assert R.wrap_current(cur).tolist() == [m - 1, m, -m + 1, -m + 5, -m + 1, m, m - 1]
    assert R.wrap_current(torch.from_numpy(cur)).tolist() == R.wrap_current(cur).tolist()
    assert R.saturate_voltage(np.array([m, -m, 5])).tolist() == [m - 1, -m + 1, 5]


def test_decay_mapping_from_slayer():
    d = R.atrlif_deltas_from_slayer(2048, 1024, 2048, 2048)
    assert d == {"delta_i": 2047 / 4096, "delta_v": 0.25, "delta_theta": 0.5, "delta_r": 0.5}
    assert R.current_decay_multiplier(d["delta_i"]) == 2048     # = SLAYER's 4096 - iDecay
    assert R.decay_multiplier(d["delta_v"]) == 3072
    assert R.current_decay_multiplier(4095 / 4096) == 0          # iDecay 4096: current = input
    with pytest.raises(ValueError, match="iDecay = 0"):
        R.atrlif_deltas_from_slayer(0, 0, 0, 0)
    with pytest.raises(ValueError, match="multiple of 1/4096"):
        R.decay_multiplier(0.3)


def test_threshold_mantissa_and_feasible_exponents():
    assert theta_mantissa(64, 1, 0) == (64, True)
    assert theta_mantissa(64, 255, -2) == (4080, True)         # graded input: threshold x 255
    assert theta_mantissa(64, 255, -7)[1] is False
    assert feasible_weight_exps(64, 255) == [-6, -5, -4, -3, -2]
    assert feasible_weight_exps(64, 1) == [-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5]


# ============================================================================ neuron
def test_emulator_neuron_hand_computed_trace():
    """ATRLIF fixed point by hand: m_i = 2048, m_v = 3072, m_r = 2048, theta = 64 << 6 = 4096.

    t  a_in  i = i*m_i>>12 + 64a      v = v*m_v>>12 + i             r (decay, +2 theta on spike)  s
    0   50   0 + 3200 = 3200          0 + 3200 = 3200               0                              0
    1   50   1600 + 3200 = 4800       2400 + 4800 = 7200            0 -> 8192                      1
    2    0   2400                     5400 + 2400 = 7800            4096  (7800-4096 < 4096)       0
    3  -30   1200 - 1920 = -720       5850 - 720 = 5130             2048                           0
    4  100   -360 + 6400 = 6040       3847 + 6040 = 9887            1024 -> 9216                   1
    5 -100   3020 - 6400 = -3380      7415 - 3380 = 4035            4608                           0
    6 -100   -1690 - 6400 = -8090     3026 - 8090 = -5064           2304                           0
    7    0   -4045                    -3798 - 4045 = -7843          1152                           0
    (5130*3072/4096 = 3847.5 -> 3847; -5064*3072/4096 = -3798 exactly; -8090/2 = -4045;
     rounding is toward zero: sign(x) * (|x| >> 12).)
    """
    p = NeuronParams.from_atrlif({"delta_i": 2047 / 4096, "delta_v": 0.25, "delta_theta": 0.5,
                                  "delta_r": 0.5, "theta_0": 64, "theta_step": 0})
    out = atrlif_run(p, torch.tensor([[50, 50, 0, -30, 100, -100, -100, 0]]))
    assert out["i"][0].tolist() == [3200, 4800, 2400, -720, 6040, -3380, -8090, -4045]
    assert out["v"][0].tolist() == [3200, 7200, 7800, 5130, 9887, 4035, -5064, -7843]
    assert out["r"][0].tolist() == [0, 8192, 4096, 2048, 9216, 4608, 2304, 1152]
    assert out["s"][0].int().tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    assert out["theta"][0].tolist() == [4096] * 8
    # a negative current decays toward zero: -1 * 2048 >> 12 -> 0 (floor would give -1)
    assert atrlif_run(p, torch.tensor([[-1, 0]]))["i"][0].tolist() == [-64, -32]


class _In:
    data = None

    def recv(self):
        return self.data


class _Out:
    def send(self, x):
        pass


def _lava_fixed_run(params, a_in):
    """lava-nc's own PyATRLIFModelFixed.run_spk, instantiated directly (ports replaced)."""
    from lava.proc.atrlif.models import PyATRLIFModelFixed
    n, T = a_in.shape
    m = PyATRLIFModelFixed({})
    m.a_in, m.s_out = _In(), _Out()
    m.i, m.v, m.theta, m.r = (np.zeros(n, np.int32) for _ in range(4))
    m.s = np.zeros(n, bool)
    m.bias_mant = np.full(n, params.get("bias_mant", 0), np.int16)
    m.bias_exp = np.full(n, params.get("bias_exp", 0), np.int16)
    for k in ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step"):
        setattr(m, k, params[k])
    trace = {k: [] for k in ("s", "i", "v", "theta", "r")}
    for t in range(T):
        m.a_in.data = a_in[:, t].astype(np.int32)
        m.run_spk()
        for k in trace:
            trace[k].append(np.array(getattr(m, k)).astype(np.int64))
    return {k: np.stack(v, axis=-1) for k, v in trace.items()}


@pytest.mark.parametrize("params,lo,hi", [
    ({"delta_i": 2047 / 4096, "delta_v": 1024 / 4096, "delta_theta": 0.5, "delta_r": 0.5,
      "theta_0": 64, "theta_step": 0}, -120, 200),                       # the network's neurons
    ({"delta_i": 1000 / 4096, "delta_v": 300 / 4096, "delta_theta": 700 / 4096, "delta_r": 100 / 4096,
      "theta_0": 300, "theta_step": 40, "bias_mant": 37, "bias_exp": 2}, -400, 600),   # adaptation + bias
    ({"delta_i": 1 / 4096, "delta_v": 0.0, "delta_theta": 0.0, "delta_r": 0.0,
      "theta_0": 4095, "theta_step": 0}, -150000, 150000),               # 24-bit wrap and saturation
    ({"delta_i": 4095 / 4096, "delta_v": 0.0, "delta_theta": 0.0, "delta_r": 0.0,
      "theta_0": R.NON_SPIKING_THETA_0, "theta_step": 0}, -5000, 5000),  # the read-out integrator
])
def test_emulator_neuron_equals_lava_pyatrlifmodelfixed(params, lo, hi):
    rng = np.random.default_rng(abs(hash((lo, hi))) % 2 ** 32)
    a_in = rng.integers(lo, hi, size=(40, 30))
    ref = _lava_fixed_run(params, a_in)
    out = atrlif_run(NeuronParams.from_atrlif(params), torch.from_numpy(a_in))
    for k in ("i", "v", "theta", "r"):
        assert np.array_equal(out[k].numpy(), ref[k]), k
    assert np.array_equal(out["s"].numpy(), ref["s"].astype(bool))
    if hi > 100000:   # the overflow case really overflows
        assert np.abs(ref["v"]).max() == 2 ** 23 - 1 and (np.diff(np.sign(ref["i"]), axis=1) != 0).any()
    if params["theta_0"] < R.NON_SPIKING_THETA_0:
        assert 0 < ref["s"].mean() < 1


LAVA_GRAPH = textwrap.dedent("""
    import json, numpy as np
    from lava.proc.atrlif.process import ATRLIF
    from lava.proc.io.source import RingBuffer
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.run_conditions import RunSteps
    data = np.array(json.loads(input()), dtype=np.int32)
    n, T = data.shape
    src = RingBuffer(data=data)
    neu = ATRLIF(shape=(n,), delta_i=2047/4096, delta_v=0.25, delta_theta=0.5, delta_r=0.5,
                 theta_0=64, theta_step=0, theta=64)
    src.s_out.connect(neu.a_in)
    out = {k: [] for k in ("s", "i", "v", "theta", "r")}
    try:
        for t in range(T):
            neu.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            for k in out:
                out[k].append(np.asarray(getattr(neu, k).get()).astype(int).tolist())
    finally:
        neu.stop()
    print("RESULT" + json.dumps(out))
""")


def test_emulator_equals_a_tiny_lava_fixed_pt_graph():
    """RingBuffer -> ATRLIF run by lava's runtime with Loihi2SimCfg(select_tag='fixed_pt')."""
    rng = np.random.default_rng(3)
    data = rng.integers(-60, 110, size=(6, 12))
    try:
        proc = subprocess.run([sys.executable, "-c", LAVA_GRAPH], input=json.dumps(data.tolist()),
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the tiny Lava graph did not finish in 120 s")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    ref = {k: np.array(v).T for k, v in json.loads(line[0][6:]).items()}    # (n, T)
    p = NeuronParams.from_atrlif({"delta_i": 2047 / 4096, "delta_v": 0.25, "delta_theta": 0.5,
                                  "delta_r": 0.5, "theta_0": 64, "theta_step": 0})
    out = atrlif_run(p, torch.from_numpy(data))
    for k in ("i", "v", "theta", "r"):
        assert np.array_equal(out[k].numpy(), ref[k]), k
    assert np.array_equal(out["s"].numpy(), ref["s"].astype(bool))
    assert 0 < ref["s"].mean() < 1


# ============================================================================ network
def test_quantized_net_parameters(tiny_net, qnet):
    assert qnet.names == ["enc0", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0", "readout"]
    enc0, dec2, ro = qnet["enc0"], qnet["dec2"], qnet["readout"]
    # threshold 4 (vThMant 256) x input gain 255 = 65280 -> 12-bit theta_0 needs exponent -4
    assert enc0.weight_exp == -4 and enc0.atrlif["theta_0"] == 4080 and enc0.input_gain == 255
    assert enc0.num_message_bits == 8 and qnet["enc1"].num_message_bits == 0
    assert qnet["enc1"].weight_exp == 0 and qnet["enc1"].atrlif["theta_0"] == 4 * 64
    assert [(e.source, e.transform, e.channels, e.source_step_offset) for e in dec2.inputs] == \
        [("enc3", "upsample2", (0, 8), 0), ("enc2", "identity", (8, 16), 0)]
    assert qnet["dec0"].input_named("enc0").source_step_offset == 2            # T_enc0 4 - T_dec 2
    assert ro.neuron == "integrator" and ro.output_scale == TINY.readout_scale / (4096 * 2)
    for b in tiny_net.blocks():   # the integers are exactly the weights of the float forward pass
        fwd = b.synapse.effective_weight().detach().numpy()
        assert np.array_equal(qnet[b.name].weight / 64.0, fwd)


def test_binary_layers_bit_exact_with_slayer(tiny_net, qnet):
    from calibration.calibrate import FloatRecorder
    f, m = smooth_patches()
    with torch.no_grad(), FloatRecorder(tiny_net, keep_pre=False) as rec:
        u = tiny_net(f, m)
    pl = payload_of(qnet, f, m)
    forced = {k: v > 0 for k, v in rec.out.items() if k != "readout"}
    tf = emulate(qnet, pl, record_spikes=True, forced=forced)
    for name in ("enc1", "enc2", "enc3", "dec2", "dec1", "dec0"):
        a = spike_agreement(rec.out[name] > 0, tf.spikes[name])
        assert a["mismatches"] == 0, (name, a)
        assert 0 < a["rate_a"] < 1
    assert spike_agreement(rec.out["enc0"] > 0, tf.spikes["enc0"])["agreement"] > 0.999
    assert torch.equal(tf.field, u)             # same dec0 spikes -> bit-identical field
    e2e = emulate(qnet, pl, record_spikes=True)
    assert spike_agreement(rec.out["dec0"] > 0, e2e.spikes["dec0"])["agreement"] > 0.99


def test_emulator_predictor_in_the_host_pipeline(qnet):
    f, m = smooth_patches(1)
    res = emulate_pair(qnet, f, m)
    pred = emulator_predictor(qnet)
    # one patch = the untiled prediction (up to the blending's float normalisation)
    u = register_tensors(pred, [1], f, m, patch=[16] * 3, stride=[8] * 3)
    assert torch.allclose(u, res.field, atol=1e-6, rtol=0) and res.field.abs().max() > 0
    # a whole volume of another size, two residual scales
    g = torch.Generator().manual_seed(1)
    vf = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 20, 16, generator=g), 3, 1, 1)
    vm = torch.roll(vf, 1, dims=2)
    stats = {}
    u2 = register_tensors(emulator_predictor(qnet, stats), qnet.scales, vf, vm, [16] * 3, [8] * 3)
    assert u2.shape == (1, 3, 24, 20, 16) and torch.isfinite(u2).all()
    assert stats["enc0"].neurons > 0 and stats["enc0"].current_wraps == 0
    with pytest.raises(ValueError, match="divisible"):
        emulate(qnet, torch.zeros(1, 2, 12, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="payload outside"):
        emulate(qnet, torch.full((1, 2, 16, 16, 16), 256, dtype=torch.int64))


def test_lava_schedule(qnet):
    s = lava_schedule(qnet)
    assert [s[n]["start"] for n in qnet.names] == [1, 3, 5, 6, 7, 8, 9, 10]
    assert s["dec0"]["inputs"][1] == {"source": "enc0", "transform": "identity", "first_source_step": 2,
                                      "arrival": 4, "extra_delay": 5}
    assert s["readout"]["end"] == 11


# ============================================================================ net.h5
def test_netfile_round_trip_and_contract(qnet, tmp_path):
    p = save_qnet(tmp_path / "net.h5", qnet)
    q2 = load_qnet(p)
    assert qnet_equal(qnet, q2)
    with h5py.File(p, "r") as f:
        assert f.attrs["format"] == "spikereg-neuro/quantized-net" and int(f.attrs["format_version"]) == 1
        assert list(f["layers"].keys()) == sorted(qnet.names)
        for name in qnet.names:
            g = f["layers"][name]
            assert np.issubdtype(g["weight"].dtype, np.integer) and g["weight"].ndim == 5
            for k in ("weight_exp", "delta_i", "delta_v", "delta_theta", "delta_r", "theta_0",
                      "theta_step", "bias_mant", "bias_exp", "stride", "padding", "time_window",
                      "inputs", "neuron"):
                assert k in g.attrs, (name, k)
        assert "output_scale" in f["layers/readout"].attrs
        assert list(f.attrs["enc_windows"]) == [4, 3, 2, 2] and f.attrs["source_sha256"] == "0" * 64
        assert list(f.attrs["patch_size"]) == [16, 16, 16]
        assert list(f["layers/enc1"].attrs["output_shape"]) == [4, 8, 8, 8]
        assert list(f["layers/dec2"].attrs["output_shape"]) == [8, 4, 4, 4]
        assert list(f["layers/readout"].attrs["output_shape"]) == [3, 16, 16, 16]
    assert qnet.shapes((24, 16, 32))["enc3"] == (8, 3, 2, 4)
    # the host-side velocity integration travels with the file; files without it read as 0
    qv = copy.deepcopy(qnet)
    qv.integration_steps = 7
    pv = save_qnet(tmp_path / "netv.h5", qv)
    assert load_qnet(pv).integration_steps == 7 and not qnet_equal(qnet, load_qnet(pv))
    with h5py.File(pv, "r+") as f:
        del f.attrs["integration_steps"]
    assert load_qnet(pv).integration_steps == 0
    # a root time window that disagrees with the layers' is an error, not ignored (issue 18)
    with h5py.File(pv, "r+") as f:
        f.attrs["dec_window"] = 1000000
    with pytest.raises(NetFileError, match="disagrees with the root dec_window"):
        load_qnet(pv)


def test_netfile_records_the_input_schedule(qnet, tmp_path):
    """input_once travels with net.h5; files written before it existed read as False (the input
    at every step of enc0's window); anything but a bool is refused with one clear line."""
    assert qnet.input_once is False and qnet.input_steps == qnet.input_window == 4
    with h5py.File(save_qnet(tmp_path / "every.h5", qnet), "r") as f:
        assert f.attrs["input_once"] is np.False_ or not bool(f.attrs["input_once"])
    q1 = copy.deepcopy(qnet)
    q1.input_once = True
    p1 = save_qnet(tmp_path / "once.h5", q1)
    with h5py.File(p1, "r") as f:
        assert bool(f.attrs["input_once"]) and f.attrs["input_once"].dtype == np.bool_
    back = load_qnet(p1)
    assert back.input_once is True and back.input_steps == 1 and qnet_equal(back, q1)
    assert not qnet_equal(back, qnet)
    old = _copy_and_edit(p1, tmp_path / "old.h5", lambda f: f.attrs.__delitem__("input_once"))
    assert load_qnet(old).input_once is False
    for bad_value in (np.int64(1), "yes", np.float64(0.0)):
        def bad(f, v=bad_value):
            f.attrs["input_once"] = v
        with pytest.raises(NetFileError, match="attribute 'input_once' must be a bool"):
            load_qnet(_copy_and_edit(p1, tmp_path / "bad.h5", bad))
    q2 = copy.deepcopy(qnet)
    q2.input_once = 1
    with pytest.raises(NetFileError, match="input_once must be a bool, got 1"):
        validate_qnet(q2)


def _copy_and_edit(src, dst, fn):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def test_netfile_validation_errors(qnet, tmp_path):
    good = save_qnet(tmp_path / "good.h5", qnet)

    def version(f):
        f.attrs["format_version"] = 99

    def out_of_range(f):
        w = np.array(f["layers/enc1/weight"])
        w.flat[0] = 300
        del f["layers/enc1/weight"]
        f["layers/enc1"].create_dataset("weight", data=w)

    def shape(f):
        w = np.array(f["layers/dec2/weight"])[:, :-1]
        del f["layers/dec2/weight"]
        f["layers/dec2"].create_dataset("weight", data=w)

    def missing(f):
        del f["layers/dec1"]

    def out_shape(f):
        f["layers/enc2"].attrs["output_shape"] = np.array([8, 5, 4, 4])

    def fmt(f):
        f.attrs["format"] = "something-else"

    for fn, msg in [(version, "format_version"), (out_of_range, "out of range"), (shape, "shape mismatch"), (out_shape, "shape mismatch: output_shape"),
                    (missing, "missing layer 'dec1'"), (fmt, "not a spikereg-neuro quantized network")]:
        bad = _copy_and_edit(good, tmp_path / f"{fn.__name__}.h5", fn)
        with pytest.raises(NetFileError, match=msg):
            load_qnet(bad)
    # in-memory validation too
    import copy
    q = copy.deepcopy(qnet)
    q.layers[1].atrlif["theta_0"] = 5000
    with pytest.raises(NetFileError, match="theta_0 5000 out of range"):
        validate_qnet(q)
    q = copy.deepcopy(qnet)
    q.layers[2].weight_exp = -9
    with pytest.raises(NetFileError, match="weight exponent"):
        validate_qnet(q)
    # graded spikes: binary files read as payload_shift -1; a graded source needs graded readers
    with h5py.File(good, "r") as f:
        assert all(int(f["layers"][n].attrs["payload_shift"]) == -1 for n in qnet.names)
    nops = _copy_and_edit(good, tmp_path / "nops.h5", lambda f: f["layers/enc2"].attrs.__delitem__("payload_shift"))
    assert load_qnet(nops).layer("enc2").payload_shift == -1 and not qnet.graded_spikes
    q = copy.deepcopy(qnet)
    q.layer("enc2").payload_shift = 14               # enc3 and dec2 still read it as binary
    with pytest.raises(NetFileError, match="enc3.*reads graded spikes, num_message_bits must be 24"):
        validate_qnet(q)
    q.layer("enc3").num_message_bits = 24            # dec2 reads enc2 (graded) and up(enc3) (binary)
    with pytest.raises(NetFileError, match="dec2.*mixes binary and graded"):
        validate_qnet(q)
    q = copy.deepcopy(qnet)
    q.readout.payload_shift = 3
    with pytest.raises(NetFileError, match="payload_shift 3 must be -1"):
        validate_qnet(q)
    q = copy.deepcopy(qnet)
    q.layer("dec1").num_message_bits = 24
    with pytest.raises(NetFileError, match="binary spikes only, num_message_bits must be 0"):
        validate_qnet(q)
    with pytest.raises(FileNotFoundError):
        load_qnet(tmp_path / "nope.h5")


def test_netfile_field_lists_cover_the_dataclasses(qnet, tmp_path):
    """Every QuantizedNet / QuantizedLayer field is in one field list or listed as stored otherwise
    (a new field cannot be forgotten by save, load and qnet_equal), and a written file holds exactly
    the listed attributes plus the documented derived / provenance ones."""
    import dataclasses
    from calibration.netfile import (ATRLIF_ATTRS, ATRLIF_PARAMS, LAYER_ATTRS, LAYER_NOT_ATTRS, NET_ATTRS,
                                     NET_NOT_ATTRS, QuantizedLayer, QuantizedNet)
    for cls, listed, other in ((QuantizedNet, NET_ATTRS, NET_NOT_ATTRS), (QuantizedLayer, LAYER_ATTRS, LAYER_NOT_ATTRS)):
        names = [f.name for f in listed]
        assert len(set(names)) == len(names) and not set(names) & set(other)
        assert sorted(names + list(other)) == sorted(f.name for f in dataclasses.fields(cls)), cls
    assert tuple(f.name for f in ATRLIF_ATTRS) == ATRLIF_PARAMS
    root_extra = {"format", "format_version", "layer_order", "rules", "created", "lava_nc_version", "lava_dl_version"}
    layer_extra = {"index", "sign_mode", "in_channels", "out_channels", "output_shape", "input_sources",
                   "i_decay_mult", "v_decay_mult", "theta_decay_mult", "r_decay_mult"}
    with h5py.File(save_qnet(tmp_path / "net.h5", qnet), "r") as f:
        assert set(f.attrs) == {a.name for a in NET_ATTRS} | root_extra
        for l in qnet.layers:
            want = {a.name for a in LAYER_ATTRS + ATRLIF_ATTRS} | layer_extra
            if l.output_scale is None:
                want.discard("output_scale")
            assert set(f["layers"][l.name].attrs) == want, l.name


def test_netfile_optional_and_required_attributes(qnet, tmp_path):
    """Each optional attribute absent reads as its default; each required one absent is a NetFileError."""
    from calibration.netfile import ATRLIF_ATTRS, LAYER_ATTRS, NET_ATTRS
    good = save_qnet(tmp_path / "good.h5", qnet)
    with h5py.File(good, "r") as f:
        stored = {g: set(f[g].attrs) for g in ("/", "layers/enc1")}
    for group, fields, get in (("/", NET_ATTRS, lambda q: vars(q)), ("layers/enc1", LAYER_ATTRS, lambda q: vars(q.layer("enc1"))),
                               ("layers/enc1", ATRLIF_ATTRS, lambda q: q.layer("enc1").atrlif)):
        for a in fields:
            if a.name not in stored[group]:  # output_scale: the read-out's only
                continue
            bad = _copy_and_edit(good, tmp_path / "edit.h5", lambda f: f[group].attrs.__delitem__(a.name))
            if a.required:
                with pytest.raises(NetFileError, match=f"missing attribute '{a.name}'"):
                    load_qnet(bad)
            else:
                assert get(load_qnet(bad))[a.name] == a.default, a.name
    bad = _copy_and_edit(good, tmp_path / "edit.h5", lambda f: f["layers/enc1"].attrs.__setitem__("inputs", "[{"))
    with pytest.raises(NetFileError, match="layer 'enc1': attribute 'inputs' is not JSON"):
        load_qnet(bad)
    bad = _copy_and_edit(good, tmp_path / "edit.h5", lambda f: f["layers/enc1"].attrs.__setitem__("inputs", "[{}]"))
    with pytest.raises(NetFileError, match="attribute 'inputs' holds a malformed layer input"):
        load_qnet(bad)


def test_qnet_equal_compares_exactly_the_compare_fields(qnet):
    """qnet_equal sees a change of every compare=True field and of the weights, and ignores the
    compare=False ones (provenance, op, num_weight_bits, slayer) and atrlif keys outside ATRLIF_PARAMS."""
    import dataclasses
    from calibration.netfile import ATRLIF_ATTRS, LAYER_ATTRS, NET_ATTRS
    changed = {"int": lambda v: v + 1, "float": lambda v: 1.5 if v is None else v + 0.5, "bool": lambda v: not v,
               "str": lambda v: v + "x", "int tuple": lambda v: tuple(x + 1 for x in v), "JSON": lambda v: {"x": v},
               "layer inputs": lambda v: [dataclasses.replace(v[0], source_step_offset=7)] + v[1:]}
    for fields, target in ((NET_ATTRS, lambda q: vars(q)), (LAYER_ATTRS, lambda q: vars(q.layers[1])),
                           (ATRLIF_ATTRS, lambda q: q.layers[1].atrlif)):
        for a in fields:
            q = copy.deepcopy(qnet)
            target(q)[a.name] = changed[a.codec.name](target(q)[a.name])
            assert qnet_equal(qnet, q) is not a.compare, a.name
    q = copy.deepcopy(qnet)
    q.layers[1].atrlif["not_stored"] = 1
    assert qnet_equal(qnet, q)
    q.layers[1].weight = q.layers[1].weight.copy()
    q.layers[1].weight.flat[0] += 2
    assert not qnet_equal(qnet, q)
    assert {a.name for a in NET_ATTRS + LAYER_ATTRS if not a.compare} == {
        "source_checkpoint", "model_config", "op", "num_weight_bits", "slayer"}


# ============================================================================ command
def test_calibrate_command_end_to_end(tmp_path, capsys):
    torch.manual_seed(1)
    net = SpikeRegUNet(TINY)
    dc = DataConfig(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=3, n_val=2, n_test=2, seed=3)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", net, {"data_config": dc.to_dict(),
                                                       "inference": {"patch_size": 16, "stride": 8, "batch_size": 2}})
    out = tmp_path / "out" / "net.h5"
    rc = main(["calibrate", "--model", str(ckpt), "--out", str(out), "--cache", str(tmp_path / "cache"),
               "--calib-pairs", "2", "--max-calib-patches", "4"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Dice float" in text
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["calibration_report.json", "calibration_report.md", "net.h5"]   # no temp files left
    rep = json.loads((out.parent / "calibration_report.json").read_text())
    for k in ("dice_float", "dice_quantized", "dice_drop"):
        assert isinstance(rep[k], float)
    assert abs(rep["dice_drop"] - (rep["dice_float"] - rep["dice_quantized"])) < 1e-12
    assert rep["calibration"]["split"] == "train" and rep["calibration"]["patches_verified"] <= 4
    assert set(rep["layers"]) == set(TINY_NAMES)
    assert rep["layers"]["enc1"]["verification"]["mismatches_teacher_forced"] == 0
    q = load_qnet(out)
    assert q.source_sha256 == rep["source_sha256"] and q.calibration["split"] == "train"
    assert "Dice drop" in (out.parent / "calibration_report.md").read_text()
    assert rep["input_once"] is False and rep["input_steps"] == 4
    # a missing model is one clear error line
    rc = main(["calibrate", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.h5")])
    assert rc == 1 and "no SpikeReg model" in capsys.readouterr().err


TINY_NAMES = ["enc0", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0", "readout"]


# ============================================================================ input sent once
def test_input_once_model_quantized_emulated_and_verified():
    """model.input_once: net.h5 records it, enc0's current decay (SLAYER iDecay 1) maps to ATRLIF
    delta_i 0 with no special code, the emulator's enc0 gets its input at step 0 only, and the
    float model agrees with the emulator like the every-step model does (binary layers bit-exact
    when teacher-forced, the field bit-identical given dec0's spikes); calibration's verify runs."""
    import dataclasses
    from calibration.calibrate import FloatRecorder, verify
    from calibration.emulator import layer_input
    torch.manual_seed(0)
    net = SpikeRegUNet(dataclasses.replace(TINY, input_once=True)).eval()
    torch.manual_seed(0)
    net_every = SpikeRegUNet(TINY).eval()
    q = quantize_network(net, source_checkpoint="tiny-once", patch_size=(16, 16, 16), stride=(8, 8, 8))
    qe = quantize_network(net_every, patch_size=(16, 16, 16), stride=(8, 8, 8))
    d0 = {d["name"]: d for d in net.export()}["enc0"]["neuron"]
    assert d0["iDecay"] == 1 and q.input_once and not qe.input_once and q.input_steps == 1
    assert q["enc0"].atrlif["delta_i"] == 0.0 and q["enc0"].multipliers["i_decay_mult"] == 4095
    assert qe["enc0"].multipliers["i_decay_mult"] != 4095
    for a, b in zip(q.layers[1:], qe.layers[1:]):          # only enc0's neuron differs
        assert a.atrlif == b.atrlif and np.array_equal(a.weight, b.weight), a.name
    f, m = smooth_patches()
    pl = payload_of(q, f, m)
    a_in = layer_input(q["enc0"], {"input": pl}, q.input_bits, input_once=True)
    assert bool(a_in[..., 0].any()) and not bool(a_in[..., 1:].any())
    with torch.no_grad(), FloatRecorder(net) as rec:
        u = net(f, m)
    # the float model's enc0 sees its input at step 0 only too
    assert bool(rec.pre["enc0"][..., 0].any()) and not bool(rec.pre["enc0"][..., 1:].any())
    forced = {k: v > 0 for k, v in rec.out.items() if k != "readout"}
    tf = emulate(q, pl, record_spikes=True, forced=forced)
    for name in ("enc1", "enc2", "enc3", "dec2", "dec1", "dec0"):
        a = spike_agreement(rec.out[name] > 0, tf.spikes[name])
        assert a["mismatches"] == 0, (name, a)
    s0 = rec.out["enc0"] > 0
    assert bool(s0[..., 1:].any())                         # enc0 keeps firing after step 0
    assert spike_agreement(s0, tf.spikes["enc0"])["agreement"] > 0.999
    assert torch.equal(tf.field, u)
    v = verify(net, q, [(f, m)])
    assert v["enc1"]["spike_agreement_teacher_forced"] == 1.0
    assert v["enc0"]["spike_agreement_teacher_forced"] > 0.999 and v["enc0"]["current_wraps"] == 0
    assert abs(v["enc0"]["rate_float"] - v["enc0"]["rate_quantized"]) < 1e-3
    assert v["_field"]["mean_abs_diff_vox"] < 0.05 * float(u.abs().mean()) + 1e-6


def test_calibrate_command_on_an_input_once_model(tmp_path, capsys):
    """The calibrate command on an input_once checkpoint: net.h5 says input_once, enc0 holds its
    current (delta_i 0), and the report's verification and Dice are computed on that schedule."""
    import dataclasses
    torch.manual_seed(1)
    net = SpikeRegUNet(dataclasses.replace(TINY, input_once=True))
    dc = DataConfig(voxel_size_mm=8.0, shape=(16, 24, 16), n_train=2, n_val=2, n_test=2, seed=3)
    ckpt = save_checkpoint(tmp_path / "once.pt", net, {"data_config": dc.to_dict(),
                                                       "inference": {"patch_size": 16, "stride": 8, "batch_size": 2}})
    out = tmp_path / "net.h5"
    assert main(["calibrate", "--model", str(ckpt), "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--calib-pairs", "1", "--max-calib-patches", "2", "--eval-pairs", "1"]) == 0
    capsys.readouterr()
    q = load_qnet(out)
    assert q.input_once and q.input_steps == 1 and q.model_config["input_once"] is True
    assert q["enc0"].atrlif["delta_i"] == 0.0
    rep = json.loads((tmp_path / "calibration_report.json").read_text())
    ver = rep["layers"]["enc1"]["verification"]
    assert ver["mismatches_teacher_forced"] == 0 and ver["entries"] > 0
    assert rep["layers"]["enc0"]["verification"]["current_wraps"] == 0
    assert abs(rep["dice_drop"]) < 0.05
    assert rep["input_once"] is True and rep["input_steps"] == 1
    assert "input_once: true" in (tmp_path / "calibration_report.md").read_text()
