"""Baseline registration methods for the accuracy benchmark.

* :class:`IdentityRegistrar` (``identity``): no registration, the floor;
* :class:`VoxelMorphRegistrar` (``voxelmorph``): ``voxelmorph.nn.models.VxmPairwise`` trained
  with SpikeReg's budget (:func:`train_voxelmorph`), needs the ``voxelmorph`` package;
* :class:`AntsSyNRegistrar` (``ants_syn``): ANTs SyN through the optional ``antspyx``.

All return displacement fields in the project convention (``(3, D, H, W)``, voxels, pull,
channel ``k`` along axis ``k``); see :mod:`.base` and docs/baselines.md. The heavy optional
imports (voxelmorph, ants) happen only when a method is used.
"""
from .base import Registrar, SymmetricRegistrar, check_field, check_pair_arrays
from .identity import IdentityRegistrar

__all__ = ["Registrar", "SymmetricRegistrar", "check_field", "check_pair_arrays", "IdentityRegistrar", "VoxelMorphRegistrar",
           "VoxelMorphConfig", "train_voxelmorph", "AntsSyNRegistrar"]


def __getattr__(name):  # lazy: voxelmorph imports neurite, ants a large binary
    if name in ("VoxelMorphRegistrar", "VoxelMorphConfig", "train_voxelmorph"):
        from . import voxelmorph
        return getattr(voxelmorph, name)
    if name == "AntsSyNRegistrar":
        from . import ants
        return ants.AntsSyNRegistrar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
