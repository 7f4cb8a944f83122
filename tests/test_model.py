"""The spiking U-Net, its blocks, the residual policy, tiling and checkpoints (tiny sizes)."""
import numpy as np
import pytest
import torch

from spikereg_neuro.connections import Connection
from spikereg_neuro.checkpoint import load_network, read_checkpoint, save_checkpoint
from spikereg_neuro.model.blocks import SpikingConvBlock
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.encoding import encode_graded, graded_payload
from spikereg_neuro.model.neuron import NeuronConfig, make_neuron, reset_neuron
from spikereg_neuro.model.policy import residual_registration
from spikereg_neuro.model.synapse import Conv3dSynapse
from spikereg_neuro.model.unet import SpikeRegUNet, upsample_spikes
from spikereg_neuro.registration.transform import compose, integrate_velocity
from spikereg_neuro.tiling import blend_window, tile_starts, tiled_predict

# the dataclass defaults of before they became the packaged config's, which these tests were written for
TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
            readout_scale=0.5, weight_gain=8.0, readout_levels=1, neuron=NeuronConfig(graded_spike=False))


def _pair(size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, size, size, size, generator=g), torch.rand(1, 1, size, size, size, generator=g)


def test_synapse_matches_conv3d_per_time_step():
    torch.manual_seed(0)
    syn = Conv3dSynapse(2, 3, 3, stride=2)
    x = (torch.rand(1, 2, 8, 8, 8, 5) > 0.7).float()
    y = syn(x)
    assert y.shape == (1, 3, 4, 4, 4, 5)
    for t in range(5):
        ref = torch.nn.functional.conv3d(x[..., t], syn.weight, None, 2, 1)
        assert torch.allclose(y[..., t], ref, atol=1e-6)
    assert syn.output_shape((8, 8, 8)) == (4, 4, 4)
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W, T\)"):
        syn(torch.zeros(1, 2, 8, 8, 8))


def test_block_weights_are_on_the_8bit_grid_and_export_integers():
    blk = SpikingConvBlock("b", 2, 4, NeuronConfig(graded_spike=False), weight_gain=8.0)
    w = blk.synapse.effective_weight() * blk.neuron.w_scale
    assert torch.allclose(w, w.round()) and (w.round() % 2 == 0).all()
    assert w.min() >= -256 and w.max() <= 254
    d = blk.export()
    assert d["type"] == "conv3d" and d["weight"].shape == (4, 2, 3, 3, 3)
    assert np.array_equal(d["weight"], np.round(d["weight"]))
    assert d["neuron"]["vThMant"] == 4 * 64 and d["neuron"]["refDecay"] == 2048


def test_refractory_period_holds():
    """Constant drive that fires every step without refractoriness skips steps with it."""
    cfg = NeuronConfig(threshold=1.0, current_decay=1.0, voltage_decay=1.0, refractory_decay=0.5,
                       graded_spike=False)
    neuron = make_neuron(cfg)
    drive = torch.full((1, 1, 12), 1.2)  # v = 1.2 every step (no memory), above threshold 1
    s = neuron(drive)[0, 0]
    assert s[0] == 1
    # after a spike r = 2 theta, decaying by half per step: v - r < theta for the next steps
    assert s.sum() < 12
    fired = torch.nonzero(s).flatten().tolist()
    assert all(b - a >= 2 for a, b in zip(fired, fired[1:])), fired
    # a CUBA neuron (no refractory state) with the same drive and hard reset fires every step
    cuba = make_neuron(NeuronConfig(kind="cuba", threshold=1.0, current_decay=1.0, voltage_decay=1.0,
                                    graded_spike=False))
    assert cuba(drive)[0, 0].sum() == 12


def test_graded_encoding_is_quantized_and_repeated():
    x = torch.tensor([0.0, 0.5, 1.0, 0.3]).view(1, 1, 1, 1, 4)
    e = encode_graded(x, steps=3, bits=8)
    assert e.shape == (1, 1, 1, 1, 4, 3)
    assert torch.allclose(e[..., 0] * 255, graded_payload(x).float())
    with pytest.raises(ValueError, match="NaN"):
        encode_graded(torch.tensor([float("nan")]).view(1, 1, 1, 1, 1), 2)


def test_unet_shapes_spikes_and_activity():
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY))
    f, m = _pair(16)
    u = net(f, m)
    assert u.shape == (1, 3, 16, 16, 16) and torch.isfinite(u).all()
    assert set(net.activity) == {"enc0", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0"}
    assert net.activity["enc0"].shape == (4,) and net.activity["enc1"].shape == (3,)
    assert net.activity["dec0"].shape == (2,)
    assert net.num_neurons["enc0"] == 4 * 16 ** 3 and net.num_neurons["enc3"] == 8 * 2 ** 3
    # every layer fires at initialisation (the original SpikeReg was silent past layer 1)
    for name, counts in net.activity.items():
        assert counts.sum() > 0, name


def test_only_binary_spikes_travel_between_layers():
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY))
    seen = []
    for blk in [*net.enc, *net.dec]:
        blk.register_forward_hook(lambda mod, inp, out: seen.append(out))
    net(*_pair(16))
    for out in seen:
        assert torch.all((out == 0) | (out == 1))


def test_graded_spikes_carry_the_voltage_in_thresholds():
    """graded_spike: a spike carries v / theta (>= 1, unbounded above), zero elsewhere; the
    gradient is the payload's own derivative (1 / theta) above threshold; activity counts events."""
    cfg = NeuronConfig(threshold=2.0, current_decay=1.0, voltage_decay=1.0, refractory_decay=1.0,
                       graded_spike=True)
    blk = SpikingConvBlock("g", 1, 1, cfg, kernel_size=1, quantize=False)
    with torch.no_grad():
        blk.synapse.weight.fill_(1.0)
    drive = torch.tensor([0.5, 1.9, 2.0, 5.0, 13.0], requires_grad=True)
    s = blk(drive.view(1, 1, 1, 1, 5, 1).expand(1, 1, 1, 1, 5, 2))[0, 0, 0, 0]
    # no memory (decays 1): v = drive at every step; refractory decays fully, so no suppression
    assert torch.allclose(s[:, 0], torch.tensor([0.0, 0.0, 1.0, 2.5, 6.5]))
    s[:, 0].sum().backward()
    assert torch.allclose(drive.grad[3:], torch.full((2,), 0.5))    # d(v / theta)/dv = 1/2
    assert drive.grad[0] < drive.grad[1] < 0.5                       # surrogate below threshold
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**{**TINY, "weight_gain": 3.0, "neuron": NeuronConfig(graded_spike=True)}))
    seen = {}
    for blk in [*net.enc, *net.dec]:
        blk.register_forward_hook(lambda mod, inp, out, n=blk.name: seen.__setitem__(n, out))
    net(*_pair(16))
    assert any(float(o.max()) > 1.5 for o in seen.values())           # payloads beyond one threshold
    for name, out in seen.items():
        assert torch.all((out == 0) | (out >= 1)), name
        assert net.activity[name].sum() == (out != 0).sum()            # events, not payload sums
        assert torch.isclose(net.rates[name], (out != 0).float().mean())
    with pytest.raises(ValueError, match="graded_spike"):
        NeuronConfig(graded_spike="yes")


def test_gradient_reaches_every_layer():
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY))
    f, m = _pair(16)
    u, _ = residual_registration(net, f, m, net.cfg.scales)
    (u ** 2).mean().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_input_shapes():
    net = SpikeRegUNet(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 1, 12, 16, 16), torch.rand(1, 1, 12, 16, 16))
    with pytest.raises(ValueError, match="differ in shape"):
        net(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 8, 16, 16))


def test_model_config_validation():
    with pytest.raises(ValueError, match="must not increase"):
        ModelConfig(enc_windows=(4, 6, 2, 2), dec_window=2)
    with pytest.raises(ValueError, match="dec_window"):
        ModelConfig(enc_windows=(8, 6, 4, 2), dec_window=4)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"channels": 3})
    for bad in (-1, 17, 2.5, True):
        with pytest.raises(ValueError, match="integration_steps"):
            ModelConfig(integration_steps=bad)
    assert ModelConfig().integration_steps == 0   # old checkpoints: the read-out is the displacement


def test_velocity_readout_is_integrated_per_iteration_before_composition():
    """integration_steps > 0: each prediction is a velocity, exponentiated, then composed; the
    coarse iteration integrates at its own resolution and is resized afterwards."""
    f, m = _pair(16)
    g = torch.Generator().manual_seed(2)
    v1 = torch.randn(1, 3, 8, 8, 8, generator=g)
    v2 = torch.randn(1, 3, 16, 16, 16, generator=g)
    preds = iter([v1, v2])
    u, hist = residual_registration(lambda a, b: next(preds), f, m, scales=(2, 1), integration_steps=5)
    from spikereg_neuro.registration.transform import resize_field
    r1 = resize_field(integrate_velocity(v1, 5), (16, 16, 16))
    assert torch.allclose(hist[0], r1, atol=1e-5)
    assert torch.allclose(u, compose(r1, integrate_velocity(v2, 5)), atol=1e-5)
    # the exponential of a 1-voxel-scale random velocity is not the velocity itself
    assert (integrate_velocity(v2, 5) - v2).abs().mean() > 0.05
    # integration_steps 0 keeps the old behaviour exactly
    preds = iter([v2])
    u0, _ = residual_registration(lambda a, b: next(preds), f, m, scales=(1,), integration_steps=0)
    assert torch.equal(u0, v2)


def test_inference_integrates_the_velocity_of_a_model_configured_for_it(tmp_path):
    """A checkpoint with integration_steps keeps it, and register() returns exp(net output)."""
    from spikereg_neuro.inference import SpikeRegInference
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY, "scales": (1,), "integration_steps": 4, "readout_init": 8.0})
    net = SpikeRegUNet(cfg).eval()
    path = save_checkpoint(tmp_path / "v.pt", net, {"inference": {"patch_size": 16, "stride": 8}})
    reg = SpikeRegInference(path)
    assert reg.net.cfg.integration_steps == 4
    f, m = _pair(16)
    field = reg.register(f[0, 0].numpy(), m[0, 0].numpy())
    with torch.no_grad():
        v = net(f, m)
    assert v.abs().mean() > 0.05   # a non-trivial velocity, so the check below can fail
    assert np.allclose(field, integrate_velocity(v, 4)[0].numpy(), atol=1e-4)
    assert not np.allclose(field, v[0].numpy(), atol=1e-3)


def test_residual_policy_composes_fields():
    """Two iterations with fixed predictors give compose(r1, r2), not r1 + r2."""
    f, m = _pair(16)
    g = torch.Generator().manual_seed(1)
    r1 = torch.randn(1, 3, 16, 16, 16, generator=g) * 0.5
    r2 = torch.randn(1, 3, 16, 16, 16, generator=g) * 0.5
    preds = iter([r1, r2])
    u, hist = residual_registration(lambda a, b: next(preds), f, m, scales=(1, 1))
    assert torch.allclose(u, compose(r1, r2), atol=1e-5)
    assert not torch.allclose(u, r1 + r2, atol=1e-3)
    assert len(hist) == 2


def test_tiling_one_patch_equals_untiled_and_blends_without_seams():
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    f, m = _pair(16)
    with torch.no_grad():
        direct = net(f, m)
        tiled = tiled_predict(net, f, m, patch=[16] * 3, stride=[8] * 3)
    assert torch.allclose(direct, tiled, atol=1e-6)
    # a constant predictor through overlapping tiles stays exactly constant (weights normalise)
    const = lambda a, b: torch.ones(a.shape[0], 3, *a.shape[2:])  # noqa: E731
    out = tiled_predict(const, torch.rand(1, 1, 20, 24, 9), torch.rand(1, 1, 20, 24, 9), [8, 8, 8], [4, 4, 4])
    assert out.shape == (1, 3, 20, 24, 9) and torch.allclose(out, torch.ones_like(out))
    assert tile_starts(20, 8, 4) == [0, 4, 8, 12]
    assert tile_starts(21, 8, 6) == [0, 6, 12, 13]
    assert blend_window([8, 8, 8]).min() > 0


def test_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    f, m = _pair(16)
    path = save_checkpoint(tmp_path / "m.pt", net, {"best_val_dice": 0.5})
    net2, ckpt = load_network(path)
    with torch.no_grad():
        assert torch.equal(net(f, m), net2(f, m))
    assert ckpt["best_val_dice"] == 0.5
    with pytest.raises(ValueError, match="another model config"):
        load_network(path, expect=ModelConfig())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        read_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a spikereg-neuro checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")
    # weights that do not fit the stored config
    ck = torch.load(path, weights_only=True)
    ck["model_config"]["enc_channels"] = [8, 8, 8, 8]
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="does not match its own model config"):
        load_network(tmp_path / "mismatch.pt")


def test_upsample_spikes():
    s = (torch.rand(1, 2, 2, 2, 2, 3) > 0.5).float()
    u = upsample_spikes(s)
    assert u.shape == (1, 2, 4, 4, 4, 3)
    assert torch.equal(u[:, :, ::2, ::2, ::2], s)


def test_readout_init_sets_the_initial_field_size():
    """A small read-out init (in quanta) starts near the identity field; bad values are refused."""
    f, m = _pair(16)
    mags = {}
    for q in (0.5, 4.0):
        torch.manual_seed(0)
        net = SpikeRegUNet(ModelConfig(**{**TINY, "readout_init": q}))
        w = net.readout.synapse.effective_weight() * net.readout.w_scale / 2   # in quanta
        assert torch.equal(w, w.round())
        with torch.no_grad():
            mags[q] = float(net(f, m).norm(dim=1).mean())
    assert mags[0.5] < 0.5 * mags[4.0]
    with pytest.raises(ValueError, match="readout_init"):
        ModelConfig(readout_init=-1.0)


def test_two_level_readout_reads_dec0_and_upsampled_dec1_spikes():
    """readout_levels 2: the read-out's synapse sees dec0 ++ up2(dec1) spikes (binary), the export
    names both sources, gradients reach the new weights, and level 1 is the plain dec0 read-out."""
    f, m = _pair(16)
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**{**TINY, "readout_levels": 2}))
    seen = {}
    net.readout.register_forward_hook(lambda mod, inp, out: seen.update(x=inp))
    u, _ = residual_registration(net, f, m, net.cfg.scales)
    dec0, dec1 = seen["x"]           # the read-out reads dec0 and dec1 (half resolution)
    assert dec1.shape[2:5] == tuple(n // 2 for n in dec0.shape[2:5])
    x = torch.cat([dec0, upsample_spikes(dec1)], dim=1)
    assert x.shape[1] == TINY["dec_channels"][2] + TINY["dec_channels"][1] == net.readout.synapse.in_channels
    assert torch.all((x == 0) | (x == 1))
    # the last channels are dec1's spikes upsampled x2: constant over each 2x2x2 block
    d1 = x[:, TINY["dec_channels"][2]:]
    assert torch.equal(d1, upsample_spikes(d1[:, :, ::2, ::2, ::2])) and d1.sum() > 0
    exp = {d["name"]: d for d in net.export()}
    assert exp["readout"]["inputs"] == [Connection("dec0"), Connection("dec1", 2)]
    (u ** 2).mean().backward()
    g = net.readout.synapse.weight.grad
    assert g[:, TINY["dec_channels"][2]:].abs().sum() > 0
    assert SpikeRegUNet(ModelConfig(**TINY)).export()[-1]["inputs"] == [Connection("dec0")]
    with pytest.raises(ValueError, match="readout_levels"):
        ModelConfig(readout_levels=3)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("step", [0.0, 1.5])
@pytest.mark.parametrize("state", [None, torch.float64, torch.int64])
def test_fused_alif_equals_slayer_bit_for_bit(graded, step, state, monkeypatch):
    """FusedALIF (one fused time loop) gives SLAYER ALIF's spikes and input gradients exactly,
    binary and graded, with and without threshold adaptation, in every state type it can pick
    (float32 where the bounds allow, float64, int64), for small and large drives and for
    decays whose products need more mantissa bits."""
    from lava.lib.dl.slayer.neuron import alif as slayer_alif

    from spikereg_neuro.model import fused_alif

    if state is not None:
        monkeypatch.setattr(fused_alif, "_regime", lambda *a: state)
    for decays in ({}, dict(current_decay=0.1, voltage_decay=0.03, refractory_decay=0.7,
                            threshold_decay=0.2)):
        cfg = NeuronConfig(graded_spike=graded, threshold_step=step, **decays)
        ours = make_neuron(cfg)
        theirs = make_neuron(cfg, fused=False)
        assert isinstance(ours, fused_alif.FusedALIF) and type(theirs) is slayer_alif.Neuron
        for scale in (6.0, 3e4):
            g = torch.Generator().manual_seed(1)
            x = (torch.randn(2, 3, 5, 4, 3, 7, generator=g) * scale).requires_grad_()
            s_ref = theirs(x)
            grad_out = torch.randn(s_ref.shape, generator=g)
            (gx_ref,) = torch.autograd.grad(s_ref, x, grad_out)
            s = ours(x)
            (gx,) = torch.autograd.grad(s, x, grad_out)
            assert torch.equal(s, s_ref) and torch.equal(gx, gx_ref)
            assert 0 < float((s_ref != 0).float().mean()) < 1
            if graded:   # payloads divided inside the loop == SLAYER's output divided
                reset_neuron(theirs)
                d_ref = theirs(x) / 3.7
                (gd_ref,) = torch.autograd.grad(d_ref, x, grad_out)
                d = ours(x, payload_div=3.7)
                (gd,) = torch.autograd.grad(d, x, grad_out)
                assert torch.equal(d, d_ref) and torch.equal(gd, gd_ref)
        # an input constant over time (stride-0 time axis) is quantized once: same spikes
        x0 = torch.rand(2, 3, 4, 4, 4, generator=g).mul(20).unsqueeze(-1).expand(2, 3, 4, 4, 4, 6)
        reset_neuron(theirs)
        assert torch.equal(ours(x0), theirs(x0))


@pytest.mark.parametrize("graded", [False, True])
def test_fused_alif_slow_current_decay_impulse_stays_float32_and_exact(graded, monkeypatch):
    """The input-once layer (current decay 1/4096, the image only at step 0): FusedALIF keeps
    float32 states (the decay's complement form and the impulse's bound) and still equals SLAYER."""
    from spikereg_neuro.model import fused_alif
    from spikereg_neuro.model.unet import INPUT_ONCE_CURRENT_DECAY

    picked = []
    real = fused_alif._regime
    monkeypatch.setattr(fused_alif, "_regime", lambda *a: picked.append(real(*a)) or picked[-1])
    cfg = NeuronConfig(graded_spike=graded, current_decay=INPUT_ONCE_CURRENT_DECAY)
    ours, theirs = make_neuron(cfg), make_neuron(cfg, fused=False)
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(2, 3, 5, 4, 3, 8)
    x[..., 0] = torch.randn(2, 3, 5, 4, 3, generator=g) * 40.0    # an impulse of a large drive
    x.requires_grad_()
    s_ref = theirs(x)
    grad_out = torch.randn(s_ref.shape, generator=g)
    (gx_ref,) = torch.autograd.grad(s_ref, x, grad_out)
    s = ours(x)
    (gx,) = torch.autograd.grad(s, x, grad_out)
    assert picked == [torch.float32]
    assert torch.equal(s, s_ref) and torch.equal(gx, gx_ref) and 0 < float((s != 0).float().mean()) < 1
    # the complement form of the decay is the same integer as trunc(x m / 4096), signs included
    v = torch.arange(-70000, 70000, 7, dtype=torch.float64)
    ref = torch.div(v.to(torch.int64) * 4095, 4096, rounding_mode="trunc")
    assert torch.equal(fused_alif._rstz(v.clone(), 4095).to(torch.int64), ref)
    assert torch.equal(fused_alif._rstz(v.clone().float(), 4095).to(torch.int64), ref)


def test_fused_alif_picks_an_exact_state_type():
    from spikereg_neuro.model.fused_alif import FusedALIF, _Constants, _regime

    k = _Constants(make_neuron(NeuronConfig()))
    assert isinstance(make_neuron(NeuronConfig()), FusedALIF)
    assert _regime(k, 8, 4096 * 10.0) == torch.float32        # the trained network's range
    assert _regime(k, 8, 4096 * 1e4) == torch.float64
    assert _regime(k, 8, 4096 * 1e12) == torch.int64
    with pytest.raises(ValueError, match="FusedALIF"):
        FusedALIF(threshold=1.0, threshold_step=0.0, current_decay=0.5, voltage_decay=0.5,
                  threshold_decay=0.5, refractory_decay=0.5, persistent_state=True)


def test_upsampled_parts_are_convolved_polyphase_like_the_upsampled_tensor():
    """conv3d(up2(x)) == the synapse on Upsampled(x) (fold_up2: stride-2 transposed conv with
    folded taps), values and gradients, alone and next to a skip part."""
    import torch.nn.functional as F

    from spikereg_neuro.model.synapse import Upsampled, fold_up2

    g = torch.Generator().manual_seed(0)
    syn = Conv3dSynapse(5, 4, 3)
    coarse = (torch.rand(2, 3, 3, 4, 5, 2, generator=g) > 0.5).float().requires_grad_()
    skip = (torch.rand(2, 2, 6, 8, 10, 2, generator=g) > 0.5).float()
    y = syn([Upsampled(coarse), skip])
    ref = syn([upsample_spikes(coarse), skip])
    assert torch.allclose(y, ref, atol=1e-6)
    (gy,) = torch.autograd.grad(y.sum(), coarse)
    (gr,) = torch.autograd.grad(ref.sum(), coarse)
    assert torch.allclose(gy, gr, atol=1e-5)
    w = torch.randn(4, 3, 3, 3, 3, generator=g)
    x = torch.rand(1, 3, 4, 4, 4, generator=g)
    assert torch.allclose(F.conv_transpose3d(x, fold_up2(w), stride=2, padding=1),
                          F.conv3d(F.interpolate(x, scale_factor=2), w, padding=1), atol=1e-5)
    with pytest.raises(ValueError, match="half size"):
        syn([Upsampled(skip), skip])


@pytest.mark.parametrize("bad", [dict(enc_channels=(0, 16, 32, 32)), dict(dec_channels=(-1, 16, 8)),
                                 dict(enc_channels=("a", 16, 32, 32)), dict(dec_window=1.5),
                                 dict(readout_scale="x"), dict(scales=[2.0, 1]), dict(input_bits=True)])
def test_model_config_refuses_wrong_types_and_channel_counts(bad):
    with pytest.raises(ValueError, match="model\\.|channel counts"):
        ModelConfig(**bad)


def test_input_once_sends_the_image_at_the_first_step_and_enc0_holds_it():
    """With ``input_once`` enc0's synapse output is W x at step 0 and zero after, its neurons
    keep that current (iDecay 1), and the network equals one fed the explicit impulse train."""
    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=(4, 4, 4, 4), dec_channels=(4, 4, 4), input_once=True,
                      neuron=NeuronConfig(graded_spike=True))
    net = SpikeRegUNet(cfg)
    assert net.enc[0].neuron.device_params["iDecay"] == 1
    assert net.enc[1].neuron.device_params["iDecay"] == 2048
    f, m = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    seen = {}
    net.enc[0].synapse.register_forward_hook(lambda mod, inp, out: seen.update(a=out.detach()))
    u = net(f, m)
    a = seen["a"]
    assert a.shape[-1] == cfg.enc_windows[0]
    assert a[..., 0].abs().sum() > 0 and torch.count_nonzero(a[..., 1:]) == 0
    # the same network fed the explicit train (input at step 0, zeros after) gives the same field
    x = encode_graded(torch.cat([f, m], 1), 1, cfg.input_bits)
    train = torch.cat([x, torch.zeros(*x.shape[:-1], cfg.enc_windows[0] - 1)], -1)
    a2 = net.enc[0].synapse(train)
    assert torch.allclose(a, a2, atol=1e-6)
    assert net.activity["enc0"][1:].sum() > 0          # enc0 keeps firing on the held current
    u.abs().sum().backward()
    grads = dict(net.named_parameters())
    assert grads["enc.0.synapse.weight"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="input_once"):
        ModelConfig(input_once="yes")


@pytest.mark.parametrize("graded", [False, True])
def test_native_alif_loop_equals_the_torch_loop(graded, monkeypatch):
    """The C time loop (model/native.py) and the pure-torch loop give the same spikes and input
    gradients bit for bit: channels-last frames, a constant input, several threads."""
    import shutil

    from spikereg_neuro.model import fused_alif, native

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the torch loop is the only one")
    assert native.available(), native.status()
    neuron = make_neuron(NeuronConfig(graded_spike=graded))
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(8 * 2, 3, 9, 10, 11, generator=g).mul(4.0).contiguous(
        memory_format=torch.channels_last_3d)
    x = frames.view(8, 2, 3, 9, 10, 11).movedim(0, -1).requires_grad_()   # (N, C, D, H, W, T), time-first memory
    x0 = torch.rand(2, 3, 5, 6, 7, 1, generator=g).mul(30).expand(2, 3, 5, 6, 7, 5).requires_grad_()
    big = (x.detach() * 3e4).requires_grad_()     # beyond float32's exact range: the kernel declines
    old = torch.get_num_threads()
    runs = {}
    calls = []
    real_forward, real_backward = native.forward, native.backward
    monkeypatch.setattr(native, "forward", lambda *a: calls.append("f") or real_forward(*a))
    monkeypatch.setattr(native, "backward", lambda *a: calls.append("b") or real_backward(*a))
    monkeypatch.setattr(native, "MIN_PER_THREAD", 1000)     # split over both threads
    try:
        for kind in ("native", "torch"):
            if kind == "torch":
                assert calls == ["f", "b"] * 3
                monkeypatch.setattr(native, "available", lambda: False)
            torch.set_num_threads(2)
            out = []
            for inp in (x, x0, big):
                s = neuron(inp, payload_div=4.0)
                (gx,) = torch.autograd.grad(s, inp, torch.ones_like(s) + s)
                out += [s, gx]
            runs[kind] = out
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(runs["native"], runs["torch"]))
    assert 0 < float((runs["native"][0] != 0).float().mean()) < 1


def test_float_weight_diagnostic_trains_off_the_grid_and_calibration_refuses_it():
    from calibration.quantize import quantize_network

    cfg = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(quantize_weights=False, **cfg))
    assert all(b.synapse.pre_hook_fx is None for b in net.blocks())
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.isfinite(net(x, x)).all()
    w = net.export()[1]["weight"]
    assert not np.array_equal(w, np.rint(w))  # float weights, not mantissas
    with pytest.raises(ValueError, match="not integers"):
        quantize_network(net)
    assert all(b.synapse.pre_hook_fx is not None for b in SpikeRegUNet(ModelConfig(**cfg)).blocks())
    with pytest.raises(ValueError, match="quantize_weights must be true or false"):
        ModelConfig(quantize_weights="no")


def test_learned_decays_train_and_keep_the_fixed_numbers():
    """``neuron.learn_decays``: the current and voltage decays of every block but the input-once
    enc0 are parameters; with the config's values the network gives the fixed network's field
    (with and without gradients), the decays receive gradients, a decay set to 0 is clamped to
    ATRLIF's 1/4096, and the export carries the values the neuron applies."""
    from dataclasses import replace

    from spikereg_neuro.model.neuron import LEARNED_DECAYS, decay_parameters, effective_decays

    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
                      input_once=True, neuron=NeuronConfig(graded_spike=True))
    fixed = SpikeRegUNet(cfg)
    learn = SpikeRegUNet(replace(cfg, neuron=replace(cfg.neuron, learn_decays=True)))
    learn.load_state_dict(fixed.state_dict())
    assert decay_parameters(fixed) == []
    names = {n for n, p in learn.named_parameters() if p.requires_grad and n.endswith("_decay")}
    assert names == {f"{b}.neuron.{d}" for b in ("enc.1", "enc.2", "enc.3", "dec.0", "dec.1", "dec.2")
                     for d in LEARNED_DECAYS}
    assert len(decay_parameters(learn)) == 12
    f, m = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    u = learn(f, m)
    assert torch.equal(u, fixed(f, m))
    with torch.no_grad():
        assert torch.equal(learn(f, m), fixed(f, m))
    u.square().mean().backward()
    grads = [p.grad for p in decay_parameters(learn)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(float(g.abs()) > 0 for g in grads)
    with torch.no_grad():
        learn.dec[0].neuron.current_decay.fill_(0.0)
        learn.dec[0].neuron.voltage_decay.fill_(0.3 * 4096)
    learn(f, m)
    d = effective_decays(learn.dec[0].neuron)
    assert d["current_decay"] == 1 / 4096 and d["voltage_decay"] == pytest.approx(0.3, abs=1 / 4096)
    exp = {e["name"]: e for e in learn.export()}
    assert exp["dec2"]["neuron"]["iDecay"] == 1 and exp["dec2"]["neuron_config"]["current_decay"] == 1 / 4096   # dec[0] is dec2
    assert exp["enc1"]["neuron_config"]["voltage_decay"] == cfg.neuron.voltage_decay
    with pytest.raises(ValueError, match="learn_decays must be true or false"):
        NeuronConfig(learn_decays="yes")


def test_trainer_steps_learned_decays_in_their_own_group(tmp_path):
    """The trainer puts learned decays in a second AdamW group (``decay_lr_scale`` x lr, no
    weight decay), the schedule scales it, a step moves them, and the epoch log records them;
    ``--init`` copies weights but leaves the decays the config's."""
    from dataclasses import replace

    from spikereg_neuro.config import Config, TrainConfig
    from spikereg_neuro.model.neuron import decay_parameters
    from spikereg_neuro.train.run import init_weights
    from spikereg_neuro.train.trainer import SpikeRegTrainer

    mc = ModelConfig(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2,
                     input_once=True, neuron=NeuronConfig(graded_spike=True, learn_decays=True))
    cfg = Config(model=mc, train=TrainConfig(steps_per_epoch=1, epochs=1, lr=1e-3, decay_lr_scale=100.0,
                                             patch_size=16, ncc_window=3))
    torch.manual_seed(0)
    tr = SpikeRegTrainer(SpikeRegUNet(mc), cfg, out_dir=tmp_path, progress=False)
    groups = tr.opt.param_groups
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0 and groups[1]["lr_scale"] == 100.0
    assert len(groups[1]["params"]) == 12
    before = [p.detach().clone() for p in decay_parameters(tr.net)]
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.rand(2, 1, 16, 16, 16, generator=g), 3, 1, 1)
    batch = {"fixed": x[:1].repeat(2, 1, 1, 1, 1), "moving": torch.roll(x[:1], 1, 2).repeat(2, 1, 1, 1, 1)}
    tr.step(batch)
    assert groups[1]["lr"] == pytest.approx(100.0 * groups[0]["lr"]) and groups[0]["lr"] == pytest.approx(1e-3)
    assert any(not torch.equal(a, p) for a, p in zip(before, decay_parameters(tr.net)))
    log = tr._decay_log()
    assert set(log) == {f"{b}.{d}" for b in ("enc1", "enc2", "enc3", "dec2", "dec1", "dec0")
                        for d in ("current_decay", "voltage_decay")}
    assert all(0 < v <= 1 for v in log.values())
    ck = tmp_path / "src.pt"
    save_checkpoint(ck, tr.net)
    fresh = SpikeRegUNet(mc)
    init_weights(fresh, str(ck))
    assert torch.equal(fresh.dec[0].synapse.weight, tr.net.dec[0].synapse.weight)
    assert float(fresh.dec[0].neuron.current_decay) == 0.5 * 4096
    with pytest.raises(ValueError, match="decay_lr_scale"):
        TrainConfig(decay_lr_scale=0.0)
