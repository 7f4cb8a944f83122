"""Loihi 2 energy and latency ESTIMATES from operation counts (a model, not a measurement).

Intel has not published per-operation energies or latencies for Loihi 2. Two constant sets, each
taking a synaptic op's energy AND time from one source and one regime (:data:`PRESETS`):

* ``hala_point`` (default): derived from Intel's published Hala Point totals (1,152 Loihi 2
  chips, 140,544 cores, 2,600 W maximum, over 380 trillion 8-bit synaptic ops and 240 trillion
  neuron ops per second): energy per op = the system's dynamic power at that load (2,600 W minus
  the chips' measured static power) / its op rate (an upper bound: all of it charged to one op
  kind), time per op and core = cores / op rate (the full-load throughput). Loihi 2, Intel 4.
* ``loihi1_table2``: the published per-op figures of **Loihi 1** (Davies et al., IEEE Micro
  2018, Table 2: pre-silicon SDF/SPICE values at 0.75 V): 23.6 pJ per synaptic op (its minimum)
  and 3.5 ns (its maximum). The other end of the sensitivity bracket.

Both add the **Loihi 2** static power measured by lava-dl's PilotNet benchmark notebook; spike
routing and the barrier are Table 2's in both (Hala Point publishes no per-event figure for
them). :func:`calibration_check` compares the model with that notebook's measured PilotNet
energy as far as published numbers allow. ``energy_mj`` is GROSS (static + dynamic,
``energy_basis = "gross"``), ``dynamic_mj`` the dynamic part.

Energy (every term in pJ, then mJ)::

    E = synops      x e_synop_pj                     (binary-spike inputs: ACs)
      + graded_macs x e_graded_synop_pj              (first layer: 8-bit graded payload)
      + neuron_updates      x e_neuron_update_active_pj
      + idle_neuron_updates x e_neuron_update_inactive_pj
      + messages x e_spike_within_tile_pj + tile_hops x e_tile_hop_pj
      + static_power_w x n_chips x time

Time per step, given a mapping (a list of cores with their load per step)::

    t_step = max over cores (synops x t_synop_ns + neurons x t_neuron_update_active_ns
                             + spikes_out x t_spike_within_tile_ns) + t_barrier_ns

Without a mapping the step time is the ASSUMED ``assumed_step_time_us`` (PilotNet's measured
Loihi 2 step time); the result says so in ``latency_basis``. Patches run one after another.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .constants import Constant
from ..geometry import fanin as _fanin_1d
from .counting import VARIANTS, ProfileCounts

DEFAULT_CONSTANTS_YAML = Path(__file__).with_name("constants_loihi2.yaml")

_DAVIES = ("Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', "
           "IEEE Micro 38(1):82-99, 2018, Table 2, p. 96 (pre-silicon SDF/SPICE values at 0.75 V)")
_LOIHI1 = "LOIHI 1 figure, used for Loihi 2 because Loihi 2 per-op figures are not published"
_PILOTNET_NB = ("lava-dl PilotNet LIF benchmark notebook on one Loihi 2 chip "
                "(lava-nc/lava-dl, tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb, "
                "commit b9e369172b46, printed outputs)")
_HALA = ("Intel newsroom, 'Intel Builds World's Largest Neuromorphic System to Enable More Sustainable AI' "
         "(2024-04-17; as reported by eeNews Europe, 'Intel breaks a billion neurons for world's largest "
         "neuromorphic computing system', 2024-04): Hala Point, 1,152 Loihi 2 processors, 140,544 neuromorphic "
         "cores, 'consuming a maximum of 2,600 watts', 'can process over 380 trillion 8-bit synapses and over "
         "240 trillion neuron operations per second'")
#: Hala Point's published totals (the ``hala_point`` preset is derived from them)
HALA_POINT = {"chips": 1152, "cores": 140_544, "max_power_w": 2600.0, "synops_per_s": 380e12,
              "neuron_ops_per_s": 240e12}
_HP_STATIC_W = HALA_POINT["chips"] * 0.232078            # the PilotNet-measured static power per chip
_HP_DYNAMIC_W = HALA_POINT["max_power_w"] - _HP_STATIC_W
_HP_DERIVED = (f"DERIVED from {_HALA}; dynamic power = 2600 W - 1152 chips x 0.232078 W static (lava-dl PilotNet "
               f"notebook) = {_HP_DYNAMIC_W:.1f} W")
_INTEL_BRIEF = ("Intel Labs technology brief 'Taking Neuromorphic Computing to the Next Level with "
                "Loihi 2' (2021), Loihi 2 chip specifications")


@dataclass(frozen=True)
class Loihi2Constants:
    """Every constant of the model, each with value, unit, citation and kind."""

    e_synop_pj: Constant = Constant(
        _HP_DYNAMIC_W / HALA_POINT["synops_per_s"] * 1e12, "pJ",
        f"{_HP_DERIVED}; / 380e12 synaptic ops per s. Loihi 2 at full load; an upper bound per op (all dynamic "
        "power charged to synaptic ops). Same source and regime as t_synop_ns.", "derived")
    e_graded_synop_pj: Constant = Constant(
        _HP_DYNAMIC_W / HALA_POINT["synops_per_s"] * 1e12, "pJ",
        "assumed equal to e_synop_pj: no energy is published for a synaptic op on a graded (multi-bit "
        "payload) spike, on Loihi 1 or Loihi 2", "assumed")
    e_neuron_update_active_pj: Constant = Constant(
        _HP_DYNAMIC_W / HALA_POINT["neuron_ops_per_s"] * 1e12, "pJ",
        f"{_HP_DERIVED}; / 240e12 neuron ops per s. An upper bound per update (all dynamic power charged to "
        "neuron updates).", "derived")
    e_neuron_update_inactive_pj: Constant = Constant(
        _HP_DYNAMIC_W / HALA_POINT["neuron_ops_per_s"] * 1e12 * 52.0 / 81.0, "pJ",
        f"DERIVED: e_neuron_update_active_pj x 52 / 81, the inactive / active ratio of {_DAVIES} "
        "('Energy per neuron update (active / inactive)' = 81 / 52 pJ, Loihi 1).", "derived")
    e_spike_within_tile_pj: Constant = Constant(
        1.7, "pJ", f"{_DAVIES}: 'Within-tile spike energy' = 1.7 pJ. {_LOIHI1}.")
    e_tile_hop_pj: Constant = Constant(
        3.5, "pJ", f"mean of the E-W 3.0 pJ and N-S 4.0 pJ of {_DAVIES}: 'Energy per tile hop "
                   f"(E-W / N-S)'. {_LOIHI1}.", "derived")
    t_synop_ns: Constant = Constant(
        HALA_POINT["cores"] / HALA_POINT["synops_per_s"] * 1e9, "ns",
        f"DERIVED from {_HALA}: 140,544 cores / 380e12 synaptic ops per s = time per synaptic op and core at "
        "full load (Loihi 2). Same source and regime as e_synop_pj.", "derived")
    t_neuron_update_active_ns: Constant = Constant(
        HALA_POINT["cores"] / HALA_POINT["neuron_ops_per_s"] * 1e9, "ns",
        f"DERIVED from {_HALA}: 140,544 cores / 240e12 neuron ops per s (Loihi 2, full load).", "derived")
    t_neuron_update_inactive_ns: Constant = Constant(
        HALA_POINT["cores"] / HALA_POINT["neuron_ops_per_s"] * 1e9 * 5.3 / 8.4, "ns",
        f"DERIVED: t_neuron_update_active_ns x 5.3 / 8.4, the inactive / active ratio of {_DAVIES} "
        "('Time per neuron update (active / inactive)' = 8.4 / 5.3 ns, Loihi 1).", "derived")
    t_spike_within_tile_ns: Constant = Constant(
        2.1, "ns", f"{_DAVIES}: 'Within-tile spike latency' = 2.1 ns. {_LOIHI1}.")
    t_barrier_ns: Constant = Constant(
        465.0, "ns", f"{_DAVIES}: 'Mesh-wide barrier sync time (1-32 tiles)' = 113-465 ns; the "
                     f"32-tile (whole chip) value. {_LOIHI1}.")
    static_power_w: Constant = Constant(
        0.232078, "W", f"{_PILOTNET_NB}: 'Static Power : 0.232078 W' per Loihi 2 chip (the notebook divides "
                       "the board's static power by its chip count; the run was on the single-chip "
                       "'oheogulch' partition). Measured on Loihi 2.", "measured")
    assumed_step_time_us: Constant = Constant(
        152.84, "us", f"ASSUMED step time when no mapping is given: PilotNet LIF's measured Loihi 2 "
                      f"step time, {_PILOTNET_NB}: 'Throughput : 408.91 fps' at 16 steps per "
                      "inference -> 1e6 / (408.91 x 16) = 152.84 us. A different network; nothing "
                      "scales it to SpikeReg.", "assumed")
    cores_per_chip: Constant = Constant(
        128.0, "cores", f"{_INTEL_BRIEF}: 128 neuromorphic cores per chip.")
    neurons_per_chip: Constant = Constant(
        1.0e6, "neurons", f"{_INTEL_BRIEF}: up to 1 million neurons per chip.")
    naive_neurons_per_core: Constant = Constant(
        2048.0, "neurons", "ASSUMED for naive_mapping(): Lava's mapper placed 2048-3168 neurons per "
                           f"conv core for PilotNet ({_PILOTNET_NB}, 'Per core distribution' table)",
        "assumed")

    def as_dict(self) -> Dict[str, Dict[str, Any]]:
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}

    def value(self, name: str) -> float:
        return getattr(self, name).value


#: the Loihi 1 Table 2 per-op figures (the ``loihi1_table2`` preset, the other end of the bracket)
_TABLE2 = {
    "e_synop_pj": Constant(23.6, "pJ", f"{_DAVIES}: 'Energy per synaptic spike op (min)' = 23.6 pJ. {_LOIHI1}."),
    "e_graded_synop_pj": Constant(23.6, "pJ", "assumed equal to e_synop_pj (Loihi 1 Table 2): no energy is "
                                              "published for a synaptic op on a graded spike", "assumed"),
    "e_neuron_update_active_pj": Constant(
        81.0, "pJ", f"{_DAVIES}: 'Energy per neuron update (active / inactive)' = 81 pJ / 52 pJ. {_LOIHI1}."),
    "e_neuron_update_inactive_pj": Constant(
        52.0, "pJ", f"{_DAVIES}: 'Energy per neuron update (active / inactive)' = 81 pJ / 52 pJ. {_LOIHI1}."),
    "t_synop_ns": Constant(3.5, "ns", f"{_DAVIES}: 'Time per synaptic spike op (max)' = 3.5 ns. {_LOIHI1}."),
    "t_neuron_update_active_ns": Constant(
        8.4, "ns", f"{_DAVIES}: 'Time per neuron update (active / inactive)' = 8.4 ns / 5.3 ns. {_LOIHI1}."),
    "t_neuron_update_inactive_ns": Constant(
        5.3, "ns", f"{_DAVIES}: 'Time per neuron update (active / inactive)' = 8.4 ns / 5.3 ns. {_LOIHI1}."),
}
#: named constant sets: {name: (description, {constant: Constant} replacing the defaults)}
PRESETS: Dict[str, Any] = {
    "hala_point": ("Loihi 2 per-op energies and times derived from Hala Point's published totals (default; "
                   "energies upper bounds, times full-load throughput)", {}),
    "loihi1_table2": ("Loihi 1 per-op figures, Davies et al. 2018 Table 2 (pre-silicon; the synaptic op's "
                      "minimum energy with its maximum time)", _TABLE2),
}
DEFAULT_PRESET = "hala_point"


#: PilotNet LIF on one Loihi 2 chip, measured (reference figures for calibration_check)
PILOTNET_MEASURED: Dict[str, Constant] = {
    "total_power_w": Constant(0.679234, "W", f"{_PILOTNET_NB}: 'Total Power : 0.679234 W'", "measured"),
    "dynamic_power_w": Constant(0.447156, "W", f"{_PILOTNET_NB}: 'Dynamic Power : 0.447156 W'", "measured"),
    "static_power_w": Constant(0.232078, "W", f"{_PILOTNET_NB}: 'Static Power : 0.232078 W'", "measured"),
    "throughput_fps": Constant(408.91, "1/s", f"{_PILOTNET_NB}: 'Throughput : 408.91 fps'", "measured"),
    "steps_per_inference": Constant(16, "steps", f"{_PILOTNET_NB}: reset_interval=16 = steps_per_sample", "published"),
    "energy_per_inference_mj": Constant(1.661103, "mJ", f"{_PILOTNET_NB}: 'Total Energy per inference : 1.661103 mJ'", "measured"),
    "dynamic_energy_per_inference_mj": Constant(1.093544, "mJ", f"{_PILOTNET_NB}: 'Dynamic Energy per inference : 1.093544 mJ'", "measured"),
}

#: PilotNet LIF geometry as printed by the notebook (W, H, C; kernel, stride, padding as (W, H))
#: and its Lava mapping ('Per core distribution': neurons per core, cores)
_PILOTNET_LAYERS = [
    # name, kind, out (W, H, C), kernel, stride, pad, neurons per core, cores
    ("input", "input", (200, 66, 3), None, None, None, 3168, 13),
    ("conv1", "conv", (99, 32, 24), (3, 3), (2, 2), (0, 0), 3072, 25),
    ("conv2", "conv", (49, 15, 36), (3, 3), (2, 2), (0, 0), 2160, 13),
    ("conv3", "conv", (24, 7, 48), (3, 3), (2, 2), (0, 0), 2688, 3),
    ("conv4", "conv", (22, 4, 64), (3, 3), (1, 2), (0, 1), 2048, 3),
    ("conv5", "conv", (20, 2, 64), (3, 3), (1, 1), (0, 0), 2048, 2),
    ("dense1", "dense", (1, 1, 100), None, None, None, 8, 12),
    ("dense2", "dense", (1, 1, 50), None, None, None, 50, 1),
    ("dense3", "dense", (1, 1, 10), None, None, None, 10, 1),
    ("dense4", "dense", (1, 1, 1), None, None, None, 1, 1),
]


# ---------------------------------------------------------------------------------------------
def default_constants() -> Loihi2Constants:
    return Loihi2Constants()


def load_constants(path: Union[str, Path, None] = None,
                   overrides: Optional[Mapping[str, Any]] = None,
                   preset: Optional[str] = None) -> Loihi2Constants:
    """The model's constants: the defaults (or a named ``preset`` of :data:`PRESETS`), then a
    YAML file, then ``overrides`` on top.

    YAML: ``name: number`` or ``name: {value, unit, citation, kind}``; unknown names and unit
    changes are errors. The shipped ``constants_loihi2.yaml`` holds the defaults.
    """
    import yaml

    c = Loihi2Constants()
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        c = Loihi2Constants(**{**{f.name: getattr(c, f.name) for f in fields(c)}, **PRESETS[preset][1]})
    known = {f.name for f in fields(Loihi2Constants)}
    layers = []
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read the constants file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of constant names")
        layers.append((data, str(path)))
    if overrides:
        layers.append((dict(overrides), "overrides"))
    for data, origin in layers:
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{origin}: unknown Loihi 2 constants {sorted(unknown)}; known: {sorted(known)}")
        new = {k: getattr(c, k).override(v, f"{origin}:{k}") for k, v in data.items()}
        c = Loihi2Constants(**{**{f.name: getattr(c, f.name) for f in fields(c)}, **new})
    return c


# ---------------------------------------------------------------------------------------------
def _as_steps(x: Any, T: int, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return np.full(T, float(a[0]))
    if a.size != T:
        raise ValueError(f"{what}: expected a scalar or {T} per-step values, got {a.size}")
    return a


def naive_mapping(counts: ProfileCounts, neurons_per_core: Optional[float] = None,
                  variant: str = "merged_nonzero",
                  constants: Optional[Loihi2Constants] = None) -> List[Dict[str, Any]]:
    """An ASSUMED mapping: each layer split evenly over ``ceil(neurons / neurons_per_core)`` cores.

    Per-core loads are per patch (sample) per step: the layer's neurons, synaptic ops and output
    spikes divided evenly over its cores. Real mappings (loihi/) are uneven and bounded by
    synaptic memory too; this one only bounds neurons per core.
    """
    c = constants or Loihi2Constants()
    npc = float(neurons_per_core or c.value("naive_neurons_per_core"))
    cores = []
    S = max(counts.samples, 1)
    for lc in counts.layers.values():
        k = max(1, math.ceil(lc.neurons / npc))
        for _ in range(k):
            cores.append({"layer": lc.name, "neurons": lc.neurons / k,
                          "synapses": lc.synapses[variant] / k,
                          "synops_per_step": lc.ops[variant] / S / k,
                          "spikes_out_per_step": lc.spikes / S / k})
    return cores


def step_times_us(cores: Sequence[Mapping[str, Any]], timeline_steps: int,
                  constants: Optional[Loihi2Constants] = None) -> np.ndarray:
    """Per-step time (us) of one sample from per-core loads (see module docstring)."""
    c = constants or Loihi2Constants()
    if not cores:
        raise ValueError("the mapping has no cores")
    T = int(timeline_steps)
    load = np.zeros((len(cores), T))
    for i, core in enumerate(cores):
        if "neurons" not in core or "synops_per_step" not in core:
            raise ValueError(f"core {i}: needs 'neurons' and 'synops_per_step', got {sorted(core)}")
        syn = _as_steps(core["synops_per_step"], T, f"core {i} synops_per_step")
        spk = _as_steps(core.get("spikes_out_per_step", 0.0), T, f"core {i} spikes_out_per_step")
        load[i] = (syn * c.value("t_synop_ns") + float(core["neurons"]) * c.value("t_neuron_update_active_ns")
                   + spk * c.value("t_spike_within_tile_ns"))
    return (load.max(axis=0) + c.value("t_barrier_ns")) * 1e-3


def estimate_loihi2(counts: ProfileCounts, constants: Optional[Loihi2Constants] = None,
                    mapping: Union[None, str, Sequence[Mapping[str, Any]]] = None,
                    synop_variant: str = "merged_nonzero",
                    n_chips: Optional[int] = None) -> Dict[str, Any]:
    """Estimated Loihi 2 energy and latency of the workload in ``counts`` (all its samples).

    ``mapping``: None (step time ASSUMED, see ``assumed_step_time_us``), ``"naive"``
    (:func:`naive_mapping`), or a list of cores, each ``{"neurons", "synops_per_step"`` (scalar
    or per-step list, per sample), optional ``"spikes_out_per_step"``, ``"hops_per_step"``
    (tile hops of the spikes it sends), ``"chip"``}.
    """
    c = constants or Loihi2Constants()
    if synop_variant not in VARIANTS:
        raise ValueError(f"synop_variant must be one of {VARIANTS}")
    tot = counts.totals(synop_variant)
    T, S = counts.timeline_steps, counts.samples
    notes = list(counts.notes)
    loihi1 = "LOIHI 1" in c.e_synop_pj.citation
    notes.append("per-op energies and times: " + ("Loihi 1 figures (Davies 2018, Table 2, pre-silicon)" if loihi1
                 else "derived from published Loihi 2 system totals or overridden (see constants)")
                 + "; Loihi 2 per-op figures are not published")

    cores = naive_mapping(counts, constants=c, variant=synop_variant) if mapping == "naive" else mapping
    hops = 0.0
    if cores is None:
        step_us = np.full(T, c.value("assumed_step_time_us"))
        latency_basis = (f"ASSUMED: {c.value('assumed_step_time_us'):g} us per step (PilotNet LIF's "
                         "measured Loihi 2 step time), no mapping given")
        chips_default = max(1, math.ceil(tot["neurons_per_sample"] / c.value("neurons_per_chip")))
        chips_basis = "neurons / neurons_per_chip (a lower bound: synaptic memory may need more chips)"
        notes.append("spike routing priced within a tile only (no mapping: tile hops unknown)")
    else:
        if isinstance(cores, str):
            raise ValueError(f"mapping must be None, 'naive' or a list of cores, got {cores!r}")
        step_us = step_times_us(cores, T, c)
        kind = "naive (assumed even split)" if mapping == "naive" else "given"
        latency_basis = (f"mapping ({kind}, {len(cores)} cores): max over cores of (synops x t_synop + "
                         "neurons x t_neuron_update + spikes x t_spike) + barrier, Loihi 1 per-op times")
        hops = S * sum(_as_steps(k.get("hops_per_step", 0.0), T, "hops_per_step").sum() for k in cores)
        chip_ids = {k["chip"] for k in cores if "chip" in k}
        if chip_ids:
            chips_default, chips_basis = len(chip_ids), "chips named in the mapping"
        else:
            chips_default = max(1, math.ceil(len(cores) / c.value("cores_per_chip")))
            chips_basis = "mapping cores / cores_per_chip"
        if not any("hops_per_step" in k for k in cores):
            notes.append("spike routing priced within a tile only (mapping gives no tile hops)")
    chips = int(n_chips) if n_chips is not None else chips_default
    if n_chips is not None:
        chips_basis = "given"
    latency_s = S * float(step_us.sum()) * 1e-6

    pj = {
        "synaptic_ops": tot["synops"] * c.value("e_synop_pj"),
        "graded_input_ops": tot["graded_macs"] * c.value("e_graded_synop_pj"),
        "neuron_updates": tot["neuron_updates"] * c.value("e_neuron_update_active_pj"),
        "idle_neuron_updates": tot["idle_neuron_updates"] * c.value("e_neuron_update_inactive_pj"),
        "spike_routing": (tot["spike_messages"] + tot["graded_messages"]) * c.value("e_spike_within_tile_pj")
                         + hops * c.value("e_tile_hop_pj"),
    }
    breakdown = {k: v * 1e-9 for k, v in pj.items()}
    dynamic = sum(breakdown.values())
    static = c.value("static_power_w") * chips * latency_s * 1e3
    breakdown["static"] = static
    energy = dynamic + static
    return {
        "device": "Loihi 2",
        "source": "estimated",
        "energy_source": "estimated",
        "latency_source": "estimated",
        "label": ("estimated by a model: per-op energies and times (" + ("Loihi 1, Davies et al. 2018"
                  if loihi1 else "derived from Loihi 2 Hala Point totals") + ") and the Loihi 2 static power "
                  "measured on PilotNet; not a Loihi 2 measurement"),
        "energy_basis": "gross",
        "energy_mj": energy,
        "energy_mj_per_sample": energy / S if S else float("nan"),
        "dynamic_mj": dynamic,
        "dynamic_mj_per_sample": dynamic / S if S else float("nan"),
        "dynamic_energy_mj": dynamic,
        "static_energy_mj": static,
        "energy_breakdown_mj": breakdown,
        "latency_ms": latency_s * 1e3,
        "latency_ms_per_sample": latency_s * 1e3 / S if S else float("nan"),
        "step_time_us": float(step_us.mean()),
        "step_times_us": step_us.tolist(),
        "latency_basis": latency_basis,
        "n_chips": chips,
        "chips_basis": chips_basis,
        "synop_variant": synop_variant,
        "counts": {k: tot[k] for k in ("samples", "timeline_steps", "exact", "synops", "graded_macs",
                                       "neuron_updates", "idle_neuron_updates", "spike_messages",
                                       "graded_messages", "spikes")} | {"tile_hops": hops},
        "constants": c.as_dict(),
        "notes": notes,
    }


def energy_per_layer(counts: ProfileCounts, constants: Optional[Loihi2Constants] = None,
                     synop_variant: str = "merged_nonzero") -> Dict[str, Dict[str, float]]:
    """ESTIMATED dynamic energy (mJ) of each layer of the workload in ``counts``.

    Per layer: synaptic ops delivered into it (ACs, or graded MACs for the first layer), its
    active and idle neuron updates, and the source events delivered into it (within-tile spike
    energy). Tile hops and static power depend on the mapping and the run time and are not
    attributed to layers; the per-layer sums equal :func:`estimate_loihi2`'s dynamic energy
    without tile hops.
    """
    c = constants or Loihi2Constants()
    if synop_variant not in VARIANTS:
        raise ValueError(f"synop_variant must be one of {VARIANTS}")
    out: Dict[str, Dict[str, float]] = {}
    for name, lc in counts.layers.items():
        e_op = c.value("e_graded_synop_pj") if lc.graded_input else c.value("e_synop_pj")
        pj = {
            "synaptic_ops": float(lc.ops[synop_variant].sum()) * e_op,
            "neuron_updates": float(lc.neuron_updates.sum()) * c.value("e_neuron_update_active_pj"),
            "idle_neuron_updates": float(lc.idle_neuron_updates.sum()) * c.value("e_neuron_update_inactive_pj"),
            "spike_routing": float(lc.messages.sum()) * c.value("e_spike_within_tile_pj"),
        }
        row = {k: v * 1e-9 for k, v in pj.items()}
        row["total"] = sum(row.values())
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------------
def _pilotnet_structure() -> Dict[str, Any]:
    """Neurons, dense synapses and per-core bounds of PilotNet LIF from its printed geometry."""
    rows = []
    prev = None
    for name, kind, out, k, s, p, npc, cores in _PILOTNET_LAYERS:
        neurons = out[0] * out[1] * out[2]
        if kind == "input":
            syn, fan_in_max = 0, 0
        elif kind == "conv":
            cin = prev[2]
            taps = [_fanin_1d(out[a], prev[a], k[a], s[a], p[a], 1)[0] for a in range(2)]
            syn = int(taps[0].sum() * taps[1].sum()) * cin * out[2]
            fan_in_max = int(taps[0].max() * taps[1].max()) * cin
        else:
            fan_in_max = prev[0] * prev[1] * prev[2]
            syn = fan_in_max * neurons
        rows.append({"layer": name, "neurons": neurons, "synapses": syn, "fan_in_max": fan_in_max,
                     "neurons_per_core": npc, "cores": cores})
        prev = out
    return {"layers": rows, "neurons": sum(r["neurons"] for r in rows),
            "synapses": sum(r["synapses"] for r in rows),
            "cores": sum(r["cores"] for r in rows)}


def calibration_check(constants: Optional[Loihi2Constants] = None) -> Dict[str, Any]:
    """Compare the per-op model with the measured Loihi 2 PilotNet LIF figures.

    PilotNet's spike counts are not published in text (the notebook shows per-core activity only
    as a plot), so the model cannot be fitted. What can be computed exactly from the published
    geometry is the neuron count and the dense synapse count, hence a bracket per step: no spike
    at all (every neuron an inactive update) and every neuron spiking on every step (all synapses
    active, every update active). The measured dynamic energy per step is placed in that bracket,
    and the fraction of the dense synaptic load the model needs to reproduce it is reported.
    """
    c = constants or Loihi2Constants()
    pn = _pilotnet_structure()
    m = {k: v.value for k, v in PILOTNET_MEASURED.items()}
    step_s = 1.0 / (m["throughput_fps"] * m["steps_per_inference"])
    dyn_step_uj = m["dynamic_power_w"] * step_s * 1e6
    N, W = pn["neurons"], pn["synapses"]
    lo = N * c.value("e_neuron_update_inactive_pj") * 1e-6
    hi = (W * c.value("e_synop_pj") + N * c.value("e_neuron_update_active_pj")
          + N * c.value("e_spike_within_tile_pj")) * 1e-6
    syn_full = W * c.value("e_synop_pj") * 1e-6
    base_active = N * c.value("e_neuron_update_active_pj") * 1e-6
    implied = (dyn_step_uj - base_active) / (syn_full + N * c.value("e_spike_within_tile_pj") * 1e-6)
    t_lo = max(r["neurons_per_core"] for r in pn["layers"]) * c.value("t_neuron_update_inactive_ns") \
        + c.value("t_barrier_ns")
    t_hi = max(r["neurons_per_core"] * (r["fan_in_max"] * c.value("t_synop_ns") + c.value("t_neuron_update_active_ns"))
               for r in pn["layers"]) + c.value("t_barrier_ns")
    within = lo <= dyn_step_uj <= hi
    return {
        "source": "estimated",
        "pilotnet_structure": pn,
        "measured": {"step_time_us": step_s * 1e6, "dynamic_energy_per_step_uj": dyn_step_uj,
                     "dynamic_energy_per_inference_mj": m["dynamic_energy_per_inference_mj"],
                     "energy_per_inference_mj": m["energy_per_inference_mj"],
                     "static_power_w": m["static_power_w"]},
        "model_dynamic_energy_per_step_uj": {"no_spikes": lo, "every_neuron_every_step": hi},
        "model_step_time_us": {"no_spikes": t_lo * 1e-3, "every_neuron_every_step": t_hi * 1e-3},
        "measured_within_bracket": bool(within),
        "measured_step_time_within_bracket": bool(t_lo * 1e-3 <= step_s * 1e6 <= t_hi * 1e-3),
        "implied_fraction_of_dense_synaptic_load": implied,
        "verdict": (
            f"PilotNet's spike/synop counts are not published in text, so the per-op energies "
            f"({'Loihi 1, Davies 2018' if 'LOIHI 1' in c.e_synop_pj.citation else 'derived from Hala Point totals'}) "
            f"cannot be calibrated on Loihi 2. From PilotNet's published "
            f"geometry ({N} neurons, {W} dense synapses): the model's dynamic energy per step lies "
            f"between {lo:.2f} uJ (no spikes) and {hi:.1f} uJ (every neuron spiking every step); "
            f"the measured {dyn_step_uj:.2f} uJ is {'inside' if within else 'OUTSIDE'} this bracket "
            f"and would need {100 * implied:.1f}% of the dense synaptic load. The static power "
            f"({m['static_power_w']} W per chip) is the measured Loihi 2 figure."),
        "reference": {k: v.to_dict() for k, v in PILOTNET_MEASURED.items()},
        "constants": c.as_dict(),
    }
