"""Chunked n-dimensional arrays of float64 computed on a Fabric cluster, with NumPy's names
(like ``dask.array``)::

    import fabric
    import fabric.array as fa

    client = fabric.Client()
    x = fa.random((4000, 4000), chunks=1000, seed=42)   # 16 chunks; nothing runs yet
    y = (x + x.T).sum(axis=0)
    y.compute()                                          # a numpy.ndarray of shape (4000,)

Each operation adds calls of the built-in ``builtin:array`` kernels, one per chunk, to a
graph; ``compute()`` runs it as one job (the GIL released, Ctrl-C cancels the job) and
returns a NumPy array viewing one buffer (one copy of the numbers, none per element).
Shapes, axes and chunks are checked when an operation is made (``ValueError``).

Which client: ``client=``, else the most recently created ``fabric.Client``. Numbers are
float64 throughout; comparisons give 1.0 / 0.0. An in-memory NumPy array is not sent: save
it where the workers can read it (``numpy.save``) and use ``from_npy``.
"""

from __future__ import annotations

import html
import numbers
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

from fabric import _native

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import numpy

    from fabric._native import Client

__all__ = [
    "Array",
    "abs",
    "arange",
    "ceil",
    "exp",
    "floor",
    "from_npy",
    "full",
    "log",
    "maximum",
    "minimum",
    "ones",
    "random",
    "sqrt",
    "zeros",
]

_Shape = Union[int, Sequence[int]]
_Chunks = Union[None, int, Sequence[int]]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fabric.array's compute() returns a numpy.ndarray, and numpy is not installed: "
            "pip install numpy"
        ) from e
    return numpy


def _shape(shape: _Shape) -> Tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        return (int(shape),)
    return tuple(int(n) for n in shape)


def _chunks(shape: Tuple[int, ...], chunks: _Chunks) -> Tuple[int, ...]:
    """One chunk length per axis: ``None`` is the whole axis, an int the same on each."""
    if chunks is None:
        return tuple(max(n, 1) for n in shape)
    if isinstance(chunks, numbers.Integral):
        return tuple(int(chunks) for _ in shape)
    return tuple(int(c) for c in chunks)


def _number(k: Any) -> Optional[float]:
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        return None
    return float(k)


class Array:
    """A lazy chunked array of float64: its shape, chunks and one task per chunk.
    Operations return new arrays; ``compute()`` runs them."""

    __slots__ = ("_a",)
    __array_priority__ = 20  # NumPy defers ``ndarray op Array`` to us

    def __init__(self, chunked: _native.Chunked) -> None:
        if not isinstance(chunked, _native.Chunked):
            raise TypeError(
                "Array wraps an array made by fabric.array's constructors, "
                f"got {type(chunked).__name__}"
            )
        self._a = chunked

    # --- structure -------------------------------------------------------------------

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def ndim(self) -> int:
        return len(self._a.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self._a.shape:
            n *= d
        return n

    @property
    def dtype(self) -> str:
        """Always ``float64``."""
        return "float64"

    @property
    def chunks(self) -> Tuple[Tuple[int, ...], ...]:
        """The chunk lengths along each axis, as Dask gives them."""
        return tuple(tuple(c) for c in self._a.chunks)

    @property
    def numblocks(self) -> Tuple[int, ...]:
        return tuple(len(c) for c in self._a.chunks)

    @property
    def npartitions(self) -> int:
        n = 1
        for c in self._a.chunks:
            n *= len(c)
        return n

    @property
    def tasks(self) -> int:
        """The number of tasks the array's graph has."""
        return self._a.tasks

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    # --- elementwise -----------------------------------------------------------------

    def _binary(self, other: Any, op: str) -> Any:
        if isinstance(other, Array):
            return Array(self._a.binary(other._a, op))
        k = _number(other)
        if k is None:
            return NotImplemented
        return Array(self._a.scalar(op, k))

    def __add__(self, other: Any) -> Array:
        return self._binary(other, "add")

    def __radd__(self, other: Any) -> Array:
        return self._binary(other, "add")

    def __sub__(self, other: Any) -> Array:
        return self._binary(other, "sub")

    def __rsub__(self, other: Any) -> Any:
        k = _number(other)
        if k is None:
            return NotImplemented
        return Array(self._a.unary("neg").scalar("add", k))

    def __mul__(self, other: Any) -> Array:
        return self._binary(other, "mul")

    def __rmul__(self, other: Any) -> Array:
        return self._binary(other, "mul")

    def __truediv__(self, other: Any) -> Array:
        return self._binary(other, "div")

    def __rtruediv__(self, other: Any) -> Any:
        k = _number(other)
        if k is None:
            return NotImplemented
        return Array(self._a.scalar("pow", -1.0).scalar("mul", k))

    def __pow__(self, other: Any) -> Array:
        return self._binary(other, "pow")

    def __neg__(self) -> Array:
        return Array(self._a.unary("neg"))

    def __pos__(self) -> Array:
        return self

    def __abs__(self) -> Array:
        return Array(self._a.unary("abs"))

    def __lt__(self, other: Any) -> Array:
        return self._binary(other, "less")

    def __le__(self, other: Any) -> Array:
        return self._binary(other, "less-equal")

    def __gt__(self, other: Any) -> Array:
        return self._binary(other, "greater")

    def __ge__(self, other: Any) -> Array:
        return self._binary(other, "greater-equal")

    def __eq__(self, other: Any) -> Array:  # type: ignore[override]
        return self._binary(other, "equal")

    def __ne__(self, other: Any) -> Array:  # type: ignore[override]
        return self._binary(other, "not-equal")

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError(
            "the truth of a fabric array is not known until it is computed: "
            "compare its value (x.compute()) instead"
        )

    # --- shape -----------------------------------------------------------------------

    @property
    def T(self) -> Array:
        """The transpose (axes reversed)."""
        return Array(self._a.transpose())

    def transpose(self) -> Array:
        """The transpose (axes reversed)."""
        return self.T

    def __matmul__(self, other: Any) -> Any:
        if not isinstance(other, Array):
            return NotImplemented
        return Array(self._a.matmul(other._a))

    def matmul(self, other: Array) -> Array:
        """The matrix product of two matrices."""
        return self @ other

    def dot(self, other: Array) -> Array:
        """The matrix product of two matrices."""
        return self @ other

    def rechunk(self, chunks: _Chunks) -> Array:
        """The same array cut into chunks of ``chunks`` (an int: the same on each axis)."""
        return Array(self._a.rechunk(list(_chunks(self.shape, chunks))))

    def __getitem__(self, key: Any) -> Array:
        """Basic slicing with step 1: ``x[10:20]``, ``x[:, 5:]``; an axis left out is
        whole. Integers are taken as one-element ranges (the axis is kept)."""
        keys = key if isinstance(key, tuple) else (key,)
        if len(keys) > self.ndim:
            raise IndexError(f"{len(keys)} indices for an array of {self.ndim} dimensions")
        ranges = []
        for d, n in enumerate(self.shape):
            k = keys[d] if d < len(keys) else slice(None)
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("fabric arrays take slices with step 1 only")
                ranges.append((start, max(start, stop)))
            elif isinstance(k, numbers.Integral):
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {int(k)} is out of range for axis {d} of length {n}")
                ranges.append((i, i + 1))
            else:
                raise IndexError(f"fabric arrays take slices and integers, got {k!r}")
        return Array(self._a.slice(ranges))

    # --- reductions ------------------------------------------------------------------

    def _axis(self, axis: Optional[int]) -> Optional[int]:
        if axis is None:
            return None
        a = int(axis)
        if a < 0:
            a += self.ndim
        if not 0 <= a < self.ndim:
            raise ValueError(f"axis {axis} is out of range for an array of shape {self.shape}")
        return a

    def sum(self, axis: Optional[int] = None) -> Array:
        return Array(self._a.reduce("sum", self._axis(axis)))

    def prod(self, axis: Optional[int] = None) -> Array:
        return Array(self._a.reduce("prod", self._axis(axis)))

    def min(self, axis: Optional[int] = None) -> Array:
        return Array(self._a.reduce("min", self._axis(axis)))

    def max(self, axis: Optional[int] = None) -> Array:
        return Array(self._a.reduce("max", self._axis(axis)))

    def mean(self, axis: Optional[int] = None) -> Array:
        return Array(self._a.reduce("mean", self._axis(axis)))

    def std(self, axis: Optional[int] = None, ddof: float = 0) -> Array:
        """The standard deviation, ``ddof`` as NumPy's (0: population, 1: sample)."""
        return Array(self._a.std(self._axis(axis), float(ddof)))

    def var(self, axis: Optional[int] = None, ddof: float = 0) -> Array:
        """The variance: ``std(axis, ddof) ** 2``."""
        return self.std(axis, ddof) ** 2

    # --- computing -------------------------------------------------------------------

    def compute(self, client: Optional[Client] = None) -> Union[numpy.ndarray, numpy.float64]:
        """Computes the array on ``client`` (default: the most recently created client): a
        writable ``numpy.ndarray`` over the one buffer that came back (a ``numpy.float64``
        for a 0-d result, as Dask gives)."""
        np = _numpy()
        data, shape = self._a.compute(client)
        out = np.frombuffer(data, dtype=np.float64).reshape(shape)
        return out[()] if out.ndim == 0 else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> numpy.ndarray:
        out = _numpy().asarray(self.compute())
        return out if dtype is None else out.astype(dtype)

    def persist(self, name: Optional[str] = None, client: Optional[Client] = None) -> Array:
        """Computes the chunks and keeps them on the workers as the dataset ``name``
        (default: a new name); the array returned is made of them. It runs for the client's
        token's own tenant."""
        return Array(self._a.persist(name, client))

    def to_graph(self) -> Dict[str, Any]:
        """The graph document computing the array, which ``fabric run`` takes."""
        return self._a.to_graph()

    def __repr__(self) -> str:
        return (
            f"fabric.array<shape={self.shape}, dtype=float64, chunksize="
            f"{tuple(c[0] if c else 0 for c in self.chunks)}, tasks={self.tasks}>"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("Shape", self.shape),
            ("Chunk", tuple(c[0] if c else 0 for c in self.chunks)),
            ("Chunks", self.npartitions),
            ("Tasks", self.tasks),
            ("Type", "float64"),
        ]
        body = "".join(
            f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
        )
        return f"<table><caption>fabric.array</caption><tbody>{body}</tbody></table>"


# --- constructors ---------------------------------------------------------------------


def random(shape: _Shape, chunks: _Chunks = None, seed: int = 0) -> Array:
    """Uniform random numbers in [0, 1) of ``shape``; the same ``seed`` (and chunks) gives
    the same array."""
    s = _shape(shape)
    return Array(_native.Chunked.random(list(s), list(_chunks(s, chunks)), int(seed)))


def full(shape: _Shape, fill_value: float, chunks: _Chunks = None) -> Array:
    """``fill_value`` everywhere."""
    s = _shape(shape)
    return Array(_native.Chunked.full(list(s), list(_chunks(s, chunks)), float(fill_value)))


def zeros(shape: _Shape, chunks: _Chunks = None) -> Array:
    """Zeros."""
    return full(shape, 0.0, chunks)


def ones(shape: _Shape, chunks: _Chunks = None) -> Array:
    """Ones."""
    return full(shape, 1.0, chunks)


def arange(n: int, chunks: Optional[int] = None) -> Array:
    """``0, 1, ..., n - 1`` (as float64) in chunks of ``chunks``."""
    return Array(_native.Chunked.arange(int(n), int(chunks) if chunks is not None else max(int(n), 1)))


def from_npy(path: Union[str, Any], chunks: _Chunks = None) -> Array:
    """The array in the NumPy ``.npy`` file at ``path`` (a file the workers may read, or an
    object-store URL): each chunk's task reads only its own bytes. The header is read now;
    integers and float32 become float64. ``chunks=None`` is one chunk per axis whole."""
    url = str(path)
    shape = tuple(_native.Chunked.npy_shape(url))
    return Array(_native.Chunked.from_npy(url, list(_chunks(shape, chunks))))


# --- elementwise functions ------------------------------------------------------------


def _unary(x: Array, op: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{op}: expects a fabric array, got {type(x).__name__}")
    return Array(x._a.unary(op))


def sqrt(x: Array) -> Array:
    return _unary(x, "sqrt")


def exp(x: Array) -> Array:
    return _unary(x, "exp")


def log(x: Array) -> Array:
    return _unary(x, "log")


def floor(x: Array) -> Array:
    return _unary(x, "floor")


def ceil(x: Array) -> Array:
    return _unary(x, "ceil")


def abs(x: Array) -> Array:  # noqa: A001 - NumPy's name
    return _unary(x, "abs")


def maximum(x: Array, y: Union[Array, float]) -> Array:
    """The larger of each pair of elements (or of each element and ``y``)."""
    out = x._binary(y, "maximum")
    if out is NotImplemented:
        raise TypeError(f"maximum: expects an array or a number, got {type(y).__name__}")
    return out  # type: ignore[no-any-return]


def minimum(x: Array, y: Union[Array, float]) -> Array:
    """The smaller of each pair of elements (or of each element and ``y``)."""
    out = x._binary(y, "minimum")
    if out is NotImplemented:
        raise TypeError(f"minimum: expects an array or a number, got {type(y).__name__}")
    return out  # type: ignore[no-any-return]
