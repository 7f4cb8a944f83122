"""The fast emulator engine (``calibration.emulator.emulate``) against the reference step loop
(``emulate_reference``: ``run_layer`` / ``atrlif_step`` in int64), bit for bit: spikes, graded
payloads, the read-out integers and the field, every ``LayerStats`` value, on tiny binary and
graded nets, on nets stressed into 24-bit wraps and saturations, non-constant thresholds,
biases, odd decays, positive and negative weight exponents, teacher forcing and non-cubic
volumes; the engine's shortcuts (folded upsampling, summed read-out) one by one."""
from __future__ import annotations

import copy
from typing import Dict, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import calibration.emulator as E
from calibration import loihi_rules as R
from calibration.netfile import QuantizedNet
from calibration.quantize import quantize_network
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.neuron import NeuronConfig
from spikereg_neuro.model.unet import SpikeRegUNet

torch.set_num_threads(1)

# the dataclass defaults of before they became the packaged config's, which these tests were written for
TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
            readout_scale=0.5, weight_gain=8.0)


def _qnet(graded: bool, readout_levels: int = 1, seed: int = 0, **neuron) -> QuantizedNet:
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY, readout_levels=readout_levels,
                      neuron=NeuronConfig(graded_spike=graded, **neuron))
    return quantize_network(SpikeRegUNet(cfg).eval(), source_checkpoint="tiny", patch_size=(16, 16, 16),
                            stride=(8, 8, 8))


@pytest.fixture(scope="module")
def binary_q() -> QuantizedNet:
    return _qnet(False)


@pytest.fixture(scope="module")
def graded_q() -> QuantizedNet:
    return _qnet(True, readout_levels=2)


def _payload(q: QuantizedNet, shape=(16, 16, 16), n: int = 1, seed: int = 0, smooth: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, q.in_channels, *shape, generator=g)
    if smooth:
        x = F.avg_pool3d(x, 3, 1, 1)
        x = (x - x.amin()) / (x.amax() - x.amin())
    return torch.round(x * (2 ** q.input_bits - 1)).to(torch.int64)


def _stats_equal(a: Dict[str, E.LayerStats], b: Dict[str, E.LayerStats]) -> None:
    assert list(a) == list(b)
    for k in a:
        x, y = a[k], b[k]
        assert x.to_dict() == pytest.approx(y.to_dict(), nan_ok=True), k
        assert (x.a_in_max, x.i_max, x.v_max, x.r_max, x.current_wraps, x.voltage_saturations, x.spikes,
                x.neuron_steps, x.neurons) == (y.a_in_max, y.i_max, y.v_max, y.r_max, y.current_wraps,
                                               y.voltage_saturations, y.spikes, y.neuron_steps, y.neurons), k
        assert (x.spikes_per_step is None) == (y.spikes_per_step is None), k
        if x.spikes_per_step is not None:
            assert np.array_equal(x.spikes_per_step, y.spikes_per_step), k
            assert x.spikes_per_step.dtype == y.spikes_per_step.dtype, k


def assert_bit_exact(q: QuantizedNet, payload: torch.Tensor, monkeypatch=None, with_stats: bool = True,
                     **kw) -> Dict[str, E.LayerStats]:
    """Run both engines (fast one without falling back) and compare everything."""
    st_ref: Optional[dict] = {} if with_stats else None
    st_fast: Optional[dict] = {} if with_stats else None
    try:
        ref = E.emulate_reference(q, payload, record_spikes=True, stats=st_ref, **kw)
    except (OverflowError, RuntimeError) as exc:
        # unbounded states ('none' mode) beyond float64's exact range, or an integrator pushed
        # over its threshold: the fast engine refuses them the same way
        with pytest.raises(type(exc)):
            E.emulate(q, payload, record_spikes=True, stats={} if with_stats else None, **kw)
        return None
    def no_fallback(*a, **k):
        raise AssertionError("the fast engine fell back to the reference")

    with pytest.MonkeyPatch.context() as mp:
        if monkeypatch is not None:   # the fast engine itself must have produced the result
            mp.setattr(E, "emulate_reference", no_fallback)
        fast = E.emulate(q, payload, record_spikes=True, stats=st_fast, **kw)
    assert fast.readout_v.dtype == torch.int64 and torch.equal(fast.readout_v, ref.readout_v)
    assert fast.field.dtype == torch.float32 and torch.equal(fast.field, ref.field)
    assert list(fast.spikes) == list(ref.spikes)
    for k, s in ref.spikes.items():
        assert fast.spikes[k].dtype == s.dtype and fast.spikes[k].shape == s.shape, k
        assert fast.spikes[k].is_contiguous(), k
        assert torch.equal(fast.spikes[k], s), k
    if with_stats:
        _stats_equal(st_fast, st_ref)
        assert list(fast.stats) == list(ref.stats)
    # without recording and stats (the summed read-out path) the read-out is the same too
    plain = E.emulate(q, payload, **kw)
    assert torch.equal(plain.readout_v, ref.readout_v) and plain.spikes == {}
    return st_ref


def stressed(q: QuantizedNet, seed: int, exp_shift: int = 0, theta_scale: float = 1.0, theta_step: int = 0,
             bias: int = 0, deltas: Optional[dict] = None, readout_exp: Optional[int] = None,
             readout_small: bool = False) -> QuantizedNet:
    """A copy of ``q`` with random even weights and shifted exponents / thresholds / decays (not
    a valid trained net; the emulators must agree on it anyway)."""
    rng = np.random.default_rng(seed)
    q = copy.deepcopy(q)
    for l in q.layers:
        hi = 2 if (readout_small and l.neuron == "integrator") else 128
        l.weight = (rng.integers(-hi, hi, size=l.weight.shape) * 2).astype(np.int16)
        if l.neuron == "integrator":
            if readout_exp is not None:
                l.weight_exp = readout_exp
            continue
        l.weight_exp = int(np.clip(l.weight_exp + exp_shift, R.WEIGHT_EXP_MIN, R.WEIGHT_EXP_MAX))
        a = dict(l.atrlif)
        a["theta_0"] = max(1, int(a["theta_0"] * theta_scale))
        a["theta_step"] = theta_step
        if bias:
            a["bias_mant"], a["bias_exp"] = bias, 1
        a.update(deltas or {})
        l.atrlif = a
    return q


# ============================================================================ shortcuts
@pytest.mark.parametrize("k,p", [(3, 1), (3, 0), (3, 2), (1, 0), (5, 2), (2, 1)])
def test_folded_upsampling_equals_upsample_then_conv(k, p):
    g = torch.Generator().manual_seed(k * 10 + p)
    w = (torch.randint(-128, 128, (3, 4, k, k, k), generator=g) * 2).to(torch.float32)
    x = torch.randint(0, 300, (2, 4, 5, 6, 4), generator=g).to(torch.float32)
    folded = E._fold_upsample2(w, (p, p, p))
    ref = F.conv3d(E.upsample2(x.unsqueeze(-1)).squeeze(-1), w, None, 1, p)
    if k - 1 - p < 0:
        assert folded is None
        return
    kt, pads = folded
    y = F.conv_transpose3d(x, kt, None, 2, pads)
    assert torch.equal(y, ref)
    # every output sums each weight once per input: sum|K| per phase == sum|w|, so the float32
    # exactness bound of the unfolded convolution holds
    assert kt.abs().sum() <= 8 * w.abs().sum()


def test_two_adic_valuation():
    assert E._two_adic(torch.tensor([2, -4, 6])) == 1
    assert E._two_adic(torch.tensor([4, -8, 0])) == 2
    assert E._two_adic(torch.tensor([3, 4])) == 0
    assert E._two_adic(torch.zeros(3, dtype=torch.int64)) == 63


def test_summed_readout_is_used_and_exact(binary_q, graded_q, monkeypatch):
    used = []
    orig = E._summed_readout

    def spy(*a):
        y = orig(*a)
        used.append(y is not None)
        return y

    monkeypatch.setattr(E, "_summed_readout", spy)
    for q in (binary_q, graded_q):
        pl = _payload(q, seed=3)
        ref = E.emulate_reference(q, pl)
        used.clear()
        fast = E.emulate(q, pl)
        assert used == [True] and torch.equal(fast.readout_v, ref.readout_v)
        assert torch.equal(fast.field, ref.field)
    # exponent -1 with even weights is a linear shift (taken); -2 is not (step by step, exact)
    for e, taken in ((-1, True), (-2, False), (2, None)):
        q = copy.deepcopy(graded_q)
        q.readout.weight_exp = e
        pl = _payload(q, seed=4)
        ref = E.emulate_reference(q, pl)
        used.clear()
        fast = E.emulate(q, pl)
        assert taken is None or used == [taken], e
        assert torch.equal(fast.readout_v, ref.readout_v), e
    # stats requested: the read-out steps (its stats need every step)
    used.clear()
    E.emulate(graded_q, _payload(graded_q), stats={})
    assert used == []


def test_summed_readout_declines_when_a_step_could_wrap(graded_q, monkeypatch):
    q = copy.deepcopy(graded_q)
    q.readout.weight_exp = 7                      # huge per-step current: the bound must refuse
    q.readout.weight = (np.abs(q.readout.weight) + 2).astype(np.int16)
    pl = _payload(q, seed=5)
    used = []
    orig = E._summed_readout
    monkeypatch.setattr(E, "_summed_readout", lambda *a: used.append(orig(*a)) or used[-1])
    st = assert_bit_exact(q, pl)
    assert used and all(u is None for u in used)
    assert st["readout"].voltage_saturations > 0 or st["readout"].current_wraps > 0


# ============================================================================ bit-exactness
@pytest.mark.parametrize("which", ["binary", "graded"])
@pytest.mark.parametrize("overflow", ["lava", "none"])
def test_fast_equals_reference_on_tiny_nets(which, overflow, binary_q, graded_q, monkeypatch):
    q = binary_q if which == "binary" else graded_q
    for seed in (0, 1):
        assert_bit_exact(q, _payload(q, n=2, seed=seed), monkeypatch, overflow=overflow)
    assert_bit_exact(q, _payload(q, seed=2, smooth=False), monkeypatch, overflow=overflow)


@pytest.mark.parametrize("shape", [(16, 24, 8), (8, 8, 32), (24, 16, 16)])
def test_fast_equals_reference_on_other_volume_sizes(shape, graded_q, monkeypatch):
    assert_bit_exact(graded_q, _payload(graded_q, shape, seed=7), monkeypatch)


@pytest.mark.parametrize("which", ["binary", "graded"])
@pytest.mark.parametrize("case", [
    dict(exp_shift=3, theta_scale=4.0),                       # large currents: 24-bit wraps
    dict(exp_shift=2, theta_scale=64.0),                      # voltages clip at 2**23 - 1
    dict(exp_shift=-3, theta_scale=0.01, theta_step=9),       # adaptive threshold, many spikes
    dict(exp_shift=1, theta_scale=0.3, bias=-5, theta_step=3),
    dict(exp_shift=0, deltas={"delta_i": 4095 / 4096, "delta_v": 1.0, "delta_r": 0.0, "delta_theta": 1.0}),
    dict(exp_shift=0, theta_scale=0.5, deltas={"delta_i": 1 / 4096, "delta_v": 0.0, "delta_r": 1.0,
                                               "delta_theta": 0.0}, theta_step=2),
    dict(exp_shift=1, readout_exp=-2),
    dict(exp_shift=-1, readout_exp=3),
])
def test_fast_equals_reference_on_stressed_nets(which, case, binary_q, graded_q, monkeypatch):
    base = binary_q if which == "binary" else graded_q
    q = stressed(base, seed=hash((which, str(case))) % 1000, **case)
    for overflow in ("lava", "none"):
        st = assert_bit_exact(q, _payload(q, seed=11, smooth=False), monkeypatch, overflow=overflow)
        assert st is not None or overflow == "none"      # only unbounded states may overflow float64


def test_stress_cases_really_overflow(binary_q, graded_q):
    """The stressed nets above do exercise the wrap and the clip (else they would prove little)."""
    wraps = sats = 0
    for base in (binary_q, graded_q):
        for case in (dict(exp_shift=3, theta_scale=4.0), dict(exp_shift=2, theta_scale=64.0)):
            st: dict = {}
            E.emulate(stressed(base, seed=1, **case), _payload(base, seed=11, smooth=False), stats=st)
            wraps += sum(s.current_wraps for s in st.values())
            sats += sum(s.voltage_saturations for s in st.values())
    assert wraps > 0 and sats > 0


@pytest.mark.parametrize("exp_shift,theta_scale", [(-2, 0.5), (-1, 1.0)])   # peaks ~2**24, ~2**31
def test_unbounded_mode_beyond_24_bits(exp_shift, theta_scale, graded_q, monkeypatch):
    """overflow='none' with states past 2**23 (what calibration measures), also past int32 (the
    engine's truncation then takes the float path): still bit-exact."""
    q = stressed(graded_q, seed=3, exp_shift=exp_shift, theta_scale=theta_scale, readout_exp=-8,
                 readout_small=True)
    st = assert_bit_exact(q, _payload(q, seed=11, smooth=False), monkeypatch, overflow="none")
    assert st is not None
    assert max(s.i_max for s in st.values()) > R.STATE_MAX and max(s.v_max for s in st.values()) > R.STATE_MAX
    assert sum(s.current_wraps + s.voltage_saturations for s in st.values()) == 0


def test_stats_merge_over_calls_like_the_reference(graded_q):
    a: dict = {}
    b: dict = {}
    for seed in (0, 1, 2):
        pl = _payload(graded_q, seed=seed)
        E.emulate_reference(graded_q, pl, stats=a)
        E.emulate(graded_q, pl, stats=b)
    _stats_equal(b, a)


@pytest.mark.parametrize("which", ["binary", "graded"])
def test_teacher_forcing_equals_reference(which, binary_q, graded_q, monkeypatch):
    q = binary_q if which == "binary" else graded_q
    pl = _payload(q, seed=9)
    base = E.emulate_reference(q, pl, record_spikes=True)
    g = torch.Generator().manual_seed(0)
    forced = {}
    for name in ("enc1", "dec1"):
        s = base.spikes[name]
        flip = torch.rand(s.shape, generator=g) < 0.05
        if s.dtype == torch.bool:
            forced[name] = s ^ flip
        else:
            forced[name] = torch.where(flip, torch.randint(0, 40, s.shape, generator=g), s)
    assert_bit_exact(q, pl, monkeypatch, forced=forced)


def test_fallback_to_reference_when_float64_could_be_inexact(graded_q, monkeypatch):
    pl = _payload(graded_q, seed=1)
    ref = E.emulate_reference(graded_q, pl, record_spikes=True, stats={})
    monkeypatch.setattr(E, "_STATE_EXACT", 0)           # every bound "fails"
    st: dict = {}
    res = E.emulate(graded_q, pl, record_spikes=True, stats=st)
    assert torch.equal(res.readout_v, ref.readout_v)
    assert all(torch.equal(res.spikes[k], ref.spikes[k]) for k in ref.spikes)
    _stats_equal(st, ref.stats)


def test_api_errors_unchanged(binary_q):
    with pytest.raises(ValueError, match="divisible"):
        E.emulate(binary_q, torch.zeros(1, 2, 12, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="payload outside"):
        E.emulate(binary_q, torch.full((1, 2, 16, 16, 16), 256, dtype=torch.int64))
    with pytest.raises(ValueError, match="overflow"):
        E.emulate(binary_q, torch.zeros(1, 2, 16, 16, 16, dtype=torch.int64), overflow="wrap")


def test_predictor_whole_volume_equals_reference(graded_q):
    """The predictor on a whole (non-cubic) volume: one call, bit-exact field."""
    g = torch.Generator().manual_seed(2)
    f = F.avg_pool3d(torch.rand(1, 1, 24, 32, 16, generator=g), 3, 1, 1)
    m = torch.roll(f, 1, dims=2)
    u = E.emulator_predictor(graded_q)(f, m)
    ref = E.emulate_reference(graded_q, E.payload_of(graded_q, f, m))
    assert torch.equal(u, ref.field)


@pytest.mark.parametrize("stride,padding,k", [((1, 1, 1), (1, 1, 1), 3), ((2, 2, 2), (1, 1, 1), 3),
                                              ((2, 1, 1), (0, 1, 2), 3), ((1, 2, 1), (2, 0, 1), 5)])
def test_depth_folded_conv_equals_conv3d(stride, padding, k):
    g = torch.Generator().manual_seed(k)
    w = (torch.randint(-128, 128, (5, 2, k, 3, k), generator=g) * 2).to(torch.float32)
    x = torch.randint(0, 256, (2, 2, 9, 8, 10), generator=g).to(torch.float32)
    y = E._conv3d_as_2d(x, w, stride, padding)
    assert torch.equal(y, F.conv3d(x, w, None, stride, padding))


@pytest.mark.parametrize("chunk,channels_last", [(1000, True), (4096, False), (1 << 20, False)])
def test_blocks_and_layouts_do_not_change_a_bit(chunk, channels_last, graded_q, monkeypatch):
    """The neuron loop runs block by block (the last block partial) and the convolutions in
    either memory layout: all bit-exact."""
    monkeypatch.setattr(E, "_CHUNK", chunk)
    monkeypatch.setattr(E, "_CHANNELS_LAST", channels_last)
    q = stressed(graded_q, seed=5, exp_shift=1, theta_scale=0.5, theta_step=2)
    assert_bit_exact(q, _payload(q, n=2, seed=6, smooth=False), monkeypatch)


# ============================================================================ input injected once
def once(q: QuantizedNet, delta_i: Optional[float] = 0.0) -> QuantizedNet:
    """``q`` with ``input_once`` (the payload at step 0 only) and, unless None, the input layer's
    current decay set to ``delta_i`` (0: SLAYER iDecay 1, the current holds the input)."""
    q = copy.deepcopy(q)
    q.input_once = True
    if delta_i is not None:
        q["enc0"].atrlif = {**q["enc0"].atrlif, "delta_i": delta_i}
    return q


def test_input_once_reaches_the_input_layer_at_step_0_only(graded_q):
    q = once(graded_q)
    l0 = q["enc0"]
    assert q.input_steps == 1 and graded_q.input_steps == l0.time_window == 4
    assert l0.multipliers["i_decay_mult"] == 4095            # leaks 1/4096 per step
    pl = _payload(q, seed=3)
    every = E.layer_input(graded_q["enc0"], {"input": pl}, q.input_bits)
    a = E.layer_input(l0, {"input": pl}, q.input_bits, input_once=True)
    assert a.shape == every.shape and int(a[..., 0].abs().max()) > 0
    assert torch.equal(a[..., 0], every[..., 0]) and not bool(a[..., 1:].any())
    # the current holds the input: i_t = trunc(i_{t-1} * 4095 / 4096) after step 0
    tr = E.atrlif_run(E.NeuronParams.from_atrlif(l0.atrlif), a.flatten(0, -2)[:500])
    i = tr["i"]
    assert torch.equal(i[:, 0], 64 * a.flatten(0, -2)[:500, 0])
    for t in range(1, i.shape[1]):
        assert torch.equal(i[:, t], torch.sign(i[:, t - 1]) * ((i[:, t - 1].abs() * 4095) >> 12))
    # enc0 still spikes after step 0 (it would prove little otherwise), and differently from
    # the every-step schedule
    r = E.emulate_reference(q, pl, record_spikes=True)
    r_every = E.emulate_reference(graded_q, pl, record_spikes=True)
    s0 = r.spikes["enc0"] != 0
    assert bool(s0[..., 1:].any()) and not torch.equal(s0, r_every.spikes["enc0"] != 0)


@pytest.mark.parametrize("which", ["binary", "graded"])
@pytest.mark.parametrize("overflow", ["lava", "none"])
def test_input_once_fast_equals_reference(which, overflow, binary_q, graded_q, monkeypatch):
    q = once(binary_q if which == "binary" else graded_q)
    for seed in (0, 1):
        st = assert_bit_exact(q, _payload(q, n=2, seed=seed), monkeypatch, overflow=overflow)
        assert st["enc0"].spikes > 0 and all(st[k].spikes > 0 for k in ("enc1", "dec0"))
    assert_bit_exact(q, _payload(q, seed=2, smooth=False), monkeypatch, overflow=overflow)
    # the schedule matters to the fast engine too: input_once with the old (fast) current decay
    q2 = once(graded_q if which == "graded" else binary_q, delta_i=None)
    assert_bit_exact(q2, _payload(q2, seed=4), monkeypatch, overflow=overflow)


@pytest.mark.parametrize("case", [
    dict(exp_shift=3, theta_scale=4.0),                       # large currents: 24-bit wraps at step 0
    dict(exp_shift=2, theta_scale=64.0),                      # voltages clip
    dict(exp_shift=-3, theta_scale=0.01, theta_step=9),
    dict(exp_shift=1, theta_scale=0.3, bias=-5, theta_step=3),
])
def test_input_once_fast_equals_reference_on_stressed_nets(case, graded_q, monkeypatch):
    q = once(stressed(graded_q, seed=21, **case))
    q["enc0"].atrlif = {**q["enc0"].atrlif, "delta_i": 0.0}
    for overflow in ("lava", "none"):
        st = assert_bit_exact(q, _payload(q, seed=11, smooth=False), monkeypatch, overflow=overflow)
        assert st is not None or overflow == "none"
    if case["exp_shift"] == 3:
        st: dict = {}
        E.emulate(q, _payload(q, seed=11, smooth=False), stats=st)
        assert st["enc0"].current_wraps > 0


def _input_only_net(input_once: bool, mixed: bool) -> QuantizedNet:
    """A hand-built net whose read-out integrates the graded input directly (and, with
    ``mixed``, the spikes of a spiking layer too): the read-out paths that see the input."""
    from calibration.netfile import LayerInput, QuantizedLayer, validate_qnet
    rng = np.random.default_rng(5)
    T = 3
    atr = R.atrlif_deltas_from_slayer(1, 128, 0, 0)
    atr.update(theta_0=2040, theta_step=0, bias_mant=0, bias_exp=0)
    a = QuantizedLayer(name="a", neuron="atrlif", weight=(rng.integers(-60, 60, (4, 2, 3, 3, 3)) * 2).astype(np.int16),
                       weight_exp=-3, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1),
                       inputs=[LayerInput("input", channels=(0, 2))], time_window=T, atrlif=atr,
                       num_message_bits=8)
    integ = {"delta_i": 4095 / 4096, "delta_v": 0.0, "delta_theta": 0.0, "delta_r": 0.0,
             "theta_0": R.NON_SPIKING_THETA_0, "theta_step": 0, "bias_mant": 0, "bias_exp": 0}
    ins = [LayerInput("input", channels=(0, 2))] + ([LayerInput("a", channels=(2, 6))] if mixed else [])
    ro = QuantizedLayer(name="readout", neuron="integrator",
                        weight=(rng.integers(-3, 4, (3, 6 if mixed else 2, 3, 3, 3)) * 2).astype(np.int16),
                        weight_exp=-1, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1), inputs=ins,
                        time_window=T, atrlif=integ, num_message_bits=8, output_scale=1e-4)
    return validate_qnet(QuantizedNet(layers=[a, ro], enc_windows=(T,), dec_window=T, input_bits=8, in_channels=2,
                                      scales=(1,), readout_scale=1.0, patch_size=(8, 8, 8), stride=(8, 8, 8),
                                      input_once=input_once))


@pytest.mark.parametrize("mixed", [False, True])
def test_input_once_readout_of_the_input_is_exact(mixed, monkeypatch):
    """The read-out's summed shortcut and its mixed (input + spikes) input frame follow the
    schedule: once, the time-summed input is the payload's frame once, not T times."""
    used = []
    orig = E._summed_readout
    monkeypatch.setattr(E, "_summed_readout", lambda *a: used.append(orig(*a)) or used[-1])
    vs = {}
    for flag in (False, True):
        q = _input_only_net(flag, mixed)
        pl = _payload(q, (8, 8, 8), seed=1)
        used.clear()
        assert_bit_exact(q, pl, monkeypatch)
        assert used and used[-1] is not None          # the summed path ran (and was exact)
        vs[flag] = E.emulate_reference(q, pl).readout_v
    if not mixed:   # integrating the input once gives exactly 1/T of integrating it every step
        assert torch.equal(vs[False], 3 * vs[True]) and int(vs[True].abs().max()) > 0
