"""One incoming connection of a layer, typed: which population it reads and whether x2 upsampled.

Every stage (calibration, emulator, Lava lowering, Loihi mapper, profiler) speaks of a layer's
inputs through :class:`Connection`. The files keep their string vocabularies, each read and
written here only:

* the model's ``export()`` and ``mapping.json`` label a connection ``"enc2"`` or ``"up(enc3)"``
  (:meth:`Connection.parse` / ``str()``);
* ``net.h5`` (``inputs`` JSON) and ``deploy.h5`` (connection attributes) store ``source`` and
  ``transform`` (``"identity"`` / ``"upsample2"``: :meth:`Connection.from_transform` /
  :attr:`Connection.transform`).

No dependencies: importable by every package without pulling torch, SLAYER or Lava in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Union

#: net.h5 / deploy.h5 transform name -> upsampling factor
TRANSFORMS: Dict[str, int] = {"identity": 1, "upsample2": 2}
_UPSAMPLE_TO_TRANSFORM = {f: t for t, f in TRANSFORMS.items()}
#: the graded input's source name (the fixed and moving intensities, not a layer)
INPUT = "input"

_LABEL = re.compile(r"^\s*up\(\s*([^()\s]+)\s*\)\s*$|^\s*([^()\s]+)\s*$")


@dataclass(frozen=True)
class Connection:
    """``source`` (``"input"`` or a layer name) read directly (``upsample=1``) or through nearest
    x2 upsampling of its spikes (``upsample=2``)."""

    source: str
    upsample: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source or any(c in self.source for c in "() \t"):
            raise ValueError(f"connection source must be a population name, got {self.source!r}")
        if self.upsample not in _UPSAMPLE_TO_TRANSFORM:
            raise ValueError(f"connection upsampling must be one of {sorted(_UPSAMPLE_TO_TRANSFORM)}, "
                             f"got {self.upsample!r}")

    @classmethod
    def parse(cls, label: Union[str, "Connection"]) -> "Connection":
        """``"up(enc3)"`` -> ``Connection("enc3", 2)``; ``"enc2"`` -> ``Connection("enc2")``
        (a Connection is returned as it is)."""
        if isinstance(label, Connection):
            return label
        m = _LABEL.match(str(label))
        if m is None:
            raise ValueError(f"not a connection label: {label!r} (expected 'name' or 'up(name)')")
        return cls(m.group(1), 2) if m.group(1) else cls(m.group(2), 1)

    @classmethod
    def from_transform(cls, source: str, transform: str = "identity") -> "Connection":
        """From the ``source`` / ``transform`` pair of net.h5 and deploy.h5."""
        if transform not in TRANSFORMS:
            raise ValueError(f"connection transform {transform!r} not in {tuple(TRANSFORMS)}")
        return cls(str(source), TRANSFORMS[transform])

    @property
    def transform(self) -> str:
        """``"identity"`` or ``"upsample2"`` (the net.h5 / deploy.h5 name)."""
        return _UPSAMPLE_TO_TRANSFORM[self.upsample]

    @property
    def upsampled(self) -> bool:
        return self.upsample > 1

    @property
    def reads_input(self) -> bool:
        """True for the graded input (the intensities), False for a layer's spikes."""
        return self.source == INPUT

    def __str__(self) -> str:
        return f"up({self.source})" if self.upsampled else self.source


class ConnectionRecord:
    """Mixin for a record holding a ``connection`` (:class:`Connection`): its ``source``,
    ``upsample`` and ``label()`` (``"up(enc3)"``)."""

    connection: Connection

    @property
    def source(self) -> str:
        return self.connection.source

    @property
    def upsample(self) -> int:
        return self.connection.upsample

    def label(self) -> str:
        """``"enc2"`` / ``"up(enc3)"``."""
        return str(self.connection)


__all__ = ["Connection", "ConnectionRecord", "TRANSFORMS", "INPUT"]
