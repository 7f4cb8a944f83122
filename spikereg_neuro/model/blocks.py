"""Network blocks in lava-dl ``slayer/block`` style: one block = synapse + neuron, each block
with its own ``export()`` description read by calibration, the Lava backend and the mapper."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from .config import ModelConfig
from .fused_alif import FusedALIF
from .neuron import NeuronConfig, device_params, effective_decays, make_neuron, reset_neuron
from .synapse import Conv3dSynapse, Upsampled, sum_steps


def _init_weight(synapse: Conv3dSynapse, gain: float) -> None:
    fan_in = synapse.in_channels // synapse.groups * math.prod(synapse.kernel_size)
    with torch.no_grad():
        synapse.weight.normal_(0.0, gain / math.sqrt(fan_in))


def _synapse_export(name: str, kind: str, synapse: Conv3dSynapse, weight_scale: int) -> Dict[str, Any]:
    """The part of a block's ``export()`` that describes its synapse: geometry and the integer
    weight mantissas (the quantizer's grid, descaled)."""
    w = synapse.weight if synapse.pre_hook_fx is None else synapse.pre_hook_fx(synapse.weight, descale=True)
    return {
        "name": name,
        "type": kind,
        "in_channels": synapse.in_channels,
        "out_channels": synapse.out_channels,
        "kernel_size": list(synapse.kernel_size),
        "stride": list(synapse.stride),
        "padding": list(synapse.padding),
        "weight": w.detach().cpu().numpy(),
        "weight_scale": int(weight_scale),
    }


class SpikingConvBlock(torch.nn.Module):
    """3D conv synapse followed by a SLAYER neuron; spikes in, spikes out, time last.

    The synapse's ``pre_hook_fx`` is the neuron's ``quantize_8bit`` (SLAYER's default for its
    blocks): training sees the 8-bit weight grid Loihi uses (even mantissas in [-256, 254] at
    weight scale 64), so the exported integers are the trained weights.
    """

    def __init__(self, name: str, in_channels: int, out_channels: int, neuron: NeuronConfig,
                 kernel_size: int = 3, stride: int = 1, weight_gain: float = ModelConfig.weight_gain,
                 quantize: bool = True) -> None:
        super().__init__()
        self.name = name
        self.neuron_cfg = neuron
        self.neuron = make_neuron(neuron)
        self.synapse = Conv3dSynapse(in_channels, out_channels, kernel_size, stride=stride,
                                     pre_hook_fx=self.neuron.quantize_8bit if quantize else None)
        _init_weight(self.synapse, weight_gain)

    def forward(self, x: torch.Tensor, up: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spikes ``(N, C, D, H, W, T)`` -> spikes. ``up``: a half-resolution source read
        through x2 nearest upsampling, concatenated before ``x`` (a U-Net decoder level)."""
        reset_neuron(self.neuron)
        a = self.synapse(x if up is None else [Upsampled(up), x])
        if not self.neuron_cfg.graded_spike:
            return self.neuron(a)
        # payload in thresholds (>= 1 where a neuron spikes)
        if isinstance(self.neuron, FusedALIF):
            return self.neuron(a, payload_div=self.neuron_cfg.threshold)
        return self.neuron(a) / self.neuron_cfg.threshold

    def export(self) -> Dict[str, Any]:
        """Block description: geometry, integer weight mantissas, neuron device parameters."""
        return {
            **_synapse_export(self.name, "conv3d", self.synapse, self.neuron.w_scale),
            "neuron_kind": self.neuron_cfg.kind,
            "neuron": device_params(self.neuron),
            # the config, with the decays the neuron applies (learned ones with learn_decays)
            "neuron_config": {**self.neuron_cfg.to_dict(), **effective_decays(self.neuron)},
        }


class ReadoutBlock(torch.nn.Module):
    """Non-spiking read-out: a 3D conv synapse into integrator neurons with no threshold.

    On Loihi this is a compartment with ``iDecay = 4096`` (current = input), ``vDecay = 0``
    (no leak) and spiking disabled; its voltage after ``T`` steps is ``sum_t W * s[t]`` and is read
    out. We return ``scale * v_T / T`` (voxels). The convolution is linear, so it is applied
    once to the spikes summed over the window (``T`` times fewer operations; equal up to float
    rounding); ``per_step = True`` convolves every step, so that a forward hook on the synapse
    sees per-step inputs (calibration statistics).
    """

    def __init__(self, name: str, in_channels: int, out_channels: int, scale: float,
                 kernel_size: int = 3, w_scale: int = 64, quantize: bool = True,
                 init_quanta: float = ModelConfig.readout_init) -> None:
        super().__init__()
        self.name = name
        self.scale = float(scale)
        self.w_scale = int(w_scale)
        self.synapse = Conv3dSynapse(in_channels, out_channels, kernel_size,
                                     pre_hook_fx=self._quantize if quantize else None)
        self.per_step = False
        # Initial weights with a std of ``init_quanta`` quanta (1 quantum = 2 / w_scale). Small
        # (0.5: about a third of the weights round to +-1 quantum, the rest to 0) so the untrained
        # network starts near the identity field like VoxelMorph's near-zero flow layer: at 4 quanta
        # the initial field was ~0.3 voxel of noise, and training spent its first few hundred steps
        # silencing the last decoder layer to remove it (measured, docs/model.md). The non-zero
        # weights still pass gradients upstream from the first step; the zero ones move under the
        # straight-through quantizer and cross to +-1 quantum within tens of steps.
        with torch.no_grad():
            self.synapse.weight.normal_(0.0, init_quanta * 2.0 / self.w_scale)

    def _quantize(self, weight: torch.Tensor, descale: bool = False) -> torch.Tensor:
        # the same 8-bit grid as SLAYER's neuron.quantize_8bit
        from lava.lib.dl.slayer.utils import quantize
        q = quantize(weight, step=2 / self.w_scale).clamp(-256 / self.w_scale, 254 / self.w_scale)
        return q * self.w_scale if descale else q

    def forward(self, x: torch.Tensor, coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spikes ``(N, C, D, H, W, T)`` (and ``coarse`` spikes at half resolution, read through
        x2 nearest upsampling after ``x``'s channels) -> analog field ``(N, C_out, D, H, W)``.
        Without ``per_step`` each source is summed over time first (upsampling commutes with
        the sum)."""
        t = x.shape[-1]
        if self.per_step:
            v = self.synapse(x if coarse is None else [x, Upsampled(coarse)]).sum(dim=-1)
        else:
            parts = [sum_steps(x)] + ([] if coarse is None else [Upsampled(sum_steps(coarse))])
            v = self.synapse(parts)[..., 0]
        return v * (self.scale / t)

    def export(self) -> Dict[str, Any]:
        """Read-out description: geometry, integer weight mantissas, integrator parameters."""
        return {
            **_synapse_export(self.name, "readout3d", self.synapse, self.w_scale),
            "neuron_kind": "integrator",
            "neuron": {"iDecay": 4096, "vDecay": 0, "spiking": False},
            "output_scale": self.scale,
        }
