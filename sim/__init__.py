"""Lava CPU backend: the quantized network (``net.h5``) as a lava-nc process graph, run with
``Loihi2SimCfg(select_tag="fixed_pt")`` and checked spike for spike against the emulator.

* :mod:`sim.lowering` - 3-D conv / stride / folded x2 upsampling / concatenation -> ``Sparse``
  weight matrices (vectorised, integer mantissas, the layer's weight exponent);
* :mod:`sim.processes` - ``WindowedATRLIF`` (ATRLIF with an input time window and ``v_out``) and a
  memoised model of lava's bit-accurate ``DelaySparse``;
* :mod:`sim.graph` - the Lava graph of one patch (RingBuffer graded input, Sparse/DelaySparse,
  ATRLIF, Extractor monitors) and its time plan (:func:`calibration.emulator.lava_schedule`);
* :mod:`sim.run` - ``run_graph`` (the monitor loop, any lava RunConfig), ``run_lava`` (guarded
  worker subprocess, timeout, per-step progress), ``run_emulator`` (both return a
  :class:`calibration.emulator.EmulationResult`), ``simulate_patch`` (benchmark harness entry);
* :mod:`sim.session` - ``LavaSession`` (one started graph per patch shape, reused for every
  patch), ``register_full`` (a whole registration through Lava or the emulator);
* :mod:`sim.compare` - mismatches per layer and in the read-out, ``readout_sha256``;
* :mod:`sim.harness` - the demo patch a run reads and the ``run.json`` it writes (shared with
  ``loihi run`` and the benchmark);
* :mod:`sim.cli` - ``spikereg-neuro simulate``.

The package imports nothing heavy at import time (``spikereg-neuro`` loads :mod:`sim.cli` for
every command). See ``docs/simulation.md``.
"""

__all__ = ["lowering", "processes", "graph", "run", "session", "compare", "harness", "cli"]
