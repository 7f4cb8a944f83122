"""Loihi 2 deployment: resource mapping, deployable export, hardware entry point.

* :mod:`loihi.limits` - per-core / per-chip limits, each with its source and kind;
* :mod:`loihi.resources` - per-layer neurons, stored synapses, fan-in / fan-out (exact; checked
  against the profiler's NetworkCounter);
* :mod:`loihi.partition` - greedy partition of layers onto neuro-cores and chips;
* :mod:`loihi.mapping` - ``mapping.json`` (cores / chips / layers) and its readable summary;
* :mod:`loihi.export` - netx verdict per layer and the ``spikereg-neuro/loihi-deploy`` HDF5 format;
* :mod:`loihi.run` - ``loihi run`` on Loihi 2 through lava-loihi (INRC only);
* :mod:`loihi.cli` - ``spikereg-neuro loihi map | export | run``.

See docs/deployment.md.
"""
from .limits import LIMIT_CONSTANTS, CoreLimits
from .mapping import build_mapping, load_layers, load_mapping, mapping_summary, write_mapping
from .resources import NetworkResources, layers_from_qnet

__all__ = ["LIMIT_CONSTANTS", "CoreLimits", "NetworkResources", "layers_from_qnet", "build_mapping",
           "load_layers", "load_mapping", "mapping_summary", "write_mapping"]
