"""Dictionary round trips of the config dataclasses (YAML sections, checkpoint records).

A leaf module: it imports nothing of the project, so every config module can use it.

* :func:`to_plain` -- a dataclass as plain dicts and lists (tuples become lists, nested
  dataclasses dicts), what YAML and JSON hold;
* :func:`checked_kwargs` -- a mapping's keys checked against a dataclass's fields (an unknown
  key is a ``ValueError`` naming the known ones);
* :class:`DictIO` -- a mixin giving a config dataclass ``to_dict`` and ``from_dict`` from those.
"""
from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional, Type, TypeVar

__all__ = ["to_plain", "checked_kwargs", "DictIO"]

T = TypeVar("T", bound="DictIO")


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def to_plain(obj: Any) -> Dict[str, Any]:
    """``obj`` (a dataclass instance) as nested dicts and lists: no tuples, no dataclasses."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_plain needs a dataclass instance, got {type(obj).__name__}")
    return _lists(asdict(obj))


def checked_kwargs(cls: type, data: Optional[Mapping[str, Any]], what: str) -> Dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; a key that is not one of its fields
    raises ``ValueError("unknown {what} [...]; known: [...]")``. ``None`` reads as empty."""
    data = dict(data or {})
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return data


class DictIO:
    """Mixin for config dataclasses: ``to_dict`` (:func:`to_plain`) and ``from_dict`` (unknown
    keys are errors, worded with the class's ``_keys_label``; everything else is left to the
    dataclass's ``__post_init__``)."""

    _keys_label: ClassVar[str] = "keys"

    def to_dict(self) -> Dict[str, Any]:
        """The config as plain dicts and lists."""
        return to_plain(self)

    @classmethod
    def from_dict(cls: Type[T], data: Optional[Mapping[str, Any]]) -> T:
        """Build from a mapping of field names (missing keys keep the defaults)."""
        return cls(**checked_kwargs(cls, data, cls._keys_label))
