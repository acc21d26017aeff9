"""Partitioned dataframes computed on a Fabric cluster, with pandas' names (like
``dask.dataframe``)::

    import fabric
    import fabric.dataframe as fd

    client = fabric.Client()
    df = fd.read_csv("data/*.csv")                     # one partition per file; nothing runs
    out = (df.query("x > 10")
             .groupby("key").agg({"x": "sum", "y": "max"}))
    out.compute()                                      # a pyarrow.Table
    out.to_pandas()                                    # a pandas.DataFrame

Every operation is lazy and checked at once against the frame's columns: a bad query
expression or an unknown column raises ``ValueError`` naming the problem. ``compute()`` sends
the frame's graph to the cluster as one job and waits for it with the GIL released (Ctrl-C
cancels the job; a failed task raises ``fabric.TaskError``). The result comes back through
the Arrow C stream interface, with no copy per row.

Which client: the one passed as ``client=``, else the most recently created ``fabric.Client``
(Dask's default client).

The files are listed (and the first one's schema read) by this process when the frame is
made; the workers read the files, so a local path must be one the workers may read
(``fabric worker --data-dir``; a ``LocalCluster``'s workers may read any file you may).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from fabric import _native

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas
    import pyarrow

    from fabric._native import Client

__all__ = [
    "AGGREGATES",
    "ArrowStream",
    "Column",
    "DataFrame",
    "GroupBy",
    "Rolling",
    "Scalar",
    "SeriesGroupBy",
    "read_csv",
    "read_parquet",
]

ArrowStream = _native.ArrowStream
"""A computed frame as ``compute_arrow()`` returns it: ``__arrow_c_stream__``."""

AGGREGATES = ("sum", "mean", "min", "max", "count", "std", "var", "nunique")
"""The aggregates of ``agg`` (``nunique`` only in ``groupby().agg`` and a global ``agg``)."""

_Columns = Union[str, Sequence[str]]


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fabric.dataframe's compute() returns a pyarrow.Table, and pyarrow is not "
            "installed: pip install pyarrow (or use compute_arrow(), whose result any "
            "consumer of the Arrow PyCapsule interface takes)"
        ) from e
    return pyarrow


def _names(columns: Optional[_Columns]) -> List[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    return [str(c) for c in columns]


def _specs(spec: Any, what: str) -> List[Tuple[str, str]]:
    """``{"x": "sum", "y": ["min", "max"]}`` as ``[("x", "sum"), ("y", "min"), ...]``."""
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{what}: expects a dict of column -> aggregate (or list of aggregates), "
            f"got {type(spec).__name__}"
        )
    out: List[Tuple[str, str]] = []
    for column, hows in spec.items():
        for how in [hows] if isinstance(hows, str) else list(hows):
            if not isinstance(how, str):
                raise TypeError(f"{what}: the aggregate of `{column}` must be a name, got {how!r}")
            out.append((str(column), how))
    return out


def _named(named: Mapping[str, Any], what: str) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    """pandas' named aggregation ``total=("x", "sum")``: the specs, and the renames of the
    columns the Rust side names (``x``, or ``x_sum`` when ``x`` has several aggregates)."""
    specs: List[Tuple[str, str]] = []
    for new, pair in named.items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{what}: {new}= expects a (column, aggregate) tuple, got {pair!r}")
        specs.append((str(pair[0]), str(pair[1])))
    if len(set(specs)) != len(specs):
        raise ValueError(f"{what}: the same (column, aggregate) is named twice: {specs}")
    renames: Dict[str, str] = {}
    for new, (column, how) in zip(named, specs):
        repeated = sum(1 for c, _ in specs if c == column) > 1
        renames[f"{column}_{how}" if repeated else column] = new
    return specs, renames


class DataFrame:
    """A lazy, partitioned dataframe: its columns and one task per partition. Operations
    return new frames; ``compute()`` runs them."""

    __slots__ = ("_frame",)

    def __init__(self, frame: _native.Frame) -> None:
        if not isinstance(frame, _native.Frame):
            raise TypeError(
                "DataFrame wraps a frame made by fabric.dataframe.read_csv / read_parquet, "
                f"got {type(frame).__name__}"
            )
        self._frame = frame

    # --- structure -------------------------------------------------------------------

    @property
    def columns(self) -> List[str]:
        """The column names, in order."""
        return self._frame.columns

    @property
    def dtypes(self) -> Dict[str, str]:
        """Each column's Arrow type (``{"x": "Float64", "key": "Utf8"}``)."""
        return dict(self._frame.dtypes)

    @property
    def npartitions(self) -> int:
        """The number of partitions (one task each)."""
        return self._frame.npartitions

    @property
    def sorted_by(self) -> Optional[str]:
        """The column the partitions are ordered by, after ``sort_values`` or ``set_index``."""
        return self._frame.sorted_by

    # --- rows and columns ------------------------------------------------------------

    def query(self, expr: str) -> DataFrame:
        """The rows where ``expr`` holds, in pandas' ``query`` syntax:
        ``"x > 10 and key == 'k1'"``, ``"key in ['a', 'b']"``, ``"x.between(1, 5)"``."""
        return DataFrame(self._frame.filter(expr))

    def assign(self, **columns: str) -> DataFrame:
        """The frame with each ``name="expr"`` set (pandas' ``eval`` syntax: ``"x * 2 + y"``);
        later ones may use earlier ones."""
        frame = self._frame
        for name, expr in columns.items():
            if not isinstance(expr, str):
                raise TypeError(
                    f"assign({name}=...): expects an expression string such as \"x * 2\", "
                    f"got {type(expr).__name__}"
                )
            frame = frame.assign(name, expr)
        return DataFrame(frame)

    def eval(self, expr: str) -> DataFrame:
        """``df.eval("z = x * 2")``: the frame with ``z`` assigned."""
        name, sep, rhs = expr.partition("=")
        if not sep or not name.strip().isidentifier() or rhs.startswith("="):
            raise ValueError(f"eval: expects `name = expression`, got {expr!r}")
        return DataFrame(self._frame.assign(name.strip(), rhs.strip()))

    def rename(self, columns: Mapping[str, str]) -> DataFrame:
        """Columns renamed by ``{old: new}`` (names the frame lacks are ignored, as pandas
        does)."""
        return DataFrame(self._frame.rename([(str(o), str(n)) for o, n in columns.items()]))

    def __getitem__(self, key: Any) -> Union[DataFrame, Column]:
        """``df[["a", "b"]]``: those columns; ``df["a"]``: one column, to aggregate."""
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(f"no column `{key}` (the columns are: {', '.join(self.columns)})")
            return Column(self, key)
        if isinstance(key, (list, tuple)):
            return DataFrame(self._frame.select(_names(key)))
        raise TypeError(
            f"df[...] takes a column name or a list of them, got {type(key).__name__} "
            "(filter rows with df.query(\"...\"))"
        )

    def __getattr__(self, name: str) -> Column:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._frame.columns:
            return Column(self, name)
        raise AttributeError(
            f"'DataFrame' object has no attribute or column `{name}` "
            f"(the columns are: {', '.join(self._frame.columns)})"
        )

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | {c for c in self.columns if c.isidentifier()})

    def drop_duplicates(self, subset: Optional[_Columns] = None) -> DataFrame:
        """The rows whose values of ``subset`` (all columns by default) no earlier row has
        (``keep='first'``); rows come out grouped by a hash of ``subset``."""
        return DataFrame(self._frame.drop_duplicates(_names(subset)))

    def nlargest(self, n: int, columns: _Columns) -> DataFrame:
        """The ``n`` rows with the largest ``columns`` (ties broken by the next), largest
        first; rows with a null there are left out."""
        return DataFrame(self._frame.nlargest(n, _names(columns)))

    def nsmallest(self, n: int, columns: _Columns) -> DataFrame:
        """The ``n`` rows with the smallest ``columns``, smallest first."""
        return DataFrame(self._frame.nsmallest(n, _names(columns)))

    def head(self, n: int = 5) -> DataFrame:
        """The first ``n`` rows in the frame's order, lazily (unlike Dask's ``head``, which
        computes: call ``.compute()``)."""
        return DataFrame(self._frame.head(n))

    def sort_values(
        self, by: _Columns, ascending: Union[bool, Sequence[bool]] = True
    ) -> DataFrame:
        """Sorted by ``by`` across partitions; ``ascending`` is one flag, or one per column."""
        flags = [bool(ascending)] if isinstance(ascending, bool) else [bool(a) for a in ascending]
        return DataFrame(self._frame.sort_values(_names(by), flags))

    def set_index(self, column: str) -> DataFrame:
        """Ordered by ``column`` (a time or integer column), which ``rolling`` then runs
        along. Unlike pandas, the column stays a column."""
        return DataFrame(self._frame.set_index(column))

    # --- aggregates and joins --------------------------------------------------------

    def agg(self, spec: Optional[Mapping[str, Any]] = None, **named: Any) -> DataFrame:
        """One row of aggregates of the whole frame: ``df.agg({"x": "sum", "y": ["min",
        "max"]})`` (a column aggregated twice is named ``y_min``, ``y_max``), or pandas'
        named aggregation ``df.agg(total=("x", "sum"))``."""
        return _aggregate(lambda specs: self._frame.agg(specs), spec, named, "agg")

    def groupby(self, by: _Columns) -> GroupBy:
        """Groups rows by the ``by`` columns; aggregate with ``.agg({...})`` or
        ``.x.sum()``."""
        keys = _names(by)
        missing = [k for k in keys if k not in self.columns]
        if missing:
            raise KeyError(
                f"groupby: no column `{missing[0]}` (the columns are: {', '.join(self.columns)})"
            )
        return GroupBy(self, keys)

    def merge(
        self,
        right: DataFrame,
        how: str = "inner",
        on: Optional[_Columns] = None,
        left_on: Optional[_Columns] = None,
        right_on: Optional[_Columns] = None,
        suffixes: Tuple[str, str] = ("_x", "_y"),
    ) -> DataFrame:
        """The join with ``right`` (``how``: inner, left, outer, semi, anti, cross) on
        ``on``, or ``left_on`` here and ``right_on`` there; columns both sides have get
        ``suffixes``. Rows come out in the order of the hash parts, not pandas'."""
        if not isinstance(right, DataFrame):
            raise TypeError(f"merge: expects a fabric DataFrame, got {type(right).__name__}")
        if on is not None and (left_on is not None or right_on is not None):
            raise ValueError("merge: give on=, or left_on= and right_on=, not both")
        if on is not None:
            left, other = _names(on), _names(on)
        elif left_on is not None or right_on is not None:
            if left_on is None or right_on is None:
                raise ValueError("merge: left_on= and right_on= go together")
            left, other = _names(left_on), _names(right_on)
        elif how == "cross":
            left, other = [], []
        else:
            left = [c for c in self.columns if c in right.columns]
            if not left:
                raise ValueError("merge: the frames have no column in common: give on=")
            other = left
        custom = tuple(suffixes) != ("_x", "_y")
        return DataFrame(
            self._frame.merge(
                right._frame, left, other, how, (suffixes[0], suffixes[1]) if custom else None
            )
        )

    def rolling(self, window: str, on: Optional[str] = None) -> Rolling:
        """Rolling windows of length ``window`` (``"1h"``, ``"30min"``, ``"10s"``) along
        ``on`` (default: the ``set_index`` column); the frame must be ordered by it."""
        column = on if on is not None else self.sorted_by
        if column is None:
            raise ValueError(
                "rolling: the frame has no index to run along: call set_index(column) first"
            )
        return Rolling(self._frame.rolling(window, column))

    # --- computing -------------------------------------------------------------------

    def compute(self, client: Optional[Client] = None) -> pyarrow.Table:
        """Computes the frame on ``client`` (default: the most recently created client)
        and returns it as a ``pyarrow.Table`` (no copy per row)."""
        pa = _pyarrow()
        return pa.table(self._frame.compute(client))

    def compute_arrow(self, client: Optional[Client] = None) -> _native.ArrowStream:
        """Computes the frame; the result as an object with ``__arrow_c_stream__``, which
        ``pyarrow.table``, ``pyarrow.RecordBatchReader.from_stream``, polars and DuckDB take
        without copies (and which needs no pyarrow here)."""
        return self._frame.compute(client)

    def to_pandas(self, client: Optional[Client] = None) -> pandas.DataFrame:
        """``compute(client).to_pandas()``."""
        return self.compute(client).to_pandas()

    def persist(self, name: Optional[str] = None, client: Optional[Client] = None) -> DataFrame:
        """Computes the partitions and keeps them on the workers as the dataset ``name``
        (default: a new name); the frame returned reads them from there. It runs for the
        client's token's own tenant."""
        return DataFrame(self._frame.persist(name, client))

    def to_parquet(self, path: str, client: Optional[Client] = None) -> int:
        """Writes each partition as ``path/part-NNNNN.parquet`` (a directory the workers
        may write to, or an object-store prefix); returns the number of rows written."""
        return self._frame.to_parquet(str(path), client)

    def explain(self) -> str:
        """The optimized plan of the partitions, as an indented tree."""
        return self._frame.explain()

    def to_graph(self) -> Dict[str, Any]:
        """The graph document computing the frame, which ``fabric run`` takes."""
        return self._frame.to_graph()

    # --- display ---------------------------------------------------------------------

    def __repr__(self) -> str:
        dtypes = self._frame.dtypes
        width = max([len(n) for n, _ in dtypes] + [len(t) for _, t in dtypes] + [3])
        names = " ".join(n.rjust(width) for n, _ in dtypes)
        types = " ".join(t.rjust(width) for _, t in dtypes)
        dots = " ".join("...".rjust(width) for _ in dtypes)
        label = f"npartitions={self.npartitions}"
        pad = " " * len(label)
        return (
            "Fabric DataFrame Structure:\n"
            f"{pad} {names}\n{label} {types}\n{pad} {dots}\n"
            f"Sorted by: {self.sorted_by or '-'}"
        )

    def _repr_html_(self) -> str:
        dtypes = self._frame.dtypes
        head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in dtypes)
        types = "".join(f"<td>{html.escape(t)}</td>" for _, t in dtypes)
        dots = "".join("<td>...</td>" for _ in dtypes)
        return (
            f"<div><strong>Fabric DataFrame Structure:</strong>"
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>"
            f"<tr><th>npartitions={self.npartitions}</th>{types}</tr>"
            f"<tr><th></th>{dots}</tr></tbody></table>"
            f"<div>Sorted by: {html.escape(self.sorted_by or '-')}</div></div>"
        )


def _aggregate(
    run: Any, spec: Optional[Mapping[str, Any]], named: Mapping[str, Any], what: str
) -> DataFrame:
    if spec is not None and named:
        raise TypeError(f"{what}: give a dict or named aggregates, not both")
    if spec is not None:
        return DataFrame(run(_specs(spec, what)))
    if not named:
        raise TypeError(f"{what}: give the aggregates: {{\"x\": \"sum\"}} or total=(\"x\", \"sum\")")
    specs, renames = _named(named, what)
    return DataFrame(run(specs).rename(list(renames.items())))


class Column:
    """One column of a frame: ``df.x`` or ``df["x"]``. Its aggregates are lazy scalars
    (``df.x.sum().compute()``)."""

    __slots__ = ("_df", "name")

    def __init__(self, df: DataFrame, name: str) -> None:
        self._df = df
        self.name = name

    def _agg(self, how: str) -> Scalar:
        return Scalar(DataFrame(self._df._frame.agg([(self.name, how)])), self.name)

    def sum(self) -> Scalar:
        return self._agg("sum")

    def mean(self) -> Scalar:
        return self._agg("mean")

    def min(self) -> Scalar:
        return self._agg("min")

    def max(self) -> Scalar:
        return self._agg("max")

    def count(self) -> Scalar:
        return self._agg("count")

    def std(self) -> Scalar:
        return self._agg("std")

    def var(self) -> Scalar:
        return self._agg("var")

    def nunique(self) -> Scalar:
        return self._agg("nunique")

    def to_frame(self) -> DataFrame:
        """The column as a one-column frame."""
        return self._df[[self.name]]  # type: ignore[return-value]

    def compute(self, client: Optional[Client] = None) -> pyarrow.ChunkedArray:
        """The column's values, as a ``pyarrow.ChunkedArray``."""
        return self.to_frame().compute(client).column(self.name)

    def __repr__(self) -> str:
        dtype = self._df.dtypes.get(self.name, "?")
        return f"<fabric Column {self.name}: {dtype}, npartitions={self._df.npartitions}>"


class Scalar:
    """A lazy aggregate of a whole column; ``compute()`` gives the Python value."""

    __slots__ = ("_df", "_name")

    def __init__(self, df: DataFrame, name: str) -> None:
        self._df = df
        self._name = name

    def compute(self, client: Optional[Client] = None) -> Any:
        """The value (``None`` for a null, as the mean of no rows)."""
        stream = self._df._frame.compute(client)
        table = _pyarrow().table(stream)
        return table.column(self._name)[0].as_py()

    def __repr__(self) -> str:
        return f"<fabric Scalar {self._name}>"


class GroupBy:
    """A groupby waiting for its aggregates. The result has one row per group, sorted by
    key, with the keys as columns (pandas' ``as_index=False``)."""

    __slots__ = ("_df", "keys")

    def __init__(self, df: DataFrame, keys: List[str]) -> None:
        self._df = df
        self.keys = keys

    def agg(self, spec: Optional[Mapping[str, Any]] = None, **named: Any) -> DataFrame:
        """``agg({"x": "sum", "y": ["min", "max"]})`` (a column aggregated twice is named
        ``y_min``, ``y_max``) or ``agg(total=("x", "sum"))``; the aggregates are
        ``AGGREGATES``."""
        keys = self.keys
        return _aggregate(
            lambda specs: self._df._frame.groupby_agg(keys, specs), spec, named, "groupby.agg"
        )

    def __getitem__(self, column: str) -> SeriesGroupBy:
        if column not in self._df.columns:
            raise KeyError(
                f"no column `{column}` (the columns are: {', '.join(self._df.columns)})"
            )
        return SeriesGroupBy(self, column)

    def __getattr__(self, name: str) -> SeriesGroupBy:
        if name.startswith("_") or name not in self._df.columns:
            raise AttributeError(
                f"'GroupBy' object has no attribute or column `{name}` "
                f"(the columns are: {', '.join(self._df.columns)})"
            )
        return SeriesGroupBy(self, name)

    def __repr__(self) -> str:
        return f"<fabric GroupBy by {self.keys}>"


class _Aggregations:
    """The named aggregates of one column (``.x.sum()``...), each ``self.agg(name)``."""

    __slots__ = ()

    def agg(self, how: Union[str, Sequence[str]]) -> DataFrame:
        """The frame with the aggregates ``how`` of this column."""
        raise NotImplementedError(f"{type(self).__name__} aggregates nothing by itself")

    def sum(self) -> DataFrame:
        return self.agg("sum")

    def mean(self) -> DataFrame:
        return self.agg("mean")

    def min(self) -> DataFrame:
        return self.agg("min")

    def max(self) -> DataFrame:
        return self.agg("max")

    def count(self) -> DataFrame:
        return self.agg("count")

    def std(self) -> DataFrame:
        return self.agg("std")

    def var(self) -> DataFrame:
        return self.agg("var")


class SeriesGroupBy(_Aggregations):
    """One column of a groupby: ``df.groupby("k").x.sum()`` is
    ``df.groupby("k").agg({"x": "sum"})``."""

    __slots__ = ("_groupby", "column")

    def __init__(self, groupby: GroupBy, column: str) -> None:
        self._groupby = groupby
        self.column = column

    def agg(self, how: Union[str, Sequence[str]]) -> DataFrame:
        return self._groupby.agg({self.column: how})

    def nunique(self) -> DataFrame:
        return self.agg("nunique")


class Rolling:
    """Rolling windows, waiting for their aggregates. The result has every row, with each
    aggregate over the row's window ``(t - window, t]`` as a new column ``column_how``."""

    __slots__ = ("_rolling",)

    def __init__(self, rolling: _native.FrameRolling) -> None:
        self._rolling = rolling

    @property
    def on(self) -> str:
        """The column the windows run along."""
        return self._rolling.on

    def agg(self, spec: Mapping[str, Any]) -> DataFrame:
        """``agg({"x": "sum", "y": ["min", "max"]})``: new columns ``x_sum``, ``y_min``,
        ``y_max``."""
        return DataFrame(self._rolling.agg(_specs(spec, "rolling.agg")))

    def __getitem__(self, column: str) -> _RollingColumn:
        return _RollingColumn(self, column)

    def __getattr__(self, name: str) -> _RollingColumn:
        if name.startswith("_"):
            raise AttributeError(name)
        return _RollingColumn(self, name)


class _RollingColumn(_Aggregations):
    """``df.set_index("ts").rolling("1h").x.sum()``: the frame with ``x_sum`` added."""

    __slots__ = ("_rolling", "_column")

    def __init__(self, rolling: Rolling, column: str) -> None:
        self._rolling = rolling
        self._column = column

    def agg(self, how: Union[str, Sequence[str]]) -> DataFrame:
        return self._rolling.agg({self._column: how})


def read_csv(pattern: Union[str, Any]) -> DataFrame:
    """A frame of the CSV files ``pattern`` names (``data/*.csv``, a directory,
    ``s3://bucket/2024-*.csv``), one partition per file; column types are inferred from the
    first file."""
    return DataFrame(_native.Frame.read_csv(str(pattern)))


def read_parquet(pattern: Union[str, Any]) -> DataFrame:
    """A frame of the Parquet files ``pattern`` names, one partition per file."""
    return DataFrame(_native.Frame.read_parquet(str(pattern)))
