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
* Synapse storage: Loihi 2's synapse encodings are not published. We model them on Loihi 1's
  published memory layout as nengo-loihi models it (``nengo_loihi/block.py``
  ``SynapseConfig.bits_per_axon``): per synapse an 8-bit weight plus a target index in the sparse
  format, per input axon a small header. Three encodings are offered (see
  :func:`synaptic_memory_bits`).

Weights: Lava's bit-accurate ``Sparse``/``Dense`` use 8-bit weight mantissas
(``num_weight_bits=8``); in mixed-sign mode the value is an even integer in [-256, 254], i.e. an
int8 mantissa times 2 (``calibration/loihi_rules.py``). A weight therefore needs 8 bits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

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
#: Loihi 1 axon limits, assumed for Loihi 2
FAN_IN_AXONS_PER_CORE = 4096
FAN_OUT_AXONS_PER_CORE = 4096
#: weight mantissa bits
WEIGHT_BITS = 8
#: per-axon synapse-list header in the sparse and dense formats (4-bit format + 6-bit count)
AXON_HEADER_BITS = 10
#: bits per neuron state variable (lava-nc bit-accurate ATRLIF/LIF: 24-bit states)
STATE_BITS = 24
#: state variables per neuron kind (ATRLIF / SLAYER ALIF: i, v, theta, r; integrator: i, v)
STATE_VARS = {"atrlif": 4, "alif": 4, "cuba": 2, "integrator": 2}

ENCODINGS = ("sparse", "dense", "shared")

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
        f"ASSUMED from Loihi 1: {NENGO_LOIHI_VALIDATE}. Loihi 2's input-axon limit is not published.",
        "assumed"),
    "fan_out_axons_per_core": Constant(
        FAN_OUT_AXONS_PER_CORE, "axons",
        f"ASSUMED from Loihi 1: {NENGO_LOIHI_VALIDATE}. Loihi 2's output-axon limit is not published.",
        "assumed"),
    "weight_bits": Constant(WEIGHT_BITS, "bits", f"{LAVA_WEIGHTS}.", "published"),
    "axon_header_bits": Constant(
        AXON_HEADER_BITS, "bits",
        f"ASSUMED from Loihi 1's synapse memory layout as modelled by {NENGO_LOIHI_SYNAPSE}; one "
        "header per (input axon, core), 64-bit word rounding not modelled.", "assumed"),
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
    ``shared``
        convolutional weight sharing: the kernel slice of the core's output channels is stored
        once, ``kernel_weights x weight_bits`` (ASSUMED to exist on Loihi 2 for 3D kernels; Lava's
        PilotNet mapping implies shared 2D conv weights, see docs/deployment.md).
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
    memory_bytes_per_core: int = CORE_MEMORY_BYTES
    memory_reserved_bytes: int = 0
    fan_in_axons_per_core: Optional[int] = FAN_IN_AXONS_PER_CORE
    fan_out_axons_per_core: Optional[int] = FAN_OUT_AXONS_PER_CORE
    cores_per_chip: int = LAVA_CORES_PER_CHIP
    neurons_per_chip: int = NEURONS_PER_CHIP
    synapses_per_chip: int = SYNAPSES_PER_CHIP
    encoding: str = "sparse"

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
            if getattr(self, f.name) != LIMIT_CONSTANTS[f.name].value:
                c["kind"] = "override" if getattr(self, f.name) is not None else "disabled"
            out[f.name] = c
        for k in ("cores_per_chip_published", "weight_bits", "axon_header_bits", "state_bits"):
            out[k] = {**LIMIT_CONSTANTS[k].to_dict(), "enforced": False}
        return out


__all__ = ["CoreLimits", "LIMIT_CONSTANTS", "ENCODINGS", "index_bits", "state_bytes_per_neuron",
           "synaptic_memory_bits", "NEURONS_PER_CORE", "CORE_MEMORY_BYTES", "LAVA_CORES_PER_CHIP",
           "CORES_PER_CHIP_PUBLISHED", "NEURONS_PER_CHIP", "SYNAPSES_PER_CHIP", "FAN_IN_AXONS_PER_CORE",
           "FAN_OUT_AXONS_PER_CORE", "WEIGHT_BITS", "AXON_HEADER_BITS", "STATE_BITS", "STATE_VARS"]
