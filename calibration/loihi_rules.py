"""Loihi 2 fixed-point rules, as lava-nc's bit-accurate process models define them.

This is the ONE place where bit widths, shifts, rounding and overflow behaviour live; the
quantizer, the calibration, the emulator, the net.h5 validator (and the Lava backend) use it.
Every constant names the lava-nc 0.10.0 / lava-dl 0.6.0 source it was read from (paths relative
to ``site-packages/lava``). The functions accept numpy arrays or torch integer tensors.

Units. A neuron state (current ``i``, voltage ``v``, threshold ``theta``, refractory ``r``) is
held as a 24-bit integer. Synaptic input ``a_in`` (the weighted sum of one step, after the
connection's weight exponent) enters the current left-shifted by :data:`ACT_SHIFT`; the
threshold mantissa ``theta_0`` is left-shifted by :data:`THRESHOLD_SHIFT`. lava-dl SLAYER's
integer forward pass uses the same scale: weight scale ``w_scale = 64`` and state scale
``s_scale = 64 * 64 = 4096`` (``slayer/neuron/alif.py`` ``Neuron.__init__``), so
``SLAYER state * 4096 == ATRLIF state`` for binary-spike layers with ``weight_exp = 0``.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from spikereg_neuro.hardware import STATE_BITS, WEIGHT_BITS

ArrayLike = Union[np.ndarray, torch.Tensor]

# ---------------------------------------------------------------------------- synaptic weights
#: weight mantissa bits. lava/proc/dense/models.py AbstractPyDenseModelBitAcc.run_spk (and
#: proc/sparse/models.py AbstractPySparseModelBitAcc.run_spk): ``num_weight_bits`` defaults to 8
#: and ``clip_weights(..., num_bits=8)``: ``WEIGHT_BITS`` (spikereg_neuro/hardware.py).
#: lava/utils/weightutils.py clip_weights: mixed-sign weights are clipped to
#: ``[-2**8, 2**8 - 1]``; then truncate_weights drops ``8 - num_weight_bits + 1`` = 1 LSB in
#: mixed-sign mode (``(w >> 1) << 1``). So the values a mixed-sign connection really uses are the
#: even integers of [-256, 254]: an 8-bit signed mantissa ``m8 in [-128, 127]`` times 2 (the
#: "isMixed" factor of the Dense docstring, proc/dense/process.py). SLAYER's
#: ``Neuron.quantize_8bit`` (slayer/neuron/base.py: step ``2 / w_scale``, clamp
#: ``[-256, 254] / w_scale``) produces exactly this set when descaled.
WEIGHT_MIN = -(2 ** WEIGHT_BITS)          # -256
WEIGHT_MAX = 2 ** WEIGHT_BITS - 2         # 254 (255 would lose its LSB in mixed-sign mode)
#: mixed-sign LSB truncation (weightutils.truncate_weights: ``num_truncate_bits = 8 - 8 + 1``)
WEIGHT_MIXED_TRUNCATE_BITS = 1
#: weight exponent range. lava-nc's fixed Dense/Sparse models accept any int and shift the
#: accumulated sum (``np.left_shift(a_accum, weight_exp)`` / ``np.right_shift(a_accum,
#: -weight_exp)``); the range is Loihi's 4-bit signed ``wgtExp`` field (lava-dl netx carries
#: ``wgtExp``, lib/dl/netx/utils.py) - we keep to it so a net.h5 also maps to hardware.
WEIGHT_EXP_MIN = -8
WEIGHT_EXP_MAX = 7
#: nominal width of a connection's output (``a_out``/``a_buff`` LavaPyType precision=16 in
#: proc/dense/models.py and proc/sparse/models.py; ATRLIF ``a_in`` precision=16). The Python
#: models do NOT saturate or wrap it (int32 arrays); calibration reports its peak against it.
ACTIVATION_BITS = 16

# ---------------------------------------------------------------------------- neuron (ATRLIF)
#: lava/proc/atrlif/models.py PyATRLIFModelFixed.__init__: ``decay_shift = 12``,
#: ``decay_unity = 2**12``: decays are 12-bit fractions of 4096, applied as
#: ``sign(x) * (|x * (4096 - d)| >> 12)``.
DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT            # 4096
#: PyATRLIFModelFixed.__init__ ``ds_offset = 1``: added to the CURRENT decay only
#: (``decay_const_i = delta_i * 4096 + 1``; voltage/threshold/refractory have no offset). Same
#: register as PyLifModelBitAcc (proc/lif/models.py AbstractPyLifModelFixed: ``ds_offset = 1``,
#: ``dm_offset = 0``); lava-dl netx maps SLAYER's ``iDecay`` to LIF ``du = iDecay - 1``
#: (lib/dl/netx/hdf5.py) for the same reason.
CURRENT_DECAY_OFFSET = 1
#: PyATRLIFModelFixed.__init__ ``act_unity = 2**6``: synaptic input is MSB-aligned by 6 bits
#: (``activation_in * act_unity``); LIF: ``act_shift = 6``.
ACT_SHIFT = 6
#: PyATRLIFModelFixed.__init__ ``theta_unity = 2**6`` / scale_threshold: ``theta_0`` and
#: ``theta_step`` are multiplied by 64 once (LIF: ``vth_shift = 6``, ``np.left_shift(vth, 6)``).
THRESHOLD_SHIFT = 6
#: PyATRLIFModelFixed: ``iv_bitwidth = 24`` (``STATE_BITS``, spikereg_neuro/hardware.py),
#: ``max_iv_val = 2**23``.
STATE_MAX = 1 << (STATE_BITS - 1)         # 2**23
#: PyATRLIFModelFixed.subthr_dynamics: voltage is clipped (saturates) to ``[-(2**23) + 1,
#: 2**23 - 1]``.
VOLTAGE_MIN = -STATE_MAX + 1
VOLTAGE_MAX = STATE_MAX - 1
#: PyATRLIFModelFixed LavaPyTypes: ``theta_0``/``theta_step`` uint16 precision=12,
#: ``delta_*`` uint16 precision=12, ``bias_mant`` int16 precision=13, ``bias_exp`` precision=3.
THETA_BITS = 12
THETA_MAX = (1 << THETA_BITS) - 1         # 4095
BIAS_MANT_BITS = 13
BIAS_EXP_BITS = 3
#: threshold mantissa of a non-spiking integrator: ``64 * 2**17 = 2**23`` exceeds the saturated
#: voltage ``2**23 - 1``, so ``v - r >= theta`` never holds. lava-dl netx uses the same value for
#: its non-spiking output layers (lib/dl/netx/hdf5.py ``'vThMant': 1 << 18 - 1``, which Python
#: parses as ``1 << 17``). It is outside the nominal 12-bit range on purpose.
NON_SPIKING_THETA_0 = 1 << 17

# ---------------------------------------------------------------------------- SLAYER (training)
#: lava-dl slayer/neuron/alif.py Neuron.__init__: ``w_scale = scale = 1 << 6``,
#: ``s_scale = scale * (1 << 6)``, ``p_scale = 1 << 12``.
SLAYER_W_SCALE = 1 << 6
SLAYER_S_SCALE = 1 << 12
SLAYER_P_SCALE = 1 << 12

# ---------------------------------------------------------------------------- input encoding
#: Loihi 2 graded spikes carry up to 24-bit payloads (lava Dense/Sparse ``num_message_bits``,
#: proc/dense/process.py); lava's bit-accurate connections multiply payload by weight
#: (``weights.dot(s_in)`` when ``num_message_bits > 0``).
MAX_PAYLOAD_BITS = 24


# ============================================================================ helpers
def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def sign_magnitude_shift(x: ArrayLike, bits: int) -> ArrayLike:
    """``sign(x) * (|x| >> bits)``: right shift rounding toward zero.

    lava/proc/atrlif/models.py (``np.sign(x) * np.right_shift(np.abs(x), 12)``) and lava-dl
    slayer/utils/int_utils.py ``right_shift_to_zero`` compute the same thing.
    """
    if _is_torch(x):
        return torch.sign(x) * (x.abs() >> bits)
    x = np.asarray(x)
    return np.sign(x) * np.right_shift(np.abs(x), bits)


def decay(x: ArrayLike, multiplier: int) -> ArrayLike:
    """One leak step: ``sign(x * m) * (|x * m| >> 12)`` with the integer multiplier ``m = 4096 - d``."""
    return sign_magnitude_shift(x * int(multiplier), DECAY_SHIFT)


def shift_activation(a_accum: ArrayLike, weight_exp: int) -> ArrayLike:
    """A connection's output for one step: the accumulated weighted sum shifted by ``weight_exp``.

    lava/proc/dense/models.py and proc/sparse/models.py (bit-accurate): ``np.left_shift(a, e)``
    for ``e > 0`` else ``np.right_shift(a, -e)`` - an ARITHMETIC shift, i.e. floor division by
    ``2**-e`` (rounds toward minus infinity, unlike the decays), applied to the sum of one
    connection process, not to each weight.
    """
    e = int(weight_exp)
    if e > 0:
        return a_accum << e
    if e < 0:
        return a_accum >> (-e)
    return a_accum


def wrap_current(x: ArrayLike) -> ArrayLike:
    """24-bit current overflow exactly as PyATRLIFModelFixed.subthr_dynamics does it.

    ``x > 2**23 -> x - 2**24``; then ``(that) <= -2**23 -> x + 2**24`` (the second test looks at
    the once-wrapped value but adds to the original one). One wrap only: the valid result range is
    ``[-2**23 + 1, 2**23]`` (note: ``+2**23`` itself is kept, as lava keeps it).
    """
    m = STATE_MAX
    if _is_torch(x):
        w = torch.where(x > m, x - 2 * m, x)
        return torch.where(w <= -m, x + 2 * m, w)
    w = np.where(x > m, x - 2 * m, x)
    return np.where(w <= -m, x + 2 * m, w)


def saturate_voltage(x: ArrayLike) -> ArrayLike:
    """24-bit voltage saturation of PyATRLIFModelFixed: clip to ``[-(2**23) + 1, 2**23 - 1]``."""
    if _is_torch(x):
        return x.clamp(VOLTAGE_MIN, VOLTAGE_MAX)
    return np.clip(x, VOLTAGE_MIN, VOLTAGE_MAX)


def scale_threshold(theta_mant: int) -> int:
    """State-scale threshold of a mantissa (PyATRLIFModelFixed.scale_threshold: ``* 2**6``)."""
    return int(theta_mant) << THRESHOLD_SHIFT


# ---------------------------------------------------------------------------- decays
def current_decay_multiplier(delta_i: float) -> int:
    """Integer multiplier ``4096 - (delta_i * 4096 + 1)`` of PyATRLIFModelFixed's current decay."""
    return _exact_int(DECAY_UNITY - (float(delta_i) * DECAY_UNITY + CURRENT_DECAY_OFFSET), "delta_i")


def decay_multiplier(delta: float, name: str = "delta") -> int:
    """Integer multiplier ``4096 - delta * 4096`` of the voltage / threshold / refractory decays."""
    return _exact_int(DECAY_UNITY - float(delta) * DECAY_UNITY, name)


def _exact_int(x: float, name: str) -> int:
    if not np.isfinite(x) or x != int(x):
        raise ValueError(f"{name} must be a multiple of 1/4096 so that the decay multiplier is an "
                         f"integer (got multiplier {x})")
    m = int(x)
    if not 0 <= m <= DECAY_UNITY:
        raise ValueError(f"{name} gives decay multiplier {m}, outside [0, {DECAY_UNITY}]")
    return m


def atrlif_deltas_from_slayer(i_decay: int, v_decay: int, th_decay: int, ref_decay: int) -> dict:
    """ATRLIF ``delta_*`` (fractions, the process constructor's units) from SLAYER's 12-bit decays.

    SLAYER (slayer/neuron/dynamics/leaky_integrator.py ``_li_dynamics_fwd``) multiplies by
    ``4096 - decay``; PyATRLIFModelFixed multiplies the current by ``4096 - (delta_i*4096 + 1)``
    and the others by ``4096 - delta*4096``. So ``delta_i = (iDecay - 1) / 4096`` and
    ``delta_x = xDecay / 4096`` give identical multipliers (all are dyadic, exact in float64).
    """
    for name, d in (("iDecay", i_decay), ("vDecay", v_decay), ("thDecay", th_decay), ("refDecay", ref_decay)):
        if not 0 <= int(d) <= DECAY_UNITY:
            raise ValueError(f"SLAYER {name} must be in [0, 4096], got {d}")
    if int(i_decay) < 1:
        raise ValueError("iDecay = 0 (no current leak) needs delta_i = -1/4096, which the ATRLIF "
                         "process cannot take; the ds_offset makes the current always leak by >= 1/4096")
    return {
        "delta_i": (int(i_decay) - CURRENT_DECAY_OFFSET) / DECAY_UNITY,
        "delta_v": int(v_decay) / DECAY_UNITY,
        "delta_theta": int(th_decay) / DECAY_UNITY,
        "delta_r": int(ref_decay) / DECAY_UNITY,
    }


# ---------------------------------------------------------------------------- weights
def quantize_weight(w: ArrayLike, w_scale: int = SLAYER_W_SCALE) -> np.ndarray:
    """Float SLAYER weights -> Lava weight integers (even, in [-256, 254]).

    The same grid as SLAYER's ``quantize_8bit(w, descale=True)``: ``round(w * w_scale / 2) * 2``
    (torch.round: half to even), clamped.
    """
    t = torch.as_tensor(w, dtype=torch.float64)
    q = torch.round(t * (w_scale / 2.0)) * 2.0
    return q.clamp(WEIGHT_MIN, WEIGHT_MAX).to(torch.int64).numpy()


def lava_effective_weights(w: np.ndarray, num_weight_bits: int = WEIGHT_BITS) -> np.ndarray:
    """The weights lava's bit-accurate Dense/Sparse really use (clip_weights + truncate_weights).

    Mirrors lava/utils/weightutils.py for the sign mode ``determine_sign_mode`` picks.
    """
    w = np.asarray(w).astype(np.int64)
    mixed = w.min() < 0 < w.max()
    inhibitory = w.max() <= 0 and w.min() < 0
    x = -w if inhibitory else w.copy()
    lo = -(2 ** WEIGHT_BITS) if mixed else 0
    x = np.clip(x, lo, 2 ** WEIGHT_BITS - 1)
    drop = WEIGHT_BITS - num_weight_bits + int(mixed)
    x = (x >> drop) << drop
    return -x if inhibitory else x


def sign_mode(w: np.ndarray) -> str:
    """lava determine_sign_mode as a string: 'excitatory', 'inhibitory' or 'mixed'."""
    w = np.asarray(w)
    if w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def check_weights(w: np.ndarray, what: str = "weight") -> None:
    """Raise ValueError unless ``w`` is integer, in [-256, 254] and unchanged by lava's truncation."""
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"{what}: weights must be integers, got dtype {w.dtype}")
    if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
        raise ValueError(f"{what}: weight out of range [{WEIGHT_MIN}, {WEIGHT_MAX}] "
                         f"(got [{int(w.min())}, {int(w.max())}])")
    if w.size and not np.array_equal(lava_effective_weights(w), w):
        raise ValueError(f"{what}: odd weight values would lose their LSB in lava's mixed-sign "
                         "truncation (weights must be even)")


def check_weight_exp(e: int, what: str = "weight_exp") -> None:
    if int(e) != e or not WEIGHT_EXP_MIN <= int(e) <= WEIGHT_EXP_MAX:
        raise ValueError(f"{what}: weight exponent {e} out of range [{WEIGHT_EXP_MIN}, {WEIGHT_EXP_MAX}]")


def state_headroom_bits(peak: float) -> float:
    """``log2(2**23 / peak)``: bits left before a 24-bit state overflows (inf for 0)."""
    return float("inf") if peak <= 0 else float(np.log2(STATE_MAX / peak))


def rules_summary() -> dict:
    """The constants, for provenance in net.h5 and the report."""
    return {
        "weight_bits": WEIGHT_BITS, "weight_min": WEIGHT_MIN, "weight_max": WEIGHT_MAX,
        "weight_exp_range": [WEIGHT_EXP_MIN, WEIGHT_EXP_MAX], "activation_bits": ACTIVATION_BITS,
        "decay_shift": DECAY_SHIFT, "current_decay_offset": CURRENT_DECAY_OFFSET,
        "act_shift": ACT_SHIFT, "threshold_shift": THRESHOLD_SHIFT, "state_bits": STATE_BITS,
        "voltage_range": [VOLTAGE_MIN, VOLTAGE_MAX], "theta_bits": THETA_BITS,
        "non_spiking_theta_0": NON_SPIKING_THETA_0,
        "slayer_w_scale": SLAYER_W_SCALE, "slayer_s_scale": SLAYER_S_SCALE,
    }
