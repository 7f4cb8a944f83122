"""File input/output: atomic writes and NIfTI volumes / displacement fields.

Re-exports the public names of :mod:`.atomic` and :mod:`.nifti` (their own ``__all__``)."""
from . import atomic, nifti
from .atomic import *  # noqa: F401,F403
from .nifti import *  # noqa: F401,F403

__all__ = [*atomic.__all__, *nifti.__all__]
