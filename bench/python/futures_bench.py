"""Futures from Python: Fabric's package (``import fabric``) beside Dask distributed.

Three workloads, each on a cluster of 2 worker processes with 1 thread each on 127.0.0.1:

map       : ``futs = client.map(inc, range(N)); client.gather(futs)``, N = 10,000, timed end
            to end (the calls made, submitted, and every value back in Python).
completed : 1,000 futures of one ``client.map(inc, range(1000))``, then a
            ``for f in as_completed(futs): f.result()`` loop; timed from the map to the
            last result.
latency   : ``client.submit(inc, i).result()``, 500 times after 50 warm-up calls, each
            timed alone; median and p99 (nearest rank) in microseconds.

Fabric: ``fabric.LocalCluster(n_workers=2, threads_per_worker=1)`` (a real ``fabric
scheduler`` and two ``fabric worker`` processes), or a started cluster (``--scheduler URL``
with ``FABRIC_TOKEN``); ``inc`` is the math guest's ``inc`` export (``--math PATH``).
Dask: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` with a
Python ``inc``, ``pure=False`` as in /work/shared/bench/dask/throughput.py and latency.py.

Run (each prints one JSON line per repetition and a summary line of medians):

    FABRIC_BIN=target/release/fabric /tmp/fabbench/venv/bin/python bench/python/futures_bench.py fabric --reps 5
    /tmp/daskbench/venv/bin/python bench/python/futures_bench.py dask --reps 5
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

MAP_N = 10_000
COMPLETED_N = 1_000
LATENCY_N = 500
WARMUP = 50


def pct(sorted_vals: List[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list (as latency.py computes it)."""
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def measure(client: Any, inc: Any, as_completed: Callable[..., Any]) -> Dict[str, float]:
    """One repetition of the three workloads; `inc` is what `client.map`/`submit` take."""
    out: Dict[str, float] = {}

    t0 = time.perf_counter()
    futs = client.map(inc, range(MAP_N), **PURE)
    values = client.gather(futs)
    dt = time.perf_counter() - t0
    assert list(values) == list(range(1, MAP_N + 1)), "wrong values from map"
    out["map_10000_s"] = dt
    out["map_10000_tasks_per_s"] = MAP_N / dt
    del futs, values
    settle()

    t0 = time.perf_counter()
    futs = client.map(inc, range(COMPLETED_N), **PURE)
    total = 0
    for f in as_completed(futs):
        total += f.result()
    dt = time.perf_counter() - t0
    assert total == sum(range(1, COMPLETED_N + 1)), total
    out["as_completed_1000_s"] = dt
    out["as_completed_1000_per_s"] = COMPLETED_N / dt
    del futs
    settle()

    for i in range(WARMUP):
        assert client.submit(inc, i, **PURE).result() == i + 1
    samples = []
    for i in range(LATENCY_N):
        t0 = time.perf_counter_ns()
        r = client.submit(inc, i, **PURE).result()
        samples.append(time.perf_counter_ns() - t0)
        assert r == i + 1
    us = sorted(s / 1000.0 for s in samples)
    out["latency_median_us"] = statistics.median(us)
    out["latency_p99_us"] = pct(us, 99)
    return out


PURE: Dict[str, Any] = {}
settle: Callable[[], None] = lambda: None


def run_fabric(args: argparse.Namespace) -> Dict[str, Any]:
    import fabric

    info: Dict[str, Any] = {"fabric": fabric.__version__}
    cluster = None
    t0 = time.perf_counter()
    if args.scheduler:
        client = fabric.Client(args.scheduler)
    else:
        cluster = fabric.LocalCluster(n_workers=2, threads_per_worker=1)
        client = fabric.Client(cluster)
    math = client.component(args.math)
    assert client.submit(math.inc, 1).result() == 2
    info["cluster_ready_s"] = time.perf_counter() - t0
    # Warm-up, as Dask's throughput.py does.
    assert client.gather(client.map(math.inc, range(1000)))[-1] == 1000
    reps = [measure(client, math.inc, fabric.as_completed) for _ in range(args.reps)]
    client.close()
    if cluster is not None:
        cluster.close()
    return {**info, "reps": reps}


def run_dask(args: argparse.Namespace) -> Dict[str, Any]:
    global settle
    import dask
    import distributed
    from distributed import Client, LocalCluster, as_completed

    def inc(x: int) -> int:
        return x + 1

    PURE["pure"] = False
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(2)
    info: Dict[str, Any] = {"dask": dask.__version__, "distributed": distributed.__version__,
                            "cluster_ready_s": time.perf_counter() - t0}

    def wait_idle(timeout: float = 30) -> None:
        """Until the scheduler forgot the previous batch (as throughput.py does)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0:
                return
            time.sleep(0.05)

    settle = wait_idle
    assert client.gather(client.map(inc, range(1000), pure=False))[-1] == 1000
    wait_idle()
    reps = [measure(client, inc, as_completed) for _ in range(args.reps)]
    client.close()
    cluster.close()
    return {**info, "reps": reps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=["fabric", "dask"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scheduler", help="a started Fabric cluster (FABRIC_TOKEN set)")
    parser.add_argument("--math", default="guest-examples/target/wasm32-wasip2/release/math.wasm")
    args = parser.parse_args()
    result = run_fabric(args) if args.system == "fabric" else run_dask(args)
    for i, rep in enumerate(result["reps"]):
        print(json.dumps({"system": args.system, "rep": i, **{k: round(v, 4) for k, v in rep.items()}}))
    keys = result["reps"][0].keys()
    summary = {k: round(statistics.median(r[k] for r in result["reps"]), 4) for k in keys}
    extra = {k: v for k, v in result.items() if k != "reps"}
    print(json.dumps({"system": args.system, "summary": "median", "n_reps": args.reps,
                      "python": platform.python_version(), **extra, **summary}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
