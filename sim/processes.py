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
from lava.proc.atrlif.models import PyATRLIFModelFixed
from lava.proc.atrlif.process import ATRLIF
from lava.proc.sparse.models import PyDelaySparseModelBitAcc
from lava.proc.sparse.process import DelaySparse


class WindowedATRLIF(ATRLIF):
    """lava-nc ``ATRLIF`` whose synaptic input is used only in lava time steps
    ``[t_start, t_end]`` (1-based, as ``PyLoihiProcessModel.time_step``); optional ``v_out``."""

    def __init__(self, *, shape: ty.Tuple[int, ...], t_start: int = 1, t_end: int = 2 ** 31 - 1,
                 with_v_out: bool = False, payload_shift: int = -1, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        if int(t_start) < 1 or int(t_end) < int(t_start):
            raise ValueError(f"window [{t_start}, {t_end}] must satisfy 1 <= t_start <= t_end")
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
        self.a_in.open = self.proc_params["t_start"] <= self.time_step <= self.proc_params["t_end"]
        super().run_spk()                      # lava-nc's bit-accurate ATRLIF step, unmodified
        if self.proc_params["with_v_out"]:
            self.v_out.send(self.v)


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

    def get_delay_wgts_mat(self, weights, delays, max_delay):   # overrides a staticmethod
        if self._delay_wgts is None:
            self._delay_wgts = delay_weight_matrix(weights, delays, max_delay)
        return self._delay_wgts


def delay_weight_matrix(weights, delays, max_delay: int):
    """``PyDelaySparseModelBitAcc.get_delay_wgts_mat(weights, delays, max_delay)`` as a CSR
    matrix, with a direct construction when every synapse has the same delay."""
    import scipy.sparse as sp

    w = sp.csr_matrix(weights)
    d = sp.csr_matrix(delays)
    n_out, n_in = w.shape
    if max_delay > 0 and d.nnz == w.nnz and d.nnz and np.array_equal(d.indptr, w.indptr) \
            and np.array_equal(d.indices, w.indices) and (d.data == d.data[0]).all() \
            and 0 < int(d.data[0]) <= max_delay:
        k = int(d.data[0])
        blocks = [sp.csr_matrix((n_out * k, n_in), dtype=w.dtype), w]
        if max_delay > k:
            blocks.append(sp.csr_matrix((n_out * (max_delay - k), n_in), dtype=w.dtype))
        return sp.vstack(blocks, format="csr")
    return PyDelaySparseModelBitAcc.get_delay_wgts_mat(w, d, max_delay).tocsr()


#: what Loihi2SimCfg needs to pick our models (plus lava's fast Extractor model)
def exception_proc_model_map() -> dict:
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    return {WindowedATRLIF: PyWindowedATRLIFModelFixed, Extractor: PyLoihiExtractorModel,
            DelaySparse: PyStaticDelaySparseModelBitAcc}


__all__ = ["WindowedATRLIF", "PyWindowedATRLIFModelFixed", "PyStaticDelaySparseModelBitAcc",
           "delay_weight_matrix", "exception_proc_model_map"]
