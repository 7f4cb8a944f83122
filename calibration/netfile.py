"""The quantized network file ``net.h5``: dataclasses, writer, reader, validator.

It is what the Lava backend (``sim/``) and the Loihi mapper read, so it is self-describing: every
layer carries its integer weights, weight exponent, geometry, connectivity (with the upsampling
and concatenation of the U-Net skips), time window and the lava-nc ``ATRLIF`` constructor
arguments by their exact names, in the units that process's fixed-point model expects.
See ``docs/calibration.md`` for the table of groups, datasets and attributes.

Layout (format ``spikereg-neuro/quantized-net``, version 1)::

    /                   attrs: format, format_version, layer_order, enc_windows, dec_window,
                               input_bits, in_channels, scales, integration_steps,
                               input_once, readout_scale, patch_size, stride, source_checkpoint,
                               source_sha256, calibration (JSON), model_config (JSON),
                               rules (JSON), created, lava_nc_version, lava_dl_version
    /layers/<name>/weight   int16 (out, in, kd, kh, kw): Lava ``weights`` values
    /layers/<name>          attrs: op, neuron, index, weight_exp, num_weight_bits, sign_mode,
                               kernel_size, stride, padding, in_channels, out_channels,
                               output_shape (C, D, H, W at patch_size), time_window, num_message_bits, input_gain, inputs (JSON),
                               input_sources, delta_i, delta_v, delta_theta, delta_r, theta_0,
                               theta_step, bias_mant, bias_exp, i_decay_mult, v_decay_mult,
                               theta_decay_mult, r_decay_mult, output_scale, payload_shift,
                               slayer (JSON)

One field list per level drives writing, reading and equality: :data:`NET_ATTRS` (root),
:data:`LAYER_ATTRS` and :data:`ATRLIF_ATTRS` (per layer) hold every dataclass field stored as an
attribute, with its codec (HDF5 type), whether older files may lack it (then it reads as its
default) and whether :func:`qnet_equal` compares it; a new field is one entry there. The other
attributes are derived or provenance, written for readers only: format, format_version,
layer_order (the reader's list of layers), rules, created, lava_*_version at the root; index,
sign_mode, in/out_channels and output_shape (checked on reading), input_sources and the
``*_decay_mult`` per layer.

Graded spikes (``payload_shift >= 0``; files without the attribute are binary): such a layer
sends, where it spikes, the payload ``v >> payload_shift`` (its 24-bit voltage, right-shifted)
instead of a binary event, and its consumers read it through ``num_message_bits > 0``
connections (lava ``weights.dot(payload)``), like the graded input.

Input schedule (``input_once``; files without the attribute read as False): False sends the
graded input payload at every step of the input layer's window; True sends it at step 0 only
(the input frame is zero at steps 1 .. T-1; the input layer's current holds it).
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from spikereg_neuro.connections import TRANSFORMS as _TRANSFORMS, Connection
from spikereg_neuro.geometry import conv_output_shape
from spikereg_neuro.hardware import DEPLOYABLE
from spikereg_neuro.io.atomic import atomic_write
from spikereg_neuro.io.hdf5 import (BOOL, FLOAT, INT, INTS, STR, STRS, AttrField, Codec, attrs_equal,
                                    open_versioned, read_attr, read_attrs, write_attrs)

from . import loihi_rules as R

FORMAT = "spikereg-neuro/quantized-net"
FORMAT_VERSION = 1
NEURON_KINDS = DEPLOYABLE
TRANSFORMS = tuple(_TRANSFORMS)
#: the ATRLIF constructor arguments stored per layer (lava/proc/atrlif/process.py ATRLIF.__init__)
ATRLIF_PARAMS = ("delta_i", "delta_v", "delta_theta", "delta_r", "theta_0", "theta_step",
                 "bias_mant", "bias_exp")

PathLike = Union[str, Path]


class NetFileError(ValueError):
    """A net.h5 file (or an in-memory QuantizedNet) that breaks the format or the Loihi rules."""


@dataclass
class LayerInput:
    """One incoming connection of a layer (one Lava connection process).

    ``source`` is ``"input"`` (the graded input, channels = fixed then moving) or a layer name;
    ``transform`` is ``"identity"`` or ``"upsample2"`` (nearest x2 upsampling of the source's
    spikes before the convolution); ``channels = (start, stop)`` is the slice of the layer's
    weight input dimension this source feeds (the concatenation order); ``source_step_offset`` is
    the source's local time step that feeds this layer's local step 0 (``T_source - T_layer``:
    the layer sees the source's LAST ``T_layer`` steps).
    """

    source: str
    transform: str = "identity"
    channels: Tuple[int, int] = (0, 0)
    source_step_offset: int = 0

    @property
    def connection(self) -> Connection:
        """The typed connection (source, upsampling); ValueError for an unknown transform."""
        return Connection.from_transform(self.source, self.transform)

    @property
    def upsample(self) -> int:
        """1, or 2 for an x2 nearest-upsampled source."""
        return self.connection.upsample

    @classmethod
    def of(cls, connection: Connection, channels: Tuple[int, int], source_step_offset: int = 0) -> "LayerInput":
        """The net.h5 record of a typed connection."""
        return cls(connection.source, connection.transform, (int(channels[0]), int(channels[1])),
                   int(source_step_offset))

    def to_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "transform": self.transform,
                "channels": [int(self.channels[0]), int(self.channels[1])],
                "source_step_offset": int(self.source_step_offset)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LayerInput":
        try:
            return cls(str(d["source"]), str(d.get("transform", "identity")),
                       (int(d["channels"][0]), int(d["channels"][1])), int(d.get("source_step_offset", 0)))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise NetFileError(f"malformed layer input {d!r}: {exc}") from exc


@dataclass
class QuantizedLayer:
    """One conv layer + its neurons, in Loihi 2 / lava-nc fixed-point units.

    * ``weight``: int (out, in, kd, kh, kw), the values to pass as lava ``weights`` (even
      integers in [-256, 254], i.e. 8-bit signed mantissas times 2, see loihi_rules);
      a connection's output per step is ``shift(sum(weight * s), weight_exp)``.
    * ``atrlif``: the lava-nc ``ATRLIF(...)`` constructor arguments (``delta_*`` fractions with
      ``delta * 4096`` integral, ``theta_0``/``theta_step`` threshold mantissas, bias 0). The
      integrator read-out uses the same process with a threshold it cannot reach.
    * ``output_scale`` (integrator only): field in voxels = ``output_scale * v`` after the
      layer's last step.
    * ``input_gain``: how many integer input units make one float unit of the trained model
      (``2**input_bits - 1`` for the graded-input layer, 1 otherwise); informational.
    """

    name: str
    neuron: str
    weight: np.ndarray
    weight_exp: int
    kernel_size: Tuple[int, int, int]
    stride: Tuple[int, int, int]
    padding: Tuple[int, int, int]
    inputs: List[LayerInput]
    time_window: int
    atrlif: Dict[str, Any]
    num_message_bits: int = 0
    num_weight_bits: int = R.WEIGHT_BITS
    op: str = "conv3d"
    input_gain: float = 1
    output_scale: Optional[float] = None
    slayer: Dict[str, Any] = field(default_factory=dict)
    #: -1: binary spikes; k >= 0: graded spikes with payload ``v >> k`` where the neuron spikes
    payload_shift: int = -1

    @property
    def graded_output(self) -> bool:
        return int(self.payload_shift) >= 0

    @property
    def payload_gain(self) -> float:
        """Payload units per threshold of a graded layer: ``64 * theta_0 / 2**payload_shift``."""
        if not self.graded_output:
            raise ValueError(f"layer {self.name} sends binary spikes")
        return (1 << R.ACT_SHIFT) * int(self.atrlif["theta_0"]) / float(1 << int(self.payload_shift))

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def multipliers(self) -> Dict[str, int]:
        """Integer decay multipliers (of ``x >> 12``) the fixed model applies each step."""
        p = self.atrlif
        return {
            "i_decay_mult": R.current_decay_multiplier(p["delta_i"]),
            "v_decay_mult": R.decay_multiplier(p["delta_v"], "delta_v"),
            "theta_decay_mult": R.decay_multiplier(p["delta_theta"], "delta_theta"),
            "r_decay_mult": R.decay_multiplier(p["delta_r"], "delta_r"),
        }

    def input_named(self, source: str) -> LayerInput:
        for e in self.inputs:
            if e.source == source:
                return e
        raise KeyError(f"layer {self.name} has no input from {source!r}")


@dataclass
class QuantizedNet:
    """The whole quantized network; ``layers`` in execution order (last = read-out)."""

    layers: List[QuantizedLayer]
    enc_windows: Tuple[int, ...]
    dec_window: int
    input_bits: int
    in_channels: int
    scales: Tuple[int, ...]
    readout_scale: float
    source_checkpoint: str = ""
    source_sha256: str = ""
    calibration: Dict[str, Any] = field(default_factory=dict)
    model_config: Dict[str, Any] = field(default_factory=dict)
    patch_size: Tuple[int, int, int] = (32, 32, 32)
    stride: Tuple[int, int, int] = (16, 16, 16)
    #: host-side scaling-and-squaring steps applied to the read-out per iteration (0: the
    #: read-out is the displacement; files written before this attribute existed read as 0)
    integration_steps: int = 0
    #: input schedule: False sends the graded input payload at every step of the input layer's
    #: window, True at its step 0 only (zero frames after; files without the attribute: False)
    input_once: bool = False

    def __post_init__(self) -> None:
        self.integration_steps = int(self.integration_steps)
        if isinstance(self.input_once, np.bool_):
            self.input_once = bool(self.input_once)
        self.enc_windows = tuple(int(t) for t in self.enc_windows)
        self.scales = tuple(int(s) for s in self.scales)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.stride = tuple(int(p) for p in self.stride)

    def shapes(self, patch: Optional[Sequence[int]] = None) -> Dict[str, Tuple[int, int, int, int]]:
        """Population shape ``(C, D, H, W)`` of every layer (and ``input``) for a patch size
        (default: ``patch_size``, the tiling the model was trained/evaluated with)."""
        patch = tuple(int(x) for x in (patch or self.patch_size))
        out: Dict[str, Tuple[int, int, int, int]] = {"input": (int(self.in_channels), *patch)}
        for l in self.layers:
            sizes = []
            for e in l.inputs:
                if e.source not in out:
                    raise NetFileError(f"layer {l.name!r}: unknown source {e.source!r}")
                sizes.append(tuple(e.upsample * x for x in out[e.source][1:]))
            if len(set(sizes)) != 1:
                raise NetFileError(f"layer {l.name!r}: shape mismatch: its inputs have spatial sizes "
                                   f"{sizes} for patch {patch}")
            sp = sizes[0]
            o = conv_output_shape(sp, l.kernel_size, l.stride, l.padding)
            if min(o) < 1:
                raise NetFileError(f"layer {l.name!r}: patch {patch} too small (output {o})")
            out[l.name] = (l.out_channels, *o)
        return out

    @property
    def names(self) -> List[str]:
        return [l.name for l in self.layers]

    @property
    def graded_sources(self) -> set:
        """Sources whose events carry a payload: ``"input"`` and every graded-spike layer."""
        return {"input"} | {l.name for l in self.layers if l.graded_output}

    @property
    def graded_spikes(self) -> bool:
        """True if hidden layers send graded spikes (not only the input)."""
        return any(l.graded_output for l in self.layers)

    def layer(self, name: str) -> QuantizedLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(f"no layer {name!r}; layers: {self.names}")

    def __getitem__(self, name: str) -> QuantizedLayer:
        return self.layer(name)

    @property
    def readout(self) -> QuantizedLayer:
        return self.layers[-1]

    @property
    def input_window(self) -> int:
        """Time window of the layers that read the graded input (the input layer's ``T``)."""
        ws = [int(l.time_window) for l in self.layers if any(e.source == "input" for e in l.inputs)]
        if not ws:
            raise NetFileError("no layer reads the graded input")
        return max(ws)

    @property
    def input_steps(self) -> int:
        """Number of steps (from step 0) at which the host sends the input payload: 1 with
        ``input_once``, else the input layer's whole window."""
        return 1 if self.input_once else self.input_window

    @property
    def size_multiple(self) -> int:
        """Patch sizes must be divisible by this (2 ** number of stride-2 layers)."""
        m = 1
        for l in self.layers:
            m *= max(l.stride)
        return m


# ============================================================================ validation
def validate_qnet(q: QuantizedNet) -> QuantizedNet:
    """Check a QuantizedNet against the format and the Loihi rules; raise NetFileError."""
    if not q.layers:
        raise NetFileError("the network has no layers")
    names = q.names
    if len(set(names)) != len(names):
        raise NetFileError(f"duplicate layer names in {names}")
    if not 1 <= int(q.input_bits) <= R.MAX_PAYLOAD_BITS:
        raise NetFileError(f"input_bits {q.input_bits} outside [1, {R.MAX_PAYLOAD_BITS}]")
    if not isinstance(q.input_once, (bool, np.bool_)):
        raise NetFileError(f"input_once must be a bool, got {q.input_once!r} ({type(q.input_once).__name__})")
    if any(t < 1 for t in q.enc_windows) or q.dec_window < 1:
        raise NetFileError(f"time windows must be >= 1 (enc {q.enc_windows}, dec {q.dec_window})")
    out_ch: Dict[str, int] = {"input": int(q.in_channels)}
    window: Dict[str, int] = {"input": max(q.enc_windows) if q.enc_windows else 1}
    graded_layers = q.graded_sources - {"input"}
    for i, l in enumerate(q.layers):
        where = f"layer {l.name!r}"
        # the root windows are the layers' own: encoder level i runs enc_windows[i] steps, every
        # later layer dec_window (a root value that disagrees would be silently ignored)
        want = q.enc_windows[i] if i < len(q.enc_windows) else q.dec_window
        if int(l.time_window) != int(want):
            raise NetFileError(f"{where}: time_window {l.time_window} disagrees with the root "
                               f"{'enc_windows[%d]' % i if i < len(q.enc_windows) else 'dec_window'} = {want}")
        if l.neuron not in NEURON_KINDS:
            raise NetFileError(f"{where}: neuron kind {l.neuron!r} not in {NEURON_KINDS}")
        if l.op != "conv3d":
            raise NetFileError(f"{where}: op {l.op!r} not supported (conv3d)")
        w = np.asarray(l.weight)
        if w.ndim != 5:
            raise NetFileError(f"{where}: weight must be 5-D (out, in, kd, kh, kw), got shape {w.shape}")
        try:
            R.check_weights(w, f"{where}")
            R.check_weight_exp(l.weight_exp, f"{where}")
        except ValueError as exc:
            raise NetFileError(str(exc)) from None
        if l.num_weight_bits != R.WEIGHT_BITS:
            raise NetFileError(f"{where}: num_weight_bits {l.num_weight_bits} != {R.WEIGHT_BITS}")
        for nm, v in (("kernel_size", l.kernel_size), ("stride", l.stride), ("padding", l.padding)):
            if len(tuple(v)) != 3 or any(int(x) < 0 for x in v):
                raise NetFileError(f"{where}: {nm} must be 3 non-negative ints, got {v}")
        if tuple(w.shape[2:]) != tuple(int(k) for k in l.kernel_size):
            raise NetFileError(f"{where}: weight shape {w.shape} does not match kernel_size {tuple(l.kernel_size)}")
        if any(int(s) < 1 for s in l.stride):
            raise NetFileError(f"{where}: stride must be >= 1, got {l.stride}")
        if l.time_window < 1:
            raise NetFileError(f"{where}: time_window must be >= 1")
        if not l.inputs:
            raise NetFileError(f"{where}: no inputs")
        pos = 0
        for e in l.inputs:
            if e.transform not in TRANSFORMS:
                raise NetFileError(f"{where}: input transform {e.transform!r} not in {TRANSFORMS}")
            if e.source not in out_ch:
                raise NetFileError(f"{where}: input {e.source!r} is not the input or an earlier layer "
                                   f"(missing layer or wrong order)")
            a, b = e.channels
            if a != pos or b <= a:
                raise NetFileError(f"{where}: input channel slices must tile the weight's input dim in "
                                   f"order; got {e.channels} after channel {pos}")
            if b - a != out_ch[e.source]:
                raise NetFileError(f"{where}: shape mismatch: input {e.source!r} has {out_ch[e.source]} "
                                   f"channels but the weight slice {e.channels} has {b - a}")
            pos = b
            if e.source != "input":
                if e.source_step_offset != window[e.source] - l.time_window or e.source_step_offset < 0:
                    raise NetFileError(f"{where}: source_step_offset {e.source_step_offset} for "
                                       f"{e.source!r} must be T_source - T_layer = "
                                       f"{window[e.source] - l.time_window} >= 0")
        if pos != w.shape[1]:
            raise NetFileError(f"{where}: shape mismatch: inputs cover {pos} channels, weight has {w.shape[1]}")
        p = l.atrlif
        missing = [k for k in ATRLIF_PARAMS if k not in p]
        if missing:
            raise NetFileError(f"{where}: missing ATRLIF parameters {missing}")
        try:
            mult = l.multipliers
        except ValueError as exc:
            raise NetFileError(f"{where}: {exc}") from None
        if int(p["theta_0"]) != p["theta_0"] or int(p["theta_step"]) != p["theta_step"]:
            raise NetFileError(f"{where}: theta_0 and theta_step must be integers")
        if l.neuron == "atrlif":
            if not 1 <= int(p["theta_0"]) <= R.THETA_MAX:
                raise NetFileError(f"{where}: theta_0 {p['theta_0']} out of range [1, {R.THETA_MAX}] (12 bits)")
            if not 0 <= int(p["theta_step"]) <= R.THETA_MAX:
                raise NetFileError(f"{where}: theta_step {p['theta_step']} out of range [0, {R.THETA_MAX}]")
        else:
            if int(p["theta_0"]) != R.NON_SPIKING_THETA_0 or mult["i_decay_mult"] != 0 \
                    or mult["v_decay_mult"] != R.DECAY_UNITY:
                raise NetFileError(f"{where}: an integrator needs theta_0 = {R.NON_SPIKING_THETA_0}, "
                                   "delta_i = 4095/4096 (current = input) and delta_v = 0 (no leak)")
            if l.output_scale is None or not np.isfinite(l.output_scale):
                raise NetFileError(f"{where}: an integrator needs a finite output_scale")
        bmax = 2 ** (R.BIAS_MANT_BITS - 1)
        if not -bmax <= int(p["bias_mant"]) < bmax or not 0 <= int(p["bias_exp"]) < 2 ** R.BIAS_EXP_BITS:
            raise NetFileError(f"{where}: bias_mant/bias_exp outside {R.BIAS_MANT_BITS}/{R.BIAS_EXP_BITS} bits")
        if l.num_message_bits < 0 or l.num_message_bits > R.MAX_PAYLOAD_BITS:
            raise NetFileError(f"{where}: num_message_bits {l.num_message_bits} out of range")
        graded = any(e.source == "input" for e in l.inputs)
        if graded and l.num_message_bits != q.input_bits:
            raise NetFileError(f"{where}: reads the graded input, num_message_bits must be input_bits={q.input_bits}")
        hidden = [e.source in graded_layers for e in l.inputs if e.source != "input"]
        if any(hidden) and not all(hidden):
            raise NetFileError(f"{where}: mixes binary and graded-spike sources (one num_message_bits per layer)")
        if any(hidden) and (graded or l.num_message_bits != R.MAX_PAYLOAD_BITS):
            raise NetFileError(f"{where}: reads graded spikes, num_message_bits must be {R.MAX_PAYLOAD_BITS} "
                               "(and it must not also read the input)")
        if not graded and not any(hidden) and l.num_message_bits != 0:
            raise NetFileError(f"{where}: reads binary spikes only, num_message_bits must be 0")
        k = int(l.payload_shift)
        if k != l.payload_shift or not -1 <= k < R.MAX_PAYLOAD_BITS or (k >= 0 and l.neuron != "atrlif"):
            raise NetFileError(f"{where}: payload_shift {l.payload_shift!r} must be -1 (binary spikes) or, for "
                               f"a spiking layer, an integer in [0, {R.MAX_PAYLOAD_BITS - 1}]")
        out_ch[l.name] = l.out_channels
        window[l.name] = int(l.time_window)
    if not any(e.source == "input" for l in q.layers for e in l.inputs):
        raise NetFileError("no layer reads the graded input")
    if q.readout.neuron != "integrator":
        raise NetFileError(f"the last layer ({q.readout.name!r}) must be the integrator read-out")
    if len(q.patch_size) != 3 or len(q.stride) != 3:
        raise NetFileError(f"patch_size and stride need 3 entries, got {q.patch_size}, {q.stride}")
    m = q.size_multiple
    if any(p % m for p in q.patch_size):
        raise NetFileError(f"patch_size {q.patch_size} must be divisible by {m}")
    shp = q.shapes()
    if tuple(shp[q.readout.name][1:]) != tuple(q.patch_size) or q.readout.out_channels != 3:
        raise NetFileError(f"shape mismatch: the read-out gives {shp[q.readout.name]} for patch "
                           f"{q.patch_size}, expected (3, *patch)")
    return q


# ============================================================================ stored fields
def _json(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=_json_default)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _from_json(v: Any) -> Any:
    try:
        return json.loads(STR.decode(v))
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc})") from None


def _inputs_from_json(v: Any) -> List[LayerInput]:
    records = _from_json(v)
    if not isinstance(records, list):
        raise ValueError(f"must be a JSON list of layer inputs, got {records!r}")
    try:
        return [LayerInput.from_dict(d) for d in records]
    except NetFileError as exc:
        raise ValueError(f"holds a {exc}") from None


#: a JSON document in a string attribute (keys sorted; numpy numbers and arrays as JSON ones)
JSON = Codec("JSON", _json, _from_json)
#: a layer's ``inputs``: the JSON list of its :meth:`LayerInput.to_dict` records
INPUTS = Codec("layer inputs", lambda v: _json([e.to_dict() for e in v]), _inputs_from_json)

#: root attributes, one per QuantizedNet field (``layers``: the /layers groups). Optional ones
#: read as their default in files written before they existed; qnet_equal skips compare=False.
NET_ATTRS: Tuple[AttrField, ...] = (
    AttrField("enc_windows", INTS),
    AttrField("dec_window", INT),
    AttrField("input_bits", INT),
    AttrField("in_channels", INT),
    AttrField("scales", INTS),
    AttrField("integration_steps", INT, required=False, default=0),
    AttrField("input_once", BOOL, required=False, default=False),
    AttrField("readout_scale", FLOAT),
    AttrField("patch_size", INTS),
    AttrField("stride", INTS),
    AttrField("source_checkpoint", STR, required=False, default="", compare=False),
    AttrField("source_sha256", STR, required=False, default=""),
    AttrField("calibration", JSON, required=False, default={}),
    AttrField("model_config", JSON, required=False, default={}, compare=False),
)
#: layer group attributes, one per QuantizedLayer field (``name``: the group's name, ``weight``:
#: its dataset, ``atrlif``: ATRLIF_ATTRS)
LAYER_ATTRS: Tuple[AttrField, ...] = (
    AttrField("op", STR, compare=False),
    AttrField("neuron", STR),
    AttrField("weight_exp", INT),
    AttrField("num_weight_bits", INT, compare=False),
    AttrField("kernel_size", INTS),
    AttrField("stride", INTS),
    AttrField("padding", INTS),
    AttrField("time_window", INT),
    AttrField("num_message_bits", INT),
    AttrField("input_gain", FLOAT, required=False, default=1.0),
    AttrField("inputs", INPUTS),
    AttrField("output_scale", FLOAT, required=False),  # integrator only: absent = None
    AttrField("payload_shift", INT, required=False, default=-1),
    AttrField("slayer", JSON, required=False, default={}, compare=False),
)
#: the ``atrlif`` entries stored as layer attributes (other keys are neither stored nor compared)
ATRLIF_ATTRS: Tuple[AttrField, ...] = tuple(AttrField(k, FLOAT if k.startswith("delta") else INT)
                                            for k in ATRLIF_PARAMS)
#: dataclass fields stored otherwise than as one attribute of the lists above
NET_NOT_ATTRS = ("layers",)
LAYER_NOT_ATTRS = ("name", "weight", "atrlif")
_LAYER_ORDER = AttrField("layer_order", STRS)


def lava_versions() -> Dict[str, str]:
    """Installed lava-nc and lava-dl versions (``"unknown"`` when not installed), recorded in
    net.h5 and deploy.h5."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("lava-nc", "lava-dl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "unknown"
    return out


def _root_extras(q: QuantizedNet) -> Dict[str, Any]:
    """Root attributes besides NET_ATTRS: the format tag, the layer order (the reader's list of
    layers) and, for readers only (load_qnet ignores them), the fixed-point rules, the creation
    time and the lava versions."""
    vers = lava_versions()
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "layer_order": STRS.encode(q.names),
            "rules": _json(R.rules_summary()),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "lava_nc_version": vers["lava-nc"], "lava_dl_version": vers["lava-dl"]}


def _layer_extras(l: QuantizedLayer, index: int, shape: Sequence[int]) -> Dict[str, Any]:
    """Layer attributes derived from the stored ones, for readers: ``in_channels``,
    ``out_channels`` and ``output_shape`` (load_qnet checks them against the weight and the
    geometry); ``index``, ``sign_mode``, ``input_sources`` and the decay multipliers (ignored)."""
    return {"index": int(index), "sign_mode": R.sign_mode(l.weight),
            "in_channels": l.in_channels, "out_channels": l.out_channels,
            "output_shape": INTS.encode(shape),
            "input_sources": STRS.encode([e.source for e in l.inputs]),
            **{k: int(v) for k, v in l.multipliers.items()}}


# ============================================================================ write / read
def save_qnet(path: PathLike, q: QuantizedNet) -> Path:
    """Validate ``q`` and write it to ``path`` atomically (HDF5, h5py)."""
    validate_qnet(q)
    path = Path(path)
    shapes = q.shapes()
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(_root_extras(q))
        write_attrs(f.attrs, NET_ATTRS, vars(q))
        g = f.create_group("layers")
        for idx, l in enumerate(q.layers):
            h = g.create_group(l.name)
            h.create_dataset("weight", data=np.asarray(l.weight).astype(np.int16))
            write_attrs(h.attrs, LAYER_ATTRS, vars(l))
            write_attrs(h.attrs, ATRLIF_ATTRS, l.atrlif)
            h.attrs.update(_layer_extras(l, idx, shapes[l.name]))
    return path


def _read_qnet_file(f, path: Path):
    """The QuantizedNet in the open net.h5 ``f`` and its stored output shapes (unvalidated)."""
    where = str(path)
    order = read_attr(f.attrs, _LAYER_ORDER, where, NetFileError)
    if "layers" not in f:
        raise NetFileError(f"{path}: no /layers group")
    g = f["layers"]
    extra = sorted(set(g.keys()) - set(order))
    if extra:
        raise NetFileError(f"{path}: layers {extra} are not in layer_order {order}")
    layers = []
    for name in order:
        if name not in g:
            raise NetFileError(f"{path}: missing layer {name!r} (listed in layer_order)")
        h = g[name]
        lw = f"{path}: layer {name!r}"
        if "weight" not in h:
            raise NetFileError(f"{lw}: missing dataset 'weight'")
        w = np.asarray(h["weight"])
        a = h.attrs
        layer = QuantizedLayer(name=name, weight=w, atrlif=read_attrs(a, ATRLIF_ATTRS, lw, NetFileError),
                               **read_attrs(a, LAYER_ATTRS, lw, NetFileError))
        for k in ("in_channels", "out_channels"):
            if k in a and int(a[k]) != getattr(layer, k):
                raise NetFileError(f"{lw}: shape mismatch: attribute {k}={int(a[k])} but weight "
                                   f"shape is {w.shape}")
        layers.append(layer)
    q = QuantizedNet(layers=layers, **read_attrs(f.attrs, NET_ATTRS, where, NetFileError))
    stored_shapes = {name: INTS.decode(g[name].attrs["output_shape"])
                     for name in order if "output_shape" in g[name].attrs}
    return q, stored_shapes


def load_qnet(path: PathLike) -> QuantizedNet:
    """Read and validate a net.h5 file (clear NetFileError messages for anything wrong)."""
    path = Path(path)
    with open_versioned(path, FORMAT, FORMAT_VERSION, NetFileError,
                        "spikereg-neuro quantized network") as f:
        try:
            q, stored_shapes = _read_qnet_file(f, path)
        except (RuntimeError, OSError) as exc:  # h5py on damaged metadata or data
            raise NetFileError(f"{path}: damaged HDF5 file ({' '.join(str(exc).split())})") from None
    try:
        validate_qnet(q)
    except NetFileError as exc:
        raise NetFileError(f"{path}: {exc}") from None
    shapes = q.shapes()
    for name, shp in stored_shapes.items():
        if shp != shapes[name]:
            raise NetFileError(f"{path}: layer {name!r}: shape mismatch: output_shape {shp} but the "
                               f"weights and geometry give {shapes[name]} for patch {q.patch_size}")
    return q


def qnet_equal(a: QuantizedNet, b: QuantizedNet) -> bool:
    """Exact equality of two networks: layer names and weights, and every ``compare`` field of
    NET_ATTRS, LAYER_ATTRS and ATRLIF_ATTRS (not source_checkpoint, model_config, a layer's op,
    num_weight_bits and slayer, nor atrlif keys outside ATRLIF_PARAMS)."""
    if a.names != b.names:
        return False
    for x, y in zip(a.layers, b.layers):
        if not (np.array_equal(x.weight, y.weight) and attrs_equal(LAYER_ATTRS, vars(x), vars(y))
                and attrs_equal(ATRLIF_ATTRS, x.atrlif, y.atrlif)):
            return False
    return attrs_equal(NET_ATTRS, vars(a), vars(b))


__all__: Sequence[str] = ["FORMAT", "FORMAT_VERSION", "ATRLIF_PARAMS", "NetFileError", "LayerInput",
                          "QuantizedLayer", "QuantizedNet", "validate_qnet", "save_qnet", "load_qnet",
                          "qnet_equal", "lava_versions"]
