"""SpikeReg's spiking 3D U-Net (lava-dl SLAYER neurons, our 3D synapse)."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

import torch

from ..connections import INPUT, Connection
from .blocks import ReadoutBlock, SpikingConvBlock
from .config import ModelConfig
from .encoding import encode_graded
from .synapse import Impulse
from .synapse import upsample_spikes  # noqa: F401  (public here: tests and the profiler use it)

#: enc0's current decay when the input is sent once (SLAYER iDecay 1 = ATRLIF delta_i 0: the
#: current holds the input, leaking 1/4096 per step; iDecay 0 has no ATRLIF equivalent)
INPUT_ONCE_CURRENT_DECAY = 1.0 / 4096


class _EventRate(torch.autograd.Function):
    """``mean(s / max(s, 1))`` (the fraction of (neuron, step) entries with a spike, whatever
    the payload) from the event count, with that expression's gradient ``1 / (n max(s, 1))``."""

    @staticmethod
    def forward(ctx, spikes: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:  # noqa: D401
        ctx.save_for_backward(spikes)
        return rate.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (spikes,) = ctx.saved_tensors
        return grad / spikes.numel() / spikes.clamp(min=1.0), None


class SpikeRegUNet(torch.nn.Module):
    """Spiking U-Net of ``L = len(enc_channels)`` levels (packaged: 4): (fixed, moving) ->
    displacement field in voxels.

    * ``enc0``: graded-spike input (2 channels) -> conv 3^3 -> neurons, ``enc_windows[0]`` steps
      (the input at every step, or at the first only with ``input_once``);
    * ``enc1..enc{L-1}``: stride-2 conv 3^3 -> neurons, each on the last ``enc_windows[l]`` steps
      of the level above (decreasing time windows);
    * ``dec{L-2}..dec0``: x2 nearest upsampling of spikes, concatenation with the encoder skip
      (its last ``dec_window`` steps), conv 3^3 -> neurons;
    * ``readout``: conv 3^3 into non-spiking integrators, averaged over the window; it reads
      ``dec0`` (``readout_levels = 1``) or ``dec0`` and x2-upsampled ``dec1`` spikes (``2``).

    Only spikes travel between spiking layers: binary, or with ``neuron.graded_spike`` Loihi 2
    graded spikes whose payload is the voltage in thresholds (``>= 1``; still one event per
    spike, nearest upsampling copies payloads). After each forward pass
    ``self.activity`` holds, per layer, the spike count at each time step (summed over batch and
    neurons) and ``self.num_neurons`` the layer sizes; ``self.rates`` holds differentiable mean
    firing rates for the rate regulariser.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        ec, dc, nc = cfg.enc_channels, cfg.dec_channels, cfg.neuron
        g, q = cfg.weight_gain, cfg.quantize_weights
        L = cfg.levels
        self.enc = torch.nn.ModuleList(
            [SpikingConvBlock("enc0", cfg.in_channels, ec[0], self.enc0_neuron(), stride=1, weight_gain=g,
                              quantize=q)]
            + [SpikingConvBlock(f"enc{l}", ec[l - 1], ec[l], nc, stride=2, weight_gain=g, quantize=q)
               for l in range(1, L)])
        # dec{l} (l = L-2 .. 0) reads up2(the level below) ++ enc{l}; dec_channels[k] is dec{L-2-k}
        below = [ec[-1], *dc[:-1]]
        self.dec = torch.nn.ModuleList([
            SpikingConvBlock(f"dec{L - 2 - k}", below[k] + ec[L - 2 - k], dc[k], nc, weight_gain=g, quantize=q)
            for k in range(L - 1)])
        ro_in = dc[-1] + (dc[-2] if cfg.readout_levels == 2 else 0)
        self.readout = ReadoutBlock("readout", ro_in, 3, scale=cfg.readout_scale,
                                    init_quanta=cfg.readout_init, quantize=q)
        self.activity: Dict[str, torch.Tensor] = {}
        self.num_neurons: Dict[str, int] = {}
        self.rates: Dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------
    def enc0_neuron(self):
        """The first layer's neuron config: the network's, holding its current when the input
        is sent once (:data:`INPUT_ONCE_CURRENT_DECAY`, then never learned)."""
        nc = self.cfg.neuron
        return replace(nc, current_decay=INPUT_ONCE_CURRENT_DECAY, learn_decays=False) if self.cfg.input_once else nc

    def blocks(self) -> List[torch.nn.Module]:
        """All blocks in execution order (encoder, decoder, read-out)."""
        return [*self.enc, *self.dec, self.readout]

    def check_input(self, fixed: torch.Tensor, moving: torch.Tensor) -> None:
        if fixed.dim() != 5 or moving.dim() != 5:
            raise ValueError(f"fixed and moving must be (N, 1, D, H, W); got {tuple(fixed.shape)} "
                             f"and {tuple(moving.shape)}")
        if fixed.shape != moving.shape:
            raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} differ in shape")
        if fixed.shape[1] + moving.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected {self.cfg.in_channels} input channels in total, got "
                             f"{fixed.shape[1] + moving.shape[1]}")
        m = self.cfg.downsampling
        bad = [s for s in fixed.shape[2:] if s % m]
        if bad:
            raise ValueError(f"spatial size {tuple(fixed.shape[2:])} must be divisible by {m} "
                             f"({self.cfg.levels - 1} stride-2 levels); pad or tile the volume")

    def _record(self, name: str, spikes: torch.Tensor) -> None:
        # events: 1 where a neuron spiked, whatever the payload (graded spikes carry >= 1), with
        # the gradient of payload / payload so the rate penalty still reaches the weights
        sd = spikes.detach()   # events per step (each step is a contiguous block of memory)
        counts = torch.stack([torch.count_nonzero(sd[..., t]) for t in range(sd.shape[-1])]).to(sd.dtype)
        self.activity[name] = counts
        if torch.is_grad_enabled():   # the rate penalty is for training only
            self.rates[name] = _EventRate.apply(spikes, counts.sum() / spikes.numel())
        self.num_neurons[name] = int(spikes[0, ..., 0].numel())

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """``(N, 1, D, H, W)`` x 2 -> displacement ``(N, 3, D, H, W)`` in voxels."""
        self.check_input(fixed, moving)
        cfg = self.cfg
        self.activity, self.rates, self.num_neurons = {}, {}, {}
        t0 = cfg.enc_windows[0]
        x = encode_graded(torch.cat([fixed, moving], dim=1), 1 if cfg.input_once else t0, cfg.input_bits)
        if cfg.input_once:
            x = Impulse(x[..., 0], t0)    # sent at step 0 only
        skips = []
        for level, block in enumerate(self.enc):
            x = block(x if level == 0 else x[..., -cfg.enc_windows[level]:])
            self._record(block.name, x)
            skips.append(x)
        td = cfg.dec_window
        x = x[..., -td:]
        prev = x
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            prev, x = x, block(skip[..., -td:], up=x)     # reads up2(x) ++ skip
            self._record(block.name, x)
        # the read-out reads dec0 ++ up2(dec1) (readout_levels 2) or dec0
        return self.readout(x, prev if cfg.readout_levels == 2 else None)

    def export(self) -> List[dict]:
        """Per-block descriptions in execution order; ``inputs``: the block's incoming
        :class:`~spikereg_neuro.connections.Connection` s, in channel order."""
        cfg = self.cfg
        out = []
        C = Connection
        L = cfg.levels
        inputs = {"enc0": [C(INPUT)], **{f"enc{l}": [C(f"enc{l - 1}")] for l in range(1, L)},
                  **{f"dec{l}": [C(f"dec{l + 1}" if l < L - 2 else f"enc{L - 1}", 2), C(f"enc{l}")]
                     for l in range(L - 1)},
                  "readout": [C("dec0")] + ([C("dec1", 2)] if cfg.readout_levels == 2 else [])}
        windows = {f"enc{l}": t for l, t in enumerate(cfg.enc_windows)}
        for b in self.blocks():
            d = b.export()
            d["inputs"] = inputs[b.name]
            d["time_window"] = windows.get(b.name, cfg.dec_window)
            out.append(d)
        return out
