"""Fabric tasks written in Python, built into a component with `fabric build`.

Each export of the world in wit/world.wit is a method of a class named `WitWorld`;
imports (the task's log and context) are in `wit_world.imports`. WIT types map to Python
as: s64/u64/u32 -> int, f64 -> float, string -> str, list<T> -> list, tuple -> tuple, record -> dataclass,
result<T, string> -> return the value, or raise `Err(message)`.
"""

import string

import wit_world
from componentize_py_types import Err
from wit_world.imports import context, log
from wit_world.imports.log import Level

_MASK = (1 << 64) - 1


def _s64(v: int) -> int:
    """Wraps an int to a signed 64-bit value, like Rust's wrapping arithmetic."""
    v &= _MASK
    return v - (1 << 64) if v >= (1 << 63) else v


class WitWorld(wit_world.WitWorld):
    def inc(self, x: int) -> int:
        return _s64(x + 1)

    def add(self, a: int, b: int) -> int:
        return _s64(a + b)

    def words(self, text: str) -> list[str]:
        out = []
        for w in text.split():
            w = w.strip(string.punctuation).lower()
            if w:
                out.append(w)
        return out

    def count(self, words: list[str]) -> list[tuple[str, int]]:
        totals: dict[str, int] = {}
        for w in words:
            totals[w] = totals.get(w, 0) + 1
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))

    def spread(self, s: wit_world.Summary, name: str) -> wit_world.Series:
        return wit_world.Series(name=name, values=[s.min, s.mean, s.max])

    def rescale(self, s: wit_world.Series, k: float) -> list[float]:
        return [v * k for v in s.values]

    def safe_div(self, a: int, b: int) -> int:
        if b == 0:
            raise Err(f"cannot divide {a} by zero")
        return a // b

    def fail(self, msg: str) -> int:
        log.log(Level.WARN, f"task {context.task_id()} is about to fail")
        raise ValueError(msg)
