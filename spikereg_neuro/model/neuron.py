"""Neuron models: lava-dl SLAYER neurons, configured from one dataclass.

``alif`` is SLAYER's adaptive LIF with refractory state, the training twin of lava-nc's
bit-accurate ``ATRLIF`` process (same equations: i, v, theta, r; spike when
``v - r >= theta``; on a spike ``r += 2 theta`` and ``theta += theta_step``). With
``threshold_step = 0`` it is a plain LIF neuron with a decaying refractory term (the default:
"LIF with a refractory period"). ``cuba`` (SLAYER CUBA-LIF, hard reset, no refractory) is the
twin of lava-nc's ``LIF`` process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch

from ..dataclass_io import DictIO
from ..hardware import KINDS
from .slayer import alif as slayer_alif
from .slayer import cuba as slayer_cuba

#: a neuron's decays (fractions per step in :class:`NeuronConfig`; SLAYER parameters in 1/4096 units)
DECAYS = ("current_decay", "voltage_decay", "threshold_decay", "refractory_decay")

#: the spiking kinds a block can use (their Lava names and state: spikereg_neuro/hardware.py)
NEURON_KINDS = tuple(k.model for k in KINDS if k.model != "integrator")


@dataclass
class NeuronConfig(DictIO):
    """Neuron parameters in SLAYER units (decays are fractions per step, in [0, 1])."""

    _keys_label = "neuron config keys"

    kind: str = "alif"
    # 4.0 rather than SLAYER's usual 1.0: weights scale with the threshold, so a larger threshold
    # puts the trained weights on more of the 8-bit mantissa grid (step 1/32 at w_scale 64).
    # With 1.0 the deeper layers' weights had std 0.05-0.1, i.e. 2-3 effective bits, and their
    # latent weights almost never crossed a quantization step during training.
    threshold: float = 4.0
    threshold_step: float = 0.0
    current_decay: float = 0.5
    voltage_decay: float = 0.25
    threshold_decay: float = 0.5
    refractory_decay: float = 0.5
    # Surrogate gradient: SLAYER ALIF multiplies tau_grad by 100 and scale_grad by 0.1 inside
    # (derivative peak = 0.1 * scale_grad / (2 * 100 * tau_grad * threshold)); 0.01 / 20 gives a
    # peak of 1 and a width of one threshold, which keeps gradients within ~30x from the first
    # to the last layer of the 7-layer U-Net (measured at init on a 32^3 patch).
    tau_grad: float = 0.01
    scale_grad: float = 20.0
    # Graded spikes (Loihi 2): a spike carries the neuron's voltage as its payload instead of 1
    # (SLAYER's ``graded_spike``). The block passes ``payload / threshold`` downstream, so a spike
    # is worth >= 1 "threshold" and the activation is unbounded above, like a thresholded ReLU;
    # binary spikes bound a layer's output at one per step. On, as in the packaged config (a
    # stored config without the key is binary: ModelConfig.from_stored). See docs/model.md.
    graded_spike: bool = True
    # Learn each layer's current and voltage decays with the weights (one value per layer,
    # SLAYER's ``requires_grad``; the trainer's ``train.decay_lr_scale`` sets their step size).
    # The learned values live in the checkpoint's weights and reach Loihi through the block's
    # device parameters like fixed ones. The threshold and refractory decays stay fixed.
    learn_decays: bool = False

    def __post_init__(self) -> None:
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"neuron kind must be one of {NEURON_KINDS}, got {self.kind!r}")
        if self.threshold <= 0:
            raise ValueError(f"neuron threshold must be > 0, got {self.threshold}")
        for name in ("graded_spike", "learn_decays"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"neuron {name} must be true or false, got {getattr(self, name)!r}")
        for name in DECAYS:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"neuron {name} must be in [0, 1], got {v}")


#: the decays a neuron learns with ``learn_decays`` (of :data:`DECAYS`; SLAYER's leaky integrators pass
#: gradients to these two, its threshold/refractory dynamics pass none)
LEARNED_DECAYS = ("current_decay", "voltage_decay")


def make_neuron(cfg: NeuronConfig, fused: bool = True) -> torch.nn.Module:
    """A SLAYER neuron for ``cfg`` (shared parameters, states not persistent; the decays fixed,
    or with ``cfg.learn_decays`` the current and voltage decays trainable, :data:`LEARNED_DECAYS`).

    ``alif`` neurons run SLAYER's dynamics through the fused time loop of
    :class:`~spikereg_neuro.model.fused_alif.FusedALIF` (bit-identical, faster); ``fused=False``
    gives SLAYER's own class. ``cuba`` neurons are SLAYER's.
    """
    # SLAYER's graded surrogate is scale_rho * exp(min(v - theta, 0) / tau_rho) with scale_rho =
    # 0.1 * scale_grad: scale_grad 10 makes it the exact derivative (1) of the payload above the
    # threshold, decaying over tau_rho = 100 * tau_grad * threshold below it.
    scale_grad = 10.0 if cfg.graded_spike else cfg.scale_grad
    common = dict(tau_grad=cfg.tau_grad, scale_grad=scale_grad, shared_param=True,
                  persistent_state=False, requires_grad=cfg.learn_decays, graded_spike=cfg.graded_spike)
    if cfg.kind == "alif":
        from .fused_alif import FusedALIF
        n = (FusedALIF if fused else slayer_alif.Neuron)(
            threshold=cfg.threshold, threshold_step=cfg.threshold_step,
            current_decay=cfg.current_decay, voltage_decay=cfg.voltage_decay,
            threshold_decay=cfg.threshold_decay, refractory_decay=cfg.refractory_decay, **common,
        )
        n.threshold_decay.requires_grad_(False)
        n.refractory_decay.requires_grad_(False)
        return n
    return slayer_cuba.Neuron(threshold=cfg.threshold, current_decay=cfg.current_decay,
                              voltage_decay=cfg.voltage_decay, **common)


def decay_parameters(module: torch.nn.Module) -> List[torch.nn.Parameter]:
    """The trainable neuron decays of ``module`` (empty unless some neuron ``learn_decays``)."""
    return [p for name, p in module.named_parameters()
            if p.requires_grad and name.rsplit(".", 1)[-1] in LEARNED_DECAYS]


def effective_decays(neuron: torch.nn.Module) -> Dict[str, float]:
    """A neuron's decays as the device applies them (SLAYER's 12-bit quantization), as
    fractions per step: the config's values, or the learned ones."""
    quantize = slayer_alif.quantize
    out = {}
    for name in DECAYS:
        p = getattr(neuron, name, None)
        if p is not None:
            out[name] = float(quantize(p.detach()).reshape(-1)[0]) / float(neuron.p_scale)
    return out


def reset_neuron(neuron: torch.nn.Module) -> None:
    """Forget the shape and state SLAYER caches, so a neuron can see any spatial size.

    SLAYER fixes a neuron's shape on its first forward pass; our layers see patches of
    different sizes (coarse-to-fine scales, border tiles), and states never persist between
    calls, so each call starts from the initial state.
    """
    neuron.shape = None
    dev = neuron.current_state.device
    neuron.current_state = torch.zeros(1, device=dev)
    neuron.voltage_state = torch.zeros(1, device=dev)
    if hasattr(neuron, "threshold_state"):
        neuron.threshold_state = torch.tensor([neuron.threshold], device=dev)
        neuron.refractory_state = torch.zeros(1, device=dev)


def device_params(neuron: torch.nn.Module) -> dict:
    """Loihi device parameters of a SLAYER neuron (its own ``device_params``, plain ints)."""
    out = {}
    for k, v in neuron.device_params.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out
