"""Fabric from Python: typed, lazy calls of WebAssembly component exports, computed on a
Fabric cluster.

::

    import fabric

    with fabric.LocalCluster(n_workers=2) as cluster, fabric.Client(cluster) as client:
        math = client.component("math.wasm")
        a = math.inc(1)                  # a lazy Task of WIT type s64; nothing runs yet
        b = math.add(a, 2)
        math.add(a, "x")                 # TypeError: math/add: parameter `b` expects s64, got string "x"
        print(fabric.compute(a, b))      # (2, 4)

Each export of a component is an attribute (``-`` in WIT names is ``_``); a call is checked
against the export's WIT signature when it is made, and gives a ``Task``. ``compute`` runs
the tasks asked for (and what they need) in one job and returns their values; ``persist``
keeps them on the workers. ``client.submit(math.inc, 1)`` and ``client.map(math.inc,
range(n))`` return ``Future``s at once, resolved as each task finishes (``result()``,
``gather``, ``as_completed``, also with ``async for``). ``fabric.dataframe`` and ``fabric.array`` are lazy, partitioned
collections with pandas' and NumPy's names, computed on the cluster's built-in kernels. The
distribution is ``fabric-tasks``; see docs/python.md.
"""

from __future__ import annotations

import atexit

from fabric import _native, array, dataframe
from fabric._errors import CancelledError, FabricError, TaskError, TaskFailure
from fabric._native import (
    Client,
    Component,
    Export,
    Future,
    LocalCluster,
    Task,
    as_completed,
    compute,
    find_fabric,
    gather,
    persist,
)
from fabric._values import Err, Ok, Some, Variant

__version__: str = _native.__version__

__all__ = [
    "CancelledError",
    "Client",
    "Component",
    "Err",
    "Export",
    "FabricError",
    "Future",
    "LocalCluster",
    "Ok",
    "Some",
    "Task",
    "TaskError",
    "TaskFailure",
    "Variant",
    "array",
    "as_completed",
    "compute",
    "dataframe",
    "find_fabric",
    "gather",
    "persist",
]

# Local clusters still running when the interpreter exits are stopped, their processes
# with them.
atexit.register(_native._shutdown)
