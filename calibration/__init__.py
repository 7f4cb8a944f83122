"""Quantization of the trained SpikeReg network to Loihi 2 fixed-point rules.

* :mod:`calibration.loihi_rules` - THE Loihi 2 fixed-point rules (bit widths, shifts, overflow),
  each constant traced to the lava-nc / lava-dl source it comes from;
* :mod:`calibration.quantize` - float network -> :class:`~calibration.netfile.QuantizedNet`;
* :mod:`calibration.calibrate` - statistics on training patches, exponent choice;
* :mod:`calibration.netfile` - the ``net.h5`` format (write, read, validate);
* :mod:`calibration.emulator` - bit-accurate integer emulation (the reference for the Lava backend);
* :mod:`calibration.report` - float vs quantized fidelity report;
* :mod:`calibration.cli` - ``spikereg-neuro calibrate``.

See ``docs/calibration.md``.
"""
from .netfile import (FORMAT, FORMAT_VERSION, LayerInput, NetFileError, QuantizedLayer, QuantizedNet,
                      load_qnet, save_qnet, validate_qnet)

__all__ = ["FORMAT", "FORMAT_VERSION", "LayerInput", "NetFileError", "QuantizedLayer", "QuantizedNet",
           "load_qnet", "save_qnet", "validate_qnet"]
