"""File input/output: atomic writes and NIfTI volumes / displacement fields."""
from .atomic import atomic_write, atomic_write_text
from .nifti import check_pair, load_field, load_labels, load_volume, save_field, save_volume

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "load_volume",
    "load_labels",
    "save_volume",
    "save_field",
    "load_field",
    "check_pair",
]
