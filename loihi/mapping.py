"""``mapping.json`` and its readable summary: the network on Loihi 2 cores and chips.

>>> layers, meta = load_layers("net.h5")                      # or a .pt checkpoint
>>> m = build_mapping(layers, (32, 32, 32), counts=counts)   # counts: optional ProfileCounts
>>> write_mapping(m, "out/loihi")                            # mapping.json + mapping_summary.txt
>>> estimate_loihi2(counts, mapping=m["cores"])              # the profiler reads the cores as they are

Contract of ``mapping.json`` (format ``spikereg-neuro/loihi-mapping``, version 1): ``"cores"`` (a
list, one dict per neuro-core: ``id``, ``chip``, ``layer``, ``channels``, ``block``,
``neurons``, ``synapses``, ``synaptic_memory_bytes``, ``state_bytes``, ``memory_bytes``,
``fan_in_axons``, ``fan_out_axons``, ``synops_per_step``, ``spikes_out_per_step``), ``"chips"``
(a list) and ``"layers"`` (a list, one dict per layer), plus ``limits`` (each with its source),
``totals``, ``utilisation``, ``patch_shape``, ``encoding``, ``source`` and ``notes``.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from spikereg_neuro.io.atomic import atomic_write_text

from .limits import ENCODINGS, CoreLimits
from .partition import Partition, attach_activity, balance_neuron_caps, partition_network
from .resources import NetworkResources, layers_from_qnet

FORMAT = "spikereg-neuro/loihi-mapping"
FORMAT_VERSION = 1
CONTRACT_KEYS = ("cores", "chips", "layers")
#: what each encoding stores per core
ENCODING_LOWERING = {
    "shared": ("Loihi 2 convolutional (shared-kernel) connectivity: each connection's kernel stored once per "
               "core for its output channels (x2 upsampled sources as 8 polyphase-folded 2^3 kernels, 64 "
               "entries per channel pair), one input axon per source core"),
    "sparse": ("sim.lowering: one lava Sparse matrix per connection (x2 upsampling folded in), split into "
               "range chunks only where a folded weight leaves [-256, 254]; one axon per source neuron "
               "(the conservative bound)"),
    "dense": "every (input axon, neuron) weight of a core stored, zeros included; one axon per source neuron",
}
PATCH_NOTE = ("The network is mapped once for one patch shape; the patches of a volume (and the "
              "residual iterations) run one after another on the same cores, so the core and chip "
              "counts do not grow with the volume.")


# ============================================================================ loading networks
def load_layers(net: Optional[str | Path] = None, *, untrained: bool = False, seed: int = 0
                ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The layer list of a network file and where it came from.

    ``net``: a SpikeReg checkpoint (``.pt``: :meth:`SpikeRegUNet.export`, weights on the 8-bit
    grid) or a calibrated ``net.h5`` (:func:`calibration.netfile.load_qnet`). ``untrained``: the
    default :class:`ModelConfig` with random initial weights (``torch.manual_seed(seed)``), for
    structure-only mappings before a model exists. ``meta["patch"]`` is the network's own
    inference patch shape.
    """
    if untrained:
        if net is not None:
            raise ValueError("give either a network file or untrained=True, not both")
        import torch

        from spikereg_neuro.model.unet import SpikeRegUNet
        torch.manual_seed(int(seed))
        model = SpikeRegUNet()
        return model.export(), {"kind": "untrained", "path": None, "sha256": None, "seed": int(seed),
                                "patch": [32, 32, 32],
                                "note": "default ModelConfig, random initial weights (not a trained model)"}
    if net is None:
        raise ValueError("no network given (a .pt checkpoint or a net.h5)")
    from spikereg_neuro.io.paths import check_input_file
    path = check_input_file(net, "network (net.h5 or .pt)")
    from spikereg_neuro.checkpoint import file_sha256
    meta: Dict[str, Any] = {"path": str(path), "sha256": file_sha256(path)}
    if path.suffix in (".h5", ".hdf5"):
        from calibration.netfile import load_qnet
        q = load_qnet(path)
        meta.update(kind="net.h5", patch=[int(x) for x in q.patch_size])
        return layers_from_qnet(q), meta
    from spikereg_neuro.checkpoint import load_network
    model, ckpt = load_network(path)
    from spikereg_neuro.config import InferenceConfig
    meta.update(kind="checkpoint", patch=InferenceConfig.from_checkpoint(ckpt).patch3)
    return model.export(), meta


# ============================================================================ building
def _stats(values: Sequence[float], limit: Optional[float]) -> Dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    d = {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max())}
    if limit:
        d.update(min_fraction=d["min"] / limit, mean_fraction=d["mean"] / limit, max_fraction=d["max"] / limit)
    return d


def build_mapping(layers: Sequence[Mapping[str, Any]], patch_shape: Sequence[int] = (32, 32, 32),
                  limits: Optional[CoreLimits] = None, counts=None,
                  source: Optional[Mapping[str, Any]] = None,
                  resources: Optional[NetworkResources] = None, balance: bool = True,
                  constants=None, partition: Optional[Partition] = None) -> Dict[str, Any]:
    """Map ``layers`` (one patch, or a whole volume, of ``patch_shape``) onto Loihi 2 cores and chips.

    ``counts`` (a :class:`~spikereg_neuro.profiler.ProfileCounts` of the same network and patch
    shape) fills each core's ``synops_per_step`` and ``spikes_out_per_step``
    (:func:`loihi.partition.attach_activity`); without it they are 0 and ``activity.given`` is
    False. With counts, shared-kernel cores (the default encoding) are balanced on synaptic ops
    (:func:`loihi.partition.balance_neuron_caps`, Loihi 2 model ``constants``) unless ``balance``
    is False. ``partition``: an unbalanced partition of ``resources`` under ``limits`` to start
    from (saves re-cutting the same network and shape).
    """
    L = limits or CoreLimits()
    res = resources or NetworkResources(layers, patch_shape)
    part = partition if partition is not None else partition_network(res, L)
    if counts is not None and balance and L.encoding == "shared":
        caps, report = balance_neuron_caps(res, L, counts, constants, base=part)
        if caps:
            part = partition_network(res, L, neuron_caps=caps)
        part.balance = report
    if counts is not None:
        attach_activity(part, res, counts)
    return mapping_dict(part, res, counts=counts, source=source)


def mapping_dict(part: Partition, res: NetworkResources, counts=None,
                 source: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    L = part.limits
    cores = part.cores
    counter = res.counter
    axon_in = L.fan_in_axons_per_core if L.explicit_axons else None
    axon_out = L.fan_out_axons_per_core if L.explicit_axons else None
    counter_synapses = sum(l.synapses("merged_nonzero") for l in counter.layers.values())
    extra = sum(c.extra_synapses for l in res.layers.values() for c in l.connections)
    layer_rows = []
    res_rows = {r["layer"]: r for r in res.table()}
    for name, plan in part.plans.items():
        row = dict(res_rows[name])
        pc = plan.cores
        row.update({
            "cores": len(pc), "core_ids": [pc[0].id, pc[-1].id],
            "chips": sorted({c.chip for c in pc}),
            "slicing": {"channel_group": plan.channel_group, "block": list(plan.block_shape),
                        "grid": list(plan.grid)},
            "per_core": {"neurons": _stats([c.neurons for c in pc], L.neuron_cap),
                         "synapses": _stats([c.synapses for c in pc], None),
                         "connections": _stats([c.connections for c in pc], None),
                         "memory_bytes": _stats([c.memory_bytes for c in pc], L.memory_budget_bytes),
                         "fan_in_axons": _stats([c.fan_in_axons for c in pc], axon_in),
                         "fan_out_axons": _stats([c.fan_out_axons for c in pc], axon_out)},
            "synaptic_memory_bytes": sum(c.synaptic_memory_bytes for c in pc),
            "stored_synapse_entries": sum(c.synapses for c in pc),
            "binding_limit": plan.binding_limit(L),
        })
        layer_rows.append(row)
    totals = {
        "cores": len(cores), "chips": len(part.chips),
        "neurons": sum(c.neurons for c in cores), "synapses": sum(c.synapses for c in cores),
        "connections": sum(c.connections for c in cores),
        "synaptic_memory_bytes": sum(c.synaptic_memory_bytes for c in cores),
        "state_bytes": sum(int(c.state_bytes) for c in cores),
        "memory_bytes": sum(c.memory_bytes for c in cores),
        "fan_in_axons": sum(c.fan_in_axons for c in cores),
        "fan_out_axons": sum(c.fan_out_axons for c in cores),
    }
    check = {"neurons_network_counter": int(sum(l.neurons for l in counter.layers.values())),
             "synapses_network_counter_merged_nonzero": int(counter_synapses),
             "extra_range_chunk_synapses": int(extra),
             "neurons_equal": totals["neurons"] == sum(l.neurons for l in counter.layers.values()),
             "connections_equal": totals["connections"] == counter_synapses + extra,
             "synapses_equal": (totals["connections"] == counter_synapses + extra
                                if L.encoding == "shared" else totals["synapses"] == counter_synapses + extra)}
    util = {
        "cores": len(cores), "chips": len(part.chips), "cores_per_chip": L.cores_per_chip,
        "chip_core_occupancy": len(cores) / (len(part.chips) * L.cores_per_chip),
        "neurons_per_core": _stats([c.neurons for c in cores], L.neuron_cap),
        "memory_bytes_per_core": _stats([c.memory_bytes for c in cores], L.memory_budget_bytes),
        "fan_in_axons_per_core": _stats([c.fan_in_axons for c in cores], axon_in),
        "fan_out_axons_per_core": _stats([c.fan_out_axons for c in cores], axon_out),
    }
    activity = {"given": counts is not None}
    if counts is not None:
        activity.update(samples=int(counts.samples), exact_counts=bool(counts.exact),
                        timeline_steps=int(counts.timeline_steps),
                        basis="per layer and step exact (profiler counts); split over a layer's cores "
                              "by stored synapses (ops) and neurons (spikes): per core exact only for "
                              "uniformly spread spikes")
    else:
        activity["basis"] = "no counts given: synops_per_step and spikes_out_per_step are 0"
    axon_note = ("fan-out = sum over a core's neurons of their destination cores; fan-in = distinct "
                 "source neurons sending to the core") if L.explicit_axons else (
        "shared-kernel cores: fan-in = source cores sending to the core, fan-out = destination cores "
        "(Loihi 1's per-neuron axon limits do not apply; reported, not enforced)")
    notes = [PATCH_NOTE,
             "one layer per core (small layers are not packed together)",
             axon_note,
             "the graded input is injected from the host / embedded CPUs (not on neuro-cores); the "
             "read-out's voltages are read by the host"]
    graded = res.graded_layers
    if graded:
        notes.append(f"graded spikes: {', '.join(graded)} send one message per spike carrying a payload "
                     "(v >> payload_shift, up to 24 bits); counted like binary spike messages (one per "
                     "spike); no per-core limit on payload traffic is modelled")
    notes += res.notes + part.notes
    if part.violations():
        notes.append("LIMITS VIOLATED: " + "; ".join(part.violations()[:5]))
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source or {}),
        "patch_shape": list(res.patch_shape), "patch_note": PATCH_NOTE,
        "encoding": L.encoding,
        "lowering": ENCODING_LOWERING[L.encoding],
        "balance": part.balance,
        "limits": L.describe(),
        "totals": totals, "network_counter_check": check, "utilisation": util,
        "activity": activity, "valid": not part.violations(),
        "cores": [c.to_dict() for c in cores],
        "chips": [ch.to_dict(L) for ch in part.chips],
        "layers": layer_rows,
        "notes": notes,
    }


# ============================================================================ sensitivity
def sensitivity(res: NetworkResources, base: Optional[CoreLimits] = None) -> List[Dict[str, Any]]:
    """Cores and chips under each synapse encoding, with and without the assumed axon limits."""
    from dataclasses import replace
    base = base or CoreLimits()
    rows = []
    for enc in ENCODINGS:
        for axon in ((True, False) if enc != "shared" else (None,)):   # shared: one axon per source core
            L = replace(base, encoding=enc,
                        fan_in_axons_per_core=base.fan_in_axons_per_core if axon is not False else None,
                        fan_out_axons_per_core=base.fan_out_axons_per_core if axon is not False else None)
            try:
                p = partition_network(res, L)
                rows.append({"encoding": enc, "axon_limits": axon, "cores": len(p.cores),
                             "chips": len(p.chips)})
            except ValueError as exc:
                rows.append({"encoding": enc, "axon_limits": axon, "cores": None, "chips": None,
                             "error": str(exc)})
    return rows


# ============================================================================ text + files
def _fmt_int(x) -> str:
    return f"{int(x):,}"


def mapping_summary(m: Mapping[str, Any]) -> str:
    """A readable summary of a mapping dictionary."""
    t, u, lim = m["totals"], m["utilisation"], m["limits"]
    src = m.get("source") or {}
    out = ["SpikeReg on Loihi 2: resource mapping (an estimate from published / assumed limits; "
           "not a lava-loihi compilation)", ""]
    out.append(f"network   : {src.get('kind', '?')} {src.get('path') or ''} "
               f"{('sha256 ' + src['sha256'][:12]) if src.get('sha256') else ''}".rstrip())
    out.append(f"patch     : {' x '.join(map(str, m['patch_shape']))} voxels")
    out.append(f"            {m['patch_note']}")
    out.append(f"encoding  : {m['encoding']} synapse storage: {m['lowering']}")
    out.append(f"result    : {_fmt_int(t['cores'])} neuro-cores on {t['chips']} chip(s) "
               f"({u['cores_per_chip']} cores per chip, {100 * u['chip_core_occupancy']:.1f}% of the "
               f"chips' cores used); valid: {m['valid']}")
    out.append(f"totals    : {_fmt_int(t['neurons'])} neurons, {_fmt_int(t['synapses'])} stored synapse entries "
               f"({_fmt_int(t.get('connections', t['synapses']))} folded non-zero connections), "
               f"{t['synaptic_memory_bytes'] / 2 ** 20:.1f} MiB synaptic memory + "
               f"{t['state_bytes'] / 2 ** 20:.1f} MiB neuron state")
    chk = m["network_counter_check"]
    out.append(f"check     : neuron and connection totals equal the profiler's NetworkCounter "
               f"(merged_nonzero + {chk['extra_range_chunk_synapses']} range-chunk synapses): "
               f"{chk['neurons_equal'] and chk['synapses_equal']}")
    if m.get("balance"):
        b = m["balance"]
        out.append(f"balance   : synaptic ops per core balanced ({b['objective']}): {b['cores_min']} -> "
                   f"{b['cores_balanced']} cores, estimated patch time {b['estimated_patch_time_us']['min_cores']:.1f} "
                   f"-> {b['estimated_patch_time_us']['balanced']:.1f} us, chips {b['chips']['min_cores']} -> "
                   f"{b['chips']['balanced']}")
    out.append("utilisation per core (mean / max, fraction of the limit):")
    for k, name in (("neurons_per_core", "neurons"), ("memory_bytes_per_core", "memory"),
                    ("fan_in_axons_per_core", "fan-in axons"), ("fan_out_axons_per_core", "fan-out axons")):
        s = u[k]
        if "mean_fraction" in s:
            out.append(f"  {name:14s} {100 * s['mean_fraction']:5.1f}% / {100 * s['max_fraction']:5.1f}%")
        else:
            out.append(f"  {name:14s} mean {s['mean']:.0f} / max {s['max']:.0f} (no limit enforced)")
    out.append("")
    hdr = (f"{'layer':8s} {'neurons':>9s} {'stored':>11s} {'matrices':>8s} {'cores':>6s} "
           f"{'grid (C,D,H,W)':>16s} {'max neur':>8s} {'max mem':>8s} {'max in':>7s} {'max out':>7s}  binding")
    out += [hdr, "-" * len(hdr)]
    for r in m["layers"]:
        pc = r["per_core"]
        low = "+".join(str(i["sparse_matrices"]) for i in r["inputs"])
        out.append(f"{r['layer']:8s} {_fmt_int(r['neurons']):>9s} {_fmt_int(r.get('stored_synapse_entries', r['synapses'])):>11s} {low:>8s} "
                   f"{r['cores']:>6d} {str(tuple(r['slicing']['grid'])):>16s} {pc['neurons']['max']:>8.0f} "
                   f"{pc['memory_bytes']['max']:>8.0f} {pc['fan_in_axons']['max']:>7.0f} "
                   f"{pc['fan_out_axons']['max']:>7.0f}  {r['binding_limit']}")
    out.append("")
    out.append("limits (value, kind, source):")
    for k, c in lim.items():
        v = c["value"]
        if v is None:
            shown = "not enforced"
        elif isinstance(v, (int, float)) and float(v).is_integer():
            shown = f"{int(v):,} {c['unit']}"
        else:
            shown = f"{v} {c['unit']}"
        out.append(f"  {k:24s} {shown:>18s}  [{c['kind']}] {c['citation']}")
    if m.get("sensitivity"):
        out.append("")
        out.append("sensitivity (same network and patch):")
        for r in m["sensitivity"]:
            lim_s = {True: "Loihi-1 axon limits", False: "no axon limits"}.get(r["axon_limits"],
                                                                              "axons per source core")
            res_s = f"{r['cores']} cores, {r['chips']} chips" if r.get("cores") else f"infeasible ({r.get('error')})"
            out.append(f"  {r['encoding']:7s} {lim_s:20s} {res_s}")
    act = m["activity"]
    out.append("")
    out.append(f"activity  : {act['basis']}")
    out.append("notes:")
    out += [f"  - {n}" for n in m["notes"]]
    return "\n".join(out) + "\n"


def write_mapping(m: Mapping[str, Any], out_dir: str | Path) -> Dict[str, Path]:
    """Write ``mapping.json`` and ``mapping_summary.txt`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    jp, tp = out / "mapping.json", out / "mapping_summary.txt"
    atomic_write_text(jp, json.dumps(m, indent=1, default=_json_default) + "\n")
    atomic_write_text(tp, mapping_summary(m))
    return {"json": jp, "summary": tp}


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def load_mapping(path: str | Path) -> Dict[str, Any]:
    """Read a mapping.json and check its format and contract keys."""
    path = Path(path)
    m = json.loads(path.read_text())
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} file")
    missing = [k for k in CONTRACT_KEYS if not isinstance(m.get(k), list)]
    if missing:
        raise ValueError(f"{path}: missing or malformed {missing}")
    return m


__all__ = ["FORMAT", "FORMAT_VERSION", "CONTRACT_KEYS", "PATCH_NOTE", "load_layers", "build_mapping",
           "mapping_dict", "sensitivity", "mapping_summary", "write_mapping", "load_mapping"]
