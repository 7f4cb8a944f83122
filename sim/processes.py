"""What the backend adds to lava-nc: one process, ``WindowedATRLIF`` (lava-nc's ATRLIF with a
time window and a voltage port), and a faster model of an existing one (``DelaySparse``).

WindowedATRLIF, why. The emulator's layer ``L`` runs for ``T_L`` local steps from its initial
state and sees only its sources' LAST ``T_L`` steps. In a Lava graph every process steps every
time step, so a layer whose source starts earlier (``source_step_offset > 0``: in the default
network ``enc1`` sees the last 6 of ``enc0``'s 8 steps, ``dec0`` the last 4) would integrate the
source's earlier spikes before its window. ``WindowedATRLIF`` discards its synaptic input outside
the lava time steps ``[t_start, t_end]`` (input gated to zero). With zero input and zero bias
the ATRLIF state stays exactly at its initial value (``i = v = r = 0``, ``theta = 64 theta_0``:
every decay of 0 is 0 and ``theta`` decays to ``theta_0``), so this is bit-identical to
resetting the layer at the start of its window. The read-out integrator also needs its voltage:
``with_v_out=True`` adds an OutPort ``v_out`` that sends ``v`` after every step (read by an
``Extractor``; ``Var.get`` would cost one message per element).

Periodic WindowedATRLIF (``period = P > 0``, the reusable graph of :mod:`sim.session`). The
window repeats every ``P`` lava steps (one patch per period): local step ``(time_step - 1) % P +
1``. At the first step of the window the state is set to the initial state (``i = v = r = 0``,
``s = 0``, ``theta = theta_0``: what the layer would have after zero input), inside the window
lava's step runs unmodified, outside it the input is drained and discarded, nothing is sent on
``s_out`` (zeros) and the state is left alone. So patch ``k`` sees exactly what a fresh graph
would, whatever patch ``k - 1`` left behind.

WindowedATRLIF, how. Its process model SUBCLASSES lava-nc's ``PyATRLIFModelFixed`` (the
bit-accurate ATRLIF, "bit-by-bit mimicking Loihi 2") and calls its unmodified ``run_spk``; only
the ``a_in`` port object is wrapped so that ``recv()`` returns zeros outside the window. All
neuron arithmetic is lava's own code. On Loihi 2 the same gating is a host or embedded-CPU write
of the layer's state at its start step, or a microcoded neuron program that tests the time step;
neither exists in lava-nc (the open-source CPU simulator), hence this process.

Graded spikes. ``payload_shift = k >= 0`` makes the layer send, where it spikes, the payload
``v >> k`` (its voltage after the step; ATRLIF does not reset ``v``) instead of the spike bit,
on an ``s_out`` of 24-bit precision (lava's own ``PyATRLIFModelFixed.s_out`` type). Again only
the port object is wrapped (``send`` multiplies the bits lava computed by the payload); the
neuron step is lava's. On Loihi 2 this is a microcoded neuron that spikes with a graded payload.
"""
from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.proc.atrlif.models import PyATRLIFModelFixed
from lava.proc.atrlif.process import ATRLIF
from lava.proc.io.injector import Injector
from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PySparseModelBitAcc
from lava.proc.sparse.process import DelaySparse, Sparse
from lava.utils.weightutils import SignMode, determine_sign_mode


class WindowedATRLIF(ATRLIF):
    """lava-nc ``ATRLIF`` whose synaptic input is used only in lava time steps
    ``[t_start, t_end]`` (1-based, as ``PyLoihiProcessModel.time_step``); optional ``v_out``."""

    def __init__(self, *, shape: ty.Tuple[int, ...], t_start: int = 1, t_end: int = 2 ** 31 - 1,
                 with_v_out: bool = False, payload_shift: int = -1, period: int = 0, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        if int(t_start) < 1 or int(t_end) < int(t_start):
            raise ValueError(f"window [{t_start}, {t_end}] must satisfy 1 <= t_start <= t_end")
        if int(period) < 0 or (int(period) and int(t_end) > int(period)):
            raise ValueError(f"period {period} must be 0 (none) or >= the window end {t_end}")
        self.proc_params["period"] = int(period)
        if not -1 <= int(payload_shift) < 24:
            raise ValueError(f"payload_shift must be -1 (binary spikes) or in [0, 23], got {payload_shift}")
        self.proc_params["payload_shift"] = int(payload_shift)
        self.proc_params["t_start"] = int(t_start)
        self.proc_params["t_end"] = int(t_end)
        self.proc_params["with_v_out"] = bool(with_v_out)
        self.v_out = OutPort(shape=shape)


class _WindowGate:
    """Wraps a PyInPort: ``recv()`` drains the port every step (lava's channels must be read)
    and returns zeros while the window is closed."""

    def __init__(self, port) -> None:
        self.port = port
        self.open = False

    def recv(self):
        x = self.port.recv()
        return x if self.open else np.zeros_like(x)

    def __getattr__(self, item):          # anything else goes to the real port
        return getattr(self.port, item)


class _GradedSend:
    """Wraps a PyOutPort: ``send(s)`` sends ``s * (v >> shift)`` (the graded payload)."""

    def __init__(self, port, model, shift: int) -> None:
        self.port, self.model, self.shift = port, model, int(shift)

    def send(self, s):
        v = np.asarray(self.model.v).astype(np.int64)
        self.port.send(np.where(np.asarray(s) != 0, v >> self.shift, 0).astype(np.int32))

    def __getattr__(self, item):
        return getattr(self.port, item)


@implements(proc=WindowedATRLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyWindowedATRLIFModelFixed(PyATRLIFModelFixed):
    """``PyATRLIFModelFixed`` + input window + optional ``v_out`` (see the module docstring)."""

    implements_process = WindowedATRLIF      # lava's @implements refuses to overwrite a parent's
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self) -> None:
        if not isinstance(self.a_in, _WindowGate):
            self.a_in = _WindowGate(self.a_in)
        k = self.proc_params.get("payload_shift", -1)
        if k >= 0 and not isinstance(self.s_out, _GradedSend):
            self.s_out = _GradedSend(self.s_out, self, k)
        period = self.proc_params.get("period", 0)
        t = (self.time_step - 1) % period + 1 if period else self.time_step
        t_start, t_end = self.proc_params["t_start"], self.proc_params["t_end"]
        self.a_in.open = t_start <= t <= t_end
        if period and not self.a_in.open:      # periodic: outside the window nothing happens
            self.a_in.port.recv()
            self.s_out.send(np.zeros(self.s.shape, dtype=np.int32))
        else:
            if period and t == t_start:
                self._reset_state()
            super().run_spk()                  # lava-nc's bit-accurate ATRLIF step, unmodified
        if self.proc_params["with_v_out"]:
            self.v_out.send(self.v)

    def _reset_state(self) -> None:
        """The initial state (what zero input from the initial state leaves): i = v = r = 0,
        s = 0, theta = theta_0 (lava's scaled threshold once ``scale_threshold`` ran)."""
        self.i[:] = 0
        self.v[:] = 0
        self.r[:] = 0
        self.s[:] = False
        if self.isthrscaled:
            self.theta[:] = self.theta_0


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStaticDelaySparseModelBitAcc(PyDelaySparseModelBitAcc):
    """lava-nc's bit-accurate ``DelaySparse`` model with its static delay-weight matrix built once.

    ``PyDelaySparseModelBitAcc.calc_act`` rebuilds ``get_delay_wgts_mat(weights, delays)`` (a
    ``vstack`` of ``max_delay + 1`` masked copies of the weights, after zeroing every delayed
    synapse of a copy by fancy indexing) on EVERY step: about 2 s per step for the 6M-synapse
    ``enc0 -> dec0`` skip at 16^3, 15 s at 32^3. Without learning, weights and delays never change
    after the first step's clipping, so this subclass builds the matrix once. For the uniform
    delay ``d`` the backend uses, lava's construction yields ``d`` empty row blocks followed by
    the weights; that matrix is stacked directly (equality with lava's function is tested).
    Every arithmetic step (``dot``, the weight-exponent shift, the delay-buffer roll) is lava's.
    """

    _delay_wgts = None
    _uniform_delay: ty.Optional[int] = None

    def run_spk(self) -> None:
        if not self.weights_set and weights_already_valid(self.weights, self.proc_params):
            if np.max(self.delays) > 63:   # lava's own check, which the skipped branch also does
                raise ValueError(f"DelaySparse Process 'delays' expects values between 0 and 63 for Loihi, "
                                 f"got {np.max(self.delays)}.")
            self.weights_set = True        # clip + truncate would return the same matrix: no copy
        super().run_spk()

    def calc_act(self, s_in) -> np.ndarray:
        """lava's ``calc_act`` (``reshape(delay_wgts.dot(s_in), (max_delay + 1, n_out)).T``); for a
        uniform delay ``k`` the stacked matrix is empty but for block ``k``, so only
        ``weights.dot(s_in)`` is computed (same values, same dtype) and no stacked copy exists."""
        if self._uniform_delay is None:
            self._uniform_delay = uniform_delay(self.weights, self.delays, self.a_buff.shape[-1] - 1)
        k = self._uniform_delay
        if k < 0:
            return super().calc_act(s_in)
        y = self.weights.dot(s_in)
        out = np.zeros((self.a_buff.shape[-1], self.weights.shape[0]), dtype=y.dtype)
        out[k] = y
        return out.T

    def get_delay_wgts_mat(self, weights, delays, max_delay):   # overrides a staticmethod
        if self._delay_wgts is None:
            self._delay_wgts = delay_weight_matrix(weights, delays, max_delay)
        return self._delay_wgts


@implements(proc=Sparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStaticSparseModelBitAcc(PySparseModelBitAcc):
    """lava-nc's bit-accurate ``Sparse`` model without the first-step copy of valid weights.

    ``AbstractPySparseModelBitAcc.run_spk`` passes its weights through ``clip_weights`` and
    ``truncate_weights`` on its first step; both start with ``weights.copy()`` and the sparse
    clipping indexes the whole matrix (two full copies and boolean masks: most of a 32^3 run's
    first step). Where the weights are already what those functions return (int32, inside the
    8-bit range of the sign mode, low bits zero: every matrix the backend builds), this model
    marks them as set and skips the copies; otherwise lava's own path runs. The step itself is
    lava's ``run_spk``, unmodified.
    """

    def run_spk(self) -> None:
        if not self.weights_set and weights_already_valid(self.weights, self.proc_params):
            self.weights_set = True
        super().run_spk()


def weights_already_valid(weights, proc_params: ty.Mapping[str, ty.Any]) -> bool:
    """True when lava's first-step ``clip_weights(.., num_bits=8)`` + ``truncate_weights(..,
    num_weight_bits)`` would leave the CSR ``weights`` unchanged (and int32), so the copy can be
    skipped: every value inside the sign mode's 8-bit range and its truncated low bits zero."""
    import scipy.sparse as sp

    if not sp.issparse(weights) or weights.dtype != np.int32:
        return False
    sign_mode = proc_params.get("sign_mode") or determine_sign_mode(weights)
    nwb = int(proc_params.get("num_weight_bits", 8))
    d = weights.data
    if d.size == 0:
        return True
    mixed = sign_mode == SignMode.MIXED
    lo, hi = {SignMode.MIXED: (-256, 255), SignMode.EXCITATORY: (0, 255),
              SignMode.INHIBITORY: (-255, 0)}.get(sign_mode, (0, -1))
    if hi < lo or int(d.min()) < lo or int(d.max()) > hi:
        return False
    bits = 8 - nwb + int(mixed)
    if bits <= 0:
        return True
    u = -d if sign_mode == SignMode.INHIBITORY else d
    return not np.any(u & ((1 << bits) - 1))


def uniform_delay(weights, delays, max_delay: int) -> int:
    """The common delay ``k`` (``0 < k <= max_delay``) of every synapse when ``delays`` has exactly
    the structure of ``weights`` and one value; else -1."""
    import scipy.sparse as sp

    w = sp.csr_matrix(weights)
    d = sp.csr_matrix(delays)
    if max_delay > 0 and d.nnz == w.nnz and d.nnz and np.array_equal(d.indptr, w.indptr) \
            and np.array_equal(d.indices, w.indices) and (d.data == d.data[0]).all() \
            and 0 < int(d.data[0]) <= max_delay:
        return int(d.data[0])
    return -1


def delay_weight_matrix(weights, delays, max_delay: int):
    """``PyDelaySparseModelBitAcc.get_delay_wgts_mat(weights, delays, max_delay)`` as a CSR
    matrix, with a direct construction when every synapse has the same delay."""
    import scipy.sparse as sp

    w = sp.csr_matrix(weights)
    d = sp.csr_matrix(delays)
    n_out, n_in = w.shape
    k = uniform_delay(w, d, max_delay)
    if k > 0:
        blocks = [sp.csr_matrix((n_out * k, n_in), dtype=w.dtype), w]
        if max_delay > k:
            blocks.append(sp.csr_matrix((n_out * (max_delay - k), n_in), dtype=w.dtype))
        return sp.vstack(blocks, format="csr")
    return PyDelaySparseModelBitAcc.get_delay_wgts_mat(w, d, max_delay).tocsr()


class PatchInjector(Injector):
    """lava-nc's ``Injector`` (host -> running graph) for one graded input patch per period.

    The host sends ONE frame per patch (the flat integer payload) with :meth:`Injector.send`;
    the model receives it (blocking) at the first step of every period of ``period`` lava steps
    and sends it on ``out_port`` for the first ``steps`` steps of the period, zeros for the rest:
    what the single-patch graph's ``RingBuffer`` sends, for a new patch every period."""

    def __init__(self, *, shape: ty.Tuple[int, ...], period: int, steps: int, buffer_size: int = 2,
                 **kwargs) -> None:
        super().__init__(shape=shape, buffer_size=buffer_size, **kwargs)
        if not 1 <= int(steps) <= int(period):
            raise ValueError(f"steps {steps} must be in [1, period {period}]")
        self.proc_params["period"] = int(period)
        self.proc_params["steps"] = int(steps)


@implements(proc=PatchInjector, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPatchInjectorModelFixed(PyLoihiProcessModel):
    """Integer model of :class:`PatchInjector` (lava's Injector model is float-only)."""

    in_port: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    out_port: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._zeros = np.zeros(self.proc_params["shape"], dtype=np.int32)
        self._payload = self._zeros

    def run_spk(self) -> None:
        t = (self.time_step - 1) % self.proc_params["period"]
        if t == 0:
            self._payload = np.asarray(self.in_port.recv(), dtype=np.int32)
        self.out_port.send(self._payload if t < self.proc_params["steps"] else self._zeros)


#: what Loihi2SimCfg needs to pick our models (plus lava's fast Extractor model)
def exception_proc_model_map(static_sparse: bool = False) -> dict:
    """Process -> model exceptions of the backend's run configuration; ``static_sparse`` also
    replaces lava's ``Sparse`` model by :class:`PyStaticSparseModelBitAcc` (no first-step copy)."""
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    m = {WindowedATRLIF: PyWindowedATRLIFModelFixed, Extractor: PyLoihiExtractorModel,
         DelaySparse: PyStaticDelaySparseModelBitAcc, PatchInjector: PyPatchInjectorModelFixed}
    if static_sparse:
        m[Sparse] = PyStaticSparseModelBitAcc
    return m


__all__ = ["WindowedATRLIF", "PyWindowedATRLIFModelFixed", "PyStaticDelaySparseModelBitAcc",
           "PyStaticSparseModelBitAcc", "PatchInjector", "PyPatchInjectorModelFixed", "weights_already_valid",
           "uniform_delay", "delay_weight_matrix", "exception_proc_model_map"]
