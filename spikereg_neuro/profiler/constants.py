"""Named model constants: a value, its unit, its source, and what kind of number it is."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

#: kinds of constants: a number read from a paper/datasheet, measured on hardware, derived by
#: arithmetic from such numbers, or an assumption of this model
KINDS = ("published", "measured", "derived", "assumed", "override")


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    citation: str
    kind: str = "published"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"constant kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def override(self, spec: Any, origin: str) -> "Constant":
        """A new constant from a YAML entry: a bare number, or ``{value, unit, citation, kind}``.

        A different unit, and a value that is not a finite number >= 0, are refused (no silent
        pJ/nJ mix-ups, no negative energies); an override without a citation
        keeps the default's citation and says it was overridden.
        """
        if isinstance(spec, (int, float, str)) and not isinstance(spec, bool):
            spec = {"value": spec}
        if not isinstance(spec, dict) or "value" not in spec:
            raise ValueError(f"{origin}: expected a number or a mapping with 'value', got {spec!r}")
        unknown = set(spec) - {"value", "unit", "citation", "kind"}
        if unknown:
            raise ValueError(f"{origin}: unknown fields {sorted(unknown)}")
        unit = spec.get("unit", self.unit)
        if unit != self.unit:
            raise ValueError(f"{origin}: unit {unit!r} differs from the model's {self.unit!r}")
        v = spec["value"]
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float("nan") if isinstance(v, bool) else float(v)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0 <= value < float("inf"):  # False for NaN and infinities
            raise ValueError(f"{origin}: value must be a finite number >= 0 ({self.unit}), got {v!r}")
        if "citation" in spec:
            return Constant(value, unit, str(spec["citation"]), str(spec.get("kind", "published")))
        if value == self.value:
            return self
        return Constant(value, unit, f"overridden in {origin} (default {self.value:g} {self.unit}: "
                                     f"{self.citation})", "override")
