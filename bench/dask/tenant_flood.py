"""One user's flood in Dask, for `fabric-bench cluster flood10k`: LocalCluster of 4 workers x
16 threads; client A submits FLOOD tasks sleeping 100 ms, one second later client B submits
100 and we time them to their results (5 times, each after the last). Dask serves tasks first
come, first served (dask/distributed#4610), so B waits for A's backlog. Usage:
    python tenant_flood.py [FLOOD]
Prints one JSON line: B's first time (behind the flood) and each time, in seconds.
"""
import json, logging, statistics, sys, time
from distributed import Client, LocalCluster


def slow_inc(x):
    time.sleep(0.1)
    return x + 1


def main():
    flood = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    cluster = LocalCluster(n_workers=4, threads_per_worker=16, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    a = Client(cluster)
    b = Client(cluster)
    a.wait_for_workers(4)
    futures = a.map(slow_inc, range(flood), pure=False)
    time.sleep(1)
    runs = []
    for rep in range(5):
        t0 = time.perf_counter()
        mine = b.map(slow_inc, range(100), pure=False)
        b.gather(mine)
        runs.append(time.perf_counter() - t0)
        if time.perf_counter() - t0 > 60:
            break
    left = sum(1 for f in futures if not f.done())
    a.cancel(futures)
    print(json.dumps({"bench": "dask_flood", "flood_tasks": flood, "workers": 4, "threads": 16,
                      "b_tasks": 100, "task_ms": 100, "b_first_seconds": runs[0],
                      "b_seconds_median": statistics.median(runs),
                      "b_seconds": runs, "flood_left_at_end": left}))
    a.close(); b.close(); cluster.close()


if __name__ == "__main__":
    main()
