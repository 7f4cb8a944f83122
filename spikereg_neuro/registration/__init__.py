"""Registration building blocks: spatial transforms, metrics and losses.

The package re-exports each submodule's public names (its own ``__all__``), so the lists live
in one place: the submodules.
"""
from . import losses, metrics, transform
from .losses import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .transform import *  # noqa: F401,F403

__all__ = [*transform.__all__, *metrics.__all__, *losses.__all__]
