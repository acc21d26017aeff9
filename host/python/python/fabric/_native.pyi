"""Type stubs of the extension module ``fabric._native`` (re-exported by ``fabric``)."""

from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
    final,
)

__all__ = [
    "Client",
    "LocalCluster",
    "Component",
    "Export",
    "Task",
    "Future",
    "as_completed",
    "Frame",
    "FrameRolling",
    "ArrowStream",
    "Chunked",
    "compute",
    "persist",
    "gather",
    "find_fabric",
    "_shutdown",
    "__version__",
]

__version__: str

_T = TypeVar("_T")
_Path = Union[str, "PathLike[str]"]

@final
class Task:
    """A lazy task: a call of a component's export (or a value persisted by one), and the
    WIT type of the value it produces. Pass it to further calls; ``compute()`` it."""

    @property
    def key(self) -> str:
        """Its name: its id in the graph and its key in a persisted dataset (``inc-0``)."""
    @property
    def type(self) -> str:
        """The WIT type of its value (for an export returning ``result<T, E>``, ``T``)."""
    @property
    def call(self) -> Optional[str]:
        """``component/export`` (``None`` for a persisted value)."""
    @property
    def dataset(self) -> Optional[str]:
        """The dataset holding its value, for a persisted value."""
    def named(self, name: str) -> Task:
        """Names the task (unique in its client); returns it."""
    def with_retries(self, retries: int) -> Task:
        """Runs the task again after a failure, up to ``retries`` times (at most 100)."""
    def with_timeout(self, seconds: float) -> Task:
        """The wall-clock limit of one attempt, in seconds."""
    def with_memory(self, mib: int) -> Task:
        """The memory limit of one attempt, in MiB."""
    def with_resource(self, resource: str, amount: int) -> Task:
        """An abstract resource one attempt holds while it runs (``"gpu", 1``)."""
    def compute(self) -> Any:
        """Computes the task and returns its value (Ctrl-C cancels the job)."""
    def persist(self, name: Optional[str] = None) -> Task:
        """Keeps the task's value on the workers (dataset ``name``); a handle of it."""
    def to_graph(self) -> Dict[str, Any]:
        """The graph document computing this task, which ``fabric run`` takes."""
    def _repr_html_(self) -> str: ...
    def __bool__(self) -> bool:
        """Raises ``TypeError``: a task's truth is known only once it is computed."""

@final
class Future:
    """The value a submitted call will produce (``client.submit``, ``client.map``), resolved
    as soon as its task finishes. Pass it to later calls (it has its task's WIT type);
    ``await future`` in an event loop."""

    @property
    def key(self) -> str:
        """Its task's name (``inc-0``)."""
    @property
    def type(self) -> str:
        """The WIT type of its value."""
    @property
    def job(self) -> int:
        """The job computing it."""
    @property
    def status(self) -> str:
        """``pending``, ``finished``, ``error``, ``cancelled`` or ``released``."""
    def done(self) -> bool:
        """Whether it is settled (finished, failed, cancelled or released)."""
    def cancelled(self) -> bool:
        """Whether it was cancelled (or has no value for another reason than a failure)."""
    def result(self, timeout: Optional[float] = None) -> Any:
        """Its value; waits at most ``timeout`` seconds (``TimeoutError``). A failed task
        raises ``TaskError``, a cancelled future ``CancelledError``."""
    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The ``TaskError`` its task failed with, or ``None`` once it finished."""
    def cancel(self) -> None:
        """Cancels it (its job too, once no future of it is held)."""
    def release(self) -> None:
        """Lets go of its value (its job is released once no future of it is held)."""
    def __await__(self) -> Generator[Any, None, Any]: ...
    def _repr_html_(self) -> str: ...

@final
class as_completed:
    """The futures in the order they settle, each once: ``for f in as_completed(futs)``
    (waits with the GIL released) or ``async for``. ``with_results=True`` yields
    ``(future, value)`` pairs (a failed task raises ``TaskError``)."""

    def __new__(
        cls, futures: Optional[Iterable[Future]] = None, with_results: bool = False
    ) -> as_completed: ...
    def add(self, future: Future) -> None:
        """Follows one more future."""
    def update(self, futures: Iterable[Future]) -> None:
        """Follows more futures."""
    def count(self) -> int:
        """The number of futures not yielded yet."""
    def is_empty(self) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...
    def __anext__(self) -> Any: ...

@final
class Export:
    """One export of a component: calling it makes a ``Task``, checked against its WIT
    signature (a mismatch is a ``TypeError`` naming the parameter)."""

    @property
    def name(self) -> str:
        """Its WIT name."""
    @property
    def signature(self) -> str:
        """Its WIT signature: ``func(a: s64, b: s64) -> s64``."""
    def __call__(self, *args: Any, **kwargs: Any) -> Task: ...

@final
class Component:
    """A component loaded by a client; each export is an attribute (``-`` is ``_``)."""

    @property
    def name(self) -> str:
        """Its name in graphs (``math``)."""
    @property
    def exports(self) -> Dict[str, str]:
        """Its exports' WIT signatures, by WIT name."""
    def call(self, export: str, *args: Any, **kwargs: Any) -> Task:
        """A call of ``export`` by its WIT name."""
    def __getattr__(self, name: str) -> Export: ...
    def __getitem__(self, name: str, /) -> Export: ...

@final
class LocalCluster:
    """A ``fabric scheduler`` and ``fabric worker`` processes on this machine."""

    def __new__(
        cls,
        n_workers: Optional[int] = None,
        threads_per_worker: int = 1,
        *,
        fabric: Optional[_Path] = None,
    ) -> LocalCluster: ...
    @property
    def scheduler_address(self) -> str: ...
    @property
    def n_workers(self) -> int: ...
    @property
    def threads_per_worker(self) -> int: ...
    @property
    def fabric(self) -> Path:
        """The ``fabric`` binary the processes run."""
    @property
    def pids(self) -> List[int]:
        """The scheduler's and the workers' process ids (empty once closed)."""
    @property
    def closed(self) -> bool: ...
    def close(self) -> None:
        """Stops the scheduler and the workers."""
    def __enter__(self: _T) -> _T: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
    def _repr_html_(self) -> str: ...

@final
class Client:
    """A connection to a Fabric scheduler: loads components, computes and persists tasks."""

    def __new__(
        cls,
        address: Union[str, LocalCluster, None] = None,
        *,
        tenant: Optional[str] = None,
        token: Optional[str] = None,
        ca: Optional[_Path] = None,
    ) -> Client: ...
    @property
    def address(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def identity(self) -> Dict[str, str]:
        """``{"tenant", "principal", "role"}`` as the scheduler sees this client."""
    @property
    def cluster(self) -> Optional[LocalCluster]: ...
    @property
    def closed(self) -> bool: ...
    def component(self, path: _Path, name: Optional[str] = None) -> Component:
        """Loads the component in ``path`` (named after the file unless ``name``)."""
    def compute(self, *args: Any) -> Tuple[Any, ...]:
        """Computes the tasks in ``args`` (or in lists, tuples, dicts) in one job; ``args``
        with each task replaced by its value."""
    def persist(self, *args: Any, name: Optional[str] = None) -> Tuple[Any, ...]:
        """Keeps the values of the tasks in ``args`` on the workers as dataset ``name``."""
    def submit(self, func: Union[Export, Task], *args: Any, key: Optional[str] = None, **kwargs: Any) -> Future:
        """Submits ``func(*args, **kwargs)`` as a job of its own; its future, at once.
        Arguments may be futures, tasks or values."""
    def map(self, func: Export, *iterables: Iterable[Any], **kwargs: Any) -> List[Future]:
        """Submits one call per element of ``iterables`` (taken together, as ``zip``) as
        one job; their futures, in order."""
    def gather(self, futures: Any) -> Any:
        """``futures`` (or lists, tuples, dicts of them) with each replaced by its value."""
    def scale(self, n: int, duration: Optional[float] = None) -> int:
        """Asks an adaptive scheduler for at least ``n`` workers; the number granted."""
    def status(self) -> Dict[str, Any]:
        """The cluster's workers and jobs."""
    def datasets(self) -> List[str]: ...
    def forget(self, name: str) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self: _T) -> _T: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...
    def _repr_html_(self) -> str: ...

@final
class ArrowStream:
    """A computed frame: one Arrow record batch, exported through the Arrow C stream
    interface (``pyarrow.table(obj)``, ``pyarrow.RecordBatchReader.from_stream(obj)``,
    polars, DuckDB) without copying its buffers."""

    @property
    def num_rows(self) -> int: ...
    @property
    def column_names(self) -> List[str]: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object:
        """A PyCapsule named ``arrow_array_stream``; each call makes a new stream of the
        same buffers (``requested_schema`` is not acted on)."""
    def __len__(self) -> int: ...

@final
class FrameRolling:
    """Rolling windows of a frame, waiting for their aggregates."""

    @property
    def on(self) -> str: ...
    def agg(self, specs: List[Tuple[str, str]]) -> Frame:
        """Every row with each ``(column, how)`` over its window as a column ``column_how``."""

@final
class Frame:
    """A lazy partitioned dataframe (``fabric_client::DataFrame``); ``fabric.dataframe``
    wraps it with pandas' names. Mistakes (a bad expression, an unknown column) raise
    ``ValueError`` when the operation is made."""

    @staticmethod
    def read_csv(pattern: str) -> Frame: ...
    @staticmethod
    def read_parquet(pattern: str) -> Frame: ...
    @property
    def columns(self) -> List[str]: ...
    @property
    def dtypes(self) -> List[Tuple[str, str]]:
        """``(name, Arrow type)`` of each column."""
    @property
    def npartitions(self) -> int: ...
    @property
    def sorted_by(self) -> Optional[str]: ...
    def filter(self, predicate: str) -> Frame: ...
    def assign(self, name: str, expr: str) -> Frame: ...
    def select(self, columns: List[str]) -> Frame: ...
    def rename(self, renames: List[Tuple[str, str]]) -> Frame: ...
    def drop_duplicates(self, subset: List[str]) -> Frame: ...
    def nlargest(self, n: int, by: List[str]) -> Frame: ...
    def nsmallest(self, n: int, by: List[str]) -> Frame: ...
    def head(self, n: int) -> Frame: ...
    def agg(self, specs: List[Tuple[str, str]]) -> Frame: ...
    def groupby_agg(self, keys: List[str], specs: List[Tuple[str, str]]) -> Frame: ...
    def merge(
        self,
        other: Frame,
        left_on: List[str],
        right_on: List[str],
        how: str,
        suffixes: Optional[Tuple[str, str]] = None,
    ) -> Frame: ...
    def sort_values(self, by: List[str], ascending: List[bool]) -> Frame: ...
    def set_index(self, column: str) -> Frame: ...
    def rolling(self, window: str, on: str) -> FrameRolling: ...
    def explain(self) -> str: ...
    def to_graph(self) -> Dict[str, Any]: ...
    def compute(self, client: Optional[Client] = None) -> ArrowStream:
        """Computes the frame in one job on ``client`` (default: the most recently created
        client); waits with the GIL released, Ctrl-C cancels the job."""
    def persist(self, name: Optional[str] = None, client: Optional[Client] = None) -> Frame: ...
    def to_parquet(self, dir: str, client: Optional[Client] = None) -> int:
        """Writes ``dir/part-NNNNN.parquet`` per partition; the number of rows written."""

@final
class Chunked:
    """A lazy chunked array of float64 (``fabric_client::Array``); ``fabric.array`` wraps it
    with NumPy's names. Shapes, axes and chunks are checked when an operation is made
    (``ValueError``)."""

    @staticmethod
    def random(shape: List[int], chunks: List[int], seed: int) -> Chunked: ...
    @staticmethod
    def full(shape: List[int], chunks: List[int], value: float) -> Chunked: ...
    @staticmethod
    def arange(n: int, chunk: int) -> Chunked: ...
    @staticmethod
    def npy_shape(url: str) -> List[int]:
        """The shape in the header of the ``.npy`` file at ``url``."""
    @staticmethod
    def from_npy(url: str, chunks: List[int]) -> Chunked: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def chunks(self) -> List[List[int]]: ...
    @property
    def tasks(self) -> int: ...
    def transpose(self) -> Chunked: ...
    def binary(self, other: Chunked, op: str) -> Chunked:
        """``op``: add, sub, mul, div, pow, maximum, minimum, less, less-equal, greater,
        greater-equal, equal, not-equal."""
    def scalar(self, op: str, k: float) -> Chunked: ...
    def unary(self, op: str) -> Chunked:
        """``op``: neg, abs, sqrt, exp, log, floor, ceil."""
    def reduce(self, how: str, axis: Optional[int] = None) -> Chunked:
        """``how``: sum, prod, min, max, mean."""
    def std(self, axis: Optional[int] = None, ddof: float = 0.0) -> Chunked: ...
    def matmul(self, other: Chunked) -> Chunked: ...
    def slice(self, ranges: List[Tuple[int, int]]) -> Chunked: ...
    def rechunk(self, chunks: List[int]) -> Chunked: ...
    def to_graph(self) -> Dict[str, Any]: ...
    def compute(self, client: Optional[Client] = None) -> Tuple[bytearray, Tuple[int, ...]]:
        """The numbers (native-endian float64, row-major) and the shape."""
    def persist(self, name: Optional[str] = None, client: Optional[Client] = None) -> Chunked: ...

def compute(*args: Any) -> Tuple[Any, ...]:
    """Computes the tasks in ``args`` on the client that made them (like ``dask.compute``)."""

def persist(*args: Any, name: Optional[str] = None) -> Tuple[Any, ...]:
    """Persists the tasks in ``args`` on the client that made them."""

def gather(futures: Any) -> Any:
    """``futures`` (a future, or lists, tuples and dicts holding them) with each future
    replaced by its value; the first without one raises (``TaskError``, ``CancelledError``)."""

def find_fabric() -> Path:
    """The ``fabric`` binary: ``FABRIC_BIN``, the package's ``bin/``, beside Python, the PATH."""

def _shutdown() -> None: ...
