"""The deployable network: what netx can express, and our documented format for the rest.

netx (``lava.lib.dl.netx.hdf5.Network``) builds a CHAIN of layers (each connected to the next
only), 2D convolutions (``lava.proc.conv``), dense layers and CUBA/LOIHI, SDNN or RF neurons; it
raises ``NotImplementedError`` for pool, convT, unpool, average and concat (lava-dl 0.6.0,
``lava/lib/dl/netx/hdf5.py``). :func:`netx_verdict` checks every layer of ours against that list.
For SpikeReg the answer is: **no layer is netx-expressible** (all are 3D convolutions with ATRLIF
or integrator neurons; the decoder concatenates an upsampled path with a skip; the encoder
layers feed two consumers). So no netx file is written; everything goes into our format.

Our format (``spikereg-neuro/loihi-deploy`` v1, HDF5 via h5py, written atomically)
--------------------------------------------------------------------------------------
Everything a Lava graph builder needs for one patch shape, in Lava's integer units::

    /                       attrs: format, format_version, patch_shape, layer_order, input_bits,
                                   in_channels, enc_windows, dec_window, schedule (JSON, calibration
                                   .emulator.lava_schedule), netx (JSON verdict per layer),
                                   netx_file ("" = none written), source_file, source_sha256,
                                   created, lava_nc_version, lava_dl_version
    /populations/input      attrs: shape (C, D, H, W), kind "graded_input", num_message_bits
    /populations/<layer>    attrs: shape (C, D, H, W), neuron (atrlif | integrator), time_window,
                                   delta_i, delta_v, delta_theta, delta_r, theta_0, theta_step,
                                   bias_mant, bias_exp, payload_shift (-1: binary spikes; k: graded
                                   spikes with payload v >> k), [output_scale]
    /connections/<layer>/<k>    (k = 0.. in the layer's input order; one per source)
        dataset  weight_mant    int8 (C_out, C_src, kd, kh, kw): Lava weight = 2 x weight_mant
        attrs    source, transform (identity | upsample2), channels [start, stop) of the layer's
                 input dim, source_step_offset, extra_delay (schedule), weight_exp,
                 num_weight_bits (8), num_message_bits, kernel_size, stride, padding,
                 sparse_matrices, stored_synapses, matrix_shape (N_target, N_source)

The population and connection attributes are listed once, in :data:`INPUT_POPULATION_ATTRS`,
:data:`POPULATION_ATTRS` and :data:`CONNECTION_ATTRS` (name, HDF5 codec, default for files without
it); :func:`export_deployable` writes and :func:`load_deployable` reads them from those lists.

Neurons are numbered in C order of ``(C, D, H, W)``. The convolutions are stored as kernels, not
as their sparse matrices: :meth:`DeployableNet.matrices` produces, deterministically and exactly as
the Lava backend does (:func:`sim.lowering.conv3d_matrix`, x2 upsampling folded in, then
:func:`sim.lowering.split_synapse_range` where a folded weight leaves [-256, 254]), the
``sparse_matrices`` weight matrices (Lava weight values, ``(N_target, N_source)``) a builder passes
to ``lava.proc.sparse.Sparse(weights=..., weight_exp=..., num_message_bits=...)`` (``DelaySparse``
with ``extra_delay``), all feeding the target population's ``a_in``. The matrices of the default
network at 32^3 hold 182 million synapses, ~1.5 GB as COO with int32 indices and int8 values: too
big to ship when the kernels define them exactly.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from spikereg_neuro.connections import TRANSFORMS, Connection
from spikereg_neuro.geometry import conv_output_shape
from spikereg_neuro.hardware import DEPLOYABLE
from spikereg_neuro.io.atomic import atomic_write
from spikereg_neuro.io.hdf5 import (FLOAT, INT, INTS, STR, STRS, AttrField, int_tuple, open_versioned,
                                    read_attr, read_attrs, write_attrs)

from .resources import NetworkResources, layers_from_qnet

FORMAT = "spikereg-neuro/loihi-deploy"
FORMAT_VERSION = 1
ATRLIF_KEYS = ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step", "bias_mant", "bias_exp")
NEURONS = DEPLOYABLE
NETX_NEURON_TYPES = ("CUBA", "LOIHI", "SDNN", "RF", "RF_IZ")

PathLike = Union[str, Path]


class DeployFileError(ValueError):
    """A deploy file that breaks the format."""


#: attributes of /populations/input
INPUT_POPULATION_ATTRS: Tuple[AttrField, ...] = (
    AttrField("shape", int_tuple(4)),
    AttrField("kind", STR, required=False, default="graded_input"),
    AttrField("num_message_bits", INT),
)
#: attributes of /populations/<layer>, the keys of ``DeployableNet.populations[layer]`` (no
#: ``output_scale`` key where the attribute is absent)
POPULATION_ATTRS: Tuple[AttrField, ...] = (
    AttrField("shape", int_tuple(4)),
    AttrField("neuron", STR),
    AttrField("time_window", INT),
    *(AttrField(k, FLOAT if k.startswith("delta") else INT) for k in ATRLIF_KEYS),
    AttrField("payload_shift", INT, required=False, default=-1),
    AttrField("output_scale", FLOAT, required=False),
)
#: attributes of /connections/<layer>/<k>, one per DeployConnection field (``target`` and
#: ``index``: the group's path; ``weight_mant``: its dataset). ``matrix_shape`` is derived,
#: written for readers and checked on reading.
CONNECTION_ATTRS: Tuple[AttrField, ...] = (
    AttrField("source", STR),
    AttrField("transform", STR),
    AttrField("channels", int_tuple(2)),
    AttrField("source_step_offset", INT),
    AttrField("extra_delay", INT),
    AttrField("weight_exp", INT),
    AttrField("num_weight_bits", INT),
    AttrField("num_message_bits", INT),
    AttrField("kernel_size", int_tuple(3)),
    AttrField("stride", int_tuple(3)),
    AttrField("padding", int_tuple(3)),
    AttrField("sparse_matrices", INT),
    AttrField("stored_synapses", INT),
)


# ============================================================================ netx verdict
def netx_verdict(q) -> List[Dict[str, Any]]:
    """Per layer of a QuantizedNet: can lava-dl netx 0.6.0 express it, and why not."""
    consumers: Dict[str, List[str]] = {}
    for l in q.layers:
        for e in l.inputs:
            consumers.setdefault(e.source, []).append(l.name)
    rows = []
    for l in q.layers:
        why = []
        if len(l.kernel_size) == 3 and l.op == "conv3d":
            why.append("3D convolution: netx builds 2D convolutions only (lava.proc.conv; "
                       "create_conv reads 2D kernels)")
        if len(l.inputs) > 1:
            why.append("several inputs (concatenation): netx raises NotImplementedError for concat")
        if any(e.upsample > 1 for e in l.inputs):
            why.append("x2 upsampled input: netx raises NotImplementedError for unpool / convT")
        if l.neuron == "atrlif":
            why.append("ATRLIF neurons (adaptive threshold + refractory state) are not a netx neuron "
                       f"type ({', '.join(NETX_NEURON_TYPES)})")
        if len(consumers.get(l.name, [])) > 1:
            why.append(f"feeds {len(consumers[l.name])} layers ({', '.join(consumers[l.name])}): netx "
                       "chains each layer to the next only")
        rows.append({"layer": l.name, "netx_expressible": not why, "reasons": why})
    return rows


# ============================================================================ data classes
@dataclass
class DeployConnection:
    """Input ``index`` of layer ``target``: one Lava Sparse (or DelaySparse) connection group."""

    target: str
    index: int
    source: str
    transform: str
    channels: Tuple[int, int]
    weight_mant: np.ndarray
    weight_exp: int
    kernel_size: Tuple[int, int, int]
    stride: Tuple[int, int, int]
    padding: Tuple[int, int, int]
    sparse_matrices: int
    stored_synapses: int
    source_step_offset: int
    extra_delay: int
    num_message_bits: int
    num_weight_bits: int = 8

    @property
    def connection(self) -> Connection:
        return Connection.from_transform(self.source, self.transform)

    @property
    def lava_weights(self) -> np.ndarray:
        """The kernel in Lava weight values (even integers in [-256, 254])."""
        return self.weight_mant.astype(np.int64) * 2


@dataclass
class DeployableNet:
    """A read deploy file: populations (their attributes), connections per layer, root attrs."""

    patch_shape: Tuple[int, int, int]
    layer_order: List[str]
    populations: Dict[str, Dict[str, Any]]
    connections: Dict[str, List[DeployConnection]]
    attrs: Dict[str, Any] = field(default_factory=dict)

    def matrices(self, layer: str, index: int):
        """The Lava ``Sparse`` weight matrices (scipy CSR, Lava weight values) of connection
        ``index`` of ``layer``, built as the Lava backend builds them (:mod:`sim.lowering`)."""
        from sim.lowering import conv3d_matrix, split_synapse_range
        c = self.connections[layer][index]
        m = conv3d_matrix(c.lava_weights, self.populations[c.source]["shape"], c.stride, c.padding,
                          upsample=c.connection.upsampled)
        return split_synapse_range(m)


# ============================================================================ writing
def export_deployable(q, path: PathLike, patch_shape: Optional[Sequence[int]] = None,
                      source_file: str = "", source_sha256: str = "") -> Dict[str, Any]:
    """Write the deploy file of a QuantizedNet ``q`` for ``patch_shape`` (default: its own).

    Returns a summary: path, netx verdict, connections with their Sparse matrices and stored
    synapses (checked against the profiler's NetworkCounter through :class:`NetworkResources`).
    """
    from calibration.emulator import lava_schedule
    from calibration.netfile import lava_versions, validate_qnet

    validate_qnet(q)
    patch = tuple(int(x) for x in (patch_shape or q.patch_size))
    shapes = q.shapes(patch)
    res = NetworkResources(layers_from_qnet(q), patch)
    for l in q.layers:
        for c in res.layers[l.name].connections:
            if c.chunks > 1 and l.weight_exp < 0:
                raise ValueError(f"layer {l.name}: folded weights from {c.label()} leave the 8-bit range "
                                 f"and weight_exp {l.weight_exp} < 0: no exact Sparse lowering")
    sched = lava_schedule(q)
    verdict = netx_verdict(q)
    vers = lava_versions()
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        a = f.attrs
        a["format"] = FORMAT
        a["format_version"] = FORMAT_VERSION
        a["patch_shape"] = np.asarray(patch, dtype=np.int64)
        a["layer_order"] = np.array(q.names, dtype=h5py.string_dtype())
        a["input_bits"] = int(q.input_bits)
        a["in_channels"] = int(q.in_channels)
        a["enc_windows"] = np.asarray(q.enc_windows, dtype=np.int64)
        a["dec_window"] = int(q.dec_window)
        a["schedule"] = json.dumps(sched)
        a["netx"] = json.dumps(verdict)
        a["netx_file"] = ""
        a["source_file"] = str(source_file)
        a["source_sha256"] = str(source_sha256 or q.source_sha256)
        a["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        a["lava_nc_version"] = vers["lava-nc"]
        a["lava_dl_version"] = vers["lava-dl"]
        pops = f.create_group("populations")
        write_attrs(pops.create_group("input").attrs, INPUT_POPULATION_ATTRS,
                    {"shape": shapes["input"], "kind": "graded_input", "num_message_bits": q.input_bits})
        conns = f.create_group("connections")
        graded = q.graded_sources
        for l in q.layers:
            pop = {"shape": shapes[l.name], "neuron": l.neuron, "time_window": l.time_window,
                   **{k: l.atrlif[k] for k in ATRLIF_KEYS},
                   "payload_shift": l.payload_shift, "output_scale": l.output_scale}
            write_attrs(pops.create_group(l.name).attrs, POPULATION_ATTRS, pop)
            lg = conns.create_group(l.name)
            lr = res.layers[l.name]
            for k, (e, cr) in enumerate(zip(l.inputs, lr.connections)):
                s0, s1 = e.channels
                w = np.asarray(l.weight[:, s0:s1]).astype(np.int64)
                if np.any(w % 2):
                    raise ValueError(f"layer {l.name}: odd Lava weights cannot be int8 mantissas x 2")
                c = DeployConnection(
                    target=l.name, index=k, source=e.source, transform=e.transform, channels=(s0, s1),
                    weight_mant=(w // 2).astype(np.int8), weight_exp=l.weight_exp,
                    kernel_size=l.kernel_size, stride=l.stride, padding=l.padding,
                    sparse_matrices=cr.chunks, stored_synapses=cr.synapses,
                    source_step_offset=e.source_step_offset,
                    extra_delay=sched[l.name]["inputs"][k]["extra_delay"],
                    num_message_bits=l.num_message_bits if e.source in graded else 0,
                    num_weight_bits=l.num_weight_bits)
                h = lg.create_group(str(k))
                h.create_dataset("weight_mant", data=c.weight_mant)
                write_attrs(h.attrs, CONNECTION_ATTRS, vars(c))
                h.attrs["matrix_shape"] = INTS.encode([math.prod(shapes[l.name]), math.prod(shapes[e.source])])
    return {"path": str(path), "format": FORMAT, "patch_shape": list(patch), "netx": verdict,
            "netx_file": None,
            "netx_expressible_layers": [r["layer"] for r in verdict if r["netx_expressible"]],
            "stored_synapses": res.synapses, "neurons": res.neurons,
            "connections": [{"layer": n, "source": c.label(), "sparse_matrices": c.chunks,
                             "stored_synapses": c.synapses}
                            for n, l in res.layers.items() for c in l.connections]}


# ============================================================================ reading
def load_deployable(path: PathLike) -> DeployableNet:
    """Read and validate a deploy file (:class:`DeployFileError` for anything wrong)."""
    path = Path(path)
    with open_versioned(path, FORMAT, FORMAT_VERSION, DeployFileError, FORMAT) as f:
        where = str(path)
        patch = read_attr(f.attrs, AttrField("patch_shape", int_tuple(3)), where, DeployFileError)
        order = read_attr(f.attrs, AttrField("layer_order", STRS), where, DeployFileError)
        for grp in ("populations", "connections"):
            if grp not in f:
                raise DeployFileError(f"{where}: no /{grp} group")
        P, C = f["populations"], f["connections"]
        if "input" not in P:
            raise DeployFileError(f"{where}: no /populations/input")
        extra = sorted(set(P) - set(order) - {"input"}) + sorted(set(C) - set(order))
        if extra:
            raise DeployFileError(f"{where}: groups {extra} are not in layer_order")
        pops: Dict[str, Dict[str, Any]] = {
            "input": read_attrs(P["input"].attrs, INPUT_POPULATION_ATTRS, f"{where}: input", DeployFileError)}
        conns: Dict[str, List[DeployConnection]] = {}
        for name in order:
            lw = f"{where}: layer {name!r}"
            if name not in P or name not in C:
                raise DeployFileError(f"{lw}: missing population or connections (listed in layer_order)")
            pop = {k: v for k, v in read_attrs(P[name].attrs, POPULATION_ATTRS, lw, DeployFileError).items()
                   if v is not None}
            if pop["neuron"] not in NEURONS:
                raise DeployFileError(f"{lw}: neuron {pop['neuron']!r} not in {NEURONS}")
            keys = sorted(C[name].keys(), key=lambda s: int(s) if s.isdigit() else -1)
            if not keys or keys != [str(i) for i in range(len(keys))]:
                raise DeployFileError(f"{lw}: connections must be numbered 0..n-1, got {keys}")
            lst, pos = [], 0
            for k in keys:
                h = C[name][k]
                cw = f"{lw} connection {k}"
                if "weight_mant" not in h:
                    raise DeployFileError(f"{cw}: missing dataset 'weight_mant'")
                wm = np.asarray(h["weight_mant"])
                if wm.dtype != np.int8 or wm.ndim != 5:
                    raise DeployFileError(f"{cw}: weight_mant must be int8 (C_out, C_src, kd, kh, kw), got "
                                          f"{wm.dtype} {wm.shape}")
                a = read_attrs(h.attrs, CONNECTION_ATTRS, cw, DeployFileError)
                src, tr, ch, ks = a["source"], a["transform"], a["channels"], a["kernel_size"]
                if tr not in TRANSFORMS:
                    raise DeployFileError(f"{cw}: transform {tr!r} not in {tuple(TRANSFORMS)}")
                if src not in pops:
                    raise DeployFileError(f"{cw}: source {src!r} is not the input or an earlier layer")
                if ch[0] != pos or ch[1] - ch[0] != pops[src]["shape"][0]:
                    raise DeployFileError(f"{cw}: channels {ch} do not continue at {pos} with the "
                                          f"{pops[src]['shape'][0]} channels of {src!r}")
                pos = ch[1]
                if wm.shape != (pop["shape"][0], ch[1] - ch[0], *ks):
                    raise DeployFileError(f"{cw}: weight_mant shape {wm.shape} != "
                                          f"{(pop['shape'][0], ch[1] - ch[0], *ks)}")
                if a["sparse_matrices"] < 1:
                    raise DeployFileError(f"{cw}: sparse_matrices must be >= 1, got {a['sparse_matrices']}")
                conn = DeployConnection(target=name, index=int(k), weight_mant=wm, **a)
                if not -8 <= conn.weight_exp <= 7:
                    raise DeployFileError(f"{cw}: weight_exp {conn.weight_exp} outside [-8, 7]")
                # geometry: the source (upsampled) must produce the layer's spatial shape
                up = conn.connection.upsample
                sp_in = [up * n for n in pops[src]["shape"][1:]]
                sp_out = conv_output_shape(sp_in, ks, conn.stride, conn.padding)
                if sp_out != tuple(pop["shape"][1:]):
                    raise DeployFileError(f"{cw}: {src!r}{' upsampled' if up > 1 else ''} gives spatial "
                                          f"shape {sp_out}, the population is {tuple(pop['shape'][1:])}")
                ms = read_attr(h.attrs, AttrField("matrix_shape", int_tuple(2)), cw, DeployFileError)
                if ms != (math.prod(pop["shape"]), math.prod(pops[src]["shape"])):
                    raise DeployFileError(f"{cw}: matrix_shape {ms} does not match the populations")
                lst.append(conn)
            pops[name] = pop
            conns[name] = lst
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    for k in ("schedule", "netx"):
        if isinstance(attrs.get(k), str):
            attrs[k] = json.loads(attrs[k])
    return DeployableNet(patch, order, pops, conns, attrs)


__all__ = ["FORMAT", "FORMAT_VERSION", "DeployFileError", "DeployConnection", "DeployableNet",
           "netx_verdict", "export_deployable", "load_deployable"]
