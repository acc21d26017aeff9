"""WIT values without a Python type of their own, as `compute` returns them and calls take them.

A variant case is ``Variant(case, value)`` (``value`` is ``None`` for a case without
payload; a bare case name is accepted as an argument too); a ``result`` inside a value is
``Ok(value)`` or ``Err(value)`` (a task's own ``err`` fails the task instead); ``some`` of an
option whose payload is itself an option is ``Some(value)``, so that ``some(none)`` differs
from ``none``. Each is a frozen dataclass, so ``match`` statements take them apart::

    match value:
        case Variant("circle", radius): ...
        case Ok(v): ...
        case Err(message): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Variant", "Ok", "Err", "Some"]


@dataclass(frozen=True)
class Variant:
    """A case of a WIT ``variant``: its name and its payload (``None`` without one)."""

    case: str
    value: Any = None


@dataclass(frozen=True)
class Ok:
    """``ok(value)`` of a WIT ``result`` (``value`` is ``None`` when the side has no payload)."""

    value: Any = None


@dataclass(frozen=True)
class Err:
    """``err(value)`` of a WIT ``result`` (``value`` is ``None`` when the side has no payload)."""

    value: Any = None


@dataclass(frozen=True)
class Some:
    """``some(value)`` of an ``option<option<T>>``: ``Some(None)`` is ``some(none)``."""

    value: Any
