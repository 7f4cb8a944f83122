"""spikereg-neuro: SpikeReg, a spiking U-Net for deformable 3D registration, deployed to Loihi 2.

Public API (imported lazily so that ``import spikereg_neuro`` stays light)::

    from spikereg_neuro import SpikeRegUNet, SpikeRegTrainer, SpikeRegInference, load_config
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "SpikeRegUNet": ("spikereg_neuro.model.unet", "SpikeRegUNet"),
    "ModelConfig": ("spikereg_neuro.model.config", "ModelConfig"),
    "SpikeRegTrainer": ("spikereg_neuro.train.trainer", "SpikeRegTrainer"),
    "SpikeRegInference": ("spikereg_neuro.inference", "SpikeRegInference"),
    "load_config": ("spikereg_neuro.config", "load_config"),
    "Config": ("spikereg_neuro.config", "Config"),
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'spikereg_neuro' has no attribute {name!r}")
