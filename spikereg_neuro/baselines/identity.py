"""The floor of the benchmark: no registration at all (a zero displacement field)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from .base import check_pair_arrays

__all__ = ["IdentityRegistrar"]


class IdentityRegistrar:
    """``register`` returns zeros: the warped moving image is the moving image itself."""

    name = "identity"

    def available(self) -> Tuple[bool, str]:
        return True, ""

    def register(self, fixed: np.ndarray, moving: np.ndarray,
                 affine: Optional[np.ndarray] = None) -> np.ndarray:
        f, _ = check_pair_arrays(fixed, moving)
        return np.zeros((3, *f.shape), dtype=np.float32)

    def info(self) -> Dict[str, Any]:
        return {"description": "no registration (zero displacement)"}
