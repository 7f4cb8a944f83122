"""Model configuration (network shape, time windows, neurons, residual policy)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

from ..dataclass_io import DictIO
from .neuron import NeuronConfig


#: encoder levels a config may have (3: the fewest with a dec1 for readout_levels 2; 6 pools to 1/32)
MIN_LEVELS, MAX_LEVELS = 3, 6


@dataclass
class ModelConfig(DictIO):
    """SpikeReg network and policy hyper-parameters.

    ``enc_windows[l]`` is the number of time steps of encoder level ``l`` (decreasing with depth:
    level ``l + 1`` sees the last ``enc_windows[l + 1]`` steps of level ``l``); every decoder level
    and the read-out run for ``dec_window`` steps. ``scales`` gives, per residual iteration, the
    downsampling factor of that iteration (coarse to fine), so ``len(scales)`` is the number of
    iterations. ``integration_steps > 0`` reads the network's output as a stationary velocity
    field and takes its exponential by that many scaling-and-squaring steps on the host, per
    iteration, before composition (VoxelMorph's diffeomorphic read-out; 0: the output is the
    displacement itself).

    ``input_once``: the graded image input is sent once, at the first step of ``enc0``'s window,
    and ``enc0``'s neurons keep it as their current (``current_decay`` = 1/4096, SLAYER's
    ``iDecay = 1``, the smallest leak Loihi 2's ATRLIF has): the synapses of the first layer work
    once per patch instead of at every step. ``False`` re-sends the input at every step.
    """

    _keys_label = "model config keys"

    in_channels: int = 2
    enc_channels: Tuple[int, ...] = (8, 16, 32, 32)
    dec_channels: Tuple[int, ...] = (32, 16, 8)
    enc_windows: Tuple[int, ...] = (8, 6, 4, 4)
    dec_window: int = 4
    input_bits: int = 8
    readout_scale: float = 0.1  # field (voxels) = readout_scale x integrator voltage / T
    readout_init: float = 0.5   # std of the read-out's initial weights, in 8-bit quanta
    weight_gain: float = 3.0    # initial weight std = weight_gain / sqrt(fan_in)
    readout_levels: int = 2     # 1: read-out from dec0; 2: from dec0 and up2(dec1) spikes
    integration_steps: int = 0  # 0: read-out = displacement; n: velocity, exp by n squarings (host)
    input_once: bool = False    # True: the image input is sent at enc0's first step only (see below)
    # False: float weights in every layer, no 8-bit grid (a diagnostic, not deployable:
    # calibration refuses such a model because its exported weights are not integers)
    quantize_weights: bool = True
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    scales: Tuple[int, ...] = (2, 1)

    def __post_init__(self) -> None:
        for name in ("in_channels", "dec_window", "input_bits", "readout_levels", "integration_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"model.{name} must be an integer, got {v!r} ({type(v).__name__})")
        for name in ("input_once", "quantize_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("readout_scale", "readout_init", "weight_gain"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ValueError(f"model.{name} must be a number, got {v!r} ({type(v).__name__})")
        for name in ("enc_channels", "dec_channels", "enc_windows", "scales"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise ValueError(f"model.{name} must be a list of integers, got {v!r}")
        if any(c < 1 for c in (*self.enc_channels, *self.dec_channels)) or self.in_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got in {self.in_channels}, enc {self.enc_channels}, "
                             f"dec {self.dec_channels}")
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        self.dec_channels = tuple(int(c) for c in self.dec_channels)
        self.enc_windows = tuple(int(t) for t in self.enc_windows)
        self.scales = tuple(int(s) for s in self.scales)
        if isinstance(self.neuron, dict):
            self.neuron = NeuronConfig.from_dict(self.neuron)
        L = len(self.enc_channels)
        if not MIN_LEVELS <= L <= MAX_LEVELS:
            raise ValueError(f"enc_channels needs {MIN_LEVELS} to {MAX_LEVELS} entries (one per level), "
                             f"got {self.enc_channels}")
        if len(self.enc_windows) != L:
            raise ValueError(f"enc_windows needs one entry per encoder level ({L}), got {self.enc_windows}")
        if len(self.dec_channels) != L - 1:
            raise ValueError(f"dec_channels needs {L - 1} entries (decoder levels {L - 2} down to 0) for "
                             f"{L} encoder levels, got {self.dec_channels}")
        if any(t < 1 for t in self.enc_windows) or self.dec_window < 1:
            raise ValueError("time windows must be >= 1 step")
        if any(a < b for a, b in zip(self.enc_windows, self.enc_windows[1:])):
            raise ValueError(f"encoder time windows must not increase with depth, got {self.enc_windows}")
        if self.dec_window > min(self.enc_windows):
            raise ValueError(f"dec_window ({self.dec_window}) must be <= every encoder window "
                             f"{self.enc_windows} (skips feed their last dec_window steps)")
        if not self.scales or any(s < 1 or (s & (s - 1)) for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of powers of two, got {self.scales}")
        if self.readout_init < 0:
            raise ValueError(f"readout_init must be >= 0 (quanta), got {self.readout_init}")
        if self.readout_levels not in (1, 2):
            raise ValueError(f"readout_levels must be 1 (dec0) or 2 (dec0 and up2(dec1)), got {self.readout_levels}")
        if (isinstance(self.integration_steps, bool) or int(self.integration_steps) != self.integration_steps
                or not 0 <= self.integration_steps <= 16):
            raise ValueError("integration_steps must be an integer in [0, 16] (0: the read-out is the "
                             f"displacement), got {self.integration_steps!r}")
        self.integration_steps = int(self.integration_steps)
        if not 1 <= self.input_bits <= 24:
            raise ValueError(f"input_bits must be in [1, 24], got {self.input_bits}")

    @property
    def iterations(self) -> int:
        return len(self.scales)

    @property
    def levels(self) -> int:
        """Encoder levels (``len(enc_channels)``); ``levels - 1`` of them are stride 2."""
        return len(self.enc_channels)

    @property
    def downsampling(self) -> int:
        """The network's total stride, ``2 ** (levels - 1)``: its input sizes must be multiples of it."""
        return 2 ** (self.levels - 1)

    @property
    def size_multiple(self) -> int:
        """Full-resolution sizes must be divisible by this (:attr:`downsampling` x the coarsest scale)."""
        return self.downsampling * max(self.scales)

    @classmethod
    def from_stored(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """A model config recorded by an earlier version (a checkpoint's ``model_config``): a
        key it lacks means what it meant when it was written, :data:`STORED_DEFAULTS`, not
        today's default (every config this version writes names every key)."""
        d = dict(d)
        for k, v in STORED_DEFAULTS.items():
            if k != "neuron":
                d.setdefault(k, v)
        neuron = d.get("neuron")
        if neuron is None or isinstance(neuron, Mapping):
            d["neuron"] = {**STORED_DEFAULTS["neuron"], **(neuron or {})}
        return cls.from_dict(d)


#: what an absent key of a stored model config stands for: the values the dataclass had before
#: its defaults became the packaged config's (2026-12), so older checkpoints load unchanged
STORED_DEFAULTS: Dict[str, Any] = {"readout_scale": 0.5, "weight_gain": 8.0, "readout_levels": 1,
                                   "neuron": {"graded_spike": False}}
