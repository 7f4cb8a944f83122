"""Loihi 2 resource limits used by the mapper, each with its source and what kind of number it is.

Kinds (as in :class:`spikereg_neuro.profiler.constants.Constant`): ``published`` (read in an
Intel publication or in released source code), ``derived`` (arithmetic on published numbers),
``assumed`` (a choice of this mapper: Intel has not published the Loihi 2 number).

What is and is not published
----------------------------
* Per chip (Intel's Loihi 2 technology brief, 2021): 128 neuro-cores, up to 1 million neurons,
  up to 120 million synapses. Lava's own compiler (lava-nc 0.10.0, ``Mapper``) places
  **120** logical neuro-cores per Loihi 2 chip; the mapper packs 120 per chip (below).
* Per core: 192 KB of SRAM per neuro-core, *flexibly partitioned* between synapses, neuron state
  and the rest. We read this figure in Tom's Hardware's report of the brief (the brief itself
  was not opened in this session); it is not a separate synaptic-memory size.
* Neurons per core: Intel publishes no per-core maximum for Loihi 2; 8192 = 2**20 / 128 is derived
  from "1 million neurons" (read as 2**20) over 128 cores.
* Fan-in / fan-out (input / output axons per core): **not published for Loihi 2**. Loihi 1's are
  4096 and 4096 (nengo-loihi's validator); we ASSUME the same for Loihi 2 by default (a
  conservative choice; Lava's PilotNet mapping on Loihi 2 suggests more fan-in per core is
  possible) and the mapper can run without them (``fan_in_axons_per_core=None``).
* Synapse storage: Loihi 2's synapse encodings are not published. The default (``shared``) is
  Loihi 2's convolutional (shared-weight) connectivity as Lava uses it for PilotNet's conv layers
  (Lava PR #341 "Conv manager": "support convolution feature of Loihi 2"; the PilotNet notebook's
  per-core table: conv cores with 2048-3168 neurons, 1-2 input axons and 81-2880 synapse entries,
  i.e. kernels, not per-connection lists): a core stores each incoming connection's kernel once
  (its output-channel slice; polyphase-folded for a x2 upsampled source, so folded synapse counts
  stay) and receives one axon per source core. The explicit-synapse encodings (``sparse``: one
  entry per non-zero synapse, what ``lava.proc.sparse.Sparse`` stores; ``dense``) follow Loihi 1's
  memory layout as nengo-loihi models it (``nengo_loihi/block.py`` ``SynapseConfig.bits_per_axon``)
  and keep Loihi 1's per-core axon limits: the conservative bound (see
  :func:`synaptic_memory_bits`).
* Which numbers are Loihi 1's: :data:`LOIHI1_LIMITS` (fan-in / fan-out axons per core, the
  per-axon header); every other limit is a Loihi 2 figure or derived from one.

Weights: Lava's bit-accurate ``Sparse``/``Dense`` use 8-bit weight mantissas
(``num_weight_bits=8``); in mixed-sign mode the value is an even integer in [-256, 254], i.e. an
int8 mantissa times 2 (``calibration/loihi_rules.py``). A weight therefore needs 8 bits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

from spikereg_neuro.hardware import STATE_BITS, WEIGHT_BITS, state_var_counts
from spikereg_neuro.profiler.constants import Constant

# ---------------------------------------------------------------------------------------- sources
INTEL_BRIEF = ("Intel Labs technology brief 'Taking Neuromorphic Computing to the Next Level with "
               "Loihi 2' (2021), Loihi 2 specifications")
TOMS_HARDWARE = ("Tom's Hardware, 'Intel Reveals 4nm Loihi 2 Neuromorphic Research Chip' (2021-09-30), "
                 "reporting the brief: 'Each core has its own 192KB of SRAM ... with programmable "
                 "partitioning' (read in its repost, geeks.fyi thread 16221; the brief's own table was "
                 "not opened in this session)")
LAVA_MAPPER = ("lava-nc 0.10.0 source: lava/magma/compiler/mapper.py (Mapper.map_cores: "
               "chip_idx = core_id // NUM_VIRTUAL_CORES_L3 for N3LogicalNeuroCore, the Loihi 2 core "
               "type) and lava/magma/compiler/subcompilers/constants.py (NUM_VIRTUAL_CORES_L3 = 120)")
NENGO_LOIHI_VALIDATE = ("nengo-loihi (Loihi 1) nengo_loihi/validate.py: N_MAX_COMPARTMENTS = 1024, "
                        "IN_AXONS_MAX = 4096, OUT_AXONS_MAX = 4096, MAX_SYNAPSE_BITS = 16384*64 "
                        "(= 128 KiB of synaptic memory per core)")
NENGO_LOIHI_SYNAPSE = ("nengo-loihi (Loihi 1) nengo_loihi/block.py SynapseConfig.bits_per_axon: per "
                       "synapse weight bits (+ index bits in the sparse format), per block of up to 64 "
                       "synapses of one axon a 4-bit + 6-bit header, rounded up to 64-bit words")
LAVA_CONV = ("lava-nc/lava pull request #341 'Conv manager' (2022-09-15): 'adds minor changes needed to "
             "support convolution feature of Loihi 2'; lava-dl PilotNet LIF benchmark notebook "
             "(tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb, read at commit 12f0402197), Lava's "
             "printed 'Per core distribution' on Loihi 2: conv cores of 2048, 2048, 2688, 2160, 3072 and 3168 "
             "neurons with 1-2 input axons (AxonIn) and 2880, 2160, 1620, 864, 81 and 0 synapse entries each")
LAVA_WEIGHTS = ("lava-nc 0.10.0 lava/proc/sparse/models.py and lava/proc/dense/models.py bit-accurate "
                "models: num_weight_bits = 8; lava/utils/weightutils.py: mixed-sign weights are even "
                "integers in [-256, 254] (see calibration/loihi_rules.py)")

# ---------------------------------------------------------------------------------------- numbers
#: neuro-cores per Loihi 2 chip as published (the mapper packs LAVA_CORES_PER_CHIP)
CORES_PER_CHIP_PUBLISHED = 128
#: neuro-cores per chip in Lava's own Loihi 2 mapper
LAVA_CORES_PER_CHIP = 120
NEURONS_PER_CHIP = 1_000_000
SYNAPSES_PER_CHIP = 120_000_000
#: 2**20 / 128 (derived)
NEURONS_PER_CORE = 8192
#: 192 KB per core read as 192 KiB (derived from the published "192KB")
CORE_MEMORY_BYTES = 192 * 1024
#: neurons per shared-kernel (convolutional) core: the most Lava placed on one Loihi 2 conv core
#: for PilotNet (a compiler's choice that ran on the chip, not a hardware maximum)
SHARED_NEURONS_PER_CORE = 3168
#: Loihi 1 axon limits, assumed for Loihi 2
FAN_IN_AXONS_PER_CORE = 4096
FAN_OUT_AXONS_PER_CORE = 4096
#: per-axon synapse-list header in the sparse and dense formats (4-bit format + 6-bit count)
AXON_HEADER_BITS = 10
#: state variables per neuron kind, under its model and Lava names (spikereg_neuro/hardware.py;
#: WEIGHT_BITS and STATE_BITS come from there too)
STATE_VARS = state_var_counts()

#: synapse encodings: ``shared`` (Loihi 2 convolutional connectivity, the default), ``sparse``
#: (explicit non-zero synapses: the conservative bound), ``dense``
ENCODINGS = ("shared", "sparse", "dense")
#: limits that are Loihi 1 figures (assumed for Loihi 2 because Loihi 2's are not published)
LOIHI1_LIMITS = ("fan_in_axons_per_core", "fan_out_axons_per_core", "axon_header_bits")

LIMIT_CONSTANTS: Dict[str, Constant] = {
    "cores_per_chip": Constant(
        LAVA_CORES_PER_CHIP, "cores",
        f"{LAVA_MAPPER}. Intel's brief publishes {CORES_PER_CHIP_PUBLISHED} neuro-cores per chip "
        f"({INTEL_BRIEF}); Lava's mapper assigns {LAVA_CORES_PER_CHIP} logical Loihi 2 cores per chip, "
        "and the mapper follows Lava.", "published"),
    "cores_per_chip_published": Constant(
        CORES_PER_CHIP_PUBLISHED, "cores", f"{INTEL_BRIEF}: 128 neuromorphic cores per chip.", "published"),
    "neurons_per_chip": Constant(
        NEURONS_PER_CHIP, "neurons", f"{INTEL_BRIEF}: up to 1 million neurons per chip.", "published"),
    "synapses_per_chip": Constant(
        SYNAPSES_PER_CHIP, "synapses",
        f"{INTEL_BRIEF}: up to 120 million synapses per chip. Checked against the synapses STORED by "
        "the chosen encoding (a maximum reached with the most compact encodings).", "published"),
    "neurons_per_core": Constant(
        NEURONS_PER_CORE, "neurons",
        "DERIVED: 2**20 / 128 = 8192, reading the brief's 'up to 1 million neurons per chip' as 2**20 "
        "over its 128 cores. Intel publishes no per-core neuron maximum for Loihi 2; the real number "
        "depends on each neuron model's state size.", "derived"),
    "shared_neurons_per_core": Constant(
        SHARED_NEURONS_PER_CORE, "neurons",
        f"ASSUMED cap per shared-kernel (convolutional) core: the largest neuron count Lava placed on one "
        f"Loihi 2 conv core for PilotNet ({LAVA_CONV}). Below the derived 8192; a compiler's choice, not a "
        "published hardware maximum. The mapper may use fewer to balance synaptic ops per core.", "assumed"),
    "memory_bytes_per_core": Constant(
        CORE_MEMORY_BYTES, "bytes",
        f"{TOMS_HARDWARE}. '192KB' is read as 192 x 1024 bytes (derived). This SRAM is shared by "
        "synapses, neuron state, routing tables and microcode; the mapper budgets synapses + neuron "
        "state against it (optimistic: routing tables and microcode are not counted, see "
        "memory_reserved_bytes).", "derived"),
    "memory_reserved_bytes": Constant(
        0, "bytes",
        "ASSUMED 0: the per-core SRAM taken by axon routing tables and neuron microcode is not "
        "published; set it to reserve memory for them.", "assumed"),
    "fan_in_axons_per_core": Constant(
        FAN_IN_AXONS_PER_CORE, "axons",
        f"LOIHI 1 figure, ASSUMED for Loihi 2: {NENGO_LOIHI_VALIDATE}. Loihi 2's input-axon limit is not "
        "published. Enforced on the explicit-synapse encodings (one axon per source neuron); a shared-kernel "
        f"core receives one axon per source core (1-2 for PilotNet: {LAVA_CONV}), reported, far below it.",
        "assumed"),
    "fan_out_axons_per_core": Constant(
        FAN_OUT_AXONS_PER_CORE, "axons",
        f"LOIHI 1 figure, ASSUMED for Loihi 2: {NENGO_LOIHI_VALIDATE}. Loihi 2's output-axon limit is not "
        "published. Enforced on the explicit-synapse encodings (per neuron, one axon per destination core); "
        "for shared-kernel cores the destination cores per core are reported.", "assumed"),
    "weight_bits": Constant(WEIGHT_BITS, "bits", f"{LAVA_WEIGHTS}.", "published"),
    "axon_header_bits": Constant(
        AXON_HEADER_BITS, "bits",
        f"LOIHI 1 layout, ASSUMED: Loihi 1's synapse memory layout as modelled by {NENGO_LOIHI_SYNAPSE}; one "
        "header per (input axon, core), 64-bit word rounding not modelled (explicit-synapse encodings).",
        "assumed"),
    "state_bits": Constant(
        STATE_BITS, "bits",
        "ASSUMED storage per neuron state variable: lava-nc's bit-accurate ATRLIF/LIF models keep "
        "24-bit states (calibration/loihi_rules.py STATE_BITS); ATRLIF has 4 (i, v, theta, r), the "
        "integrator read-out 2. Loihi 2 allocates 0-4096 bytes per neuron by model (brief).",
        "assumed"),
}


def index_bits(neurons_in_core: int) -> int:
    """Bits of a target-neuron index inside a core of ``neurons_in_core`` neurons (>= 1)."""
    return max(1, math.ceil(math.log2(max(int(neurons_in_core), 2))))


def state_bytes_per_neuron(neuron_kind: str) -> float:
    """Neuron state bytes (``state variables x 24 bits / 8``)."""
    return STATE_VARS.get(str(neuron_kind), 2) * STATE_BITS / 8


def synaptic_memory_bits(encoding: str, *, synapses, axons, neurons, kernel_weights,
                         weight_bits: int = WEIGHT_BITS, header_bits: int = AXON_HEADER_BITS):
    """Synaptic memory of one core (bits); array arguments broadcast (one value per core).

    ``sparse`` (default)
        one entry per stored synapse: ``weight_bits + index_bits(neurons)`` (the target neuron's
        index in the core), plus ``header_bits`` per input axon. What a ``lava.proc.sparse.Sparse``
        lowering of the convolutions stores: only non-zero weights.
    ``dense``
        per input axon a weight for EVERY neuron of the core (zeros too) plus its header:
        ``axons x (neurons x weight_bits + header_bits)``.
    ``shared`` (default)
        Loihi 2 convolutional (shared-weight) connectivity: each incoming connection's kernel
        slice for the core's output channels is stored once, zeros included,
        ``kernel_weights x weight_bits`` (``kernel_weights``: input channels x the core's output
        channels x folded taps, 27 for a 3^3 kernel, 64 polyphase-folded taps for a x2 upsampled
        source). Lava does this for 2D convs on Loihi 2 (PilotNet); for 3D kernels it is ASSUMED
        to work alike (see docs/deployment.md).
    """
    import numpy as np

    if encoding == "sparse":
        n = np.maximum(np.asarray(neurons, dtype=np.float64), 2.0)
        idx = np.maximum(np.ceil(np.log2(n) - 1e-12), 1).astype(np.int64)  # == index_bits, vectorised
        return np.asarray(synapses, dtype=np.int64) * (weight_bits + idx) + np.asarray(axons) * header_bits
    if encoding == "dense":
        return np.asarray(axons, dtype=np.int64) * (np.asarray(neurons) * weight_bits + header_bits)
    if encoding == "shared":
        return np.asarray(kernel_weights, dtype=np.int64) * weight_bits
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


@dataclass(frozen=True)
class CoreLimits:
    """The limits a mapping must respect (defaults: :data:`LIMIT_CONSTANTS`).

    ``fan_in_axons_per_core`` / ``fan_out_axons_per_core`` = None: not enforced (still reported).
    """

    neurons_per_core: int = NEURONS_PER_CORE
    shared_neurons_per_core: int = SHARED_NEURONS_PER_CORE
    memory_bytes_per_core: int = CORE_MEMORY_BYTES
    memory_reserved_bytes: int = 0
    fan_in_axons_per_core: Optional[int] = FAN_IN_AXONS_PER_CORE
    fan_out_axons_per_core: Optional[int] = FAN_OUT_AXONS_PER_CORE
    cores_per_chip: int = LAVA_CORES_PER_CHIP
    neurons_per_chip: int = NEURONS_PER_CHIP
    synapses_per_chip: int = SYNAPSES_PER_CHIP
    encoding: str = "shared"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "encoding" and v is not None and int(v) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {v}")
        if self.neurons_per_core < 1 or self.cores_per_chip < 1:
            raise ValueError("neurons_per_core and cores_per_chip must be >= 1")
        if self.memory_budget_bytes <= 0:
            raise ValueError("memory_reserved_bytes leaves no memory per core")

    @property
    def neuron_cap(self) -> int:
        """Neurons per core the mapper may place: ``shared_neurons_per_core`` (at most
        ``neurons_per_core``) for shared-kernel cores, ``neurons_per_core`` otherwise."""
        if self.encoding == "shared":
            return min(int(self.neurons_per_core), int(self.shared_neurons_per_core))
        return int(self.neurons_per_core)

    @property
    def explicit_axons(self) -> bool:
        """True when every source neuron needs its own input axon (the explicit-synapse
        encodings), so the fan-in / fan-out limits bind; a shared-kernel core gets one axon per
        source core instead."""
        return self.encoding != "shared"

    @property
    def memory_budget_bytes(self) -> int:
        """Bytes per core available to synapses + neuron state."""
        return int(self.memory_bytes_per_core) - int(self.memory_reserved_bytes)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> Dict[str, Dict[str, Any]]:
        """Each limit with its value as used here and its source (``LIMIT_CONSTANTS``)."""
        out = {}
        for f in fields(self):
            if f.name == "encoding":
                continue
            c = LIMIT_CONSTANTS[f.name].to_dict()
            c["value"] = getattr(self, f.name)
            c["enforced"] = getattr(self, f.name) is not None
            if f.name in ("fan_in_axons_per_core", "fan_out_axons_per_core") and not self.explicit_axons:
                c["enforced"] = False
            if f.name == "shared_neurons_per_core" and self.encoding != "shared":
                c["enforced"] = False
            if getattr(self, f.name) != LIMIT_CONSTANTS[f.name].value:
                c["kind"] = "override" if getattr(self, f.name) is not None else "disabled"
            c["loihi1"] = f.name in LOIHI1_LIMITS
            out[f.name] = c
        for k in ("cores_per_chip_published", "weight_bits", "axon_header_bits", "state_bits"):
            out[k] = {**LIMIT_CONSTANTS[k].to_dict(), "enforced": False, "loihi1": k in LOIHI1_LIMITS}
        return out


__all__ = ["CoreLimits", "LIMIT_CONSTANTS", "ENCODINGS", "LOIHI1_LIMITS", "SHARED_NEURONS_PER_CORE", "index_bits", "state_bytes_per_neuron",
           "synaptic_memory_bits", "NEURONS_PER_CORE", "CORE_MEMORY_BYTES", "LAVA_CORES_PER_CHIP",
           "CORES_PER_CHIP_PUBLISHED", "NEURONS_PER_CHIP", "SYNAPSES_PER_CHIP", "FAN_IN_AXONS_PER_CORE",
           "FAN_OUT_AXONS_PER_CORE", "WEIGHT_BITS", "AXON_HEADER_BITS", "STATE_BITS", "STATE_VARS"]
