"""The neuron and hardware vocabulary every stage shares: neuron kinds under their model and Lava
names, their state variables, and the bit widths of Loihi 2 weights and states.

The model (SLAYER) calls the spiking neuron ``"alif"``; net.h5, deploy.h5 and Lava call the same
neuron ``"atrlif"`` (lava-nc ``ATRLIF``). :func:`neuron_kind` accepts either name. Fixed-point
rules (rounding, shifts, decays) stay in ``calibration/loihi_rules.py``; core limits and energy
constants in ``loihi/limits.py``; both take these widths from here.

No dependencies: importable by the model, the profiler, calibration and the mapper alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

#: weight mantissa bits: lava/proc/dense/models.py and proc/sparse/models.py bit-accurate models
#: (``num_weight_bits`` defaults to 8, ``clip_weights(..., num_bits=8)``)
WEIGHT_BITS = 8
#: bits per neuron state variable: lava/proc/atrlif/models.py PyATRLIFModelFixed
#: (``iv_bitwidth = 24``) and proc/lif/models.py PyLifModelBitAcc (24-bit ``u``, ``v``)
STATE_BITS = 24


@dataclass(frozen=True)
class NeuronKind:
    """One neuron model: its ``model`` name (ModelConfig / SLAYER), its ``lava`` name (net.h5,
    deploy.h5, the Lava process), its state variables, and whether calibration and the Lava
    backend deploy it."""

    model: str
    lava: str
    state_vars: Tuple[str, ...]
    deployable: bool


#: every neuron kind of the project
KINDS: Tuple[NeuronKind, ...] = (
    NeuronKind("alif", "atrlif", ("i", "v", "theta", "r"), True),   # LIF + refractory (+ adaptation)
    NeuronKind("cuba", "lif", ("u", "v"), False),                   # SLAYER CUBA-LIF (training only)
    NeuronKind("integrator", "integrator", ("u", "v"), True),       # the non-spiking read-out
)
#: the Lava names of the kinds net.h5 and deploy.h5 hold
DEPLOYABLE: Tuple[str, ...] = tuple(k.lava for k in KINDS if k.deployable)
_BY_NAME: Dict[str, NeuronKind] = {**{k.model: k for k in KINDS}, **{k.lava: k for k in KINDS}}


def neuron_kind(name: str) -> NeuronKind:
    """The kind called ``name`` (model or Lava name); ValueError naming the known ones."""
    try:
        return _BY_NAME[str(name)]
    except KeyError:
        raise ValueError(f"unknown neuron kind {name!r} (known: {sorted(_BY_NAME)})") from None


def state_var_counts() -> Dict[str, int]:
    """State variables per neuron, under both names of every kind."""
    return {n: len(k.state_vars) for n, k in _BY_NAME.items()}


__all__ = ["WEIGHT_BITS", "STATE_BITS", "NeuronKind", "KINDS", "DEPLOYABLE", "neuron_kind", "state_var_counts"]
